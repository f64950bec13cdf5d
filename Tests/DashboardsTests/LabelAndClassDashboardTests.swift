import Dashboards
import Foundation
import ProbeConfig
import ProbeResults
import TestSupport
import XCTest

/// Issue 28 in the dashboards: a template variable per label of the targets, and a target
/// probed in several TOS classes shown one series per class. Structure first, then the
/// generated queries run against a real influxd and a real Prometheus holding series with
/// and without labels, in class 0 and others.
final class LabelAndClassDashboardTests: XCTestCase {
    static let probeName = "dash-probe"

    /// lab: 127.0.0.1 (site fra1, circuit c-1234, classes 0 and ef), 127.0.0.2 (no labels),
    /// ::1 (site ams1); edge: 127.0.0.3 (af41 only). tcp: 127.0.0.1:22 and :80 (site fra1,
    /// classes 0 and cs6), 127.0.0.2:443.
    static var fixture: String {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("labels-tos").path
    }

    static func variables(_ dashboard: JSONValue) -> [JSONValue] { dashboard["templating"]!["list"]!.elements }

    static func panels(_ dashboard: JSONValue, type: String) -> [JSONValue] {
        dashboard["panels"]!.elements.filter { $0["type"]?.stringValue == type }
    }

    static func strings(_ values: [JSONValue], _ key: String) -> [String?] { values.map { $0[key]?.stringValue } }

    // MARK: Structure

    func testEveryLabelOfTheTargetsIsAVariableBetweenEnvAndTargetWhoseAllMatchesAnyValue() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        let icmp = DashboardGenerator.icmpDashboard(targets: targets.ping)
        let variables = Self.variables(icmp)
        XCTAssertEqual(Self.strings(variables, "name"), ["probe", "env", "circuit", "site", "target"])
        XCTAssertEqual(Self.strings(variables, "label"), ["probe", "env", "circuit", "site", "target"])
        XCTAssertEqual(Self.strings(variables, "query"), [
            "SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"probe\"",
            "SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"env\" WHERE \"probe\" =~ /^$probe$/",
            "SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"circuit\" WHERE \"probe\" =~ /^$probe$/ AND \"env\" =~ /^$env$/",
            "SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"site\" WHERE \"probe\" =~ /^$probe$/ AND \"env\" =~ /^$env$/ AND \"circuit\" =~ /^$circuit$/",
            "SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"target\" WHERE \"probe\" =~ /^$probe$/ AND \"env\" =~ /^$env$/ AND \"circuit\" =~ /^$circuit$/ AND \"site\" =~ /^$site$/",
        ])
        // A label's "All" is `.*` (matches a series without the tag); the schema's own tags
        // keep Grafana's every-value "All", as before.
        XCTAssertEqual(Self.strings(variables, "allValue"), [nil, nil, ".*", ".*", nil])
        for variable in variables {
            XCTAssertEqual(variable["multi"], .bool(true))
            XCTAssertEqual(variable["includeAll"], .bool(true))
        }
        // Every panel query honours the label variables.
        let queries = DashboardChecker.queries(icmp)
        XCTAssertFalse(queries.isEmpty)
        for query in queries {
            XCTAssertTrue(query.contains("\"circuit\" =~ /^$circuit$/ AND \"site\" =~ /^$site$/ AND \"target\" =~ /^$target$/"), query)
        }
        // The TCP dashboard has its own targets' labels only.
        let tcp = DashboardGenerator.tcpDashboard(targets: targets.tcp)
        XCTAssertEqual(Self.strings(Self.variables(tcp), "name"), ["probe", "env", "site", "target"])
        // Targets without labels: the dashboards of before, byte for byte.
        let plain = targets.ping.map { PingTarget(env: $0.env, host: $0.host, file: $0.file, line: $0.line) }
        XCTAssertEqual(Self.strings(Self.variables(DashboardGenerator.icmpDashboard(targets: plain)), "name"), ["probe", "env", "target"])
    }

    func testATargetInTwoClassesHasOnePanelWithAQueryPerClassAndItsEnvsTimelineSplitsThem() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        XCTAssertEqual(targets.ping.count, 5, "the tos list makes one target per class")
        let icmp = DashboardGenerator.icmpDashboard(targets: targets.ping)
        XCTAssertTrue(DashboardChecker.noOverlap(icmp["panels"]!.elements))
        let ids = icmp["panels"]!.elements.compactMap { $0["id"]?.intValue }
        XCTAssertEqual(Set(ids).count, ids.count)
        let rtt = Self.panels(icmp, type: "timeseries")
        XCTAssertEqual(Self.strings(rtt, "title"), ["127.0.0.1", "127.0.0.2", "::1", "127.0.0.3"], "one panel per target, not per class")

        let split = rtt[0]["targets"]!.elements
        XCTAssertEqual(Self.strings(split, "refId"), ["A", "B", "C", "D"])
        XCTAssertEqual(Self.strings(split, "alias"), ["$col (tos 0)", "$col (tos ef)", "loss % (tos 0)", "loss % (tos ef)"])
        let queries = split.compactMap { $0["query"]?.stringValue }
        XCTAssertTrue(queries[0].hasPrefix("SELECT min(\"rtt_min_ms\")") && queries[0].contains("\"target\" = '127.0.0.1' AND \"tos\" = '' AND $timeFilter"), queries[0])
        XCTAssertTrue(queries[1].hasPrefix("SELECT min(\"rtt_min_ms\")") && queries[1].contains("\"target\" = '127.0.0.1' AND \"tos\" = 'ef' AND $timeFilter"), queries[1])
        XCTAssertTrue(queries[2].hasPrefix("SELECT mean(\"loss_percent\")") && queries[2].contains("\"tos\" = '' AND"), queries[2])
        XCTAssertTrue(queries[3].hasPrefix("SELECT mean(\"loss_percent\")") && queries[3].contains("\"tos\" = 'ef' AND"), queries[3])
        let overrides = rtt[0]["fieldConfig"]!["overrides"]!.elements
        XCTAssertEqual(overrides.map { $0["matcher"]?["options"]?.stringValue }, ["C", "D"], "both loss queries on the right axis")

        // One class, 0: as before. One class, af41: its own condition and name.
        XCTAssertEqual(Self.strings(rtt[1]["targets"]!.elements, "alias"), ["$col", "loss %"])
        XCTAssertFalse(rtt[1]["targets"]!.elements.contains { $0["query"]?.stringValue?.contains("\"tos\"") ?? true })
        XCTAssertEqual(Self.strings(rtt[3]["targets"]!.elements, "alias"), ["$col (tos af41)", "loss % (tos af41)"])
        XCTAssertTrue(rtt[3]["targets"]!.elements.allSatisfy { $0["query"]?.stringValue?.contains("\"tos\" = 'af41'") ?? false })

        // The timelines: lab has class 0 and ef (two queries), edge af41 only (one).
        let timelines = Self.panels(icmp, type: "state-timeline")
        XCTAssertEqual(timelines.count, 2)
        let lab = timelines[0]["targets"]!.elements
        XCTAssertEqual(Self.strings(lab, "alias"), ["$tag_target", "$tag_target tos $tag_tos"])
        XCTAssertTrue(lab[0]["query"]?.stringValue?.contains("\"tos\" = '' AND $timeFilter GROUP BY time($__interval), \"target\" fill(null)") ?? false)
        XCTAssertTrue(lab[1]["query"]?.stringValue?.contains("\"tos\" != '' AND $timeFilter GROUP BY time($__interval), \"target\", \"tos\" fill(null)") ?? false)
        XCTAssertEqual(Self.strings(timelines[1]["targets"]!.elements, "alias"), ["$tag_target tos $tag_tos"])
        XCTAssertGreaterThanOrEqual(timelines[0]["gridPos"]?["h"]?.intValue ?? 0, 2 + 4, "a timeline row per target and class")

        // TCP: each port of the split host has its per-class queries, the port in each.
        let tcp = DashboardGenerator.tcpDashboard(targets: targets.tcp)
        let tcpRTT = Self.panels(tcp, type: "timeseries")
        XCTAssertEqual(Self.strings(tcpRTT, "title"), ["127.0.0.1:22", "127.0.0.1:80", "127.0.0.2:443"])
        XCTAssertEqual(Self.strings(tcpRTT[1]["targets"]!.elements, "alias"), ["$col (tos 0)", "$col (tos cs6)", "loss % (tos 0)", "loss % (tos cs6)"])
        XCTAssertTrue(tcpRTT[1]["targets"]!.elements[1]["query"]?.stringValue?.contains("\"port\" = '80' AND \"tos\" = 'cs6'") ?? false)
        let tcpTimeline = Self.panels(tcp, type: "state-timeline")[0]["targets"]!.elements
        XCTAssertEqual(Self.strings(tcpTimeline, "alias"), ["$tag_target:$tag_port", "$tag_target:$tag_port tos $tag_tos"])
        XCTAssertTrue(tcpTimeline[1]["query"]?.stringValue?.contains("GROUP BY time($__interval), \"target\", \"port\", \"tos\" fill(null)") ?? false)
    }

    func testPathTablesAreOnePerClassAndHonourTheLabelVariables() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        let tcp = DashboardGenerator.tcpDashboard(targets: targets.tcp, paths: true)
        XCTAssertTrue(DashboardChecker.noOverlap(tcp["panels"]!.elements), "no two panels overlap")
        let ids = tcp["panels"]!.elements.compactMap { $0["id"]?.intValue }
        XCTAssertEqual(Set(ids).count, ids.count)
        let tables = Self.panels(tcp, type: "table")
        XCTAssertEqual(Self.strings(tables, "title"), ["path: 127.0.0.1:22 (tos 0)", "path: 127.0.0.1:22 (tos cs6)",
                                                      "path: 127.0.0.1:80 (tos 0)", "path: 127.0.0.1:80 (tos cs6)", "path: 127.0.0.2:443"])
        let queries = tables.compactMap { $0["targets"]?.elements.first?["query"]?.stringValue }
        XCTAssertTrue(queries[0].contains("\"port\" = '22' AND \"tos\" = '' AND $timeFilter"), queries[0])
        XCTAssertTrue(queries[1].contains("\"port\" = '22' AND \"tos\" = 'cs6' AND $timeFilter"), queries[1])
        XCTAssertFalse(queries[4].contains("\"tos\""), queries[4])
        for query in queries {
            XCTAssertTrue(query.hasPrefix("SELECT \"hop_count\"") && query.contains("FROM \"path\" WHERE \"probe\" =~ /^$probe$/ AND \"site\" =~ /^$site$/ AND \"env\" = 'lab'"), query)
        }
        // A target in class 0 only keeps the id its table had before classes existed.
        let plain = DashboardGenerator.tcpDashboard(targets: targets.tcp.filter { $0.host == "127.0.0.2" }, paths: true)
        XCTAssertEqual(Self.panels(plain, type: "table").first?["id"], tables.last?["id"])
    }

    func testPrometheusDashboardsSelectByLabelsAndSplitByTheTosLabel() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        let icmp = DashboardGenerator.icmpDashboard(targets: targets.ping, language: .promQL)
        let variables = Self.variables(icmp)
        XCTAssertEqual(Self.strings(variables, "name"), ["probe", "env", "circuit", "site", "target"])
        XCTAssertEqual(Self.strings(variables, "query"), [
            "label_values(netprobe_icmp_rounds_total, probe)",
            "label_values(netprobe_icmp_rounds_total{probe=~\"$probe\"}, env)",
            "label_values(netprobe_icmp_rounds_total{probe=~\"$probe\",env=~\"$env\"}, circuit)",
            "label_values(netprobe_icmp_rounds_total{probe=~\"$probe\",env=~\"$env\",circuit=~\"$circuit\"}, site)",
            "label_values(netprobe_icmp_rounds_total{probe=~\"$probe\",env=~\"$env\",circuit=~\"$circuit\",site=~\"$site\"}, target)",
        ])
        XCTAssertEqual(Self.strings(variables, "allValue"), [".*", ".*", ".*", ".*", ".*"])
        let split = Self.panels(icmp, type: "timeseries")[0]["targets"]!.elements
        XCTAssertEqual(Self.strings(split, "refId"), ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"])
        XCTAssertEqual(Self.strings(split, "legendFormat"), ["min (tos 0)", "avg (tos 0)", "max (tos 0)", "median (tos 0)",
                                                             "min (tos ef)", "avg (tos ef)", "max (tos ef)", "median (tos ef)",
                                                             "loss (tos 0)", "loss (tos ef)"])
        XCTAssertEqual(split[0]["expr"]?.stringValue,
                       "netprobe_icmp_rtt_min_seconds{probe=~\"$probe\",env=~\"$env\",circuit=~\"$circuit\",site=~\"$site\",target=~\"$target\",env=\"lab\",target=\"127.0.0.1\",tos=\"\"}")
        XCTAssertEqual(split[9]["expr"]?.stringValue,
                       "netprobe_icmp_loss_ratio{probe=~\"$probe\",env=~\"$env\",circuit=~\"$circuit\",site=~\"$site\",target=~\"$target\",env=\"lab\",target=\"127.0.0.1\",tos=\"ef\"}")
        let overrides = Self.panels(icmp, type: "timeseries")[0]["fieldConfig"]!["overrides"]!.elements
        XCTAssertEqual(overrides.map { $0["matcher"]?["options"]?.stringValue }, ["I", "J"])
        let timeline = Self.panels(icmp, type: "state-timeline")[0]["targets"]!.elements
        XCTAssertEqual(Self.strings(timeline, "legendFormat"), ["{{target}}", "{{target}} tos {{tos}}"])
        XCTAssertTrue(timeline[1]["expr"]?.stringValue?.hasPrefix("max by (target, tos) (netprobe_icmp_result_code{") ?? false)
        XCTAssertTrue(timeline[1]["expr"]?.stringValue?.contains(",env=\"lab\",tos!=\"\"}") ?? false)
    }

    func testLabelsGrafanaReadsAsItsOwnNamesGetPrefixedVariablesAndTheOrderIsTheNames() {
        let labels = ["zone": "z1", "col": "1", "tag_target": "2", "timeFilter": "3", "label_col": "4"]
        let first = PingTarget(env: "x", host: "127.0.0.1", file: "ping.yaml", line: 2, labels: labels)
        let second = PingTarget(env: "x", host: "127.0.0.2", file: "ping.yaml", line: 3, labels: ["area": "a"])
        let dashboard = DashboardGenerator.icmpDashboard(targets: [first, second])
        let variables = Self.variables(dashboard)
        XCTAssertEqual(Self.strings(variables, "name"), ["probe", "env", "area", "label_col", "label_col_", "label_tag_target", "label_timeFilter", "zone", "target"])
        XCTAssertEqual(Self.strings(variables, "label"), ["probe", "env", "area", "col", "label_col", "tag_target", "timeFilter", "zone", "target"])
        let query = DashboardChecker.queries(dashboard)[0]
        XCTAssertTrue(query.contains("\"col\" =~ /^$label_col$/ AND \"label_col\" =~ /^$label_col_$/ AND \"tag_target\" =~ /^$label_tag_target$/ AND \"timeFilter\" =~ /^$label_timeFilter$/"), query)
        // Which target lists a label first does not change the dashboard's variables.
        let swapped = DashboardGenerator.icmpDashboard(targets: [second, first])
        XCTAssertEqual(Self.variables(swapped), variables)
        XCTAssertEqual(DashboardGenerator.icmpDashboard(targets: [first, second]).rendered, dashboard.rendered)
    }

    // MARK: Against InfluxDB

    /// Per class, what a round loses and its RTT samples: a query mixing ef with class 0
    /// would show a loss between 0 and 50 and an average RTT between 2.5 and 15.
    static func round(tos: UInt8) -> (sent: Int, received: Int, rtts: [Double]) {
        switch tos {
        case 0: return (4, 4, [1, 2, 3, 4])
        case 0xb8: return (4, 2, [10, 20])  // ef
        default: return (4, 3, [5, 6, 7])
        }
    }

    /// The point `run` writes for one round of a target (Schema.point), in line protocol.
    static func linePoint(_ target: PingTarget, startNanoseconds: Int64) -> String {
        let shape = round(tos: target.options.tos)
        let result = RoundResult(kind: .icmp, targetIndex: 0,
                                 target: ProbeTarget(name: target.host, address: IPAddress(parsing: target.host), options: target.options, labels: target.labels),
                                 startNanoseconds: startNanoseconds, sent: shape.sent, received: shape.received, duplicates: 0, late: 0, unreachable: 0,
                                 refused: 0, errors: 0, lossPercent: Double(shape.sent - shape.received) * 100 / Double(shape.sent),
                                 statistics: RTTStatistics(samples: shape.rtts), rttsMilliseconds: shape.rtts, ttl: 64, kernelTimestamps: shape.received,
                                 userTimestamps: 0, outcome: .ok)
        return LineProtocol.line(Schema.point(for: result, env: target.env, probe: probeName))
    }

    func testInfluxQLQueriesReturnEachClassApartAndUnlabelledTargetsUnderAll() async throws {
        let server = try await InfluxDBTestServer.start()
        defer { server.stop() }
        try await server.createDatabase("netprobe")
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture).ping
        // Three rounds of every target, a minute apart (each in its own $__interval bucket).
        let now = Int64(Date().timeIntervalSince1970) * 1_000_000_000
        var lines: [String] = []
        for minute in 1...3 {
            for target in targets { lines.append(Self.linePoint(target, startNanoseconds: now - Int64(minute) * 60_000_000_000)) }
        }
        var write = URLComponents(url: server.url.appendingPathComponent("write"), resolvingAgainstBaseURL: false)!
        write.queryItems = [URLQueryItem(name: "db", value: "netprobe"), URLQueryItem(name: "precision", value: "ns")]
        let written = try await TestEnvironment.http("POST", write.url!, body: Data(lines.joined(separator: "\n").utf8))
        XCTAssertEqual(written.status, 204, String(decoding: written.body, as: UTF8.self))

        let dashboard = DashboardGenerator.icmpDashboard(targets: targets)
        let variables = Self.variables(dashboard)
        // Resolve every variable as Grafana does with "All" selected: each query with the
        // earlier ones filled in; a label's "All" is its custom all value, unescaped.
        var values: [String: [String]] = [:]
        var raw: [String: String] = [:]
        for variable in variables {
            let name = try XCTUnwrap(variable["name"]?.stringValue)
            values[name] = try await server.dashboardTagValues(Grafana.interpolate(try XCTUnwrap(variable["query"]?.stringValue), selection: values, raw: raw))
            if let allValue = variable["allValue"]?.stringValue { raw[name] = allValue }
        }
        XCTAssertEqual(values["probe"], [Self.probeName])
        XCTAssertEqual(values["env"], ["edge", "lab"])
        XCTAssertEqual(values["circuit"], ["c-1234"])
        XCTAssertEqual(values["site"], ["ams1", "fra1"])
        XCTAssertEqual(values["target"], ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"], "targets without labels are listed under All")
        let targetQuery = try XCTUnwrap(variables.last?["query"]?.stringValue)
        func targetsWhere(_ label: String, is value: String) async throws -> [String] {
            var selected = raw
            selected[label] = nil
            return try await server.dashboardTagValues(Grafana.interpolate(targetQuery, selection: values.merging([label: [value]]) { $1 }, raw: selected))
        }
        let fra1Targets = try await targetsWhere("site", is: "fra1")
        XCTAssertEqual(fra1Targets, ["127.0.0.1"])
        let circuitTargets = try await targetsWhere("circuit", is: "c-1234")
        XCTAssertEqual(circuitTargets, ["127.0.0.1"])

        func rows(_ query: String, selection: [String: [String]] = [:]) async throws -> [[Any]] {
            var chosen = raw
            for name in selection.keys { chosen[name] = nil }
            return try await server.dashboardValueRows(Grafana.interpolate(query, selection: values.merging(selection) { $1 }, raw: chosen))
        }
        func column(_ rows: [[Any]], _ index: Int) -> [Double] { rows.compactMap { ($0[index] as? NSNumber)?.doubleValue } }

        // The split panel: class 0 and ef come back apart, each with its own values.
        let rtt = Self.panels(dashboard, type: "timeseries")
        let split = rtt[0]["targets"]!.elements.compactMap { $0["query"]?.stringValue }
        let classZeroRTT = try await rows(split[0]), efRTT = try await rows(split[1])
        let classZeroLoss = try await rows(split[2]), efLoss = try await rows(split[3])
        XCTAssertEqual(column(classZeroRTT, 2), [2.5, 2.5, 2.5], "class 0's average RTT per round")
        XCTAssertEqual(column(efRTT, 2), [15, 15, 15], "ef's average RTT per round")
        XCTAssertEqual(column(classZeroRTT, 1), [1, 1, 1])
        XCTAssertEqual(column(efRTT, 3), [20, 20, 20])
        XCTAssertEqual(column(classZeroLoss, 1), [0, 0, 0])
        XCTAssertEqual(column(efLoss, 1), [50, 50, 50])
        // What the panel showed before: one series mixing both classes.
        let mixed = try await rows("SELECT mean(\"loss_percent\") FROM \"icmp\" WHERE \"target\" = '127.0.0.1' AND $timeFilter GROUP BY time($__interval) fill(null)")
        XCTAssertEqual(column(mixed, 1), [25, 25, 25], "without the split the classes mix")

        // The unlabelled target's panel has its data under All, none when a site is chosen.
        let unlabelled = try XCTUnwrap(rtt[1]["targets"]?.elements.last?["query"]?.stringValue)
        let unlabelledAll = try await rows(unlabelled)
        XCTAssertEqual(column(unlabelledAll, 1), [0, 0, 0])
        let unlabelledFra1 = try await rows(unlabelled, selection: ["site": ["fra1"]])
        XCTAssertTrue(unlabelledFra1.isEmpty, "a target without site is not in site fra1")
        let labelledFra1 = try await rows(split[3], selection: ["site": ["fra1"]])
        XCTAssertEqual(column(labelledFra1, 1), [50, 50, 50])
        let ams1 = try XCTUnwrap(rtt[2]["targets"]?.elements.last?["query"]?.stringValue)
        let ams1Rows = try await rows(ams1, selection: ["site": ["ams1"]]), ams1UnderFra1 = try await rows(ams1, selection: ["site": ["fra1"]])
        XCTAssertEqual(ams1Rows.count, 3)
        XCTAssertTrue(ams1UnderFra1.isEmpty)
        // af41 only: its queries return its class.
        let af41 = rtt[3]["targets"]!.elements.compactMap { $0["query"]?.stringValue }
        let af41RTT = try await rows(af41[0]), af41Loss = try await rows(af41[1])
        XCTAssertEqual(column(af41RTT, 2), [6, 6, 6])
        XCTAssertEqual(column(af41Loss, 1), [25, 25, 25])

        // The timelines: class 0 per target (the unlabelled one included), the other
        // classes per target and class.
        func seriesTags(_ query: String) async throws -> [[String: String]] {
            let series = try await server.series(Grafana.interpolate(query, selection: values, raw: raw), database: "netprobe")
            return series.filter { !(($0["values"] as? [[Any]]) ?? []).isEmpty }.map { ($0["tags"] as? [String: String]) ?? [:] }
        }
        let timelines = Self.panels(dashboard, type: "state-timeline")
        let lab = timelines[0]["targets"]!.elements.compactMap { $0["query"]?.stringValue }
        let labClassZero = try await seriesTags(lab[0]), labClassed = try await seriesTags(lab[1])
        XCTAssertEqual(labClassZero.compactMap { $0["target"] }.sorted(), ["127.0.0.1", "127.0.0.2", "::1"])
        XCTAssertEqual(labClassed, [["target": "127.0.0.1", "tos": "ef"]])
        let edge = try await seriesTags(try XCTUnwrap(timelines[1]["targets"]?.elements.first?["query"]?.stringValue))
        XCTAssertEqual(edge, [["target": "127.0.0.3", "tos": "af41"]])

        // The summary honours the labels and keeps the unlabelled targets under All:
        // lost per round: ef 2, af41 1, the others 0.
        let lost = try XCTUnwrap(Self.panels(dashboard, type: "stat").first { $0["title"]?.stringValue == "Lost packets" }?["targets"]?.elements.first?["query"]?.stringValue)
        let lostAll = try await rows(lost), lostFra1 = try await rows(lost, selection: ["site": ["fra1"]]), lostAms1 = try await rows(lost, selection: ["site": ["ams1"]])
        XCTAssertEqual(column(lostAll, 1), [9])
        XCTAssertEqual(column(lostFra1, 1), [6])
        XCTAssertEqual(column(lostAms1, 1), [0])
        // Grafana's default "All" (every value listed) would have dropped the unlabelled
        // targets: the reason for the custom all value.
        let listed = try await server.dashboardValueRows(Grafana.interpolate(lost, selection: values))
        XCTAssertEqual(column(listed, 1), [6], "(ams1|fra1) and (c-1234) leave only 127.0.0.1: the unlabelled targets' losses are missing")
    }

    // MARK: Against Prometheus

    /// The exposition of one scrape: each target's gauges with the labels the exporter
    /// gives them (Schema.tags: labels, `tos` only for a class other than 0).
    static func exposition(_ targets: [PingTarget]) -> String {
        var text = ""
        for target in targets {
            let shape = round(tos: target.options.tos)
            var labels = target.labels
            labels[Schema.Tag.probe] = probeName
            labels[Schema.Tag.env] = target.env
            labels[Schema.Tag.target] = target.host
            if let tos = Schema.tosTagValue(target.options.tos) { labels[Schema.Tag.tos] = tos }
            let set = "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",") + "}"
            let statistics = RTTStatistics(samples: shape.rtts)!
            let samples: [(String, Double)] = [
                (Schema.Prometheus.rounds(.icmp), 3),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.rttMinimum), statistics.minimum / 1000),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.rttAverage), statistics.average / 1000),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.rttMaximum), statistics.maximum / 1000),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.rttMedian), statistics.median / 1000),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.lossPercent), Double(shape.sent - shape.received) / Double(shape.sent)),
                (Schema.Prometheus.gauge(.icmp, Schema.Field.resultCode), 0),
                (Schema.Prometheus.counter(.icmp, Schema.Field.sent), Double(shape.sent)),
                (Schema.Prometheus.counter(.icmp, Schema.Field.received), Double(shape.received)),
            ]
            for (name, value) in samples { text += "\(name)\(set) \(value)\n" }
        }
        return text
    }

    func testPromQLQueriesReturnEachClassApartAndUnlabelledTargetsUnderAll() async throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture).ping
        let body = Self.exposition(targets)
        let exporter = try StubHTTPServer { _ in StubHTTPServer.Reply(status: 200, headers: ["Content-Type": "text/plain; version=0.0.4"], body: body) }
        defer { exporter.stop() }
        let prometheus = try await PrometheusTestServer.start(scrapeConfigs: """
              - job_name: labels
                static_configs:
                  - targets: ["127.0.0.1:\(exporter.port)"]

            """)
        defer { prometheus.stop() }
        // Three scrapes of each series, so that increase() over them has an answer.
        let scraped = try await TestEnvironment.eventually(within: 60) {
            try await prometheus.query("count_over_time(netprobe_icmp_rounds_total[5m]) >= 3").count == targets.count
        }
        XCTAssertTrue(scraped, "Prometheus scraped the series")

        let dashboard = DashboardGenerator.icmpDashboard(targets: targets, language: .promQL)
        /// Grafana's substitution: every variable "All" (`.*`, unescaped) unless chosen.
        func substituted(_ expression: String, _ chosen: [String: String] = [:]) -> String {
            var text = expression.replacingOccurrences(of: "$__range", with: "5m")
            for variable in Self.variables(dashboard) {
                let name = variable["name"]!.stringValue!
                text = text.replacingOccurrences(of: "\"$\(name)\"", with: "\"\(chosen[name] ?? variable["allValue"]!.stringValue!)\"")
            }
            return text
        }
        func values(_ expression: String, _ chosen: [String: String] = [:]) async throws -> [(labels: [String: String], value: Double)] {
            try await prometheus.query(substituted(expression, chosen))
        }

        // label_values, as the PromQL Grafana runs for it.
        for (variable, expected) in [("site", ["ams1", "fra1"]), ("circuit", ["c-1234"]), ("target", ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"])] {
            let query = try XCTUnwrap(Self.variables(dashboard).first { $0["name"]?.stringValue == variable }?["query"]?.stringValue)
            let promQL = PrometheusQueries.promQL(forVariableQuery: substituted(query))
            let results = try await prometheus.query(promQL)
            XCTAssertEqual(Set(results.compactMap { $0.labels[variable] }.filter { !$0.isEmpty }), Set(expected), promQL)
        }

        let rtt = Self.panels(dashboard, type: "timeseries")
        let split = rtt[0]["targets"]!.elements
        let expected: [String: Double] = ["min (tos 0)": 0.001, "avg (tos 0)": 0.0025, "max (tos 0)": 0.004, "median (tos 0)": 0.0025,
                                          "min (tos ef)": 0.010, "avg (tos ef)": 0.015, "max (tos ef)": 0.020, "median (tos ef)": 0.015,
                                          "loss (tos 0)": 0, "loss (tos ef)": 0.5]
        for query in split {
            let legend = try XCTUnwrap(query["legendFormat"]?.stringValue)
            let results = try await values(try XCTUnwrap(query["expr"]?.stringValue))
            XCTAssertEqual(results.count, 1, "\(legend): one series, its class's")
            XCTAssertEqual(results.first?.value ?? -1, try XCTUnwrap(expected[legend]), accuracy: 1e-12, legend)
        }
        let unlabelledLoss = try XCTUnwrap(rtt[1]["targets"]?.elements.last?["expr"]?.stringValue)
        let unlabelledAll = try await values(unlabelledLoss), unlabelledFra1 = try await values(unlabelledLoss, ["site": "fra1"])
        XCTAssertEqual(unlabelledAll.count, 1, "a target without site is there under All")
        XCTAssertTrue(unlabelledFra1.isEmpty, "and not in site fra1")
        let efLossFra1 = try await values(try XCTUnwrap(split.last?["expr"]?.stringValue), ["site": "fra1"])
        XCTAssertEqual(efLossFra1.map(\.value), [0.5])

        let timeline = Self.panels(dashboard, type: "state-timeline")[0]["targets"]!.elements.compactMap { $0["expr"]?.stringValue }
        let classZero = try await values(timeline[0]), classed = try await values(timeline[1])
        XCTAssertEqual(classZero.compactMap { $0.labels["target"] }.sorted(), ["127.0.0.1", "127.0.0.2", "::1"])
        XCTAssertEqual(classed.map(\.labels), [["target": "127.0.0.1", "tos": "ef"]])
        for stat in Self.panels(dashboard, type: "stat") {
            let results = try await values(try XCTUnwrap(stat["targets"]?.elements.first?["expr"]?.stringValue))
            XCTAssertFalse(results.isEmpty, stat["title"]?.stringValue ?? "")
        }
    }
}

/// InfluxDB line protocol for test points (InfluxSink has the real encoder; this is the
/// documented syntax, enough for the names the fixture uses).
enum LineProtocol {
    static func line(_ point: DataPoint) -> String {
        func escaped(_ text: String, _ characters: String) -> String {
            var output = ""
            for character in text {
                if characters.contains(character) { output += "\\" }
                output.append(character)
            }
            return output
        }
        var line = escaped(point.measurement, ", ")
        for (key, value) in point.tags.sorted(by: { $0.key < $1.key }) {
            line += "," + escaped(key, ",= ") + "=" + escaped(value, ",= ")
        }
        let fields = point.fields.map { field -> String in
            let text: String
            switch field.value {
            case .integer(let number): text = "\(number)i"
            case .float(let number): text = "\(number)"
            case .string(let string): text = "\"" + escaped(string, "\"\\") + "\""
            case .boolean(let flag): text = flag ? "true" : "false"
            }
            return escaped(field.key, ",= ") + "=" + text
        }
        return line + " " + fields.joined(separator: ",") + " \(point.timestampNanoseconds)"
    }
}

/// Grafana's `label_values(METRIC{...}, LABEL)` as the PromQL it amounts to.
enum PrometheusQueries {
    static func promQL(forVariableQuery query: String) -> String {
        let inner = query.dropFirst("label_values(".count).dropLast()
        let comma = inner.lastIndex(of: ",")!
        let label = inner[inner.index(after: comma)...].trimmingCharacters(in: .whitespaces)
        return "count by (\(label)) (\(inner[..<comma]))"
    }
}

extension InfluxDBTestServer {
    /// Rows of every series of a query's answer that hold a non-null value besides time.
    func dashboardValueRows(_ query: String) async throws -> [[Any]] {
        try await series(query, database: "netprobe").flatMap { series -> [[Any]] in
            let columns = series["columns"] as? [String] ?? []
            let values = series["values"] as? [[Any]] ?? []
            return values.filter { row in zip(columns, row).contains { $0.0 != "time" && !($0.1 is NSNull) } }
        }
    }

    /// The values of a SHOW TAG VALUES answer.
    func dashboardTagValues(_ query: String) async throws -> [String] {
        try await series(query, database: "netprobe").flatMap { series -> [String] in
            guard let index = (series["columns"] as? [String] ?? []).firstIndex(of: "value") else { return [] }
            return (series["values"] as? [[Any]] ?? []).compactMap { $0[index] as? String }
        }
    }
}
