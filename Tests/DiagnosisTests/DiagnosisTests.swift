import ProbeResults
import XCTest
@testable import Diagnosis
@testable import ProbeEngine

final class DiagnosisTests: XCTestCase {
    let host = ProbeTarget(name: "db", address: IPAddress(parsing: "198.18.0.5"))

    /// A round of `sent` probes (100 by default: enough for 0 lost to be surely below 5 %).
    func round(_ kind: ProbeKind, port: UInt16? = nil, sent: Int = 100, rtts: [Double] = [], refused: Int = 0, unreachable: Int = 0, resolved: Bool = true) -> RoundResult {
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
            tally.sent = 100
            for (sample, rtt) in rtts.enumerated() { tally.recordSample(index: sample, milliseconds: rtt, source: .kernel) }
            var probed = target
            probed.port = port
            return tally.result(kind: kind, targetIndex: index, target: probed)
        }
        let hop = HopReport(hop: 1, addresses: [(IPAddress(parsing: "198.18.0.6")!, 100)], sent: 100, received: 100, rttsMilliseconds: Array(repeating: 1, count: 100),
                            isDestination: true, unreachable: 0)
        let trace = { (index: Int, target: ProbeTarget) in
            PathTrace(targetIndex: index, target: target, startNanoseconds: 0, rounds: 100, flows: 1, hops: [hop], flowPaths: [], reached: true, ignored: [:],
                      analysis: PathAnalysis(hops: [hop], reached: true))
        }
        let verdicts = Diagnosis.verdicts(
            hosts: [host, other, unresolved],
            icmp: [rounds(.icmp, of: other, index: 1, rtts: Array(repeating: 1, count: 100)), rounds(.icmp, of: host, index: 0, rtts: []),
                   rounds(.icmp, of: unresolved, index: 2, rtts: [])],
            tcp: [rounds(.tcp, of: host, index: 2, port: 6432, rtts: Array(repeating: 1, count: 100)), rounds(.tcp, of: other, index: 1, port: 6379, rtts: []),
                  rounds(.tcp, of: host, index: 0, port: 5432, rtts: Array(repeating: 1, count: 100))],
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
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 100)),
                                           tcp: [round(.tcp, port: 5432, rtts: Array(repeating: 0.5, count: 100))])
        XCTAssertEqual(diagnosis.culprit, .neither)
        XCTAssertEqual(diagnosis.summary, "neither: ICMP loss 0.0 % (95 % interval 0.0-3.7 %, 100 probes), TCP port 5432 OK 0.50 ms: look at the application")
    }

    func testICMPLossIsANetworkProblemOnlyWhenItsIntervalIsAboveTheThreshold() {
        // 5 of 100 is the old threshold, but its interval (2.2-11.2 %) does not decide.
        XCTAssertEqual(Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 95)), tcp: []).culprit, .inconclusive)
        let lossy = Diagnosis.diagnose(icmp: round(.icmp, sent: 1000, rtts: Array(repeating: 1, count: 920)), tcp: [])
        XCTAssertEqual(lossy.culprit, .network, "8 % of 1,000: 6.5-9.9 %")
        XCTAssertEqual(lossy.reason, .icmpLoss)
        let low = Diagnosis.diagnose(icmp: round(.icmp, sent: 1000, rtts: Array(repeating: 1, count: 980)), tcp: [])
        XCTAssertEqual(low.culprit, .neither, "2 % of 1,000: 1.3-3.1 %")
    }

    func testRefusedPortWithAHealthyNetworkIsAServerProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 100)), tcp: [round(.tcp, port: 81, refused: 100)])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertEqual(diagnosis.summary, "server: ICMP loss 0.0 % (95 % interval 0.0-3.7 %, 100 probes), TCP port 81 refused: service down")
    }

    func testSilentPortWithAHealthyNetworkIsFiltered() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 0.4, count: 100)), tcp: [round(.tcp, port: 82)])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertTrue(diagnosis.summary.contains("TCP port 82 filtered (no answer)"), diagnosis.summary)
    }

    func testRefusalsAndSilentPortsAreTheServersEvenWhileTheLossIsUndecided() {
        let undecided = round(.icmp, sent: 50, rtts: Array(repeating: 0.4, count: 48))
        XCTAssertEqual(Diagnosis.diagnose(icmp: undecided, tcp: []).culprit, .inconclusive)
        XCTAssertEqual(Diagnosis.diagnose(icmp: undecided, tcp: [round(.tcp, port: 81, refused: 100)]).reason, .refused, "loss does not refuse")
        XCTAssertEqual(Diagnosis.diagnose(icmp: undecided, tcp: [round(.tcp, port: 82)]).reason, .portFiltered, "nor silence a port that ICMP gets through to")
        XCTAssertEqual(Diagnosis.diagnose(icmp: undecided, tcp: [round(.tcp, port: 80, rtts: Array(repeating: 0.5, count: 90))]).reason, .icmpLossUndecided,
                       "but failed handshakes may be that loss")
    }

    func testUnreachableHostIsANetworkProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, unreachable: 100), tcp: [round(.tcp, port: 80, unreachable: 100)])
        XCTAssertEqual(diagnosis.culprit, .network)
        XCTAssertEqual(diagnosis.summary, "network: unreachable (ICMP: 100 of 100, TCP port 80: 100 of 100): no route, or the host is down")
    }

    func testFilteredICMPWithAnAnsweringPortLetsTCPDecide() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp), tcp: [round(.tcp, port: 443, rtts: Array(repeating: 2, count: 100))])
        XCTAssertEqual(diagnosis.culprit, .neither)
        XCTAssertEqual(diagnosis.summary, "neither: ICMP filtered (no reply to 100 probes), TCP port 443 OK 2.00 ms: look at the application")
    }

    func testNothingAnsweringIsANetworkProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp), tcp: [round(.tcp, port: 443)])
        XCTAssertEqual(diagnosis.culprit, .network)
        XCTAssertEqual(diagnosis.summary, "network: no reply to 100 ICMP probes nor to TCP port 443: the host is down, or the path to it")
    }

    func testSlowHandshakeAgainstFastICMPIsAServerProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 100)),
                                           tcp: [round(.tcp, port: 80, rtts: Array(repeating: 3.5, count: 100))])
        XCTAssertEqual(diagnosis.culprit, .server)
        XCTAssertTrue(diagnosis.summary.hasSuffix("TCP port 80 handshake median 3.50 ms vs ICMP 1.00 ms: slow to accept"), diagnosis.summary)
        let justBelow = Diagnosis.diagnose(icmp: round(.icmp, rtts: Array(repeating: 1, count: 100)),
                                           tcp: [round(.tcp, port: 80, rtts: Array(repeating: 2.9, count: 100))])
        XCTAssertEqual(justBelow.culprit, .neither)
    }

    func testHandshakeFailuresAreJudgedByTheirIntervalToo() {
        let icmp = round(.icmp, rtts: Array(repeating: 1, count: 100))
        let overloaded = Diagnosis.diagnose(icmp: icmp, tcp: [round(.tcp, port: 80, sent: 50, rtts: Array(repeating: 1.1, count: 40))])
        XCTAssertEqual(overloaded.culprit, .server)
        XCTAssertTrue(overloaded.summary.hasSuffix("TCP port 80 handshake failures 20.0 % (95 % interval 11.2-33.0 %, 50 handshakes): overloaded"), overloaded.summary)
        XCTAssertEqual(overloaded.handshakeFailures, [PortFailures(port: 80, failures: LossEstimate(lost: 10, probes: 50))])
        let undecided = Diagnosis.diagnose(icmp: icmp, tcp: [round(.tcp, port: 80, sent: 50, rtts: Array(repeating: 1.1, count: 48))])
        XCTAssertEqual(undecided.culprit, .inconclusive)
        XCTAssertEqual(undecided.reason, .handshakeFailuresUndecided)
        XCTAssertTrue(undecided.summary.hasSuffix("TCP port 80 handshake failures 4.0 % (95 % interval 1.1-13.5 %, 50 handshakes): "
                                                  + "the interval straddles the 5 % threshold; probe longer (--max-duration)"), undecided.summary)
    }

    func testUnresolvedNameIsANameProblem() {
        let diagnosis = Diagnosis.diagnose(icmp: round(.icmp, sent: 0, resolved: false), tcp: [])
        XCTAssertEqual(diagnosis.culprit, .name)
        XCTAssertEqual(diagnosis.summary, "name: db does not resolve: DNS problem")
    }

    func testWithoutICMPTheVerdictComesFromTCP() {
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: [round(.tcp, port: 80, rtts: Array(repeating: 1, count: 100))]).culprit, .neither)
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: [round(.tcp, port: 80, refused: 100)]).culprit, .server)
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: [round(.tcp, port: 80, sent: 3, rtts: [1, 1, 1])]).culprit, .inconclusive,
                       "3 of 3 handshakes: up to 56 % may fail")
        XCTAssertEqual(Diagnosis.diagnose(icmp: nil, tcp: []).reason, .nothingMeasured)
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
