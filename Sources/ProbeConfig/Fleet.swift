import Foundation
import Yams

/// Which share of the targets files this instance probes (`shard:`): the targets are split
/// over `count` instances by rendezvous hashing (ProbeService's `Fleet`), and this one is
/// number `index`.
public struct ShardSettings: Sendable, Equatable {
    /// This instance's number, 0..<count.
    public var index: Int
    /// How many instances share the targets.
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// The ordinal a StatefulSet gives its pods: the number after the last `-` of the host
    /// name (`netprobe-2` is 2), or nil when the name does not end in one.
    public static func ordinal(ofHostName hostName: String) -> Int? {
        let label = hostName.split(separator: ".").first.map(String.init) ?? hostName
        guard let dash = label.lastIndex(of: "-") else { return nil }
        let digits = label[label.index(after: dash)...]
        guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }
}

/// A group of a ping targets file that is a mesh: its hosts are the peers of a peers list,
/// and every instance probes every peer except itself (or `peers_per_probe` of them).
///
///     mesh:
///       peers_file: peers.txt      # one address or host name a line, '#' comments
///       peers_per_probe: 10        # optional: only 10 peers each, chosen by hashing
///
///     mesh:
///       peers_dns: netprobe-mesh.monitoring.svc.cluster.local   # every A/AAAA record is a peer
public struct MeshGroup: Sendable, Equatable {
    /// Where the peers come from.
    public enum Source: Sendable, Equatable {
        /// A file listing them, path resolved against the targets file's directory.
        case file(String)
        /// A DNS name whose addresses are the peers (looked up at every resolve interval).
        case dns(String)
    }

    /// The group name: the `env` tag.
    public var env: String
    public var source: Source
    /// The peers the file lists, in file order (empty for `.dns`: they come from lookups).
    public var peers: [String]
    /// Probe only this many peers, chosen by rendezvous hashing of (probe, peer); nil: all.
    public var peersPerProbe: Int?
    /// The targets file and line of the group, for messages.
    public var file: String
    public var line: Int

    public init(env: String, source: Source, peers: [String] = [], peersPerProbe: Int? = nil, file: String, line: Int) {
        self.env = env
        self.source = source
        self.peers = peers
        self.peersPerProbe = peersPerProbe
        self.file = file
        self.line = line
    }
}

extension ConfigurationLoader {
    /// The environment variables a shard setting may come from (a StatefulSet sets them
    /// or lets the host name give the index).
    public static let shardIndexVariable = "NETPROBE_SHARD_INDEX"
    public static let shardCountVariable = "NETPROBE_SHARD_COUNT"

    /// `shard: {count: N, index: I}`. A missing `index` comes from NETPROBE_SHARD_INDEX,
    /// else from the host name's ordinal (a StatefulSet pod `netprobe-3` is shard 3); a
    /// missing `count` from NETPROBE_SHARD_COUNT. Without a `shard:` section, the two
    /// variables alone can set it (count required).
    static func readShard(_ node: Node?, reader: inout Reader, environment: [String: String], hostName: String) -> ShardSettings? {
        var count: Int?
        var index: Int?
        var position: Node? = node
        if let node, !node.isNull {
            let errorsBefore = reader.diagnostics.errors.count
            guard let entries = reader.entries(of: node, section: "shard", known: ["index", "count"]) else { return nil }
            // A misspelt key is error enough; "count is not set" on top would be noise.
            guard reader.diagnostics.errors.count == errorsBefore else { return nil }
            if let countNode = entries["count"] { count = reader.integer(countNode, "count", in: 1...100_000); if count == nil { return nil } }
            if let indexNode = entries["index"] { index = reader.integer(indexNode, "index", in: 0...99_999); if index == nil { return nil } }
            position = entries["count"] ?? entries["index"] ?? node
        } else if environment[shardCountVariable] == nil && environment[shardIndexVariable] == nil {
            return nil
        }
        let at = position.map(Position.init) ?? .startOfFile
        if count == nil, let text = environment[shardCountVariable] {
            guard let value = Int(text), (1...100_000).contains(value) else {
                reader.diagnostics.error(reader.file, at, "\(shardCountVariable)='\(text)' is not a shard count 1..100000; set it to the number of instances (the StatefulSet's replicas)")
                return nil
            }
            count = value
        }
        if index == nil, let text = environment[shardIndexVariable] {
            guard let value = Int(text), value >= 0 else {
                reader.diagnostics.error(reader.file, at, "\(shardIndexVariable)='\(text)' is not a shard index (0, 1, 2, ...)")
                return nil
            }
            index = value
        }
        if index == nil { index = ShardSettings.ordinal(ofHostName: hostName) }
        guard let count else {
            reader.diagnostics.error(reader.file, at, "shard: the number of instances is not set; add 'count: N' to shard, or set \(shardCountVariable)")
            return nil
        }
        guard let index else {
            reader.diagnostics.error(reader.file, at, "shard: this instance's index is not set and the host name '\(hostName)' does not end in -NUMBER (as a StatefulSet pod's does); add 'index: I' to shard, or set \(shardIndexVariable)")
            return nil
        }
        guard index < count else {
            reader.diagnostics.error(reader.file, at, "shard: index \(index) is not below count \(count); indices run 0..\(count - 1) (raise count to the number of instances)")
            return nil
        }
        return ShardSettings(index: index, count: count)
    }
}

extension TargetsFiles {
    static let meshKeys = ["peers_file", "peers_dns", "peers_per_probe"]

    /// A ping group written as a mapping: a mesh group (see `MeshGroup`).
    static func readMeshGroup(env: String, groupNode: Node, node: Node, path: String, reader: inout Reader) -> MeshGroup? {
        guard let entries = reader.entries(of: node, section: "mesh group '\(env)'", known: meshKeys) else { return nil }
        let line = Position(groupNode).line
        var peersPerProbe: Int?
        if let value = entries["peers_per_probe"] {
            guard let number = reader.integer(value, "peers_per_probe", in: 1...1_000_000) else { return nil }
            peersPerProbe = number
        }
        switch (entries["peers_file"], entries["peers_dns"]) {
        case (let fileNode?, nil):
            guard let name = reader.string(fileNode, "peers_file") else { return nil }
            let peersPath = Paths.resolve(name, against: Paths.directory(of: path))
            guard let peers = readPeersFile(peersPath, from: fileNode, reader: &reader) else { return nil }
            return MeshGroup(env: env, source: .file(peersPath), peers: peers, peersPerProbe: peersPerProbe, file: path, line: line)
        case (nil, let dnsNode?):
            guard let name = reader.name(dnsNode, "peers_dns") else { return nil }
            guard !name.contains(where: \.isWhitespace) else {
                reader.error(dnsNode, "peers_dns '\(name)' is not a DNS name; write one name, as 'peers_dns: netprobe-mesh.monitoring.svc.cluster.local'")
                return nil
            }
            return MeshGroup(env: env, source: .dns(name), peersPerProbe: peersPerProbe, file: path, line: line)
        case (_?, _?):
            reader.error(node, "mesh group '\(env)' has both peers_file and peers_dns; keep one")
            return nil
        case (nil, nil):
            reader.error(node, "mesh group '\(env)' names no peers; add 'peers_file: FILE' (one peer a line) or 'peers_dns: NAME' (every address of the name), or make it a list of hosts")
            return nil
        }
    }

    /// One peer a line; blank lines and `#` comments are skipped. Errors name the peers
    /// file and line.
    static func readPeersFile(_ path: String, from node: Node, reader: inout Reader) -> [String]? {
        guard let data = FileManager.default.contents(atPath: path) else {
            reader.error(node, "peers file '\(path)' cannot be read; fix the path (relative to the targets file's directory)")
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            reader.diagnostics.error(path, .startOfFile, "peers file is not UTF-8 text; write one address or host name a line")
            return nil
        }
        var peers: [String] = []
        var seen: [String: Int] = [:]
        var valid = true
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let peer = content.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            if peer.isEmpty { continue }
            let position = Position(line: number + 1, column: 1)
            if peer.contains(where: { $0.isWhitespace }) || peer.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                reader.diagnostics.error(path, position, "'\(peer)' is not one peer; write one address or host name a line")
                valid = false
                continue
            }
            let key = DuplicateFinder.canonical(peer)
            if let first = seen[key] {
                reader.diagnostics.error(path, position, "peer '\(peer)' is listed twice (first at line \(first)); remove this one")
                valid = false
                continue
            }
            seen[key] = number + 1
            peers.append(peer)
        }
        return valid ? peers : nil
    }
}
