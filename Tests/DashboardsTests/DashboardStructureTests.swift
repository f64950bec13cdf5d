import Dashboards
import Foundation
import ProbeConfig
import XCTest

/// The generated dashboards have the rows, panels and variables the README promises, for
/// the shipped targets and for a three-env fixture, and regenerate byte for byte.
final class DashboardStructureTests: XCTestCase {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static var fixture: String {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("three-envs").path
    }

    func testShippedTargetsGiveOneRowPerEnvAndAnRTTPanelPerTarget() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.repository.appendingPathComponent("targets").path)
        XCTAssertFalse(targets.ping.isEmpty)
        XCTAssertFalse(targets.tcp.isEmpty)
        try DashboardChecker.check(DashboardGenerator.icmpDashboard(targets: targets.ping), measurement: "icmp",
                                   expected: targets.ping.map { ($0.env, $0.host, nil) })
        try DashboardChecker.check(DashboardGenerator.tcpDashboard(targets: targets.tcp), measurement: "tcp",
                                   expected: targets.tcp.map { ($0.env, $0.host, $0.port) })
    }

    func testThreeEnvFixtureGivesThreeRowsInFileOrderWithEveryTarget() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        let envs = ["production", "lab, rack \"3\" o'neil a\\b", "staging $env [[target]]"]
        let icmp = DashboardGenerator.icmpDashboard(targets: targets.ping)
        let tcp = DashboardGenerator.tcpDashboard(targets: targets.tcp)
        try DashboardChecker.check(icmp, measurement: "icmp", expected: targets.ping.map { ($0.env, $0.host, nil) })
        try DashboardChecker.check(tcp, measurement: "tcp", expected: targets.tcp.map { ($0.env, $0.host, $0.port) })
        for dashboard in [icmp, tcp] {
            let rows = dashboard["panels"]!.elements.filter { $0["type"]?.stringValue == "row" }
            XCTAssertEqual(rows.compactMap { $0["title"]?.stringValue }, envs.map { "env: \($0)" })
        }
        XCTAssertEqual(icmp["panels"]!.elements.filter { $0["type"]?.stringValue == "timeseries" }.count, 6)
        XCTAssertEqual(tcp["panels"]!.elements.filter { $0["type"]?.stringValue == "timeseries" }.compactMap { $0["title"]?.stringValue },
                       ["127.0.0.1:22", "127.0.0.1:5432", "localhost:443", "[::1]:80", "[::1]:8080"])
        // `$env` in a name must never reach Grafana as `$env`: it would be replaced.
        let text = icmp.rendered + tcp.rendered
        let queries = (DashboardChecker.queries(icmp) + DashboardChecker.queries(tcp)).joined(separator: "\n")
        XCTAssertFalse(queries.contains("staging $env"), "a literal $env would be interpolated by Grafana")
        XCTAssertTrue(queries.contains("\"env\" =~ /^staging [$]env \\[\\[target\\]\\]$/"), queries)
        XCTAssertTrue(queries.contains("\"env\" = 'lab, rack \"3\" o\\'neil a\\\\b'"), queries)
        XCTAssertTrue(queries.contains("\"target\" = 'bad host, id=\"7\" c\\\\d'"), queries)
        XCTAssertTrue(text.contains("\"uid\": \"netprobe-icmp\""))
    }

    func testPathPanelsAreOnlyAddedWhenAskedOneTablePerTargetOnThePathMeasurement() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        XCTAssertTrue(DashboardGenerator.tcpDashboard(targets: targets.tcp)["panels"]!.elements.allSatisfy { $0["type"]?.stringValue != "table" })
        let tcp = DashboardGenerator.tcpDashboard(targets: targets.tcp, paths: true)
        XCTAssertTrue(DashboardChecker.noOverlap(tcp["panels"]!.elements), "no two panels overlap")
        let tables = tcp["panels"]!.elements.filter { $0["type"]?.stringValue == "table" }
        XCTAssertEqual(tables.compactMap { $0["title"]?.stringValue }, ["path: 127.0.0.1:22", "path: 127.0.0.1:5432", "path: localhost:443", "path: [::1]:80", "path: [::1]:8080"])
        let query = try XCTUnwrap(tables.first?["targets"]?.elements.first?["query"]?.stringValue)
        XCTAssertTrue(query.contains("FROM \"path\""), query)
        XCTAssertTrue(query.contains("\"protocol\" = 'tcp'") && query.contains("\"port\" = '22'"), query)
        let ids = tcp["panels"]!.elements.compactMap { $0["id"]?.intValue }
        XCTAssertEqual(Set(ids).count, ids.count, "panel ids stay unique")
    }

    func testPanelIDsDoNotChangeWhenATargetIsAdded() throws {
        let targets = try DashboardFiles.loadTargets(directory: Self.fixture)
        let before = DashboardGenerator.icmpDashboard(targets: targets.ping)
        let after = DashboardGenerator.icmpDashboard(targets: targets.ping + [PingTarget(env: "production", host: "127.0.0.9", file: "x", line: 1)])
        func ids(_ dashboard: JSONValue) -> [String: Int] {
            var result: [String: Int] = [:]
            for panel in dashboard["panels"]!.elements {
                result[(panel["type"]?.stringValue ?? "") + "|" + (panel["title"]?.stringValue ?? "")] = panel["id"]?.intValue
            }
            return result
        }
        let old = ids(before)
        let new = ids(after)
        for (key, id) in old { XCTAssertEqual(new[key], id, key) }
        XCTAssertEqual(new.count, old.count + 1)
    }

    func testRegeneratingTwiceGivesIdenticalBytesAndRewritesNothing() throws {
        let out = try TemporaryFolder("dashboards")
        let first = try NetprobeProcess.run(["dashboards", "--targets", Self.fixture, "--out", out.path])
        XCTAssertEqual(first.status, 0, first.standardError)
        let paths = ["dashboards/netprobe-icmp.json", "dashboards/netprobe-tcp.json",
                     "provisioning/datasources/netprobe.yaml", "provisioning/dashboards/netprobe.yaml"]
        func snapshot() throws -> [String: (Data, Date)] {
            var result: [String: (Data, Date)] = [:]
            for path in paths {
                let full = out.url.appendingPathComponent(path).path
                let attributes = try FileManager.default.attributesOfItem(atPath: full)
                result[path] = (try XCTUnwrap(FileManager.default.contents(atPath: full)), attributes[.modificationDate] as! Date)
            }
            return result
        }
        // Back-dated, so that a rewrite would show whatever the clock's resolution.
        for path in paths {
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_000_000_000)],
                                                  ofItemAtPath: out.url.appendingPathComponent(path).path)
        }
        let before = try snapshot()
        let second = try NetprobeProcess.run(["dashboards", "--targets", Self.fixture, "--out", out.path])
        XCTAssertEqual(second.status, 0, second.standardError)
        XCTAssertTrue(second.standardOutput.contains("already up to date"), second.standardOutput)
        let after = try snapshot()
        for path in paths {
            XCTAssertEqual(before[path]!.0, after[path]!.0, "\(path): same bytes")
            XCTAssertEqual(before[path]!.1, after[path]!.1, "\(path): not rewritten")
        }
        // A fresh folder gets the same bytes too (nothing depends on time or hash seeds).
        let elsewhere = try TemporaryFolder("dashboards")
        let third = try NetprobeProcess.run(["dashboards", "--targets", Self.fixture, "--out", elsewhere.path,
                                             "--dashboards-path", out.url.appendingPathComponent("dashboards").path])
        XCTAssertEqual(third.status, 0, third.standardError)
        for path in paths {
            XCTAssertEqual(FileManager.default.contents(atPath: elsewhere.url.appendingPathComponent(path).path), before[path]!.0, path)
        }
        // And the JSON is valid JSON with sorted keys.
        for path in paths where path.hasSuffix(".json") {
            let object = try JSONSerialization.jsonObject(with: before[path]!.0) as? [String: Any]
            XCTAssertEqual(object?.keys.sorted(), Array((object ?? [:]).keys).sorted())
            XCTAssertNotNil(object?["panels"])
        }
        let text = String(decoding: before["dashboards/netprobe-icmp.json"]!.0, as: UTF8.self)
        let firstKeys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { String($0.dropFirst(3).prefix { $0 != "\"" }) }
        XCTAssertEqual(firstKeys, firstKeys.sorted(), "top-level keys in sorted order")
    }

    func testProvisioningReadsTheDatasourceFromTheEnvironmentAndPointsAtTheDashboards() throws {
        let files = DashboardFiles.files(ping: [], tcp: [], dashboardsPath: "/var/lib/grafana/dashboards")
        let datasource = try XCTUnwrap(files.first { $0.path == "provisioning/datasources/netprobe.yaml" }).contents
        for line in ["type: influxdb", "uid: netprobe-influxdb", "url: ${NETPROBE_INFLUXDB_URL}", "dbName: ${NETPROBE_INFLUXDB_DATABASE}",
                     "user: ${NETPROBE_INFLUXDB_READ_USER}", "password: ${NETPROBE_INFLUXDB_READ_PASSWORD}"] {
            XCTAssertTrue(datasource.contains(line), line)
        }
        let provider = try XCTUnwrap(files.first { $0.path == "provisioning/dashboards/netprobe.yaml" }).contents
        XCTAssertTrue(provider.contains("path: \"/var/lib/grafana/dashboards\""), provider)
        XCTAssertTrue(provider.contains("type: file"))
        XCTAssertFalse(datasource.contains("\t") || provider.contains("\t"), "YAML has no tabs")
    }

    func testInvalidTargetsAreRefusedWithFileAndLine() throws {
        let folder = try TemporaryFolder("targets")
        try "local: 17\n".write(to: folder.url.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        let result = try NetprobeProcess.run(["dashboards", "--targets", folder.path, "--out", folder.url.appendingPathComponent("out").path])
        XCTAssertEqual(result.status, 2)
        XCTAssertTrue(result.standardError.contains("ping.yaml:1:"), result.standardError)
        let empty = try TemporaryFolder("targets")
        let missing = try NetprobeProcess.run(["dashboards", "--targets", empty.path, "--out", empty.path])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.standardError.contains("neither ping.yaml nor tcp.yaml"), missing.standardError)
    }

    func testInfluxQLQuotingEscapesQuotesBackslashesAndGrafanaVariables() {
        XCTAssertEqual(InfluxQL.string("o'neil a\\b"), "'o\\'neil a\\\\b'")
        XCTAssertEqual(InfluxQL.identifier("a\"b"), "\"a\\\"b\"")
        XCTAssertEqual(InfluxQL.tagEquals("env", "x, y"), "\"env\" = 'x, y'")
        XCTAssertEqual(InfluxQL.tagEquals("env", "a$b/c.d"), "\"env\" =~ /^a[$]b\\/c\\.d$/")
        XCTAssertEqual(InfluxQL.tagEquals("env", "[[env]]"), "\"env\" =~ /^\\[\\[env\\]\\]$/")
    }
}

/// Checks one dashboard against the targets it was made from.
enum DashboardChecker {
    static func queries(_ dashboard: JSONValue) -> [String] {
        dashboard["panels"]!.elements.flatMap { $0["targets"]?.elements ?? [] }.compactMap { $0["query"]?.stringValue }
    }

    static func check(_ dashboard: JSONValue, measurement: String, expected: [(env: String, host: String, port: UInt16?)],
                      file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(dashboard["uid"]?.stringValue, "netprobe-\(measurement)", file: file, line: line)
        // Variables: probe, env, target, each a SHOW TAG VALUES limited by the ones before.
        let variables = dashboard["templating"]!["list"]!.elements
        XCTAssertEqual(variables.compactMap { $0["name"]?.stringValue }, ["probe", "env", "target"], file: file, line: line)
        XCTAssertEqual(variables.compactMap { $0["query"]?.stringValue }, [
            "SHOW TAG VALUES FROM \"\(measurement)\" WITH KEY = \"probe\"",
            "SHOW TAG VALUES FROM \"\(measurement)\" WITH KEY = \"env\" WHERE \"probe\" =~ /^$probe$/",
            "SHOW TAG VALUES FROM \"\(measurement)\" WITH KEY = \"target\" WHERE \"probe\" =~ /^$probe$/ AND \"env\" =~ /^$env$/",
        ], file: file, line: line)
        for variable in variables {
            XCTAssertEqual(variable["multi"], .bool(true), file: file, line: line)
            XCTAssertEqual(variable["includeAll"], .bool(true), file: file, line: line)
            XCTAssertEqual(variable["datasource"]?["uid"]?.stringValue, "netprobe-influxdb", file: file, line: line)
        }

        let panels = dashboard["panels"]!.elements
        let ids = panels.compactMap { $0["id"]?.intValue }
        XCTAssertEqual(ids.count, panels.count, "every panel has an id", file: file, line: line)
        XCTAssertEqual(Set(ids).count, ids.count, "panel ids are unique", file: file, line: line)
        XCTAssertTrue(noOverlap(panels), "no two panels overlap", file: file, line: line)

        // Summary stats on top.
        let stats = panels.prefix { $0["type"]?.stringValue == "stat" }
        XCTAssertEqual(stats.compactMap { $0["title"]?.stringValue }.last, measurement == "tcp" ? "Completed connections" : "Lost packets", file: file, line: line)
        XCTAssertEqual(stats.count, measurement == "tcp" ? 5 : 4, file: file, line: line)
        XCTAssertEqual(stats.compactMap { $0["gridPos"]?["w"]?.intValue }.reduce(0, +), 24, "the stats span the full width", file: file, line: line)

        // A row per env, in file order; under it an outcome timeline and an RTT panel per target.
        var envs: [String] = []
        for target in expected where !envs.contains(target.env) { envs.append(target.env) }
        var sections: [[JSONValue]] = []
        for panel in panels.dropFirst(stats.count) {
            if panel["type"]?.stringValue == "row" { sections.append([panel]) } else { sections[sections.count - 1].append(panel) }
        }
        XCTAssertEqual(sections.count, envs.count, file: file, line: line)
        for (env, section) in zip(envs, sections) {
            XCTAssertEqual(section[0]["title"]?.stringValue, "env: \(env)", file: file, line: line)
            XCTAssertEqual(section[1]["type"]?.stringValue, "state-timeline", file: file, line: line)
            let timelineQuery = try XCTUnwrap(section[1]["targets"]?.elements.first?["query"]?.stringValue)
            XCTAssertTrue(timelineQuery.contains("last(\"result_code\")"), timelineQuery, file: file, line: line)
            XCTAssertTrue(timelineQuery.contains(measurement == "tcp" ? "GROUP BY time($__interval), \"target\", \"port\"" : "GROUP BY time($__interval), \"target\""),
                          timelineQuery, file: file, line: line)
            let members = expected.filter { $0.env == env }
            let rtt = Array(section.dropFirst(2))
            XCTAssertEqual(rtt.count, members.count, file: file, line: line)
            for (panel, target) in zip(rtt, members) {
                XCTAssertEqual(panel["type"]?.stringValue, "timeseries", file: file, line: line)
                let queries = panel["targets"]!.elements
                XCTAssertEqual(queries.compactMap { $0["refId"]?.stringValue }, ["A", "B"], file: file, line: line)
                let rttQuery = try XCTUnwrap(queries[0]["query"]?.stringValue)
                for select in ["min(\"rtt_min_ms\") AS \"min\"", "mean(\"rtt_avg_ms\") AS \"avg\"", "max(\"rtt_max_ms\") AS \"max\"", "mean(\"rtt_median_ms\") AS \"median\""] {
                    XCTAssertTrue(rttQuery.contains(select), rttQuery, file: file, line: line)
                }
                XCTAssertTrue(rttQuery.hasPrefix("SELECT ") && rttQuery.contains(" FROM \"\(measurement)\" WHERE \"probe\" =~ /^$probe$/ AND \"env\" =~ /^$env$/ AND \"target\" =~ /^$target$/ AND "),
                              rttQuery, file: file, line: line)
                XCTAssertTrue(rttQuery.contains("$timeFilter GROUP BY time($__interval) fill(null)"), rttQuery, file: file, line: line)
                XCTAssertTrue(rttQuery.contains(InfluxQL.tagEquals("env", target.env)) && rttQuery.contains(InfluxQL.tagEquals("target", target.host)),
                              rttQuery, file: file, line: line)
                if let port = target.port {
                    XCTAssertTrue(rttQuery.contains("\"port\" = '\(port)'"), rttQuery, file: file, line: line)
                }
                let lossQuery = try XCTUnwrap(queries[1]["query"]?.stringValue)
                XCTAssertTrue(lossQuery.hasPrefix("SELECT mean(\"loss_percent\") AS \"loss\" FROM \"\(measurement)\""), lossQuery, file: file, line: line)
                // Loss on the right axis, by an override on query B.
                let override = try XCTUnwrap(panel["fieldConfig"]?["overrides"]?.elements.first)
                XCTAssertEqual(override["matcher"]?["id"]?.stringValue, "byFrameRefID", file: file, line: line)
                XCTAssertEqual(override["matcher"]?["options"]?.stringValue, "B", file: file, line: line)
                let properties = override["properties"]!.elements
                XCTAssertTrue(properties.contains { $0["id"]?.stringValue == "custom.axisPlacement" && $0["value"]?.stringValue == "right" }, file: file, line: line)
                XCTAssertTrue(properties.contains { $0["id"]?.stringValue == "unit" && $0["value"]?.stringValue == "percent" }, file: file, line: line)
                XCTAssertEqual(panel["fieldConfig"]?["defaults"]?["unit"]?.stringValue, "ms", file: file, line: line)
            }
        }
        for query in queries(dashboard) {
            XCTAssertTrue(query.contains("FROM \"\(measurement)\""), query, file: file, line: line)
        }
    }

    static func noOverlap(_ panels: [JSONValue]) -> Bool {
        let boxes = panels.compactMap { panel -> (Int, Int, Int, Int)? in
            guard let grid = panel["gridPos"], let x = grid["x"]?.intValue, let y = grid["y"]?.intValue,
                  let w = grid["w"]?.intValue, let h = grid["h"]?.intValue else { return nil }
            return (x, y, w, h)
        }
        guard boxes.count == panels.count else { return false }
        for (index, a) in boxes.enumerated() {
            guard a.0 + a.2 <= 24 else { return false }
            for b in boxes[(index + 1)...] where a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3 {
                return false
            }
        }
        return true
    }
}
