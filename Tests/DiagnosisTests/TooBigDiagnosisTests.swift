import ProbeResults
import XCTest
@testable import Diagnosis
@testable import ProbeEngine

/// Rule 2's don't-fragment case (`check -M do -s SIZE`): echoes answered only "too big" are
/// a network finding with the path MTU, and a "too big" answer is never counted as loss.
final class TooBigDiagnosisTests: XCTestCase {
    let host = ProbeTarget(name: "db", address: IPAddress(parsing: "198.18.0.5"), options: PacketOptions(fragmentation: .do))

    func round(sent: Int, tooBig: [Int?], received: Int = 0) -> RoundResult {
        var tally = RoundTally()
        tally.sent = sent
        for mtu in tooBig { tally.recordTooBig(mtu: mtu) }
        for index in 0..<received { tally.recordSample(index: index, milliseconds: 1, source: .kernel) }
        return tally.result(kind: .icmp, targetIndex: 0, target: host)
    }

    func testEchoesAnsweredOnlyTooBigAreANetworkFindingNamingTheSmallestMTU() {
        let icmp = round(sent: 3, tooBig: [1400, 1280, 1400])
        XCTAssertEqual(icmp.outcome, .tooBig)
        XCTAssertEqual(icmp.pathMTU, 1280, "the smallest MTU named")
        XCTAssertEqual(icmp.timeouts, 0, "a too-big answer is no timeout")
        let diagnosis = Diagnosis.diagnose(icmp: icmp, tcp: [])
        XCTAssertEqual(diagnosis.culprit, .network)
        XCTAssertEqual(diagnosis.reason, .tooBig)
        XCTAssertEqual(diagnosis.summary, "network: 3 of 3 don't-fragment echo requests too big: the path MTU is 1280 bytes, smaller than the probes")
        XCTAssertEqual(diagnosis.icmpLoss, LossEstimate(lost: 0, probes: 0), "too-big echoes are neither lost nor answered")
    }

    func testTooBigWithoutAnMTUSaysSo() {
        let diagnosis = Diagnosis.diagnose(icmp: round(sent: 2, tooBig: [nil, nil]), tcp: [])
        XCTAssertEqual(diagnosis.reason, .tooBig)
        XCTAssertEqual(diagnosis.summary, "network: 2 of 2 don't-fragment echo requests too big: the path named no MTU, smaller than the probes")
    }

    func testTooBigAnswersAreNotCountedAsLossWhenOtherEchoesPass() {
        // Half the echoes too big (e.g. two paths of different MTU), the other half answered:
        // no echo was lost, so no loss finding.
        let icmp = round(sent: 200, tooBig: Array(repeating: 1400, count: 100), received: 100)
        XCTAssertEqual(icmp.outcome, .ok)
        let diagnosis = Diagnosis.diagnose(icmp: icmp, tcp: [])
        XCTAssertEqual(diagnosis.icmpLoss, LossEstimate(lost: 0, probes: 100))
        XCTAssertNotEqual(diagnosis.reason, .icmpLoss, diagnosis.summary)
        XCTAssertNotEqual(diagnosis.culprit, .network, diagnosis.summary)
    }

    func testTheTraceIsPooledWithTheEchoesThatWereNotTooBig() {
        let hop = HopReport(hop: 1, addresses: [(IPAddress(parsing: "198.18.0.5")!, 10)], sent: 10, received: 10, rttsMilliseconds: Array(repeating: 1, count: 10),
                            isDestination: true, unreachable: 0)
        let trace = PathTrace(targetIndex: 0, target: host, startNanoseconds: 0, rounds: 10, flows: 1, hops: [hop], flowPaths: [], reached: true, ignored: [:],
                              analysis: PathAnalysis(hops: [hop], reached: true))
        let loss = Diagnosis.loss(of: round(sent: 11, tooBig: Array(repeating: 1400, count: 11)), pooledWith: trace)
        XCTAssertEqual(loss, LossEstimate(lost: 0, probes: 10, traceProbes: 10), "the trace's 10 echoes reached the host; the 11 too big say nothing of loss")
    }
}
