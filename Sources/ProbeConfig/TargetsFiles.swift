import Foundation
import ProbeResults
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
/// Beside those short forms, an entry of a list may be a mapping of its own, for the
/// packet options and labels of one target (ping.yaml, then tcp.yaml):
///
///     production:
///       - db1.example.com
///       - host: db2.example.com
///         labels: {site: fra1, circuit: c-1234}
///         tos: [0, ef]            # one target (and series) per class
///         source: 192.0.2.10
///         interface: eth1
///
///     production:
///       - db1.example.com: 5432
///       - host: db2.example.com
///         ports: [5432, 6432]     # or one port: 'ports: 5432'
///         tos: ef
///
/// The group is any text (usually the environment) and becomes the `env` tag.
enum TargetsFiles {
    /// The keys of a ping target written as a mapping.
    static let pingEntryKeys = ["host", "labels", "tos", "source", "interface"]
    /// The keys of a tcp target written as a mapping.
    static let tcpEntryKeys = ["host", "ports", "labels", "tos", "source", "interface"]

    static func readPing(path: String, diagnostics: inout Diagnostics) -> [PingTarget] {
        var meshGroups: [MeshGroup] = []
        return readPing(path: path, diagnostics: &diagnostics, meshGroups: &meshGroups)
    }

    /// The hosts of a ping targets file, and its mesh groups (a group written as a
    /// mapping with peers_file or peers_dns, see `MeshGroup`).
    /// - Parameter defaults: the `icmp:` section's packet options, for entries without their own.
    static func readPing(path: String, diagnostics: inout Diagnostics, meshGroups: inout [MeshGroup], defaults: PacketDefaults = .none) -> [PingTarget] {
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
            for item in hosts {
                var hostNode = item
                var packet = defaults
                var labels: [String: String] = [:]
                if case .mapping = item {
                    guard let entry = readEntry(item, env: env, known: pingEntryKeys, defaults: defaults, reader: &reader) else { continue }
                    (hostNode, packet, labels) = (entry.hostNode, entry.packet, entry.labels)
                }
                guard let host = hostName(hostNode, env: env, reader: &reader) else { continue }
                let position = Position(hostNode)
                for options in packet.options {
                    if let first = seen.record(host: host, port: nil, tos: options.tos, env: env, at: position) {
                        reader.error(hostNode, first)
                        continue
                    }
                    targets.append(PingTarget(env: env, host: host, file: path, line: position.line, options: options, labels: labels))
                }
            }
        }
        diagnostics = reader.diagnostics
        return targets
    }

    /// - Parameter defaults: the `tcp:` section's packet options, for entries without their own.
    static func readTCP(path: String, diagnostics: inout Diagnostics, defaults: PacketDefaults = .none) -> [TCPTarget] {
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
            var pairs: [(host: Node, ports: Node, packet: PacketDefaults, labels: [String: String])] = []
            switch entriesNode {
            case .mapping(let mapping):
                pairs = mapping.map { ($0.key, $0.value, defaults, [:]) }
            case .sequence(let sequence):
                for item in sequence {
                    if isTCPEntry(item) {
                        guard let entry = readEntry(item, env: env, known: tcpEntryKeys, defaults: defaults, reader: &reader) else { continue }
                        guard let portsNode = entry.entries["ports"] else {
                            reader.error(item, "tcp target '\(entry.hostText)' has no ports; add 'ports: 22' or 'ports: [80, 443]'")
                            continue
                        }
                        pairs.append((entry.hostNode, portsNode, entry.packet, entry.labels))
                    } else if case .mapping(let mapping) = item, !mapping.isEmpty {
                        pairs += mapping.map { ($0.key, $0.value, defaults, [:]) }
                    } else if case .scalar(let scalar) = item, !item.isNull, scalar.string.contains(":") {
                        reader.error(item, "tcp target '\(scalar.string)' is one string, not 'host: port'; put a space after the colon (for an IPv6 address, quote it: '\"::1\": 22')")
                    } else {
                        reader.error(item, "each entry of group '\(env)' must be 'host: port' (or 'host: [port, port]'), got \(item.shownAs)")
                    }
                }
            default:
                reader.error(entriesNode, "group '\(env)' must map hosts to ports, as 'host: port' lines or '- host: port' entries, got \(entriesNode.shownAs)")
            }
            for (hostNode, portsNode, packet, labels) in pairs {
                guard let host = hostName(hostNode, env: env, reader: &reader) else { continue }
                let line = Position(hostNode).line
                for (port, portNode) in ports(portsNode, host: host, hostNode: hostNode, reader: &reader) {
                    for options in packet.options {
                        if let first = seen.record(host: host, port: port, tos: options.tos, env: env, at: Position(portNode)) {
                            reader.error(portNode, first)
                            continue
                        }
                        targets.append(TCPTarget(env: env, host: host, port: port, file: path, line: line, options: options, labels: labels))
                    }
                }
            }
        }
        diagnostics = reader.diagnostics
        return targets
    }

    /// One target written as a mapping, read.
    private struct Entry {
        var entries: Entries
        var hostNode: Node
        var hostText: String
        var packet: PacketDefaults
        var labels: [String: String]
    }

    /// A tcp list entry is the mapping form when it has a `host` key beside others, or a
    /// `host:` that is not a port: `- host: 22` stays the short form of a host named "host".
    private static func isTCPEntry(_ item: Node) -> Bool {
        guard case .mapping(let mapping) = item, let host = mapping["host"] else { return false }
        if mapping.count > 1 { return true }
        guard case .scalar(let scalar) = host, !host.isNull else { return false }
        return Int(scalar.string) == nil
    }

    private static func readEntry(_ node: Node, env: String, known: [String], defaults: PacketDefaults, reader: inout Reader) -> Entry? {
        guard let entries = reader.entries(of: node, section: "a target of group '\(env)'", known: known) else { return nil }
        guard let hostNode = entries["host"] else {
            reader.error(node, "a target of group '\(env)' written as a mapping needs 'host: NAME', e.g. '- host: db2.example.com'")
            return nil
        }
        let hostText: String
        if case .scalar(let scalar) = hostNode { hostText = scalar.string } else { hostText = "" }
        let packet = readPacketOptions(entries, inherited: defaults, reader: &reader)
        // A name may resolve to either family; an address says now which source can work.
        if let sourceNode = entries["source"], let source = packet.source, let address = IPAddress(parsing: hostText),
           address.family != source.family {
            reader.error(sourceNode, "source \(source) is an \(Self.familyName(source)) address but host '\(hostText)' is \(Self.familyName(address)); give a source of the host's family")
        }
        let labels = entries["labels"].map { readLabels($0, reader: &reader) } ?? [:]
        return Entry(entries: entries, hostNode: hostNode, hostText: hostText, packet: packet, labels: labels)
    }

    private static func familyName(_ address: IPAddress) -> String {
        address.family == .ipv4 ? "IPv4" : "IPv6"
    }

    /// `tos`, `source` and `interface` of a section or an entry, each key left out keeping
    /// `inherited`'s value.
    static func readPacketOptions(_ entries: Entries, inherited: PacketDefaults, reader: inout Reader) -> PacketDefaults {
        var packet = inherited
        if let node = entries["tos"], let classes = readClasses(node, reader: &reader) {
            packet.tos = classes
        }
        if let node = entries["source"], let text = reader.string(node, "source") {
            if let address = IPAddress(parsing: text) {
                packet.source = address
            } else {
                reader.error(node, "source must be an IP address of this host, got '\(text)'; write an address such as 192.0.2.10 or 2001:db8::10 (a name is not looked up)")
            }
        }
        if let node = entries["interface"], let name = reader.name(node, "interface") {
            if let problem = interfaceNameProblem(name) {
                reader.error(node, problem)
            } else {
                packet.interface = name
            }
        }
        return packet
    }

    /// Why `name` cannot be an interface's name (the kernel's own limits: IFNAMSIZ,
    /// dev_valid_name), or nil.
    static func interfaceNameProblem(_ name: String) -> String? {
        guard name.utf8.count > 15 || name == "." || name == ".." || name.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }) else { return nil }
        return "interface '\(name)' is not an interface name: at most 15 characters, no '/', ':' or spaces, as 'ip link' shows it (e.g. eth1)"
    }

    /// One class or a list of them, each as `-Q` takes it (`TrafficClass.parse`).
    private static func readClasses(_ node: Node, reader: inout Reader) -> [UInt8]? {
        let nodes: [Node]
        switch node {
        case .sequence(let sequence):
            nodes = Array(sequence)
            if nodes.isEmpty {
                reader.error(node, "tos is an empty list; give at least one class, e.g. 'tos: [0, ef]', or remove the key")
                return nil
            }
        case .scalar where !node.isNull:
            nodes = [node]
        default:
            reader.error(node, "tos must be a class or a list of classes, e.g. 'tos: ef' or 'tos: [0, ef]', got \(node.shownAs)")
            return nil
        }
        var classes: [UInt8] = []
        var valid = true
        for item in nodes {
            guard case .scalar(let scalar) = item, !item.isNull else {
                reader.error(item, "each class in tos must be a TOS byte or a DSCP name, got \(item.shownAs)")
                valid = false
                continue
            }
            do {
                let tos = try TrafficClass.parse(scalar.string)
                if classes.contains(tos) {
                    reader.error(item, "tos lists \(TrafficClass.describe(tos)) twice; list each class once")
                    valid = false
                    continue
                }
                classes.append(tos)
            } catch {
                reader.error(item, "tos: \(error.description)")
                valid = false
            }
        }
        return valid ? classes : nil
    }

    /// A target's labels: names a tag may take without clashing with the schema's own
    /// or breaking Prometheus' rules, values any text.
    private static func readLabels(_ node: Node, reader: inout Reader) -> [String: String] {
        guard case .mapping(let mapping) = node, !mapping.isEmpty else {
            reader.error(node, "labels must be a mapping of 'name: value', e.g. 'labels: {site: fra1, circuit: c-1234}', got \(node.shownAs)")
            return [:]
        }
        var labels: [String: String] = [:]
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key, !key.isNull else {
                reader.error(key, "label names must be plain names, got \(key.shownAs)")
                continue
            }
            let name = scalar.string
            if Schema.Tag.all.contains(name) {
                reader.error(key, "label '\(name)' would replace netprobe's own '\(name)' tag; rename it (e.g. 'site_\(name)')")
                continue
            }
            if name.hasPrefix("__") {
                reader.error(key, "label '\(name)' starts with '__', which Prometheus reserves for itself; remove the leading underscores")
                continue
            }
            guard isLabelName(name) else {
                reader.error(key, "label '\(name)' is not a valid label name: use letters, digits and '_', not starting with a digit ([a-zA-Z_][a-zA-Z0-9_]*, as Prometheus requires)")
                continue
            }
            guard case .scalar = value, !value.isNull else {
                reader.error(value, "label '\(name)' must have a text value, got \(value.shownAs)")
                continue
            }
            if let text = reader.name(value, "label '\(name)'") { labels[name] = text }
        }
        return labels
    }

    /// Prometheus' label-name rule: [a-zA-Z_][a-zA-Z0-9_]*.
    static func isLabelName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0 == "_" || ("0"..."9").contains($0) }
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
    /// - Parameter tos: the class; a host (and port) may be listed once per class.
    mutating func record(host: String, port: UInt16?, tos: UInt8 = 0, env: String, at position: Position) -> String? {
        let key = Self.canonical(host) + (port.map { " \($0)" } ?? "") + (tos == 0 ? "" : " tos \(tos)")
        guard let earlier = first[key] else {
            first[key] = (env, position)
            return nil
        }
        var what = port.map { "'\(host)' port \($0)" } ?? "'\(host)'"
        var each = port == nil ? "host" : "host and port"
        if tos != 0 {
            what += " tos \(Schema.tosTagValue(tos) ?? String(tos))"
            each = port == nil ? "host and class" : "host, port and class"
        }
        return "duplicate \(kind) target \(what): already listed at line \(earlier.position.line) (group '\(earlier.env)'); list each \(each) once per file and remove this one"
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

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
}
