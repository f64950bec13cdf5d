import ProbeResults
@testable import WebView
import Synchronization
import XCTest

final class WebPagesTests: XCTestCase {
    typealias F = WebCoreFixture
    static let hostileName = "x\"y'z <script>alert(1)</script> & ]]>\nline"
    static let hostileEnv = "grp\"' <b>bold</b>"
    static let now = F.start + 3600 * F.second

    /// A history of `hosts` hosts, each with ICMP and TCP port 443, 20 rounds of 10 s in
    /// the hour before `now`.
    func history(hosts: [String], env: String = "lab", labels: [String: String] = [:]) -> RecentHistory {
        let history = RecentHistory(roundIntervals: [.icmp: 10 * F.second, .tcp: 10 * F.second])
        for index in 0..<20 {
            let start = Self.now - Int64(20 - index) * 10 * F.second
            for host in hosts {
                history.observe(F.round(.icmp, host, start: start, rtts: [1, 1.25, 1.5, 1.75, 2], labels: labels), env: env, probe: "p")
                history.observe(F.round(.tcp, host, port: 443, start: start + F.second, rtts: [2, 2, 2, 2, 2], labels: labels), env: env, probe: "p")
            }
        }
        return history
    }

    func view(_ history: RecentHistory, longRange: (any LongRangeSource)? = nil, pageSize: Int = 500) -> WebView {
        WebView(history: history, longRange: longRange, pageSize: pageSize, now: { Self.now })
    }

    func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }

    func header(_ response: WebResponse, _ name: String) -> String? {
        response.headers.first { $0.name == name }?.value
    }

    func testOverviewHasARowPerSeriesAndAVerdictPerICMPAndTCPHost() async {
        let history = history(hosts: ["a.example", "b.example"])
        history.observe(F.round(.icmp, "icmp-only", start: Self.now - F.second, rtts: [1]), env: "other", probe: "p")
        let response = await view(history).respond(path: "/", query: nil)
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.contentType, "text/html; charset=utf-8")
        XCTAssertEqual(count("<tr class=\"target ", in: response.body), 5)
        XCTAssertEqual(count("<section class=\"group\"", in: response.body), 2)
        XCTAssertEqual(count("class=\"verdict verdict-", in: response.body), 2)
        // 20 clean rounds of 5: 100 probes, none lost: neither.
        XCTAssertEqual(count("class=\"verdict verdict-neither\"", in: response.body), 2)
        XCTAssertEqual(count("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sparkline\"", in: response.body), 5)
        let icmpID = SeriesID.of(WebSeriesKey(kind: .icmp, env: "lab", target: "a.example", port: nil))
        XCTAssertTrue(response.body.contains("<tr class=\"target outcome-ok\" id=\"s-\(icmpID)\" data-kind=\"icmp\">"))
        XCTAssertTrue(response.body.contains("<a href=\"/target?id=\(icmpID)\">a.example</a>"))
        XCTAssertTrue(response.body.contains("<td class=\"rtt\">1.50 ms</td>"))
        XCTAssertFalse(response.body.contains("<script"))
        let policy = header(response, "Content-Security-Policy")
        XCTAssertEqual(policy?.hasPrefix("default-src 'none'"), true)
        XCTAssertFalse(policy?.contains("http") ?? true)
    }

    func testHostileNamesRenderAsText() async {
        let history = history(hosts: [Self.hostileName], env: Self.hostileEnv, labels: ["site": "<i>\"'&"])
        let view = view(history)
        let key = WebSeriesKey(kind: .icmp, env: Self.hostileEnv, target: Self.hostileName, port: nil, labels: ["site": "<i>\"'&"])
        for (path, query) in [("/", nil), ("/target", "id=\(SeriesID.of(key))"), ("/graph.svg", "id=\(SeriesID.of(key))")] as [(String, String?)] {
            let body = await view.respond(path: path, query: query).body
            XCTAssertFalse(body.contains("<script"), path)
            XCTAssertFalse(body.contains("<b>"), path)
            XCTAssertFalse(body.contains("<i>"), path)
            XCTAssertFalse(body.contains("x\"y"), path)
            XCTAssertFalse(body.contains("y'z"), path)
            XCTAssertFalse(body.contains("]]>"), path)
            XCTAssertFalse(body.contains("\nline"), path)
            XCTAssertTrue(body.contains("x&quot;y&#39;z &lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt; line"), path)
            if path != "/graph.svg" {
                XCTAssertTrue(body.contains("grp&quot;&#39; &lt;b&gt;bold&lt;/b&gt;"), path)
                XCTAssertTrue(body.contains("site=&lt;i&gt;&quot;&#39;&amp;"), path)
            }
        }
    }

    func testUnknownPathsSeriesAndRangesAreRefused() async {
        let history = history(hosts: ["a"])
        let view = view(history)
        let id = SeriesID.of(WebSeriesKey(kind: .icmp, env: "lab", target: "a", port: nil))
        let nope = await view.respond(path: "/nope", query: nil)
        XCTAssertEqual(nope.status, 404)
        XCTAssertNotNil(header(nope, "Content-Security-Policy"))
        for query in [nil, "id=", "id=zzzz", "id=0123456789abcdef", "id=\(id.uppercased())", "id=%3Cscript%3E"] as [String?] {
            let response = await view.respond(path: "/target", query: query)
            XCTAssertEqual(response.status, 404, query ?? "nil")
            let svg = await view.respond(path: "/graph.svg", query: query)
            XCTAssertEqual(svg.status, 404, query ?? "nil")
        }
        let badRange = await view.respond(path: "/target", query: "id=\(id)&range=2h")
        XCTAssertEqual(badRange.status, 400)
        XCTAssertTrue(badRange.body.contains("1h, 6h, 1d, 7d, 30d"))
        let good = await view.respond(path: "/target", query: "id=\(id)")
        XCTAssertEqual(good.status, 200)
    }

    func testTheLastHourComesFromMemoryWithOnePointPerBucket() async {
        let history = history(hosts: ["a"])
        let id = SeriesID.of(WebSeriesKey(kind: .icmp, env: "lab", target: "a", port: nil))
        let response = await view(history).respond(path: "/target", query: "id=\(id)&range=1h")
        XCTAssertEqual(response.status, 200)
        XCTAssertTrue(response.body.contains("<figcaption class=\"source\" data-source=\"memory\">"))
        XCTAssertEqual(count("<g class=\"lane\">", in: response.body), 2)
        // 20 rounds of 10 s, 3 to a 30 s bucket: 200 s from a bucket boundary on, 7 buckets
        // in each lane (the first and the last partial).
        let buckets = history.buckets(for: WebSeriesKey(kind: .icmp, env: "lab", target: "a", port: nil), from: 0, to: .max)
        XCTAssertEqual(buckets.map(\.rounds).reduce(0, +), 20)
        XCTAssertEqual(count("<rect class=\"median\"", in: response.body), 2 * buckets.count)
        XCTAssertFalse(response.body.contains("class=\"notice\""))
        // 120 columns of 30 s, 6 pixels each.
        XCTAssertTrue(response.body.contains("class=\"smoke-graph\" width=\"\(SmokeGraph.left + 720 + SmokeGraph.right)\""))
        XCTAssertTrue(response.body.contains("<rect class=\"plot\" x=\"\(SmokeGraph.left)\" y=\"\(SmokeGraph.top + SmokeGraph.laneTitle)\" width=\"720\""))
    }

    func testLongerRangesAskTheLongRangeSourceOrSaySoWithoutOne() async {
        let history = history(hosts: ["a"])
        let id = SeriesID.of(WebSeriesKey(kind: .tcp, env: "lab", target: "a", port: 443))
        let without = await view(history).respond(path: "/target", query: "id=\(id)&range=7d")
        XCTAssertEqual(without.status, 200)
        XCTAssertTrue(without.body.contains("<p class=\"notice\">Only the last hour is available for this server kind"))
        XCTAssertTrue(without.body.contains("data-source=\"memory\""))

        let source = WebCoreRecordingSource()
        let with = await view(history, longRange: source).respond(path: "/target", query: "id=\(id)&range=7d")
        XCTAssertTrue(with.body.contains("data-source=\"influxdb\""))
        XCTAssertFalse(with.body.contains("class=\"notice\""))
        let asked = source.asked.withLock { $0 }
        XCTAssertEqual(asked.map(\.key.kind), [.icmp, .tcp])
        XCTAssertEqual(Set(asked.map(\.columns)), [720])
        XCTAssertEqual(Set(asked.map { $0.to - $0.from }), [7 * 86_400 * F.second])
        XCTAssertTrue(asked.allSatisfy { $0.from <= Self.now - 7 * 86_400 * F.second + 840 * F.second && $0.to > Self.now })
        // The source's one bucket per lane: one median each.
        XCTAssertEqual(count("<rect class=\"median\"", in: with.body), 2)

        let failing = WebCoreRecordingSource(fails: true)
        let failed = await view(history, longRange: failing).respond(path: "/target", query: "id=\(id)&range=30d")
        XCTAssertTrue(failed.body.contains("<p class=\"notice\">The long-range query failed"))
        XCTAssertTrue(failed.body.contains("data-source=\"memory\""))
    }

    func testAThousandSeriesRenderOnPages() async {
        let history = history(hosts: (0..<500).map { "host-\($0).example" })
        let view = view(history)
        let first = await view.respond(path: "/", query: nil)
        let second = await view.respond(path: "/", query: "page=2")
        let beyond = await view.respond(path: "/", query: "page=9")
        XCTAssertEqual(count("<tr class=\"target ", in: first.body), 500)
        XCTAssertEqual(count("<tr class=\"target ", in: second.body), 500)
        XCTAssertEqual(count("<tr class=\"target ", in: beyond.body), 500)
        XCTAssertEqual(count("class=\"verdict verdict-", in: first.body) + count("class=\"verdict verdict-", in: second.body), 500)
        XCTAssertTrue(first.body.contains("<nav class=\"pages\">"))
        // Every series once over the two pages.
        let ids = Set((first.body + second.body).components(separatedBy: "id=\"s-").dropFirst().map { String($0.prefix(16)) })
        XCTAssertEqual(ids.count, 1000)
    }
}

/// A long-range source that records what it was asked and answers one bucket at the
/// range's middle (or fails).
final class WebCoreRecordingSource: LongRangeSource {
    struct Question: Sendable { var key: WebSeriesKey; var from: Int64; var to: Int64; var columns: Int }
    struct Failure: Error, CustomStringConvertible { var description: String { "connection refused" } }
    let asked = Mutex<[Question]>([])
    let fails: Bool

    init(fails: Bool = false) { self.fails = fails }

    func buckets(for key: WebSeriesKey, from: Int64, to: Int64, columns: Int) async throws -> [HistoryBucket] {
        asked.withLock { $0.append(Question(key: key, from: from, to: to, columns: columns)) }
        if fails { throw Failure() }
        let width = (to - from) / Int64(columns)
        return [HistoryBucket(startNanoseconds: from + 360 * width, durationNanoseconds: width, rounds: 84, sent: 420, received: 410,
                              minimumMilliseconds: 1, medianMilliseconds: 2, maximumMilliseconds: 3)]
    }
}

extension WebPagesTests {
    func testLongRangesAreExactlyInfluxHistorysGrid() async throws {
        // The page asks for ranges whose 720 columns are InfluxDB's own GROUP BY time
        // buckets, so each bucket answered lands in its own column, none cut off.
        let history = history(hosts: ["a"])
        let id = SeriesID.of(WebSeriesKey(kind: .icmp, env: "lab", target: "a", port: nil))
        for (name, seconds) in [("6h", 30), ("1d", 120), ("7d", 840), ("30d", 3600)] as [(String, Int64)] {
            let source = WebCoreRecordingSource()
            _ = await view(history, longRange: source).respond(path: "/target", query: "id=\(id)&range=\(name)")
            let question = try XCTUnwrap(source.asked.withLock { $0.first }, name)
            let grid = try InfluxHistory.grid(from: question.from, to: question.to, columns: question.columns)
            XCTAssertEqual(grid.widthSeconds, seconds, name)
            XCTAssertEqual(grid.startNanoseconds, question.from, name)
            XCTAssertEqual(grid.endNanoseconds, question.to, name)
            XCTAssertGreaterThan(question.to, Self.now, name)
            XCTAssertLessThanOrEqual(question.to - seconds * F.second, Self.now, name)
        }
    }
}
