import FoundationEssentials
import NIOCore
import ProbeResults

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
        /// The target's packet options (tos, source, interface) and labels as label pairs,
        /// sorted by name: one target probed in two classes is two series, as in InfluxDB.
        var extra: [Pair] = []

        struct Pair: Hashable {
            var name: String
            var value: String
        }

        /// The extra labels of `target`, as `Schema.tags` writes them to InfluxDB.
        static func extra(of target: ProbeTarget) -> [Pair] {
            var pairs = target.labels.map { Pair(name: $0.key, value: $0.value) }
            let options = target.options
            if let tos = Schema.tosTagValue(options.tos) { pairs.append(Pair(name: Schema.Tag.tos, value: tos)) }
            if let source = options.source { pairs.append(Pair(name: Schema.Tag.source, value: source.description)) }
            if let interface = options.interface { pairs.append(Pair(name: Schema.Tag.interface, value: interface)) }
            return pairs.sorted { $0.name < $1.name }
        }

        static func < (left: SeriesKey, right: SeriesKey) -> Bool {
            let order = (left.kind.rawValue, left.env, left.target, left.port, left.mode, left.probe) < (right.kind.rawValue, right.env, right.target, right.port, right.mode, right.probe)
            guard (left.kind, left.env, left.target, left.port, left.mode, left.probe) == (right.kind, right.env, right.target, right.port, right.mode, right.probe) else { return order }
            return left.extra.map { "\($0.name)=\($0.value)" }.lexicographicallyPrecedes(right.extra.map { "\($0.name)=\($0.value)" })
        }
    }

    /// One target's state: its identity, the family its labels show, and its row.
    struct Series {
        let key: SeriesKey
        /// The family of the last address ("" until the name first resolves).
        var family: String
        var row: Row
        /// Monotonic time of the last round, and the gap before it (to retire a target that
        /// a reload removed).
        var updated: Int64
        var gap: Int64 = 0

        init(key: SeriesKey, family: String, updated: Int64) {
            self.key = key
            self.family = family
            row = Row(labels: Self.labels(key, family: family))
            self.updated = updated
        }

        static func labels(_ key: SeriesKey, family: String) -> [UInt8] {
            var labels = [(Schema.Tag.probe, key.probe), (Schema.Tag.env, key.env), (Schema.Tag.target, key.target), (Schema.Tag.family, family)]
            if key.kind == .tcp { labels += [(Schema.Tag.port, key.port), (Schema.Tag.mode, key.mode)] }
            labels += key.extra.map { ($0.name, $0.value) }
            return LabelSet(labels).bytes
        }
    }

    /// What `/metrics` shows of one target, held inline (the label bytes are its only heap
    /// storage): a scrape's snapshot is a copy of plain memory, and a round observed while
    /// a scrape is being written copies nothing on write.
    struct Row {
        /// The labels of every sample of the target: the schema's tag keys (Schema.Tag), so
        /// a PromQL query and an InfluxQL one read alike. Rendered when the family changes.
        var labels: [UInt8]
        /// The last round's.
        var statistics: RTTStatistics?
        var lossRatio = 0.0
        var ttl: Int?
        var outcome = ProbeOutcome.ok
        var startSeconds = 0.0
        var sent = 0
        var received = 0
        var late = 0
        var duplicates = 0
        var completed = 0
        /// Attempts, and rounds, by outcome code.
        var outcomes = InlineArray<7, Int>(repeating: 0)
        var rounds = InlineArray<7, Int>(repeating: 0)
        /// Every RTT, by `Histogram.rttBounds` bucket (each count in its bucket alone).
        var buckets = InlineArray<20, Int>(repeating: 0)
        var rttCount = 0
        var rttSum = 0.0

        init(labels: [UInt8]) {
            self.labels = labels
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
    /// The snapshot's storage, kept between scrapes: one allocation of every target's row
    /// (4 MB at 10,000 targets) for the process's life, instead of one per scrape, which
    /// malloc (two arenas, a moving mmap threshold) may come to hold once in each arena. A
    /// scrape that finds it taken (another scrape at the same time) allocates its own.
    private let spareRows = Locked<[Row]?>(nil)
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
                            port: round.target.port.map { String($0) } ?? "", mode: round.tcpMode?.rawValue ?? "", extra: SeriesKey.extra(of: round.target))
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
                state.series.append(Series(key: key, family: family ?? "", updated: now))
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

    /// What one scrape shows, copied under the lock: every target's row in exposition
    /// order (ICMP first), how many are ICMP, and the self-monitoring counters. Retires
    /// targets silent for `retireAfterGaps` of their intervals (removed by a reload), so
    /// the exposition does not grow without end.
    func snapshot(now: Int64 = Clock.monotonicNanoseconds()) -> (rows: [Row], icmpCount: Int, monitor: State) {
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
            let order = state.order!
            var rows = spareRows.withLock { spare in
                defer { spare = nil }
                return spare ?? []
            }
            rows.removeAll(keepingCapacity: true)
            rows.reserveCapacity(order.count)
            var icmpCount = 0
            for position in order {
                rows.append(state.series[position].row)
                if state.series[position].key.kind == .icmp { icmpCount += 1 }
            }
            var monitor = state
            monitor.series = []
            monitor.index = [:]
            monitor.order = nil
            return (rows, icmpCount, monitor)
        }
    }

    /// Writes the `/metrics` exposition, handing it to `sink` in chunks of about
    /// `chunkSize` bytes as they fill: a scrape holds one chunk and the snapshot, never
    /// the whole answer (10,000 targets: some 40 MB of text).
    public func write(_ format: ExpositionFormat, chunkSize: Int = RoundMetrics.chunkSize, to sink: (ByteBuffer) async throws -> Void) async rethrows {
        var cursor = exposition(format, chunkSize: chunkSize)
        while let chunk = cursor.next() { try await sink(chunk) }
        recycle(cursor.rows)
    }

    /// The exposition of this moment, to be read chunk by chunk.
    func exposition(_ format: ExpositionFormat, chunkSize: Int = RoundMetrics.chunkSize) -> ExpositionCursor {
        let (rows, icmpCount, monitor) = snapshot()
        var tail = ExpositionWriter(format: format)
        writeSelfMonitoring(monitor, into: &tail)
        tail.finish()
        var segments: [ExpositionCursor.Segment] = []
        for (families, range) in [(Self.icmpFamilies, 0..<icmpCount), (Self.tcpFamilies, icmpCount..<rows.count)] where !range.isEmpty {
            segments += families.map { ExpositionCursor.Segment(family: $0, rows: range) }
        }
        return ExpositionCursor(format: format, chunkSize: chunkSize, rows: rows, segments: segments, tail: tail.takeChunk())
    }

    /// A finished scrape's rows, for the next scrape to write its snapshot into.
    func recycle(_ rows: [Row]) {
        spareRows.withLock { spare in
            if spare == nil { spare = rows }
        }
    }

    /// The whole exposition as text (tests, small runs).
    public func render(_ format: ExpositionFormat) async -> String {
        var text = ""
        await write(format) { chunk in text += String(buffer: chunk) }
        return text
    }

    /// One per-target metric family: what it is, its names as bytes, its help.
    struct TargetFamily: Sendable {
        enum Kind: Sendable {
            case statistic(KeyPath<RTTStatistics, Double> & Sendable)
            case lossRatio, ttl, resultCode, lastRound
            case counter(KeyPath<Row, Int> & Sendable)
            case outcomes, rounds, histogram
        }

        let kind: Kind
        let name: String
        let nameBytes: [UInt8]
        let type: MetricType
        let help: String
        let histogramNames: ExpositionWriter.HistogramNames

        init(_ kind: Kind, _ name: String, _ type: MetricType, help: String) {
            self.kind = kind
            self.name = name
            nameBytes = Array(name.utf8)
            self.type = type
            self.help = help
            histogramNames = ExpositionWriter.HistogramNames(name)
        }

        static let resultLabel = Array(Schema.Field.result.utf8)
        /// Each outcome's label value, by code.
        static let outcomeNames: [[UInt8]] = (0..<7).map { code in Array((ProbeOutcome.allCases.first { $0.code == code }?.rawValue ?? "").utf8) }
        static let rttBounds = Histogram.rttBoundTexts.map { Array($0.utf8) }

        /// The family's samples of one target.
        func write(_ row: UnsafePointer<Row>, into writer: inout ExpositionWriter) {
            let labels = row.pointee.labels
            switch kind {
            case .statistic(let path):
                if let statistics = row.pointee.statistics { writer.sample(nameBytes, labels, statistics[keyPath: path] / 1000) }
            case .lossRatio:
                writer.sample(nameBytes, labels, row.pointee.lossRatio)
            case .ttl:
                if let ttl = row.pointee.ttl { writer.sample(nameBytes, labels, Double(ttl)) }
            case .resultCode:
                writer.sample(nameBytes, labels, Double(row.pointee.outcome.code))
            case .lastRound:
                writer.sample(nameBytes, labels, row.pointee.startSeconds)
            case .counter(let path):
                writer.sample(nameBytes, labels, Double(row.pointee[keyPath: path]))
            case .outcomes:
                for code in 0..<7 where row.pointee.outcomes[code] > 0 {
                    writer.sample(nameBytes, labels, extra: (Self.resultLabel, Self.outcomeNames[code]), Double(row.pointee.outcomes[code]))
                }
            case .rounds:
                for code in 0..<7 where row.pointee.rounds[code] > 0 {
                    writer.sample(nameBytes, labels, extra: (Self.resultLabel, Self.outcomeNames[code]), Double(row.pointee.rounds[code]))
                }
            case .histogram:
                writer.writeHistogram(histogramNames, labels, bounds: Self.rttBounds, count: 20, bucket: { row.pointee.buckets[$0] },
                                      total: row.pointee.rttCount, sum: row.pointee.rttSum)
            }
        }
    }

    static let icmpFamilies = targetFamilies(.icmp)
    static let tcpFamilies = targetFamilies(.tcp)

    /// The per-target families of a kind, in exposition order.
    static func targetFamilies(_ kind: ProbeKind) -> [TargetFamily] {
        let what = kind == .icmp ? "ICMP echo round trip" : "TCP handshake (SYN to SYN-ACK)"
        var families: [TargetFamily] = []
        let statistics: [(field: String, help: String, value: KeyPath<RTTStatistics, Double> & Sendable)] = [
            (Schema.Field.rttMinimum, "minimum", \.minimum), (Schema.Field.rttAverage, "average", \.average),
            (Schema.Field.rttMaximum, "maximum", \.maximum), (Schema.Field.rttMedian, "median", \.median),
            (Schema.Field.rttStandardDeviation, "standard deviation", \.standardDeviation), (Schema.Field.jitter, "jitter (mean difference of consecutive RTTs)", \.jitter),
        ]
        for statistic in statistics {
            families.append(TargetFamily(.statistic(statistic.value), Schema.Prometheus.gauge(kind, statistic.field), .gauge,
                                         help: "\(what) time of the last round, \(statistic.help), in seconds; absent when the round received nothing."))
        }
        families.append(TargetFamily(.lossRatio, Schema.Prometheus.gauge(kind, Schema.Field.lossPercent), .gauge,
                                     help: "Share of the last round's \(kind == .icmp ? "echo requests" : "handshakes") without a timely answer, 0 to 1."))
        if kind == .icmp {
            families.append(TargetFamily(.ttl, Schema.Prometheus.gauge(kind, Schema.Field.ttl), .gauge, help: "TTL (IPv4) or hop limit (IPv6) of the last reply."))
        }
        families.append(TargetFamily(.resultCode, Schema.Prometheus.gauge(kind, Schema.Field.resultCode), .gauge,
                                     help: "The last round's result as its code: 0 ok, 1 timeout, 2 unreachable, 3 unresolved, 4 error, 5 refused."))
        families.append(TargetFamily(.lastRound, Schema.Prometheus.lastRoundTimestamp(kind), .gauge, help: "Start of the last round, in seconds since the epoch."))
        var counters: [(field: String, help: String, value: KeyPath<Row, Int> & Sendable)] = [
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
            families.append(TargetFamily(.counter(counter.value), Schema.Prometheus.counter(kind, counter.field), .counter, help: counter.help))
        }
        families.append(TargetFamily(.outcomes, Schema.Prometheus.outcomes(kind), .counter,
                                     help: "Attempts by outcome (\(Schema.Field.result) values: ok, refused, timeout, unreachable, error, too_big)."))
        families.append(TargetFamily(.rounds, Schema.Prometheus.rounds(kind), .counter,
                                     help: "Rounds by result (ok when anything was answered; unresolved when the name did not resolve)."))
        families.append(TargetFamily(.histogram, Schema.Prometheus.rttHistogram(kind), .histogram,
                                     help: "Every \(what) time, in seconds (smokeping_prober's buckets: 50us doubling to 26.2s)."))
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
            row.labels = Self.labels(key, family: newFamily)
        }
        gap = now - updated
        updated = now
        row.statistics = round.statistics
        row.lossRatio = round.lossPercent / 100
        row.ttl = round.ttl
        row.outcome = round.outcome
        row.startSeconds = Double(round.startNanoseconds / 1000) / 1e6
        row.sent += round.sent
        row.received += round.received
        row.late += round.late
        row.duplicates += round.duplicates
        row.completed += round.completed
        for (outcome, count) in round.outcomeCounts where count > 0 { row.outcomes[outcome.code] += count }
        row.rounds[round.outcome.code] += 1
        for milliseconds in round.rttsMilliseconds {
            let seconds = milliseconds / 1000
            row.rttCount += 1
            row.rttSum += seconds
            if let bucket = Histogram.rttBounds.firstIndex(where: { seconds <= $0 }) { row.buckets[bucket] += 1 }
        }
    }
}

/// The `/metrics` exposition of one moment, written chunk by chunk from its snapshot: each
/// target family's samples for every target, then the self-monitoring tail.
struct ExpositionCursor {
    struct Segment {
        let family: RoundMetrics.TargetFamily
        let rows: Range<Int>
    }

    let format: ExpositionFormat
    let chunkSize: Int
    let rows: [RoundMetrics.Row]
    let segments: [Segment]
    /// The self-monitoring families and the format's end, written once the targets are.
    let tail: ByteBuffer
    private var writer: ExpositionWriter
    private var segment = 0
    private var position: Int?
    private var finished = false

    init(format: ExpositionFormat, chunkSize: Int, rows: [RoundMetrics.Row], segments: [Segment], tail: ByteBuffer) {
        self.format = format
        self.chunkSize = chunkSize
        self.rows = rows
        self.segments = segments
        self.tail = tail
        writer = ExpositionWriter(format: format, capacity: chunkSize + chunkSize / 4)
    }

    /// The next chunk (about `chunkSize` bytes; the last may be shorter); nil at the end.
    mutating func next() -> ByteBuffer? {
        guard !finished else { return nil }
        rows.withUnsafeBufferPointer { rows in
            while writer.buffer.readableBytes < chunkSize {
                guard segment < segments.count else {
                    writer.append(tail)
                    finished = true
                    return
                }
                let current = segments[segment]
                guard let at = position else {
                    writer.family(current.family.name, current.family.type, help: current.family.help)
                    position = current.rows.lowerBound
                    continue
                }
                if at < current.rows.upperBound {
                    current.family.write(rows.baseAddress! + at, into: &writer)
                    position = at + 1
                } else {
                    segment += 1
                    position = nil
                }
            }
        }
        return writer.takeChunk()
    }
}
