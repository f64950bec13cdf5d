import ProbeResults

/// "Where is it the network?": the hop a `check` verdict names, from a trace of the host.
extension Diagnosis {
    /// Adds what the trace says to the verdict: for a network problem, the first hop from
    /// which loss (or added latency) persists to the target, or where the path ends; for
    /// any other verdict, that the path is clean (and which hops only rate-limit).
    /// - Parameter trace: the host's trace, taken side by side with the verdict's probes.
    public func locating(in trace: PathTrace) -> Diagnosis {
        var located = self
        located.summary += "; " + Self.pathNote(trace, networkProblem: culprit == .network)
        return located
    }

    static func pathNote(_ trace: PathTrace, networkProblem: Bool) -> String {
        let analysis = trace.analysis
        let hops = trace.hops
        func name(_ hop: HopReport) -> String { "hop \(hop.hop), \(hop.address?.description ?? "*")" }
        let limiting = hops.filter(\.ratesLimited).map { "hop \($0.hop) \($0.address?.description ?? "*") rate-limits its ICMP (\(PathAnalysis.percent($0.lossPercent)) unanswered, not loss)" }
        let limitingNote = limiting.isEmpty ? "" : "; " + limiting.joined(separator: ", ")
        if networkProblem {
            if let unreachable = hops.first(where: { $0.unreachable > 0 }) {
                return "the path ends at \(name(unreachable)): it answers unreachable"
            }
            if !trace.reached {
                guard let last = hops.last(where: { $0.received > 0 }) else { return "no hop answers the trace, not even the first" }
                return "the path ends after \(name(last)): no hop after it answers, nor the target\(limitingNote)"
            }
            if let start = analysis.lossStartHop, let hop = hops.first(where: { $0.hop == start }), let loss = analysis.destinationLossPercent {
                return "loss starts at \(name(hop)): \(PathAnalysis.percent(loss)) from there to the target\(limitingNote)"
            }
            if let start = analysis.latencyStartHop, let hop = hops.first(where: { $0.hop == start }), let added = analysis.addedLatencyMilliseconds {
                return "latency added at \(name(hop)): +\(Diagnosis.ms(added))\(limitingNote)"
            }
            return "the trace finds no hop to blame (\(hops.count == 1 ? "1 hop" : "\(hops.count) hops"), no loss persists to the target)\(limitingNote)"
        }
        guard trace.reached else { return "the trace did not reach the target (ICMP with a TTL may be filtered on the way)" }
        if analysis.lossStartHop == nil {
            return "path clean: \(hops.count == 1 ? "1 hop" : "\(hops.count) hops"), no loss persists to the target\(limitingNote)"
        }
        return analysis.summary(hops: hops)
    }
}
