import FoundationEssentials
import InfluxSink
import ProbeEngine

/// netprobe's data schema (README "Schema"): one point per target and round, plus the
/// self-monitoring measurement. Dashboards and users depend on these names.
public enum Schema {
    /// Tag keys of the round points.
    public enum Tag {
        public static let probe = "probe", env = "env", target = "target", address = "address", family = "family"
        /// TCP only.
        public static let port = "port", mode = "mode"
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
    }

    /// Every tag and field key a round point of `kind` may carry (README's schema table).
    public static func keys(of kind: ProbeKind) -> [String] {
        let tags = [Tag.probe, Tag.env, Tag.target, Tag.address, Tag.family] + (kind == .tcp ? [Tag.port, Tag.mode] : [])
        let fields = [Field.sent, Field.received, Field.duplicates, Field.late, Field.lossPercent, Field.rttMinimum, Field.rttAverage,
                      Field.rttMaximum, Field.rttMedian, Field.rttStandardDeviation, Field.jitter]
            + (kind == .tcp ? [Field.completed] : [Field.ttl]) + [Field.result, Field.resultCode]
        return tags + fields
    }

    /// The point of one round.
    /// - Parameters:
    ///   - round: what the prober measured.
    ///   - env: the targets file's group.
    ///   - probe: this probe's name.
    public static func point(for round: RoundResult, env: String, probe: String) -> InfluxPoint {
        InfluxPoint(measurement: round.kind.rawValue, tags: tags(for: round, env: env, probe: probe), fields: fields(for: round),
                    timestampNanoseconds: timestamp(of: round))
    }

    /// The tags of a round's point: what tells its series apart.
    public static func tags(for round: RoundResult, env: String, probe: String) -> [String: String] {
        var tags = [Tag.probe: probe, Tag.env: env, Tag.target: round.target.name]
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
        var fields: [(key: String, value: FieldValue)] = []
        fields.reserveCapacity(14)
        fields += [
            (Field.sent, .integer(Int64(round.sent))),
            (Field.received, .integer(Int64(round.received))),
            (Field.duplicates, .integer(Int64(round.duplicates))),
            (Field.late, .integer(Int64(round.late))),
            (Field.lossPercent, .float(round.lossPercent)),
        ]
        if let stats = round.statistics {
            fields += [
                (Field.rttMinimum, .float(stats.minimum)), (Field.rttAverage, .float(stats.average)), (Field.rttMaximum, .float(stats.maximum)),
                (Field.rttMedian, .float(stats.median)), (Field.rttStandardDeviation, .float(stats.standardDeviation)), (Field.jitter, .float(stats.jitter)),
            ]
        }
        if let ttl = round.ttl { fields.append((Field.ttl, .integer(Int64(ttl)))) }
        if round.kind == .tcp { fields.append((Field.completed, .integer(Int64(round.completed)))) }
        fields.append((Field.result, .string(round.outcome.rawValue)))
        fields.append((Field.resultCode, .integer(Int64(round.outcome.code))))
        return fields
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

/// Round points as line protocol, the series key (measurement and escaped tags) of each
/// target made once and reused until its tags change: the same lines as
/// `LineProtocol.encode(Schema.point(...))`, for a fraction of the work per round.
struct RoundLineEncoder {
    private struct Series: Equatable {
        var kind: ProbeKind
        var name: String
        var env: String
        var address: IPAddress?
        var port: UInt16?
        var mode: TCPProbeMode?
    }

    let probe: String
    private var keys: [ProbeKind: [Int: (series: Series, key: String?)]] = [:]

    init(probe: String) {
        self.probe = probe
    }

    /// The round's line; nil when it cannot be written (no measurement).
    mutating func line(for round: RoundResult, env: String) -> String? {
        let series = Series(kind: round.kind, name: round.target.name, env: env, address: round.target.address, port: round.target.port,
                            mode: round.kind == .tcp ? round.tcpMode : nil)
        let key: String?
        if let cached = keys[round.kind]?[round.targetIndex], cached.series == series {
            key = cached.key
        } else {
            key = LineProtocol.seriesKey(measurement: round.kind.rawValue, tags: Schema.tags(for: round, env: env, probe: probe))
            keys[round.kind, default: [:]][round.targetIndex] = (series, key)
        }
        guard let key else { return nil }
        return LineProtocol.line(seriesKey: key, fields: Schema.fields(for: round), timestampNanoseconds: Schema.timestamp(of: round))
    }
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
    public func points(probe: String, servers: [ServerStatistics], suppressedLogLines: Int, resolveFailures: Int, now: Date) -> [InfluxPoint] {
        let time = Schema.nanoseconds(now)
        var result = [InfluxPoint(measurement: "netprobe", tags: ["probe": probe], fields: [
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
            result.append(InfluxPoint(measurement: "netprobe", tags: ["probe": probe, "server": server.name], fields: [
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
