import ProbeResults

/// "Where is it the network?": what a host's trace adds to its `check` verdict.
extension Diagnosis {
    /// The trace's part of a verdict's sentence (it follows "; "): for a network problem,
    /// where the path ends, or the first hop from which loss (or added latency) persists to
    /// the target; for any other verdict, whether the path is clean. Hops that only
    /// rate-limit their ICMP are named either way.
    /// - Parameters:
    ///   - trace: the host's trace, taken side by side with the verdict's probes.
    ///   - culprit: the verdict.
    ///   - reason: the rule that decided: when it was the trace's ending, the verdict
    ///     already says it and the note does not repeat it.
    /// - Returns: nil when there is nothing to add.
    static func pathNote(_ trace: PathTrace, culprit: Culprit, reason: Reason) -> String? {
        let hops = trace.hops
        let analysis = trace.analysis
        func name(_ hop: HopReport) -> String { "hop \(hop.hop), \(hop.address?.description ?? "???")" }
        let limiting = hops.filter(\.ratesLimited).map {
            "hop \($0.hop) \($0.address?.description ?? "???") rate-limits its ICMP (\(LossEstimate.percent($0.lossPercent)) unanswered, not loss)"
        }
        func note(_ finding: String?) -> String? {
            let parts = [finding].compactMap { $0 } + (limiting.isEmpty ? [] : [limiting.joined(separator: ", ")])
            return parts.isEmpty ? nil : parts.joined(separator: "; ")
        }
        func count(_ hops: [HopReport]) -> String { hops.count == 1 ? "1 hop" : "\(hops.count) hops" }

        if reason == .pathUnreachable || reason == .routingLoop { return note(nil) }
        if culprit == .network {
            switch trace.ending {
            case .unreachable, .loop: return note(trace.endingSentence)
            default: break
            }
            if let unreachable = hops.first(where: { $0.unreachable > 0 }) {
                return note("the path ends at \(name(unreachable)): it answers unreachable")
            }
            if !trace.reached {
                guard let last = hops.last(where: { $0.received > 0 }) else { return note("no hop answers the trace, not even the first") }
                return note("the path ends after \(name(last)): no hop after it answers, nor the target")
            }
            if let start = analysis.lossStartHop, let hop = hops.first(where: { $0.hop == start }), let loss = analysis.destinationLossPercent {
                var finding = "loss starts at \(name(hop)): \(LossEstimate.percent(loss)) from there to the target"
                if let located = locatedLoss(in: trace) {
                    let destination = located.destinationLoss
                    finding += " (95 % interval \(LossEstimate.number(destination.lowPercent))-\(LossEstimate.percent(destination.highPercent)),"
                        + " \(destination.probes) traced probes), a significant step"
                }
                return note(finding)
            }
            if let start = analysis.latencyStartHop, let hop = hops.first(where: { $0.hop == start }), let added = analysis.addedLatencyMilliseconds {
                return note("latency added at \(name(hop)): +\(Diagnosis.ms(added))")
            }
            return note("the trace finds no hop to blame (\(count(hops)), no loss persists to the target)")
        }
        guard trace.reached else { return note("trace: " + (trace.endingSentence ?? "the target did not answer")) }
        if let start = analysis.lossStartHop, let hop = hops.first(where: { $0.hop == start }), let loss = analysis.destinationLossPercent {
            return note("loss starts at \(name(hop)): \(LossEstimate.percent(loss)) from there to the target")
        }
        return note("path clean: \(count(hops)), no loss persists to the target")
    }
}
