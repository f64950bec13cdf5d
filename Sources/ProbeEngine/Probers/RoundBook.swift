import FoundationEssentials
import ProbeResults

/// The running counts of one target's round (loop thread only).
struct RoundTally {
    var sent = 0
    /// Attempts that reached an outcome (answered, lost, failed).
    var concluded = 0
    var received = 0
    var duplicates = 0
    var late = 0
    var unreachable = 0
    var refused = 0
    var errors = 0
    var completed = 0
    /// Don't-fragment probes answered "too big", and the smallest MTU named (0: none).
    var tooBig = 0
    var pathMTU = 0
    var samples: [(index: Int, milliseconds: Double)] = []
    var kernelSamples = 0
    var userSamples = 0
    var ttl: Int?
    /// CLOCK_REALTIME nanoseconds of the round's start, once its first probe went.
    var startRealtime: Int64?
    var reported = false
    /// Lost probes whose reply may still come back late, and until when the round waits
    /// for them (CLOCK_MONOTONIC).
    var lostAwaitingLate = 0
    var lateWindowEnd: Int64 = 0
    /// Repeating rounds: how late the first probe left against its plan.
    var slipNanoseconds: Int64?

    mutating func recordSample(index: Int, milliseconds: Double, source: TimestampSource) {
        received += 1
        samples.append((index, milliseconds))
        if source == .kernel { kernelSamples += 1 } else { userSamples += 1 }
    }

    /// The round's outcome: ok when anything succeeded; otherwise the most telling failure
    /// seen (refused, then unreachable, then error), and timeout when there was only silence.
    func outcome(resolved: Bool) -> ProbeOutcome {
        if !resolved { return .unresolved }
        if received > 0 { return .ok }
        if refused > 0 { return .refused }
        if tooBig > 0 { return .tooBig }
        if unreachable > 0 { return .unreachable }
        if errors > 0 { return .error }
        return .timeout
    }

    func result(kind: ProbeKind, targetIndex: Int, target: ProbeTarget, tcpMode: TCPProbeMode? = nil) -> RoundResult {
        let rtts = samples.sorted { $0.index < $1.index }.map(\.milliseconds)
        var result = RoundResult(
            kind: kind, targetIndex: targetIndex, target: target, startNanoseconds: startRealtime ?? Clock.realtimeNanoseconds(),
            sent: sent, received: received, duplicates: duplicates, late: late, unreachable: unreachable,
            refused: refused, errors: errors, completed: completed, tcpMode: tcpMode,
            lossPercent: sent > 0 ? Double(sent - received) / Double(sent) * 100 : 100,
            statistics: RTTStatistics(samples: rtts), rttsMilliseconds: rtts, ttl: ttl,
            kernelTimestamps: kernelSamples, userTimestamps: userSamples, outcome: outcome(resolved: target.address != nil),
            scheduleSlipMilliseconds: slipNanoseconds.map { Double($0) / 1_000_000 })
        result.tooBig = tooBig
        result.pathMTU = pathMTU > 0 ? pathMTU : nil
        return result
    }

    /// Counts a don't-fragment probe answered "too big" with `mtu` (nil: not named).
    mutating func recordTooBig(mtu: Int?) {
        tooBig += 1
        if let mtu, mtu > 0 { pathMTU = pathMTU == 0 ? mtu : min(pathMTU, mtu) }
    }
}

/// The tallies of every target of a run, with the bookkeeping that keeps "which rounds are
/// complete?" cheap: only targets touched since the last look are checked, so a wake-up
/// costs the same with ten targets or a hundred thousand.
struct RoundBook {
    private var tallies: [RoundTally]
    private var touched: [Int] = []
    /// Rounds not yet reported.
    private(set) var unreported: Int

    init(count: Int) {
        tallies = Array(repeating: RoundTally(), count: count)
        unreported = count
    }

    subscript(index: Int) -> RoundTally {
        get { tallies[index] }
        _modify {
            touched.append(index)
            yield &tallies[index]
        }
    }

    /// Adds `count` targets, with no round yet.
    mutating func append(count: Int) {
        tallies.append(contentsOf: repeatElement(RoundTally(), count: count))
        unreported += count
    }

    /// Whether the target's current round has begun and is not reported yet.
    func isInFlight(_ index: Int) -> Bool {
        tallies[index].sent > 0 && !tallies[index].reported
    }

    /// Starts a target's next round with fresh counts (repeating rounds).
    mutating func reset(_ index: Int) {
        if tallies[index].reported { unreported += 1 }
        tallies[index] = RoundTally()
    }

    /// Marks one round to be looked at on the next `takeCompleted`.
    mutating func touch(_ index: Int) {
        touched.append(index)
    }

    /// Marks every unreported round to be looked at (after a stop request).
    mutating func touchAll() {
        touched = tallies.indices.filter { !tallies[$0].reported }
    }

    /// The targets whose rounds just completed: every probe sent (`count` of them, or
    /// sending stopped) and every one concluded. Each is marked reported.
    /// A round with lost probes also waits out their late window, so late replies are
    /// counted as late rather than missed.
    mutating func takeCompleted(count: Int, stopping: Bool, now: Int64) -> [Int] {
        guard !touched.isEmpty else { return [] }
        var completed: [Int] = []
        for index in touched where !tallies[index].reported {
            let tally = tallies[index]
            let allSent = stopping || (count > 0 && tally.sent >= count)
            let lateWindowOver = tally.lostAwaitingLate == 0 || now >= tally.lateWindowEnd
            if allSent && tally.concluded >= tally.sent && lateWindowOver {
                tallies[index].reported = true
                unreported -= 1
                completed.append(index)
            }
        }
        touched.removeAll(keepingCapacity: true)
        return completed
    }

    /// Marks one round reported regardless of its counts (unresolved targets, failures).
    mutating func markReported(_ index: Int) -> Bool {
        guard !tallies[index].reported else { return false }
        tallies[index].reported = true
        unreported -= 1
        return true
    }
}
