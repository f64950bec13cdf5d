import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe run` end to end: real probes on loopback, real influxd servers, real signals.
final class RunIntegrationTests: XCTestCase {
    var netprobe: String { Harness.netprobePath }

    /// Names that need every escaping rule of the line protocol (InfluxDB 1.x cannot keep a
    /// backslash before a comma, '=', space or quote, so the one here precedes a letter).
    static let hostileEnv = "prod, dc=1 \"east\" a\\b ü"
    static let hostileTarget = "bad host, id=\"7\" c\\d 🛰"

    /// A scratch directory with a config and targets files.
    struct Setup {
        let directory: URL
        var config: String { directory.appendingPathComponent("netprobe.yaml").path }
        var spool: String { directory.appendingPathComponent("spool").path }
    }

    func makeSetup(servers: [InfluxDBTestServer], tcpOpen: UInt16, tcpClosed: UInt16, interval: String = "1s") throws -> Setup {
        let directory = try TestEnvironment.temporaryDirectory("netprobe-run")
        let quote: (String) -> String = { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        try """
            \(quote(Self.hostileEnv)): ["127.0.0.1"]
            local: ["::1", \(quote(Self.hostileTarget))]
            """.write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        try """
            local:
              127.0.0.1: [\(tcpOpen), \(tcpClosed)]
            """.write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        let influx = servers.enumerated().map { index, server in
            """
              - name: server\(index)
                url: \(server.url.absoluteString)
                database: netprobe
                gzip: \(index == 0)
            """
        }.joined(separator: "\n")
        try """
            probe: e2e-probe
            targets: {ping: ping.yaml, tcp: tcp.yaml}
            icmp: {interval: \(interval), count: 2, spacing: 50ms, timeout: 300ms}
            tcp: {interval: \(interval), count: 2, spacing: 50ms, timeout: 300ms}
            resolve_interval: 1h
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 200ms}
            influxdb:
            \(influx)
            """.write(to: directory.appendingPathComponent("netprobe.yaml"), atomically: true, encoding: .utf8)
        // Name lookups go to 127.0.0.1 (nothing answers): the unresolvable target must not
        // send a DNS query off this machine.
        try "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".write(to: directory.appendingPathComponent("resolv.conf"), atomically: true, encoding: .utf8)
        return Setup(directory: directory)
    }

    /// Starts `netprobe run` in a private mount namespace whose /etc/resolv.conf points at
    /// loopback.
    func startRun(_ setup: Setup) throws -> RunningProcess {
        try Harness.requireTools(["unshare"])
        let resolv = setup.directory.appendingPathComponent("resolv.conf").path
        return try Harness.start(["unshare", "-m", "--", "sh", "-c",
                                  "mount --bind \"$1\" /etc/resolv.conf && exec \"$2\" run --config \"$3\"", "sh", resolv, netprobe, setup.config])
    }

    /// SIGTERM and the exit status (0). How long the exit took is printed: the 5 s of the
    /// README is a design target that a busy machine cannot be held to in a test.
    func stop(_ running: RunningProcess) throws -> CommandResult {
        kill(running.process.processIdentifier, SIGTERM)
        let started = Date()
        let result = try Harness.finish(running, timeout: 60)
        print("run: exited \(String(format: "%.2f", Date().timeIntervalSince(started))) s after SIGTERM")
        XCTAssertEqual(result.status, 0, result.standardError)
        return result
    }

    /// Waits until the server has `count` rounds of each ICMP target and each TCP port.
    func waitForRounds(_ server: InfluxDBTestServer, _ count: Int, ports: [UInt16]) async throws -> Bool {
        try await TestEnvironment.eventually(within: 60) {
            for target in ["127.0.0.1", "::1", Self.hostileTarget] {
                let rows = try await self.rows(server, "SELECT count(result_code) FROM icmp WHERE target = \(Self.influxString(target))")
                if (rows.first?["count"] as? Int ?? 0) < count { return false }
            }
            for port in ports {
                let rows = try await self.rows(server, "SELECT count(result_code) FROM tcp WHERE port = '\(port)'")
                if (rows.first?["count"] as? Int ?? 0) < count { return false }
            }
            return true
        }
    }

    func rows(_ server: InfluxDBTestServer, _ query: String) async throws -> [[String: Any]] {
        try await Harness.rows(server, query)
    }

    static func influxString(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    func testRunWritesEveryRoundWithTheSchemaAndHostileNamesRoundTrip() async throws {
        try Harness.requireRoot()
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("netprobe")
        let listener = try TCPIntegrationTests.Listener()
        let closed = try TCPIntegrationTests.closedPort()
        let setup = try makeSetup(servers: [server], tcpOpen: listener.port, tcpClosed: closed)
        let running = try startRun(setup)
        let enough = try await waitForRounds(server, 5, ports: [listener.port, closed])
        XCTAssertTrue(enough, "five rounds of every target")
        _ = try stop(running)

        let icmp = try await rows(server, "SELECT * FROM icmp WHERE target = '127.0.0.1' ORDER BY time")
        XCTAssertGreaterThanOrEqual(icmp.count, 5)
        try await Harness.checkNoRoundMissing(server, target: "127.0.0.1", after: Date(timeIntervalSince1970: 0))
        for row in icmp {
            XCTAssertEqual(row["probe"] as? String, "e2e-probe")
            XCTAssertEqual(row["env"] as? String, Self.hostileEnv, "env round-trips exactly")
            XCTAssertEqual(row["address"] as? String, "127.0.0.1")
            XCTAssertEqual(row["family"] as? String, "ipv4")
            XCTAssertEqual(row["sent"] as? Int, 2)
            XCTAssertEqual(row["received"] as? Int, 2)
            XCTAssertEqual(row["duplicates"] as? Int, 0)
            XCTAssertEqual(row["late"] as? Int, 0)
            XCTAssertEqual(row["loss_percent"] as? Double, 0)
            XCTAssertEqual(row["result"] as? String, "ok")
            XCTAssertEqual(row["result_code"] as? Int, 0)
            XCTAssertEqual(row["ttl"] as? Int, 64)
            for field in ["rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_median_ms", "rtt_stddev_ms", "jitter_ms"] {
                let value = try XCTUnwrap(row[field] as? Double, field)
                XCTAssertGreaterThanOrEqual(value, 0, field)
            }
            XCTAssertGreaterThan(try XCTUnwrap(row["rtt_min_ms"] as? Double), 0)
        }
        let ipv6 = try await rows(server, "SELECT * FROM icmp WHERE target = '::1'")
        XCTAssertGreaterThanOrEqual(ipv6.count, 5)
        XCTAssertTrue(ipv6.allSatisfy { $0["family"] as? String == "ipv6" && $0["env"] as? String == "local" })

        let unresolved = try await rows(server, "SELECT * FROM icmp WHERE target = \(Self.influxString(Self.hostileTarget))")
        XCTAssertGreaterThanOrEqual(unresolved.count, 5, "the hostile target name round-trips exactly, a row every round")
        for row in unresolved {
            XCTAssertEqual(row["result"] as? String, "unresolved")
            XCTAssertEqual(row["result_code"] as? Int, 3)
            XCTAssertNil(row["address"], "no address tag while unresolved")
            XCTAssertNil(row["rtt_avg_ms"], "RTT fields are omitted when nothing was received")
        }

        let open = try await rows(server, "SELECT * FROM tcp WHERE port = '\(listener.port)'")
        XCTAssertGreaterThanOrEqual(open.count, 5)
        for row in open {
            XCTAssertEqual(row["result"] as? String, "ok")
            XCTAssertEqual(row["received"] as? Int, 2)
            XCTAssertNil(row["ttl"], "tcp has no ttl")
            XCTAssertGreaterThan(try XCTUnwrap(row["rtt_median_ms"] as? Double), 0)
            XCTAssertEqual(row["mode"] as? String, "half-open", "the mode tag; half-open by default")
            XCTAssertEqual(row["completed"] as? Int, 0)
        }
        XCTAssertEqual(listener.acceptQueued().count, 0, "run's half-open probes never reached the listener's application")
        let refused = try await rows(server, "SELECT * FROM tcp WHERE port = '\(closed)'")
        XCTAssertGreaterThanOrEqual(refused.count, 5)
        XCTAssertTrue(refused.allSatisfy { $0["result"] as? String == "refused" && $0["result_code"] as? Int == 5 && $0["received"] as? Int == 0 })

        let monitoring = try await rows(server, "SELECT * FROM netprobe WHERE server = 'server0'")
        XCTAssertFalse(monitoring.isEmpty, "self-monitoring points")
        XCTAssertGreaterThan(monitoring.compactMap { $0["points_written"] as? Int }.max() ?? 0, 0)
        let own = try await rows(server, "SELECT * FROM netprobe WHERE server = ''")
        XCTAssertGreaterThan(own.compactMap { $0["kernel_timestamps"] as? Int }.reduce(0, +), 0)
        XCTAssertTrue(own.allSatisfy { $0["schedule_slip_max_ms"] is Double }, "schedule slip is reported")
        print("run: schedule_slip_max_ms per monitoring point: \(own.compactMap { $0["schedule_slip_max_ms"] as? Double })")
    }

    func icmpTimes(_ server: InfluxDBTestServer) async throws -> [Int64] {
        try await rows(server, "SELECT received FROM icmp WHERE target = '127.0.0.1' ORDER BY time").compactMap { ($0["time"] as? NSNumber)?.int64Value }
    }

    func testAServerDownForThreeRoundsCatchesUpWithoutGapsOrDuplicatesAndTheOtherIsNotDelayed() async throws {
        try Harness.requireRoot()
        let healthy = try await InfluxDBTestServer.start()
        let flaky = try await InfluxDBTestServer.start()
        for server in [healthy, flaky] { try await server.createDatabase("netprobe") }
        let listener = try TCPIntegrationTests.Listener()
        let setup = try makeSetup(servers: [healthy, flaky], tcpOpen: listener.port, tcpClosed: try TCPIntegrationTests.closedPort())
        let running = try startRun(setup)
        let started = try await TestEnvironment.eventually(within: 60) { try await self.icmpTimes(flaky).count >= 2 }
        XCTAssertTrue(started, "both servers get rounds")
        flaky.stop()
        let before = try await icmpTimes(healthy).count
        let kept = try await TestEnvironment.eventually(within: 60) { try await self.icmpTimes(healthy).count >= before + 3 }
        XCTAssertTrue(kept, "the healthy server kept receiving rounds while the other was down")
        try await flaky.restart()
        let back = try await icmpTimes(healthy).count
        let more = try await TestEnvironment.eventually(within: 60) { try await self.icmpTimes(healthy).count >= back + 2 }
        XCTAssertTrue(more)
        _ = try stop(running)
        let expected = try await icmpTimes(healthy)
        // The restarted server catches up from the spool (with backoff, maybe after the stop).
        var caughtUp: [Int64] = []
        _ = try await TestEnvironment.eventually(within: 30) {
            caughtUp = try await self.icmpTimes(flaky)
            return Set(caughtUp).isSuperset(of: Set(expected))
        }
        if !Set(caughtUp).isSuperset(of: Set(expected)) {
            // What netprobe could not send before exiting stays spooled: a second run sends it.
            let again = try startRun(setup)
            _ = try await TestEnvironment.eventually(within: 60) {
                caughtUp = try await self.icmpTimes(flaky)
                return Set(caughtUp).isSuperset(of: Set(expected))
            }
            _ = try stop(again)
            caughtUp = try await icmpTimes(flaky)
        }
        XCTAssertGreaterThanOrEqual(expected.count, 7)
        XCTAssertEqual(Set(caughtUp).isSuperset(of: Set(expected)), true, "every round reached the restarted server")
        XCTAssertEqual(caughtUp.count, Set(caughtUp).count, "no duplicates")
        try await Harness.checkNoRoundMissing(healthy, target: "127.0.0.1", after: Date(timeIntervalSince1970: 0))
    }

    func testRoundsSpooledBeforeASIGKILLArriveAfterTheRestart() async throws {
        try Harness.requireRoot()
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("netprobe")
        let listener = try TCPIntegrationTests.Listener()
        let setup = try makeSetup(servers: [server], tcpOpen: listener.port, tcpClosed: try TCPIntegrationTests.closedPort())
        server.stop()
        let killed = try startRun(setup)
        // Killed once three rounds of 127.0.0.1 are on disk (the spool files say so).
        let spooled = TestEnvironment.eventually(within: 60) { self.spooledRounds(setup, target: "127.0.0.1") >= 3 }
        XCTAssertTrue(spooled, "three rounds spooled")
        let killedAt = Date()
        kill(killed.process.processIdentifier, SIGKILL)
        _ = try Harness.finish(killed, timeout: 10)
        try await server.restart()
        let again = try startRun(setup)
        var times: [Int64] = []
        _ = try await TestEnvironment.eventually(within: 60) {
            times = try await self.icmpTimes(server)
            return times.filter { Double($0) / 1e9 < killedAt.timeIntervalSince1970 }.count >= 3
        }
        _ = try stop(again)
        let beforeKill = times.filter { Double($0) / 1e9 < killedAt.timeIntervalSince1970 }
        XCTAssertGreaterThanOrEqual(beforeKill.count, 3, "the rounds of the killed run came out of the spool")
    }

    /// ICMP lines of `target` in the spool files of server0.
    func spooledRounds(_ setup: Setup, target: String) -> Int {
        let directory = setup.spool + "/server0"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".lp") && $0 != "dead-letter.lp" }.reduce(0) { total, name in
            let text = (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? ""
            return total + text.split(separator: "\n").filter { $0.hasPrefix("icmp,") && $0.contains(",target=\(target) ") }.count
        }
    }

    func testInvalidConfigIsRefusedWithFileLineColumnAndExitTwo() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ProbeConfigTests/Fixtures")
        let config = fixtures.appendingPathComponent("invalid-bad-duration.yaml").path
        let validate = try Harness.run([netprobe, "validate", "--config", config])
        XCTAssertEqual(validate.status, 2)
        XCTAssertTrue(validate.standardError.contains("\(config):"), validate.standardError)
        XCTAssertTrue(validate.standardError.contains(": error: interval must be a duration, got 'fast'"), validate.standardError)
        let run = try Harness.run([netprobe, "run", "--config", config])
        XCTAssertEqual(run.status, 2)
        XCTAssertTrue(run.standardError.contains(": error: interval must be a duration, got 'fast'"), run.standardError)
        let valid = try Harness.run([netprobe, "validate", "--config", fixtures.appendingPathComponent("valid-minimal.yaml").path])
        XCTAssertEqual(valid.status, 0, valid.standardError)
    }

    func lines(_ running: RunningProcess, target: String) -> Int {
        running.outputSoFar.split(separator: "\n").filter { $0.contains("\"target\":\"\(target)\"") }.count
    }

    func testSIGHUPReloadsTheTargetsAndKeepsTheOldConfigWhenTheNewOneIsInvalid() async throws {
        try Harness.requireRoot()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-reload")
        let config = directory.appendingPathComponent("netprobe.yaml")
        let targets = directory.appendingPathComponent("ping.yaml")
        let valid = """
            probe: reload-test
            targets: {ping: ping.yaml, tcp: null}
            icmp: {interval: 500ms, count: 1, spacing: 10ms, timeout: 200ms}
            """
        try valid.write(to: config, atomically: true, encoding: .utf8)
        try "local: [127.0.0.1]\n".write(to: targets, atomically: true, encoding: .utf8)
        let running = try Harness.start([netprobe, "run", "--config", config.path, "--output", "json"])
        let pid = running.process.processIdentifier
        let first = TestEnvironment.eventually(within: 60) { self.lines(running, target: "127.0.0.1") > 0 }
        XCTAssertTrue(first, "rounds for the first target")

        try "local: [127.0.0.1, 127.0.0.2]\n".write(to: targets, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        let added = TestEnvironment.eventually(within: 60) { self.lines(running, target: "127.0.0.2") > 0 }
        XCTAssertTrue(added, "SIGHUP reloaded the targets: \(running.outputSoFar.suffix(400))")

        try (valid + "\nicmp: {interval: fast}\n").write(to: config, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        let refused = TestEnvironment.eventually(within: 60) { running.errorSoFar.contains("the new config is invalid; keeping the old one") }
        XCTAssertTrue(refused, running.errorSoFar)
        let before = lines(running, target: "127.0.0.2")
        let goesOn = TestEnvironment.eventually(within: 60) { self.lines(running, target: "127.0.0.2") >= before + 2 }
        XCTAssertTrue(running.process.isRunning, "an invalid new config does not stop netprobe")
        XCTAssertTrue(goesOn, "probing goes on with the old config")
        _ = try stop(running)
    }

    func testAChangedAddressIsPickedUpByTheNextResolution() async throws {
        try Harness.requireRoot()
        try Harness.requireTools(["unshare"])
        let directory = try TestEnvironment.temporaryDirectory("netprobe-resolve")
        let hosts = directory.appendingPathComponent("hosts")
        try "127.0.0.1 moving-target.test\n".write(to: hosts, atomically: false, encoding: .utf8)
        try "local: [moving-target.test]\n".write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("netprobe.yaml")
        try """
            targets: {ping: ping.yaml, tcp: null}
            icmp: {interval: 300ms, count: 1, spacing: 10ms, timeout: 200ms}
            resolve_interval: 1s
            """.write(to: config, atomically: true, encoding: .utf8)
        // The name lives in a hosts file of the test's own, bind-mounted over /etc/hosts in a
        // private mount namespace; rewriting it in place moves the name to another address.
        let running = try Harness.start(["unshare", "-m", "--", "sh", "-c", "mount --bind \"$1\" /etc/hosts && exec \"$2\" run --config \"$3\" --output json",
                                         "sh", hosts.path, netprobe, config.path])
        let onFirst = TestEnvironment.eventually(within: 60) { running.outputSoFar.contains("\"address\":\"127.0.0.1\"") }
        XCTAssertTrue(onFirst, running.outputSoFar)
        let handle = try FileHandle(forWritingTo: hosts)
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data("127.0.0.3 moving-target.test\n".utf8))
        try handle.close()
        let moved = TestEnvironment.eventually(within: 60) { running.outputSoFar.contains("\"address\":\"127.0.0.3\"") }
        XCTAssertTrue(moved, "the new address shows in the address tag: \(running.outputSoFar.suffix(300))")
        _ = try stop(running)
    }
}
