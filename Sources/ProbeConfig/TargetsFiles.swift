import Foundation
import Yams

/// The targets files, in the format the older Python stack reads:
///
///     # ping: group -> hosts
///     local: [localhost, 127.0.0.1]
///
///     # tcp: group -> host: port (a mapping, or a list of one-entry mappings)
///     local:
///       localhost: 22
///       127.0.0.1: [80, 443]
///
/// The group is any text (usually the environment) and becomes the `env` tag.
enum TargetsFiles {
    static func readPing(path: String, diagnostics: inout Diagnostics) -> [PingTarget] {
        var meshGroups: [MeshGroup] = []
        return readPing(path: path, diagnostics: &diagnostics, meshGroups: &meshGroups)
    }

    /// The hosts of a ping targets file, and its mesh groups (a group written as a
    /// mapping with peers_file or peers_dns, see `MeshGroup`).
    static func readPing(path: String, diagnostics: inout Diagnostics, meshGroups: inout [MeshGroup]) -> [PingTarget] {
        guard let root = parse(path: path, kind: "ping", diagnostics: &diagnostics) else { return [] }
        var reader = Reader(file: path, diagnostics: diagnostics)
        var targets: [PingTarget] = []
        var seen = DuplicateFinder(kind: "ping")
        for (groupNode, hostsNode) in groups(root, kind: "ping", example: "local: [127.0.0.1, localhost]", reader: &reader) {
            guard let env = reader.name(groupNode, "group name") else { continue }
            if isEmptyGroup(hostsNode) {
                reader.error(groupNode, "group '\(env)' has no hosts; list at least one, as '\(env): [127.0.0.1]', or delete the group")
                continue
            }
            if case .mapping = hostsNode {
                if let mesh = readMeshGroup(env: env, groupNode: groupNode, node: hostsNode, path: path, reader: &reader) { meshGroups.append(mesh) }
                continue
            }
            guard case .sequence(let hosts) = hostsNode else {
                reader.error(hostsNode, "group '\(env)' must be a list of hosts, as '\(env): [host, host]' (or a mesh: '\(env): {peers_file: FILE}'), got \(hostsNode.shownAs)")
                continue
            }
            for hostNode in hosts {
                guard let host = hostName(hostNode, env: env, reader: &reader) else { continue }
                let position = Position(hostNode)
                if let first = seen.record(host: host, port: nil, env: env, at: position) {
                    reader.error(hostNode, first)
                    continue
                }
                targets.append(PingTarget(env: env, host: host, file: path, line: position.line))
            }
        }
        diagnostics = reader.diagnostics
        return targets
    }

    static func readTCP(path: String, diagnostics: inout Diagnostics) -> [TCPTarget] {
        guard let root = parse(path: path, kind: "tcp", diagnostics: &diagnostics) else { return [] }
        var reader = Reader(file: path, diagnostics: diagnostics)
        var targets: [TCPTarget] = []
        var seen = DuplicateFinder(kind: "tcp")
        for (groupNode, entriesNode) in groups(root, kind: "tcp", example: "local: {127.0.0.1: 22}", reader: &reader) {
            guard let env = reader.name(groupNode, "group name") else { continue }
            if isEmptyGroup(entriesNode) {
                reader.error(groupNode, "group '\(env)' has no hosts; list at least one 'host: port' under it, or delete the group")
                continue
            }
            // Both forms the Python stack accepts: a mapping, or a list of mappings.
            var pairs: [(Node, Node)] = []
            switch entriesNode {
            case .mapping(let mapping):
                pairs = mapping.map { ($0.key, $0.value) }
            case .sequence(let sequence):
                for item in sequence {
                    if case .mapping(let mapping) = item, !mapping.isEmpty {
                        pairs += mapping.map { ($0.key, $0.value) }
                    } else if case .scalar(let scalar) = item, !item.isNull, scalar.string.contains(":") {
                        reader.error(item, "tcp target '\(scalar.string)' is one string, not 'host: port'; put a space after the colon (for an IPv6 address, quote it: '\"::1\": 22')")
                    } else {
                        reader.error(item, "each entry of group '\(env)' must be 'host: port' (or 'host: [port, port]'), got \(item.shownAs)")
                    }
                }
            default:
                reader.error(entriesNode, "group '\(env)' must map hosts to ports, as 'host: port' lines or '- host: port' entries, got \(entriesNode.shownAs)")
            }
            for (hostNode, portsNode) in pairs {
                guard let host = hostName(hostNode, env: env, reader: &reader) else { continue }
                let line = Position(hostNode).line
                for (port, portNode) in ports(portsNode, host: host, hostNode: hostNode, reader: &reader) {
                    if let first = seen.record(host: host, port: port, env: env, at: Position(portNode)) {
                        reader.error(portNode, first)
                        continue
                    }
                    targets.append(TCPTarget(env: env, host: host, port: port, file: path, line: line))
                }
            }
        }
        diagnostics = reader.diagnostics
        return targets
    }

    private static func parse(path: String, kind: String, diagnostics: inout Diagnostics) -> Node? {
        let hint = kind == "tcp"
            ? "a group may appear once per file and a host once per group: merge them, giving several ports as 'host: [80, 443]'"
            : "a group may appear once per file: merge the two lists"
        return YAMLFile.load(path: path, what: "\(kind) targets file", duplicateKeyHint: hint, diagnostics: &diagnostics)?.root
    }

    /// The (group, value) pairs of the top-level mapping; an empty file has none, which is
    /// allowed: it probes nothing of that kind.
    private static func groups(_ root: Node, kind: String, example: String, reader: inout Reader) -> [(Node, Node)] {
        if root.isNull { return [] }
        guard case .mapping(let mapping) = root else {
            reader.error(root, "a \(kind) targets file maps group names to hosts, as '\(example)', got \(root.shownAs)")
            return []
        }
        return mapping.map { ($0.key, $0.value) }
    }

    private static func isEmptyGroup(_ node: Node) -> Bool {
        switch node {
        case .sequence(let sequence): return sequence.isEmpty
        case .mapping(let mapping): return mapping.isEmpty
        default: return node.isNull
        }
    }

    private static func hostName(_ node: Node, env: String, reader: inout Reader) -> String? {
        if node.isNull {
            reader.error(node, "empty host in group '\(env)'; write a host name or address, or remove the entry")
            return nil
        }
        return reader.name(node, "host")
    }

    private static func ports(_ node: Node, host: String, hostNode: Node, reader: inout Reader) -> [(UInt16, Node)] {
        let nodes: [Node]
        switch node {
        case .sequence(let sequence):
            nodes = Array(sequence)
        case .scalar where node.isNull:
            reader.error(hostNode, "host '\(host)' has no port; write '\(host): 22' or '\(host): [80, 443]'")
            return []
        default:
            nodes = [node]
        }
        if nodes.isEmpty {
            reader.error(node, "host '\(host)' has an empty port list; give at least one port 1..65535")
        }
        var ports: [(UInt16, Node)] = []
        for portNode in nodes {
            guard case .scalar(let scalar) = portNode, !portNode.isNull, let port = Int(scalar.string) else {
                reader.error(portNode, "port of '\(host)' must be an integer 1..65535, got \(portNode.shownAs)")
                continue
            }
            guard (1...65535).contains(port) else {
                reader.error(portNode, "port \(port) of '\(host)' is out of range; use 1..65535")
                continue
            }
            ports.append((UInt16(port), portNode))
        }
        return ports
    }
}

/// Finds a host (and port) listed twice in one file, in the same group or in two groups:
/// either way it would be probed twice and show up twice on the dashboards.
struct DuplicateFinder {
    let kind: String
    private var first: [String: (env: String, position: Position)] = [:]

    init(kind: String) {
        self.kind = kind
    }

    /// - Returns: the message for a repeat, or nil the first time.
    mutating func record(host: String, port: UInt16?, env: String, at position: Position) -> String? {
        let key = Self.canonical(host) + (port.map { " \($0)" } ?? "")
        guard let earlier = first[key] else {
            first[key] = (env, position)
            return nil
        }
        let what = port.map { "'\(host)' port \($0)" } ?? "'\(host)'"
        return "duplicate \(kind) target \(what): already listed at line \(earlier.position.line) (group '\(earlier.env)'); list each \(port == nil ? "host" : "host and port") once per file and remove this one"
    }

    /// The same host however it is spelt: names ignore case and a final dot; addresses
    /// compare by value, so "::1" and "0:0:0:0:0:0:0:1" are one target.
    static func canonical(_ host: String) -> String {
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, host, &buffer) == 1 {
            return "4:" + buffer.prefix(4).map(String.init).joined(separator: ".")
        }
        if inet_pton(AF_INET6, host, &buffer) == 1 {
            return "6:" + buffer.map { String($0, radix: 16) }.joined(separator: ":")
        }
        var name = host.lowercased()
        if name.hasSuffix("."), name.count > 1 { name.removeLast() }
        return "name:" + name
    }
}
