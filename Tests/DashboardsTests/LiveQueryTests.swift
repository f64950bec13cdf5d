import Dashboards
import Foundation
import ProbeConfig
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Every query of the generated dashboards, with its variables filled in the way Grafana
/// fills them, runs against a real influxd that a short `netprobe run` wrote to, and
/// returns data.
final class LiveQueryTests: XCTestCase {
    static let probeName = "dash-probe"
    static let unresolvable = "bad host, id=\"7\" c\\d"

    /// What one run left behind: the server, the targets it probed and the dashboards.
    struct Run {
        let server: InfluxDBTestServer
        let folder: TemporaryFolder
        let ping: [PingTarget]
        let tcp: [TCPTarget]
        let closedPort: UInt16
    }

    func testEveryPanelAndVariableQueryReturnsDataAfterANetprobeRun() async throws {
        let run = try await probeTheFixtureForFourRounds()
        let dashboards: [(JSONValue, String, [(env: String, host: String, port: UInt16?)])] = [
            (DashboardGenerator.icmpDashboard(targets: run.ping), "icmp", run.ping.map { ($0.env, $0.host, nil) }),
            (DashboardGenerator.tcpDashboard(targets: run.tcp), "tcp", run.tcp.map { ($0.env, $0.host, $0.port) }),
        ]
        var queriesRun = 0
        for (dashboard, measurement, targets) in dashboards {
            // The variables, resolved as Grafana does: each query with the earlier ones filled in.
            let variables = dashboard["templating"]!["list"]!.elements
            var all: [String: [String]] = [:]
            for variable in variables {
                let name = try XCTUnwrap(variable["name"]?.stringValue)
                let query = Grafana.interpolate(try XCTUnwrap(variable["query"]?.stringValue), selection: all)
                let values = try await tagValues(run.server, query)
                queriesRun += 1
                all[name] = values
            }
            XCTAssertEqual(all["probe"], [Self.probeName], measurement)
            XCTAssertEqual(Set(all["env"] ?? []), Set(targets.map(\.env)), measurement)
            XCTAssertEqual(Set(all["target"] ?? []), Set(targets.map(\.host)), measurement)

            let panels = dashboard["panels"]!.elements
            // "All" selected: every panel's every query has data, except the RTT of targets
            // that never answered (an unresolvable name, a closed port), which have loss only.
            let rttPanels = panels.filter { $0["type"]?.stringValue == "timeseries" }
            XCTAssertEqual(rttPanels.count, targets.count)
            let silent = Set(zip(rttPanels, targets).filter { $0.1.host == Self.unresolvable || $0.1.port == run.closedPort }.compactMap { $0.0["id"]?.intValue })
            XCTAssertEqual(silent.count, measurement == "icmp" ? 1 : 2)
            for panel in panels where panel["type"]?.stringValue != "row" {
                let title = panel["title"]?.stringValue ?? ""
                for target in panel["targets"]!.elements {
                    let query = Grafana.interpolate(try XCTUnwrap(target["query"]?.stringValue), selection: all)
                    let rows = try await valueRows(run.server, query)
                    queriesRun += 1
                    if silent.contains(panel["id"]?.intValue ?? 0) && target["refId"]?.stringValue == "A" {
                        XCTAssertTrue(rows.isEmpty, "\(measurement) \(title): no RTT for a target that never answered: \(query)")
                    } else {
                        XCTAssertFalse(rows.isEmpty, "\(measurement) \(title) \(target["refId"]?.stringValue ?? ""): no data for \(query)")
                    }
                }
            }
            // One env and target selected: that target's panel has data, and another env's
            // selection empties it (the variables filter the per-target panels too).
            for (panel, target) in zip(rttPanels, targets) where !silent.contains(panel["id"]?.intValue ?? 0) {
                let loss = try XCTUnwrap(panel["targets"]?.elements.last?["query"]?.stringValue)
                let selected = ["probe": [Self.probeName], "env": [target.env], "target": [target.host]]
                let rows = try await valueRows(run.server, Grafana.interpolate(loss, selection: selected))
                XCTAssertFalse(rows.isEmpty, "\(measurement) \(target.host): no data with only its env and target selected")
                let otherEnv = try XCTUnwrap(targets.first { $0.env != target.env }?.env)
                let other = try await valueRows(run.server, Grafana.interpolate(loss, selection: ["probe": [Self.probeName], "env": [otherEnv], "target": [target.host]]))
                XCTAssertTrue(other.isEmpty, "\(measurement) \(target.host): data although its env is not selected")
                queriesRun += 2
            }
        }
        XCTAssertGreaterThan(queriesRun, 40)
    }

    // MARK: The run

    /// Starts influxd, probes the three-env fixture (its TCP ports swapped for a listening
    /// and a closed loopback port) with `netprobe run` for about four rounds, and stops it.
    func probeTheFixtureForFourRounds() async throws -> Run {
        try NetprobeProcess.requireRoot()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else {
            if TestEnvironment.isCI { XCTFail("unshare (util-linux) is missing") }
            throw XCTSkip("needs unshare (util-linux)")
        }
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("netprobe")
        let (ipv4, ipv6) = try listenersOnOnePort()
        let closed = UInt16(TestEnvironment.freePort())
        let folder = try TemporaryFolder("dashboards-live")
        let fixture = try DashboardFiles.loadTargets(directory: DashboardStructureTests.fixture)
        try FileManager.default.copyItem(atPath: DashboardStructureTests.fixture + "/ping.yaml", toPath: folder.path + "/ping.yaml")
        try tcpFile(fixture.tcp, open: ipv4.port, closed: closed).write(toFile: folder.path + "/tcp.yaml", atomically: true, encoding: .utf8)
        let targets = try DashboardFiles.loadTargets(directory: folder.path)
        try """
            probe: \(Self.probeName)
            targets: {ping: ping.yaml, tcp: tcp.yaml}
            icmp: {interval: 1s, count: 2, spacing: 50ms, timeout: 300ms}
            tcp: {interval: 1s, count: 2, spacing: 50ms, timeout: 300ms}
            resolve_interval: 1h
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
              - url: \(server.url.absoluteString)
                database: netprobe
            """.write(toFile: folder.path + "/netprobe.yaml", atomically: true, encoding: .utf8)
        // Name lookups go to 127.0.0.1, where nothing answers: the unresolvable target
        // sends no DNS query off this machine.
        try "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".write(toFile: folder.path + "/resolv.conf", atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-m", "--", "sh", "-c", "mount --bind \"$1\" /etc/resolv.conf && exec \"$2\" run --config \"$3\"",
                             "sh", folder.path + "/resolv.conf", NetprobeProcess.path, folder.path + "/netprobe.yaml"]
        let log = folder.path + "/netprobe.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardError = process.standardOutput
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Four rounds of the first and the last target of each kind have arrived (the limit
        // only keeps a broken run from hanging the suite).
        func influxString(_ text: String) -> String {
            "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        }
        let watched = [("icmp", targets.ping.first?.host), ("icmp", targets.ping.last?.host), ("tcp", targets.tcp.first?.host), ("tcp", targets.tcp.last?.host)]
        let fourRounds = try await TestEnvironment.eventually(within: 60) {
            for case let (measurement, host?) in watched {
                let rows = try await self.valueRows(server, "SELECT count(\"sent\") FROM \"\(measurement)\" WHERE \"target\" = \(influxString(host))")
                if ((rows.first?.last as? NSNumber)?.intValue ?? 0) < 4 { return false }
            }
            return true
        }
        XCTAssertTrue(fourRounds, "four rounds of every watched target")
        kill(process.processIdentifier, SIGTERM)
        TestEnvironment.eventually(within: 60) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertEqual(process.terminationStatus, 0, output)
        withExtendedLifetime((ipv4, ipv6)) {}
        let count = try await valueRows(server, "SELECT count(\"sent\") FROM \"icmp\"")
        XCTAssertFalse(count.isEmpty, "netprobe run wrote nothing: \(output)")
        return Run(server: server, folder: folder, ping: targets.ping, tcp: targets.tcp, closedPort: closed)
    }

    /// Listeners on 127.0.0.1 and ::1 with the same port number, so "localhost" reaches
    /// one whichever address it resolves to.
    func listenersOnOnePort() throws -> (LoopbackListener, LoopbackListener) {
        for _ in 0..<20 {
            let ipv4 = try LoopbackListener(ipv6: false)
            if let ipv6 = try? LoopbackListener(ipv6: true, port: ipv4.port) { return (ipv4, ipv6) }
        }
        throw POSIXError(.EADDRINUSE)
    }

    /// The fixture's tcp targets with each host's first port made `open` and the second
    /// `closed`, as a targets file.
    func tcpFile(_ targets: [TCPTarget], open: UInt16, closed: UInt16) -> String {
        let quote = { (text: String) in JSONValue.string(text).rendered.trimmingCharacters(in: .newlines) }
        var text = ""
        var env: String?
        var seen: [String: Int] = [:]
        var lines: [(env: String, host: String, ports: [UInt16])] = []
        for target in targets {
            let key = target.env + "\u{1F}" + target.host
            if let index = seen[key] {
                lines[index].ports.append(closed)
            } else {
                seen[key] = lines.count
                lines.append((target.env, target.host, [open]))
            }
        }
        for line in lines {
            if line.env != env {
                text += "\(quote(line.env)):\n"
                env = line.env
            }
            text += "  \(quote(line.host)): [\(line.ports.map(String.init).joined(separator: ", "))]\n"
        }
        return text
    }

    // MARK: Queries

    /// Rows of every series that hold at least one non-null value besides time.
    func valueRows(_ server: InfluxDBTestServer, _ query: String) async throws -> [[Any]] {
        let series = try await server.series(query, database: "netprobe")
        return series.flatMap { series -> [[Any]] in
            let columns = series["columns"] as? [String] ?? []
            let values = series["values"] as? [[Any]] ?? []
            return values.filter { row in zip(columns, row).contains { $0.0 != "time" && !($0.1 is NSNull) } }
        }
    }

    /// The values of a SHOW TAG VALUES result.
    func tagValues(_ server: InfluxDBTestServer, _ query: String) async throws -> [String] {
        let series = try await server.series(query, database: "netprobe")
        return series.flatMap { series -> [String] in
            let columns = series["columns"] as? [String] ?? []
            guard let index = columns.firstIndex(of: "value") else { return [] }
            return (series["values"] as? [[Any]] ?? []).compactMap { $0[index] as? String }
        }
    }
}

/// What Grafana's InfluxDB datasource does to a query before sending it, for one selection.
enum Grafana {
    /// Fills in `$name`, `${name}` and `[[name]]`: the dashboard's time range and interval,
    /// and each multi-value variable as its regex-escaped value, or `(a|b)` for several.
    /// Unknown names stay as they are, as in Grafana. One pass: replacement text is not
    /// interpolated again. `raw` values go in as they are: a variable's custom "All" value
    /// (`allValue`), which Grafana never escapes.
    static func interpolate(_ query: String, selection: [String: [String]], raw: [String: String] = [:]) -> String {
        let pattern = try! NSRegularExpression(pattern: #"\$(\w+)|\[\[(\w+?)\]\]|\$\{(\w+)\}"#)
        let text = query as NSString
        var output = ""
        var position = 0
        for match in pattern.matches(in: query, range: NSRange(location: 0, length: text.length)) {
            output += text.substring(with: NSRange(location: position, length: match.range.location - position))
            position = match.range.location + match.range.length
            var name = ""
            for group in 1...3 where match.range(at: group).location != NSNotFound {
                name = text.substring(with: match.range(at: group))
            }
            switch name {
            case "timeFilter": output += "time > now() - 1h"
            case "__interval": output += "10s"
            default:
                if let value = raw[name] {
                    output += value
                } else if let values = selection[name] {
                    let escaped = values.map(escapeRegex)
                    output += escaped.count == 1 ? escaped[0] : "(" + escaped.joined(separator: "|") + ")"
                } else {
                    output += text.substring(with: match.range)
                }
            }
        }
        output += text.substring(from: position)
        return output
    }

    /// Grafana's `escapeRegex`: a backslash before each of `\^$*+?.()|[]{}/`.
    static func escapeRegex(_ value: String) -> String {
        var output = ""
        for character in value {
            if "\\^$*+?.()|[]{}/".contains(character) { output += "\\" }
            output.append(character)
        }
        return output
    }
}
