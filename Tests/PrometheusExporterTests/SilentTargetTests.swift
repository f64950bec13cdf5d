import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `/probe` where a monitoring system must not fail: a host that has gone silent (issue 25,
/// acceptance 1-3). `netprobe run` (the built binary), a real Prometheus and the targets
/// all live in namespaces of the test's own: the silent host is routed into a namespace
/// that drops it, and names resolve through that namespace's own hosts file.
final class SilentTargetTests: XCTestCase {
    static let listen = "127.0.0.1:19156"

    /// Starts `netprobe run` inside the prober namespace with `/probe` on, and waits until
    /// its endpoint answers.
    func startRun(_ network: SilentNetwork, allow: [String], modules: String) async throws -> NetprobeRun {
        let directory = try TestEnvironment.temporaryDirectory("netprobe-silent")
        let config = directory.appendingPathComponent("netprobe.yaml")
        try """
            probe: silent-e2e
            targets: {ping: null, tcp: null}
            prometheus:
              listen: \(Self.listen)
              probe:
                allow: [\(allow.map { "\"\($0)\"" }.joined(separator: ", "))]
                modules:
            \(modules)
            """.write(to: config, atomically: true, encoding: .utf8)
        let run = try NetprobeRun(config: config, network: network)
        let listening = TestEnvironment.eventually(within: 60) {
            (try? network.http("http://\(Self.listen)/metrics", maximumSeconds: 2).status) == 200
        }
        XCTAssertTrue(listening, "netprobe's endpoint never answered:\n\(run.errorLog)")
        return run
    }

    func testASilentHostIsProbeSuccessZeroAtEveryScrapeAndItsAlertFires() async throws {
        let network = try SilentNetwork.make()
        let run = try await startRun(network, allow: [network.silentPrefix], modules: "      icmp_5s: {prober: icmp, timeout: 5s}")
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        // blackbox_exporter's own relabelling, a scrape timeout shorter than the module's.
        let prometheus = try await PrometheusTestServer.start(
            scrapeConfigs: PrometheusAcceptanceTests.blackboxJob("silent", module: "icmp_5s", targets: [network.silentAddress], exporter: 19156),
            global: "  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 1s",
            rules: """
                groups:
                  - name: netprobe
                    rules:
                      - alert: TargetSilent
                        expr: probe_success == 0
                        for: 5s
                """,
            network: network)
        let firing = try await TestEnvironment.eventually(within: 120) {
            try await prometheus.alerts().contains { $0.name == "TargetSilent" && $0.state == "firing" }
        }
        let alerts = try await prometheus.alerts()
        XCTAssertTrue(firing, "the alert never fired: \(alerts); netprobe's log:\n\(run.errorLog)")

        // Every scrape stored both: up 1 (the scrape got an answer in time) and probe_success 0.
        // As of 3 s ago (more than a scrape's 2 s): every scrape stamped before then has been
        // stored whole, while one being stored right now may show up before probe_success.
        // The alert can fire with only two scrapes settled, so wait (polling Prometheus) for three.
        var up: [(time: Double, value: Double)] = []
        var success: [(time: Double, value: Double)] = []
        let threeSettled = try await TestEnvironment.eventually(within: 60) {
            let settled = Date().timeIntervalSince1970 - 3
            up = try await prometheus.samples("up{job=\"silent\"}[5m]", at: settled).first?.values ?? []
            success = try await prometheus.samples("probe_success{job=\"silent\"}[5m]", at: settled).first?.values ?? []
            return up.count >= 3
        }
        XCTAssertTrue(threeSettled, "three scrapes stored: \(up)")
        XCTAssertEqual(Set(up.map(\.value)), [1], "no scrape failed: \(up)")
        XCTAssertEqual(up.map(\.time), success.map(\.time), "probe_success stored at every scrape")
        XCTAssertEqual(Set(success.map(\.value)), [0])
        let sent = try await prometheus.query("probe_packets_sent{job=\"silent\"}")
        XCTAssertEqual(sent.map(\.value), [1], "the module's one echo went out; its 5s wait was cut to the scrape's 1.5s")
        let hash = try await prometheus.query("probe_ip_addr_hash{job=\"silent\"}")
        XCTAssertEqual(hash.count, 1, "the gauges a silent host can honestly give are there")
    }

    func testASilentHostsProbeInFlightDelaysNoOtherProbe() async throws {
        let network = try SilentNetwork.make()
        let run = try await startRun(network, allow: [network.silentPrefix, "127.0.0.0/8"], modules: "      icmp_5s: {prober: icmp, timeout: 5s}")
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        let base = "http://\(Self.listen)/probe"
        // The silent host's request, left running.
        let silent = Process()
        silent.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        silent.arguments = ["ip", "netns", "exec", network.prober, "curl", "-sS", "-o", "/dev/null", "--max-time", "30", "\(base)?module=icmp_5s&target=\(network.silentAddress)"]
        try silent.run()
        let inFlight = TestEnvironment.eventually(within: 30) {
            // This scrape is one request being answered, the silent probe the other.
            let (_, body) = (try? network.http("http://\(Self.listen)/metrics", maximumSeconds: 5)) ?? (0, "")
            return body.contains("netprobe_http_connections{probe=\"\",state=\"serving\"} 2\n")
        }
        XCTAssertTrue(inFlight, "the silent host's probe is in flight")
        for module in ["icmp_5s", "icmp"] {
            let (status, body) = try network.http("\(base)?module=\(module)&target=127.0.0.1", maximumSeconds: 30)
            XCTAssertEqual(status, 200, body)
            XCTAssertTrue(body.contains("\nprobe_success 1\n"), body)
            XCTAssertTrue(silent.isRunning, "module \(module): answered while the silent host's probe was still waiting")
            let promtool = try PromtoolCheck.run(Data(body.utf8))
            XCTAssertEqual(promtool.output, "", "promtool check metrics on /probe's answer")
        }
        silent.waitUntilExit()
        XCTAssertEqual(silent.terminationStatus, 0, "the silent host's request was answered too")
    }

    func testAListedNameIsProbedOnlyAtItsAddressesInsideTheAllowedPrefixes() async throws {
        let network = try SilentNetwork.make()
        _ = try TestEnvironment.requireBinary("nft", package: "nftables")
        // mixed.test: an address outside the prefix, and one inside that the resolver sorts
        // after it (a longer common prefix with the source address, 127.0.0.1, goes first).
        try network.hosts([("127.0.0.9", "mixed.test"), ("127.0.0.200", "mixed.test"), ("127.0.0.9", "outside.test")])
        let order = try network.exec(["getent", "ahostsv4", "mixed.test"]).split(separator: "\n").compactMap { $0.split(separator: " ").first }
        XCTAssertEqual(order.first, "127.0.0.9", "the resolver gives the disallowed address first, so taking the first would be wrong")
        // The kernel counts every packet netprobe sends, by destination.
        try network.exec(["nft", "-f", "-"], input: """
            table inet netprobe_test {
              counter to_disallowed {}
              counter echo_allowed {}
              counter syn_allowed {}
              chain output {
                type filter hook output priority 0; policy accept;
                ip daddr 127.0.0.9 counter name "to_disallowed"
                ip daddr 127.0.0.200 icmp type echo-request counter name "echo_allowed"
                ip daddr 127.0.0.200 tcp dport 5432 tcp flags syn / syn,ack counter name "syn_allowed"
              }
            }
            """)
        let packets = { (counter: String) throws -> Int in
            let text = try network.exec(["nft", "list", "counter", "inet", "netprobe_test", counter])
            guard let range = text.range(of: "packets ") else { return -1 }
            return Int(text[range.upperBound...].prefix { $0.isNumber }) ?? -1
        }
        let run = try await startRun(network, allow: ["127.0.0.200/32", "mixed.test", "outside.test"], modules: "      {}")
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        let base = "http://\(Self.listen)/probe"

        for query in ["module=icmp&target=outside.test", "module=tcp&target=outside.test:5432"] {
            let (status, body) = try network.http("\(base)?\(query)")
            XCTAssertEqual(status, 403, query)
            XCTAssertEqual(body, "target 'outside.test' resolves to 127.0.0.9, none inside an allowed prefix (prometheus: probe: allow)\n")
        }
        XCTAssertEqual(try packets("to_disallowed"), 0, "no packet to an address outside the prefixes")

        let (icmp, icmpBody) = try network.http("\(base)?module=icmp&target=mixed.test")
        XCTAssertEqual(icmp, 200, icmpBody)
        XCTAssertTrue(icmpBody.contains("\nprobe_success 1\n"), icmpBody)
        let (tcp, tcpBody) = try network.http("\(base)?module=tcp&target=mixed.test:5432")
        XCTAssertEqual(tcp, 200, tcpBody)
        XCTAssertTrue(tcpBody.contains("\nprobe_ip_addr_hash \(BlackboxTests.fnv1a([127, 0, 0, 200]))\n"), "probed at 127.0.0.200: \(tcpBody)")
        XCTAssertEqual(try packets("echo_allowed"), 1, "the echo request went to the allowed address")
        XCTAssertEqual(try packets("syn_allowed"), 1, "so did the SYN")
        XCTAssertEqual(try packets("to_disallowed"), 0, "and nothing to the disallowed one")
    }
}
