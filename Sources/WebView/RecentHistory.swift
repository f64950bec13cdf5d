import ProbeResults
import Synchronization

/// The last hour of every series, in this process' memory: what the view draws for the
/// last hour, and what its overview and continuous verdicts read. A `RoundObserver`, so it
/// sees every whole round `run` writes, whatever sinks are configured.
///
/// ## Packing (at most 4 KiB per series)
///
/// A series keeps a ring of fixed-size bucket records (`BucketRecord`, 16 bytes):
///
/// | bytes | field                                                                  |
/// |-------|------------------------------------------------------------------------|
/// | 4     | start, UInt32 milliseconds after the series' base time                 |
/// | 2 x 3 | minimum, median, maximum RTT, Float16 milliseconds (11 significant     |
/// |       | bits: 0.05 %, a hundredth of a pixel of the graph; up to 65 s)         |
/// | 2 x 2 | probes sent, replies received, UInt16 (saturating)                     |
/// | 2     | rounds (low 10 bits, saturating at 1,023) and the outcomes of its      |
/// |       | rounds (high 6 bits, one per `ProbeOutcome`)                           |
///
/// A bucket is at least `minimumBucketNanoseconds` (30 s) wide, so an hour is at most
/// 3600 / 30 = 120 buckets, plus the one being filled: 121 x 16 = 1,936 bytes. Where the
/// round interval is shorter, a bucket holds several rounds: the smallest whole number
/// that makes it 30 s or more (1 s rounds: 30 per bucket; the default 10 s: 3), aligned to
/// multiples of its width since 1970, so its columns do not move between page loads. Where
/// the interval is 30 s or more, every round is a record of its own, starting at the
/// round's start (an hour of 60 s rounds: 61 records, 976 bytes).
///
/// Beside the ring, a series keeps:
/// - the medians of the bucket being filled, for its median of medians: at most
///   `pendingMedianCapacity` (32) Float16, 64 bytes. A bucket of more rounds keeps every
///   second one each time the sample fills (a systematic sample of every 2^k-th round);
///   at 1 s rounds (30 per bucket) the median is exact;
/// - the last `ContinuousVerdict.windowRounds` (20) rounds' counts for the verdict
///   (`VerdictRecord`, 12 bytes): 240 bytes; more rounds where a round has fewer than 5
///   probes, so the window holds 100 (at 1 probe a round: 100 rounds, 1,200 bytes);
/// - its fixed state (`Series`: the ring's position, the last round's summary), its key
///   in the table's index and its id in the id index.
///
/// Worst case (rounds of 30 s or less): 1,936 + 64 + 240 = 2,240 bytes of records (the
/// allocator may round each array up by a few bytes), plus the fixed state, the index
/// entries and the key's text: measured 2,570 bytes for a 24-byte name, 2,815 with two
/// labels; under 4 KiB for names and labels up to about 1.2 KB (`bytesUsed(by:)` counts
/// it all). 10,000 series: 26.8 MB, 29.3 MB with two labels each, the tables' growth
/// slack included (`memoryUsedBytes`).
///
/// Thread-safe: one `Mutex` around the table. `observe` takes it once, finds the series by
/// hash, updates one record (a new bucket overwrites the oldest slot of the ring): O(1),
/// no allocation after the series' first round. Pages copy out what they draw.
public final class RecentHistory: RoundObserver, Sendable {
    /// How far back the memory reaches.
    public static let windowNanoseconds: Int64 = 3_600_000_000_000
    /// The narrowest bucket: an hour in at most 120 of them.
    public static let minimumBucketNanoseconds: Int64 = 30_000_000_000
    /// The medians kept of the bucket being filled.
    public static let pendingMedianCapacity = 32
    /// What a series may use, everything counted (`bytesUsed(by:)`).
    public static let bytesPerSeriesLimit = 4096

    /// The last round of a series, for the overview.
    public struct SeriesSummary: Sendable {
        public var key: WebSeriesKey
        /// The opaque id pages use for the series (`SeriesID`).
        public var id: String
        /// The series' bucket width (the round interval, or several rounds where it is short).
        public var bucketNanoseconds: Int64
        /// Rounds a full bucket holds (1: a bucket per round, starting at the round's start).
        public var roundsPerBucket: Int
        /// Start of the last round, nanoseconds since 1970.
        public var lastStartNanoseconds: Int64
        public var lastOutcome: ProbeOutcome
        /// The last round's median RTT; nil when nothing came back.
        public var lastMedianMilliseconds: Double?
        public var lastLossPercent: Double
        /// Rounds seen since `run` started.
        public var rounds: Int
    }

    private let intervals: [ProbeKind: Int64]
    private let state = Mutex(Table())
    /// The last trace of every traced series (where `trace:` runs).
    public let paths = RecentPaths()

    /// - Parameter roundIntervals: the round interval of each probe kind (`interval` of the
    ///   config's icmp: and tcp: sections); a kind not given is taken as 10 s, the default.
    public init(roundIntervals: [ProbeKind: Int64]) {
        intervals = roundIntervals
    }

    /// Bucket width and rounds per bucket for a round interval.
    /// - Returns: the interval itself where it is 30 s or more (one round per bucket), else
    ///   the smallest multiple of it that is at least 30 s.
    public static func bucketWidth(intervalNanoseconds: Int64) -> (nanoseconds: Int64, roundsPerBucket: Int) {
        let interval = max(1_000_000, intervalNanoseconds)
        guard interval < minimumBucketNanoseconds else { return (interval, 1) }
        let rounds = (minimumBucketNanoseconds + interval - 1) / interval
        return (rounds * interval, Int(rounds))
    }

    // MARK: RoundObserver

    /// Adds a round to its series (created at its first round, with the ring for an hour
    /// of its kind's interval). A round that starts before its series' newest bucket (the
    /// wall clock stepped back) is left out of the graph, but counts in the verdict.
    public func observeTrace(_ trace: PathTrace, env: String, probe: String) {
        guard trace.target.address != nil else { return }
        paths.record(trace, env: env)
    }

    public func observe(_ round: RoundResult, env: String, probe: String) {
        let key = WebSeriesKey(round: round, env: env)
        let interval = intervals[round.kind] ?? 10_000_000_000
        state.withLock { table in
            table.newestStart = max(table.newestStart, round.startNanoseconds)
            if let index = table.index[key] {
                table.series[Int(index)].add(round)
            } else {
                let id = SeriesID.hash(key)
                var series = Series(id: id, intervalNanoseconds: interval, baseNanoseconds: round.startNanoseconds, probesPerRound: round.sent > 0 ? round.sent : 5)
                series.add(round)
                let index = Int32(table.series.count)
                table.index[key] = index
                table.byID[id] = index
                table.series.append(series)
            }
        }
    }

    // MARK: Reading

    /// The buckets of a series that start in [from, to), oldest first: one per round where
    /// rounds are not bucketed, none for a bucket without rounds (a gap).
    /// - Parameters:
    ///   - key: the series.
    ///   - from: start of the range, nanoseconds since 1970.
    ///   - to: end of the range (excluded).
    /// - Returns: empty for an unknown series.
    public func buckets(for key: WebSeriesKey, from: Int64, to: Int64) -> [HistoryBucket] {
        state.withLock { table in
            guard let index = table.index[key] else { return [] }
            return table.series[Int(index)].buckets(from: from, to: to)
        }
    }

    /// Every current series with its last round, in the order they were first seen. A
    /// series without a round for 5 of its intervals (and at least a minute) while others
    /// have had rounds was removed from the targets files by a reload: it is left out (its
    /// memory stays until the next start; it shows again if it comes back).
    public func series() -> [SeriesSummary] {
        state.withLock { table in
            table.index.filter { table.isCurrent(table.series[Int($0.value)]) }.sorted { $0.value < $1.value }
                .map { key, index in table.series[Int(index)].summary(key) }
        }
    }

    /// The series an id (`SeriesID.of`) names (a walk of the index: O(series), once a page).
    /// - Parameter id: 16 hex digits.
    /// - Returns: nil for an id of no series.
    public func key(forID id: String) -> WebSeriesKey? {
        guard SeriesID.isWellFormed(id[...]), let hash = UInt64(id, radix: 16) else { return nil }
        return state.withLock { table in
            guard let index = table.byID[hash] else { return nil }
            return table.index.first { $0.value == index }?.key
        }
    }

    /// The bytes a series holds: its records, its sample of medians and its verdict window
    /// (by their capacity), its fixed state, its entries in the two indexes and its key's
    /// text.
    /// - Parameter key: the series.
    /// - Returns: nil for an unknown series.
    public func bytesUsed(by key: WebSeriesKey) -> Int? {
        state.withLock { table in
            table.index[key].map { table.series[Int($0)].allocatedBytes + MemoryLayout<Series>.stride + Table.entryBytes + Table.textBytes(key) }
        }
    }

    /// Everything the history holds: every series' records, the series array and both
    /// indexes by their capacity (a dictionary's buckets are a third more than its
    /// capacity), and the keys' text.
    public var memoryUsedBytes: Int {
        state.withLock { table in
            let records = table.series.reduce(0) { $0 + $1.allocatedBytes }
            let text = table.index.keys.reduce(0) { $0 + Table.textBytes($1) }
            return records + text + table.series.capacity * MemoryLayout<Series>.stride
                + table.index.capacity * 4 / 3 * (MemoryLayout<WebSeriesKey>.stride + MemoryLayout<Int32>.stride)
                + table.byID.capacity * 4 / 3 * (MemoryLayout<UInt64>.stride + MemoryLayout<Int32>.stride)
        }
    }

    /// The verdict windows of every series: its last rounds' counts, oldest first.
    func verdictWindows() -> [(key: WebSeriesKey, rounds: [VerdictRecord])] {
        state.withLock { table in
            table.index.filter { table.isCurrent(table.series[Int($0.value)]) }.map { key, index in (key, table.series[Int(index)].verdictWindow()) }
        }
    }

    private struct Table {
        var series: [Series] = []
        /// The key of each series lives here only (104 bytes inline, its text on the heap).
        var index: [WebSeriesKey: Int32] = [:]
        var byID: [UInt64: Int32] = [:]
        /// The latest round start of any series: the view's clock for telling removed series.
        var newestStart: Int64 = .min

        /// Whether a series still has rounds: its last within 5 of its intervals (and a
        /// minute) of the newest round of any series.
        func isCurrent(_ series: Series) -> Bool {
            let interval = series.bucketNanoseconds / Int64(max(1, series.roundsPerBucket))
            return series.lastStart >= newestStart - max(5 * interval, 60_000_000_000)
        }

        /// A series' share of the two indexes, at their fullest (3/4 of the buckets used).
        static let entryBytes = (MemoryLayout<WebSeriesKey>.stride + MemoryLayout<Int32>.stride + MemoryLayout<UInt64>.stride + MemoryLayout<Int32>.stride) * 4 / 3

        /// The heap a key's text takes: strings of more than 15 UTF-8 bytes (shorter ones
        /// live inline) with a 32-byte header, a labels dictionary's entries and header.
        static func textBytes(_ key: WebSeriesKey) -> Int {
            func heap(_ text: String?) -> Int {
                guard let text, text.utf8.count > 15 else { return 0 }
                return 32 + text.utf8.count
            }
            let labels = key.labels.isEmpty ? 0 : 64 + key.labels.capacity * 4 / 3 * 32 + key.labels.reduce(0) { $0 + heap($1.key) + heap($1.value) }
            return heap(key.env) + heap(key.target) + heap(key.options.interface) + labels
        }
    }
}

/// The opaque id of a series in the view's links: 16 hex digits of a 64-bit FNV-1a hash
/// of the key's parts. Stable across restarts (Swift's `Hasher` is seeded per process), and
/// no text from the targets files ever comes back in a query to be parsed.
public enum SeriesID {
    /// The id of a key.
    public static func of(_ key: WebSeriesKey) -> String {
        let hex = String(hash(key), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The id as a number.
    static func hash(_ key: WebSeriesKey) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ text: String) {
            for byte in text.utf8 {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
            hash ^= 0xff
            hash &*= 0x0000_0100_0000_01b3
        }
        mix(key.kind.rawValue)
        mix(key.env)
        mix(key.target)
        mix(key.port.map { String($0) } ?? "")
        mix(String(key.options.tos))
        mix(key.options.source.map { "\($0)" } ?? "")
        mix(key.options.interface ?? "")
        for (name, value) in key.labels.sorted(by: { $0.key < $1.key }) {
            mix(name)
            mix(value)
        }
        return hash
    }

    /// True for text of the id's form (16 lowercase hex digits).
    public static func isWellFormed(_ text: Substring) -> Bool {
        text.utf8.count == 16 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

/// One bucket of the ring, 16 bytes (see `RecentHistory`).
struct BucketRecord {
    var startOffsetMilliseconds: UInt32 = 0
    var minimum: Float16 = .nan
    var median: Float16 = .nan
    var maximum: Float16 = .nan
    var sent: UInt16 = 0
    var received: UInt16 = 0
    /// Rounds in the low 10 bits, the outcomes' bits (`ProbeOutcome.historyBit`) above them.
    var roundsAndOutcomes: UInt16 = 0

    static let roundsMask: UInt16 = 0x3ff

    var rounds: Int { Int(roundsAndOutcomes & Self.roundsMask) }
    var outcomes: UInt8 { UInt8(roundsAndOutcomes >> 10) }

    /// One more round (saturating at 1,023) that ended in `outcome`.
    mutating func count(_ outcome: ProbeOutcome) {
        let rounds = min(Self.roundsMask, (roundsAndOutcomes & Self.roundsMask) + 1)
        roundsAndOutcomes = (roundsAndOutcomes & ~Self.roundsMask) | rounds | (UInt16(outcome.historyBit) << 10)
    }
}

/// One round's counts for the continuous verdict, 12 bytes.
struct VerdictRecord: Sendable {
    var sent: UInt16 = 0
    var received: UInt16 = 0
    var unreachable: UInt16 = 0
    var refused: UInt16 = 0
    /// Saturating at 255 (a round of more local failures than that is one of failures).
    var errors: UInt8 = 0
    var outcome: UInt8 = 0
    var median: Float16 = .nan
}

extension UInt16 {
    /// The value, or the largest UInt16 where it does not fit.
    init(saturatingCount value: Int) { self = value <= 0 ? 0 : (value >= Int(UInt16.max) ? .max : UInt16(value)) }

    func addingCount(_ value: Int) -> UInt16 { UInt16(saturatingCount: Int(self) + value) }
}

extension ProbeOutcome {
    /// Bit of the outcome in a bucket's outcome bits (6 outcomes: bits 0-5).
    var historyBit: UInt8 { 1 << UInt8(code) }

    /// The outcome of a stored code (`code`); `.error` for a code of none.
    init(storedCode: UInt8) { self = Self.allCases.first { $0.code == Int(storedCode) } ?? .error }

    /// The outcomes of an outcome byte.
    static func outcomes(ofHistoryBits bits: UInt8) -> Set<ProbeOutcome> { Set(allCases.filter { bits & $0.historyBit != 0 }) }
}

/// One series' memory: the ring, the bucket being filled, the verdict window, the last
/// round (its key lives in the table's index only).
private struct Series {
    let id: UInt64
    let bucketNanoseconds: Int64
    /// Records' starts are milliseconds after this (moved forward before UInt32 overflows).
    var baseNanoseconds: Int64
    /// Start of the newest record, nanoseconds since 1970 (for the bucket being filled).
    var newestStart: Int64 = .min
    var ring: ContiguousArray<BucketRecord>
    /// The medians of the newest bucket's rounds (a systematic sample, see `RecentHistory`).
    var pending: ContiguousArray<Float16>
    var window: ContiguousArray<VerdictRecord>
    let roundsPerBucket: Int32
    /// Records in the ring; the newest is at `(head + count - 1) % capacity`.
    var head: Int32 = 0
    var count: Int32 = 0
    var pendingStride: Int32 = 1
    var pendingSeen: Int32 = 0
    var windowHead: Int16 = 0
    var windowCount: Int16 = 0
    // The last round.
    var rounds: Int32 = 0
    var lastStart: Int64 = 0
    var lastMedian: Float32 = .nan
    var lastLoss: Float32 = 0
    var lastOutcome: UInt8 = 0

    init(id: UInt64, intervalNanoseconds: Int64, baseNanoseconds: Int64, probesPerRound: Int = 5) {
        self.id = id
        let width = RecentHistory.bucketWidth(intervalNanoseconds: intervalNanoseconds)
        bucketNanoseconds = width.nanoseconds
        roundsPerBucket = Int32(width.roundsPerBucket)
        // An hour of buckets, plus the one being filled.
        let capacity = Int((RecentHistory.windowNanoseconds + width.nanoseconds - 1) / width.nanoseconds) + 1
        ring = ContiguousArray(repeating: BucketRecord(), count: capacity)
        pending = ContiguousArray(repeating: .nan, count: width.roundsPerBucket > 1 ? RecentHistory.pendingMedianCapacity : 0)
        window = ContiguousArray(repeating: VerdictRecord(), count: ContinuousVerdict.windowRounds(probesPerRound: probesPerRound))
        // Aligned down to a bucket start, so every bucket start fits as an offset.
        self.baseNanoseconds = Series.floor(baseNanoseconds, width.nanoseconds) - width.nanoseconds
    }

    static func floor(_ value: Int64, _ width: Int64) -> Int64 {
        let quotient = value / width
        return (value % width < 0 ? quotient - 1 : quotient) * width
    }

    /// The three arrays, by capacity.
    var allocatedBytes: Int {
        ring.capacity * MemoryLayout<BucketRecord>.stride + pending.capacity * MemoryLayout<Float16>.stride
            + window.capacity * MemoryLayout<VerdictRecord>.stride
    }

    func summary(_ key: WebSeriesKey) -> RecentHistory.SeriesSummary {
        let hex = String(id, radix: 16)
        return RecentHistory.SeriesSummary(key: key, id: String(repeating: "0", count: 16 - hex.count) + hex, bucketNanoseconds: bucketNanoseconds,
                                           roundsPerBucket: Int(roundsPerBucket), lastStartNanoseconds: lastStart, lastOutcome: ProbeOutcome(storedCode: lastOutcome),
                                           lastMedianMilliseconds: lastMedian.isNaN ? nil : Double(lastMedian), lastLossPercent: Double(lastLoss), rounds: Int(rounds))
    }

    mutating func add(_ round: RoundResult) {
        rounds += 1
        lastStart = round.startNanoseconds
        lastOutcome = UInt8(round.outcome.code)
        lastMedian = round.statistics.map { Float32($0.median) } ?? .nan
        lastLoss = Float32(round.lossPercent)
        addToWindow(round)

        let start = roundsPerBucket == 1 ? round.startNanoseconds : Series.floor(round.startNanoseconds, bucketNanoseconds)
        if count > 0, roundsPerBucket > 1, start == newestStart {
            update(newest: round)
            return
        }
        // A round older than the newest bucket (a clock step back) has no place in the ring.
        if count > 0, start < newestStart { return }
        open(at: start)
        update(newest: round)
    }

    private mutating func addToWindow(_ round: RoundResult) {
        let record = VerdictRecord(sent: UInt16(saturatingCount: round.sent), received: UInt16(saturatingCount: round.received),
                                   unreachable: UInt16(saturatingCount: round.unreachable), refused: UInt16(saturatingCount: round.refused),
                                   errors: UInt8(clamping: round.errors), outcome: UInt8(round.outcome.code),
                                   median: round.statistics.map { Float16($0.median) } ?? .nan)
        let size = window.count
        window[(Int(windowHead) + Int(windowCount)) % size] = record
        if Int(windowCount) < size { windowCount += 1 } else { windowHead = Int16((Int(windowHead) + 1) % size) }
    }

    func verdictWindow() -> [VerdictRecord] { (0..<Int(windowCount)).map { window[(Int(windowHead) + $0) % window.count] } }

    private var newestSlot: Int { (Int(head) + Int(count) - 1) % ring.count }

    /// Starts a new newest record at `start`, overwriting the oldest when the ring is full;
    /// the bucket it follows gets its median of medians.
    private mutating func open(at start: Int64) {
        if count > 0, roundsPerBucket > 1 {
            ring[newestSlot].median = pendingMedian().map { Float16($0) } ?? .nan
        }
        // Keep offsets inside UInt32 (49 days): move the base to two hours before now.
        if start - baseNanoseconds >= Int64(UInt32.max - 1) * 1_000_000 {
            let newBase = Series.floor(start - 2 * RecentHistory.windowNanoseconds, bucketNanoseconds)
            for step in 0..<Int(count) {
                let slot = (Int(head) + step) % ring.count
                let absolute = baseNanoseconds + Int64(ring[slot].startOffsetMilliseconds) * 1_000_000
                ring[slot].startOffsetMilliseconds = UInt32(clamping: max(0, absolute - newBase) / 1_000_000)
            }
            baseNanoseconds = newBase
        }
        let slot: Int
        if Int(count) < ring.count {
            slot = (Int(head) + Int(count)) % ring.count
            count += 1
        } else {
            slot = Int(head)
            head = Int32((Int(head) + 1) % ring.count)
        }
        ring[slot] = BucketRecord(startOffsetMilliseconds: UInt32((start - baseNanoseconds) / 1_000_000))
        newestStart = start
        pendingSeen = 0
        pendingStride = 1
    }

    private mutating func update(newest round: RoundResult) {
        let slot = newestSlot
        var record = ring[slot]
        record.count(round.outcome)
        record.sent = record.sent.addingCount(round.sent)
        record.received = record.received.addingCount(round.received)
        if let statistics = round.statistics {
            let minimum = Float16(statistics.minimum), maximum = Float16(statistics.maximum)
            record.minimum = record.minimum.isNaN ? minimum : Swift.min(record.minimum, minimum)
            record.maximum = record.maximum.isNaN ? maximum : Swift.max(record.maximum, maximum)
            if roundsPerBucket == 1 {
                record.median = Float16(statistics.median)
            } else {
                addPending(Float16(statistics.median))
            }
        }
        ring[slot] = record
    }

    /// Adds a round's median to the sample of the newest bucket: every `pendingStride`-th
    /// median; when the sample is full, every second one is dropped and the stride doubles.
    private mutating func addPending(_ median: Float16) {
        defer { pendingSeen += 1 }
        guard pendingSeen % pendingStride == 0 else { return }
        let kept = Int(pendingSeen / pendingStride)
        if kept < pending.count {
            pending[kept] = median
            return
        }
        for index in 0..<(pending.count / 2) { pending[index] = pending[2 * index] }
        pendingStride *= 2
        if pendingSeen % pendingStride == 0 { pending[Int(pendingSeen / pendingStride)] = median }
    }

    /// The median of the newest bucket's sample.
    private func pendingMedian() -> Double? {
        let kept = Int((pendingSeen + pendingStride - 1) / pendingStride)
        let sample = pending.prefix(Swift.min(kept, pending.count)).filter { !$0.isNaN }.sorted()
        guard !sample.isEmpty else { return nil }
        let middle = sample.count / 2
        return sample.count % 2 == 1 ? Double(sample[middle]) : (Double(sample[middle - 1]) + Double(sample[middle])) / 2
    }

    /// The stored buckets in [from, to), the newest one's median from its sample so far.
    func buckets(from: Int64, to: Int64) -> [HistoryBucket] {
        guard count > 0 else { return [] }
        let newest = newestSlot
        let oldestWanted = Swift.max(from, newestStart - RecentHistory.windowNanoseconds)
        var result: [HistoryBucket] = []
        for step in 0..<Int(count) {
            let slot = (Int(head) + step) % ring.count
            let record = ring[slot]
            let start = baseNanoseconds + Int64(record.startOffsetMilliseconds) * 1_000_000
            guard start >= oldestWanted, start < to, record.rounds > 0 else { continue }
            func value(_ number: Float16) -> Double? { number.isNaN ? nil : Double(number) }
            let median = roundsPerBucket > 1 && slot == newest ? pendingMedian() : value(record.median)
            var bucket = HistoryBucket(startNanoseconds: start, durationNanoseconds: bucketNanoseconds, rounds: record.rounds,
                                       sent: Int(record.sent), received: Int(record.received), minimumMilliseconds: value(record.minimum),
                                       medianMilliseconds: median, maximumMilliseconds: value(record.maximum))
            bucket.outcomes = ProbeOutcome.outcomes(ofHistoryBits: record.outcomes)
            result.append(bucket)
        }
        return result
    }
}
