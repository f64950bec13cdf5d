import ProbeResults

/// One host's evidence and the verdict drawn from it: what `check` prints per host.
public struct HostVerdict: Sendable {
    /// The host as the user named it (its address, when it resolved).
    public var host: ProbeTarget
    /// Its ICMP round, when ICMP was probed.
    public var icmp: RoundResult?
    /// Its TCP rounds, one per port, in the order the ports were given.
    public var tcp: [RoundResult]
    /// Its trace, when one ran.
    public var trace: PathTrace?
    public var diagnosis: Diagnosis
}

extension Diagnosis {
    /// Every host's verdict from the rounds and traces of one `check` (the ICMP rounds and
    /// traces by host index, the TCP rounds by host name), each judged with its trace.
    public static func verdicts(hosts: [ProbeTarget], icmp: [RoundResult], tcp: [RoundResult], traces: [PathTrace]) -> [HostVerdict] {
        hosts.enumerated().map { index, host in
            let icmpRound = icmp.first { $0.targetIndex == index }
            let tcpRounds = tcp.filter { $0.target.name == host.name }.sorted { $0.targetIndex < $1.targetIndex }
            let trace = traces.first { $0.targetIndex == index && host.address != nil }
            return HostVerdict(host: host, icmp: icmpRound, tcp: tcpRounds, trace: trace, diagnosis: diagnose(icmp: icmpRound, tcp: tcpRounds, trace: trace))
        }
    }
}
