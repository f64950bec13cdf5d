import Foundation
import InfluxSink
import Logging
@testable import NetSim
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import TestSupport
import XCTest

/// Acceptance 5: `run` with traces writes `hop` and `path` points to a real influxd, and a
/// path that changes at run time (netsim's rules swapped by SIGHUP) shows as a new `path`
/// point from the first trace after the change. The service runs in this process on raw
/// sockets opened inside the simulator's namespace; influxd listens on this namespace's
/// loopback, where the sink (in this process's namespace) reaches it.
final class TracedRunTests: XCTestCase {
    func rules(routers: [String]) -> String {
        """
        rules:
          - prefix: 198.18.80.0/24
            path: \(routers.joined(separator: ","))
        """
    }

    func testRunWritesHopAndPathPointsAndAPathChangeShowsInTheFirstTraceAfterIt() throws {
        try SimulatorHarness.requirePrivileges()
        let directory = try TestEnvironment.temporaryDirectory("traced-run")
        let rulesFile = directory.appendingPathComponent("rules.yaml")
        let before = ["198.18.140.1", "198.18.140.2"], after = ["198.18.140.1", "198.18.141.2", "198.18.141.3"]
        try rules(routers: before).write(to: rulesFile, atomically: true, encoding: .utf8)
        let server = try TestEnvironment.blocking { try await InfluxDBTestServer.start() }
        defer { server.stop() }
        try TestEnvironment.blocking { try await server.createDatabase("netprobe") }
        let configPath = try TestEnvironment.writeRunConfig(in: directory, probe: "traced", pingTargets: "sim: [198.18.80.9]\n", sections: [
            "icmp: {interval: 1s, count: 2, spacing: 100ms, timeout: 300ms}",
            "trace: {icmp: 2s, rounds: 3, spacing: 100ms, timeout: 300ms, max_hops: 8}",
        ], influxPort: server.port)
        let configuration = try ConfigurationLoader.load(path: configPath)
        XCTAssertEqual(configuration.trace.icmpIntervalNanoseconds, 2_000_000_000)

        let netsim = try SimulatorHarness.binary("netsim")
        _ = try SimulatedNetwork.run(rules: [], netsimPath: netsim, extraArguments: ["--config", rulesFile.path, "--seed", "5"]) { namespace, simulator in
            let logger = Logger(label: "traced-run")
            let (icmp, path) = try NetworkNamespace.perform(inNamespace: namespace) {
                (try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger), try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger))
            }
            let service = ProbeService(configuration: configuration, icmpSockets: icmp, sinks: { try InfluxSink.make(for: $0, logger: $1) }, logger: logger, pathSockets: path)
            let (control, send) = AsyncStream<ServiceControl>.makeStream()
            let running = Task.detached { try await service.run(control: control) }
            defer {
                send.yield(.stop)
                send.finish()
                _ = try? TestEnvironment.blocking { try await running.value }
            }

            /// The `path` points so far: (time, hash, hop_count, hops, ending).
            func paths() throws -> [(time: Int64, hash: String, count: Int, hops: String, ending: String)] {
                try TestEnvironment.blocking {
                    let series = try await server.series("SELECT \"hash\", \"hop_count\", \"hops\", \"ending\" FROM \"path\" WHERE \"target\" = '198.18.80.9'", database: "netprobe")
                    return ((series.first?["values"] as? [[Any]]) ?? []).map { row in
                        ((row[0] as? NSNumber)?.int64Value ?? 0, row[1] as? String ?? "", (row[2] as? NSNumber)?.intValue ?? 0, row[3] as? String ?? "", row[4] as? String ?? "")
                    }
                }
            }
            func traceTimes() throws -> [Int64] { try server.traceStartTimes(target: "198.18.80.9") }
            func eventually(_ what: String, _ condition: () throws -> Bool) throws {
                guard try TestEnvironment.eventually(within: 60, every: 0.1, condition) else { return XCTFail("gave up waiting: \(what)") }
            }

            try eventually("the first path point") { try !paths().isEmpty }
            let first = try XCTUnwrap(try paths().first)
            XCTAssertEqual(first.ending, "reached", "the path point says how the path ended")
            XCTAssertEqual(first.count, 3, "two routers and the destination")
            XCTAssertEqual(first.hops, (before + ["198.18.80.9"]).joined(separator: ","))
            try eventually("two more traces") { try traceTimes().count >= 3 }
            XCTAssertEqual(try paths().count, 1, "an unchanged path writes no new path point")
            let hops = try TestEnvironment.blocking {
                try await server.series("SELECT \"loss_percent\", \"received\" FROM \"hop\" WHERE \"target\" = '198.18.80.9' GROUP BY \"hop\", \"hop_address\"", database: "netprobe")
            }
            let tagged = Set(hops.compactMap { ($0["tags"] as? [String: String]).map { "\($0["hop"] ?? "?")=\($0["hop_address"] ?? "?")" } })
            XCTAssertEqual(tagged, ["1=198.18.140.1", "2=198.18.140.2", "3=198.18.80.9"])

            // Swap the rule: the path now has three routers, two of them new.
            try rules(routers: after).write(to: rulesFile, atomically: true, encoding: .utf8)
            let reloadSentAt = Int64(Date().timeIntervalSince1970 * 1e9)
            simulator.reload()
            try eventually("netsim's reload") { simulator.standardError.contains("reloaded 1 rules") }
            let changedAt = Int64(Date().timeIntervalSince1970 * 1e9)
            let newHops = (after + ["198.18.80.9"]).joined(separator: ",")
            try eventually("a path point of the new path") { try paths().contains { $0.hops == newHops } }
            let points = try paths()
            let second = try XCTUnwrap(points.first { $0.hops == newHops })
            XCTAssertNotEqual(second.hash, first.hash)
            XCTAssertEqual(second.count, 4)
            for point in points where point.time < reloadSentAt { XCTAssertEqual(point.hops, first.hops, "before the change, the old path") }
            // A trace under way at the change may mix both paths (its own point); the first
            // trace started after the change has the new one: within one trace interval.
            try eventually("a trace started after the change") { try traceTimes().contains { $0 > changedAt } }
            let firstTraceAfterChange = try XCTUnwrap(try traceTimes().first { $0 > changedAt })
            XCTAssertLessThanOrEqual(second.time, firstTraceAfterChange, "the new path is written by the first trace after the change at the latest")
            XCTAssertGreaterThan(second.time, reloadSentAt)
        }
    }
}
