import FoundationEssentials
import ProbeResults

/// "Is it the network?": a verdict per host from its ICMP and TCP rounds.
///
/// The rules, in order (also in `netprobe check --help`):
/// 1. The name does not resolve: a name (DNS) problem.
/// 2. ICMP or TCP says "unreachable": a network problem (no route, host down).
/// 3. ICMP loses `lossThreshold` or more of its probes: a network problem.
/// 4. No ICMP reply at all: if a TCP port answers (handshake or refusal), ICMP is just
///    filtered and the verdict comes from TCP; if nothing answers, a network problem
///    (or the host is down).
/// 5. A TCP port refuses: the service is down (a server problem).
/// 6. A TCP port never answers while ICMP does: filtered or the server's backlog is full
///    (a server-side problem).
/// 7. `lossThreshold` or more of a port's handshakes fail: the server is overloaded.
/// 8. The handshake is much slower than ICMP (median above 2 x ICMP median + 1 ms): the
///    server is slow to accept.
/// 9. Otherwise neither: the network and the service answer; look at the application.
public struct Diagnosis: Sendable, Equatable {
    /// Who is to blame.
    public enum Culprit: String, Sendable {
        case name
        case network
        case server
        case neither
    }

    public var culprit: Culprit
    /// One line for people, with the numbers behind it.
    public var summary: String

    /// Loss at or above this percentage is a problem.
    public static let lossThreshold = 5.0

    /// - Parameters:
    ///   - icmp: the host's ICMP round; nil when ICMP could not be used.
    ///   - tcp: the host's TCP rounds, one per port.
    public static func diagnose(icmp: RoundResult?, tcp: [RoundResult]) -> Diagnosis {
        if icmp?.outcome == .unresolved || tcp.contains(where: { $0.outcome == .unresolved }) {
            return Diagnosis(culprit: .name, summary: "the name does not resolve: DNS problem")
        }
        let icmpText = icmp.map(describeICMP)
        let prefix = icmpText.map { "network OK (\($0))" }
        if icmp?.outcome == .unreachable || tcp.contains(where: { $0.outcome == .unreachable }) {
            return Diagnosis(culprit: .network, summary: "host unreachable: network problem (no route, or the host is down)")
        }
        if let icmp, icmp.received > 0, icmp.lossPercent >= lossThreshold {
            let tcpNote = tcp.isEmpty ? "" : "; " + tcp.map(describeTCP).joined(separator: "; ")
            return Diagnosis(culprit: .network, summary: "ICMP \(percent(icmp.lossPercent)) loss: network problem (\(icmpText!))\(tcpNote)")
        }
        let icmpSilent = icmp.map { $0.received == 0 } ?? false
        if icmpSilent {
            let answering = tcp.filter { $0.received > 0 || $0.refused > 0 }
            if answering.isEmpty {
                let what = tcp.isEmpty ? "no ICMP replies" : "no answer to ICMP nor TCP"
                return Diagnosis(culprit: .network, summary: "\(what): network problem, or the host is down")
            }
        }
        let lead = icmpSilent ? "ICMP filtered (no replies) but the host answers TCP" : (prefix ?? "ICMP not measured")
        guard !tcp.isEmpty else {
            return Diagnosis(culprit: .neither, summary: "\(lead): not the network")
        }
        for round in tcp where round.received == 0 && round.refused > 0 {
            return Diagnosis(culprit: .server, summary: "\(lead), TCP port \(port(round)) refused: service down")
        }
        for round in tcp where round.received == 0 {
            return Diagnosis(culprit: .server, summary: "\(lead), TCP port \(port(round)) filtered (no answer): firewall, or the server's backlog is full")
        }
        for round in tcp where round.lossPercent >= lossThreshold {
            return Diagnosis(culprit: .server, summary: "\(lead), TCP port \(port(round)): \(percent(round.lossPercent)) of handshakes failed (\(describeTCP(round))): server overloaded")
        }
        if let icmpMedian = icmp?.statistics?.median {
            for round in tcp {
                if let tcpMedian = round.statistics?.median, tcpMedian > 2 * icmpMedian + 1 {
                    return Diagnosis(culprit: .server, summary: "\(lead), TCP port \(port(round)) handshake slow (\(ms(tcpMedian)) vs ICMP \(ms(icmpMedian))): server slow to accept")
                }
            }
        }
        return Diagnosis(culprit: .neither, summary: "\(lead), " + tcp.map(describeTCP).joined(separator: ", ") + ": neither, look at the application")
    }

    static func describeICMP(_ round: RoundResult) -> String {
        guard let median = round.statistics?.median else { return "icmp \(percent(round.lossPercent)) loss" }
        return "icmp \(percent(round.lossPercent)) loss, \(ms(median))"
    }

    static func describeTCP(_ round: RoundResult) -> String {
        var text = "TCP port \(port(round)) "
        if let median = round.statistics?.median {
            text += "OK \(ms(median))"
            if round.lossPercent > 0 { text += ", \(percent(round.lossPercent)) failed" }
        } else {
            text += round.outcome.rawValue
        }
        return text
    }

    static func port(_ round: RoundResult) -> String { round.target.port.map(String.init) ?? "?" }

    static func percent(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value))%" : DecimalText.fixed(value, places: 1) + "%"
    }

    static func ms(_ value: Double) -> String {
        DecimalText.fixed(value, places: value < 10 ? 2 : 1) + " ms"
    }
}
