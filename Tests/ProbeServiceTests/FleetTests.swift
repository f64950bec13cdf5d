import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import TestSupport
import XCTest
@testable import ProbeService
#if canImport(Glibc)
import Glibc
#endif

/// Sharding and meshes: which targets an instance of a fleet probes.
final class FleetTests: XCTestCase {
    static let targets = (0..<100_000).map { PlannedTarget(env: "fleet", host: "host-\($0).example") }

    static func owners(count: Int) -> [Int] {
        targets.map { RendezvousHash.owner(of: Fleet.shardKey($0, kind: "ping"), buckets: count) }
    }

    func testEightShardsProbeEveryTargetExactlyOnce() {
        var seen = [Int](repeating: 0, count: Self.targets.count)
        var sizes: [Int] = []
        let position = Dictionary(uniqueKeysWithValues: Self.targets.enumerated().map { ($1, $0) })
        for index in 0..<8 {
            let share = Fleet.select(Self.targets, kind: "ping", shard: ShardSettings(index: index, count: 8))
            sizes.append(share.count)
            for target in share { seen[position[target]!] += 1 }
        }
        XCTAssertEqual(seen.filter { $0 == 0 }.count, 0, "targets no instance probes")
        XCTAssertEqual(seen.filter { $0 > 1 }.count, 0, "targets probed twice")
        XCTAssertEqual(sizes.reduce(0, +), 100_000)
        // The hash is fixed, so the split is too: each share within 10 % of an eighth.
        for size in sizes { XCTAssertEqual(Double(size), 12_500, accuracy: 1_250, "shares: \(sizes)") }
    }

    func testANinthInstanceTakesAboutAnEleventhAndNothingElseMoves() {
        let eight = Self.owners(count: 8)
        let nine = Self.owners(count: 9)
        let moved = zip(eight, nine).filter { $0 != $1 }
        let fraction = Double(moved.count) / Double(Self.targets.count)
        XCTAssertGreaterThanOrEqual(fraction, 0.10, "moved \(moved.count)")
        XCTAssertLessThanOrEqual(fraction, 0.13, "moved \(moved.count)")
        XCTAssertTrue(moved.allSatisfy { $0.1 == 8 }, "a target moves only to the new instance, never between old ones")
    }

    func testAShardIsOneInstanceWithoutASetting() {
        XCTAssertEqual(Fleet.select(Array(Self.targets.prefix(10)), kind: "ping", shard: nil).count, 10)
        XCTAssertEqual(Fleet.select(Array(Self.targets.prefix(10)), kind: "ping", shard: ShardSettings(index: 0, count: 1)).count, 10)
    }

    func testTheHashIsTheSameEverywhere() {
        // Fixed values: a change of the hash would reshuffle every fleet on upgrade.
        XCTAssertEqual(RendezvousHash.fnv1a(""), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(RendezvousHash.fnv1a("a"), 0xaf63_dc4c_8601_ec8c)
        XCTAssertEqual(RendezvousHash.owner(of: Fleet.shardKey(PlannedTarget(env: "prod", host: "db-1", port: 5432), kind: "tcp"), buckets: 8),
                       RendezvousHash.owner(of: "tcp\u{0}prod\u{0}db-1\u{0}5432", buckets: 8))
    }

    func mesh(_ peers: [String], perProbe: Int? = nil) -> MeshGroup {
        MeshGroup(env: "mesh", source: .file("/peers.txt"), peers: peers, peersPerProbe: perProbe, file: "/ping.yaml", line: 1)
    }

    func testAMeshInstanceProbesEveryPeerButItself() {
        let peers = ["198.18.0.1", "198.18.0.2", "198.18.0.3", "node-d", "node-e.mesh.example."]
        let byAddress = LocalIdentity(names: ["node-b"], addresses: [IPAddress(parsing: "198.18.0.2")!, IPAddress(parsing: "127.0.0.1")!])
        XCTAssertEqual(Fleet.peers(of: mesh(peers), candidates: peers, probe: "node-b", identity: byAddress).map(\.host),
                       ["198.18.0.1", "198.18.0.3", "node-d", "node-e.mesh.example."])
        let byName = LocalIdentity(names: ["node-d"], addresses: [IPAddress(parsing: "198.18.0.4")!])
        XCTAssertEqual(Fleet.peers(of: mesh(peers), candidates: peers, probe: "node-d", identity: byName).map(\.host),
                       ["198.18.0.1", "198.18.0.2", "198.18.0.3", "node-e.mesh.example."])
        let shortName = LocalIdentity(names: ["NODE-E"], addresses: [])
        XCTAssertEqual(Fleet.peers(of: mesh(peers), candidates: peers, probe: "x", identity: shortName).map(\.host),
                       ["198.18.0.1", "198.18.0.2", "198.18.0.3", "node-d"], "a pod's short host name is its FQDN in the list")
        XCTAssertTrue(Fleet.peers(of: mesh(peers), candidates: peers, probe: "x", identity: shortName).allSatisfy { $0.env == "mesh" })
    }

    func testPeersPerProbeKeepsAMeshOfManyNodesSmall() {
        let peers = (0..<500).map { "10.0.\($0 / 256).\($0 % 256)" }
        var probedBy = [String: Int]()
        for (number, me) in peers.enumerated() {
            let identity = LocalIdentity(names: ["node-\(number)"], addresses: [IPAddress(parsing: me)!])
            let chosen = Fleet.peers(of: mesh(peers, perProbe: 10), candidates: peers, probe: "node-\(number)", identity: identity).map(\.host)
            XCTAssertEqual(chosen.count, 10)
            XCTAssertFalse(chosen.contains(me), "never itself")
            for peer in chosen { probedBy[peer, default: 0] += 1 }
        }
        XCTAssertEqual(probedBy.values.reduce(0, +), 5_000, "500 nodes x 10 series, not 500 x 499")
        XCTAssertGreaterThan(probedBy.count, 450, "nearly every node is probed by someone: \(probedBy.count)")
        // A peer leaving changes at most one pick of any probe's subset.
        let identity = LocalIdentity(names: ["node-0"], addresses: [IPAddress(parsing: peers[0])!])
        let before = Set(Fleet.peers(of: mesh(peers, perProbe: 10), candidates: peers, probe: "node-0", identity: identity).map(\.host))
        let without = peers.filter { $0 != before.first! }
        let after = Set(Fleet.peers(of: mesh(without, perProbe: 10), candidates: without, probe: "node-0", identity: identity).map(\.host))
        XCTAssertEqual(before.intersection(after).count, 9)
    }

    func testThisMachinesAddressesAreItsIdentity() {
        let identity = LocalIdentity.current(probeName: "probe-x")
        XCTAssertTrue(identity.addresses.contains(IPAddress(parsing: "127.0.0.1")!), "\(identity.addresses)")
        XCTAssertTrue(identity.isSelf("127.0.0.1"))
        XCTAssertTrue(identity.isSelf("probe-x"))
        XCTAssertFalse(identity.isSelf("198.18.255.254"))
    }

    func testTheServiceProbesItsShardAndItsPeers() throws {
        let directory = try TestEnvironment.temporaryDirectory("fleet")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ping = "all:\n"
        for host in 1...40 { ping += "  - 127.0.1.\(host)\n" }
        ping += "mesh: {peers_file: peers.txt}\n"
        try ping.write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        try "127.0.0.1\n127.0.2.1\n127.0.2.2\n".write(to: directory.appendingPathComponent("peers.txt"), atomically: true, encoding: .utf8)
        var union: [PlannedTarget] = []
        for index in 0..<3 {
            let path = directory.appendingPathComponent("netprobe-\(index).yaml").path
            try "probe: p\(index)\ntargets: {ping: ping.yaml, tcp: null}\nshard: {index: \(index), count: 3}\n".write(toFile: path, atomically: true, encoding: .utf8)
            let configuration = try ConfigurationLoader.load(path: path, environment: [:])
            let targets = Fleet.ping(configuration, identity: LocalIdentity.current(probeName: "p\(index)"))
            XCTAssertEqual(targets.filter { $0.env == "mesh" }.map(\.host), ["127.0.2.1", "127.0.2.2"], "every peer but this machine (127.0.0.1)")
            union += targets.filter { $0.env == "all" }
        }
        XCTAssertEqual(union.count, 40)
        XCTAssertEqual(Set(union.map(\.host)).count, 40, "the three shards together probe each host once")
    }
}

/// `watch_interval`: a changed file is a reload, ConfigMap-style link swaps included.
final class FileWatchTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try TestEnvironment.temporaryDirectory("file-watch")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// What the kubelet does to a ConfigMap volume: the files live in a timestamped
    /// folder, `..data` links to it, each file name links through `..data`; an update
    /// writes a new folder and renames a new `..data` link over the old one.
    func publish(_ files: [String: String], version: Int) throws {
        let folder = directory.appendingPathComponent("..2026_12_02_10_00_0\(version).\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (name, contents) in files { try contents.write(to: folder.appendingPathComponent(name), atomically: false, encoding: .utf8) }
        let temporary = directory.appendingPathComponent("..data_tmp").path
        XCTAssertEqual(symlink(folder.lastPathComponent, temporary), 0)
        XCTAssertEqual(rename(temporary, directory.appendingPathComponent("..data").path), 0)
        for name in files.keys where !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
            XCTAssertEqual(symlink("..data/\(name)", directory.appendingPathComponent(name).path), 0)
        }
    }

    func testAConfigMapUpdateIsAChangeAndNothingElseIs() throws {
        try publish(["netprobe.yaml": "a: 1\n", "tcp.yaml": "x: {127.0.0.1: 1}\n"], version: 1)
        let config = directory.appendingPathComponent("netprobe.yaml").path
        let targets = directory.appendingPathComponent("tcp.yaml").path
        let watch = FileWatch(files: [config, targets])
        XCTAssertEqual(watch.changes(), [])
        // Same contents, same size: the new inode behind the link is what shows.
        try publish(["netprobe.yaml": "a: 1\n", "tcp.yaml": "x: {127.0.0.1: 2}\n"], version: 2)
        XCTAssertEqual(watch.changes(), [config, targets])
        XCTAssertEqual(watch.changes(), [], "a change is reported once")
        try FileManager.default.removeItem(atPath: targets)
        XCTAssertEqual(watch.changes(), [targets], "a file that went away")
    }

    func testTheServiceReloadsWhenItsConfigMapChanges() async throws {
        let listener = AnyAddressListener()
        func files(_ hosts: [String]) -> [String: String] {
            [
                "netprobe.yaml": "probe: watch-test\ntargets: {ping: null, tcp: tcp.yaml}\ntcp: {interval: 200ms, count: 1, spacing: 10ms, timeout: 150ms}\nwatch_interval: 100ms\n",
                "tcp.yaml": "local:\n" + hosts.map { "  \($0): \(listener.port)\n" }.joined(),
            ]
        }
        try publish(files(["127.0.0.1"]), version: 1)
        let configuration = try ConfigurationLoader.load(path: directory.appendingPathComponent("netprobe.yaml").path)
        let collector = ProbeServiceTests.Collector()
        var logger = Logger(label: "watch-test")
        logger.logLevel = .critical
        let service = ProbeService(configuration: configuration, icmpSockets: nil, output: collector, logger: logger)
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        let done = Task {
            defer { collector.finish() }
            try await service.run(control: control)
        }
        // A watchdog instead of a hang if the change were never noticed.
        let watchdog = Task {
            try? await Task.sleep(nanoseconds: 30_000_000_000)
            send.yield(.stop)
        }
        defer { watchdog.cancel() }
        var published = false
        var hosts = Set<String>()
        for await record in collector.records {
            hosts.insert(record.round.target.name)
            if !published {
                try publish(files(["127.0.0.1", "127.0.0.2"]), version: 2)
                published = true
            } else if hosts.contains("127.0.0.2") {
                send.yield(.stop)
            }
        }
        try await done.value
        XCTAssertEqual(hosts, ["127.0.0.1", "127.0.0.2"], "the target added by the ConfigMap update is probed, without a SIGHUP or .reload")
    }
}
