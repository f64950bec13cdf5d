import Logging
import ProbeResults
import TestSupport
import XCTest
@testable import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

/// Repeating rounds (`netprobe run`) on real loopback sockets: targets added, removed and
/// moved on a running loop task, and stops, without disturbing any other target's schedule.
/// Each test acts on what the stream reports, never on elapsed time.
final class TargetUpdateTests: XCTestCase {
    typealias Listener = AnyAddressListener

    static let roundInterval: Int64 = 200_000_000

    func prober(count: Int = 2, spacing: Int64 = 10_000_000) -> TCPProber {
        var configuration = TCPProbeConfiguration(count: count, intervalNanoseconds: spacing, timeoutNanoseconds: 500_000_000)
        configuration.roundIntervalNanoseconds = Self.roundInterval
        return try! TCPProber(configuration: configuration, logger: Logger(label: "test"))
    }

    func assertOneIntervalApart(_ rounds: [RoundResult], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let starts = rounds.map(\.startNanoseconds)
        for (earlier, later) in zip(starts, starts.dropFirst()) {
            // Planned instants, not measured ones: exact.
            XCTAssertEqual(later - earlier, Self.roundInterval, "\(what): consecutive rounds one interval apart", file: file, line: line)
        }
    }

    func testAddedTargetsStartAtTheirOwnSlotRemovedOnesStopAfterTheirRoundAndTheOthersKeepTheirSchedule() async {
        let listener = Listener()
        let prober = prober()
        let stream = prober.probe([listener.target("127.0.0.1", name: "kept"), listener.target("127.0.0.2", name: "removed")], reportingAttempts: false)
        var rounds: [RoundResult] = []
        var added: Range<Int>?
        var roundsBeforeUpdate = 0
        for await event in stream {
            guard case .round(let round) = event else { continue }
            rounds.append(round)
            let kept = rounds.filter { $0.targetIndex == 0 }.count
            if added == nil && kept >= 3 && rounds.contains(where: { $0.targetIndex == 1 }) {
                roundsBeforeUpdate = rounds.count
                added = prober.update(TargetUpdate(added: [listener.target("127.0.0.1", name: "added")], removed: [1]))
            }
            if let added, rounds.filter({ $0.targetIndex == added.lowerBound }).count >= 3 { prober.stop() }
        }
        XCTAssertEqual(added, 2..<3, "the added target takes the next index")
        XCTAssertTrue(rounds.allSatisfy { $0.sent == 2 && $0.received == 2 }, "whole rounds only: \(rounds.map { ($0.targetIndex, $0.sent) })")
        let kept = rounds.filter { $0.targetIndex == 0 }
        assertOneIntervalApart(kept, "the kept target, across the update")
        XCTAssertGreaterThanOrEqual(kept.count, 5)
        let removedAfter = rounds.dropFirst(roundsBeforeUpdate).filter { $0.targetIndex == 1 }
        XCTAssertLessThanOrEqual(removedAfter.count, 1, "at most the round in flight at the update, whole")
        let new = rounds.filter { $0.targetIndex == 2 }
        XCTAssertEqual(new.first?.target.name, "added")
        XCTAssertGreaterThanOrEqual(new.count, 3)
        assertOneIntervalApart(new, "the added target")
    }

    func testAMovedTargetFinishesItsRoundOnTheOldAddressAndOnlyItsScheduleIsTouched() async {
        let listener = Listener()
        let prober = prober()
        let stream = prober.probe([listener.target("127.0.0.1", name: "moves"), listener.target("127.0.0.1", name: "stays")], reportingAttempts: false)
        var rounds: [RoundResult] = []
        var moved = false
        for await event in stream {
            guard case .round(let round) = event else { continue }
            rounds.append(round)
            if !moved && rounds.filter({ $0.targetIndex == 0 }).count >= 2 {
                moved = true
                prober.update(TargetUpdate(changed: [(index: 0, target: listener.target("127.0.0.2", name: "moves"))]))
            }
            if rounds.filter({ $0.targetIndex == 0 && $0.target.address?.description == "127.0.0.2" }).count >= 2 { prober.stop() }
        }
        let moves = rounds.filter { $0.targetIndex == 0 }
        let addresses = moves.map { $0.target.address?.description ?? "none" }
        XCTAssertEqual(addresses.prefix(2), ["127.0.0.1", "127.0.0.1"])
        let firstMoved = addresses.firstIndex(of: "127.0.0.2") ?? addresses.count
        XCTAssertEqual(Set(addresses[firstMoved...]), ["127.0.0.2"], "once moved, every round is on the new address: \(addresses)")
        XCTAssertGreaterThanOrEqual(addresses.count - firstMoved, 2)
        XCTAssertTrue(moves.allSatisfy { $0.sent == 2 && $0.received == 2 })
        assertOneIntervalApart(moves, "the moved target keeps its own schedule")
        assertOneIntervalApart(rounds.filter { $0.targetIndex == 1 }, "the other target")
    }

    func testAnEmptyUpdateChangesNothing() async {
        let listener = Listener()
        let prober = prober()
        let stream = prober.probe([listener.target("127.0.0.1")], reportingAttempts: false)
        var rounds: [RoundResult] = []
        for await event in stream {
            guard case .round(let round) = event else { continue }
            rounds.append(round)
            prober.update(TargetUpdate())
            if rounds.count == 4 { prober.stop() }
        }
        XCTAssertEqual(rounds.count, 4)
        assertOneIntervalApart(rounds, "an empty update after every round")
    }

    func testARunWithNoTargetLeftWaitsForNewOnesUntilStopped() async {
        let listener = Listener()
        let prober = prober()
        let stream = prober.probe([], reportingAttempts: false)
        XCTAssertEqual(prober.update(TargetUpdate(added: [listener.target("127.0.0.1", name: "first")])), 0..<1)
        var rounds: [RoundResult] = []
        for await event in stream {
            guard case .round(let round) = event else { continue }
            rounds.append(round)
            if rounds.count == 2 { prober.update(TargetUpdate(removed: [0], changed: [])) }
            if rounds.count == 2 { prober.update(TargetUpdate(added: [listener.target("127.0.0.1", name: "second")])) }
            if rounds.contains(where: { $0.targetIndex == 1 }) { prober.stop() }
        }
        XCTAssertEqual(rounds.map(\.target.name).prefix(2), ["first", "first"])
        XCTAssertEqual(rounds.last?.target.name, "second", "the empty run was still there to take it")
    }

    func testAStopFinishesTheRoundsInFlightWhole() async {
        let listener = Listener()
        // Four handshakes 40 ms apart per round: a round is in flight most of the time.
        let prober = prober(count: 4, spacing: 40_000_000)
        let stream = prober.probe([listener.target("127.0.0.1", name: "a"), listener.target("127.0.0.1", name: "b")], reportingAttempts: true)
        var rounds: [RoundResult] = []
        var attemptsAfterStop = 0
        var stopped = false
        for await event in stream {
            switch event {
            case .attempt:
                if stopped { attemptsAfterStop += 1 }
                // The first handshake of a's second round: a round is surely in flight.
                if !stopped && rounds.count >= 2 { stopped = true; prober.stop() }
            case .round(let round):
                rounds.append(round)
            case .abandoned:
                XCTFail("a round of 4 x 40 ms fits the stop budget")
            }
        }
        XCTAssertTrue(stopped)
        XCTAssertGreaterThan(attemptsAfterStop, 0, "the round in flight went on sending after the stop")
        XCTAssertTrue(rounds.allSatisfy { $0.sent == 4 && $0.received == 4 }, "whole rounds only: \(rounds.map { ($0.targetIndex, $0.sent) })")
    }

    func testARoundTooLongForTheStopBudgetIsAbandonedNotReported() async {
        let listener = Listener()
        // 100 handshakes 100 ms apart: ten seconds, more than the stop budget.
        let prober = prober(count: 100, spacing: 100_000_000)
        let stream = prober.probe([listener.target("127.0.0.1")], reportingAttempts: true)
        var rounds = 0
        var abandoned: [Int] = []
        for await event in stream {
            switch event {
            case .attempt: prober.stop()
            case .round: rounds += 1
            case .abandoned(let index, let target):
                abandoned.append(index)
                XCTAssertEqual(target.name, "127.0.0.1")
            }
        }
        XCTAssertEqual(rounds, 0, "a cut-short round is not a measurement")
        XCTAssertEqual(abandoned, [0])
    }

    func testICMPRoundsInFlightFinishWholeAtAStop() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        var configuration = ICMPProbeConfiguration(count: 5, intervalNanoseconds: 30_000_000, timeoutNanoseconds: 200_000_000)
        configuration.roundIntervalNanoseconds = Self.roundInterval
        let prober = try ICMPProber(sockets: try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger), configuration: configuration, logger: logger)
        defer { prober.close() }
        let stream = prober.probe([ProbeTarget(name: "a", address: IPAddress(parsing: "127.0.0.1")),
                                   ProbeTarget(name: "b", address: IPAddress(parsing: "127.0.0.2"))], reportingAttempts: true)
        var rounds: [RoundResult] = []
        var stopped = false
        for await event in stream {
            switch event {
            case .attempt where !stopped && rounds.count >= 2:
                stopped = true
                prober.stop()
            case .round(let round):
                rounds.append(round)
                if !stopped { XCTAssertEqual(prober.update(TargetUpdate()), 2..<2, "nothing added, nothing given out") }
            default:
                break
            }
        }
        XCTAssertTrue(stopped)
        XCTAssertTrue(rounds.allSatisfy { $0.sent == 5 && $0.received == 5 }, "whole rounds only: \(rounds.map { ($0.targetIndex, $0.sent) })")
        assertOneIntervalApart(rounds.filter { $0.targetIndex == 0 }, "ICMP rounds")
    }
}

extension AnyAddressListener {
    func target(_ address: String, name: String? = nil) -> ProbeTarget {
        ProbeTarget(name: name ?? address, address: IPAddress(parsing: address), port: port)
    }
}
