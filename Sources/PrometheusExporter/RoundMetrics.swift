import FoundationEssentials
import InfluxSink
import NIOCore
import ProbeEngine
import ProbeService

/// What `/metrics` shows: per target, the last round's RTT statistics and loss, counters
/// since the start, and an RTT histogram; plus netprobe's own counters. Fed by `run`'s
/// writer (`RoundObserver`), read by the HTTP server: one lock, held for a few
/// microseconds on either side (a scrape holds it only to copy the targets' values).
public final class RoundMetrics: RoundObserver, Sendable {
    /// A target's identity: its series keep one label set for as long as it is probed.
    /// The address family is not part of it: a round whose name did not resolve keeps the
    /// family of the last address (a label that came and went with DNS would start new
    /// series, and the PromQL panels would lose the old ones).
    struct SeriesKey: Hashable {
        var kind: ProbeKind
        var probe: String
        var env: String
        var target: String
        var port: String
        var mode: String

        static func < (left: SeriesKey, right: SeriesKey) -> Bool {
            (left.kind.rawValue, left.env, left.target, left.port, left.mode, left.probe) < (right.kind.rawValue, right.env, right.target, right.port, right.mode, right.probe)
        }
    }

    /// One target's state.
    struct Series {
        let key: SeriesKey
        /// The family of the last address ("" until the name first resolves).
        var family: String
        /// The labels of every sample of the target: the schema's tag keys (Schema.Tag), so
        /// a PromQL query and an InfluxQL one read alike. Rendered when the family changes.
        var labels: LabelSet
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

        init(key: SeriesKey, family: String, last: RoundResult, updated: Int64) {
            self.key = key
            self.family = family
            labels = Self.labels(key, family: family)
            self.last = last
            self.updated = updated
        }

        static func labels(_ key: SeriesKey, family: String) -> LabelSet {
            var labels = [(Schema.Tag.probe, key.probe), (Schema.Tag.env, key.env), (Schema.Tag.target, key.target), (Schema.Tag.family, family)]
            if key.kind == .tcp { labels += [(Schema.Tag.port, key.port), (Schema.Tag.mode, key.mode)] }
            return LabelSet(labels)
        }
    }

    struct State {
        var index: [SeriesKey: Int] = [:]
        var series: [Series] = []
        /// Positions of `series` in exposition order; nil once a target came or went.
        var order: [Int]?
        var rounds: [ProbeKind: Int] = [:]
        var roundsAbandoned = 0
        var kernelTimestamps = 0
        var userTimestamps = 0
        var slip = Histogram(bounds: Histogram.slipBounds)
        var source: SelfMonitoringSource?
        var probe = ""
        /// `/probe` requests by status code, written by the blackbox handler.
        var probeRequests: [Int: Int] = [:]
    }

    private let state = Locked(State())
    /// The HTTP server's connections (closed by reason, open now); nil without a server.
    let connections: ConnectionRegistry?
    /// How long a target may stay silent before its series go, in gaps between its rounds.
    static let retireAfterGaps: Int64 = 5
    /// The size of the pieces `/metrics` is handed to the server in.
    public static let chunkSize = 64 * 1024

    init(connections: ConnectionRegistry?) {
        self.connections = connections
    }

    public convenience init() {
        self.init(connections: nil)
    }

    public func observe(_ round: RoundResult, env: String, probe: String) {
        let key = SeriesKey(kind: round.kind, probe: probe, env: env, target: round.target.name,
                            port: round.target.port.map { String($0) } ?? "", mode: round.tcpMode?.rawValue ?? "")
        let family = round.target.address?.family.rawValue
        let now = Clock.monotonicNanoseconds()
        state.withLock { state in
            state.probe = probe
            state.rounds[round.kind, default: 0] += 1
            state.kernelTimestamps += round.kernelTimestamps
            state.userTimestamps += round.userTimestamps
            if let slip = round.scheduleSlipMilliseconds { state.slip.observe(max(0, slip) / 1000) }
            let position: Int
            if let existing = state.index[key] {
                position = existing
            } else {
                position = state.series.count
                state.series.append(Series(key: key, family: family ?? "", last: round, updated: now))
                state.index[key] = position
                state.order = nil
            }
            state.series[position].update(with: round, family: family, now: now)
        }
    }

    public func observeAbandoned(_ target: ProbeTarget) {
        state.withLock { $0.roundsAbandoned += 1 }
    }

    public func attach(_ source: SelfMonitoringSource) {
        state.withLock { $0.source = source }
    }

    /// Counts one answered `/probe` request.
    func countProbeRequest(status: Int) {
        state.withLock { $0.probeRequests[status, default: 0] += 1 }
    }

    /// What one scrape shows, copied under the lock: the targets in exposition order and
    /// the self-monitoring counters. Retires targets silent for `retireAfterGaps` of their
    /// intervals (removed by a reload), so the exposition does not grow without end.
    struct Snapshot {
        var series: [Series]
        var monitor: State
    }

    func snapshot(now: Int64 = Clock.monotonicNanoseconds()) -> Snapshot {
        state.withLock { state in
            let retired = state.series.contains { $0.gap != 0 && now - $0.updated > $0.gap * Self.retireAfterGaps }
            if retired {
                state.series.removeAll { $0.gap != 0 && now - $0.updated > $0.gap * Self.retireAfterGaps }
                state.index = Dictionary(uniqueKeysWithValues: state.series.enumerated().map { ($1.key, $0) })
                state.order = nil
            }
            if state.order == nil {
                state.order = state.series.indices.sorted { state.series[$0].key < state.series[$1].key }
            }
            var monitor = state
            monitor.series = []
            monitor.index = [:]
            monitor.order = nil
            return Snapshot(series: state.order!.map { state.series[$0] }, monitor: monitor)
        }
    }

    /// Writes the `/metrics` exposition, handing it to `sink` in chunks of about
    /// `chunkSize` bytes as they fill: a scrape holds one chunk and the snapshot, never
    /// the whole answer (10,000 targets: some 40 MB of text).
    public func write(_ format: ExpositionFormat, chunkSize: Int = RoundMetrics.chunkSize, to sink: (ByteBuffer) async throws -> Void) async rethrows {
        let snapshot = snapshot()
        var writer = ExpositionWriter(format: format, capacity: chunkSize + chunkSize / 4)
        let icmpEnd = snapshot.series.firstIndex { $0.key.kind != .icmp } ?? snapshot.series.endIndex
        for (kind, series) in [(ProbeKind.icmp, snapshot.series[..<icmpEnd]), (.tcp, snapshot.series[icmpEnd...])] where !series.isEmpty {
            for family in Self.targetFamilies(kind) {
                writer.family(family.name, family.type, help: family.help)
                for target in series {
                    family.write(target, &writer)
                    if writer.buffer.readableBytes >= chunkSize { try await sink(writer.takeChunk()) }
                }
            }
        }
        writeSelfMonitoring(snapshot.monitor, into: &writer)
        writer.finish()
        try await sink(writer.takeChunk())
    }

    /// The whole exposition as text (tests, small runs).
    public func render(_ format: ExpositionFormat) async -> String {
        var text = ""
        await write(format) { chunk in text += String(buffer: chunk) }
        return text
    }

    /// One per-target metric family: its name, type, help, and what a target writes.
    struct TargetFamily {
        var name: String
        var type: MetricType
        var help: String
        var write: (Series, inout ExpositionWriter) -> Void
    }

    /// The per-target families of a kind, in exposition order.
    static func targetFamilies(_ kind: ProbeKind) -> [TargetFamily] {
        let what = kind == .icmp ? "ICMP echo round trip" : "TCP handshake (SYN to SYN-ACK)"
        var families: [TargetFamily] = []
        let statistics: [(field: String, help: String, value: (RTTStatistics) -> Double)] = [
            (Schema.Field.rttMinimum, "minimum", \.minimum), (Schema.Field.rttAverage, "average", \.average),
            (Schema.Field.rttMaximum, "maximum", \.maximum), (Schema.Field.rttMedian, "median", \.median),
            (Schema.Field.rttStandardDeviation, "standard deviation", \.standardDeviation), (Schema.Field.jitter, "jitter (mean difference of consecutive RTTs)", \.jitter),
        ]
        for statistic in statistics {
            let name = Schema.Prometheus.gauge(kind, statistic.field)
            families.append(TargetFamily(name: name, type: .gauge, help: "\(what) time of the last round, \(statistic.help), in seconds; absent when the round received nothing.") { series, writer in
                if let stats = series.last.statistics { writer.sample(name, series.labels, statistic.value(stats) / 1000) }
            })
        }
        let loss = Schema.Prometheus.gauge(kind, Schema.Field.lossPercent)
        families.append(TargetFamily(name: loss, type: .gauge, help: "Share of the last round's \(kind == .icmp ? "echo requests" : "handshakes") without a timely answer, 0 to 1.") { series, writer in
            writer.sample(loss, series.labels, series.last.lossPercent / 100)
        })
        if kind == .icmp {
            let ttl = Schema.Prometheus.gauge(kind, Schema.Field.ttl)
            families.append(TargetFamily(name: ttl, type: .gauge, help: "TTL (IPv4) or hop limit (IPv6) of the last reply.") { series, writer in
                if let hops = series.last.ttl { writer.sample(ttl, series.labels, Double(hops)) }
            })
        }
        let code = Schema.Prometheus.gauge(kind, Schema.Field.resultCode)
        families.append(TargetFamily(name: code, type: .gauge, help: "The last round's result as its code: 0 ok, 1 timeout, 2 unreachable, 3 unresolved, 4 error, 5 refused.") { series, writer in
            writer.sample(code, series.labels, Double(series.last.outcome.code))
        })
        let started = Schema.Prometheus.lastRoundTimestamp(kind)
        families.append(TargetFamily(name: started, type: .gauge, help: "Start of the last round, in seconds since the epoch.") { series, writer in
            writer.sample(started, series.labels, Double(series.last.startNanoseconds / 1000) / 1e6)
        })
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
            families.append(TargetFamily(name: name, type: .counter, help: counter.help) { series, writer in
                writer.sample(name, series.labels, Double(counter.value(series)))
            })
        }
        let outcomes = Schema.Prometheus.outcomes(kind)
        families.append(TargetFamily(name: outcomes, type: .counter, help: "Attempts by outcome (\(Schema.Field.result) values: ok, refused, timeout, unreachable, error).") { series, writer in
            for (outcome, count) in series.outcomes.sorted(by: { $0.key.code < $1.key.code }) {
                writer.sample(outcomes, series.labels, extra: (Schema.Field.result, outcome.rawValue), Double(count))
            }
        })
        let rounds = Schema.Prometheus.rounds(kind)
        families.append(TargetFamily(name: rounds, type: .counter, help: "Rounds by result (ok when anything was answered; unresolved when the name did not resolve).") { series, writer in
            for (outcome, count) in series.rounds.sorted(by: { $0.key.code < $1.key.code }) {
                writer.sample(rounds, series.labels, extra: (Schema.Field.result, outcome.rawValue), Double(count))
            }
        })
        let histogram = Schema.Prometheus.rttHistogram(kind)
        families.append(TargetFamily(name: histogram, type: .histogram, help: "Every \(what) time, in seconds (smokeping_prober's buckets: 50us doubling to 26.2s).") { series, writer in
            writer.histogram(histogram, series.labels, series.rtt)
        })
        return families
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
        writer.family("netprobe_probe_requests_total", .counter, help: "/probe requests answered, by HTTP status code.")
        for (code, count) in monitor.probeRequests.sorted(by: { $0.key < $1.key }) {
            writer.sample("netprobe_probe_requests_total", [("code", String(code))], Double(count))
        }
        if let connections {
            writer.family("netprobe_http_connections_closed_total", .counter, help: "HTTP connections the server closed itself, by reason (header_timeout, idle, evicted, busy, response_timeout, malformed).")
            let closures = connections.closures
            for closure in ConnectionClosure.allCases {
                writer.sample("netprobe_http_connections_closed_total", probe + [("reason", closure.rawValue)], Double(closures[closure] ?? 0))
            }
            let open = connections.open
            writer.family("netprobe_http_connections", .gauge, help: "HTTP connections open now: waiting for a request header, or being answered.")
            writer.sample("netprobe_http_connections", probe + [("state", "waiting")], Double(open.waiting))
            writer.sample("netprobe_http_connections", probe + [("state", "serving")], Double(open.serving))
        }
    }
}

extension RoundMetrics.Series {
    /// Adds a round: the last values, the counters, the histogram, and the family when
    /// the round has an address.
    mutating func update(with round: RoundResult, family newFamily: String?, now: Int64) {
        if let newFamily, newFamily != family {
            family = newFamily
            labels = Self.labels(key, family: newFamily)
        }
        gap = now - updated
        updated = now
        last = round
        sent += round.sent
        received += round.received
        late += round.late
        duplicates += round.duplicates
        completed += round.completed
        for (outcome, count) in round.outcomeCounts where count > 0 { outcomes[outcome, default: 0] += count }
        rounds[round.outcome, default: 0] += 1
        for sample in round.rttsMilliseconds { rtt.observe(sample / 1000) }
    }
}
