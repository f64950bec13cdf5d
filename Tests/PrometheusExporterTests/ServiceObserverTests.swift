import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import TestSupport
import XCTest
@testable import PrometheusExporter

/// `run` as a library with Prometheus only (no InfluxDB server, no output): every round
/// still reaches the exporter.
final class ServiceObserverTests: XCTestCase {
    /// Records every observed round beside the exporter's own state.
    final class Recorder: RoundObserver, @unchecked Sendable {
        let lock = NSLock()
        var rounds: [RoundResult] = []
        var attached = false
        func observe(_ round: RoundResult, env: String, probe: String) { lock.withLock { rounds.append(round) } }
        func attach(_ source: SelfMonitoringSource) { lock.withLock { attached = true } }
        var count: Int { lock.withLock { rounds.count } }
    }

    func testWithoutAnInfluxDBServerEveryRoundReachesTheExporter() async throws {
        let listener = try LoopbackListener()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-observer")
        try "local:\n  127.0.0.1: \(listener.port)\n".write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        try """
            probe: observer-test
            targets: {ping: null, tcp: tcp.yaml}
            tcp: {interval: 200ms, count: 2, spacing: 10ms, timeout: 150ms}
            prometheus: {listen: "127.0.0.1:0"}
            """.write(to: directory.appendingPathComponent("netprobe.yaml"), atomically: true, encoding: .utf8)
        let configuration = try ConfigurationLoader.load(path: directory.appendingPathComponent("netprobe.yaml").path)
        XCTAssertNotNil(configuration.prometheus)
        let metrics = RoundMetrics()
        let recorder = Recorder()
        let service = ProbeService(configuration: configuration, icmpSockets: nil, output: nil, logger: Logger(label: "test"), observers: [metrics, recorder])
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        let done = Task { try await service.run(control: control) }
        let enough = TestEnvironment.eventually(within: 60) { recorder.count >= 5 }
        XCTAssertTrue(enough, "rounds reached the observers")
        send.yield(.stop)
        try await done.value
        XCTAssertTrue(recorder.lock.withLock { recorder.attached }, "the observers were told where the sink counters are")
        let rounds = recorder.lock.withLock { recorder.rounds }
        let text = await metrics.render(.text)
        let labels = "probe=\"observer-test\",env=\"local\",target=\"127.0.0.1\",family=\"ipv4\",port=\"\(listener.port)\",mode=\"half-open\""
        XCTAssertTrue(text.contains("netprobe_tcp_sent_total{\(labels)} \(rounds.map(\.sent).reduce(0, +))\n"), text)
        XCTAssertTrue(text.contains("netprobe_tcp_received_total{\(labels)} \(rounds.map(\.received).reduce(0, +))\n"), text)
        XCTAssertTrue(text.contains("netprobe_rounds_total{probe=\"observer-test\",kind=\"tcp\"} \(rounds.count)\n"), text)
        XCTAssertGreaterThan(rounds.map(\.received).reduce(0, +), 0)
    }
}
