import ProbeResults
import Yams

/// The `prometheus:` section: the `/metrics` endpoint of `netprobe run` and its
/// blackbox_exporter-compatible `/probe`. Off unless the section is present.
public struct PrometheusSettings: Sendable, Equatable {
    /// The default port, 19156. Prometheus' "Default port allocations" list (its wiki) has
    /// given out every port from 9100 to 9999 (9156 is the WebDriver exporter's), and
    /// Prometheus' guide for writing exporters recommends a port outside that range for
    /// exporters not on the list; 19156 is below Linux's ephemeral range (32768-60999), so
    /// no outgoing connection takes it first, and is registered to no service in IANA's list.
    public static let defaultPort = 19156

    /// Prometheus' scrape timeout when a scrape config sets none: what `validate` holds
    /// `/probe` modules against.
    public static let defaultScrapeTimeoutNanoseconds: Int64 = 10_000_000_000

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

/// A host name `/probe` may look up (an `allow` entry).
public struct AllowedName: Sendable, Equatable {
    /// Lower-cased, without a trailing dot.
    public var name: String
    /// `{name: X, any_address: true}`: whatever the name resolves to may be probed (its DNS
    /// is trusted). Otherwise each of its addresses must lie inside an allowed prefix too.
    public var anyAddress: Bool

    public init(_ name: String, anyAddress: Bool = false) {
        self.name = name
        self.anyAddress = anyAddress
    }
}

/// `prometheus: probe:`, the multi-target `/probe` endpoint.
public struct BlackboxSettings: Sendable, Equatable {
    /// Host names `/probe` may look up (`allow`, compared case-insensitively). A name
    /// only permits the lookup: the addresses it gives are checked against the prefixes
    /// like any other, unless the entry says `any_address: true`.
    public var allowedNames: [AllowedName]
    /// Address prefixes every probed address must lie in (`allow`, CIDR): a literal
    /// address `target`, and each address an allowed name resolves to.
    public var allowedPrefixes: [AddressPrefix]
    /// Modules by name (`modules`); `icmp` and `tcp` exist unless redefined.
    public var modules: [String: BlackboxModule]
    /// Most `/probe` requests probing at once (`max_concurrent`); more get 503.
    public var maximumConcurrent: Int
    /// Most `/probe` requests accepted per second (`max_per_second`, a token bucket with a
    /// burst of as many); more get 429.
    public var maximumPerSecond: Int
    /// How much sooner than the scrape timeout Prometheus sends
    /// (`X-Prometheus-Scrape-Timeout-Seconds`) a `/probe` answers (`timeout_offset`, as
    /// blackbox_exporter's `--timeout-offset`): the answer must reach Prometheus in time.
    public var timeoutOffsetNanoseconds: Int64

    public static let defaultTimeoutOffsetNanoseconds: Int64 = 500_000_000

    public init(allowedNames: [AllowedName] = [], allowedPrefixes: [AddressPrefix] = [], modules: [String: BlackboxModule] = BlackboxModule.defaults,
                maximumConcurrent: Int = 16, maximumPerSecond: Int = 50, timeoutOffsetNanoseconds: Int64 = BlackboxSettings.defaultTimeoutOffsetNanoseconds) {
        self.allowedNames = allowedNames
        self.allowedPrefixes = allowedPrefixes
        self.modules = modules
        self.maximumConcurrent = maximumConcurrent
        self.maximumPerSecond = maximumPerSecond
        self.timeoutOffsetNanoseconds = timeoutOffsetNanoseconds
    }

    /// What a `/probe` of each module takes at most, for `validate`.
    public var moduleSummary: String {
        let modules = modules.sorted { $0.key < $1.key }.map { "\($0.key) \(Units.format(nanoseconds: $0.value.worstCaseNanoseconds))" }
        return "/probe modules, longest answer each ((count - 1) × spacing + timeout, plus at most 5s of lookup for a target given by name): \(modules.joined(separator: ", ")); "
            + "a scrape's X-Prometheus-Scrape-Timeout-Seconds minus timeout_offset (\(Units.format(nanoseconds: timeoutOffsetNanoseconds))) caps the whole answer, lookup included"
    }

    /// Whether `address` lies inside an allowed prefix.
    public func allows(_ address: IPAddress) -> Bool {
        allowedPrefixes.contains { $0.contains(address) }
    }

    /// The allow entry of a host name (any case, with or without the trailing dot).
    public func allowedName(_ name: String) -> AllowedName? {
        var key = name.lowercased()
        if key.hasSuffix(".") { key.removeLast() }
        return allowedNames.first { $0.name == key }
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
    /// The packets' class, source address and interface (`tos`, `source_ip_address` as
    /// blackbox_exporter names it, `interface`); none by default.
    public var options: PacketOptions
    /// ICMP only: echo payload bytes (`size`, or blackbox's `payload_size`); 56 as ping.
    public var payloadSize: Int

    public init(kind: ProbeKind, count: Int = 1, spacingNanoseconds: Int64 = 100_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                family: AddressPreference = .any, tcpMode: TCPProbeMode = .halfOpen, options: PacketOptions = .none, payloadSize: Int = 56) {
        self.options = options
        self.payloadSize = payloadSize
        self.kind = kind
        self.count = count
        self.spacingNanoseconds = spacingNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.family = family
        self.tcpMode = tcpMode
    }

    /// The longest a probe of this module takes when nothing answers: (count - 1) ×
    /// spacing + timeout. A `/probe` answer comes within this (plus the name lookup, which
    /// shares the budget) or within the scrape's timeout, whichever is shorter.
    public var worstCaseNanoseconds: Int64 {
        Int64(count - 1) * spacingNanoseconds + timeoutNanoseconds
    }

    /// `icmp` (one echo, 1 s timeout) and `tcp` (one half-open handshake, 1 s timeout), as
    /// blackbox_exporter's example modules: one packet per probe; `tcp_connect`, the name
    /// blackbox's example config gives its TCP module, is `tcp` (half-open: it measures the
    /// same SYN to SYN-ACK and leaves nothing on the server).
    public static let defaults: [String: BlackboxModule] = ["icmp": BlackboxModule(kind: .icmp), "tcp": BlackboxModule(kind: .tcp),
                                                            "tcp_connect": BlackboxModule(kind: .tcp)]
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
        let left = network.bytes, right = address.bytes
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
}

extension ConfigurationLoader {
    static let prometheusKeys = ["listen", "probe"]
    static let blackboxKeys = ["allow", "modules", "max_concurrent", "max_per_second", "timeout_offset"]
    static let allowNameKeys = ["name", "any_address"]
    static let moduleKeys = ["prober", "count", "spacing", "timeout", "family", "mode", "tos", "source_ip_address", "interface", "dont_fragment", "size", "payload_size"]

    /// Reads `prometheus:`; null or `{}` turns the exporter on with every default.
    static func readPrometheus(_ node: Node, reader: inout Reader) -> PrometheusSettings? {
        var settings = PrometheusSettings()
        guard let entries = reader.entries(of: node, section: "prometheus", known: prometheusKeys) else { return nil }
        var listenNode: Node?
        if let listen = entries["listen"], let text = reader.string(listen, "listen") {
            if let (host, port) = parseListen(text) {
                settings.host = host
                settings.port = port
                listenNode = listen
            } else {
                reader.error(listen, "listen must be ADDRESS:PORT with a numeric address, e.g. '127.0.0.1:\(PrometheusSettings.defaultPort)' or '[::1]:\(PrometheusSettings.defaultPort)', got '\(text)'")
            }
        }
        if let probeNode = entries["probe"], let probe = reader.entries(of: probeNode, section: "prometheus probe", known: blackboxKeys) {
            if let allow = probe["allow"] { readAllowList(allow, into: &settings.probe, reader: &reader) }
            if let value = probe["timeout_offset"], let offset = reader.duration(value, "timeout_offset", minimum: 0) {
                if offset > 10_000_000_000 {
                    reader.error(value, "timeout_offset must be at most 10s (it is taken off the scrape timeout), got \(Units.format(nanoseconds: offset))")
                } else {
                    settings.probe.timeoutOffsetNanoseconds = offset
                }
            }
            if let value = probe["max_concurrent"], let maximum = reader.integer(value, "max_concurrent", in: 1...1024) {
                settings.probe.maximumConcurrent = maximum
            }
            if let value = probe["max_per_second"], let maximum = reader.integer(value, "max_per_second", in: 1...10_000) {
                settings.probe.maximumPerSecond = maximum
            }
            if let modules = probe["modules"] { readModules(modules, into: &settings.probe, reader: &reader) }
        }
        if let listenNode, let address = IPAddress(parsing: settings.host), address.isUnspecified, !settings.probe.allowedNames.isEmpty || !settings.probe.allowedPrefixes.isEmpty {
            reader.warning(listenNode, "listen \(settings.host) takes connections on every address of this host, and /probe is on: anyone who can reach port \(settings.port) can make netprobe send probes to the allowed targets; listen on 127.0.0.1 (Prometheus on this host) or one internal address, or firewall the port")
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
            reader.error(node, "allow must be a list of address prefixes and host names, e.g. [\"192.0.2.0/24\", \"db1.example.com\"], got \(node.shownAs)")
            return
        }
        for item in items {
            if case .mapping = item {
                readAllowedName(item, into: &settings, reader: &reader)
                continue
            }
            guard let text = reader.name(item, "an allow entry") else { continue }
            if text.contains("/") || IPAddress(parsing: IPAddress.bareName(text)) != nil {
                if let prefix = AddressPrefix(parsing: IPAddress.bareName(text)) {
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
                settings.allowedNames.append(AllowedName(normalizedHostName(text)))
            }
        }
        // A name permits its lookup only; its addresses must lie in a prefix. Without any
        // prefix no such name could ever be probed.
        let checked = settings.allowedNames.filter { !$0.anyAddress }
        if !checked.isEmpty && settings.allowedPrefixes.isEmpty {
            let example = checked[0].name
            reader.error(node, "allow names \(checked.map { "'\($0.name)'" }.joined(separator: ", ")) but no address prefix: a name only permits its lookup, and each address it resolves to must lie inside an allowed prefix, so none could be probed; add the prefixes its addresses lie in (e.g. \"192.0.2.0/24\"), or write {name: \(example), any_address: true} to probe whatever its DNS answers")
        }
    }

    /// `{name: HOST, any_address: true}`.
    private static func readAllowedName(_ node: Node, into settings: inout BlackboxSettings, reader: inout Reader) {
        guard let entries = reader.entries(of: node, section: "an allow entry", known: allowNameKeys) else { return }
        guard let nameNode = entries["name"], let text = reader.name(nameNode, "name") else {
            reader.error(node, "an allow entry written as a mapping needs 'name: HOST', e.g. {name: db1.example.com, any_address: true}")
            return
        }
        guard Self.isHostName(text), IPAddress(parsing: IPAddress.bareName(text)) == nil, !text.contains("/") else {
            reader.error(nameNode, "name '\(text)' is not a host name; list addresses and prefixes as plain entries, e.g. \"192.0.2.0/24\"")
            return
        }
        var anyAddress = false
        if let value = entries["any_address"], let flag = reader.boolean(value, "any_address") { anyAddress = flag }
        settings.allowedNames.append(AllowedName(normalizedHostName(text), anyAddress: anyAddress))
    }

    static func normalizedHostName(_ text: String) -> String {
        var name = text.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
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
            module.options = readModuleOptions(entries, module: name, family: module.family, reader: &reader)
            readModuleSize(entries, into: &module, name: name, reader: &reader)
            if module.worstCaseNanoseconds > 30_000_000_000 {
                reader.error(key, "module \(name): (count - 1) × spacing + timeout is more than 30s; a scrape would time out first")
                continue
            }
            let answerBy = PrometheusSettings.defaultScrapeTimeoutNanoseconds - settings.timeoutOffsetNanoseconds
            if module.worstCaseNanoseconds > answerBy {
                let fitting = module.count > 1 && module.timeoutNanoseconds < answerBy
                    ? Int((answerBy - module.timeoutNanoseconds) / module.spacingNanoseconds) + 1 : 1
                reader.warning(key, "module \(name): (count - 1) × spacing + timeout = \(Units.format(nanoseconds: module.worstCaseNanoseconds)); under Prometheus' default scrape_timeout of 10s, /probe answers after \(Units.format(nanoseconds: answerBy)) (the scrape timeout minus timeout_offset) with \(fitting == module.count ? "a shorter timeout" : "\(fitting) of its \(module.count) packets"); give the scrape job a scrape_timeout of at least \(Units.format(nanoseconds: module.worstCaseNanoseconds + settings.timeoutOffsetNanoseconds)), or lower count, spacing or timeout")
            }
            settings.modules[name] = module
        }
    }

    /// An icmp module's `dont_fragment` (blackbox's name: DF on every echo request, as
    /// `ping -M probe`; false: never, as `-M dont`) and `size` (payload bytes; blackbox
    /// calls it `payload_size`, also taken).
    private static func readModuleSize(_ entries: Entries, into module: inout BlackboxModule, name: String, reader: inout Reader) {
        for key in ["dont_fragment", "size", "payload_size"] {
            guard let node = entries[key] else { continue }
            guard module.kind == .icmp else {
                reader.error(node, "module \(name): '\(key)' applies to icmp modules only (TCP segments are sized by the kernel); remove it")
                return
            }
        }
        if entries["size"] != nil, let both = entries["payload_size"] {
            reader.error(both, "module \(name): give 'size' or blackbox's 'payload_size', not both")
        }
        for key in ["size", "payload_size"] {
            if let node = entries[key], let size = reader.integer(node, key, in: 12...65507) { module.payloadSize = size }
        }
        if let node = entries["dont_fragment"], let value = reader.boolean(node, "dont_fragment") {
            module.options.fragmentation = value ? .probe : .dont
        }
    }

    /// A module's `tos` (one class, as `-Q` takes it), `source_ip_address` and `interface`.
    /// Whether the address is this host's and the interface exists is checked when `run`
    /// starts (the config may be validated elsewhere).
    private static func readModuleOptions(_ entries: Entries, module name: String, family: AddressPreference, reader: inout Reader) -> PacketOptions {
        var options = PacketOptions.none
        if let node = entries["tos"] {
            if case .scalar(let scalar) = node, !node.isNull {
                do { options.tos = try TrafficClass.parse(scalar.string) } catch { reader.error(node, "module \(name): tos: \(error.description)") }
            } else {
                reader.error(node, "module \(name): tos must be one class, a TOS byte or a DSCP name (e.g. 'tos: ef'; a module probes one class), got \(node.shownAs)")
            }
        }
        if let node = entries["source_ip_address"], let text = reader.string(node, "source_ip_address") {
            if let address = IPAddress(parsing: text) {
                if (family == .ipv4Only && address.family != .ipv4) || (family == .ipv6Only && address.family != .ipv6) {
                    reader.error(node, "module \(name): source_ip_address \(address) is not of the module's family \(family.rawValue); give an address of that family or change 'family'")
                } else {
                    options.source = address
                }
            } else {
                reader.error(node, "module \(name): source_ip_address must be an IP address of this host, got '\(text)'; write an address such as 192.0.2.10 or 2001:db8::10 (a name is not looked up)")
            }
        }
        if let node = entries["interface"], let interface = reader.name(node, "interface") {
            if let problem = TargetsFiles.interfaceNameProblem(interface) {
                reader.error(node, "module \(name): \(problem)")
            } else {
                options.interface = interface
            }
        }
        return options
    }
}
