import FoundationEssentials
import InfluxSink
import ProbeEngine
import ProbeService

/// What `/metrics` shows: per target, the last round's RTT statistics and loss, counters
/// since the start, and an RTT histogram; plus netprobe's own counters. Fed by `run`'s
/// writer (`RoundObserver`), read by the HTTP server: one lock, held for a few
/// microseconds on either side.
public final class RoundMetrics: RoundObserver, Sendable {
    /// The labels of one target's series, in the order they are written. Label names are
    /// the schema's tag keys (Schema.Tag), so a PromQL query and an InfluxQL one read alike.
    struct SeriesKey: Hashable {
        var kind: ProbeKind
        var probe: String
        var env: String
        var target: String
        var family: String
        var port: String
        var mode: String

        var labels: [(String, String)] {
            var labels = [(Schema.Tag.probe, probe), (Schema.Tag.env, env), (Schema.Tag.target, target), (Schema.Tag.family, family)]
            if kind == .tcp { labels += [(Schema.Tag.port, port), (Schema.Tag.mode, mode)] }
            return labels
        }
    }

    /// One target's state.
    struct Series {
        var last: RoundResult
        var sent = 0
        var received = 0
        var late = 0
        var duplicates = 0
        var completed = 0
        /// Attempts by outcome, and rounds by result.
        var outcomes: [ProbeOutcome: Int] = [:]
        var rounds: [ProbeOutcome: Int] = [:]
        var rtt = Histogram(bounds: Histogram.rttBounds)
        /// Monotonic time of the last round, and the gap before it (to retire a target that
        /// a reload removed).
        var updated: Int64
        var gap: Int64 = 0
    }

    struct State {
        var series: [SeriesKey: Series] = [:]
        var rounds: [ProbeKind: Int] = [:]
        var roundsAbandoned = 0
        var kernelTimestamps = 0
        var userTimestamps = 0
        var slip = Histogram(bounds: Histogram.slipBounds)
        var source: SelfMonitoringSource?
        var probe = ""
    }

    private let state = Locked(State())
    /// `/probe` requests by status code, written by the blackbox handler.
    let probeRequests = Locked([Int: Int]())
    /// How long a target may stay silent before its series go, in gaps between its rounds.
    static let retireAfterGaps: Int64 = 5

    public init() {}

    public func observe(_ round: RoundResult, env: String, probe: String) {
        let key = SeriesKey(kind: round.kind, probe: probe, env: env, target: round.target.name,
                            family: round.target.address?.family.rawValue ?? "", port: round.target.port.map { String($0) } ?? "",
                            mode: round.tcpMode?.rawValue ?? "")
        let now = Clock.monotonicNanoseconds()
        state.withLock { state in
            state.probe = probe
            state.rounds[round.kind, default: 0] += 1
            state.kernelTimestamps += round.kernelTimestamps
            state.userTimestamps += round.userTimestamps
            if let slip = round.scheduleSlipMilliseconds { state.slip.observe(max(0, slip) / 1000) }
            var series = state.series[key] ?? Series(last: round, updated: now)
            series.gap = now - series.updated
            series.updated = now
            series.last = round
            series.sent += round.sent
            series.received += round.received
            series.late += round.late
            series.duplicates += round.duplicates
            series.completed += round.completed
            for (outcome, count) in round.outcomeCounts where count > 0 { series.outcomes[outcome, default: 0] += count }
            series.rounds[round.outcome, default: 0] += 1
            for rtt in round.rttsMilliseconds { series.rtt.observe(rtt / 1000) }
            state.series[key] = series
        }
    }

    public func observeAbandoned(_ target: ProbeTarget) {
        state.withLock { $0.roundsAbandoned += 1 }
    }

    public func attach(_ source: SelfMonitoringSource) {
        state.withLock { $0.source = source }
    }

    /// The `/metrics` exposition.
    public func render(_ format: ExpositionFormat) -> String {
        let now = Clock.monotonicNanoseconds()
        let (series, monitor) = state.withLock { state -> ([(SeriesKey, Series)], State) in
            // A target removed by a reload sends no more rounds: its series go after a few
            // of its intervals of silence, so the exposition does not grow without end.
            state.series = state.series.filter { _, series in series.gap == 0 || now - series.updated <= series.gap * Self.retireAfterGaps }
            var copy = state
            copy.series = [:]
            return (state.series.sorted { Self.order($0.key, $1.key) }, copy)
        }
        var writer = ExpositionWriter(format: format)
        for kind in [ProbeKind.icmp, .tcp] {
            let ofKind = series.filter { $0.0.kind == kind }
            guard !ofKind.isEmpty else { continue }
            Self.writeTargets(kind, ofKind, into: &writer)
        }
        writeSelfMonitoring(monitor, into: &writer)
        let requests = probeRequests.withLock { $0 }
        writer.family("netprobe_probe_requests_total", .counter, help: "/probe requests answered, by HTTP status code.")
        for (code, count) in requests.sorted(by: { $0.key < $1.key }) {
            writer.sample("netprobe_probe_requests_total", [("code", String(code))], Double(count))
        }
        return writer.finished()
    }

    static func order(_ left: SeriesKey, _ right: SeriesKey) -> Bool {
        (left.kind.rawValue, left.env, left.target, left.port, left.family, left.mode) < (right.kind.rawValue, right.env, right.target, right.port, right.family, right.mode)
    }

    private static func writeTargets(_ kind: ProbeKind, _ series: [(SeriesKey, Series)], into writer: inout ExpositionWriter) {
        let what = kind == .icmp ? "ICMP echo round trip" : "TCP handshake (SYN to SYN-ACK)"
        let statistics: [(field: String, help: String, value: (RTTStatistics) -> Double)] = [
            (Schema.Field.rttMinimum, "minimum", \.minimum), (Schema.Field.rttAverage, "average", \.average),
            (Schema.Field.rttMaximum, "maximum", \.maximum), (Schema.Field.rttMedian, "median", \.median),
            (Schema.Field.rttStandardDeviation, "standard deviation", \.standardDeviation), (Schema.Field.jitter, "jitter (mean difference of consecutive RTTs)", \.jitter),
        ]
        for statistic in statistics {
            let name = Schema.Prometheus.gauge(kind, statistic.field)
            writer.family(name, .gauge, help: "\(what) time of the last round, \(statistic.help), in seconds; absent when the round received nothing.")
            for (key, value) in series {
                if let stats = value.last.statistics { writer.sample(name, key.labels, statistic.value(stats) / 1000) }
            }
        }
        let loss = Schema.Prometheus.gauge(kind, Schema.Field.lossPercent)
        writer.family(loss, .gauge, help: "Share of the last round's \(kind == .icmp ? "echo requests" : "handshakes") without a timely answer, 0 to 1.")
        for (key, value) in series { writer.sample(loss, key.labels, value.last.lossPercent / 100) }
        if kind == .icmp {
            let ttl = Schema.Prometheus.gauge(kind, Schema.Field.ttl)
            writer.family(ttl, .gauge, help: "TTL (IPv4) or hop limit (IPv6) of the last reply.")
            for (key, value) in series { if let hops = value.last.ttl { writer.sample(ttl, key.labels, Double(hops)) } }
        }
        let code = Schema.Prometheus.gauge(kind, Schema.Field.resultCode)
        writer.family(code, .gauge, help: "The last round's result as its code: 0 ok, 1 timeout, 2 unreachable, 3 unresolved, 4 error, 5 refused.")
        for (key, value) in series { writer.sample(code, key.labels, Double(value.last.outcome.code)) }
        let started = Schema.Prometheus.lastRoundTimestamp(kind)
        writer.family(started, .gauge, help: "Start of the last round, in seconds since the epoch.")
        for (key, value) in series { writer.sample(started, key.labels, Double(value.last.startNanoseconds / 1000) / 1e6) }

        var counters: [(field: String, help: String, value: (Series) -> Int)] = [
            (Schema.Field.sent, kind == .icmp ? "Echo requests sent." : "Handshakes started.", \.sent),
            (Schema.Field.received, kind == .icmp ? "Distinct timely echo replies." : "Handshakes answered with SYN-ACK in time.", \.received),
        ]
        if kind == .icmp {
            counters += [(Schema.Field.late, "Replies after the timeout (counted as lost).", \.late),
                         (Schema.Field.duplicates, "Extra copies of replies already counted.", \.duplicates)]
        } else {
            counters.append((Schema.Field.completed, "Handshakes the server saw completed (our ACK reached it).", \.completed))
        }
        for counter in counters {
            let name = Schema.Prometheus.counter(kind, counter.field)
            writer.family(name, .counter, help: counter.help)
            for (key, value) in series { writer.sample(name, key.labels, Double(counter.value(value))) }
        }
        let outcomes = Schema.Prometheus.outcomes(kind)
        writer.family(outcomes, .counter, help: "Attempts by outcome (\(Schema.Field.result) values: ok, refused, timeout, unreachable, error).")
        for (key, value) in series {
            for (outcome, count) in value.outcomes.sorted(by: { $0.key.code < $1.key.code }) {
                writer.sample(outcomes, key.labels + [(Schema.Field.result, outcome.rawValue)], Double(count))
            }
        }
        let rounds = Schema.Prometheus.rounds(kind)
        writer.family(rounds, .counter, help: "Rounds by result (ok when anything was answered; unresolved when the name did not resolve).")
        for (key, value) in series {
            for (outcome, count) in value.rounds.sorted(by: { $0.key.code < $1.key.code }) {
                writer.sample(rounds, key.labels + [(Schema.Field.result, outcome.rawValue)], Double(count))
            }
        }
        let histogram = Schema.Prometheus.rttHistogram(kind)
        writer.family(histogram, .histogram, help: "Every \(what) time, in seconds (smokeping_prober's buckets: 50us doubling to 26.2s).")
        for (key, value) in series { writer.histogram(histogram, key.labels, value.rtt) }
    }

    private func writeSelfMonitoring(_ monitor: State, into writer: inout ExpositionWriter) {
        let probe = [(Schema.Tag.probe, monitor.probe)]
        writer.family("netprobe_rounds_total", .counter, help: "Rounds written, by kind.")
        for kind in [ProbeKind.icmp, .tcp] { writer.sample("netprobe_rounds_total", probe + [("kind", kind.rawValue)], Double(monitor.rounds[kind] ?? 0)) }
        writer.family("netprobe_rounds_abandoned_total", .counter, help: "Rounds cut short by a stop and not written.")
        writer.sample("netprobe_rounds_abandoned_total", probe, Double(monitor.roundsAbandoned))
        writer.family("netprobe_timestamps_total", .counter, help: "RTT samples by where their time came from (kernel: SO_TIMESTAMPING or TCP_INFO; user: a user-space clock).")
        writer.sample("netprobe_timestamps_total", probe + [("source", "kernel")], Double(monitor.kernelTimestamps))
        writer.sample("netprobe_timestamps_total", probe + [("source", "user")], Double(monitor.userTimestamps))
        writer.family("netprobe_schedule_slip_seconds", .histogram, help: "How late each round's first probe left against its plan.")
        writer.histogram("netprobe_schedule_slip_seconds", probe, monitor.slip)
        writer.family("netprobe_log_lines_suppressed_total", .counter, help: "Warnings the log's rate limit held back.")
        writer.sample("netprobe_log_lines_suppressed_total", probe, Double(monitor.source?.suppressedLogLines() ?? 0))
        writer.family("netprobe_resolve_failures_total", .counter, help: "Name lookups that failed.")
        writer.sample("netprobe_resolve_failures_total", probe, Double(monitor.source?.resolveFailures() ?? 0))
        let servers = monitor.source?.servers() ?? []
        let counters: [(String, String, (ServerStatistics) -> Int)] = [
            ("points_produced", "Points handed to the server's queue.", \.produced), ("points_written", "Points the server acknowledged.", \.written),
            ("points_dropped", "Points thrown away (spool over its limit, unencodable, left in memory at exit).", \.dropped),
            ("retried", "Requests repeated after a retryable failure.", \.retried), ("send_errors", "Failed requests of any kind.", \.sendErrors),
            ("permanent_errors", "Points the server refused for good (dead-letter file).", \.permanentErrors),
            ("spool_errors", "Writes to the spool that failed.", \.spoolErrors),
        ]
        for (field, help, value) in counters {
            let name = "netprobe_sink_\(field)_total"
            writer.family(name, .counter, help: help)
            for server in servers { writer.sample(name, probe + [("server", server.name)], Double(value(server))) }
        }
        let gauges: [(String, String, (ServerStatistics) -> Int)] = [
            ("points_spooled", "Points not yet acknowledged (on disk or in memory).", \.spooled),
            ("points_buffered", "Of those, points held in memory because the spool could not write them.", \.buffered),
        ]
        for (field, help, value) in gauges {
            let name = "netprobe_sink_\(field)"
            writer.family(name, .gauge, help: help)
            for server in servers { writer.sample(name, probe + [("server", server.name)], Double(value(server))) }
        }
    }

    /// Counts one answered `/probe` request.
    func countProbeRequest(status: Int) {
        probeRequests.withLock { $0[status, default: 0] += 1 }
    }
}
