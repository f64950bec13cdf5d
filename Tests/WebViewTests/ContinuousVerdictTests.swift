import Diagnosis
import ProbeResults
@testable import WebView
import XCTest

final class ContinuousVerdictTests: XCTestCase {
    typealias F = WebCoreFixture

    /// The verdict of the one host after each round: ICMP and TCP port 5432, 5 probes a
    /// round (the default count), the round's losses given per round.
    func verdicts(lostPerRound: [Int]) -> [Diagnosis.Culprit] {
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        var culprits: [Diagnosis.Culprit] = []
        for (index, lost) in lostPerRound.enumerated() {
            let start = F.start + Int64(index) * 10 * F.second
            let icmpRTTs = (0..<(5 - lost)).map { 0.5 + Double($0) * 0.125 }
            let tcpRTTs = (0..<(5 - lost)).map { 0.625 + Double($0) * 0.125 }
            history.observe(F.round(.icmp, "db.example", start: start, rtts: icmpRTTs), env: "lab", probe: "p")
            history.observe(F.round(.tcp, "db.example", port: 5432, start: start + F.second, rtts: tcpRTTs), env: "lab", probe: "p")
            let all = ContinuousVerdict.verdicts(history)
            XCTAssertEqual(all.count, 1)
            culprits.append(all.first?.diagnosis.culprit ?? .name)
        }
        return culprits
    }

    func testCleanRoundsAreNeitherOnceFifteenAreIn() {
        let culprits = verdicts(lostPerRound: Array(repeating: 0, count: 25))
        // 14 rounds = 70 probes: 0 lost of 70 has an upper bound of 5.2 %, over 5 %.
        XCTAssertEqual(Array(culprits[0..<14]), Array(repeating: .inconclusive, count: 14))
        XCTAssertEqual(Array(culprits[14...]), Array(repeating: .neither, count: 11))
    }

    func testHalfTheProbesLostFromRoundNIsNetworkWithinFourRounds() {
        // Rounds 0-29 clean; from round N = 30 on, 50 % lost (3, 2, 3, 2... of 5), ICMP and TCP.
        let n = 30
        let lost = Array(repeating: 0, count: n) + (0..<10).map { $0 % 2 == 0 ? 3 : 2 }
        let culprits = verdicts(lostPerRound: lost)
        XCTAssertEqual(culprits[n - 1], .neither)
        // The stated bound: network by round N + 3 (10 of the window's 100 probes lost).
        let firstNetwork = try! XCTUnwrap(culprits.firstIndex(of: .network))
        XCTAssertGreaterThanOrEqual(firstNetwork, n)
        XCTAssertLessThanOrEqual(firstNetwork, n + 3)
        XCTAssertEqual(firstNetwork, n + 3)
        XCTAssertEqual(Array(culprits[n..<(n + 3)]), Array(repeating: .inconclusive, count: 3))
        XCTAssertEqual(Array(culprits[(n + 3)...]), Array(repeating: .network, count: 7))
    }

    /// Rounds of 2 handshakes: 20 of them are 40, whose 95 % interval (0 lost: 0-8.8 %)
    /// never falls under 5 %, so the window holds 100 probes' worth (50 rounds) and a
    /// clean host becomes "neither" once 37 are in (0 of 74: upper bound 4.9 %).
    func testSmallRoundsGetAWindowOfAHundredProbesSoACleanHostIsDecided() {
        XCTAssertEqual(ContinuousVerdict.windowRounds(probesPerRound: 5), 20)
        XCTAssertEqual(ContinuousVerdict.windowRounds(probesPerRound: 10), 20)
        XCTAssertEqual(ContinuousVerdict.windowRounds(probesPerRound: 2), 50)
        XCTAssertEqual(ContinuousVerdict.windowRounds(probesPerRound: 1), 100)
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        var culprits: [Diagnosis.Culprit] = []
        for index in 0..<60 {
            let start = F.start + Int64(index) * 10 * F.second
            history.observe(F.round(.icmp, "db", start: start, sent: 2, rtts: [0.5, 0.6]), env: "lab", probe: "p")
            history.observe(F.round(.tcp, "db", port: 5432, start: start + F.second, sent: 2, rtts: [0.7, 0.8]), env: "lab", probe: "p")
            culprits.append(ContinuousVerdict.verdicts(history).first?.diagnosis.culprit ?? .name)
        }
        XCTAssertEqual(culprits.firstIndex(of: .neither), 36, "the 37th round: 74 probes of each kind")
        XCTAssertEqual(Array(culprits[36...]), Array(repeating: .neither, count: 24))
        XCTAssertEqual(ContinuousVerdict.verdicts(history).first?.rounds, [50, 50])
    }

    func testTheWindowPoolsTheLastTwentyRoundsOfEachSeries() {
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        for index in 0..<30 {
            let start = F.start + Int64(index) * 10 * F.second
            history.observe(F.round(.icmp, "web", start: start, rtts: index < 25 ? [] : [1, 1, 1, 1, 1]), env: "lab", probe: "p")
            history.observe(F.round(.tcp, "web", port: 443, start: start, rtts: [2, 2, 2, 2]), env: "lab", probe: "p")
            history.observe(F.round(.tcp, "web", port: 80, start: start, sent: 5, rtts: [], refused: 5), env: "lab", probe: "p")
            // An ICMP-only host has no verdict.
            history.observe(F.round(.icmp, "other", start: start, rtts: [1]), env: "lab", probe: "p")
        }
        let verdict = try! XCTUnwrap(ContinuousVerdict.verdicts(history).first)
        XCTAssertEqual(ContinuousVerdict.verdicts(history).count, 1)
        XCTAssertEqual(verdict.target, "web")
        XCTAssertEqual(verdict.tcp.map(\.port), [80, 443])
        XCTAssertEqual(verdict.rounds, [20, 20, 20])
        // ICMP: 15 of the 20 rounds lost everything: 75 of 100.
        XCTAssertEqual(verdict.diagnosis.icmpLoss?.lost, 75)
        XCTAssertEqual(verdict.diagnosis.icmpLoss?.probes, 100)
        XCTAssertEqual(verdict.diagnosis.handshakeFailures.map(\.failures.lost), [100, 20])
        XCTAssertEqual(verdict.diagnosis.culprit, .network)
        XCTAssertEqual(verdict.diagnosis.reason, .icmpLoss)
    }
}
