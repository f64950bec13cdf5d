import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe run` through reloads and address changes, end to end into a real influxd:
/// every point a whole round, every target's points exactly one interval apart.
final class ReloadIntegrationTests: XCTestCase {
    var netprobe: String { Harness.netprobePath }
    static let intervalNanoseconds: Int64 = 500_000_000

    func writeConfig(_ directory: URL, server: InfluxDBTestServer, resolveInterval: String = "1h") throws -> String {
        let config = directory.appendingPathComponent("netprobe.yaml")
        try """
            probe: reload-e2e
            targets: {ping: ping.yaml, tcp: null}
            icmp: {interval: 500ms, count: 3, spacing: 50ms, timeout: 200ms}
            resolve_interval: \(resolveInterval)
            spool: {directory: spool, max_size: 64MB}
            batch: {size: 100, flush_interval: 100ms}
            influxdb:
              - name: e2e
                url: \(server.url.absoluteString)
                database: netprobe
            """.write(to: config, atomically: true, encoding: .utf8)
        return config.path
    }

    /// Every icmp point of the run, by target, in time order.
    func points(_ server: InfluxDBTestServer) async throws -> [String: [[String: Any]]] {
        let rows = try await Harness.rows(server, "SELECT * FROM icmp GROUP BY target ORDER BY time")
        return Dictionary(grouping: rows) { $0["target"] as? String ?? "" }
    }

    func times(_ rows: [[String: Any]]?) -> [Int64] {
        (rows ?? []).compactMap { ($0["time"] as? NSNumber)?.int64Value }
    }

    /// Waits until `target` has at least `count` points in InfluxDB.
    func waitForPoints(_ server: InfluxDBTestServer, _ target: String, atLeast count: Int, within seconds: Double = 20) async throws -> Bool {
        try await TestEnvironment.eventually(within: seconds) { self.times(try await self.points(server)[target]).count >= count }
    }

    func assertWholeRoundsOneIntervalApart(_ rows: [[String: Any]]?, _ target: String, file: StaticString = #filePath, line: UInt = #line) {
        let rows = rows ?? []
        XCTAssertTrue(rows.allSatisfy { $0["sent"] as? Int == 3 }, "\(target): every point a whole round of 3: \(rows.map { $0["sent"] ?? "?" })", file: file, line: line)
        let times = self.times(rows)
        let gaps = zip(times, times.dropFirst()).map { $1 - $0 }
        XCTAssertEqual(gaps, Array(repeating: Self.intervalNanoseconds, count: gaps.count),
                       "\(target): consecutive points exactly one interval apart, none missing", file: file, line: line)
    }

    func testTenUnchangedReloadsThenAChangedOneThenSIGTERMMidRoundKeepEveryScheduleWhole() async throws {
        try Harness.requireRoot()
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("netprobe")
        let directory = try TestEnvironment.temporaryDirectory("netprobe-reload-e2e")
        let config = try writeConfig(directory, server: server)
        let targets = directory.appendingPathComponent("ping.yaml")
        try "local: [127.0.0.1, 127.0.0.2]\n".write(to: targets, atomically: true, encoding: .utf8)
        let running = try Harness.start([netprobe, "run", "--config", config])
        let pid = running.process.processIdentifier
        let started = try await waitForPoints(server, "127.0.0.1", atLeast: 2)
        XCTAssertTrue(started, running.errorSoFar)

        // Ten SIGHUPs with the config unchanged, one per new round.
        for _ in 0..<10 {
            let count = times(try await points(server)["127.0.0.1"]).count
            kill(pid, SIGHUP)
            let next = try await waitForPoints(server, "127.0.0.1", atLeast: count + 1)
            XCTAssertTrue(next)
        }
        // Then one that removes 127.0.0.2 and adds 127.0.0.3.
        try "local: [127.0.0.1, 127.0.0.3]\n".write(to: targets, atomically: true, encoding: .utf8)
        let reloadedAt = Int64(Date().timeIntervalSince1970 * 1e9)
        kill(pid, SIGHUP)
        let added = try await waitForPoints(server, "127.0.0.3", atLeast: 3)
        XCTAssertTrue(added, running.errorSoFar)
        let result = try Harness.stopGracefully(running)
        XCTAssertEqual(result.status, 0, result.standardError)

        let byTarget = try await points(server)
        for target in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            assertWholeRoundsOneIntervalApart(byTarget[target], target)
        }
        XCTAssertGreaterThanOrEqual(times(byTarget["127.0.0.1"]).count, 14, "the kept target through eleven reloads")
        let removedAfter = times(byTarget["127.0.0.2"]).filter { $0 > reloadedAt }
        XCTAssertLessThanOrEqual(removedAfter.count, 1, "the removed target stops: at most a round already planned when the reload came")
        let firstAdded = try XCTUnwrap(times(byTarget["127.0.0.3"]).first)
        XCTAssertGreaterThan(firstAdded, reloadedAt, "the added target starts after the reload")
        print("reload e2e: 127.0.0.1 \(times(byTarget["127.0.0.1"]).count) points, 127.0.0.2 \(times(byTarget["127.0.0.2"]).count), "
              + "127.0.0.3 \(times(byTarget["127.0.0.3"]).count) (first \(Double(firstAdded - reloadedAt) / 1e6) ms after the SIGHUP)")
    }

    func testANameThatMovesMovesOnlyItsTargetAndEveryScheduleStaysUnbroken() async throws {
        try Harness.requireRoot()
        try Harness.requireTools(["unshare"])
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("netprobe")
        let directory = try TestEnvironment.temporaryDirectory("netprobe-move-e2e")
        let config = try writeConfig(directory, server: server, resolveInterval: "1s")
        let hosts = directory.appendingPathComponent("hosts")
        try "127.0.0.1 moving.test\n127.0.0.2 steady.test\n".write(to: hosts, atomically: false, encoding: .utf8)
        try "local: [moving.test, steady.test, 127.0.0.4]\n".write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        // The names live in a hosts file of the test's own, bind-mounted over /etc/hosts in a
        // private mount namespace; rewriting it in place moves one name.
        let running = try Harness.start(["unshare", "-m", "--", "sh", "-c", "mount --bind \"$1\" /etc/hosts && exec \"$2\" run --config \"$3\"",
                                         "sh", hosts.path, netprobe, config])
        let started = try await waitForPoints(server, "moving.test", atLeast: 2)
        XCTAssertTrue(started, running.errorSoFar)
        let handle = try FileHandle(forWritingTo: hosts)
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data("127.0.0.3 moving.test\n127.0.0.2 steady.test\n".utf8))
        try handle.close()
        let moved = try await TestEnvironment.eventually(within: 20) {
            (try await self.points(server)["moving.test"] ?? []).filter { $0["address"] as? String == "127.0.0.3" }.count >= 2
        }
        XCTAssertTrue(moved, running.errorSoFar)
        let result = try Harness.stopGracefully(running)
        XCTAssertEqual(result.status, 0, result.standardError)

        let byTarget = try await points(server)
        let addresses = (byTarget["moving.test"] ?? []).map { $0["address"] as? String ?? "" }
        let firstMoved = addresses.firstIndex(of: "127.0.0.3") ?? addresses.count
        XCTAssertEqual(Set(addresses[..<firstMoved]), ["127.0.0.1"])
        XCTAssertEqual(Set(addresses[firstMoved...]), ["127.0.0.3"], "one move, then every round on the new address: \(addresses)")
        for target in ["moving.test", "steady.test", "127.0.0.4"] {
            assertWholeRoundsOneIntervalApart(byTarget[target], target)
        }
        XCTAssertTrue((byTarget["steady.test"] ?? []).allSatisfy { $0["address"] as? String == "127.0.0.2" })
    }
}
