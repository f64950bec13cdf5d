import ProbeEngine
import Yams

/// The `prometheus:` section: the `/metrics` endpoint of `netprobe run` and its
/// blackbox_exporter-compatible `/probe`. Off unless the section is present.
public struct PrometheusSettings: Sendable, Equatable {
    /// The default port, 9156: after blackbox_exporter's 9115 and smokeping_prober's 9374,
    /// and not one of the ports Prometheus' exporter list gives the exporters that run on
    /// the same hosts as netprobe (node 9100, blackbox 9115, smokeping 9374).
    public static let defaultPort = 9156

    /// Address to listen on (`listen`, host part): loopback unless configured otherwise.
    public var host: String
    /// Port to listen on (`listen`, port part); 0 lets the system choose (tests).
    public var port: Int
    /// What `/probe` may be pointed at, and how it may be used.
    public var probe: BlackboxSettings

    public init(host: String = "127.0.0.1", port: Int = PrometheusSettings.defaultPort, probe: BlackboxSettings = BlackboxSettings()) {
        self.host = host
        self.port = port
        self.probe = probe
    }
}

/// `prometheus: probe:`, the multi-target `/probe` endpoint.
public struct BlackboxSettings: Sendable, Equatable {
    /// Host names and addresses `/probe` accepts as `target` (`allow`, names exactly as
    /// written, compared case-insensitively); the address a name resolves to is probed.
    public var allowedNames: [String]
    /// Address prefixes `/probe` accepts as a literal-address `target` (`allow`, CIDR).
    public var allowedPrefixes: [AddressPrefix]
    /// Modules by name (`modules`); `icmp` and `tcp` exist unless redefined.
    public var modules: [String: BlackboxModule]
    /// Most `/probe` requests probing at once (`max_concurrent`); more get 503.
    public var maximumConcurrent: Int
    /// Most `/probe` requests accepted per second (`max_per_second`, a token bucket with a
    /// burst of as many); more get 429.
    public var maximumPerSecond: Int

    public init(allowedNames: [String] = [], allowedPrefixes: [AddressPrefix] = [], modules: [String: BlackboxModule] = BlackboxModule.defaults,
                maximumConcurrent: Int = 16, maximumPerSecond: Int = 50) {
        self.allowedNames = allowedNames
        self.allowedPrefixes = allowedPrefixes
        self.modules = modules
        self.maximumConcurrent = maximumConcurrent
        self.maximumPerSecond = maximumPerSecond
    }
}

/// One `/probe` module: which prober and how many packets.
public struct BlackboxModule: Sendable, Equatable {
    /// `prober`: icmp or tcp.
    public var kind: ProbeKind
    /// Packets (handshakes) per probe (`count`).
    public var count: Int
    /// Time between two of them (`spacing`).
    public var spacingNanoseconds: Int64
    /// How long to wait for each (`timeout`).
    public var timeoutNanoseconds: Int64
    /// Address family of a name's address (`family`: any, ipv4, ipv6).
    public var family: AddressPreference
    /// TCP only: half-open (default) or connect (`mode`).
    public var tcpMode: TCPProbeMode

    public init(kind: ProbeKind, count: Int = 1, spacingNanoseconds: Int64 = 100_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                family: AddressPreference = .any, tcpMode: TCPProbeMode = .halfOpen) {
        self.kind = kind
        self.count = count
        self.spacingNanoseconds = spacingNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.family = family
        self.tcpMode = tcpMode
    }

    /// `icmp` (one echo, 1 s timeout) and `tcp` (one half-open handshake, 1 s timeout), as
    /// blackbox_exporter's example modules: one packet per probe.
    public static let defaults: [String: BlackboxModule] = ["icmp": BlackboxModule(kind: .icmp), "tcp": BlackboxModule(kind: .tcp)]
}

/// An address prefix such as 127.0.0.0/8 or 2001:db8::/32.
public struct AddressPrefix: Sendable, Equatable, CustomStringConvertible {
    public let network: IPAddress
    public let length: Int

    /// Parses `ADDRESS/LENGTH` or a bare address (a /32 or /128); nil when malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parsing: String(parts[0])) else { return nil }
        let maximum = address.family == .ipv4 ? 32 : 128
        var length = maximum
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...maximum).contains(given), parts[1].allSatisfy(\.isASCII) else { return nil }
            length = given
        }
        network = address
        self.length = length
    }

    /// Whether `address` lies inside the prefix (same family, same leading bits).
    public func contains(_ address: IPAddress) -> Bool {
        guard address.family == network.family else { return false }
        let left = Self.bytes(network), right = Self.bytes(address)
        var remaining = length
        for index in left.indices where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if left[index] & mask != right[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    public var description: String { "\(network)/\(length)" }

    /// The address in network order, 4 or 16 bytes.
    static func bytes(_ address: IPAddress) -> [UInt8] {
        switch address {
        case .v4(let raw): return withUnsafeBytes(of: raw) { Array($0) }
        case .v6(let high, let low): return withUnsafeBytes(of: high) { Array($0) } + withUnsafeBytes(of: low) { Array($0) }
        }
    }
}

extension ConfigurationLoader {
    static let prometheusKeys = ["listen", "probe"]
    static let blackboxKeys = ["allow", "modules", "max_concurrent", "max_per_second"]
    static let moduleKeys = ["prober", "count", "spacing", "timeout", "family", "mode"]

    /// Reads `prometheus:`; null or `{}` turns the exporter on with every default.
    static func readPrometheus(_ node: Node, reader: inout Reader) -> PrometheusSettings? {
        var settings = PrometheusSettings()
        guard let entries = reader.entries(of: node, section: "prometheus", known: prometheusKeys) else { return nil }
        if let listen = entries["listen"], let text = reader.string(listen, "listen") {
            if let (host, port) = parseListen(text) {
                settings.host = host
                settings.port = port
            } else {
                reader.error(listen, "listen must be ADDRESS:PORT with a numeric address, e.g. '127.0.0.1:\(PrometheusSettings.defaultPort)' or '[::1]:\(PrometheusSettings.defaultPort)', got '\(text)'")
            }
        }
        if let probeNode = entries["probe"], let probe = reader.entries(of: probeNode, section: "prometheus probe", known: blackboxKeys) {
            if let allow = probe["allow"] { readAllowList(allow, into: &settings.probe, reader: &reader) }
            if let value = probe["max_concurrent"], let maximum = reader.integer(value, "max_concurrent", in: 1...1024) {
                settings.probe.maximumConcurrent = maximum
            }
            if let value = probe["max_per_second"], let maximum = reader.integer(value, "max_per_second", in: 1...10_000) {
                settings.probe.maximumPerSecond = maximum
            }
            if let modules = probe["modules"] { readModules(modules, into: &settings.probe, reader: &reader) }
        }
        return settings
    }

    /// `HOST:PORT` or `[V6]:PORT` with a numeric address.
    static func parseListen(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard IPAddress(parsing: host) != nil, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        return (host, port)
    }

    private static func readAllowList(_ node: Node, into settings: inout BlackboxSettings, reader: inout Reader) {
        if node.isNull { return }
        guard case .sequence(let items) = node else {
            reader.error(node, "allow must be a list of host names and address prefixes, e.g. [\"127.0.0.0/8\", \"db1.example.com\"], got \(node.shownAs)")
            return
        }
        for item in items {
            guard let text = reader.name(item, "an allow entry") else { continue }
            if text.contains("/") || IPAddress(parsing: Resolver.bareName(text)) != nil {
                if let prefix = AddressPrefix(parsing: Resolver.bareName(text)) {
                    if prefix.length == 0 {
                        reader.error(item, "allow entry '\(text)' allows every address, so anyone who can reach the port could make netprobe probe anything; list the prefixes you mean")
                    } else {
                        settings.allowedPrefixes.append(prefix)
                    }
                } else {
                    reader.error(item, "allow entry '\(text)' is not an address prefix; write ADDRESS/LENGTH, e.g. 10.0.0.0/8 or 2001:db8::/32")
                }
            } else if !Self.isHostName(text) {
                reader.error(item, "allow entry '\(text)' is neither a host name nor an address prefix")
            } else {
                settings.allowedNames.append(text.lowercased())
            }
        }
    }

    static func isHostName(_ text: String) -> Bool {
        guard text.utf8.count <= 253 else { return false }
        return text.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "." || scalar == "-" || scalar == "_")
        }
    }

    private static func readModules(_ node: Node, into settings: inout BlackboxSettings, reader: inout Reader) {
        if node.isNull { return }
        guard case .mapping(let mapping) = node else {
            reader.error(node, "modules must be a mapping of module names to their settings, e.g. {icmp_5: {prober: icmp, count: 5}}, got \(node.shownAs)")
            return
        }
        for (key, value) in mapping {
            guard let name = reader.name(key, "a module name") else { continue }
            guard name.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
                reader.error(key, "module name '\(name)' must be letters, digits, '_' or '-' (at most 64)")
                continue
            }
            guard let entries = reader.entries(of: value, section: "module \(name)", known: moduleKeys) else { continue }
            guard let proberNode = entries["prober"], let prober = reader.string(proberNode, "prober") else {
                reader.error(value, "module \(name) needs 'prober: icmp' or 'prober: tcp'")
                continue
            }
            guard let kind = ProbeKind(rawValue: prober) else {
                reader.error(proberNode, "prober must be icmp or tcp, got '\(prober)'")
                continue
            }
            var module = BlackboxModule(kind: kind)
            if let count = entries["count"], let value = reader.integer(count, "count", in: 1...100) { module.count = value }
            if let spacing = entries["spacing"], let value = reader.duration(spacing, "spacing", minimum: 1_000_000) { module.spacingNanoseconds = value }
            if let timeout = entries["timeout"], let value = reader.duration(timeout, "timeout", minimum: 1_000_000) {
                if value > 30_000_000_000 {
                    reader.error(timeout, "timeout must be at most 30s (a scrape waits for it), got \(Units.format(nanoseconds: value))")
                } else {
                    module.timeoutNanoseconds = value
                }
            }
            if let family = entries["family"], let text = reader.string(family, "family") {
                if let value = AddressPreference(rawValue: text) { module.family = value } else { reader.error(family, "family must be any, ipv4 or ipv6, got '\(text)'") }
            }
            if let mode = entries["mode"], let text = reader.string(mode, "mode") {
                if kind != .tcp {
                    reader.error(mode, "'mode' applies to tcp modules only; remove it from \(name)")
                } else if let value = TCPProbeMode(rawValue: text) {
                    module.tcpMode = value
                } else {
                    reader.error(mode, "mode must be \(TCPProbeMode.allCases.map(\.rawValue).joined(separator: " or ")), got '\(text)'")
                }
            }
            if Int64(module.count - 1) * module.spacingNanoseconds + module.timeoutNanoseconds > 30_000_000_000 {
                reader.error(key, "module \(name): (count - 1) × spacing + timeout is more than 30s; a scrape would time out first")
                continue
            }
            settings.modules[name] = module
        }
    }
}
