import ProbeResults

/// How one kind of probe (ICMP echo or TCP handshake) is run, from the `icmp:` or `tcp:`
/// section of the config file.
public struct ProbeSettings: Sendable, Equatable {
    /// Time between the starts of two rounds to the same target (`interval`).
    public var intervalNanoseconds: Int64
    /// Packets (or handshakes) per target per round (`count`).
    public var count: Int
    /// Time between two packets of one round to the same target (`spacing`).
    public var spacingNanoseconds: Int64
    /// How long to wait for each reply (`timeout`).
    public var timeoutNanoseconds: Int64
    /// ICMP payload bytes (`size`); unused for TCP.
    public var payloadSize: Int
    /// IP time-to-live / hop limit of sent packets (`ttl`); nil keeps the system default.
    public var ttl: Int?
    /// Which address family to use (`family`).
    public var family: AddressPreference
    /// TCP only: how handshakes end (`mode`: half-open, the default, or connect).
    public var tcpMode: TCPProbeMode
    /// The section's `tos`, `source` and `interface`: what a target that does not set its
    /// own is probed with. Applied to the targets when the files are read, so a change
    /// moves the targets it touches rather than restarting the run.
    public var packetDefaults: PacketDefaults = .none

    /// - Parameters:
    ///   - intervalNanoseconds: time between two rounds.
    ///   - count: packets per target per round.
    ///   - spacingNanoseconds: time between two packets of a round.
    ///   - timeoutNanoseconds: how long to wait for each reply.
    ///   - payloadSize: ICMP payload bytes.
    ///   - ttl: time-to-live, nil for the system default.
    ///   - family: address family preference.
    ///   - tcpMode: TCP only: half-open or full connections.
    public init(
        intervalNanoseconds: Int64 = 10_000_000_000,
        count: Int = 5,
        spacingNanoseconds: Int64 = 200_000_000,
        timeoutNanoseconds: Int64 = 1_000_000_000,
        payloadSize: Int = 56,
        ttl: Int? = nil,
        family: AddressPreference = .any,
        tcpMode: TCPProbeMode = .halfOpen
    ) {
        self.tcpMode = tcpMode
        self.intervalNanoseconds = intervalNanoseconds
        self.count = count
        self.spacingNanoseconds = spacingNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.payloadSize = payloadSize
        self.ttl = ttl
        self.family = family
    }

    /// The values used for any key the file leaves out: 5 packets 200ms apart every 10s,
    /// 1s timeout, 56-byte payload (as ping), system TTL, any family, half-open TCP.
    public static let defaults = ProbeSettings()
}

/// The packet options of a section (`icmp:` / `tcp:`) or of a per-target entry: the TOS
/// classes (one target per class), the source address and the interface.
public struct PacketDefaults: Sendable, Equatable {
    /// The TOS bytes, in file order, each giving a target (and a series) of its own; [0]
    /// unless set.
    public var tos: [UInt8]
    /// The source address; nil: the route's.
    public var source: IPAddress?
    /// The interface; nil: the route's.
    public var interface: String?
    /// `icmp:`'s `dont_fragment`: true sets DF on every echo request (ping -M probe),
    /// false never (ping -M dont); nil: the kernel's default.
    public var fragmentation: Fragmentation?

    public init(tos: [UInt8] = [0], source: IPAddress? = nil, interface: String? = nil, fragmentation: Fragmentation? = nil) {
        self.tos = tos
        self.source = source
        self.interface = interface
        self.fragmentation = fragmentation
    }

    /// Nothing set: class 0, the route's source and interface.
    public static let none = PacketDefaults()

    /// The options of each class, in order.
    public var options: [PacketOptions] {
        tos.map { PacketOptions(tos: $0, source: source, interface: interface, fragmentation: fragmentation) }
    }
}

/// One InfluxDB server from the `influxdb:` list.
public struct InfluxServerSettings: Sendable, Equatable {
    /// Distinct name of the server (`name`, default host[:port] of the URL): used in logs
    /// and to keep each server's queue and spool apart.
    public var name: String
    /// Base URL, e.g. `https://influx.example.com:8086` (no `/write` path).
    public var url: String
    /// API version and its settings.
    public var api: InfluxAPI
    /// PEM file of the CA that signed the server's certificate (https only), path resolved
    /// against the config file's directory.
    public var caFile: String?
    /// Whether to gzip request bodies.
    public var gzip: Bool

    /// - Parameters:
    ///   - name: distinct server name.
    ///   - url: base URL.
    ///   - api: API version and its settings.
    ///   - caFile: CA certificate file for https.
    ///   - gzip: whether to gzip request bodies.
    public init(name: String, url: String, api: InfluxAPI, caFile: String? = nil, gzip: Bool = true) {
        self.name = name
        self.url = url
        self.api = api
        self.caFile = caFile
        self.gzip = gzip
    }
}

/// One host to ping, from a ping targets file.
public struct PingTarget: Sendable, Equatable {
    /// The group the host is listed under, exactly as written; becomes the `env` tag.
    public var env: String
    /// Host name or address, exactly as written.
    public var host: String
    /// The targets file it comes from.
    public var file: String
    /// 1-based line of the host in that file, for messages about it.
    public var line: Int
    /// TOS, source and interface (the entry's own, else the `icmp:` section's); a `tos`
    /// list gives one target per class.
    public var options: PacketOptions = .none
    /// The entry's `labels`, written as tags.
    public var labels: [String: String] = [:]

    /// - Parameters:
    ///   - env: group name.
    ///   - host: host name or address.
    ///   - file: targets file.
    ///   - line: line of the host in that file.
    ///   - options: the packet options.
    ///   - labels: the labels.
    public init(env: String, host: String, file: String, line: Int, options: PacketOptions = .none, labels: [String: String] = [:]) {
        self.env = env
        self.host = host
        self.file = file
        self.line = line
        self.options = options
        self.labels = labels
    }
}

/// One host and port to connect to, from a tcp targets file (a host with a list of
/// ports gives one target per port).
public struct TCPTarget: Sendable, Equatable {
    /// The group the host is listed under, exactly as written; becomes the `env` tag.
    public var env: String
    /// Host name or address, exactly as written.
    public var host: String
    /// TCP port, 1...65535.
    public var port: UInt16
    /// The targets file it comes from.
    public var file: String
    /// 1-based line of the host in that file.
    public var line: Int
    /// TOS, source and interface (the entry's own, else the `tcp:` section's); a `tos`
    /// list gives one target per class.
    public var options: PacketOptions = .none
    /// The entry's `labels`, written as tags.
    public var labels: [String: String] = [:]

    /// - Parameters:
    ///   - env: group name.
    ///   - host: host name or address.
    ///   - port: TCP port.
    ///   - file: targets file.
    ///   - line: line of the host in that file.
    ///   - options: the packet options.
    ///   - labels: the labels.
    public init(env: String, host: String, port: UInt16, file: String, line: Int, options: PacketOptions = .none, labels: [String: String] = [:]) {
        self.env = env
        self.host = host
        self.port = port
        self.file = file
        self.line = line
        self.options = options
        self.labels = labels
    }
}

/// Everything `netprobe run` needs, loaded and validated: defaults, then the file's
/// values, then checks across them.
public struct NetprobeConfiguration: Sendable, Equatable {
    /// The config file, as given.
    public var file: String
    /// The `probe` tag (`probe`, default the machine's host name).
    public var probeName: String
    /// ICMP settings (`icmp:`).
    public var icmp: ProbeSettings
    /// TCP settings (`tcp:`); `payloadSize` and `ttl` are unused.
    public var tcp: ProbeSettings
    /// The ping targets file (resolved against the config's directory); nil when
    /// `targets: ping: null` turns ICMP probing off.
    public var pingTargetsPath: String?
    /// The tcp targets file; nil when `targets: tcp: null` turns TCP probing off.
    public var tcpTargetsPath: String?
    /// Where results are written, in file order.
    public var influxServers: [InfluxServerSettings]
    /// Where results wait while a server is unreachable (`spool: directory`).
    public var spoolDirectory: String
    /// Most bytes the spool may hold (`spool: max_size`); oldest data goes first.
    public var spoolMaximumBytes: Int64
    /// Points per write request (`batch: size`).
    public var batchSize: Int
    /// Longest time a point waits before its batch is sent (`batch: flush_interval`).
    public var flushIntervalNanoseconds: Int64
    /// How often host names are resolved again (`resolve_interval`).
    public var resolveIntervalNanoseconds: Int64
    /// Hosts to ping, in file order.
    public var pingTargets: [PingTarget]
    /// Hosts and ports to connect to, in file order.
    public var tcpTargets: [TCPTarget]
    /// Things that work but look unintended, for `validate` and `run` to print.
    public var warnings: [ConfigurationWarning]
    /// This instance's share of the targets (`shard:`); nil: all of them.
    public var shard: ShardSettings? = nil
    /// How often `run` checks the config, targets and peers files for a change, which
    /// reloads them as SIGHUP does (`watch_interval`); nil (the default): only on SIGHUP.
    public var watchIntervalNanoseconds: Int64? = nil
    /// The ping targets file's mesh groups (peers lists), in file order.
    public var meshGroups: [MeshGroup] = []

    /// The files a change of which is a reload: the config, the targets files and the
    /// peers files (what `run` watches).
    public var sourceFiles: [String] {
        var files = [file]
        if let pingTargetsPath { files.append(pingTargetsPath) }
        if let tcpTargetsPath { files.append(tcpTargetsPath) }
        for group in meshGroups { if case .file(let path) = group.source { files.append(path) } }
        return files
    }
    /// Path traces (`trace:`); off unless configured.
    public var trace: TraceSettings = .off
    /// The Prometheus exporter (`prometheus:`); nil (off) when the section is absent.
    public var prometheus: PrometheusSettings? = nil
    /// The live view (`web:`); nil (off) when the section is absent or `enabled: false`.
    /// When on, it shares prometheus' server: both have the same host and port.
    public var web: WebSettings? = nil

    /// - Parameters: one per property; see each property.
    public init(
        file: String,
        probeName: String,
        icmp: ProbeSettings = .defaults,
        tcp: ProbeSettings = .defaults,
        pingTargetsPath: String? = nil,
        tcpTargetsPath: String? = nil,
        influxServers: [InfluxServerSettings] = [],
        spoolDirectory: String = "/var/lib/netprobe/spool",
        spoolMaximumBytes: Int64 = 256_000_000,
        batchSize: Int = 5000,
        flushIntervalNanoseconds: Int64 = 1_000_000_000,
        resolveIntervalNanoseconds: Int64 = 300_000_000_000,
        pingTargets: [PingTarget] = [],
        tcpTargets: [TCPTarget] = [],
        warnings: [ConfigurationWarning] = []
    ) {
        self.file = file
        self.probeName = probeName
        self.icmp = icmp
        self.tcp = tcp
        self.pingTargetsPath = pingTargetsPath
        self.tcpTargetsPath = tcpTargetsPath
        self.influxServers = influxServers
        self.spoolDirectory = spoolDirectory
        self.spoolMaximumBytes = spoolMaximumBytes
        self.batchSize = batchSize
        self.flushIntervalNanoseconds = flushIntervalNanoseconds
        self.resolveIntervalNanoseconds = resolveIntervalNanoseconds
        self.pingTargets = pingTargets
        self.tcpTargets = tcpTargets
        self.warnings = warnings
    }
}
