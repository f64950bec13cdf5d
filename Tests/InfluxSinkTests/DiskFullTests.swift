import Foundation
import Logging
import TestSupport
import XCTest
@testable import InfluxSink
#if canImport(Glibc)
import Glibc
#endif

/// A spool on a full disk: a small tmpfs mounted in a mount namespace of the test's own
/// (`unshare -m`), so nothing is left mounted on the machine whatever happens. The test
/// runs in a child process (this test binary again) inside that namespace.
final class DiskFullTests: XCTestCase {
    func testAFullDiskKeepsTheNewestPointsInMemoryCountsTheDroppedOnesAndSpoolingResumesWhenSpaceReturns() throws {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root to mount a tmpfs in a private mount namespace; CI runs as root")
        }
        let unshare = try TestEnvironment.requireBinary("unshare", package: "util-linux")
        let directory = try TestEnvironment.temporaryDirectory("influxsink-tmpfs")
        defer { try? FileManager.default.removeItem(at: directory) }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: unshare)
        child.arguments = ["-m", "--propagation", "private", "--", "sh", "-c", "mount -t tmpfs -o size=256k tmpfs \"$1\" && exec \"$2\" \"$3\"", "sh",
                           directory.path, ProcessInfo.processInfo.arguments[0], "InfluxSinkTests.DiskFullChildTests/testChildFillsTheDiskAndFreesIt"]
        var environment = ProcessInfo.processInfo.environment
        environment["INFLUXSINK_DISKFULL_DIR"] = directory.path
        child.environment = environment
        let output = Pipe()
        child.standardOutput = output
        child.standardError = output
        try child.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        child.waitUntilExit()
        print(text.split(separator: "\n").filter { $0.contains("disk full:") }.joined(separator: "\n"))
        XCTAssertEqual(child.terminationStatus, 0, "the child test failed:\n\(text.suffix(4000))")
        XCTAssertTrue(text.contains("Executed 1 test, with 0 failures"), "the child test ran: \(text.suffix(2000))")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [], "the tmpfs was the child's alone")
    }
}

/// Run by DiskFullTests inside its mount namespace, with a 256 KiB tmpfs at
/// INFLUXSINK_DISKFULL_DIR; skipped otherwise.
final class DiskFullChildTests: XCTestCase {
    func testChildFillsTheDiskAndFreesIt() async throws {
        guard let directory = ProcessInfo.processInfo.environment["INFLUXSINK_DISKFULL_DIR"] else {
            throw XCTSkip("helper for DiskFullTests; runs only as its child process")
        }
        let port = TestEnvironment.freePort()
        let memoryLimit = 16 << 10
        // The disk is retried on every write, so the test needs no waiting for it.
        var policy = quickPolicy
        policy.diskRetrySeconds = 0
        let sink = try InfluxSink(servers: [v1("db", URL(string: "http://127.0.0.1:\(port)")!)], spoolDirectory: directory + "/spool",
                                  spoolLimitBytes: 1 << 20, memoryLimitBytes: memoryLimit, batchSize: 100, flushIntervalNanoseconds: 10_000_000,
                                  logger: testLogger("diskfull"), deliveryPolicy: policy)
        // Fill what is left of the tmpfs.
        let filler = directory + "/filler"
        let descriptor = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        let block = [UInt8](repeating: 0x61, count: 4096)
        var failure: Int32 = 0
        while failure == 0 {
            if write(descriptor, block, block.count) < 0 { failure = errno }
        }
        close(descriptor)
        XCTAssertEqual(failure, ENOSPC, "the tmpfs is full")

        // 2000 points, one write per "round" of 10, while the disk is full and the server down.
        var next = 0
        for _ in 0..<200 {
            try sink.write((next..<next + 10).map { sequencePoint($0) })
            next += 10
        }
        let full = try XCTUnwrap(sink.statistics().first)
        print("disk full: \(full)")
        XCTAssertGreaterThan(full.spoolErrors, 0)
        XCTAssertEqual(full.produced, 2000)
        XCTAssertGreaterThan(full.dropped, 0, "the memory queue is bounded")
        XCTAssertGreaterThan(full.buffered, 0)
        let lineBytes = LineProtocol.encode(sequencePoint(1000))!.utf8.count + 1
        XCTAssertLessThanOrEqual(full.buffered * (lineBytes - 1), memoryLimit, "memory stays within its limit")
        XCTAssertEqual(full.spooled, full.buffered, "nothing reached the disk")
        XCTAssertEqual(full.written + full.dropped + full.spooled, full.produced)

        // Space returns: the next write moves the memory queue to disk, in order.
        XCTAssertEqual(unlink(filler), 0)
        try sink.write((next..<next + 10).map { sequencePoint($0) })
        next += 10
        let onDisk = try XCTUnwrap(sink.statistics().first)
        print("disk full: after freeing space: \(onDisk)")
        XCTAssertEqual(onDisk.buffered, 0, "the memory queue went to the spool")
        XCTAssertEqual(onDisk.dropped, full.dropped, "nothing more was dropped")
        XCTAssertEqual(onDisk.written + onDisk.dropped + onDisk.spooled, onDisk.produced)

        // The server comes up: it gets exactly the points that were not dropped, in order.
        let stub = try StubHTTPServer(port: port) { _ in .init(status: 204) }
        defer { stub.stop() }
        let drained = TestEnvironment.eventually(within: 60) { sink.statistics().first?.spooled == 0 }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(drained, "\(sink.statistics())")
        let final = try XCTUnwrap(sink.statistics().first)
        print("disk full: delivered: \(final)")
        let received = stub.requests.flatMap { String(decoding: $0.body, as: UTF8.self).split(separator: "\n").map(String.init) }
        XCTAssertEqual(received, (final.dropped..<next).map { LineProtocol.encode(sequencePoint($0))! }, "the newest points, in order, none twice")
        XCTAssertEqual(final.written, received.count)
        XCTAssertEqual(final.written + final.dropped, next)
        XCTAssertEqual(final.produced, next)
    }
}
