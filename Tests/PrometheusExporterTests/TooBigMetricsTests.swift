import Foundation
@testable import PrometheusExporter
@testable import ProbeEngine
import ProbeResults
import XCTest

/// /metrics counts don't-fragment echoes answered "too big" under their own result.
final class TooBigMetricsTests: XCTestCase {
    func testTooBigAttemptsAndRoundsAreCountedUnderTheirOwnResult() async {
        var tally = RoundTally()
        tally.sent = 3
        for _ in 0..<3 { tally.recordTooBig(mtu: 1400) }
        let target = ProbeTarget(name: "db", address: IPAddress(parsing: "198.18.231.2"), options: PacketOptions(fragmentation: .probe))
        let metrics = RoundMetrics()
        metrics.observe(tally.result(kind: .icmp, targetIndex: 0, target: target), env: "prod", probe: "p1")
        let text = await metrics.render(.text)
        let labels = "probe=\"p1\",env=\"prod\",target=\"db\",family=\"ipv4\""
        XCTAssertTrue(text.contains("netprobe_icmp_outcomes_total{\(labels),result=\"too_big\"} 3\n"), text)
        XCTAssertTrue(text.contains("netprobe_icmp_rounds_total{\(labels),result=\"too_big\"} 1\n"), text)
        XCTAssertFalse(text.contains("result=\"timeout\""), "a too-big answer is no timeout: \(text)")
        XCTAssertTrue(text.contains("too_big)."), "the help names the value")
    }
}
