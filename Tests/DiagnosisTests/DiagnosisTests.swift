import ProbeResults
import XCTest
@testable import Diagnosis
@testable import ProbeEngine

final class DiagnosisTests: XCTestCase {
    let host = ProbeTarget(name: "db", address: IPAddress(parsing: "198.18.0.5"))

    func round(_ kind: ProbeKind, port: UInt16? = nil, sent: Int = 50, rtts: [Double] = [], refused: Int = 0, unreachable: Int = 0, resolved: Bool = true) -> RoundResult {
        var tally = RoundTally()
        tally.sent = sent
        tally.refused = refused
        tally.unreachable = unreachable
        for (index, rtt) in rtts.enumerated() { tally.recordSample(index: index, milliseconds: rtt, source: .kernel) }
        var target = host
        target.port = port
        if !resolved { target.address = nil }
        return tally.result(kind: kind, targetIndex: 0, target: target)
    }

    func testEachHostGetsItsOwnRoundsAndTraceAndAnUnresolvedOneNoTrace() {
        let other = ProbeTarget(name: "cache", address: IPAddress(parsing: "198.18.0.6"))
        let unresolved = ProbeTarget(name: "gone.example", address: nil, resolutionError: "no such name")
        func rounds(_ kind: ProbeKind, of target: ProbeTarget, index: Int, port: UInt16? = nil, rtts: [Double]) -> RoundResult {
            var tally = RoundTally()
            tally.sent = 10
            for (sample, rtt) in rtts.enumerated() { tally.recordSample(index: sample, milliseconds: rtt, source: .kernel) }
            var probed = target
            probed.port = port
            return tally.result(kind: kind, targetIndex: index, target: probed)
        }
        let hop = HopReport(hop: 1, addresses: [(IPAddress(parsing: "198.18.0.6")!, 10)], sent: 10, received: 10, rttsMilliseconds: Array(repeating: 1, count: 10),
                            isDestination: true, unreachable: 0)
        let trace = { (index: Int, target: ProbeTarget) in
            PathTrace(targetIndex: index, target: target, startNanoseconds: 0, rounds: 10, flows: 1, hops: [hop], flowPaths: [], reached: true, ignored: [:],
                      analysis: PathAnalysis(hops: [hop], reached: true))
        }
        let verdicts = Diagnosis.verdicts(
            hosts: [host, other, unresolved],
            icmp: [rounds(.icmp, of: other, index: 1, rtts: Array(repeating: 1, count: 10)), rounds(.icmp, of: host, index: 0, rtts: []),
                   rounds(.icmp, of: unresolved, index: 2, rtts: [])],
            tcp: [rounds(.tcp, of: host, index: 2, port: 6432, rtts: Array(repeating: 1, count: 10)), rounds(.tcp, of: other, index: 1, port: 6379, rtts: []),
                  rounds(.tcp, of: host, index: 0, port: 5432, rtts: Array(repeating: 1, count: 10))],
            traces: [trace(1, other), trace(2, unresolved)])
        XCTAssertEqual(verdicts.map(\.host.name), ["db", "cache", "gone.example"])
        XCTAssertEqual(verdicts[0].icmp?.received, 0, "db's own ICMP round, not cache's")
        XCTAssertEqual(verdicts[0].tcp.map(\.target.port), [5432, 6432], "db's ports, in the order given")
        XCTAssertNil(verdicts[0].trace)
        XCTAssertEqual(verdicts[0].diagnosis.culprit, .neither, "no ICMP reply, but the ports answer: the network carries them")
        XCTAssertEqual(verdicts[1].tcp.map(\.target.port), [6379])
        XCTAssertEqual(verdicts[1].trace?.targetIndex, 1)
        XCTAssertEqual(verdicts[1].diagnosis.culprit, .server, "the network answers, the port does not")
        XCTAssertNil(verdicts[2].trace, "a host without an address has no trace")
        XCTAssertEqual(verdicts[2].diagnosis.culprit, .name)
    }

    func testHealthyNetworkAndServiceIsNeither() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 50)),
                                           tcp: [round(.tcp, port: 5432, rtts: Array(repeating: 0.5, count: 50))])
        XCTAssertEqual(diagnosis.culprit, .neither)
        XCTAssertEqual(diagnosis.summary, "network OK (icmp 0% loss, 0.40 ms), TCP port 5432 OK 0.50 ms: neither, look at the application")
    }

    func testICMPLossAtTheThresholdIsANetworkProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, sent: 100, rtts: Array(repeating: 1, count: 95)), tcp: [])
        XCTAssertEqual(diagnosis.culprit, .network)
        XCTAssertTrue(diagnosis.summary.hasPrefix("ICMP 5% loss: network problem"), diagnosis.summary)
        let below = Diagnosis.diagnose(icmp: round(.icmp, sent: 100, rtts: Array(repeating: 1, count: 96)), tcp: [])
        XCTAssertEqual(below.culprit, .neither)
    }

    func testRefusedPortWithAHealthyNetworkIsAServerProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 50)), tcp: [round(.tcp, port: 81, refused: 50)])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertEqual(diagnosis.summary, "network OK (icmp 0% loss, 0.40 ms), TCP port 81 refused: service down")
    }

    func testSilentPortWithAHealthyNetworkIsFiltered() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 50)), tcp: [round(.tcp, port: 82)])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertTrue(diagnosis.summary.contains("TCP port 82 filtered (no answer)"), diagnosis.summary)
    }

    func testUnreachableHostIsANetworkProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, unreachable: 50), tcp: [round(.tcp, port: 80, unreachable: 50)])
        XCTAssertEqual(diagnosis.culprit, .network)
        XCTAssertTrue(diagnosis.summary.hasPrefix("host unreachable"), diagnosis.summary)
    }

    func testFilteredICMPWithAnAnsweringPortLetsTCPDecide() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp), tcp: [round(.tcp, port: 443, rtts: Array(repeating: 2, count: 50))])
        XCTAssertEqual(diagnosis.culprit, .neither)
        XCTAssertTrue(diagnosis.summary.hasPrefix("ICMP filtered (no replies) but the host answers TCP"), diagnosis.summary)
    }

    func testNothingAnsweringIsANetworkProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp), tcp: [round(.tcp, port: 443)])
        XCTAssertEqual(diagnosis.culprit, .network)
    }

    func testSlowHandshakeAgainstFastICMPIsAServerProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 50)),
                                           tcp: [round(.tcp, port: 80, rtts: Array(repeating: 3.5, count: 50))])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertTrue(diagnosis.summary.contains("handshake slow (3.50 ms vs ICMP 1.00 ms)"), diagnosis.summary)
        let justBelow = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 50)),
                                           tcp: [round(.tcp, port: 80, rtts: Array(repeating: 2.9, count: 50))])
        XCTAssertEqual(justBelow.culprit, .neither)
    }

    func testPartlyFailingHandshakesAreAnOverloadedServer() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 50)),
                                           tcp: [round(.tcp, port: 80, rtts: Array(repeating: 1.1, count: 40))])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertTrue(diagnosis.summary.contains("20% of handshakes failed"), diagnosis.summary)
    }

    func testUnresolvedNameIsANameProblem() {
        XCTAssertEqual(Diagnosis.diagnose(icmp: round(.icmp, sent: 0, resolved: false), tcp: []).culprit, .name)
    }

    func testWithoutICMPTheVerdictComesFromTCP() {
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: [round(.tcp, port: 80, sent: 3, rtts: [1, 1, 1])]).culprit, .neither)
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: [round(.tcp, port: 80, sent: 3, refused: 3)]).culprit, .server)
    }
}

final class RoundTallyTests: XCTestCase {
    func testRoundOutcomePrefersTheMostTellingFailure() {
        var tally = RoundTally()
        tally.sent = 4
        XCTAssertEqual(tally.outcome(resolved: true), .timeout)
        tally.errors = 1
        XCTAssertEqual(tally.outcome(resolved: true), .error)
        tally.unreachable = 1
        XCTAssertEqual(tally.outcome(resolved: true), .unreachable)
        tally.refused = 1
        XCTAssertEqual(tally.outcome(resolved: true), .refused)
        tally.recordSample(index: 0, milliseconds: 1, source: .user)
        XCTAssertEqual(tally.outcome(resolved: true), .ok)
        XCTAssertEqual(tally.outcome(resolved: false), .unresolved)
    }

    func testResultSortsRTTsIntoSendOrderAndCountsTimeouts() {
        var tally = RoundTally()
        tally.sent = 5
        tally.refused = 1
        tally.recordSample(index: 2, milliseconds: 3, source: .kernel)
        tally.recordSample(index: 0, milliseconds: 1, source: .user)
        let result = tally.result(kind: .tcp, targetIndex: 0, target: ProbeTarget(name: "x", address: IPAddress(parsing: "127.0.0.1"), port: 80))
        XCTAssertEqual(result.rttsMilliseconds, [1, 3])
        XCTAssertEqual(result.timeouts, 2)
        XCTAssertEqual(result.lossPercent, 60)
        XCTAssertEqual(result.timestampSource, .mixed)
        XCTAssertEqual(result.outcomeCounts[.refused], 1)
    }
}
