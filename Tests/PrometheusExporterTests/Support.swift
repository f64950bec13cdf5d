import Foundation
import TestSupport
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe run` as a child process, its output in files of its directory.
final class NetprobeRun {
    let process = Process()
    let directory: URL
    var errorLog: String { (try? String(contentsOf: directory.appendingPathComponent("stderr.log"), encoding: .utf8)) ?? "" }

    /// - Parameter network: run inside its prober namespace (`ip netns exec`).
    init(config: URL, network: SilentNetwork? = nil) throws {
        directory = config.deletingLastPathComponent()
        let command = [TestEnvironment.builtExecutable("netprobe"), "run", "--config", config.path, "--output", "json"]
        if let network {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["ip", "netns", "exec", network.prober] + command
        } else {
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
        }
        for name in ["stdout.log", "stderr.log"] { _ = FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: nil) }
        process.standardOutput = try FileHandle(forWritingTo: directory.appendingPathComponent("stdout.log"))
        process.standardError = try FileHandle(forWritingTo: directory.appendingPathComponent("stderr.log"))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// SIGTERM and the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        TestEnvironment.eventually(within: 30) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { stop() }

    /// Resident memory in kilobytes (VmRSS).
    var residentKilobytes: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }
}

enum Privilege {
    static func requireRoot() throws {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (ICMP sockets, a packet capture on lo); CI runs as root")
        }
    }
}

/// Every TCP and ICMP packet the IPv4 stack receives, by destination (raw sockets get a
/// copy of each; on loopback every packet sent is also received), to prove something was
/// or was not sent.
final class LoopbackCapture: @unchecked Sendable {
    private let descriptors: [Int32]
    private let lock = NSLock()
    private var destinations: [UInt32: Int] = [:]
    private var thread: Thread?
    private var stopped = false

    init() throws {
        var opened: [Int32] = []
        for proto in [Int32(IPPROTO_TCP), Int32(IPPROTO_ICMP)] {
            let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), proto)
            guard fd >= 0 else { opened.forEach { close($0) }; throw POSIXError(.EPERM) }
            opened.append(fd)
        }
        descriptors = opened
        let thread = Thread { [self] in read() }
        self.thread = thread
        thread.start()
    }

    private func read() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var polled = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while !lock.withLock({ stopped }) {
            guard poll(&polled, nfds_t(polled.count), 50) > 0 else { continue }
            for entry in polled where entry.revents & Int16(POLLIN) != 0 {
                let count = recv(entry.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard count >= 20 else { continue }
                let destination = UInt32(buffer[16]) << 24 | UInt32(buffer[17]) << 16 | UInt32(buffer[18]) << 8 | UInt32(buffer[19])
                lock.withLock { destinations[destination, default: 0] += 1 }
            }
        }
    }

    /// Packets seen to `address` (dotted quad) so far.
    func packets(to address: String) -> Int {
        let parts = address.split(separator: ".").compactMap { UInt32($0) }
        let value = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3]
        return lock.withLock { destinations[value] ?? 0 }
    }

    func stop() {
        lock.withLock { stopped = true }
        // Its loop looks at `stopped` every 50 ms; its descriptors are closed only once it is done.
        guard TestEnvironment.eventually(within: 30, { thread?.isFinished != false }) else { return XCTFail("the reading thread did not stop") }
        descriptors.forEach { close($0) }
    }
}

/// A loopback TCP port that listens (the kernel answers SYNs) and one that does not.
final class LoopbackListener {
    let fd: Int32
    let port: Int

    init() throws {
        port = TestEnvironment.freePort()
        fd = try TestEnvironment.listenOnLoopback(port: port, backlog: 1024, owner: "LoopbackListener")
    }

    deinit { close(fd) }
}

/// A random loopback address other than 127.0.0.1 (other sessions' tests use that one).
func randomLoopbackAddress() -> String {
    "127.\(Int.random(in: 10...250)).\(Int.random(in: 1...250)).\(Int.random(in: 1...250))"
}
