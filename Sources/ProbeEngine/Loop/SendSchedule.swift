import HeapModule
import ProbeResults

/// When to send the next probe to which target: first sends spread evenly over one
/// interval, then one per interval per target, never more than the rate over all.
struct SendSchedule {
    struct Due: Comparable {
        var instant: Int64
        var targetIndex: Int
        static func < (lhs: Due, rhs: Due) -> Bool {
            (lhs.instant, lhs.targetIndex) < (rhs.instant, rhs.targetIndex)
        }
    }

    private var heap = Heap<Due>()
    private var nextSlot: Int64
    /// Minimum time between two sends, from the rate.
    let spacing: Int64
    let interval: Int64

    /// The first send of each target, as planned: (target index, CLOCK_MONOTONIC instant).
    private(set) var plannedStarts: [(targetIndex: Int, instant: Int64)] = []

    /// - Parameters:
    ///   - targets: indices of the targets to probe, in order.
    ///   - interval: nanoseconds between two probes of one target.
    ///   - phaseWindow: the first sends are spread evenly over this many nanoseconds
    ///     (one interval for ad hoc runs, the round interval for `run`); nil means `interval`.
    ///   - packetsPerSecond: the most probes per second over all targets.
    ///   - start: CLOCK_MONOTONIC instant of the first send.
    init(targets: [Int], interval: Int64, phaseWindow: Int64? = nil, packetsPerSecond: Double, start: Int64) {
        self.interval = interval
        spacing = max(1, Int64(1_000_000_000 / packetsPerSecond))
        nextSlot = start
        let window = phaseWindow ?? interval
        let phaseStep = max(spacing, targets.isEmpty ? 0 : window / Int64(targets.count))
        for (position, index) in targets.enumerated() {
            let instant = start + Int64(position) * phaseStep
            heap.insert(Due(instant: instant, targetIndex: index))
            plannedStarts.append((index, instant))
        }
    }

    var isEmpty: Bool { heap.isEmpty }

    /// When the next send may happen; nil when nothing is scheduled.
    var nextWake: Int64? { heap.min.map { max($0.instant, nextSlot) } }

    /// Takes the next send if it is due at `now` and the rate allows it.
    mutating func popDue(now: Int64) -> Due? {
        guard let due = heap.min, max(due.instant, nextSlot) <= now else { return nil }
        _ = heap.removeMin()
        nextSlot = max(due.instant, nextSlot) + spacing
        return due
    }

    /// Plans the target's next probe one interval after the one just taken.
    mutating func scheduleNext(after due: Due) {
        heap.insert(Due(instant: due.instant + interval, targetIndex: due.targetIndex))
    }

    /// Tries a target again at `instant` (e.g. the socket buffer was full).
    mutating func retry(_ targetIndex: Int, at instant: Int64) {
        heap.insert(Due(instant: instant, targetIndex: targetIndex))
    }

    /// Plans one send of `item` (a target, or the path prober's probe key) at `instant`,
    /// without a next one: for senders that plan each send themselves.
    mutating func add(_ item: Int, at instant: Int64) {
        heap.insert(Due(instant: instant, targetIndex: item))
    }

    mutating func removeAll() {
        heap = Heap()
    }

    /// Drops every planned send of the targets `predicate` picks.
    mutating func removeAll(where predicate: (Int) -> Bool) {
        heap = Heap(heap.unordered.filter { !predicate($0.targetIndex) })
    }
}
