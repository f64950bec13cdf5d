import FoundationEssentials
import ProbeResults

/// "Is it the network?": a verdict per host from its ICMP and TCP rounds and its trace,
/// taken as one body of evidence.
///
/// A loss (or handshake failure) rate is judged as an estimate with its 95 % confidence
/// interval, the Wilson score interval (`LossEstimate`), never as the bare share of a
/// handful of probes: it is a problem when the interval's lower bound is at or above
/// `lossThreshold` (5 %), not one when its upper bound is below it, and undecided when the
/// interval straddles the threshold. The ICMP estimate pools the pings with the trace's
/// probes that reached the host when the trace is ICMP to the same address (the same
/// packets on the same path); a TCP trace is never pooled with ICMP. Where the pooled
/// interval straddles the threshold but the pings' own decides, the pings decide: `check`
/// probes on until the pings decide (a trace reports only at its end), and stopping on
/// one estimate to judge by another would turn its decided verdicts into inconclusive ones.
///
/// The rules, in order, first match wins (also in `netprobe check --help`):
/// 1. The name does not resolve: a name (DNS) problem.
/// 2. ICMP or TCP was answered only by "unreachable", or the trace ends in an unreachable
///    or a routing loop: a network problem (no route, or the host is down).
/// 3. The ICMP loss interval's lower bound is at or above 5 %: a network problem.
/// 4. The trace's loss start is a significant change point (`PathAnalysis` rule 3, 99 %)
///    and the destination's loss is significant (the lower bound of its 95 % interval at
///    or above `PathAnalysis.significantLossPercent`, 1 %): a network problem from that
///    hop on, whatever rule 3 made of the ICMP loss.
/// 5. No ICMP reply at all: if a TCP port answers (handshake or refusal), ICMP is just
///    filtered and TCP decides (rules 6, 7, 10, 11); if nothing answers, a network problem
///    (or the host is down).
/// 6. A TCP port refuses and never completes a handshake: the service is down (server).
/// 7. A TCP port never answers while ICMP does: filtered, or the accept backlog is full
///    (server side).
/// 8. A port's handshake median is above 2 x the ICMP median + 1 ms: slow to accept
///    (server).
/// 9. The ICMP loss interval straddles 5 %: inconclusive, probe longer. (Rules 6-8 come
///    first because loss explains none of them: not a refusal, not a port that never
///    answers while ICMP does, not a slow median.)
/// 10. A port's handshake failure interval (Wilson, as for loss): lower bound at or above
///    5 %, the server is overloaded; straddling 5 %, inconclusive.
/// 11. Otherwise neither: the network and the service answer; look at the application.
///
/// The summary is one sentence that names the culprit once, gives each number once, and
/// ends with what the trace says ("; loss starts at hop 4, 198.18.4.2: ..."); it never says
/// "not the network" when the trace found significant loss.
public struct Diagnosis: Sendable, Equatable {
    /// Who is to blame.
    public enum Culprit: String, Sendable {
        case name
        case network
        case server
        case neither
        /// The evidence does not decide (a rate whose interval straddles the threshold).
        case inconclusive
    }

    /// The rule that decided, as a stable code (safe as a tag value).
    public enum Reason: String, Sendable {
        /// Rule 1.
        case unresolved
        /// Rule 2: ICMP or TCP answered only by "unreachable".
        case unreachable
        /// Rule 2: don't-fragment echo requests answered only "too big" (the path MTU).
        case tooBig = "too_big"
        /// Rule 2: the trace ends in an unreachable.
        case pathUnreachable = "path_unreachable"
        /// Rule 2: the trace ends in a routing loop.
        case routingLoop = "routing_loop"
        /// Rule 3.
        case icmpLoss = "icmp_loss"
        /// Rule 4.
        case pathLoss = "path_loss"
        /// Rule 5, when nothing answers.
        case noAnswer = "no_answer"
        /// Rule 6.
        case refused
        /// Rule 7.
        case portFiltered = "port_filtered"
        /// Rule 8.
        case slowHandshake = "slow_handshake"
        /// Rule 9.
        case icmpLossUndecided = "icmp_loss_undecided"
        /// Rule 10, above the threshold.
        case handshakeFailures = "handshake_failures"
        /// Rule 10, straddling it.
        case handshakeFailuresUndecided = "handshake_failures_undecided"
        /// Neither ICMP nor TCP was measured: nothing to decide from.
        case nothingMeasured = "nothing_measured"
        /// Rule 11.
        case healthy
    }

    public var culprit: Culprit
    /// The rule that decided.
    public var reason: Reason
    /// One sentence for people: the culprit, the numbers behind it, what the trace says.
    public var summary: String
    /// The ICMP loss (the trace's probes pooled in where they could be); nil without ICMP.
    public var icmpLoss: LossEstimate?
    /// Per TCP port, in the order of the rounds: the handshakes that failed.
    public var handshakeFailures: [PortFailures]

    /// Loss (or handshake failures) at or above this percentage is a problem.
    public static let lossThreshold = 5.0

    public init(culprit: Culprit, reason: Reason, summary: String, icmpLoss: LossEstimate? = nil, handshakeFailures: [PortFailures] = []) {
        self.culprit = culprit
        self.reason = reason
        self.summary = summary
        self.icmpLoss = icmpLoss
        self.handshakeFailures = handshakeFailures
    }

    /// True when probing longer could decide the verdict: a rate undecided against the
    /// threshold (rules 9 and 10), not a lack of anything to measure.
    public var wantsMoreProbes: Bool {
        reason == .icmpLossUndecided || reason == .handshakeFailuresUndecided
    }

    /// The verdict, by the rules above.
    /// - Parameters:
    ///   - icmp: the host's ICMP round; nil when ICMP could not be used.
    ///   - tcp: the host's TCP rounds, one per port.
    ///   - trace: the host's trace, taken side by side with the rounds; nil without one.
    /// - Returns: the verdict, its sentence and the estimates it was drawn from.
    public static func diagnose(icmp: RoundResult?, tcp: [RoundResult], trace: PathTrace? = nil) -> Diagnosis {
        let icmpLoss = icmp.map { judgedLoss(of: $0, trace: trace) }
        let failures = tcp.map { PortFailures(port: $0.target.port, failures: LossEstimate(lost: $0.sent - $0.received, probes: $0.sent)) }
        func verdict(_ culprit: Culprit, _ reason: Reason, _ body: String, pathNote: Bool = true) -> Diagnosis {
            var summary = culprit.rawValue + ": " + body
            if pathNote, let trace, let note = Self.pathNote(trace, culprit: culprit, reason: reason) { summary += "; " + note }
            return Diagnosis(culprit: culprit, reason: reason, summary: summary, icmpLoss: icmpLoss, handshakeFailures: failures)
        }

        // Rule 1
        if let round = ([icmp].compactMap { $0 } + tcp).first(where: { $0.outcome == .unresolved }) {
            return verdict(.name, .unresolved, "\(round.target.name) does not resolve: DNS problem", pathNote: false)
        }
        // Rule 2
        let unreachable = ([icmp].compactMap { $0 } + tcp).filter { $0.outcome == .unreachable }
        if !unreachable.isEmpty {
            return verdict(.network, .unreachable, "unreachable (\(unreachable.map(describeUnreachable).joined(separator: ", "))): no route, or the host is down")
        }
        if let icmp, icmp.outcome == .tooBig {
            let mtu = icmp.pathMTU.map { "the path MTU is \($0) bytes" } ?? "the path named no MTU"
            return verdict(.network, .tooBig, "\(icmp.tooBig) of \(icmp.sent) don't-fragment echo requests too big: \(mtu), smaller than the probes")
        }
        if let trace, let ending = trace.endingSentence {
            switch trace.ending {
            case .unreachable: return verdict(.network, .pathUnreachable, ending)
            case .loop: return verdict(.network, .routingLoop, ending)
            default: break
            }
        }
        let icmpAnswers = (icmp?.received ?? 0) > 0
        // Rule 3
        if icmpAnswers, let icmpLoss, icmpLoss.decision(thresholdPercent: lossThreshold) == .above {
            return verdict(.network, .icmpLoss, lead(icmp, icmpLoss, tcp: tcp, failures: failures))
        }
        // Rule 4
        if let trace, locatedLoss(in: trace) != nil {
            return verdict(.network, .pathLoss, lead(icmp, icmpLoss, tcp: tcp, failures: failures))
        }
        // Rule 5
        if let icmp, !icmpAnswers, !tcp.contains(where: { $0.received > 0 || $0.refused > 0 }) {
            let ports = tcp.isEmpty ? "" : " nor to TCP port " + tcp.map(port).joined(separator: ", ")
            return verdict(.network, .noAnswer, "no reply to \(icmp.sent) ICMP probes\(ports): the host is down, or the path to it")
        }
        let icmpLead = lead(icmp, icmpLoss, tcp: [], failures: [])
        // Rule 6
        for round in tcp where round.received == 0 && round.refused > 0 {
            return verdict(.server, .refused, "\(icmpLead), TCP port \(port(round)) refused: service down")
        }
        // Rule 7
        for round in tcp where round.received == 0 {
            return verdict(.server, .portFiltered, "\(icmpLead), TCP port \(port(round)) filtered (no answer): firewall, or the accept backlog is full")
        }
        // Rule 8
        if icmpAnswers, let icmpMedian = icmp?.statistics?.median {
            for round in tcp {
                if let tcpMedian = round.statistics?.median, tcpMedian > 2 * icmpMedian + 1 {
                    return verdict(.server, .slowHandshake, "\(icmpLead), TCP port \(port(round)) handshake median \(ms(tcpMedian)) vs ICMP \(ms(icmpMedian)): slow to accept")
                }
            }
        }
        // Rule 9
        if icmpAnswers, let icmpLoss, icmpLoss.decision(thresholdPercent: lossThreshold) == .undecided {
            return verdict(.inconclusive, .icmpLossUndecided, lead(icmp, icmpLoss, tcp: tcp, failures: failures) + ": " + undecided)
        }
        // Rule 10
        for (round, failed) in zip(tcp, failures) where failed.failures.decision(thresholdPercent: lossThreshold) == .above {
            return verdict(.server, .handshakeFailures, "\(icmpLead), TCP port \(port(round)) handshake failures \(failed.failures.text(unit: "handshakes")): overloaded")
        }
        for (round, failed) in zip(tcp, failures) where failed.failures.decision(thresholdPercent: lossThreshold) == .undecided {
            return verdict(.inconclusive, .handshakeFailuresUndecided,
                           "\(icmpLead), TCP port \(port(round)) handshake failures \(failed.failures.text(unit: "handshakes")): \(undecided)")
        }
        // Rule 11
        guard icmp != nil || !tcp.isEmpty else {
            return verdict(.inconclusive, .nothingMeasured, "nothing was measured (no ICMP, no TCP port)")
        }
        if tcp.isEmpty {
            // (Never "not the network" beside a loss the trace found: it is real, only small.)
            let traceFoundLoss = trace.map(foundLoss) ?? false
            return verdict(.neither, .healthy, "\(icmpLead), below the \(thresholdText) threshold" + (traceFoundLoss ? "" : ": not the network"))
        }
        return verdict(.neither, .healthy, lead(icmp, icmpLoss, tcp: tcp, failures: failures) + ": look at the application")
    }

    /// The ICMP loss rules 3 and 9 judge: pooled with the trace (`loss(of:pooledWith:)`)
    /// unless that straddles the threshold and the pings alone do not.
    static func judgedLoss(of icmp: RoundResult, trace: PathTrace?) -> LossEstimate {
        let pooled = loss(of: icmp, pooledWith: trace)
        guard pooled.traceProbes > 0, pooled.decision(thresholdPercent: lossThreshold) == .undecided else { return pooled }
        let own = loss(of: icmp, pooledWith: nil)
        return own.decision(thresholdPercent: lossThreshold) == .undecided ? pooled : own
    }

    /// The ICMP loss: the round's, pooled with the trace's probes that reached the host
    /// when the trace is ICMP to the same address (a TCP trace is other packets).
    /// Don't-fragment echoes answered "too big" are not counted: the path answered them
    /// (rule 2 judges them), so they are neither lost nor evidence of no loss.
    /// - Returns: the estimate, with `traceProbes` saying how many were the trace's.
    public static func loss(of icmp: RoundResult, pooledWith trace: PathTrace?) -> LossEstimate {
        let probes = icmp.sent - icmp.tooBig
        let lost = probes - icmp.received
        guard let trace, trace.target.port == nil, trace.reached, let address = icmp.target.address, trace.target.address == address,
              let destination = trace.hops.last, destination.isDestination, destination.sent > 0 else {
            return LossEstimate(lost: lost, probes: probes)
        }
        return LossEstimate(lost: lost + destination.sent - destination.received, probes: probes + destination.sent, traceProbes: destination.sent)
    }

    /// Rule 4's evidence: the hop where loss starts when the trace found it significant,
    /// and the destination's loss.
    /// - Returns: nil unless the loss start is a significant change point and the
    ///   destination's loss is significant.
    public static func locatedLoss(in trace: PathTrace) -> (hop: HopReport, destinationLoss: LossEstimate)? {
        guard trace.analysis.lossStartIsChangePoint, destinationLossIsSignificant(trace), let start = trace.analysis.lossStartHop,
              let hop = trace.hops.first(where: { $0.hop == start }), let destination = trace.hops.last else { return nil }
        return (hop, destinationLoss(destination))
    }

    /// The trace reached the host, found where loss starts, and the destination's loss is
    /// more than noise: the lower bound of its 95 % interval is at or above
    /// `PathAnalysis.significantLossPercent`.
    static func destinationLossIsSignificant(_ trace: PathTrace) -> Bool {
        guard trace.reached, trace.analysis.lossStartHop != nil, let destination = trace.hops.last, destination.isDestination else { return false }
        return destinationLoss(destination).lowPercent >= PathAnalysis.significantLossPercent
    }

    /// The trace found a loss that is more than noise, though perhaps too small for rule 4:
    /// a significant step, or a significant loss at the destination.
    static func foundLoss(_ trace: PathTrace) -> Bool {
        trace.reached && trace.analysis.lossStartHop != nil && (trace.analysis.lossStartIsChangePoint || destinationLossIsSignificant(trace))
    }

    static func destinationLoss(_ destination: HopReport) -> LossEstimate {
        LossEstimate(lost: destination.unanswered, probes: destination.sent)
    }

    static let thresholdText = lossThreshold == lossThreshold.rounded() ? "\(Int(lossThreshold)) %" : LossEstimate.percent(lossThreshold)
    static let undecided = "the interval straddles the \(thresholdText) threshold; probe longer (--max-duration)"

    /// The numbers: "ICMP loss 4.0 % (95 % interval 1.1-13.5 %, 50 probes)", then each
    /// port ("TCP port 80 OK 0.50 ms, 2.0 % failed").
    static func lead(_ icmp: RoundResult?, _ icmpLoss: LossEstimate?, tcp: [RoundResult], failures: [PortFailures]) -> String {
        var parts: [String] = []
        if let icmp, let icmpLoss {
            parts.append(icmp.received > 0 ? "ICMP loss " + icmpLoss.text(unit: "probes") : "ICMP filtered (no reply to \(icmp.sent) probes)")
        } else {
            parts.append("ICMP not measured")
        }
        for (round, failed) in zip(tcp, failures) { parts.append(describeTCP(round, failed.failures)) }
        return parts.joined(separator: ", ")
    }

    static func describeTCP(_ round: RoundResult, _ failures: LossEstimate) -> String {
        var text = "TCP port \(port(round)) "
        if let median = round.statistics?.median {
            text += "OK \(ms(median))"
            if failures.lost > 0 { text += ", \(LossEstimate.percent(failures.percent)) failed" }
        } else {
            text += round.outcome.rawValue
        }
        return text
    }

    static func describeUnreachable(_ round: RoundResult) -> String {
        let what = round.kind == .icmp ? "ICMP" : "TCP port \(port(round))"
        return "\(what): \(round.unreachable) of \(round.sent)"
    }

    static func port(_ round: RoundResult) -> String { round.target.port.map(String.init) ?? "?" }

    static func ms(_ value: Double) -> String {
        DecimalText.fixed(value, places: value < 10 ? 2 : 1) + " ms"
    }
}

/// A TCP port's failed handshakes as an estimate (`check --json`'s "handshake_failures").
public struct PortFailures: Sendable, Equatable {
    public var port: UInt16?
    /// Handshakes that did not complete in time, of those tried.
    public var failures: LossEstimate

    public init(port: UInt16?, failures: LossEstimate) {
        self.port = port
        self.failures = failures
    }
}
