import CSystemShims
import Logging
import ProbeResults
import XCTest
@testable import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

/// `run`'s repeating rounds, on real loopback sockets.
final class RepeatingRoundsTests: XCTestCase {
    /// The rounds of `stream` until `enough` says so (then `stop`), or the stream ends. The
    /// time limit only keeps a broken prober from hanging the suite.
    func collect(_ stream: AsyncStream<ProbeEvent>, until enough: @escaping ([RoundResult]) -> Bool = { _ in false },
                 stop: @escaping @Sendable () -> Void) async -> [RoundResult] {
        await collectEvents(stream, until: enough, stop: stop).compactMap { event in
            if case .round(let round) = event { return round }
            return nil
        }
    }

    /// Every event of `stream`, in the order the prober reported them, until `enough` says
    /// so of the rounds among them.
    func collectEvents(_ stream: AsyncStream<ProbeEvent>, until enough: @escaping ([RoundResult]) -> Bool = { _ in false },
                       stop: @escaping @Sendable () -> Void) async -> [ProbeEvent] {
        let safety = Task {
            try? await Task.sleep(nanoseconds: 120_000_000_000)
            if !Task.isCancelled { stop() }
        }
        var events: [ProbeEvent] = []
        var rounds: [RoundResult] = []
        var stopped = false
        for await event in stream {
            events.append(event)
            if case .round(let round) = event { rounds.append(round) }
            if !stopped && enough(rounds) {
                stopped = true
                stop()
            }
        }
        safety.cancel()
        return events
    }

    func testICMPRoundsRepeatEveryIntervalWithoutOverlapAndUnresolvedTargetsReportEachRound() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        let sockets = try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger)
        var configuration = ICMPProbeConfiguration(count: 3, intervalNanoseconds: 20_000_000, timeoutNanoseconds: 100_000_000)
        configuration.roundIntervalNanoseconds = 250_000_000
        let prober = try ICMPProber(sockets: sockets, configuration: configuration, logger: logger)
        defer { prober.close() }
        let targets = [ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1")),
                       ProbeTarget(name: "gone.invalid", address: nil, resolutionError: "gone")]
        let events = await collectEvents(prober.probe(targets, reportingAttempts: true), until: { rounds in
            rounds.filter { $0.targetIndex == 0 }.count >= 4 && rounds.filter { $0.targetIndex == 1 }.count >= 4
        }) { prober.stop() }
        let rounds = events.compactMap { event -> RoundResult? in
            if case .round(let round) = event { return round }
            return nil
        }
        let loopback = rounds.filter { $0.targetIndex == 0 }
        XCTAssertGreaterThanOrEqual(loopback.count, 4)
        for round in loopback {
            XCTAssertEqual(round.sent, 3)
            XCTAssertEqual(round.received, 3)
            XCTAssertNotNil(round.scheduleSlipMilliseconds, "a repeating round reports its slip")
        }
        let starts = loopback.map(\.startTime.timeIntervalSince1970)
        print("repeating rounds: starts \(zip(starts, starts.dropFirst()).map { String(format: "%.3f", $1 - $0) }) s apart (interval 0.25 s), slips \(loopback.compactMap(\.scheduleSlipMilliseconds).map { String(format: "%.2f", $0) }) ms")
        XCTAssertEqual(starts, starts.sorted(), "rounds are reported in the order of their planned starts")
        // Rounds do not overlap, by the order of events rather than by a clock: between two
        // reports of the target come exactly the next round's three replies.
        var repliesBetweenReports: [[Int]] = [[]]
        for event in events {
            switch event {
            case .attempt(let attempt) where attempt.targetIndex == 0: repliesBetweenReports[repliesBetweenReports.count - 1].append(attempt.sequence)
            case .round(let round) where round.targetIndex == 0: repliesBetweenReports.append([])
            default: break
            }
        }
        XCTAssertEqual(repliesBetweenReports.dropLast().map { $0.sorted() }, Array(repeating: [1, 2, 3], count: loopback.count),
                       "each report follows its own round's replies and precedes the next round's")
        let unresolved = rounds.filter { $0.targetIndex == 1 }
        XCTAssertGreaterThanOrEqual(unresolved.count, 4, "an unresolved row every round")
        XCTAssertTrue(unresolved.allSatisfy { $0.outcome == .unresolved && $0.sent == 0 })

        // The prober runs again on the same sockets after a stop.
        var single = configuration
        single.roundIntervalNanoseconds = nil
        single.count = 2
        let again = await collect(prober.probe([targets[0]], configuration: single, reportingAttempts: false)) { prober.stop() }
        XCTAssertEqual(again.map(\.received), [2])
        XCTAssertNil(again.first?.scheduleSlipMilliseconds)
    }

    func testTCPRoundsRepeatToo() async throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        XCTAssertEqual(listen(listener, 64), 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        var configuration = TCPProbeConfiguration(count: 2, intervalNanoseconds: 20_000_000, timeoutNanoseconds: 200_000_000)
        configuration.roundIntervalNanoseconds = 200_000_000
        let prober = try TCPProber(configuration: configuration, logger: Logger(label: "test"))
        let rounds = await collect(prober.probe([ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1"), port: port)],
                                                reportingAttempts: false), until: { $0.count >= 4 }) { prober.stop() }
        XCTAssertGreaterThanOrEqual(rounds.count, 4)
        XCTAssertTrue(rounds.allSatisfy { $0.sent == 2 && $0.received == 2 }, "\(rounds.map { ($0.sent, $0.received) })")
    }
}
