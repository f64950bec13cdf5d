import Foundation
import TestSupport
import XCTest
@testable import netprobe
#if canImport(Glibc)
import Glibc
#endif

/// A path whose MTU drops: "prober" -(1500)- "router" -(1400)- "destination", IPv4 and IPv6,
/// namespaces of the test's own (TestSupport's `OneRouterNetwork`). The router is a real
/// Linux router (forwarding on, its ICMP errors not rate-limited): a don't-fragment packet
/// of more than 1400 bytes gets its "fragmentation needed" (mtu 1400) / "packet too big"
/// (mtu 1400). Nothing has a default route; nothing leaves the machine.
final class DFNetwork {
    let chain: OneRouterNetwork
    var prober: String { chain.prober }
    var router: String { chain.router }
    var destination: String { chain.host }
    var destination4: String { chain.hostAddress4 }
    var destination6: String { chain.hostAddress6 }
    /// The MTU of the router's link toward the destination.
    let narrowMTU = 1400

    private init(chain: OneRouterNetwork) {
        self.chain = chain
    }

    /// - Throws: a skip without root or `ip` (an XCTFail first in CI).
    static func make() throws -> DFNetwork {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "sysctl", "curl"])
        return DFNetwork(chain: try OneRouterNetwork.make(hostLinkMTU: 1400))
    }

    /// A command inside the prober namespace, to its end.
    func exec(_ arguments: [String], timeout: TimeInterval = 60) throws -> CommandResult {
        try Harness.run(["ip", "netns", "exec", prober] + arguments, timeout: timeout)
    }

    /// Small echoes reach the destination (both families): the path works, the neighbours
    /// are known. Polls netprobe's own ping until both answer.
    func waitUntilSmallPacketsPass() throws {
        var last = CommandResult(status: -1, standardOutput: "", standardError: "")
        let passing = TestEnvironment.eventually(within: 30, every: 0.2) {
            last = (try? self.exec([Harness.netprobePath, "ping", "-c", "1", "-W", "1s", self.destination4, self.destination6])) ?? last
            return last.status == 0
        }
        XCTAssertTrue(passing, "small echoes reach the destination: \(last.standardOutput)\n\(last.standardError)")
    }

    /// One HTTP request from inside the prober namespace (curl): status and body.
    func http(_ url: String, method: String = "GET", form: [(String, String)] = []) throws -> (status: Int, body: String) {
        var arguments = ["curl", "-sS", "-g", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"]
        if !form.isEmpty { arguments += method == "GET" ? ["-G"] : [] }
        for (name, value) in form { arguments += ["--data-urlencode", "\(name)=\(value)"] }
        if method != "GET" { arguments += ["-X", method] }
        let result = try exec(arguments + [url], timeout: 30)
        let output = result.standardOutput
        guard let newline = output.lastIndex(of: "\n") else { return (0, output) }
        return (Int(output[output.index(after: newline)...]) ?? 0, String(output[..<newline]))
    }
}

/// influxd inside a namespace (the one where `netprobe run` runs), reached with curl there.
final class DFInfluxInNamespace {
    let network: DFNetwork
    let directory: URL
    let port = 8086
    private let running: RunningProcess
    var url: String { "http://127.0.0.1:\(port)" }

    init(network: DFNetwork) throws {
        try Harness.requireTools(["influxd"])
        self.network = network
        directory = try TestEnvironment.temporaryDirectory("df-influxd")
        let root = directory.path
        // The namespace is this test's own: its ports are all free.
        try InfluxDBTestServer.writeConfig(in: directory, httpPort: port)
        // `ip netns exec` execs influxd itself: the process is influxd's.
        running = try Harness.start(["ip", "netns", "exec", network.prober, "influxd", "-config", root + "/influxdb.conf"])
        let ready = TestEnvironment.eventually(within: 60, every: 0.2) { (try? network.http(self.url + "/ping").status) == 204 }
        guard ready else { throw NSError(domain: "DFInfluxInNamespace", code: 1, userInfo: [NSLocalizedDescriptionKey: "influxd never answered: \(running.errorSoFar.suffix(2000))"]) }
        _ = try query("CREATE DATABASE netprobe", method: "POST")
    }

    deinit {
        kill(running.process.processIdentifier, SIGTERM)
        _ = try? Harness.finish(running, timeout: 30)
        try? FileManager.default.removeItem(at: directory)
    }

    /// The rows of an InfluxQL query against database "netprobe", each with its series' tags.
    func query(_ statement: String, method: String = "GET") throws -> [[String: Any]] {
        let (status, body) = try network.http(url + "/query", method: method, form: [("db", "netprobe"), ("epoch", "ns"), ("q", statement)])
        guard status == 200, let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let results = json["results"] as? [[String: Any]] else {
            throw NSError(domain: "DFInfluxInNamespace", code: status, userInfo: [NSLocalizedDescriptionKey: "\(statement): HTTP \(status) \(body)"])
        }
        if let error = results.first?["error"] as? String {
            throw NSError(domain: "DFInfluxInNamespace", code: 0, userInfo: [NSLocalizedDescriptionKey: "\(statement): \(error)"])
        }
        let series = results.first?["series"] as? [[String: Any]] ?? []
        return series.flatMap { series -> [[String: Any]] in
            guard let columns = series["columns"] as? [String], let values = series["values"] as? [[Any]] else { return [] }
            let tags = series["tags"] as? [String: Any] ?? [:]
            return values.map { row in
                var object = tags
                for (column, value) in zip(columns, row) where !(value is NSNull) { object[column] = value }
                return object
            }
        }
    }
}

/// Issue 30's don't-fragment probes end to end: bad input refused (exit 3), and on a real
/// path whose MTU drops to 1400, `run` (InfluxDB points), `/probe` (metrics) and `check`
/// (verdict) say "too big" with the MTU the router named.
final class DontFragmentIntegrationTests: XCTestCase {
    var netprobe: String { Harness.netprobePath }

    // MARK: Bad input

    func testTCPWithDashMIsRefusedWithTheReason() throws {
        let result = try Harness.run([netprobe, "tcp", "-M", "do", "127.0.0.1:1"])
        XCTAssertEqual(result.status, 3, result.standardError)
        XCTAssertTrue(result.standardError.contains("-M (don't-fragment) applies to ICMP echo only"), result.standardError)
        XCTAssertTrue(result.standardError.contains("netprobe ping -M do -s SIZE HOST"), "names what to use instead: \(result.standardError)")
        XCTAssertEqual(result.standardOutput, "", "nothing probed")
        // The same reason with a long target list (taken apart before the parser sees it).
        let long = try Harness.run([netprobe, "tcp", "-M", "do"] + (1...70).map { "127.0.0.\($0):1" })
        XCTAssertEqual(long.status, 3, long.standardError)
        XCTAssertTrue(long.standardError.contains("-M (don't-fragment) applies to ICMP echo only"), long.standardError)
    }

    func testBadPingAndCheckArgumentsExitThreeNamingTheFix() throws {
        for (arguments, hint) in [(["ping", "-M", "maybe", "127.0.0.1"], "-M: 'maybe' is not a choice; give do, dont or probe"),
                                  (["ping", "-s", "70000", "127.0.0.1"], "--size must be between 12 and 65507 bytes"),
                                  (["ping", "-M", "do", "-s", "70000", "127.0.0.1"], "--size must be between 12 and 65507 bytes"),
                                  (["check", "-M", "sometimes", "127.0.0.1"], "-M: 'sometimes' is not a choice"),
                                  (["check", "-s", "11", "127.0.0.1"], "--size must be between 12 and 65507 bytes"),
                                  (["check", "-s", "70000", "127.0.0.1"], "got 70000")] {
            let result = try Harness.run([netprobe] + arguments)
            XCTAssertEqual(result.status, 3, "\(arguments): \(result.standardError)")
            XCTAssertTrue(result.standardError.contains(hint), "\(arguments): \(result.standardError)")
        }
    }

    func testDashMsValueInALongTargetListIsNotATarget() {
        let targets = (1...100).map { "127.0.0.\($0)" }
        let ping = LongTargetLists.split(["-M", "do"] + targets.prefix(50) + ["-s", "1472", "--pmtu-discovery", "probe"] + targets.dropFirst(50),
                                         optionsTakingValues: PingCommand.optionsTakingValues)
        XCTAssertEqual(ping.kept, ["-M", "do", "-s", "1472", "--pmtu-discovery", "probe", "--", "127.0.0.1"])
        XCTAssertEqual(ping.extra, Array(targets.dropFirst()))
        let check = LongTargetLists.split(targets.prefix(70) + ["-M", "do", "-s", "1472"], optionsTakingValues: CheckCommand.optionsTakingValues)
        XCTAssertEqual(check.kept, ["-M", "do", "-s", "1472", "--", "127.0.0.1"])
        XCTAssertEqual(check.extra, Array(targets.prefix(70).dropFirst()))
    }

    // MARK: A real path whose MTU drops to 1400

    /// A config for `run` in the prober namespace probing `targets`, writing to influxd there.
    func writeRunConfig(_ directory: URL, probe: String, icmp: String, targets: [String], influx: DFInfluxInNamespace) throws -> String {
        try "mtu: [\(targets.map { "\"\($0)\"" }.joined(separator: ", "))]\n".write(to: directory.appendingPathComponent("ping-\(probe).yaml"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("netprobe-\(probe).yaml").path
        try """
            probe: \(probe)
            targets: {ping: ping-\(probe).yaml, tcp: null}
            icmp: \(icmp)
            resolve_interval: 1h
            spool: {directory: spool-\(probe), max_size: 16MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
              - name: ns
                url: \(influx.url)
                database: netprobe
            """.write(toFile: config, atomically: true, encoding: .utf8)
        return config
    }

    /// Runs `netprobe run` (config `icmp:` as given) in the prober namespace until influxd
    /// holds `rounds` rounds of each target under `probe`, stops it (SIGTERM, exit 0), and
    /// returns each target's rows.
    func run(probe: String, icmp: String, targets: [String], rounds: Int, network: DFNetwork, influx: DFInfluxInNamespace, directory: URL) throws -> [String: [[String: Any]]] {
        let config = try writeRunConfig(directory, probe: probe, icmp: icmp, targets: targets, influx: influx)
        let running = try Harness.start(["ip", "netns", "exec", network.prober, netprobe, "run", "--config", config])
        defer { if running.process.isRunning { kill(running.process.processIdentifier, SIGKILL) } }
        let enough = TestEnvironment.eventually(within: 90, every: 0.25) {
            targets.allSatisfy { target in
                let rows = (try? influx.query("SELECT count(result_code) FROM icmp WHERE probe = '\(probe)' AND target = '\(target)'")) ?? []
                return (rows.first?["count"] as? Int ?? 0) >= rounds
            }
        }
        XCTAssertTrue(enough, "\(rounds) rounds of each target under \(probe): \(running.errorSoFar.suffix(2000))")
        kill(running.process.processIdentifier, SIGTERM)
        let result = try Harness.finish(running, timeout: 60)
        XCTAssertEqual(result.status, 0, result.standardError)
        var rows: [String: [[String: Any]]] = [:]
        for target in targets {
            rows[target] = try influx.query("SELECT * FROM icmp WHERE probe = '\(probe)' AND target = '\(target)' ORDER BY time")
            XCTAssertGreaterThanOrEqual(rows[target]?.count ?? 0, rounds, "\(probe) \(target)")
        }
        return rows
    }

    /// Asserts that every round of every target was too big with `mtu`, all `sent` echoes.
    func assertEveryEchoTooBig(_ rows: [String: [[String: Any]]], mtu: [String: Int], sent: Int, file: StaticString = #filePath, line: UInt = #line) {
        for (target, targetRows) in rows {
            for row in targetRows {
                XCTAssertEqual(row["result"] as? String, "too_big", "\(target): \(row)", file: file, line: line)
                XCTAssertEqual(row["result_code"] as? Int, 6, "\(target): \(row)", file: file, line: line)
                XCTAssertEqual(row["sent"] as? Int, sent, "\(target): \(row)", file: file, line: line)
                XCTAssertEqual(row["too_big"] as? Int, sent, "\(target): every echo of every round is too big, not only the first: \(row)", file: file, line: line)
                XCTAssertEqual(row["received"] as? Int, 0, "\(target): \(row)", file: file, line: line)
                XCTAssertEqual(row["path_mtu"] as? Int, mtu[target], "\(target): \(row)", file: file, line: line)
            }
        }
    }

    func testRunWithDontFragmentWritesTooBigAndThePathMTUOfEveryRound() throws {
        let network = try DFNetwork.make()
        try network.waitUntilSmallPacketsPass()
        let influx = try DFInfluxInNamespace(network: network)
        let directory = try TestEnvironment.temporaryDirectory("netprobe-df-run")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (v4, v6) = (network.destination4, network.destination6)
        let icmp = "interval: 500ms, count: 3, spacing: 20ms, timeout: 1s"

        // 1472 bytes of payload: a 1500-byte IPv4 packet, which leaves the prober's 1500-byte
        // link and meets the router's 1400. As IPv6 (40-byte header) it is 1520 bytes, too
        // large for the prober's own interface: a local EMSGSIZE naming that MTU.
        let large = try run(probe: "df-1472", icmp: "{\(icmp), size: 1472, dont_fragment: true}", targets: [v4, v6], rounds: 3,
                            network: network, influx: influx, directory: directory)
        assertEveryEchoTooBig(large, mtu: [v4: network.narrowMTU, v6: 1500], sent: 3)

        // 1452 bytes: 1480 as IPv4, 1500 as IPv6; both leave and the router answers both.
        let fitsHere = try run(probe: "df-1452", icmp: "{\(icmp), size: 1452, dont_fragment: true}", targets: [v4, v6], rounds: 2,
                               network: network, influx: influx, directory: directory)
        assertEveryEchoTooBig(fitsHere, mtu: [v4: network.narrowMTU, v6: network.narrowMTU], sent: 3)

        // The same 1472 bytes with dont_fragment false: the router fragments IPv4 and every
        // echo is answered; the points say so (too_big 0) and name no MTU.
        let fragmented = try run(probe: "df-off", icmp: "{\(icmp), size: 1472, dont_fragment: false}", targets: [v4], rounds: 2,
                                 network: network, influx: influx, directory: directory)
        for row in fragmented[v4] ?? [] {
            XCTAssertEqual(row["result"] as? String, "ok", "\(row)")
            XCTAssertEqual(row["received"] as? Int, 3, "\(row)")
            XCTAssertEqual(row["too_big"] as? Int, 0, "\(row)")
            XCTAssertNil(row["path_mtu"], "\(row)")
        }
    }

    /// The exporter's metrics as name (with labels) -> value.
    func metrics(_ body: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        return values
    }

    func testProbeModuleWithDontFragmentReportsThePathMTUAndASmallerSizePasses() throws {
        let network = try DFNetwork.make()
        try network.waitUntilSmallPacketsPass()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-df-probe")
        defer { try? FileManager.default.removeItem(at: directory) }
        let listen = "127.0.0.1:19156"
        let config = directory.appendingPathComponent("netprobe.yaml").path
        try """
            probe: df-exporter
            targets: {ping: null, tcp: null}
            prometheus:
              listen: \(listen)
              probe:
                allow: ["198.18.221.0/24", "2001:db8:221::/64"]
                modules:
                  icmp_1472: {prober: icmp, count: 3, spacing: 20ms, timeout: 2s, dont_fragment: true, size: 1472}
                  icmp_1600: {prober: icmp, timeout: 2s, dont_fragment: true, size: 1600}
                  icmp6_1452: {prober: icmp, family: ipv6, count: 3, spacing: 20ms, timeout: 2s, dont_fragment: true, size: 1452}
                  icmp6_1352: {prober: icmp, family: ipv6, timeout: 2s, dont_fragment: true, size: 1352}
                  icmp_1300: {prober: icmp, count: 3, spacing: 20ms, timeout: 2s, dont_fragment: true, size: 1300}
                  icmp_blackbox: {prober: icmp, timeout: 2s, dont_fragment: true, payload_size: 1372}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let running = try Harness.start(["ip", "netns", "exec", network.prober, netprobe, "run", "--config", config])
        defer { if running.process.isRunning { kill(running.process.processIdentifier, SIGKILL) } }
        let listening = TestEnvironment.eventually(within: 60, every: 0.2) { (try? network.http("http://\(listen)/metrics").status) == 200 }
        XCTAssertTrue(listening, "the exporter answers: \(running.errorSoFar.suffix(2000))")

        func probe(_ module: String, target: String? = nil) throws -> [String: Double] {
            let (status, body) = try network.http("http://\(listen)/probe?target=\(target ?? network.destination4)&module=\(module)")
            XCTAssertEqual(status, 200, "\(module): \(body)")
            return metrics(body)
        }
        // 1472 + 28 = 1500 bytes: more than the router's 1400-byte link.
        let tooBig = try probe("icmp_1472")
        XCTAssertEqual(tooBig["probe_success"], 0, "\(tooBig)")
        XCTAssertEqual(tooBig["probe_icmp_path_mtu_bytes"], Double(network.narrowMTU), "\(tooBig)")
        // 1372 + 28 = 1400 bytes: exactly the narrow link's MTU, so it passes (blackbox's key name).
        let exact = try probe("icmp_blackbox")
        XCTAssertEqual(exact["probe_success"], 1, "\(exact)")
        XCTAssertNil(exact["probe_icmp_path_mtu_bytes"], "nothing was too big: \(exact)")
        let fits = try probe("icmp_1300")
        XCTAssertEqual(fits["probe_success"], 1, "\(fits)")
        XCTAssertNil(fits["probe_icmp_path_mtu_bytes"], "nothing was too big: \(fits)")
        // Asked again, with the host's path-MTU cache now holding 1400: the same answer.
        let again = try probe("icmp_1472")
        XCTAssertEqual(again["probe_success"], 0, "\(again)")
        XCTAssertEqual(again["probe_icmp_path_mtu_bytes"], Double(network.narrowMTU), "\(again)")

        // 1600 + 28 bytes do not fit this host's own 1500-byte link: a local EMSGSIZE, whose
        // MTU the exporter reports the same way.
        let local = try probe("icmp_1600")
        XCTAssertEqual(local["probe_success"], 0, "\(local)")
        XCTAssertEqual(local["probe_icmp_path_mtu_bytes"], 1500, "\(local)")
        // IPv6: 1452 + 48 = 1500 bytes leave, and the router answers "packet too big"; 1352 +
        // 48 = 1400 pass.
        let tooBig6 = try probe("icmp6_1452", target: network.destination6)
        XCTAssertEqual(tooBig6["probe_success"], 0, "\(tooBig6)")
        XCTAssertEqual(tooBig6["probe_icmp_path_mtu_bytes"], Double(network.narrowMTU), "\(tooBig6)")
        let exact6 = try probe("icmp6_1352", target: network.destination6)
        XCTAssertEqual(exact6["probe_success"], 1, "\(exact6)")
        XCTAssertNil(exact6["probe_icmp_path_mtu_bytes"], "\(exact6)")

        kill(running.process.processIdentifier, SIGTERM)
        let result = try Harness.finish(running, timeout: 60)
        XCTAssertEqual(result.status, 0, result.standardError)
    }

    func testCheckWithDashMDoCallsAPathTooNarrowForTheProbesANetworkFinding() throws {
        let network = try DFNetwork.make()
        try network.waitUntilSmallPacketsPass()
        let result = try network.exec([netprobe, "check", "-M", "do", "-s", "1472", "--duration", "2s", "--max-duration", "10s", "--json", network.destination4], timeout: 120)
        XCTAssertEqual(result.status, 1, "a network finding: \(result.standardOutput)\n\(result.standardError)")
        let lines = try result.jsonLines()
        XCTAssertEqual(lines.count, 1, result.standardOutput)
        let verdict = try XCTUnwrap(lines.first)
        XCTAssertEqual(verdict["target"] as? String, network.destination4)
        XCTAssertEqual(verdict["verdict"] as? String, "network", "\(verdict)")
        XCTAssertEqual(verdict["reason"] as? String, "too_big", "\(verdict)")
        let summary = try XCTUnwrap(verdict["summary"] as? String)
        XCTAssertTrue(summary.contains("the path MTU is 1400 bytes"), summary)
        let icmp = try XCTUnwrap(verdict["icmp"] as? [String: Any], "\(verdict)")
        let sent = try XCTUnwrap(icmp["sent"] as? Int)
        XCTAssertGreaterThan(sent, 0)
        XCTAssertEqual(icmp["too_big"] as? Int, sent, "every echo too big: \(icmp)")
        XCTAssertEqual(icmp["path_mtu"] as? Int, network.narrowMTU, "\(icmp)")
        XCTAssertEqual(icmp["result"] as? String, "too_big", "\(icmp)")
        XCTAssertEqual(icmp["pmtu_discovery"] as? String, "do", "\(icmp)")
        XCTAssertEqual(icmp["loss_percent"] as? Double, 100, "the round's own figure: nothing came back")
        let loss = try XCTUnwrap(verdict["loss"] as? [String: Any], "\(verdict)")
        XCTAssertEqual(loss["probes"] as? Int, loss["trace_probes"] as? Int, "the too-big echoes are not counted as lost: \(loss)")
        XCTAssertTrue(summary.contains("\(sent) of \(sent) don't-fragment echo requests too big"), summary)

        // IPv6: 1452 + 48 = 1500 bytes leave this host; the router answers "packet too big".
        let v6 = try network.exec([netprobe, "check", "-M", "do", "-s", "1452", "--duration", "2s", "--max-duration", "10s", "--json", network.destination6], timeout: 120)
        XCTAssertEqual(v6.status, 1, "\(v6.standardOutput)\n\(v6.standardError)")
        let verdict6 = try XCTUnwrap(try v6.jsonLines().first, v6.standardError)
        XCTAssertEqual(verdict6["verdict"] as? String, "network", "\(verdict6)")
        XCTAssertEqual(verdict6["reason"] as? String, "too_big", "\(verdict6)")
        let icmp6 = try XCTUnwrap(verdict6["icmp"] as? [String: Any], "\(verdict6)")
        XCTAssertEqual(icmp6["path_mtu"] as? Int, network.narrowMTU, "\(icmp6)")
        XCTAssertEqual(icmp6["too_big"] as? Int, icmp6["sent"] as? Int, "\(icmp6)")

        // A size that fits the narrow link: the same path is fine.
        let fits = try network.exec([netprobe, "check", "-M", "do", "-s", "1300", "--duration", "2s", "--max-duration", "10s", "--json", network.destination4], timeout: 120)
        let fine = try XCTUnwrap(try fits.jsonLines().first, fits.standardError)
        XCTAssertNotEqual(fine["reason"] as? String, "too_big", "\(fine)")
        let fineICMP = try XCTUnwrap(fine["icmp"] as? [String: Any], "\(fine)")
        XCTAssertEqual(fineICMP["too_big"] as? Int, 0, "\(fineICMP)")
        XCTAssertEqual(fineICMP["received"] as? Int, fineICMP["sent"] as? Int, "\(fineICMP)")
    }
}
