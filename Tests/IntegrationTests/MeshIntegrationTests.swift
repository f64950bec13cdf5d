import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A mesh of three `netprobe run` processes, each in a network namespace of the test's
/// own (198.18.0.1-3 on veth pairs to a bridge in a fourth namespace, which also holds
/// the one influxd at 198.18.0.254). They share one peers file listing all three; each
/// must probe the other two and not itself, and every result reaches the influxd.
/// No namespace has a route beyond its /24, so nothing here can leave the machine.
final class MeshIntegrationTests: XCTestCase {
    struct Failure: Error, CustomStringConvertible { var description: String; init(_ text: String) { description = text } }

    static func check(_ arguments: [String]) throws {
        let result = try Harness.run(arguments, timeout: 60)
        guard result.status == 0 else { throw Failure("\(arguments.joined(separator: " ")): \(result.standardError)") }
    }

    func testEachInstanceProbesTheOtherTwoAndNotItselfIntoOneInfluxd() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "curl"])
        let influxd = try TestEnvironment.requireBinary("influxd", package: "influxdb")
        let tag = String(format: "%05x", UInt32(getpid() % 0xfffff) ^ UInt32.random(in: 0...0xfffff))
        let hub = "np-mesh-\(getpid())-\(tag)-hub"
        let nodes = ["a", "b", "c"]
        let namespaces = nodes.map { "np-mesh-\(getpid())-\(tag)-\($0)" }
        let directory = try TestEnvironment.temporaryDirectory("mesh")
        var processes: [RunningProcess] = []
        defer {
            for process in processes where process.process.isRunning { kill(process.process.processIdentifier, SIGKILL); process.process.waitUntilExit() }
            for namespace in namespaces + [hub] { _ = try? Harness.run(["ip", "netns", "delete", namespace]) }
            try? FileManager.default.removeItem(at: directory)
        }
        for namespace in namespaces + [hub] {
            try Self.check(["ip", "netns", "add", namespace])
            try Self.check(["ip", "-n", namespace, "link", "set", "lo", "up"])
        }
        let bridge = "npbr\(tag)"
        try Self.check(["ip", "-n", hub, "link", "add", bridge, "type", "bridge"])
        try Self.check(["ip", "-n", hub, "addr", "add", "198.18.0.254/24", "dev", bridge])
        try Self.check(["ip", "-n", hub, "link", "set", bridge, "up"])
        for (number, namespace) in namespaces.enumerated() {
            let node = "npm\(tag)\(nodes[number])", port = "npp\(tag)\(nodes[number])"
            try Self.check(["ip", "link", "add", node, "netns", namespace, "type", "veth", "peer", "name", port, "netns", hub])
            try Self.check(["ip", "-n", namespace, "addr", "add", "198.18.0.\(number + 1)/24", "dev", node])
            try Self.check(["ip", "-n", namespace, "link", "set", node, "up"])
            try Self.check(["ip", "-n", hub, "link", "set", port, "master", bridge, "up"])
        }

        // The one influxd, in the hub namespace (its ports are that namespace's own).
        let root = directory.path
        try """
            reporting-disabled = true
            bind-address = "127.0.0.1:8088"
            [meta]
              dir = "\(root)/influx/meta"
            [data]
              dir = "\(root)/influx/data"
              wal-dir = "\(root)/influx/wal"
              query-log-enabled = false
            [http]
              bind-address = "198.18.0.254:8086"
              log-enabled = false
            [monitor]
              store-enabled = false
            """.write(toFile: root + "/influxdb.conf", atomically: true, encoding: .utf8)
        let server = try Harness.start(["ip", "netns", "exec", hub, influxd, "-config", root + "/influxdb.conf"])
        processes.append(server)
        func query(_ statement: String) throws -> [[Any]] {
            let result = try Harness.run(["ip", "netns", "exec", hub, "curl", "-sS", "-G", "http://198.18.0.254:8086/query",
                                          "--data-urlencode", "db=mesh", "--data-urlencode", "q=\(statement)"], timeout: 20)
            guard result.status == 0, let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
                  let results = object["results"] as? [[String: Any]] else { throw Failure("query \(statement): \(result.standardOutput) \(result.standardError)") }
            return (results.first?["series"] as? [[String: Any]] ?? []).flatMap { series -> [[Any]] in
                let tags = series["tags"] as? [String: String] ?? [:]
                return (series["values"] as? [[Any]] ?? []).map { [tags["probe"] ?? "", tags["target"] ?? ""] + $0 }
            }
        }
        XCTAssertTrue(TestEnvironment.eventually(within: 60) { (try? query("CREATE DATABASE mesh")) != nil }, "influxd did not start: \(server.errorSoFar.suffix(2000))")

        // One peers file for all; each instance finds itself in it by its own address.
        try "# the mesh\n198.18.0.1\n198.18.0.2\n198.18.0.3\n".write(toFile: root + "/peers.txt", atomically: true, encoding: .utf8)
        try "mesh: {peers_file: peers.txt}\n".write(toFile: root + "/ping.yaml", atomically: true, encoding: .utf8)
        for (number, namespace) in namespaces.enumerated() {
            let config = root + "/netprobe-\(nodes[number]).yaml"
            try """
                probe: mesh-\(nodes[number])
                targets: {ping: ping.yaml, tcp: null}
                icmp: {interval: 200ms, count: 2, spacing: 20ms, timeout: 150ms}
                influxdb:
                  - {url: "http://198.18.0.254:8086", database: mesh}
                spool: {directory: \(root)/spool-\(nodes[number])}
                batch: {size: 100, flush_interval: 100ms}
                """.write(toFile: config, atomically: true, encoding: .utf8)
            processes.append(try Harness.start(["ip", "netns", "exec", namespace, Harness.netprobePath, "run", "--config", config]))
        }

        let expected: Set<[String]> = [["mesh-a", "198.18.0.2"], ["mesh-a", "198.18.0.3"], ["mesh-b", "198.18.0.1"],
                                       ["mesh-b", "198.18.0.3"], ["mesh-c", "198.18.0.1"], ["mesh-c", "198.18.0.2"]]
        func answered() throws -> Set<[String]> {
            Set(try query("SELECT sum(received) FROM icmp GROUP BY probe, target").compactMap { row in
                guard let received = row.last as? Double, received > 0, let probe = row[0] as? String, let target = row[1] as? String else { return nil }
                return [probe, target]
            })
        }
        let complete = try TestEnvironment.eventually(within: 60) { try answered() == expected }
        let logs = processes.dropFirst().map { String($0.errorSoFar.suffix(1500)) }.joined(separator: "\n---\n")
        let seen = try answered().map { $0.joined(separator: " -> ") }.sorted()
        XCTAssertTrue(complete, "answered pairs: \(seen); logs:\n\(logs)")
        for process in processes.dropFirst() {
            let result = try Harness.stopGracefully(process)
            XCTAssertEqual(result.status, 0, result.standardError.suffix(1500).description)
        }
        // After the stops, every pair there is, and nothing else: no instance probed itself.
        let pairs = Set(try query("SELECT count(sent) FROM icmp GROUP BY probe, target").map { [$0[0] as? String ?? "", $0[1] as? String ?? ""] })
        XCTAssertEqual(pairs, expected)
    }

    /// peers_dns: the peers are every A record of a name (a headless Service's), from the
    /// test's own DNS responder in the test's own namespace, through a private resolv.conf
    /// (no lookup can reach the machine's resolver). The instance leaves out its own
    /// address (127.0.0.1, its loopback) and follows the name's records as they change.
    func testPeersFromADNSNameFollowItsRecordsAndLeaveThisInstanceOut() async throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "unshare"])
        let directory = try TestEnvironment.temporaryDirectory("mesh-dns")
        defer { try? FileManager.default.removeItem(at: directory) }
        let namespace = "np-mesh-dns-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try Harness.run(["ip", "netns", "add", namespace])
        defer { _ = try? Harness.run(["ip", "netns", "delete", namespace]) }
        try Harness.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        let zone = directory.appendingPathComponent("zone")
        try "mesh.test 127.0.0.1\nmesh.test 127.0.0.2\nmesh.test 127.0.0.3\n".write(to: zone, atomically: true, encoding: .utf8)
        let responder = try DNSResponder.start(namespace: namespace, zone: zone)
        defer { kill(responder.process.processIdentifier, SIGKILL) }
        try "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".write(to: directory.appendingPathComponent("resolv.conf"), atomically: true, encoding: .utf8)
        try "hosts: files dns\n".write(to: directory.appendingPathComponent("nsswitch.conf"), atomically: true, encoding: .utf8)
        try "127.0.0.1 localhost\n".write(to: directory.appendingPathComponent("hosts"), atomically: true, encoding: .utf8)
        try "mesh: {peers_dns: mesh.test}\n".write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("netprobe.yaml").path
        try """
            probe: mesh-dns
            targets: {ping: ping.yaml, tcp: null}
            icmp: {interval: 200ms, count: 1, spacing: 10ms, timeout: 150ms, family: ipv4}
            resolve_interval: 1s
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let running = try Harness.start(["ip", "netns", "exec", namespace, "unshare", "-m", "--", "sh", "-c",
                                         "for f in resolv.conf nsswitch.conf hosts; do mount --bind \"$1/$f\" /etc/$f || exit 1; done; exec \"$2\" run --config \"$3\" --output json",
                                         "sh", directory.path, Harness.netprobePath, config])
        defer { if running.process.isRunning { kill(running.process.processIdentifier, SIGKILL) } }
        func answered(since: Date) -> Set<String> {
            Set(FaultIntegrationTests.rounds(running.outputSoFar).compactMap { target, rounds in
                rounds.contains { $0.time > since && $0.result == "ok" } ? target : nil
            })
        }
        let started = Date.distantPast
        let first = TestEnvironment.eventually(within: 30) { answered(since: started) == ["127.0.0.2", "127.0.0.3"] }
        XCTAssertTrue(first, "the name's records but not this instance's own address: \(answered(since: started)); \(running.errorSoFar.suffix(1500))")

        // A pod goes, another comes: the next lookup moves the mesh.
        try "mesh.test 127.0.0.1\nmesh.test 127.0.0.2\nmesh.test 127.0.0.4\n".write(to: zone, atomically: true, encoding: .utf8)
        let changed = Date()
        // Probed now: a round in the last 2 s (rounds are 200 ms apart), once the old
        // records' last rounds are more than 2 s old.
        let moved = TestEnvironment.eventually(within: 30) {
            let now = Date()
            let recent = Set(FaultIntegrationTests.rounds(running.outputSoFar).compactMap { target, rounds in
                rounds.contains { $0.time > now.addingTimeInterval(-2) } ? target : nil
            })
            return now > changed.addingTimeInterval(2) && recent == ["127.0.0.2", "127.0.0.4"]
        }
        XCTAssertTrue(moved, "after the change: \(answered(since: changed)); \(running.errorSoFar.suffix(1500))")
        kill(running.process.processIdentifier, SIGTERM)
        let result = try Harness.finish(running, timeout: 30)
        XCTAssertEqual(result.status, 0, result.standardError.suffix(1500).description)
        XCTAssertNil(FaultIntegrationTests.rounds(result.standardOutput)["127.0.0.1"], "never itself")
    }
}
