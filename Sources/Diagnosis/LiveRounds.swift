import ProbeResults

/// The rounds of a `check` so far, from the attempt events its probers report while they
/// run: judged by the same rules as the finished rounds, they tell whether probing longer
/// could still change a verdict (`Diagnosis.wantsMoreProbes`).
///
/// ICMP reports an attempt only for a reply, so a probe counts as sent once a reply to it
/// or to a later probe of the same host arrived: the gaps below the highest sequence
/// answered are the losses. Probes after the last reply are not counted yet: the live
/// loss can only lag the round's, and the verdict printed is always the finished round's.
/// TCP reports every attempt with its outcome.
public struct LiveRounds: Sendable {
    struct Tally {
        var sent = 0
        var received = 0
        var refused = 0
        var unreachable = 0
        var errors = 0
        var rttsMilliseconds: [Double] = []
    }

    private let icmpTargets: [ProbeTarget]
    private let tcpTargets: [ProbeTarget]
    private var icmp: [Tally]
    private var tcp: [Tally]

    /// - Parameters:
    ///   - icmp: the targets of the ICMP probe, in its order; empty when ICMP is not used.
    ///   - tcp: the targets of the TCP probe, in its order.
    public init(icmp: [ProbeTarget], tcp: [ProbeTarget]) {
        icmpTargets = icmp
        tcpTargets = tcp
        self.icmp = Array(repeating: Tally(), count: icmp.count)
        self.tcp = Array(repeating: Tally(), count: tcp.count)
    }

    /// Counts one attempt (duplicates and attempts of unknown targets are ignored).
    public mutating func record(_ attempt: AttemptEvent) {
        switch attempt.kind {
        case .icmp:
            guard icmp.indices.contains(attempt.targetIndex), !attempt.isDuplicate, attempt.outcome == .ok else { return }
            icmp[attempt.targetIndex].sent = max(icmp[attempt.targetIndex].sent, attempt.sequence)
            icmp[attempt.targetIndex].received += 1
            if let rtt = attempt.rttMilliseconds { icmp[attempt.targetIndex].rttsMilliseconds.append(rtt) }
        case .tcp:
            guard tcp.indices.contains(attempt.targetIndex) else { return }
            tcp[attempt.targetIndex].sent += 1
            switch attempt.outcome {
            case .ok:
                tcp[attempt.targetIndex].received += 1
                if let rtt = attempt.rttMilliseconds { tcp[attempt.targetIndex].rttsMilliseconds.append(rtt) }
            case .refused: tcp[attempt.targetIndex].refused += 1
            case .unreachable: tcp[attempt.targetIndex].unreachable += 1
            case .error, .unresolved, .tooBig: tcp[attempt.targetIndex].errors += 1
            case .timeout: break
            }
        }
    }

    /// One round so far per ICMP target, in the probe's order.
    public var icmpRounds: [RoundResult] { icmpTargets.indices.map { Self.round(.icmp, index: $0, target: icmpTargets[$0], tally: icmp[$0]) } }

    /// One round so far per TCP target, in the probe's order.
    public var tcpRounds: [RoundResult] { tcpTargets.indices.map { Self.round(.tcp, index: $0, target: tcpTargets[$0], tally: tcp[$0]) } }

    /// True when some host's verdict from the rounds so far (without traces, which report
    /// only at their end) is undecided in a way that more probes could settle.
    /// - Parameter hosts: the hosts of the `check`, as `Diagnosis.verdicts` takes them.
    public func wantMoreProbes(hosts: [ProbeTarget]) -> Bool {
        Diagnosis.verdicts(hosts: hosts, icmp: icmpRounds, tcp: tcpRounds, traces: []).contains { $0.diagnosis.wantsMoreProbes }
    }

    static func round(_ kind: ProbeKind, index: Int, target: ProbeTarget, tally: Tally) -> RoundResult {
        let outcome: ProbeOutcome
        if target.address == nil {
            outcome = .unresolved
        } else if tally.received > 0 {
            outcome = .ok
        } else if tally.refused > 0 {
            outcome = .refused
        } else if tally.unreachable > 0 {
            outcome = .unreachable
        } else if tally.errors > 0 {
            outcome = .error
        } else {
            outcome = .timeout
        }
        return RoundResult(kind: kind, targetIndex: index, target: target, startNanoseconds: 0, sent: tally.sent, received: tally.received, duplicates: 0, late: 0,
                           unreachable: tally.unreachable, refused: tally.refused, errors: tally.errors,
                           lossPercent: tally.sent == 0 ? 100 : Double(tally.sent - tally.received) / Double(tally.sent) * 100,
                           statistics: RTTStatistics(samples: tally.rttsMilliseconds), rttsMilliseconds: tally.rttsMilliseconds,
                           kernelTimestamps: 0, userTimestamps: 0, outcome: outcome)
    }
}
