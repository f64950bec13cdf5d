import FoundationEssentials

/// netprobe's data schema (README "Schema"): one point per target and round, plus the
/// self-monitoring measurement. Dashboards and users depend on these names.
public enum Schema {
    /// Tag keys of the round points.
    public enum Tag {
        public static let probe = "probe", env = "env", target = "target", address = "address", family = "family"
        /// TCP only.
        public static let port = "port", mode = "mode"
        /// Only when set (`PacketOptions`): the TOS byte as its DSCP name ("ef", "af41",
        /// "cs6") where it has one, else in decimal ("4"); absent for class 0.
        public static let tos = "tos"
        /// Only when set: the source address and the interface the probes leave by.
        public static let source = "source", interface = "interface"

        /// Every tag key of the schema: a user's label may not take one of these names.
        public static let all = [probe, env, target, address, family, port, mode, tos, source, interface]
    }

    /// The `tos` tag's value: the DSCP name where the code point has one (what a network
    /// engineer filters by), else the byte in decimal; nil for 0, which is no tag at all
    /// (series of targets without a class keep the keys they had).
    public static func tosTagValue(_ tos: UInt8) -> String? {
        guard tos != 0 else { return nil }
        return TrafficClass.name(tos) ?? String(tos)
    }

    /// Field keys of the round points.
    public enum Field {
        public static let sent = "sent", received = "received", duplicates = "duplicates", late = "late", lossPercent = "loss_percent"
        /// Present only when something was received.
        public static let rttMinimum = "rtt_min_ms", rttAverage = "rtt_avg_ms", rttMaximum = "rtt_max_ms", rttMedian = "rtt_median_ms",
                          rttStandardDeviation = "rtt_stddev_ms", jitter = "jitter_ms"
        /// ICMP, when known.
        public static let ttl = "ttl"
        /// TCP only.
        public static let completed = "completed"
        public static let result = "result", resultCode = "result_code"
        /// ICMP with don't-fragment: attempts answered "too big", and the smallest MTU named.
        public static let tooBig = "too_big", pathMTU = "path_mtu"
    }

    /// Every tag and field key a round point of `kind` may carry (README's schema table).
    public static func keys(of kind: ProbeKind) -> [String] {
        let tags = [Tag.probe, Tag.env, Tag.target, Tag.address, Tag.family] + (kind == .tcp ? [Tag.port, Tag.mode] : [])
            + [Tag.tos, Tag.source, Tag.interface]
        let fields = [Field.sent, Field.received, Field.duplicates, Field.late, Field.lossPercent, Field.rttMinimum, Field.rttAverage,
                      Field.rttMaximum, Field.rttMedian, Field.rttStandardDeviation, Field.jitter]
            + (kind == .tcp ? [Field.completed] : [Field.ttl]) + [Field.result, Field.resultCode]
            + (kind == .icmp ? [Field.tooBig, Field.pathMTU] : [])
        return tags + fields
    }

    /// The point of one round.
    /// - Parameters:
    ///   - round: what the prober measured.
    ///   - env: the targets file's group.
    ///   - probe: this probe's name.
    public static func point(for round: RoundResult, env: String, probe: String) -> DataPoint {
        DataPoint(measurement: round.kind.rawValue, tags: tags(for: round, env: env, probe: probe), fields: fields(for: round),
                    timestampNanoseconds: timestamp(of: round))
    }

    /// The tags of a round's point: what tells its series apart.
    public static func tags(for round: RoundResult, env: String, probe: String) -> [String: String] {
        // Labels first: the config refuses a label named as a schema tag, and the schema's
        // own values win even so.
        var tags = round.target.labels
        tags[Tag.probe] = probe
        tags[Tag.env] = env
        tags[Tag.target] = round.target.name
        let options = round.target.options
        if let tos = tosTagValue(options.tos) { tags[Tag.tos] = tos }
        if let source = options.source { tags[Tag.source] = source.description }
        if let interface = options.interface { tags[Tag.interface] = interface }
        if let address = round.target.address {
            tags[Tag.address] = address.description
            tags[Tag.family] = address.family.rawValue
        }
        if round.kind == .tcp {
            if let port = round.target.port { tags[Tag.port] = String(port) }
            if let mode = round.tcpMode { tags[Tag.mode] = mode.rawValue }
        }
        return tags
    }

    /// The fields of a round's point, in the order they are written.
    public static func fields(for round: RoundResult) -> [(key: String, value: FieldValue)] {
        var list = FieldList()
        list.fields.reserveCapacity(14)
        writeFields(of: round, to: &list)
        return list.fields
    }

    /// A round point's fields, in the order they are written: a sink that prepares its keys
    /// once (InfluxSink's line encoder) indexes them by `rawValue`.
    public enum RoundField: Int, CaseIterable, Sendable {
        case sent, received, duplicates, late, lossPercent
        case rttMinimum, rttAverage, rttMaximum, rttMedian, rttStandardDeviation, jitter
        case ttl, completed, result, resultCode, tooBig, pathMTU

        /// The field's key in every store.
        public var key: String {
            switch self {
            case .sent: return Field.sent
            case .received: return Field.received
            case .duplicates: return Field.duplicates
            case .late: return Field.late
            case .lossPercent: return Field.lossPercent
            case .rttMinimum: return Field.rttMinimum
            case .rttAverage: return Field.rttAverage
            case .rttMaximum: return Field.rttMaximum
            case .rttMedian: return Field.rttMedian
            case .rttStandardDeviation: return Field.rttStandardDeviation
            case .jitter: return Field.jitter
            case .ttl: return Field.ttl
            case .completed: return Field.completed
            case .result: return Field.result
            case .resultCode: return Field.resultCode
            case .tooBig: return Field.tooBig
            case .pathMTU: return Field.pathMTU
            }
        }
    }

    /// The one definition of a round's fields and their order: `fields(for:)` collects
    /// them, a sink's encoder (InfluxSink's `RoundLineEncoder`) writes them straight into
    /// its line.
    public static func writeFields(of round: RoundResult, to out: inout some RoundFieldSink) {
        out.field(RoundField.sent, .integer(Int64(round.sent)))
        out.field(RoundField.received, .integer(Int64(round.received)))
        out.field(RoundField.duplicates, .integer(Int64(round.duplicates)))
        out.field(RoundField.late, .integer(Int64(round.late)))
        out.field(RoundField.lossPercent, .float(round.lossPercent))
        if let stats = round.statistics {
            out.field(RoundField.rttMinimum, .float(stats.minimum))
            out.field(RoundField.rttAverage, .float(stats.average))
            out.field(RoundField.rttMaximum, .float(stats.maximum))
            out.field(RoundField.rttMedian, .float(stats.median))
            out.field(RoundField.rttStandardDeviation, .float(stats.standardDeviation))
            out.field(RoundField.jitter, .float(stats.jitter))
        }
        if let ttl = round.ttl { out.field(RoundField.ttl, .integer(Int64(ttl))) }
        if round.kind == .tcp { out.field(RoundField.completed, .integer(Int64(round.completed))) }
        out.field(RoundField.result, .string(round.outcome.rawValue))
        out.field(RoundField.resultCode, .integer(Int64(round.outcome.code)))
        if round.kind == .icmp, round.target.options.fragmentation != nil || round.tooBig > 0 {
            out.field(RoundField.tooBig, .integer(Int64(round.tooBig)))
            if let mtu = round.pathMTU { out.field(RoundField.pathMTU, .integer(Int64(mtu))) }
        }
    }

    private struct FieldList: RoundFieldSink {
        var fields: [(key: String, value: FieldValue)] = []
        mutating func field(_ field: RoundField, _ value: FieldValue) { fields.append((field.key, value)) }
    }

    /// Whole microseconds: a stable value matters (a replayed point must overwrite, not
    /// add), and a repeating round's start is its planned instant, so consecutive points
    /// of a target are exactly one interval apart.
    public static func timestamp(of round: RoundResult) -> Int64 {
        round.startNanoseconds / 1000 * 1000
    }

    public static func nanoseconds(_ date: Date) -> Int64 {
        // Whole microseconds, then scaled: a Double holds the epoch in nanoseconds only to
        // ~256 ns, and a stable value matters (a replayed point must overwrite, not add).
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) * 1000
    }
}

/// Where `Schema.writeFields` puts a round's fields.
public protocol RoundFieldSink {
    mutating func field(_ field: Schema.RoundField, _ value: FieldValue)
}

/// What `run` counts between two self-monitoring points.
public struct SelfMonitor: Sendable {
    public private(set) var rounds = 0
    /// Rounds cut short by a stop and not written (repeating rounds are written whole or not at all).
    public private(set) var roundsAbandoned = 0
    var kernelTimestamps = 0
    var userTimestamps = 0
    var slipMaximumMilliseconds = 0.0
    var slipTotalMilliseconds = 0.0
    var slipSamples = 0

    public init() {}

    public mutating func countAbandoned() {
        roundsAbandoned += 1
    }

    public mutating func count(_ round: RoundResult) {
        rounds += 1
        kernelTimestamps += round.kernelTimestamps
        userTimestamps += round.userTimestamps
        if let slip = round.scheduleSlipMilliseconds {
            slipMaximumMilliseconds = max(slipMaximumMilliseconds, slip)
            slipTotalMilliseconds += slip
            slipSamples += 1
        }
    }

    /// The `netprobe` measurement: one point for the probe, one per InfluxDB server.
    /// `suppressedLogLines` and `resolveFailures` are cumulative: warnings the log's rate
    /// limit held back, and name lookups that failed.
    public func points(probe: String, servers: [ServerStatistics], suppressedLogLines: Int, resolveFailures: Int, now: Date) -> [DataPoint] {
        let time = Schema.nanoseconds(now)
        var result = [DataPoint(measurement: "netprobe", tags: ["probe": probe], fields: [
            ("rounds", .integer(Int64(rounds))),
            ("rounds_abandoned", .integer(Int64(roundsAbandoned))),
            ("kernel_timestamps", .integer(Int64(kernelTimestamps))),
            ("user_timestamps", .integer(Int64(userTimestamps))),
            ("schedule_slip_max_ms", .float(slipMaximumMilliseconds)),
            ("schedule_slip_avg_ms", .float(slipSamples > 0 ? slipTotalMilliseconds / Double(slipSamples) : 0)),
            ("log_lines_suppressed", .integer(Int64(suppressedLogLines))),
            ("resolve_failures", .integer(Int64(resolveFailures))),
        ], timestampNanoseconds: time)]
        for server in servers {
            result.append(DataPoint(measurement: "netprobe", tags: ["probe": probe, "server": server.name], fields: [
                ("points_produced", .integer(Int64(server.produced))),
                ("points_written", .integer(Int64(server.written))),
                ("points_spooled", .integer(Int64(server.spooled))),
                ("points_buffered", .integer(Int64(server.buffered))),
                ("points_dropped", .integer(Int64(server.dropped))),
                ("spool_errors", .integer(Int64(server.spoolErrors))),
                ("retried", .integer(Int64(server.retried))),
                ("queue_depth", .integer(Int64(server.spooled))),
                ("send_errors", .integer(Int64(server.sendErrors))),
                ("permanent_errors", .integer(Int64(server.permanentErrors))),
            ], timestampNanoseconds: time))
        }
        return result
    }
}
