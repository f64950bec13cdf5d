import Foundation
import TestSupport
import WebView
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Issue 29's acceptance 1 and 3 in a real browser: headless Chromium loads the live view of
/// a running `netprobe run` (the built binary) that writes to a real influxd. The overview
/// has a row per series and a verdict for the host probed with ICMP and TCP; a hostile label
/// renders as text; no page logs a console error; the last hour's graph has one column per
/// 30-second bucket of rounds that InfluxDB holds, and the 1-day graph's loss colours are,
/// column for column, those of an InfluxQL `GROUP BY time` over the same grid (a day of
/// history written to influxd beforehand, with lossy and silent rounds). Screenshots go to
/// `.build/screenshots/`.
final class LiveViewBrowserTests: XCTestCase {
    static let probe = "web-e2e"
    static let hostile = "<script>alert('x')</script> \" & '"

    /// A day of past rounds of 127.0.0.1's ICMP series, as `run` writes them: one a minute
    /// from 23 h to 2 h ago, every 7th with 2 of 5 lost, every 13th with all lost.
    static func writeHistory(to influx: InfluxDBTestServer, now: Int64) async throws {
        var lines: [String] = []
        let minute: Int64 = 60
        let end = now / 1_000_000_000 - 2 * 3600
        var index = 0
        var second = end - 21 * 3600
        while second < end {
            let received = index % 13 == 0 ? 0 : (index % 7 == 0 ? 3 : 5)
            var fields = "sent=5i,received=\(received)i,loss_percent=\(Double(5 - received) * 20)"
            if received > 0 { fields += ",rtt_min_ms=0.02,rtt_median_ms=\(0.03 + Double(index % 5) * 0.01),rtt_max_ms=0.09" }
            lines.append("icmp,probe=\(probe),env=local,target=127.0.0.1,address=127.0.0.1,family=ipv4 \(fields) \(second)")
            index += 1
            second += minute
        }
        var request = URLRequest(url: URL(string: "\(influx.url.absoluteString)/write?db=netprobe&precision=s")!)
        request.httpMethod = "POST"
        request.httpBody = lines.joined(separator: "\n").data(using: .utf8)
        let (_, response) = try await URLSession.shared.data(for: request)
        XCTAssertEqual((response as? HTTPURLResponse)?.statusCode, 204, "influxd took the history")
    }

    /// (sum(sent), sum(received)) per non-empty `width` bucket of the series in [start, end).
    static func buckets(_ influx: InfluxDBTestServer, start: Int64, end: Int64, widthSeconds: Int64) async throws -> [(sent: Int, received: Int)] {
        let statement = "SELECT sum(sent), sum(received) FROM icmp WHERE probe = '\(probe)' AND env = 'local' AND target = '127.0.0.1' "
            + "AND time >= \(start) AND time < \(end) GROUP BY time(\(widthSeconds)s) fill(none)"
        let rows = try await influx.series(statement, database: "netprobe").first?["values"] as? [[Any]] ?? []
        return rows.map { (($0[1] as? NSNumber)?.intValue ?? 0, ($0[2] as? NSNumber)?.intValue ?? 0) }
    }

    /// The loss colours of the first lane (the host's ICMP series) of the graph on the page.
    static func firstLaneLossColours(_ browser: HeadlessChromium) async throws -> [String] {
        let colours = try await browser.execute("""
            const lane = document.querySelector('figure.graph svg g.lane');
            return lane ? Array.from(lane.querySelectorAll('rect.loss')).map(r => r.getAttribute('fill')) : null;
            """)
        return colours as? [String] ?? []
    }

    func testTheLiveViewInHeadlessChromiumAgreesWithInfluxDB() async throws {
        try Privilege.requireRoot()
        let browser = try await HeadlessChromium.start(for: self)
        let influx = try await InfluxDBTestServer.start()
        try await influx.createDatabase("netprobe")
        try await Self.writeHistory(to: influx, now: Int64(Date().timeIntervalSince1970 * 1e9))
        let listener = try LoopbackListener()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-live-view")
        let port = TestEnvironment.freePort()
        let hostileYAML = Self.hostile.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        try """
            local:
              - 127.0.0.1
              - host: 127.0.0.2
                labels: {owner: "\(hostileYAML)"}
            """.write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        try "local:\n  - 127.0.0.1: \(listener.port)\n".write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("netprobe.yaml")
        try """
            probe: \(Self.probe)
            targets: {ping: ping.yaml, tcp: tcp.yaml}
            icmp: {interval: 1s, count: 5, spacing: 20ms, timeout: 300ms}
            tcp: {interval: 1s, count: 2, spacing: 20ms, timeout: 300ms}
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
              - {name: local, url: \(influx.url.absoluteString), database: netprobe}
            web: {listen: "127.0.0.1:\(port)"}
            """.write(to: config, atomically: true, encoding: .utf8)
        let run = try NetprobeRun(config: config)
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        let base = URL(string: "http://127.0.0.1:\(port)")!
        // Every series has had rounds (three rows, each with an outcome).
        let ready = await TestEnvironment.eventually(within: 60) {
            guard let (status, body) = try? await TestEnvironment.http("GET", base, timeoutSeconds: 2), status == 200 else { return false }
            return String(decoding: body, as: UTF8.self).components(separatedBy: "<tr class=\"target").count - 1 == 3
        }
        XCTAssertTrue(ready, "the overview never listed the three series:\n\(run.errorLog)")

        // The overview.
        try await browser.navigate(to: base)
        let rows = try await browser.count("tr.target"), verdicts = try await browser.count(".verdict")
        XCTAssertEqual(rows, 3, "one row per series: ICMP 127.0.0.1, ICMP 127.0.0.2, TCP 127.0.0.1")
        XCTAssertEqual(verdicts, 1, "a verdict for the one host probed with ICMP and TCP")
        let verdict = try await browser.text(".verdict")
        XCTAssertTrue(["network", "server", "neither", "inconclusive"].contains(verdict), verdict)
        let labels = try await browser.texts("td.labels")
        XCTAssertTrue(labels.contains { $0.contains(Self.hostile) }, "the hostile label renders as text: \(labels)")
        let scripts = try await browser.count("td.labels script")
        XCTAssertEqual(scripts, 0, "and never as an element")
        try await browser.screenshot(named: "live-view-overview")
        var errors = try await browser.consoleErrors()
        XCTAssertEqual(errors, [], "the overview logs no console error")

        // The host's page, last hour: one column per 30 s bucket of the rounds InfluxDB has.
        let link = try await browser.attribute("href", of: "tr.target[data-kind=icmp] td.name a")
        let href = try XCTUnwrap(link)
        let target = try XCTUnwrap(URL(string: href, relativeTo: base)?.absoluteURL)
        var lastHour: (page: Int, before: Int, after: Int) = (0, -1, -2)
        let hourAgrees = try await TestEnvironment.eventually(within: 30, every: 0.5) {
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            let before = try await Self.buckets(influx, start: now - 3_600_000_000_000, end: now + 60_000_000_000, widthSeconds: 30).count
            try await browser.navigate(to: target)
            let page = try await Self.firstLaneLossColours(browser).count
            let after = try await Self.buckets(influx, start: now - 3_600_000_000_000, end: now + 60_000_000_000, widthSeconds: 30).count
            lastHour = (page, before, after)
            return before == after && page == after
        }
        XCTAssertTrue(hourAgrees, "last hour: \(lastHour.page) columns on the page, InfluxDB's 30 s buckets \(lastHour.before) then \(lastHour.after)")
        let hourSource = try await browser.attribute("data-source", of: "figcaption.source")
        XCTAssertEqual(hourSource, "memory")
        let laneTitle = try await browser.text("svg g.lane text.lane-title")
        XCTAssertTrue(laneTitle.contains("ICMP"), "the first lane is the host's ICMP series: \(laneTitle)")
        try await browser.screenshot(named: "live-view-target")

        // The 1-day graph: InfluxDB's buckets, column for column.
        let day = try XCTUnwrap(URL(string: target.absoluteString.replacingOccurrences(of: "range=1h", with: "") + (target.query == nil ? "?" : "&") + "range=1d"))
        var compared: (page: [String], expected: [String]) = ([], [])
        let dayAgrees = try await TestEnvironment.eventually(within: 30, every: 0.5) {
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            // The page's range: a day ending with the column that holds now, on InfluxQL's grid.
            let step = 86_400_000_000_000 / Int64(WebView.longRangeColumns)
            let end = (now / step + 1) * step
            let grid = try InfluxHistory.grid(from: end - 86_400_000_000_000, to: end, columns: WebView.longRangeColumns)
            XCTAssertEqual(grid.widthSeconds, 120, "a day in 720 columns of 2 minutes")
            let expected = try await Self.buckets(influx, start: grid.startNanoseconds, end: grid.endNanoseconds, widthSeconds: grid.widthSeconds)
                .map { SmokeGraph.lossColor(percent: $0.sent == 0 ? 0 : Double($0.sent - $0.received) / Double($0.sent) * 100) }
            try await browser.navigate(to: day)
            compared = (try await Self.firstLaneLossColours(browser), expected)
            return compared.page == compared.expected
        }
        XCTAssertTrue(dayAgrees, "1 day: \(compared.page.count) columns on the page, \(compared.expected.count) GROUP BY time buckets; first differences: "
                      + "\(zip(compared.page, compared.expected).enumerated().filter { $0.element.0 != $0.element.1 }.prefix(5).map { "\($0.offset): \($0.element)" })")
        XCTAssertGreaterThan(compared.expected.count, 600, "the day of history is drawn (21 h of minute rounds in 2-minute columns)")
        XCTAssertGreaterThan(Set(compared.expected).count, 2, "lossless, lossy and silent columns are told apart")
        let daySource = try await browser.attribute("data-source", of: "figcaption.source")
        XCTAssertEqual(daySource, "influxdb")
        try await browser.screenshot(named: "live-view-target-1d")
        errors = try await browser.consoleErrors()
        XCTAssertEqual(errors, [], "the target pages log no console error")
    }
}
