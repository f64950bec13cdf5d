#if canImport(FoundationXML)
import FoundationXML
#else
import Foundation
#endif
import ProbeResults
@testable import WebView
import XCTest

final class SmokeGraphTests: XCTestCase {
    typealias F = WebCoreFixture
    static let hostile = "db\"1' <script>alert('x')</script> & ]]> <![CDATA[\nnext line\u{1}"

    func bucket(_ column: Int, sent: Int = 10, received: Int = 10, median: Double? = 2, outcomes: Set<ProbeOutcome> = [.ok]) -> HistoryBucket {
        var bucket = HistoryBucket(startNanoseconds: F.start + Int64(column) * 30 * F.second, durationNanoseconds: 30 * F.second, rounds: 3,
                                   sent: sent, received: received, minimumMilliseconds: median.map { $0 - 1 }, medianMilliseconds: median,
                                   maximumMilliseconds: median.map { $0 + 3 })
        bucket.outcomes = outcomes
        return bucket
    }

    func parse(_ svg: String) throws -> XMLDocument {
        try XMLDocument(xmlString: svg, options: [])
    }

    /// An attribute's value (`attribute(forName:)` finds none on an element in the SVG
    /// namespace with swift-corelibs-foundation).
    func attribute(_ element: XMLElement, _ name: String) -> String? {
        element.attributes?.first { $0.name == name }?.stringValue
    }

    func elements(_ document: XMLDocument, _ path: String) throws -> [XMLElement] {
        try document.nodes(forXPath: path).compactMap { $0 as? XMLElement }
    }

    func testOneMedianPerBucketWithARepliesAtItsColumnAndGapsForEmptyBuckets() throws {
        // 10 columns of 30 s; columns 3 and 4 empty (a gap), column 7 lost everything.
        let buckets = [0, 1, 2, 5, 6, 8, 9].map { bucket($0) } + [bucket(7, received: 0, median: nil, outcomes: [.timeout])]
        let tcp = [bucket(0, median: 5), bucket(9, received: 5, median: 6)]
        let graph = SmokeGraph(title: "db (lab)", from: F.start, to: F.start + 300 * F.second, columns: 10,
                               lanes: [SmokeGraph.Lane(title: "ICMP", buckets: buckets), SmokeGraph.Lane(title: "TCP port 5432", buckets: tcp)])
        let document = try parse(graph.svg())
        let lanes = try elements(document, "//*[local-name()='g'][@class='lane']")
        XCTAssertEqual(lanes.count, 2)
        let icmpMedians = try lanes[0].nodes(forXPath: ".//*[local-name()='rect'][@class='median']").compactMap { $0 as? XMLElement }
        XCTAssertEqual(icmpMedians.count, 7)
        XCTAssertEqual(icmpMedians.compactMap { attribute($0, "x") }.compactMap(Int.init),
                       [0, 1, 2, 5, 6, 8, 9].map { SmokeGraph.left + $0 * 72 })
        // 10 columns are widened to 72 pixels each (720 / 10).
        XCTAssertEqual(graph.columnPixels, 72)
        // Loss band: one per non-empty bucket (the lossless ones green), none at the gap.
        let losses = try lanes[0].nodes(forXPath: ".//*[local-name()='rect'][@class='loss']").compactMap { $0 as? XMLElement }
        XCTAssertEqual(losses.count, 8)
        XCTAssertEqual(losses.last.flatMap { attribute($0, "fill") }, "#ff0000")
        XCTAssertEqual(Set(losses.dropLast().compactMap { attribute($0, "fill") }), ["#26ff00"])
        XCTAssertEqual(try elements(document, "//*[local-name()='rect'][@class='outcome outcome-timeout']").count, 1)
        // TCP: the lossy bucket's median is coloured 50 % (10 of 20: SmokePing's #dd00ff).
        let tcpMedians = try lanes[1].nodes(forXPath: ".//*[local-name()='rect'][@class='median']").compactMap { $0 as? XMLElement }
        XCTAssertEqual(tcpMedians.compactMap { attribute($0, "fill") }, ["#26ff00", "#dd00ff"])
        XCTAssertEqual(graph.width, SmokeGraph.left + 720 + SmokeGraph.right)
    }

    func testLossColoursFollowSmokePingsScale() {
        XCTAssertEqual(SmokeGraph.lossColor(percent: 0), "#26ff00")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 0.1), "#00b8ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 5), "#00b8ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 10), "#0059ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 15), "#5e00ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 20), "#7e00ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 45), "#7e00ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 50), "#dd00ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 90), "#dd00ff")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 95), "#ff0000")
        XCTAssertEqual(SmokeGraph.lossColor(percent: 100), "#ff0000")
    }

    func testHostileNamesAreTextInTheSVG() throws {
        let graph = SmokeGraph(title: Self.hostile, from: F.start, to: F.start + 300 * F.second, columns: 10,
                               lanes: [SmokeGraph.Lane(title: Self.hostile, buckets: [bucket(1)])])
        let svg = graph.svg()
        XCTAssertFalse(svg.contains("<script"))
        XCTAssertFalse(svg.contains("]]>"))
        XCTAssertFalse(svg.contains("<![CDATA["))
        XCTAssertFalse(svg.contains("\n"))
        let document = try parse(svg)
        XCTAssertEqual(try elements(document, "//*[local-name()='script']").count, 0)
        let expected = "db\"1' <script>alert('x')</script> & ]]> <![CDATA[ next line"
        XCTAssertEqual(try elements(document, "/*/*[local-name()='title']").first?.stringValue, expected)
        XCTAssertEqual(try elements(document, "//*[local-name()='text'][@class='lane-title']").first?.stringValue, expected)
    }

    func testTimeAxisIsLabelledInUTC() throws {
        // 1800000000 s is 2027-01-15 08:00 UTC.
        XCTAssertEqual(Markup.utc(F.start, year: true), "2027-01-15 08:00")
        XCTAssertEqual(Markup.utc(0, year: true), "1970-01-01 00:00")
        XCTAssertEqual(Markup.utc(951_782_400 * F.second, year: true), "2000-02-29 00:00")
        // 720 pixels an hour: 90 pixels are 7.5 min, the next round step is 10 min.
        let hour = SmokeGraph(title: "t", from: F.start, to: F.start + 3600 * F.second, columns: 120, lanes: [])
        let labels = try elements(try parse(hour.svg()), "//*[local-name()='text'][@class='time-label']").compactMap(\.stringValue)
        XCTAssertEqual(labels, ["08:00", "08:10", "08:20", "08:30", "08:40", "08:50"])
        let month = SmokeGraph(title: "t", from: F.start, to: F.start + 30 * 86_400 * F.second, columns: 720, lanes: [])
        let days = try elements(try parse(month.svg()), "//*[local-name()='text'][@class='time-label']").compactMap(\.stringValue)
        // Weekly ticks, at multiples of 7 days since 1970 (day 20839 is 2027-01-21).
        XCTAssertEqual(days, ["01-21", "01-28", "02-04", "02-11"])
    }

    func testSparklineBreaksAtGaps() throws {
        let buckets = [bucket(0), bucket(1), bucket(3), bucket(4, received: 5)]
        let svg = SmokeGraph.sparkline(buckets, from: F.start, to: F.start + 300 * F.second, width: 100, height: 20)
        let document = try parse(svg)
        let path = try XCTUnwrap(try elements(document, "//*[local-name()='path']").first.flatMap { attribute($0, "d") })
        XCTAssertEqual(path.filter { $0 == "M" }.count, 2)
        XCTAssertEqual(path.filter { $0 == "L" }.count, 2)
        XCTAssertEqual(try elements(document, "//*[local-name()='rect']").count, 1)
    }
}
