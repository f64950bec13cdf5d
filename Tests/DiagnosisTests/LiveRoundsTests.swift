import ProbeResults
import XCTest
@testable import Diagnosis

/// `check`'s rounds so far, from the attempt events, and whether probing on could decide.
final class LiveRoundsTests: XCTestCase {
    let host = ProbeTarget(name: "198.18.50.9", address: IPAddress(parsing: "198.18.50.9"))

    func testLiveRoundsCountTheGapsBelowTheLastReplyAsLost() {
        var target = host
        target.port = 80
        var live = LiveRounds(icmp: [host], tcp: [target])
        for sequence in [1, 2, 4, 5] {
            live.record(AttemptEvent(kind: .icmp, targetIndex: 0, target: host, sequence: sequence, outcome: .ok, rttMilliseconds: 1, isDuplicate: false))
        }
        live.record(AttemptEvent(kind: .icmp, targetIndex: 0, target: host, sequence: 5, outcome: .ok, rttMilliseconds: 1, isDuplicate: true))
        for (sequence, outcome) in [(1, ProbeOutcome.ok), (2, .timeout), (3, .refused)] {
            live.record(AttemptEvent(kind: .tcp, targetIndex: 0, target: target, sequence: sequence, outcome: outcome, rttMilliseconds: outcome == .ok ? 2 : nil, isDuplicate: false))
        }
        let icmpRound = live.icmpRounds[0]
        XCTAssertEqual([icmpRound.sent, icmpRound.received], [5, 4], "probe 3 went unanswered; the duplicate is no reply")
        XCTAssertEqual(icmpRound.statistics?.median, 1)
        let tcpRound = live.tcpRounds[0]
        XCTAssertEqual([tcpRound.sent, tcpRound.received, tcpRound.refused], [3, 1, 1])
        XCTAssertEqual(tcpRound.outcome, .ok)
    }

    func testProbingGoesOnOnlyWhileMoreProbesCouldDecide() {
        func live(replies: Int, of sent: Int) -> LiveRounds {
            var rounds = LiveRounds(icmp: [host], tcp: [])
            for sequence in 1...sent where sequence <= replies || sequence == sent {
                rounds.record(AttemptEvent(kind: .icmp, targetIndex: 0, target: host, sequence: sequence, outcome: .ok, isDuplicate: false))
            }
            return rounds
        }
        XCTAssertTrue(live(replies: 47, of: 50).wantMoreProbes(hosts: [host]), "2 of 50 lost: 1.1-13.5 %")
        XCTAssertFalse(live(replies: 99, of: 100).wantMoreProbes(hosts: [host]), "0 of 100 lost")
        XCTAssertFalse(live(replies: 79, of: 100).wantMoreProbes(hosts: [host]), "20 of 100 lost")
        XCTAssertFalse(LiveRounds(icmp: [host], tcp: []).wantMoreProbes(hosts: [host]), "no reply yet: more of the same decides nothing")
        let unresolved = ProbeTarget(name: "gone.example", address: nil, resolutionError: "no such name")
        XCTAssertFalse(LiveRounds(icmp: [unresolved], tcp: []).wantMoreProbes(hosts: [unresolved]))
        XCTAssertFalse(LiveRounds(icmp: [], tcp: []).wantMoreProbes(hosts: [host]), "nothing probed for this host")
    }
}
