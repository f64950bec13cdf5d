import ProbeResults
import XCTest
import CSystemShims
import Foundation
import Logging
@testable import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

/// The loop's wait, with epoll_pwait2 and with the epoll_wait fallback that kernels before
/// 5.11 (and valgrind) need.
final class EventLoopTests: XCTestCase {
    func testBothWaitsHandOverAReadyDescriptorAndAWakeUp() throws {
        for nanosecondWait in [true, false] {
            let loop = try EventLoop()
            defer { loop.close() }
            loop.hasNanosecondWait = nanosecondWait
            var ends: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&ends), 0)
            defer { Glibc.close(ends[0]); Glibc.close(ends[1]) }
            try loop.register(ends[0], events: EPOLLIN.rawValue)

            // A readable descriptor ends a wait whose deadline is far away.
            var byte: UInt8 = 7
            XCTAssertEqual(write(ends[1], &byte, 1), 1)
            var seen: [(Int32, UInt32)] = []
            try loop.wait(until: Clock.monotonicNanoseconds() + 60_000_000_000) { seen.append(($0, $1)) }
            XCTAssertEqual(seen.map(\.0), [ends[0]], "nanosecond wait: \(nanosecondWait)")
            XCTAssertNotEqual((seen.first?.1 ?? 0) & EPOLLIN.rawValue, 0)
            XCTAssertEqual(read(ends[0], &byte, 1), 1)

            // wake() ends a wait without a deadline and is not handed over as a descriptor.
            loop.wake()
            seen = []
            try loop.wait(until: nil) { seen.append(($0, $1)) }
            XCTAssertTrue(seen.isEmpty)

            // A deadline already past returns at once with nothing ready.
            try loop.wait(until: Clock.monotonicNanoseconds() - 1) { seen.append(($0, $1)) }
            XCTAssertTrue(seen.isEmpty)
        }
    }
}

/// `run`'s probe loop lets its timed waits end up to its timer slack late, so that sends
/// due close together share a wake-up; that is set on the loop thread alone.
final class ProbeLoopTimerSlackTests: XCTestCase {
    func testTheSlackIsAtMostAHundredthOfATargetsGapAndAtMostOneMillisecond() {
        XCTAssertEqual(ProbeLoop.batchingTimerSlack(shortestGapNanoseconds: 1_000_000_000), 1_000_000)
        XCTAssertEqual(ProbeLoop.batchingTimerSlack(shortestGapNanoseconds: 10_000_000), 100_000)
        XCTAssertEqual(ProbeLoop.batchingTimerSlack(shortestGapNanoseconds: 1_000_000), 50_000, "never below the kernel's default")
    }

    func testTheLoopThreadRunsWithTheGivenTimerSlackAndOtherThreadsKeepTheirs() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        let loop = try ProbeLoop(logger: logger, timerSlackNanoseconds: 1_000_000)
        let prober = try ICMPProber(sockets: try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger),
                                    configuration: ICMPProbeConfiguration(count: 0, intervalNanoseconds: 20_000_000, timeoutNanoseconds: 200_000_000),
                                    loop: loop, logger: logger)
        defer { prober.close() }
        var slacks: [String: Set<Int>] = [:]
        var rounds = 0
        // While the run goes on (its first reply is in), the loop thread exists: read every
        // thread's name and timer slack from /proc.
        for await event in prober.probe([ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1"))], reportingAttempts: true) {
            if case .attempt = event, slacks.isEmpty {
                for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") {
                    // (timerslack_ns is listed under /proc/PID only, but every thread's ID is
                    // a /proc entry of its own.)
                    guard let name = Self.read("/proc/self/task/\(task)/comm"), let slack = Self.read("/proc/\(task)/timerslack_ns").flatMap({ Int($0) }) else { continue }
                    slacks[name, default: []].insert(slack)
                }
                prober.stop()
            }
            if case .round = event { rounds += 1 }

        }
        XCTAssertGreaterThan(rounds, 0)
        XCTAssertEqual(slacks["netprobe-loop"], [1_000_000], "threads: \(slacks)")
        XCTAssertFalse(slacks.filter { $0.key != "netprobe-loop" }.values.contains { $0.contains(1_000_000) },
                       "only the loop thread's waits are slackened: \(slacks)")
    }

    /// A /proc file's text, trimmed (its size reads as 0, so it is read to the end).
    static func read(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
