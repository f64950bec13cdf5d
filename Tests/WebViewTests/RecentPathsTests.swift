import ProbeResults
@testable import WebView
import XCTest

/// What `run`'s traces add to the view: the overview's path note (ending, length, the hop
/// where loss starts, the last change) and the target page's hop table.
final class RecentPathsTests: XCTestCase {
    typealias F = WebCoreFixture

    /// A trace of 198.18.50.9 over six hops, loss from hop 4 on (10 %), hop 2's address as given.
    func trace(start: Int64, hop2: String = "198.18.100.2", port: UInt16? = nil) -> PathTrace {
        func hop(_ number: Int, received: Int, address: String? = nil, destination: Bool = false) -> HopReport {
            HopReport(hop: number, addresses: [(IPAddress(parsing: address ?? "198.18.100.\(number)")!, received)], sent: 100, received: received,
                      rttsMilliseconds: Array(repeating: Double(number) * 0.1, count: received), isDestination: destination, unreachable: 0)
        }
        let hops = [hop(1, received: 100), hop(2, received: 100, address: hop2), hop(3, received: 100), hop(4, received: 91), hop(5, received: 89),
                    hop(6, received: 90, address: "198.18.50.9", destination: true)]
        return PathTrace(targetIndex: 0, target: ProbeTarget(name: "db.example", address: IPAddress(parsing: "198.18.50.9"), port: port),
                         startNanoseconds: start, rounds: 100, flows: 1, hops: hops, flowPaths: [], reached: true, ignored: [:],
                         analysis: PathAnalysis(hops: hops, reached: true))
    }

    func testTracesShowAsAPathNoteAndAHopTableAndChangesAreCounted() async throws {
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        history.observe(F.round(.icmp, "db.example", start: F.start, rtts: [1, 1, 1, 1, 1]), env: "lab", probe: "p")
        history.observeTrace(trace(start: F.start), env: "lab", probe: "p")
        history.observeTrace(trace(start: F.start + 60 * F.second), env: "lab", probe: "p")
        history.observeTrace(trace(start: F.start + 120 * F.second, hop2: "198.18.101.2"), env: "lab", probe: "p")
        // A TCP trace of the same host is a path of its own.
        history.observeTrace(trace(start: F.start, port: 5432), env: "lab", probe: "p")

        let paths = history.paths.paths(env: "lab", target: "db.example")
        XCTAssertEqual(paths.map(\.protocolName), ["ICMP", "TCP port 5432"])
        let icmp = try XCTUnwrap(paths.first)
        XCTAssertEqual(icmp.changes, [F.start + 120 * F.second], "the trace whose hop 2 moved; not the first, not the unchanged one")
        XCTAssertEqual(icmp.firstTracedNanoseconds, F.start)
        XCTAssertEqual(icmp.lossStartHop, 4)
        XCTAssertEqual(icmp.ending, "reached")
        XCTAssertEqual(icmp.hops.map(\.address), ["198.18.100.1", "198.18.101.2", "198.18.100.3", "198.18.100.4", "198.18.100.5", "198.18.50.9"])

        let view = WebView(history: history, longRange: nil, now: { F.start + 180 * F.second })
        let overview = await view.respond(path: "/", query: nil).body
        XCTAssertTrue(overview.contains("<div class=\"path-note\">path: reached, 6 hops; loss starts at hop 4 (198.18.100.4), 9.0 % from there; changed"), overview)
        let id = try XCTUnwrap(history.series().first?.id)
        let page = await view.respond(path: "/target", query: "id=\(id)").body
        XCTAssertEqual(page.components(separatedBy: "<table class=\"hops\">").count - 1, 2, "a hop table per traced path")
        XCTAssertEqual(page.components(separatedBy: "<tr class=\"hop\"").count - 1, 12)
        XCTAssertEqual(page.components(separatedBy: "data-loss-start=\"true\"").count - 1, 2, "hop 4 marked in each")
        XCTAssertTrue(page.contains("path changes since (UTC): "), page)
        // On the graph: the change of hop 2.
        XCTAssertEqual(page.components(separatedBy: "<line class=\"path-change\"").count - 1, 1, page)
    }
}

/// A target a reload removed stops having rounds: after 5 of its intervals (and a minute)
/// without one while others have rounds, the overview and the verdicts leave it out.
final class RemovedSeriesTests: XCTestCase {
    typealias F = WebCoreFixture

    func testASeriesWithoutRoundsForFiveIntervalsIsLeftOutAndComesBackWithItsNextRound() {
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        for index in 0..<20 {
            let start = F.start + Int64(index) * 10 * F.second
            history.observe(F.round(.icmp, "stays", start: start, rtts: [1]), env: "lab", probe: "p")
            if index < 5 { history.observe(F.round(.icmp, "removed", start: start, rtts: [1]), env: "lab", probe: "p") }
            // Rounds 0-4 of "removed"; its last at 40 s. Current until the newest is 100 s on (60 s > 5 x 10 s).
            let names = history.series().map(\.key.target)
            XCTAssertEqual(names, index <= 10 ? ["stays", "removed"] : ["stays"], "after round \(index)")
        }
        history.observe(F.round(.icmp, "removed", start: F.start + 200 * F.second, rtts: [1]), env: "lab", probe: "p")
        XCTAssertEqual(history.series().map(\.key.target), ["stays", "removed"], "back with its next round")
    }
}
