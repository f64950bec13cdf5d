import Foundation
import NIOCore
@testable import ProbeEngine
import ProbeResults
import ProbeService
import XCTest
@testable import PrometheusExporter

/// The exposition writer and the per-target state behind /metrics.
final class ExpositionTests: XCTestCase {
    func testOpenMetricsDropsTotalFromTheCounterFamilyAndEndsWithEOF() {
        var text = ExpositionWriter(format: .text)
        var open = ExpositionWriter(format: .openMetrics)
        text.family("netprobe_icmp_sent_total", .counter, help: "Sent.")
        text.sample("netprobe_icmp_sent_total", [("target", "a\"b\\c\nd")], 3)
        open.family("netprobe_icmp_sent_total", .counter, help: "Sent.")
        open.sample("netprobe_icmp_sent_total", [("target", "x")], 3)
        XCTAssertEqual(text.finished(), "# HELP netprobe_icmp_sent_total Sent.\n# TYPE netprobe_icmp_sent_total counter\nnetprobe_icmp_sent_total{target=\"a\\\"b\\\\c\\nd\"} 3\n")
        XCTAssertEqual(open.finished(), "# HELP netprobe_icmp_sent Sent.\n# TYPE netprobe_icmp_sent counter\nnetprobe_icmp_sent_total{target=\"x\"} 3\n# EOF\n")
    }

    func testHistogramBucketsAreCumulativeAndEndWithInf() {
        var histogram = Histogram(bounds: [0.001, 0.01])
        for value in [0.0005, 0.001, 0.005, 5] { histogram.observe(value) }
        var writer = ExpositionWriter(format: .text)
        writer.histogram("h", [("a", "b")], histogram)
        XCTAssertEqual(writer.finished(), """
            h_bucket{a="b",le="0.001"} 2
            h_bucket{a="b",le="0.01"} 3
            h_bucket{a="b",le="+Inf"} 4
            h_sum{a="b"} 5.0065
            h_count{a="b"} 4

            """)
    }

    func testTheRTTBucketsAreSmokepingProbersFiftyMicrosecondsDoublingTo26Seconds() {
        XCTAssertEqual(Histogram.rttBounds.count, 20)
        XCTAssertEqual(Histogram.rttBounds.first, 0.00005)
        XCTAssertEqual(Histogram.rttBounds.last, 26.2144)
        XCTAssertEqual(ExpositionWriter.number(Histogram.rttBounds[1]), "0.0001")
    }

    func testMetricNamesComeFromTheSchemaInBaseUnits() {
        XCTAssertEqual(Schema.Prometheus.gauge(.icmp, Schema.Field.rttMedian), "netprobe_icmp_rtt_median_seconds")
        XCTAssertEqual(Schema.Prometheus.gauge(.tcp, Schema.Field.lossPercent), "netprobe_tcp_loss_ratio")
        XCTAssertEqual(Schema.Prometheus.counter(.icmp, Schema.Field.received), "netprobe_icmp_received_total")
    }

    func round(_ target: String, rtts: [Double], sent: Int, kind: ProbeKind = .icmp) -> RoundResult {
        RoundResult(kind: kind, targetIndex: 0, target: ProbeTarget(name: target, address: IPAddress(parsing: "127.0.0.1"), port: kind == .tcp ? 80 : nil),
                    startNanoseconds: 1_700_000_000_123_456_789, sent: sent, received: rtts.count, duplicates: 0, late: 0, unreachable: 0, refused: 0, errors: 0,
                    tcpMode: kind == .tcp ? .halfOpen : nil, lossPercent: Double(sent - rtts.count) / Double(sent) * 100,
                    statistics: RTTStatistics(samples: rtts), rttsMilliseconds: rtts, ttl: 64, kernelTimestamps: rtts.count, userTimestamps: 0,
                    outcome: rtts.isEmpty ? .timeout : .ok, scheduleSlipMilliseconds: 0.2)
    }

    func testEachTargetKeepsItsLastRoundItsCountersAndAHistogramOfEveryRTT() async {
        let metrics = RoundMetrics()
        metrics.observe(round("a", rtts: [1, 2, 3], sent: 4), env: "prod", probe: "p1")
        metrics.observe(round("a", rtts: [10], sent: 2), env: "prod", probe: "p1")
        metrics.observe(round("b", rtts: [], sent: 2), env: "prod", probe: "p1")
        metrics.observe(round("c", rtts: [0.5], sent: 1, kind: .tcp), env: "db", probe: "p1")
        let text = await metrics.render(.text)
        let a = "probe=\"p1\",env=\"prod\",target=\"a\",family=\"ipv4\""
        XCTAssertTrue(text.contains("netprobe_icmp_rtt_median_seconds{\(a)} 0.01\n"), text)
        XCTAssertFalse(text.contains("netprobe_icmp_rtt_median_seconds{probe=\"p1\",env=\"prod\",target=\"b\""), "no RTT gauge for a round that received nothing")
        XCTAssertTrue(text.contains("netprobe_icmp_loss_ratio{probe=\"p1\",env=\"prod\",target=\"b\",family=\"ipv4\"} 1\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_sent_total{\(a)} 6\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_received_total{\(a)} 4\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_rtt_seconds_count{\(a)} 4\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_rtt_seconds_bucket{\(a),le=\"0.0016\"} 1\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_outcomes_total{\(a),result=\"timeout\"} 2\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_last_round_timestamp_seconds{\(a)} 1700000000.123456\n"), text)
        XCTAssertTrue(text.contains("netprobe_tcp_rtt_median_seconds{probe=\"p1\",env=\"db\",target=\"c\",family=\"ipv4\",port=\"80\",mode=\"half-open\"} 0.0005\n"), text)
        XCTAssertTrue(text.contains("netprobe_rounds_total{probe=\"p1\",kind=\"icmp\"} 3\n"), text)
        XCTAssertTrue(text.contains("netprobe_timestamps_total{probe=\"p1\",source=\"kernel\"} 5\n"), text)
        XCTAssertTrue(text.contains("netprobe_schedule_slip_seconds_count{probe=\"p1\"} 4\n"), text)
    }

    func testOneTargetInTwoClassesIsTwoSeriesWithItsOptionsAndLabelsAsInInfluxDB() async {
        let metrics = RoundMetrics()
        var plain = round("db1", rtts: [1], sent: 2)
        plain.target.labels = ["site": "fra1", "circuit": "c-1234"]
        var expedited = plain
        expedited.target.options = PacketOptions(tos: 0xb8, source: IPAddress(parsing: "127.0.0.1"), interface: "lo")
        expedited.rttsMilliseconds = []
        expedited.received = 0
        expedited.statistics = nil
        metrics.observe(plain, env: "prod", probe: "p1")
        metrics.observe(expedited, env: "prod", probe: "p1")
        let text = await metrics.render(.text)
        let sent = text.split(separator: "\n").filter { $0.hasPrefix("netprobe_icmp_received_total{") }
        XCTAssertEqual(sent.sorted(), ["netprobe_icmp_received_total{probe=\"p1\",env=\"prod\",target=\"db1\",family=\"ipv4\",circuit=\"c-1234\",interface=\"lo\",site=\"fra1\",source=\"127.0.0.1\",tos=\"ef\"} 0",
                                       "netprobe_icmp_received_total{probe=\"p1\",env=\"prod\",target=\"db1\",family=\"ipv4\",circuit=\"c-1234\",site=\"fra1\"} 1"],
                       "class 0 and EF each have their own series, labelled as the InfluxDB tags")
    }

    func testATargetKeepsItsLabelSetWhenItsNameStopsResolving() async {
        let metrics = RoundMetrics()
        var resolved = round("db1", rtts: [1], sent: 1)
        resolved.target.name = "db1"
        metrics.observe(resolved, env: "prod", probe: "p1")
        var unresolved = round("db1", rtts: [], sent: 0)
        unresolved.target.address = nil
        unresolved.outcome = .unresolved
        metrics.observe(unresolved, env: "prod", probe: "p1")
        let text = await metrics.render(.text)
        let codes = text.split(separator: "\n").filter { $0.hasPrefix("netprobe_icmp_result_code{") }
        XCTAssertEqual(codes, ["netprobe_icmp_result_code{probe=\"p1\",env=\"prod\",target=\"db1\",family=\"ipv4\"} 3"],
                       "one series, with the family of the last address, not a second one with family=\"\"")
        XCTAssertTrue(text.contains("netprobe_icmp_rounds_total{probe=\"p1\",env=\"prod\",target=\"db1\",family=\"ipv4\",result=\"unresolved\"} 1\n"), text)
    }

    func testTheExpositionIsHandedOverInChunksThatMakeTheWholeText() async {
        let metrics = RoundMetrics()
        for index in 0..<200 { metrics.observe(round("host\(index)", rtts: [1, 2], sent: 2), env: "prod", probe: "p1") }
        let whole = await metrics.render(.openMetrics)
        var chunks: [String] = []
        await metrics.write(.openMetrics, chunkSize: 4096) { chunk in chunks.append(String(buffer: chunk)) }
        XCTAssertGreaterThan(chunks.count, 10, "\(whole.utf8.count) bytes in chunks of about 4 KiB")
        XCTAssertEqual(chunks.joined(), whole)
        XCTAssertTrue(whole.hasSuffix("# EOF\n"))
        for chunk in chunks.dropLast() { XCTAssertLessThan(chunk.utf8.count, 4096 + 2048, "a chunk goes out once it passes the size") }
        // Families stay whole: every family's samples follow its TYPE line.
        let families = whole.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        XCTAssertEqual(families.count, Set(families).count, "no family is begun twice")
    }
}
