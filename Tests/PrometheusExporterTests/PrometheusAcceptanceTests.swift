import Dashboards
import Foundation
import ProbeConfig
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Issue 13's acceptance, against the real thing: `netprobe run` (the built binary) probing
/// loopback into a real InfluxDB, a real Prometheus scraping its /metrics and, with
/// blackbox_exporter's multi-target relabelling, its /probe; promtool checking the
/// exposition. Waits are on Prometheus' API answering what is wanted, never on sleeps.
final class PrometheusAcceptanceTests: XCTestCase {
    struct Setup {
        let directory: URL
        let port: Int
        let open: Int
        let closed: Int
        let forbidden: String
        var config: URL { directory.appendingPathComponent("netprobe.yaml") }
        var metricsURL: URL { URL(string: "http://127.0.0.1:\(port)/metrics")! }
    }

    static func makeSetup(influx: InfluxDBTestServer, open: Int) throws -> Setup {
        let directory = try TestEnvironment.temporaryDirectory("netprobe-prometheus")
        let setup = Setup(directory: directory, port: TestEnvironment.freePort(), open: open, closed: TestEnvironment.freePort(), forbidden: randomLoopbackAddress())
        try "local: [\"127.0.0.1\", \"::1\"]\n".write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        try "local:\n  127.0.0.1: [\(setup.open), \(setup.closed)]\n".write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        try """
            probe: prom-e2e
            targets: {ping: ping.yaml, tcp: tcp.yaml}
            icmp: {interval: 1s, count: 3, spacing: 20ms, timeout: 300ms}
            tcp: {interval: 1s, count: 2, spacing: 20ms, timeout: 300ms}
            resolve_interval: 1h
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
              - name: local
                url: \(influx.url.absoluteString)
                database: netprobe
            prometheus:
              listen: 127.0.0.1:\(setup.port)
              probe:
                allow: ["127.0.0.1/32", "::1/128"]
                max_concurrent: 8
                max_per_second: 200
            """.write(to: setup.config, atomically: true, encoding: .utf8)
        return setup
    }

    /// Starts `netprobe run` and waits for its endpoint to answer.
    static func startRun(_ setup: Setup) async throws -> NetprobeRun {
        let run = try NetprobeRun(config: setup.config)
        let listening = await TestEnvironment.eventually(within: 60) {
            (try? await TestEnvironment.http("GET", setup.metricsURL, timeoutSeconds: 2).status) == 200
        }
        XCTAssertTrue(listening, "netprobe's /metrics never answered:\n\(run.errorLog)")
        return run
    }

    /// blackbox_exporter's documented multi-target scrape config, pointed at netprobe.
    static func blackboxJob(_ name: String, module: String, targets: [String], exporter: Int) -> String {
        """
          - job_name: \(name)
            metrics_path: /probe
            params:
              module: [\(module)]
            static_configs:
              - targets: [\(targets.map { "\"\($0)\"" }.joined(separator: ", "))]
            relabel_configs:
              - source_labels: [__address__]
                target_label: __param_target
              - source_labels: [__param_target]
                target_label: instance
              - target_label: __address__
                replacement: 127.0.0.1:\(exporter)

        """
    }

    /// Issue 28's acceptance 4 on real servers: a target's labels and its classes are
    /// labels of its Prometheus series and tags of its InfluxDB points, the same pairs in both;
    /// a target without labels gets none.
    func testLabelsAndClassesAreSeriesLabelsInPrometheusAndTagsInInfluxDB() async throws {
        try Privilege.requireRoot()
        let influx = try await InfluxDBTestServer.start()
        try await influx.createDatabase("netprobe")
        let listener = try LoopbackListener()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-prometheus-labels")
        let port = TestEnvironment.freePort()
        try """
            local:
              - host: 127.0.0.1
                labels: {site: fra1, circuit: c-1234}
                tos: [0, ef]
              - "::1"
            """.write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        try """
            local:
              - host: 127.0.0.1
                ports: \(listener.port)
                tos: af41
                labels: {owner: dba}
            """.write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("netprobe.yaml")
        try """
            probe: prom-labels
            targets: {ping: ping.yaml, tcp: tcp.yaml}
            icmp: {interval: 1s, count: 2, spacing: 20ms, timeout: 300ms}
            tcp: {interval: 1s, count: 1, timeout: 300ms}
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
              - {name: local, url: \(influx.url.absoluteString), database: netprobe}
            prometheus: {listen: 127.0.0.1:\(port)}
            """.write(to: config, atomically: true, encoding: .utf8)
        let run = try NetprobeRun(config: config)
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        let prometheus = try await PrometheusTestServer.start(scrapeConfigs: """
              - job_name: netprobe
                static_configs:
                  - targets: ["127.0.0.1:\(port)"]

            """)
        let scraped = try await TestEnvironment.eventually(within: 120) {
            let icmp = try await prometheus.query("netprobe_icmp_sent_total")
            let tcp = try await prometheus.query("netprobe_tcp_sent_total")
            return icmp.count == 3 && tcp.count == 1
        }
        XCTAssertTrue(scraped, "Prometheus did not get the series; netprobe's log:\n\(run.errorLog)")

        let icmp = try await prometheus.query("netprobe_icmp_sent_total")
        let labelled = icmp.filter { $0.labels["target"] == "127.0.0.1" }
        XCTAssertEqual(Set(labelled.map { $0.labels["tos"] ?? "none" }), ["none", "ef"], "one series per class; class 0 has no tos label")
        for series in labelled {
            XCTAssertEqual(series.labels["site"], "fra1")
            XCTAssertEqual(series.labels["circuit"], "c-1234")
        }
        let plain = try XCTUnwrap(icmp.first { $0.labels["target"] == "::1" })
        XCTAssertEqual(Set(plain.labels.keys), ["__name__", "env", "family", "instance", "job", "probe", "target"], "no labels where none were given")
        let tcpSeries = try await prometheus.query("netprobe_tcp_sent_total")
        let tcp = try XCTUnwrap(tcpSeries.first)
        XCTAssertEqual(tcp.labels["owner"], "dba")
        XCTAssertEqual(tcp.labels["tos"], "af41")

        // The same pairs as InfluxDB tags.
        for (measurement, key, values) in [("icmp", "site", ["fra1"]), ("icmp", "circuit", ["c-1234"]), ("icmp", "tos", ["ef"]), ("tcp", "owner", ["dba"]), ("tcp", "tos", ["af41"])] {
            var found: [String] = []
            let arrived = try await TestEnvironment.eventually(within: 30) {
                let rows = try await influx.series("SHOW TAG VALUES FROM \(measurement) WITH KEY = \"\(key)\"", database: "netprobe")
                found = rows.flatMap { ($0["values"] as? [[Any]] ?? []).compactMap { $0.last as? String } }
                return !found.isEmpty
            }
            XCTAssertTrue(arrived, "InfluxDB has \(measurement) points tagged \(key)")
            XCTAssertEqual(found, values, "\(measurement) \(key)")
        }
        let untagged = try await influx.series("SELECT count(sent) FROM icmp WHERE target = '::1' AND site != ''", database: "netprobe")
        XCTAssertTrue(untagged.isEmpty, "::1's points carry no site tag")
    }

    func testPrometheusScrapesEveryTargetsSeriesAndTheyAgreeWithInfluxDB() async throws {
        try Privilege.requireRoot()
        let influx = try await InfluxDBTestServer.start()
        try await influx.createDatabase("netprobe")
        let listener = try LoopbackListener()
        let setup = try Self.makeSetup(influx: influx, open: listener.port)
        let capture = try LoopbackCapture()
        let run = try await Self.startRun(setup)
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }

        let prometheus = try await PrometheusTestServer.start(scrapeConfigs: """
              - job_name: netprobe
                static_configs:
                  - targets: ["127.0.0.1:\(setup.port)"]

            """ + Self.blackboxJob("blackbox_tcp", module: "tcp", targets: ["127.0.0.1:\(setup.open)", "127.0.0.1:\(setup.closed)"], exporter: setup.port)
            + Self.blackboxJob("blackbox_icmp", module: "icmp", targets: ["127.0.0.1", setup.forbidden], exporter: setup.port))

        // A few scrapes of everything: five samples of each target's gauge, and every
        // blackbox target scraped (the forbidden one as a failed scrape).
        let scraped = try await TestEnvironment.eventually(within: 120) {
            let icmp = try await prometheus.query("count_over_time(netprobe_icmp_rtt_median_seconds[5m]) >= 5")
            let tcp = try await prometheus.query("count_over_time(netprobe_tcp_rtt_median_seconds[5m]) >= 5")
            let probes = try await prometheus.query("probe_success")
            let forbidden = try await prometheus.up(job: "blackbox_icmp")[setup.forbidden]
            return icmp.count == 2 && tcp.count == 1 && probes.count == 3 && forbidden != nil
        }
        XCTAssertTrue(scraped, "Prometheus did not get the series; netprobe's log:\n\(run.errorLog)")
        let up = try await prometheus.up(job: "netprobe")
        XCTAssertEqual(up["127.0.0.1:\(setup.port)"], 1, "Prometheus (asking for OpenMetrics first) parsed every scrape of /metrics")

        // Every target's series, with the labels of the schema.
        let icmp = try await prometheus.query("netprobe_icmp_rtt_median_seconds")
        XCTAssertEqual(Set(icmp.map { [$0.labels["target"] ?? "", $0.labels["family"] ?? ""] }), [["127.0.0.1", "ipv4"], ["::1", "ipv6"]])
        for series in icmp {
            XCTAssertEqual(series.labels["probe"], "prom-e2e")
            XCTAssertEqual(series.labels["env"], "local")
            XCTAssertGreaterThan(series.value, 0)
        }
        let rounds = try await prometheus.query("netprobe_tcp_rounds_total")
        XCTAssertEqual(Set(rounds.map { [$0.labels["port"] ?? "", $0.labels["mode"] ?? "", $0.labels["result"] ?? ""] }),
                       [["\(setup.open)", "half-open", "ok"], ["\(setup.closed)", "half-open", "refused"]])
        for series in rounds { XCTAssertEqual(series.labels["family"], "ipv4") }

        // The histogram counted every probe received: both from the same scrape.
        let now = Date().timeIntervalSince1970 - 1
        for kind in ["icmp", "tcp"] {
            let counts = try await prometheus.query("netprobe_\(kind)_rtt_seconds_count", at: now)
            let received = try await prometheus.query("netprobe_\(kind)_received_total", at: now)
            XCTAssertEqual(counts.count, 2)
            for series in received {
                let count = counts.first { $0.labels["target"] == series.labels["target"] && $0.labels["port"] == series.labels["port"] }
                XCTAssertEqual(count?.value, series.value, "\(kind) \(series.labels)")
            }
            XCTAssertGreaterThan(received.map(\.value).reduce(0, +), 0)
        }

        // The RTT of each scraped round is what InfluxDB got for that round.
        var compared = 0
        for (measurement, selector) in [("icmp", "target=\"127.0.0.1\""), ("icmp", "target=\"::1\""), ("tcp", "port=\"\(setup.open)\"")] {
            let medians = try await prometheus.samples("netprobe_\(measurement)_rtt_median_seconds{\(selector)}[5m]").first?.values ?? []
            let maxima = try await prometheus.samples("netprobe_\(measurement)_rtt_max_seconds{\(selector)}[5m]").first?.values ?? []
            let starts = try await prometheus.samples("netprobe_\(measurement)_last_round_timestamp_seconds{\(selector)}[5m]").first?.values ?? []
            var rounds: [Int64: (median: Double, maximum: Double)] = [:]
            for (start, median) in zip(starts, medians) where start.time == median.time {
                if let maximum = maxima.first(where: { $0.time == start.time }) {
                    rounds[Int64((start.value * 1e6).rounded()) * 1000] = (median.value, maximum.value)
                }
            }
            XCTAssertGreaterThanOrEqual(rounds.count, 3, "\(measurement) \(selector): distinct rounds scraped")
            let influxSelector = selector.replacingOccurrences(of: "\"", with: "'")
            for (time, values) in rounds {
                var row: [String: Any]?
                let arrived = try await TestEnvironment.eventually(within: 30) {
                    let rows = try await influx.series("SELECT rtt_median_ms, rtt_max_ms FROM \(measurement) WHERE \(influxSelector) AND time = \(time)", database: "netprobe")
                    guard let series = rows.first, let columns = series["columns"] as? [String], let value = (series["values"] as? [[Any]])?.first else { return false }
                    row = Dictionary(uniqueKeysWithValues: zip(columns, value))
                    return true
                }
                XCTAssertTrue(arrived, "InfluxDB has the round at \(time)")
                let median = (row?["rtt_median_ms"] as? NSNumber)?.doubleValue ?? -1
                let maximum = (row?["rtt_max_ms"] as? NSNumber)?.doubleValue ?? -1
                XCTAssertEqual(values.median * 1000, median, accuracy: median * 1e-9, "\(measurement) \(selector) round \(time)")
                XCTAssertEqual(values.maximum * 1000, maximum, accuracy: maximum * 1e-9, "\(measurement) \(selector) round \(time)")
                compared += 1
            }
        }
        print("prometheus: \(compared) rounds compared with InfluxDB")

        // /probe with blackbox's relabelling: open 1, closed 0, the forbidden target a 403
        // (a failed scrape) that sent nothing.
        let success = try await prometheus.query("probe_success")
        var byInstance: [String: Double] = [:]
        for series in success { byInstance[series.labels["instance"] ?? ""] = series.value }
        XCTAssertEqual(byInstance["127.0.0.1:\(setup.open)"], 1)
        XCTAssertEqual(byInstance["127.0.0.1:\(setup.closed)"], 0)
        XCTAssertEqual(byInstance["127.0.0.1"], 1)
        let protocols = try await prometheus.query("probe_ip_protocol")
        XCTAssertEqual(Set(protocols.map(\.value)), [4])
        let rtt = try await prometheus.query("probe_icmp_duration_seconds{phase=\"rtt\"}")
        XCTAssertEqual(rtt.count, 1)
        let forbiddenUp = try await prometheus.up(job: "blackbox_icmp")[setup.forbidden]
        XCTAssertEqual(forbiddenUp, 0)
        let refusals = try await prometheus.query("netprobe_probe_requests_total{code=\"403\"}")
        XCTAssertGreaterThan(refusals.first?.value ?? 0, 0, "netprobe counted the refused scrapes")
        XCTAssertGreaterThan(capture.packets(to: "127.0.0.1"), 0, "the capture sees loopback traffic")
        capture.stop()
        XCTAssertEqual(capture.packets(to: setup.forbidden), 0, "no packet to \(setup.forbidden), which the allow-list does not name")

        // The PromQL dashboards for these targets: every query returns data from this
        // Prometheus, with Grafana's variables as "All" and the range as 5 minutes.
        let ping = [PingTarget(env: "local", host: "127.0.0.1", file: "ping.yaml", line: 1), PingTarget(env: "local", host: "::1", file: "ping.yaml", line: 1)]
        let tcp = [setup.open, setup.closed].map { TCPTarget(env: "local", host: "127.0.0.1", port: UInt16($0), file: "tcp.yaml", line: 2) }
        var queried = 0
        for dashboard in [DashboardGenerator.icmpDashboard(targets: ping, language: .promQL), DashboardGenerator.tcpDashboard(targets: tcp, language: .promQL)] {
            for variable in Self.array(Self.member(Self.member(dashboard, "templating"), "list")) {
                let query = Self.string(Self.member(variable, "query"))
                let results = try await prometheus.query(Self.promQL(forVariableQuery: query))
                XCTAssertFalse(results.isEmpty, "variable query \(query) returned nothing")
                queried += 1
            }
            for panel in Self.array(Self.member(dashboard, "panels")) {
                let title = Self.string(Self.member(panel, "title"))
                for target in Self.array(Self.member(panel, "targets")) {
                    let expression = Self.substitutingGrafanaVariables(Self.string(Self.member(target, "expr")))
                    let results = try await prometheus.query(expression)
                    // The closed port answers every handshake with RST: it has no RTT, only loss.
                    let expectedEmpty = title == "127.0.0.1:\(setup.closed)" && Self.string(Self.member(target, "refId")) != "E"
                    XCTAssertEqual(results.isEmpty, expectedEmpty, "panel '\(title)': \(expression)")
                    queried += 1
                }
            }
        }
        print("prometheus: \(queried) dashboard queries run")

        // promtool accepts the exposition (the text format it reads).
        let (status, body) = try await TestEnvironment.http("GET", setup.metricsURL)
        XCTAssertEqual(status, 200)
        let promtool = try PromtoolCheck.run(body)
        XCTAssertEqual(promtool.status, 0, promtool.output)
        XCTAssertEqual(promtool.output, "", "promtool check metrics found problems")
    }
}

extension PrometheusAcceptanceTests {
    static func member(_ value: JSONValue?, _ key: String) -> JSONValue? {
        if case .object(let object)? = value { return object[key] }
        return nil
    }

    static func array(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let array)? = value { return array }
        return []
    }

    static func string(_ value: JSONValue?) -> String {
        if case .string(let text)? = value { return text }
        return ""
    }

    /// Grafana's variables as a dashboard with everything selected sends them.
    static func substitutingGrafanaVariables(_ expression: String) -> String {
        expression.replacingOccurrences(of: "$__range", with: "5m")
            .replacingOccurrences(of: "$probe", with: ".*").replacingOccurrences(of: "$env", with: ".*").replacingOccurrences(of: "$target", with: ".*")
    }

    /// `label_values(METRIC{...}, LABEL)` as the PromQL Grafana's lookup amounts to.
    static func promQL(forVariableQuery query: String) -> String {
        let inner = query.dropFirst("label_values(".count).dropLast()
        let comma = inner.lastIndex(of: ",")!
        let label = inner[inner.index(after: comma)...].trimmingCharacters(in: .whitespaces)
        return "count by (\(label)) (\(substitutingGrafanaVariables(String(inner[..<comma]))))"
    }
}

/// `promtool check metrics` over an exposition.
enum PromtoolCheck {
    static func run(_ exposition: Data) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestEnvironment.requireBinary("promtool", package: "prometheus"))
        process.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(exposition)
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }
}
