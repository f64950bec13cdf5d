import FoundationEssentials

/// One hop of a trace: every probe sent with this TTL (the destination's hop also takes
/// the probes sent with larger TTLs, which the destination answered too).
public struct HopReport: Sendable, Equatable {
    /// TTL / hop limit of the probes, 1 for the first router.
    public var hop: Int
    /// Who answered, with how many answers each, most answers first (several: equal-cost
    /// branches, with `--flows`, or a path that changed).
    public var addresses: [(address: IPAddress, answers: Int)]
    /// Probes sent.
    public var sent: Int
    /// Timely answers (time exceeded from a router, echo reply from the destination).
    public var received: Int
    /// RTTs in milliseconds, in send order.
    public var rttsMilliseconds: [Double]
    /// True for the destination's hop.
    public var isDestination: Bool
    /// Answers that were "unreachable" (the path ends here).
    public var unreachable: Int
    /// The hop's loss is its own (ICMP rate limiting or a slow control plane), not loss of
    /// traffic: later hops and the destination lose less. Set by `PathAnalysis`.
    public var ratesLimited = false

    public var lossPercent: Double { sent == 0 ? 0 : Double(sent - received) / Double(sent) * 100 }
    public var statistics: RTTStatistics? { RTTStatistics(samples: rttsMilliseconds) }
    /// The address with the most answers.
    public var address: IPAddress? { addresses.first?.address }

    public static func == (lhs: HopReport, rhs: HopReport) -> Bool {
        lhs.hop == rhs.hop && lhs.addresses.map(\.address) == rhs.addresses.map(\.address) && lhs.addresses.map(\.answers) == rhs.addresses.map(\.answers)
            && lhs.sent == rhs.sent && lhs.received == rhs.received && lhs.rttsMilliseconds == rhs.rttsMilliseconds
            && lhs.isDestination == rhs.isDestination && lhs.unreachable == rhs.unreachable && lhs.ratesLimited == rhs.ratesLimited
    }
}

/// The hops one flow identifier took: its own path (Paris style: one flow, one path).
public struct FlowPath: Sendable, Equatable {
    /// The flow's index (0 ..< `--flows`).
    public var flow: Int
    /// The address that answered most at each hop, nil where none did.
    public var hops: [IPAddress?]
    /// True when the destination answered this flow.
    public var reached: Bool
}

/// Everything one trace found for one target.
public struct PathTrace: Sendable {
    public var targetIndex: Int
    public var target: ProbeTarget
    /// CLOCK_REALTIME nanoseconds of the trace's start.
    public var startNanoseconds: Int64
    /// Rounds started (each round sends one probe per hop and flow).
    public var rounds: Int
    public var flows: Int
    /// Hop 1 first, up to the destination (or the last hop that answered).
    public var hops: [HopReport]
    /// Per flow, the path it took.
    public var flowPaths: [FlowPath]
    /// True when the destination answered at least once.
    public var reached: Bool
    /// Replies and errors that were not ours or matched no probe, by reason.
    public var ignored: [String: Int]
    /// What the hops say, per the rules of `PathAnalysis`.
    public var analysis: PathAnalysis

    /// A hash of the hop list (the most-answering address per hop, destination included):
    /// equal hashes, equal paths. FNV-1a, stable across runs and builds.
    public var pathHash: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for hop in hops {
            for byte in (hop.address?.description ?? "*").utf8 + [0x2c] {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
        }
        return hash
    }
}

/// Where on the path loss and latency start, told apart from hops that only answer
/// slowly or rate-limit their own ICMP.
///
/// Rules (`netprobe trace --help` prints them):
/// 1. A hop's forwarded loss is the least loss of it and every hop after it, the
///    destination included: whatever a router drops, every later hop misses too; what
///    only one hop misses is its own.
/// 2. A hop rate-limits (or answers slowly) when its own loss exceeds its forwarded loss
///    by more than 3 binomial standard deviations (and at least 2 probes): "rate-limits",
///    never loss.
/// 3. Loss starts at the first hop whose forwarded loss is at least half the
///    destination's, when the destination loses `significantLossPercent` or more (and at
///    least 2 probes). A rate-limiting hop cannot show it: the first hop after it that
///    does not rate-limit is named.
/// 4. Latency is added at the hop whose forwarded median RTT (least median of it and
///    every later hop) rises most over the hop before it, when that rise is at least 1 ms
///    and half of the destination's median.
public struct PathAnalysis: Sendable, Equatable {
    /// Loss at the destination below this is noise, not a problem to locate.
    public static let significantLossPercent = 1.0

    /// Forwarded loss per hop (rule 1), in percent, in hop order.
    public var forwardedLossPercent: [Double]
    /// Hops (1-based) whose own loss is rate limiting (rule 2).
    public var rateLimitingHops: [Int]
    /// The hop where loss starts (rule 3), nil when the destination loses nothing significant.
    public var lossStartHop: Int?
    /// The destination's loss, percent (nil without a destination hop).
    public var destinationLossPercent: Double?
    /// The hop that adds the latency (rule 4) and how much, in milliseconds.
    public var latencyStartHop: Int?
    public var addedLatencyMilliseconds: Double?

    /// Analyses `hops` (hop 1 first, destination last when reached).
    public init(hops: [HopReport], reached: Bool) {
        var forwarded = [Double](repeating: 0, count: hops.count)
        var least = Double.infinity
        for index in hops.indices.reversed() {
            if hops[index].sent > 0 { least = min(least, hops[index].lossPercent) }
            forwarded[index] = least.isFinite ? least : 100
        }
        forwardedLossPercent = forwarded
        rateLimitingHops = hops.indices.compactMap { index in
            let hop = hops[index]
            guard hop.sent > 0 else { return nil }
            let lost = Double(hop.sent - hop.received)
            let p = forwarded[index] / 100
            let expected = p * Double(hop.sent)
            let deviation = (Double(hop.sent) * p * (1 - p)).squareRoot()
            return lost - expected > max(2, 3 * deviation) ? hop.hop : nil
        }
        let destination = reached ? hops.last : nil
        destinationLossPercent = destination?.lossPercent
        if let destination, destination.lossPercent >= Self.significantLossPercent, destination.sent - destination.received >= 2 {
            // A hop that rate-limits hides whether the loss begins there: name the first
            // hop after it whose own answers show the loss.
            let limiting = Set(rateLimitingHops)
            lossStartHop = hops.indices.first { forwarded[$0] >= destination.lossPercent / 2 && !limiting.contains(hops[$0].hop) }.map { hops[$0].hop }
        } else {
            lossStartHop = nil
        }
        // Rule 4 on the medians.
        var medians = [Double?](repeating: nil, count: hops.count)
        var leastMedian: Double?
        for index in hops.indices.reversed() {
            if let median = hops[index].statistics?.median { leastMedian = min(leastMedian ?? median, median) }
            medians[index] = leastMedian
        }
        latencyStartHop = nil
        addedLatencyMilliseconds = nil
        if let destinationMedian = destination?.statistics?.median {
            var previous = 0.0
            var best: (hop: Int, rise: Double)?
            for index in hops.indices {
                guard let median = medians[index] else { continue }
                let rise = median - previous
                if rise > (best?.rise ?? 0) { best = (hops[index].hop, rise) }
                previous = median
            }
            if let best, best.rise >= 1, best.rise >= destinationMedian / 2 {
                latencyStartHop = best.hop
                addedLatencyMilliseconds = best.rise
            }
        }
    }

    /// One line for people: where loss starts, which hops only rate-limit.
    public func summary(hops: [HopReport]) -> String {
        var parts: [String] = []
        if let start = lossStartHop, let hop = hops.first(where: { $0.hop == start }), let destinationLoss = destinationLossPercent {
            parts.append("loss starts at hop \(start), \(hop.address?.description ?? "*"): \(Self.percent(destinationLoss)) from there to the target")
        } else if destinationLossPercent != nil {
            parts.append("no loss persists to the target")
        } else {
            parts.append("the target did not answer")
        }
        if let start = latencyStartHop, let added = addedLatencyMilliseconds, let hop = hops.first(where: { $0.hop == start }) {
            parts.append("latency added at hop \(start), \(hop.address?.description ?? "*"): +\(DecimalText.fixed(added, places: added < 10 ? 2 : 1)) ms")
        }
        let limiting = rateLimitingHops.compactMap { number in hops.first { $0.hop == number } }
        if !limiting.isEmpty {
            parts.append(limiting.map { "hop \($0.hop) \($0.address?.description ?? "*") rate-limits its ICMP (\(Self.percent($0.lossPercent)) unanswered, not loss)" }.joined(separator: ", "))
        }
        return parts.joined(separator: "; ")
    }

    static func percent(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value))%" : DecimalText.fixed(value, places: 1) + "%"
    }
}
