import FoundationEssentials
import ProbeResults

/// Round results on their way out of the loop, handed over in batches: each hand-over wakes
/// the consumer's task, and with thousands of rounds completing a second, one wake-up per
/// round cost as much CPU as the probing itself. A round waits at most `holdNanoseconds`.
struct RoundOutbox {
    let continuation: AsyncStream<ProbeEvent>.Continuation
    private var pending: [ProbeEvent] = []
    private var lastFlush: Int64 = 0
    static let holdNanoseconds: Int64 = 20_000_000

    init(continuation: AsyncStream<ProbeEvent>.Continuation) {
        self.continuation = continuation
    }

    mutating func add(_ round: RoundResult) {
        pending.append(.round(round))
    }

    /// When the pending rounds must go out; nil when none is pending.
    var nextFlush: Int64? { pending.isEmpty ? nil : lastFlush + Self.holdNanoseconds }

    /// Hands the pending rounds over if they waited long enough, or now with `force`.
    mutating func flush(now: Int64, force: Bool = false) {
        guard !pending.isEmpty, force || now - lastFlush >= Self.holdNanoseconds else { return }
        for event in pending { continuation.yield(event) }
        pending.removeAll(keepingCapacity: true)
        lastFlush = now
    }
}

/// When each target's rounds start, for `run`'s repeating rounds: every round interval
/// after the target's phase, a round never starting before the previous one is reported.
struct RoundCycle {
    /// Nil for a one-off round (`ping`, `tcp`, `check`).
    let roundInterval: Int64?
    private var plannedStart: [Int64]

    init(targetCount: Int, roundInterval: Int64?) {
        self.roundInterval = roundInterval
        plannedStart = Array(repeating: 0, count: targetCount)
    }

    var isRepeating: Bool { roundInterval != nil }

    mutating func plan(_ starts: [(targetIndex: Int, instant: Int64)]) {
        for (index, instant) in starts { plannedStart[index] = instant }
    }

    /// Makes room for targets added to a running run.
    mutating func append(count: Int) {
        plannedStart.append(contentsOf: repeatElement(0, count: count))
    }

    /// When the target's current (or next) round is planned to start (CLOCK_MONOTONIC).
    func plannedStart(of index: Int) -> Int64 {
        plannedStart[index]
    }

    /// How late a round that starts now is against its plan.
    func slip(of index: Int, now: Int64) -> Int64? {
        roundInterval == nil ? nil : max(0, now - plannedStart[index])
    }

    /// Plans the target's next round after one was reported.
    /// - Returns: when it should start; nil for one-off rounds.
    mutating func planNextRound(of index: Int, now: Int64) -> Int64? {
        guard let roundInterval else { return nil }
        var next = plannedStart[index] + roundInterval
        // A round that overran by more than a whole interval re-anchors the plan instead of
        // reporting an ever-growing slip forever after.
        if now - next > roundInterval { next = now }
        plannedStart[index] = next
        return next
    }
}

/// What the ICMP and TCP runs share: their targets, the stream they report on, and the
/// round bookkeeping (reporting rounds, planning the next ones). Subclasses probe.
class RoundRun {
    let kind: ProbeKind
    /// Every target the run was given or has been given since, by index; removed ones stay
    /// (marked in `removed`) so that indices never change.
    private(set) var targets: [ProbeTarget]
    /// Targets stopped by an update.
    private(set) var removed: [Bool]
    /// New addresses waiting for the round in flight to end.
    private var pendingTargets: [Int: ProbeTarget] = [:]
    /// A round's wall-clock start is its planned CLOCK_MONOTONIC instant seen through this
    /// pair, taken once: consecutive rounds are then exactly one interval apart.
    private var clockAnchor = (realtime: Clock.realtimeNanoseconds(), monotonic: Clock.monotonicNanoseconds())
    /// Time between two probes of a round, and how long a probe waits (for the stop budget).
    private var probeSpacing: Int64 = 0
    private var probeTimeout: Int64 = 0
    let continuation: AsyncStream<ProbeEvent>.Continuation
    /// False leaves out the per-attempt events.
    let reportingAttempts: Bool
    /// Probes per round.
    let roundCount: Int
    var tallies: RoundBook
    var cycle: RoundCycle
    var outbox: RoundOutbox
    var schedule = SendSchedule(targets: [], interval: 1, packetsPerSecond: 1, start: 0)
    var stopping = false
    /// TCP runs: the mode every round is reported with.
    var tcpMode: TCPProbeMode?
    weak var loop: ProbeLoop?

    init(kind: ProbeKind, targets: [ProbeTarget], roundCount: Int, roundInterval: Int64?, reportingAttempts: Bool,
         continuation: AsyncStream<ProbeEvent>.Continuation) {
        self.kind = kind
        self.targets = targets
        removed = Array(repeating: false, count: targets.count)
        self.roundCount = roundCount
        self.reportingAttempts = reportingAttempts
        self.continuation = continuation
        tallies = RoundBook(count: targets.count)
        cycle = RoundCycle(targetCount: targets.count, roundInterval: roundInterval)
        outbox = RoundOutbox(continuation: continuation)
    }

    /// Plans the first probe of every target, spread over the round interval (or one probe
    /// interval), and reports one-off rounds of unresolved targets at once. Repeating rounds
    /// keep unresolved targets in the schedule: each of their rounds reports "unresolved",
    /// so the gap shows in the data instead of silence.
    func planRounds(now: Int64, interval: Int64, timeout: Int64, packetsPerSecond: Double) {
        probeSpacing = interval
        probeTimeout = timeout
        clockAnchor = (Clock.realtimeNanoseconds(), Clock.monotonicNanoseconds())
        schedule = SendSchedule(targets: targets.indices.filter { cycle.isRepeating || targets[$0].address != nil },
                                interval: interval, phaseWindow: cycle.roundInterval, packetsPerSecond: packetsPerSecond, start: now)
        cycle.plan(schedule.plannedStarts)
        for index in targets.indices where targets[index].address == nil && !cycle.isRepeating {
            markRoundStart(index)
            report(index)
        }
    }

    /// Sets the round's start time at its first probe: for repeating rounds the planned
    /// instant (so a point's timestamp follows the schedule, and slip is measured apart),
    /// for one-off rounds the moment itself.
    func markRoundStart(_ index: Int) {
        guard tallies[index].startRealtime == nil else { return }
        tallies[index].startRealtime = cycle.isRepeating
            ? clockAnchor.realtime + (cycle.plannedStart(of: index) - clockAnchor.monotonic)
            : Clock.realtimeNanoseconds()
    }

    /// How long a stopping run waits for its rounds in flight; a round that needs longer
    /// (many probes, long spacing) is abandoned instead, so that a stop stays within 5 s.
    static let stopBudgetNanoseconds: Int64 = 3_000_000_000

    /// On the first look after a stop request: no new round starts. One-off rounds end
    /// with what was sent (ping's Ctrl-C); a repeating round in flight is finished whole
    /// if it can be within the stop budget, or else abandoned: a round is reported whole
    /// or not at all.
    func checkStop(requested: Bool) {
        guard requested && !stopping else { return }
        stopping = true
        guard cycle.isRepeating else {
            schedule.removeAll()
            tallies.touchAll()
            return
        }
        var finishing = Set<Int>()
        for index in targets.indices where !tallies[index].reported {
            if tallies.isInFlight(index) {
                let remaining = Int64(max(0, roundCount - tallies[index].sent)) * probeSpacing + 2 * probeTimeout
                if remaining <= Self.stopBudgetNanoseconds {
                    finishing.insert(index)
                    continue
                }
                continuation.yield(.abandoned(targetIndex: index, target: targets[index]))
            }
            _ = tallies.markReported(index)
        }
        schedule.removeAll { !finishing.contains($0) }
    }

    /// Takes the updates handed in since the last look, on the loop thread.
    func applyUpdates(_ updates: [TargetUpdate], now: Int64) {
        guard !updates.isEmpty, !stopping else { return }
        loop?.assertOnLoopThread()
        for update in updates {
            for (index, target) in update.changed where index < targets.count && !removed[index] {
                if tallies.isInFlight(index) { pendingTargets[index] = target } else { targets[index] = target }
            }
            for index in update.removed where index < targets.count && !removed[index] {
                removed[index] = true
                pendingTargets[index] = nil
                // Between rounds: nothing to finish. (Its next start stays in the schedule
                // and is dropped when it comes up.)
                if !tallies.isInFlight(index) { _ = tallies.markReported(index) }
            }
            add(update.added, now: now)
        }
    }

    /// New targets get the next indices and first rounds spread over one round interval
    /// from now, at slots of their own; every other target's schedule stays as it is.
    private func add(_ added: [ProbeTarget], now: Int64) {
        guard !added.isEmpty else { return }
        let first = targets.count
        targets += added
        removed += repeatElement(false, count: added.count)
        tallies.append(count: added.count)
        cycle.append(count: added.count)
        let window = cycle.roundInterval ?? probeSpacing
        let step = window / Int64(added.count)
        let starts = added.indices.map { (targetIndex: first + $0, instant: now + Int64($0) * step) }
        for start in starts { schedule.retry(start.targetIndex, at: start.instant) }
        cycle.plan(starts)
    }

    /// One-off rounds are over when every target's is; repeating rounds only after a stop,
    /// even with no target left (an update may add some).
    var roundsAreOver: Bool {
        !cycle.isRepeating || stopping
    }

    /// False for a schedule entry of a removed target, which is dropped instead of sent.
    func isActive(_ index: Int) -> Bool {
        !removed[index] || tallies.isInFlight(index)
    }

    /// Hands over the rounds that just completed and plans the next ones.
    func reportFinished() {
        let now = Clock.monotonicNanoseconds()
        // A stopping run's repeating rounds still finish whole: only one-off rounds end early.
        for index in tallies.takeCompleted(count: roundCount, stopping: stopping && !cycle.isRepeating, now: now) {
            // A repeating round that a stop caught before its first probe is not a round.
            if cycle.isRepeating && tallies[index].sent == 0 { continue }
            outbox.add(roundResult(index))
            tallies[index].samples = []
            startNextRound(index, now: now)
        }
    }

    /// Repeating rounds: plans the target's next round once this one is reported, on the
    /// address an update may have left for it; a removed target gets none.
    func startNextRound(_ index: Int, now: Int64) {
        guard !stopping, !removed[index], let next = cycle.planNextRound(of: index, now: now) else { return }
        if let target = pendingTargets.removeValue(forKey: index) { targets[index] = target }
        tallies.reset(index)
        schedule.retry(index, at: next)
    }

    /// Reports a round now, whatever its counts (unresolved targets, a failed loop).
    func report(_ index: Int) {
        guard tallies.markReported(index) else { return }
        outbox.add(roundResult(index))
    }

    private func roundResult(_ index: Int) -> RoundResult {
        tallies[index].result(kind: kind, targetIndex: index, target: targets[index], tcpMode: tcpMode)
    }
}
