import Foundation
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import TestSupport
import XCTest

/// Issue 28's acceptance 3: QoS classes are measured apart. A router namespace drops
/// exactly 3 of every 10 DSCP EF packets from the prober to the target (nftables
/// `numgen inc`, that direction only: the EF echo replies, which copy the request's class,
/// pass) and forwards everything else; `run` with one target at `tos: [0, ef]` writes two
/// series to a real influxd, EF losing 3 of each round's 10 and class 0 none. The service
/// runs in this process on ICMP sockets opened inside the prober's namespace; influxd
/// listens on this namespace's loopback, where the sink reaches it.
final class TOSLossRunTests: XCTestCase {
    func testAnEFClassLosingThreeInTenShowsAsItsOwnSeriesBesideALosslessClassZero() async throws {
        let network = try OneRouterNetwork.make()
        _ = try TestEnvironment.requireBinary("nft", package: "nftables")
        let target = network.hostAddress4
        try SilentNetwork.run(["ip", "netns", "exec", network.router, "nft", "-f", "-"], input: """
            table ip qos {
              counter ef_dropped {}
              chain forward {
                type filter hook forward priority 0; policy accept;
                ip saddr 198.18.220.1 ip daddr \(target) ip dscp ef numgen inc mod 10 < 3 counter name ef_dropped drop
              }
            }
            """)

        let server = try await InfluxDBTestServer.start()
        defer { server.stop() }
        try await server.createDatabase("netprobe")
        let directory = try TestEnvironment.temporaryDirectory("tos-loss-run")
        let targets = """
            qos:
              - host: \(target)
                tos: [0, ef]
                labels: {circuit: c-1234}

            """
        // 10 packets a round: the drop pattern's period, so every EF round loses exactly 3.
        let configPath = try TestEnvironment.writeRunConfig(in: directory, probe: "qos", pingTargets: targets,
                                                      sections: ["icmp: {interval: 1s, count: 10, spacing: 20ms, timeout: 500ms}"], influxPort: server.port)
        let configuration = try ConfigurationLoader.load(path: configPath)
        XCTAssertEqual(configuration.pingTargets.map(\.options.tos), [0, 0xb8])

        let logger = Logger(label: "tos-loss-run")
        let icmp = try network.inProber { try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger) }
        let service = ProbeService(configuration: configuration, icmpSockets: icmp, sinks: { try InfluxSink.make(for: $0, logger: $1) }, logger: logger)
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        let running = Task.detached { try await service.run(control: control) }

        /// Each series' (sent, received) per round written so far, by its `tos` tag ("" for none).
        func rounds() async throws -> [String: [(sent: Int, received: Int, circuit: String)]] {
            let series = try await server.series("SELECT \"sent\", \"received\" FROM \"icmp\" WHERE \"target\" = '\(target)' GROUP BY *", database: "netprobe")
            var byClass: [String: [(sent: Int, received: Int, circuit: String)]] = [:]
            for entry in series {
                let tags = entry["tags"] as? [String: String] ?? [:]
                for row in (entry["values"] as? [[Any]]) ?? [] {
                    byClass[tags["tos"] ?? "", default: []].append(((row[1] as? NSNumber)?.intValue ?? -1, (row[2] as? NSNumber)?.intValue ?? -1, tags["circuit"] ?? ""))
                }
            }
            return byClass
        }
        let enough = try await TestEnvironment.eventually(within: 60, every: 0.1) {
            let written = try await rounds()
            return (written[""]?.count ?? 0) >= 3 && (written["ef"]?.count ?? 0) >= 3
        }
        send.yield(.stop)
        send.finish()
        try await running.value
        XCTAssertTrue(enough, "gave up waiting for three rounds of each class")

        let written = try await rounds()
        XCTAssertEqual(Set(written.keys), ["", "ef"], "two series: class 0 (no tos tag) and ef")
        let classZero = written[""] ?? [], ef = written["ef"] ?? []
        XCTAssertGreaterThanOrEqual(classZero.count, 3)
        XCTAssertGreaterThanOrEqual(ef.count, 3)
        for round in classZero {
            XCTAssertEqual(round.sent, 10)
            XCTAssertEqual(round.received, 10, "class 0 is forwarded whole")
            XCTAssertEqual(round.circuit, "c-1234")
        }
        for round in ef {
            XCTAssertEqual(round.sent, 10)
            XCTAssertEqual(round.received, 7, "EF loses packets 0, 1 and 2 of every 10")
            XCTAssertEqual(round.circuit, "c-1234")
        }
        XCTAssertEqual(ef.map(\.sent).reduce(0, +) - ef.map(\.received).reduce(0, +), 3 * ef.count)
        let dropped = try SilentNetwork.run(["ip", "netns", "exec", network.router, "nft", "list", "counter", "ip", "qos", "ef_dropped"])
        let packets = Int(dropped.firstMatch(of: /packets (\d+)/)?.output.1 ?? "") ?? -1
        XCTAssertGreaterThanOrEqual(packets, 3 * ef.count, "the router dropped what the written rounds lost (and a round cut short by the stop may add some)")
    }
}
