import Foundation
import ProbeResults
import Yams

/// Reads the config file and the targets files it names.
///
/// Three steps, as the house style asks: start from the defaults, overwrite them with
/// what the file says, then check the values against each other. Every problem found on
/// the way is collected, so one run of `netprobe validate` lists them all.
public enum ConfigurationLoader {
    /// The top-level keys of the config file.
    static let topLevelKeys = ["probe", "targets", "icmp", "tcp", "influxdb", "spool", "batch", "resolve_interval", "shard", "watch_interval", "trace", "prometheus", "web"]
    static let probeKeys = ["interval", "count", "spacing", "timeout", "size", "ttl", "family", "mode", "tos", "source", "interface", "dont_fragment"]
    static let defaultPingTargets = "targets/ping.yaml"
    /// The `probe` tag's default when set (else the host name); `probe:` in the file wins.
    public static let probeNameVariable = "NETPROBE_PROBE_NAME"
    static let defaultTCPTargets = "targets/tcp.yaml"

    /// Loads and validates the config file and the targets files it names.
    ///
    /// - Parameters:
    ///   - path: the config file. Relative paths inside it (targets, secrets, spool, CA)
    ///     are resolved against its directory.
    ///   - environment: where `password_env` and `token_env` look their variables up.
    /// - Returns: the configuration, with defaults for everything the file leaves out and
    ///   any warnings in `warnings`.
    /// - Throws: `ConfigurationErrors` with every error found in the config file and the
    ///   targets files, each naming file, line, column and what to change.
    public static func load(
        path: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigurationErrors) -> NetprobeConfiguration {
        var diagnostics = Diagnostics()
        guard let (_, root) = YAMLFile.load(
            path: path, what: "config file",
            duplicateKeyHint: "a key may appear once per section: remove one of them",
            diagnostics: &diagnostics
        ) else {
            throw ConfigurationErrors(errors: diagnostics.sortedErrors)
        }
        let directory = Paths.directory(of: path)
        var reader = Reader(file: path, diagnostics: diagnostics)
        var configuration = NetprobeConfiguration(
            file: path,
            // A DaemonSet names each probe after its node: NETPROBE_PROBE_NAME from spec.nodeName.
            probeName: environment[probeNameVariable].flatMap { $0.isEmpty ? nil : $0 } ?? localHostName(),
            pingTargetsPath: Paths.resolve(defaultPingTargets, against: directory),
            tcpTargetsPath: Paths.resolve(defaultTCPTargets, against: directory)
        )
        let rootNode = root ?? Node("", .implicit, .plain)
        let top: Entries
        if case .mapping = rootNode {
            top = reader.entries(of: rootNode, section: "the top level", known: topLevelKeys) ?? Entries()
        } else if rootNode.isNull {
            top = Entries()
        } else {
            reader.error(rootNode, "a config file is a mapping of sections (\(topLevelKeys.joined(separator: ", "))), got \(rootNode.shownAs)")
            throw ConfigurationErrors(errors: reader.diagnostics.sortedErrors)
        }

        if let node = top["probe"], !node.isNull, let name = reader.name(node, "probe") {
            configuration.probeName = name
        }
        let targetsFound = readTargetPaths(top, directory: directory, reader: &reader, into: &configuration)
        if let node = top["icmp"] {
            configuration.icmp = readProbeSettings(node, kind: "icmp", reader: &reader)
        }
        if let node = top["tcp"] {
            configuration.tcp = readProbeSettings(node, kind: "tcp", reader: &reader)
        }
        checkRounds(configuration.icmp, kind: "icmp", sectionKey: top.keyNode("icmp"), reader: &reader)
        checkRounds(configuration.tcp, kind: "tcp", sectionKey: top.keyNode("tcp"), reader: &reader)
        if let node = top["influxdb"] {
            var servers = InfluxServersReader(reader: reader, configDirectory: directory, environment: environment)
            configuration.influxServers = servers.read(node)
            reader = servers.reader
        }
        if let node = top["spool"], let spool = reader.entries(of: node, section: "spool", known: ["directory", "max_size"]) {
            if let directoryNode = spool["directory"], let value = reader.string(directoryNode, "directory") {
                configuration.spoolDirectory = Paths.resolve(value, against: directory)
            }
            if let sizeNode = spool["max_size"], let bytes = reader.byteSize(sizeNode, "max_size") {
                configuration.spoolMaximumBytes = bytes
            }
        }
        if let node = top["batch"], let batch = reader.entries(of: node, section: "batch", known: ["size", "flush_interval"]) {
            if let sizeNode = batch["size"], let size = reader.integer(sizeNode, "size", in: 1...1_000_000) {
                configuration.batchSize = size
            }
            if let flushNode = batch["flush_interval"],
               let flush = reader.duration(flushNode, "flush_interval", minimum: 1_000_000) {
                configuration.flushIntervalNanoseconds = flush
            }
        }
        if let node = top["trace"] {
            configuration.trace = TraceSettings.read(node, reader: &reader)
        }
        if let node = top["resolve_interval"],
           let interval = reader.duration(node, "resolve_interval", minimum: 1_000_000_000) {
            configuration.resolveIntervalNanoseconds = interval
        }

        if let node = top["watch_interval"], !node.isNull,
           let interval = reader.duration(node, "watch_interval", minimum: 100_000_000) {
            configuration.watchIntervalNanoseconds = interval
        }
        configuration.shard = readShard(top["shard"], reader: &reader, environment: environment, hostName: localHostName())
        if let node = top["prometheus"] {
            configuration.prometheus = readPrometheus(node, reader: &reader)
        }
        if let node = top["web"] {
            // After prometheus: one HTTP server serves both, on one address.
            configuration.web = readWeb(node, prometheusSection: top["prometheus"], prometheus: &configuration.prometheus, reader: &reader)
        }

        diagnostics = reader.diagnostics
        if targetsFound.ping, let pingPath = configuration.pingTargetsPath {
            configuration.pingTargets = TargetsFiles.readPing(path: pingPath, diagnostics: &diagnostics, meshGroups: &configuration.meshGroups,
                                                              defaults: configuration.icmp.packetDefaults)
        }
        if targetsFound.tcp, let tcpPath = configuration.tcpTargetsPath {
            configuration.tcpTargets = TargetsFiles.readTCP(path: tcpPath, diagnostics: &diagnostics, defaults: configuration.tcp.packetDefaults)
        }
        guard diagnostics.errors.isEmpty else {
            throw ConfigurationErrors(errors: diagnostics.sortedErrors)
        }
        configuration.warnings = diagnostics.warnings
        return configuration
    }

    /// Parses a ping targets file alone (for tests and `validate`).
    ///
    /// - Parameter path: the targets file, `GROUP: [host, ...]`.
    /// - Returns: one target per host, in file order.
    /// - Throws: `ConfigurationErrors` with every problem in the file.
    public static func loadPingTargets(path: String) throws(ConfigurationErrors) -> [PingTarget] {
        var diagnostics = Diagnostics()
        let targets = TargetsFiles.readPing(path: path, diagnostics: &diagnostics)
        guard diagnostics.errors.isEmpty else { throw ConfigurationErrors(errors: diagnostics.sortedErrors) }
        return targets
    }

    /// Parses a tcp targets file alone (for tests and `validate`).
    ///
    /// - Parameter path: the targets file, `GROUP:` then `host: port` lines or
    ///   `- host: port` entries, a port possibly a list (`host: [80, 443]`).
    /// - Returns: one target per host and port, in file order.
    /// - Throws: `ConfigurationErrors` with every problem in the file.
    public static func loadTCPTargets(path: String) throws(ConfigurationErrors) -> [TCPTarget] {
        var diagnostics = Diagnostics()
        let targets = TargetsFiles.readTCP(path: path, diagnostics: &diagnostics)
        guard diagnostics.errors.isEmpty else { throw ConfigurationErrors(errors: diagnostics.sortedErrors) }
        return targets
    }

    /// Fills in the targets paths. A key left out keeps its default file, which must
    /// then exist (so a typo in a file name is never mistaken for "probe nothing");
    /// `null` is the explicit way to turn a kind off.
    ///
    /// - Returns: which targets files exist and should be read.
    private static func readTargetPaths(
        _ top: Entries, directory: String, reader: inout Reader,
        into configuration: inout NetprobeConfiguration
    ) -> (ping: Bool, tcp: Bool) {
        var targets = Entries()
        if let node = top["targets"] {
            guard let entries = reader.entries(of: node, section: "targets", known: ["ping", "tcp"]) else {
                // Already an error; guessing the paths would only add noise.
                return (false, false)
            }
            targets = entries
        }
        var found = (ping: false, tcp: false)
        for (key, probeWord, defaultPath) in [("ping", "ICMP", defaultPingTargets), ("tcp", "TCP", defaultTCPTargets)] {
            var path: String? = Paths.resolve(defaultPath, against: directory)
            var position = top.keyNode("targets").map(Position.init) ?? .startOfFile
            var problem = "(the default: \(defaultPath) next to the config file) does not exist; create it, set 'targets: {\(key): PATH}', or set 'targets: {\(key): null}' to probe no \(probeWord) targets"
            if let node = targets[key] {
                position = Position(node)
                if node.isNull {
                    path = nil
                } else if let value = reader.string(node, key) {
                    path = Paths.resolve(value, against: directory)
                    problem = "does not exist; fix the path (relative paths start at the config file's directory), or set '\(key): null' to probe no \(probeWord) targets"
                } else {
                    path = nil
                }
            }
            if key == "ping" { configuration.pingTargetsPath = path } else { configuration.tcpTargetsPath = path }
            guard let path else { continue }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                if key == "ping" { found.ping = true } else { found.tcp = true }
            } else {
                reader.diagnostics.error(reader.file, position, "\(key) targets file '\(path)' \(problem)")
            }
        }
        return found
    }

    private static func readProbeSettings(_ node: Node, kind: String, reader: inout Reader) -> ProbeSettings {
        var settings = ProbeSettings.defaults
        let otherKindOnly = kind == "tcp"
            ? ["size": "'size' (ICMP payload) applies to icmp only; remove it from tcp",
               "ttl": "'ttl' applies to icmp only; remove it from tcp",
               "dont_fragment": "'dont_fragment' applies to icmp only (TCP segments are sized by the kernel); remove it from tcp"]
            : ["mode": "'mode' (half-open or connect) applies to tcp only; remove it from icmp"]
        guard let entries = reader.entries(of: node, section: kind, known: probeKeys, special: otherKindOnly) else {
            return settings
        }
        if let value = entries["interval"], let interval = reader.duration(value, "interval", minimum: 1_000_000) {
            settings.intervalNanoseconds = interval
        }
        if let value = entries["count"], let count = reader.integer(value, "count", in: 1...1000) {
            settings.count = count
        }
        if let value = entries["spacing"], let spacing = reader.duration(value, "spacing", minimum: 1_000) {
            settings.spacingNanoseconds = spacing
        }
        if let value = entries["timeout"], let timeout = reader.duration(value, "timeout", minimum: 1_000_000) {
            settings.timeoutNanoseconds = timeout
        }
        // 12 bytes carry the identifier cookie and send time; 65507 fills an IPv4 packet.
        if let value = entries["size"], let size = reader.integer(value, "size", in: 12...65507) {
            settings.payloadSize = size
        }
        if let value = entries["ttl"], !value.isNull, let ttl = reader.integer(value, "ttl", in: 1...255) {
            settings.ttl = ttl
        }
        if let value = entries["family"], let text = reader.string(value, "family") {
            if let family = AddressPreference(rawValue: text) {
                settings.family = family
            } else {
                reader.error(value, "family must be any, ipv4 or ipv6, got '\(text)'")
            }
        }
        if let value = entries["mode"], let text = reader.string(value, "mode") {
            if let mode = TCPProbeMode(rawValue: text) {
                settings.tcpMode = mode
            } else {
                let choices = TCPProbeMode.allCases.map(\.rawValue).joined(separator: " or ")
                reader.error(value, "mode must be \(choices), got '\(text)' (half-open leaves nothing in the server's logs; connect makes full connections)")
            }
        }
        settings.packetDefaults = TargetsFiles.readPacketOptions(entries, inherited: .none, reader: &reader)
        if let value = entries["dont_fragment"], let dontFragment = reader.boolean(value, "dont_fragment") {
            settings.packetDefaults.fragmentation = dontFragment ? .probe : .dont
        }
        return settings
    }

    /// A round sends `count` packets `spacing` apart, then waits up to `timeout` for the
    /// last reply. Sends that do not fit in the interval would pile up round after round,
    /// so that is an error; waiting past the next round's start is harmless (each reply
    /// is matched to its own packet) but rarely meant, so that is a warning.
    private static func checkRounds(_ settings: ProbeSettings, kind: String, sectionKey: Node?, reader: inout Reader) {
        let sending = Int64(settings.count - 1) * settings.spacingNanoseconds
        let round = sending + settings.timeoutNanoseconds
        let position = sectionKey.map(Position.init) ?? .startOfFile
        let interval = Units.format(nanoseconds: settings.intervalNanoseconds)
        if sending >= settings.intervalNanoseconds {
            reader.diagnostics.error(reader.file, position, "\(kind): sending one round takes (count - 1) × spacing = \(Units.format(nanoseconds: sending)), not less than interval \(interval), so rounds would pile up; lower count or spacing, or raise interval")
        } else if round > settings.intervalNanoseconds {
            reader.diagnostics.warning(reader.file, position, "\(kind): a round lasts (count - 1) × spacing + timeout = \(Units.format(nanoseconds: round)), longer than interval \(interval), so the next round starts while replies are still awaited; results stay correct (each reply is matched to its own packet), but raise interval or lower count, spacing or timeout to keep rounds apart")
        }
    }

    /// The `probe` tag's default: this machine's name, as `hostname` prints it.
    static func localHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }
}
