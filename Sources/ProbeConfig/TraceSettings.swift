import Yams

/// Path traces during `netprobe run`, from the `trace:` section of the config file:
///
/// ```yaml
/// trace:
///   icmp: 5m          # trace every ping target every 5 minutes (absent: never)
///   tcp: 5m           # trace every tcp target with TCP SYNs every 5 minutes
///   rounds: 10        # rounds per trace (one probe per hop each)
///   spacing: 1s       # time between two rounds of a trace
///   timeout: 1s
///   max_hops: 30
///   mtu: false        # true: don't-fragment ICMP traces that find the path MTU (path_mtu)
/// ```
public struct TraceSettings: Sendable, Equatable {
    /// How often the ping targets are traced (`icmp`); nil: never.
    public var icmpIntervalNanoseconds: Int64?
    /// How often the tcp targets are traced with TCP SYNs (`tcp`); nil: never.
    public var tcpIntervalNanoseconds: Int64?
    /// Rounds per trace (`rounds`).
    public var rounds: Int
    /// Time between two rounds of a trace (`spacing`).
    public var spacingNanoseconds: Int64
    /// How long each probe waits (`timeout`).
    public var timeoutNanoseconds: Int64
    /// The largest TTL probed (`max_hops`).
    public var maxHops: Int
    /// ICMP traces find the path MTU (`mtu`), as `netprobe trace --mtu`: `path` points get
    /// `path_mtu`, and a change of it writes a new one.
    public var mtu: Bool

    public init(icmpIntervalNanoseconds: Int64? = nil, tcpIntervalNanoseconds: Int64? = nil, rounds: Int = 10, spacingNanoseconds: Int64 = 1_000_000_000,
                timeoutNanoseconds: Int64 = 1_000_000_000, maxHops: Int = 30, mtu: Bool = false) {
        self.mtu = mtu
        self.icmpIntervalNanoseconds = icmpIntervalNanoseconds
        self.tcpIntervalNanoseconds = tcpIntervalNanoseconds
        self.rounds = rounds
        self.spacingNanoseconds = spacingNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.maxHops = maxHops
    }

    /// No traces (the default).
    public static let off = TraceSettings()

    /// True when some kind is traced.
    public var isEnabled: Bool { icmpIntervalNanoseconds != nil || tcpIntervalNanoseconds != nil }

    /// How long one trace lasts: its rounds, then the last probe's timeout.
    public var traceNanoseconds: Int64 { Int64(rounds - 1) * spacingNanoseconds + timeoutNanoseconds }

    static let keys = ["icmp", "tcp", "rounds", "spacing", "timeout", "max_hops", "mtu"]

    /// Reads the section, checking that a trace fits its interval.
    static func read(_ node: Node, reader: inout Reader) -> TraceSettings {
        var settings = TraceSettings.off
        guard let entries = reader.entries(of: node, section: "trace", known: keys) else { return settings }
        for (key, kind) in [("icmp", "ping"), ("tcp", "tcp")] {
            guard let value = entries[key], !value.isNull else { continue }
            guard let interval = reader.duration(value, "trace \(key) (how often the \(kind) targets are traced)", minimum: 1_000_000_000) else { continue }
            if key == "icmp" { settings.icmpIntervalNanoseconds = interval } else { settings.tcpIntervalNanoseconds = interval }
        }
        if let value = entries["rounds"], let rounds = reader.integer(value, "rounds", in: 1...1000) { settings.rounds = rounds }
        if let value = entries["spacing"], let spacing = reader.duration(value, "spacing", minimum: 10_000_000) { settings.spacingNanoseconds = spacing }
        if let value = entries["timeout"], let timeout = reader.duration(value, "timeout", minimum: 1_000_000) { settings.timeoutNanoseconds = timeout }
        if let value = entries["max_hops"], let hops = reader.integer(value, "max_hops", in: 1...255) { settings.maxHops = hops }
        if let value = entries["mtu"], let mtu = reader.boolean(value, "mtu") { settings.mtu = mtu }
        if settings.mtu, settings.icmpIntervalNanoseconds == nil, let keyNode = entries.keyNode("mtu") {
            reader.error(keyNode, "trace mtu: true finds the path MTU of ICMP traces, and no ping target is traced: add `icmp: INTERVAL` (TCP SYN traces carry no payload to size)")
        }
        for (key, interval) in [("icmp", settings.icmpIntervalNanoseconds), ("tcp", settings.tcpIntervalNanoseconds)] {
            guard let interval, let keyNode = entries.keyNode(key), interval < settings.traceNanoseconds else { continue }
            reader.error(keyNode, "trace \(key): a trace lasts (rounds - 1) × spacing + timeout = \(Units.format(nanoseconds: settings.traceNanoseconds)), longer than its interval \(Units.format(nanoseconds: interval)); raise the interval or lower rounds or spacing")
        }
        return settings
    }
}
