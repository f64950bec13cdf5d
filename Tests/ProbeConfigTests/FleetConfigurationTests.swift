import Foundation
import XCTest
@testable import ProbeConfig

/// `shard:` and mesh groups (peers lists) in the config and the ping targets file.
final class FleetConfigurationTests: XCTestCase {
    func makeConfig(_ config: String, ping: String = "local: [127.0.0.1]\n", peers: String? = nil) throws -> String {
        let directory = try temporaryDirectory(self)
        try write("targets: {ping: ping.yaml, tcp: null}\n" + config, to: directory + "/netprobe.yaml", mode: 0o644)
        try write(ping, to: directory + "/ping.yaml", mode: 0o644)
        if let peers { try write(peers, to: directory + "/peers.txt", mode: 0o644) }
        return directory + "/netprobe.yaml"
    }

    func testShardFromTheConfig() throws {
        let configuration = try ConfigurationLoader.load(path: try makeConfig("shard: {index: 2, count: 8}\n"), environment: [:])
        XCTAssertEqual(configuration.shard, ShardSettings(index: 2, count: 8))
    }

    func testWithoutAShardEveryTargetIsThisInstances() throws {
        XCTAssertNil(try ConfigurationLoader.load(path: try makeConfig(""), environment: [:]).shard)
    }

    func testShardIndexAndCountFromTheEnvironment() throws {
        let path = try makeConfig("shard: {count: 4}\n")
        XCTAssertEqual(try ConfigurationLoader.load(path: path, environment: ["NETPROBE_SHARD_INDEX": "3"]).shard, ShardSettings(index: 3, count: 4))
        let bare = try makeConfig("")
        XCTAssertEqual(try ConfigurationLoader.load(path: bare, environment: ["NETPROBE_SHARD_INDEX": "1", "NETPROBE_SHARD_COUNT": "5"]).shard,
                       ShardSettings(index: 1, count: 5))
    }

    func testAStatefulSetPodsOrdinalIsItsShardIndex() {
        XCTAssertEqual(ShardSettings.ordinal(ofHostName: "netprobe-0"), 0)
        XCTAssertEqual(ShardSettings.ordinal(ofHostName: "netprobe-shard-12"), 12)
        XCTAssertEqual(ShardSettings.ordinal(ofHostName: "netprobe-3.netprobe.monitoring.svc.cluster.local"), 3)
        XCTAssertNil(ShardSettings.ordinal(ofHostName: "netprobe"))
        XCTAssertNil(ShardSettings.ordinal(ofHostName: "netprobe-7f9c4b"))
        XCTAssertNil(ShardSettings.ordinal(ofHostName: "netprobe-"))
    }

    func testBadShardsSayWhatToChange() throws {
        let outOfRange = try makeConfig("shard: {index: 8, count: 8}\n")
        assertErrors(configErrors(outOfRange), in: outOfRange, [
            Expected(2, 26, "shard: index 8 is not below count 8; indices run 0..7 (raise count to the number of instances)"),
        ])
        let noCount = try makeConfig("shard: {index: 1}\n")
        assertErrors(configErrors(noCount), in: noCount, [
            Expected(2, 16, "shard: the number of instances is not set; add 'count: N' to shard, or set NETPROBE_SHARD_COUNT"),
        ])
        let badVariable = try makeConfig("shard: {count: 3}\n")
        assertErrors(configErrors(badVariable, environment: ["NETPROBE_SHARD_INDEX": "two"]), in: badVariable, [
            Expected(2, 16, "NETPROBE_SHARD_INDEX='two' is not a shard index (0, 1, 2, ...)"),
        ])
        let unknown = try makeConfig("shard: {index: 0, cont: 3}\n")
        assertErrors(configErrors(unknown), in: unknown, [
            Expected(2, 19, "unknown key 'cont' in shard; did you mean 'count'?"),
        ])
    }

    func testAMeshGroupReadsItsPeersFile() throws {
        let path = try makeConfig("", ping: "local: [127.0.0.1]\nmesh:\n  peers_file: peers.txt\n  peers_per_probe: 2\n",
                                  peers: "# the mesh\n198.18.0.1\n198.18.0.2   # node b\n\nnode-c.example\n")
        let configuration = try ConfigurationLoader.load(path: path, environment: [:])
        XCTAssertEqual(configuration.pingTargets.map(\.host), ["127.0.0.1"])
        let directory = (path as NSString).deletingLastPathComponent
        XCTAssertEqual(configuration.meshGroups, [
            MeshGroup(env: "mesh", source: .file(directory + "/peers.txt"), peers: ["198.18.0.1", "198.18.0.2", "node-c.example"],
                      peersPerProbe: 2, file: directory + "/ping.yaml", line: 2),
        ])
        XCTAssertEqual(configuration.sourceFiles, [path, directory + "/ping.yaml", directory + "/peers.txt"], "what run watches")
    }

    func testAMeshGroupCanNameADNSName() throws {
        let path = try makeConfig("", ping: "mesh: {peers_dns: netprobe-mesh.monitoring.svc.cluster.local}\n")
        let configuration = try ConfigurationLoader.load(path: path, environment: [:])
        XCTAssertEqual(configuration.meshGroups.map(\.source), [.dns("netprobe-mesh.monitoring.svc.cluster.local")])
        XCTAssertNil(configuration.meshGroups.first?.peersPerProbe)
    }

    func testBadPeersListsNameFileAndLine() throws {
        let path = try makeConfig("", ping: "mesh:\n  peers_file: peers.txt\n", peers: "198.18.0.1\n198.18.0.2 198.18.0.3\n198.18.0.1\n")
        let peers = (path as NSString).deletingLastPathComponent + "/peers.txt"
        let errors = configErrors(path)
        XCTAssertEqual(errors.map(\.description), [
            "\(peers):2:1: error: '198.18.0.2 198.18.0.3' is not one peer; write one address or host name a line",
            "\(peers):3:1: error: peer '198.18.0.1' is listed twice (first at line 1); remove this one",
        ])
        let missing = try makeConfig("", ping: "mesh: {peers_file: nowhere.txt}\n")
        let ping = (missing as NSString).deletingLastPathComponent + "/ping.yaml"
        XCTAssertEqual(configErrors(missing).map(\.description), [
            "\(ping):1:20: error: peers file '\((missing as NSString).deletingLastPathComponent)/nowhere.txt' cannot be read; fix the path (relative to the targets file's directory)",
        ])
        let neither = try makeConfig("", ping: "mesh: {peers_per_probe: 3}\n")
        XCTAssertEqual(configErrors(neither).map(\.description), [
            "\((neither as NSString).deletingLastPathComponent)/ping.yaml:1:7: error: mesh group 'mesh' names no peers; add 'peers_file: FILE' (one peer a line) or 'peers_dns: NAME' (every address of the name), or make it a list of hosts",
        ])
    }

    func testWatchIntervalIsOffUnlessSet() throws {
        XCTAssertNil(try ConfigurationLoader.load(path: try makeConfig(""), environment: [:]).watchIntervalNanoseconds)
        XCTAssertEqual(try ConfigurationLoader.load(path: try makeConfig("watch_interval: 2s\n"), environment: [:]).watchIntervalNanoseconds, 2_000_000_000)
    }

    func testTheProbeNameCanComeFromTheEnvironment() throws {
        // A DaemonSet sets NETPROBE_PROBE_NAME to the node's name; the file's probe: wins.
        XCTAssertEqual(try ConfigurationLoader.load(path: try makeConfig(""), environment: ["NETPROBE_PROBE_NAME": "node-7"]).probeName, "node-7")
        XCTAssertEqual(try ConfigurationLoader.load(path: try makeConfig("probe: fixed\n"), environment: ["NETPROBE_PROBE_NAME": "node-7"]).probeName, "fixed")
    }
}
