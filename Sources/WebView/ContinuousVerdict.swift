import Diagnosis
import ProbeResults

/// `check`'s verdict ("network", "server", "neither", "inconclusive", "name"), computed
/// continuously for every host `run` probes with both ICMP and TCP, from the same rounds
/// the view draws.
///
/// The evidence is a sliding window: each series' last `windowRounds` (20) rounds, pooled
/// into one round per series (probes and replies summed, the rounds' medians as the RTT
/// sample) and judged by `Diagnosis.diagnose`, the rules `check` prints, without a trace.
/// Pooling matters because the rules judge a rate by its 95 % Wilson interval against the
/// 5 % threshold: one round of 5 pings decides nothing.
///
/// With the default count (5 probes a round, `ProbeSettings.defaults`):
/// - a clean host is "neither" once 15 rounds are in the window (75 probes: the upper
///   bound of 0 lost of 75 is 4.9 %, under 5 %); before that it is "inconclusive", as a
///   `check` of so few probes would say;
/// - a 50 % loss from round N on is "network" by round N + 3, the fourth lossy round
///   (10 of the window's 100 probes lost: the interval's lower bound is 5.5 %), and
///   "inconclusive" while fewer are in;
/// - once the loss stops, "network" lasts until the lossy rounds leave the window (at most
///   20 rounds).
/// A larger count decides sooner (the window holds more probes); the README states these
/// numbers.
public enum ContinuousVerdict {
    /// Rounds per series in the window (at 5 or more probes a round).
    public static let windowRounds = 20

    /// The window of a series whose rounds send `probesPerRound`: 20 rounds, or as many as
    /// hold 100 probes where rounds are smaller (a TCP count of 2 in 20 rounds is 40
    /// handshakes, whose 95 % interval never falls under the 5 % threshold: forever
    /// inconclusive).
    public static func windowRounds(probesPerRound: Int) -> Int {
        max(windowRounds, (100 + max(1, probesPerRound) - 1) / max(1, probesPerRound))
    }

    /// One host's verdict.
    public struct HostVerdict: Sendable {
        /// The targets file's group.
        public var env: String
        /// The host as written in the targets file.
        public var target: String
        /// The series judged: the ICMP one and the TCP ones (one per port).
        public var icmp: WebSeriesKey
        public var tcp: [WebSeriesKey]
        /// The rounds in the window, per series (ICMP first, then TCP in port order).
        public var rounds: [Int]
        public var diagnosis: Diagnosis
    }

    /// The verdicts of every host with both an ICMP and a TCP series, by group and name.
    /// A host probed with ICMP in several classes (TOS) is judged by its default-class
    /// series where it has one; a TCP port probed in several classes likewise.
    public static func verdicts(_ history: RecentHistory) -> [HostVerdict] {
        struct Host: Hashable { var env: String; var target: String }
        var icmp: [Host: (key: WebSeriesKey, rounds: [VerdictRecord])] = [:]
        var tcp: [Host: [UInt16: (key: WebSeriesKey, rounds: [VerdictRecord])]] = [:]
        for (key, rounds) in history.verdictWindows() where !rounds.isEmpty {
            let host = Host(env: key.env, target: key.target)
            switch key.kind {
            case .icmp:
                if let existing = icmp[host], existing.key.options.isDefault { continue }
                icmp[host] = (key, rounds)
            case .tcp:
                let port = key.port ?? 0
                if let existing = tcp[host]?[port], existing.key.options.isDefault { continue }
                tcp[host, default: [:]][port] = (key, rounds)
            }
        }
        var result: [HostVerdict] = []
        for (host, icmpSeries) in icmp {
            guard let ports = tcp[host], !ports.isEmpty else { continue }
            let tcpSeries = ports.sorted { $0.key < $1.key }.map(\.value)
            let icmpRound = pooledRound(.icmp, target: host.target, port: nil, records: icmpSeries.rounds)
            let tcpRounds = tcpSeries.enumerated().map { index, series in
                pooledRound(.tcp, target: host.target, port: series.key.port, records: series.rounds, index: index)
            }
            result.append(HostVerdict(env: host.env, target: host.target, icmp: icmpSeries.key, tcp: tcpSeries.map(\.key),
                                      rounds: [icmpSeries.rounds.count] + tcpSeries.map(\.rounds.count),
                                      diagnosis: Diagnosis.diagnose(icmp: icmpRound, tcp: tcpRounds)))
        }
        return result.sorted { ($0.env, $0.target) < ($1.env, $1.target) }
    }

    /// The window's rounds of one series as one round: counts summed, the rounds' medians
    /// as its RTT sample, the outcome of the whole (as `check` reports a round's).
    static func pooledRound(_ kind: ProbeKind, target: String, port: UInt16?, records: [VerdictRecord], index: Int = 0) -> RoundResult {
        var sent = 0, received = 0, unreachable = 0, refused = 0, errors = 0
        var medians: [Double] = []
        for record in records {
            sent += Int(record.sent)
            received += Int(record.received)
            unreachable += Int(record.unreachable)
            refused += Int(record.refused)
            errors += Int(record.errors)
            if !record.median.isNaN { medians.append(Double(record.median)) }
        }
        let outcome: ProbeOutcome
        if let last = records.last, ProbeOutcome(storedCode: last.outcome) == .unresolved {
            outcome = .unresolved
        } else if received > 0 {
            outcome = .ok
        } else if refused > 0 {
            outcome = .refused
        } else if unreachable > 0 {
            outcome = .unreachable
        } else if errors > 0 {
            outcome = .error
        } else {
            outcome = .timeout
        }
        return RoundResult(kind: kind, targetIndex: index, target: ProbeTarget(name: target, address: nil, port: port), startNanoseconds: 0,
                           sent: sent, received: received, duplicates: 0, late: 0, unreachable: unreachable, refused: refused, errors: errors,
                           lossPercent: sent == 0 ? 100 : Double(sent - received) / Double(sent) * 100,
                           statistics: RTTStatistics(samples: medians), rttsMilliseconds: medians,
                           kernelTimestamps: 0, userTimestamps: 0, outcome: outcome)
    }
}
