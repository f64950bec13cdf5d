import FoundationEssentials
import InfluxSink
import ProbeEngine

/// netprobe's data schema (README "Schema"): one point per target and round, plus the
/// self-monitoring measurement. Dashboards and users depend on these names.
enum Schema {
    /// The point of one round.
    /// - Parameters:
    ///   - round: what the prober measured.
    ///   - env: the targets file's group.
    ///   - probe: this probe's name.
    static func point(for round: RoundResult, env: String, probe: String) -> InfluxPoint {
        var tags = ["probe": probe, "env": env, "target": round.target.name]
        if let address = round.target.address {
            tags["address"] = address.description
            tags["family"] = address.family.rawValue
        }
        if round.kind == .tcp, let port = round.target.port { tags["port"] = String(port) }
        var fields: [(key: String, value: FieldValue)] = [
            ("sent", .integer(Int64(round.sent))),
            ("received", .integer(Int64(round.received))),
            ("duplicates", .integer(Int64(round.duplicates))),
            ("late", .integer(Int64(round.late))),
            ("loss_percent", .float(round.lossPercent)),
        ]
        if let stats = round.statistics {
            fields += [
                ("rtt_min_ms", .float(stats.minimum)), ("rtt_avg_ms", .float(stats.average)), ("rtt_max_ms", .float(stats.maximum)),
                ("rtt_median_ms", .float(stats.median)), ("rtt_stddev_ms", .float(stats.standardDeviation)), ("jitter_ms", .float(stats.jitter)),
            ]
        }
        if let ttl = round.ttl { fields.append(("ttl", .integer(Int64(ttl)))) }
        fields.append(("result", .string(round.outcome.rawValue)))
        fields.append(("result_code", .integer(Int64(round.outcome.code))))
        return InfluxPoint(measurement: round.kind.rawValue, tags: tags, fields: fields, timestampNanoseconds: nanoseconds(round.startTime))
    }

    static func nanoseconds(_ date: Date) -> Int64 {
        // Whole microseconds, then scaled: a Double holds the epoch in nanoseconds only to
        // ~256 ns, and a stable value matters (a replayed point must overwrite, not add).
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) * 1000
    }
}

/// What `run` counts between two self-monitoring points.
struct SelfMonitor: Sendable {
    var rounds = 0
    var kernelTimestamps = 0
    var userTimestamps = 0
    var slipMaximumMilliseconds = 0.0
    var slipTotalMilliseconds = 0.0
    var slipSamples = 0

    mutating func count(_ round: RoundResult) {
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
    func points(probe: String, servers: [ServerStatistics], suppressedLogLines: Int, resolveFailures: Int, now: Date) -> [InfluxPoint] {
        let time = Schema.nanoseconds(now)
        var result = [InfluxPoint(measurement: "netprobe", tags: ["probe": probe], fields: [
            ("rounds", .integer(Int64(rounds))),
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
