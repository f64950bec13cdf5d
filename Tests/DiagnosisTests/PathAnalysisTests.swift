import ProbeResults
import XCTest
@testable import Diagnosis

/// The rules that read a trace: forwarded loss, rate limiting told apart from loss, where
/// loss and latency start, and the hop `check` names. One test per rule.
final class PathAnalysisTests: XCTestCase {
    func hop(_ number: Int, sent: Int = 100, received: Int, rtt: Double = 1, destination: Bool = false, unreachable: Int = 0) -> HopReport {
        HopReport(hop: number, addresses: received > 0 ? [(IPAddress(parsing: "198.18.100.\(number)")!, received)] : [], sent: sent, received: received,
                  rttsMilliseconds: Array(repeating: rtt, count: received), isDestination: destination, unreachable: unreachable)
    }

    func trace(_ hops: [HopReport], reached: Bool = true) -> PathTrace {
        var marked = hops
        let analysis = PathAnalysis(hops: hops, reached: reached)
        for index in marked.indices where analysis.rateLimitingHops.contains(marked[index].hop) { marked[index].ratesLimited = true }
        return PathTrace(targetIndex: 0, target: ProbeTarget(name: "198.18.50.9", address: IPAddress(parsing: "198.18.50.9")), startNanoseconds: 0,
                         rounds: 100, flows: 1, hops: marked, flowPaths: [], reached: reached, ignored: [:], analysis: analysis)
    }

    func testForwardedLossNeverFallsAlongThePathAndIgnoresRateLimitingHops() {
        let analysis = PathAnalysis(hops: [hop(1, received: 100), hop(2, received: 40), hop(3, received: 90), hop(4, received: 88, destination: true)], reached: true)
        XCTAssertEqual(analysis.rateLimitingHops, [2], "hop 2 loses 60 % where the hops after it lose 11 %")
        XCTAssertEqual(analysis.forwardedLossPercent, [0, 0, 10, 12], "the rate-limiting hop takes the value before it")
    }

    func testLossThatPersistsFromHopFourIsLocatedThereAndIsNotRateLimiting() {
        let hops = [hop(1, received: 100), hop(2, received: 100), hop(3, received: 100), hop(4, received: 91), hop(5, received: 89),
                    hop(6, received: 90, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.lossStartHop, 4)
        XCTAssertEqual(analysis.rateLimitingHops, [], "10 % at every hop from 4 on is binomial noise around one loss, not a hop's own")
        XCTAssertEqual(analysis.destinationLossPercent, 10)
        XCTAssertEqual(analysis.forwardedLossPercent, [0, 0, 0, 9, 10.5, 10.5], "pooled where the raw losses fall: a drop is never undone")
        XCTAssertTrue(analysis.lossStartIsChangePoint)
        XCTAssertEqual(Diagnosis.pathNote(trace(hops), culprit: .network, reason: .icmpLoss),
                       "loss starts at hop 4, 198.18.100.4: 10.0 % from there to the target (95 % interval 5.5-17.4 %, 100 traced probes), a significant step")
    }

    func testAHopThatLosesOnlyItsOwnAnswersRateLimitsAndThePathIsClean() {
        let hops = [hop(1, received: 100), hop(2, received: 100), hop(3, received: 11), hop(4, received: 100), hop(5, received: 100, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.rateLimitingHops, [3])
        XCTAssertNil(analysis.lossStartHop)
        XCTAssertEqual(analysis.forwardedLossPercent, [0, 0, 0, 0, 0], "no loss is attributed to hop 3")
        XCTAssertEqual(Diagnosis.pathNote(trace(hops), culprit: .neither, reason: .healthy),
                       "path clean: 5 hops, no loss persists to the target; hop 3 198.18.100.3 rate-limits its ICMP (89.0 % unanswered, not loss)")
    }

    func testLossBehindARateLimitingHopIsLocatedAtTheFirstHopThatShowsIt() {
        let hops = [hop(1, received: 100), hop(2, received: 5), hop(3, received: 80), hop(4, received: 80, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.rateLimitingHops, [2])
        XCTAssertEqual(analysis.lossStartHop, 3)
    }

    func testANoisyDipAfterTheStartDoesNotMoveTheStart() {
        // Binomial noise at 10 % over 300 probes: hop 4 caught few drops, hops 5 and 6 more.
        let hops = [hop(1, sent: 300, received: 300), hop(2, sent: 300, received: 300), hop(3, sent: 300, received: 300), hop(4, sent: 300, received: 287),
                    hop(5, sent: 300, received: 274), hop(6, sent: 300, received: 271, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.lossStartHop, 4, "nothing is lost before hop 4, something at every hop from it")
        XCTAssertEqual(analysis.rateLimitingHops, [])
    }

    func testLossEqualEverywhereStartsAtTheFirstHop() {
        let hops = [hop(1, received: 90), hop(2, received: 89), hop(3, received: 91), hop(4, received: 90, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.lossStartHop, 1, "no split is significant: the loss is before the first router (the local link)")
        XCTAssertFalse(analysis.lossStartIsChangePoint)
    }

    func testALittleNoiseAtTheDestinationLocatesNothing() {
        let analysis = PathAnalysis(hops: [hop(1, received: 100), hop(2, received: 99, destination: true)], reached: true)
        XCTAssertNil(analysis.lossStartHop, "one probe in 100 is not a loss to locate")
        XCTAssertEqual(analysis.rateLimitingHops, [])
    }

    func testLatencyIsAddedWhereTheForwardedMedianRisesMost() {
        let hops = [hop(1, received: 100, rtt: 0.5), hop(2, received: 100, rtt: 0.6), hop(3, received: 100, rtt: 30), hop(4, received: 100, rtt: 9),
                    hop(5, received: 100, rtt: 31, destination: true)]
        let analysis = PathAnalysis(hops: hops, reached: true)
        XCTAssertEqual(analysis.latencyStartHop, 5, "hop 3's 30 ms is its own slow answer: hop 4 answers in 9 ms")
        XCTAssertEqual(analysis.addedLatencyMilliseconds ?? 0, 22, accuracy: 1e-9)
        let slowLink = [hop(1, received: 100, rtt: 0.5), hop(2, received: 100, rtt: 20.5), hop(3, received: 100, rtt: 21, destination: true)]
        XCTAssertEqual(PathAnalysis(hops: slowLink, reached: true).latencyStartHop, 2)
    }

    func testAPathThatEndsNamesTheLastHopThatAnswers() {
        let hops = [hop(1, received: 100), hop(2, received: 100), hop(3, received: 0)]
        XCTAssertEqual(Diagnosis.pathNote(trace(hops, reached: false), culprit: .network, reason: .noAnswer),
                       "the path ends after hop 2, 198.18.100.2: no hop after it answers, nor the target")
        let unreachable = [hop(1, received: 100), hop(2, received: 100, unreachable: 100)]
        XCTAssertEqual(Diagnosis.pathNote(trace(unreachable, reached: false), culprit: .network, reason: .unreachable),
                       "the path ends at hop 2, 198.18.100.2: it answers unreachable")
    }

    func testThePathHashChangesWithTheHopList() {
        let one = trace([hop(1, received: 100), hop(2, received: 100, destination: true)])
        var other = one
        other.hops[0].addressCounts = [AddressCount(address: IPAddress(parsing: "198.18.101.1")!, answers: 100)]
        XCTAssertEqual(one.pathHash, trace([hop(1, received: 90), hop(2, received: 100, destination: true)]).pathHash, "counts are not the path")
        XCTAssertNotEqual(one.pathHash, other.pathHash)
    }
}
