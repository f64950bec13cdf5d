import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

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
    /// Answers timed by the kernel's stamps at both ends (SO_TIMESTAMPING: the probe's
    /// transmit stamp and the answer's receive stamp).
    public var kernelTimestamps: Int
    /// Answers timed by user-space clock reads at both ends (a stamp was missing).
    public var userTimestamps: Int

    public var lossPercent: Double { sent == 0 ? 0 : Double(sent - received) / Double(sent) * 100 }
    public var statistics: RTTStatistics? { RTTStatistics(samples: rttsMilliseconds) }
    /// The address with the most answers.
    public var address: IPAddress? { addresses.first?.address }
    /// "kernel" or "user" when every answer agrees, "mixed" otherwise; nil with no answers.
    public var timestampSource: TimestampSource? {
        switch (kernelTimestamps, userTimestamps) {
        case (0, 0): return nil
        case (_, 0): return .kernel
        case (0, _): return .user
        default: return .mixed
        }
    }

    public static func == (lhs: HopReport, rhs: HopReport) -> Bool {
        lhs.hop == rhs.hop && lhs.addresses.map(\.address) == rhs.addresses.map(\.address) && lhs.addresses.map(\.answers) == rhs.addresses.map(\.answers)
            && lhs.sent == rhs.sent && lhs.received == rhs.received && lhs.rttsMilliseconds == rhs.rttsMilliseconds
            && lhs.isDestination == rhs.isDestination && lhs.unreachable == rhs.unreachable && lhs.ratesLimited == rhs.ratesLimited
            && lhs.kernelTimestamps == rhs.kernelTimestamps && lhs.userTimestamps == rhs.userTimestamps
    }

    package init(hop: Int, addresses: [(address: IPAddress, answers: Int)], sent: Int, received: Int, rttsMilliseconds: [Double], isDestination: Bool, unreachable: Int,
                 kernelTimestamps: Int = 0, userTimestamps: Int = 0) {
        self.hop = hop
        self.addresses = addresses
        self.sent = sent
        self.received = received
        self.rttsMilliseconds = rttsMilliseconds
        self.isDestination = isDestination
        self.unreachable = unreachable
        self.kernelTimestamps = kernelTimestamps
        self.userTimestamps = userTimestamps
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

    package init(flow: Int, hops: [IPAddress?], reached: Bool) {
        self.flow = flow
        self.hops = hops
        self.reached = reached
    }
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

    package init(targetIndex: Int, target: ProbeTarget, startNanoseconds: Int64, rounds: Int, flows: Int, hops: [HopReport], flowPaths: [FlowPath], reached: Bool, ignored: [String: Int], analysis: PathAnalysis) {
        self.targetIndex = targetIndex
        self.target = target
        self.startNanoseconds = startNanoseconds
        self.rounds = rounds
        self.flows = flows
        self.hops = hops
        self.flowPaths = flowPaths
        self.reached = reached
        self.ignored = ignored
        self.analysis = analysis
    }
}

/// Where on the path loss and latency start, told apart from hops that only answer
/// slowly or rate-limit their own ICMP.
///
/// Rules (`netprobe trace --help` prints them):
/// 1. A hop rate-limits (its ICMP, or it answers slowly) when it loses more than the hops
///    after it do together (those that do not rate-limit, the destination included), by
///    more than 5 standard deviations of a two-proportion test and at least 2 probes: its
///    loss is its own, shown as "rate-limits", never as loss. Found from the destination
///    backwards.
/// 2. A hop's forwarded loss is the loss the traffic through it suffers: what a router
///    drops, every later hop misses too, so it never falls along the path. It is the
///    best non-decreasing fit (isotonic regression, weighted by probes) of the loss of
///    the hops that do not rate-limit; a rate-limiting hop gets the value of the hop
///    before it.
/// 3. When the destination loses `significantLossPercent` or more (and at least 2
///    probes), loss starts at the hop that best splits the hops that do not rate-limit
///    into "before: one loss rate" and "from here on: another" (the maximum-likelihood
///    change point of a binomial step), when that split is significant at 99 %
///    (likelihood ratio); else at the first hop.
/// 4. Latency is added at the hop whose forwarded median RTT (least median of it and
///    every later hop) rises most over the hop before it, when that rise is at least 1 ms
///    and half of the destination's median.
public struct PathAnalysis: Sendable, Equatable {
    /// Loss at the destination below this is noise, not a problem to locate.
    public static let significantLossPercent = 1.0

    /// Forwarded loss per hop (rule 2), in percent, in hop order.
    public var forwardedLossPercent: [Double]
    /// Hops (1-based) whose own loss is rate limiting (rule 1).
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
        let measured = hops.indices.filter { hops[$0].sent > 0 }
        let limiting = Self.rateLimiting(hops, measured: measured)
        rateLimitingHops = measured.filter { limiting.contains($0) }.map { hops[$0].hop }
        let trusted = measured.filter { !limiting.contains($0) }
        forwardedLossPercent = Self.forwardedLoss(hops, trusted: trusted)
        let destination = reached ? hops.last : nil
        destinationLossPercent = destination?.lossPercent
        lossStartHop = Self.lossStart(hops, trusted: trusted, destination: destination)
        (latencyStartHop, addedLatencyMilliseconds) = Self.addedLatency(hops, destination: destination) ?? (nil, nil)
    }

    /// Rule 1, from the end: each measured hop against the pool of later trusted hops.
    /// - Returns: the indices of the hops that rate-limit.
    static func rateLimiting(_ hops: [HopReport], measured: [Int]) -> Set<Int> {
        var limiting = Set<Int>()
        var pool = (lost: 0, sent: 0)
        for (position, index) in measured.enumerated().reversed() {
            let hop = hops[index]
            let lost = hop.sent - hop.received
            if position < measured.count - 1 && pool.sent > 0 {
                // Two-proportion z-test of the hop against the pool, one-sided, at 5 sigma:
                // a hop that truly loses what the later hops lose is flagged about once in
                // 3 million traces; a rate limit (90 % against 0-10 %) scores 15 or more.
                let own = Double(lost) / Double(hop.sent)
                let later = Double(pool.lost) / Double(pool.sent)
                let pooled = Double(lost + pool.lost) / Double(hop.sent + pool.sent)
                let deviation = (pooled * (1 - pooled) * (1 / Double(hop.sent) + 1 / Double(pool.sent))).squareRoot()
                let excessProbes = Double(lost) - later * Double(hop.sent)
                if excessProbes >= 2 && deviation > 0 && (own - later) / deviation > 5 {
                    limiting.insert(index)
                    continue
                }
            }
            pool.lost += lost
            pool.sent += hop.sent
        }
        return limiting
    }

    /// Rule 2: pool adjacent violators over the trusted hops; a hop not trusted (or not
    /// measured) takes the value of the hop before it.
    static func forwardedLoss(_ hops: [HopReport], trusted: [Int]) -> [Double] {
        var blocks: [(lost: Double, sent: Double, count: Int)] = []
        for index in trusted {
            blocks.append((Double(hops[index].sent - hops[index].received), Double(hops[index].sent), 1))
            while blocks.count > 1, blocks[blocks.count - 2].lost / blocks[blocks.count - 2].sent > blocks[blocks.count - 1].lost / blocks[blocks.count - 1].sent {
                let last = blocks.removeLast()
                blocks[blocks.count - 1].lost += last.lost
                blocks[blocks.count - 1].sent += last.sent
                blocks[blocks.count - 1].count += last.count
            }
        }
        var fitted: [Int: Double] = [:]
        var cursor = 0
        for block in blocks {
            for _ in 0..<block.count {
                fitted[trusted[cursor]] = block.lost / block.sent * 100
                cursor += 1
            }
        }
        var forwarded = [Double](repeating: 0, count: hops.count)
        var previous = 0.0
        for index in hops.indices {
            if let value = fitted[index] { previous = value }
            forwarded[index] = previous
        }
        return forwarded
    }

    /// Rule 3: the change point of a binomial step over the trusted hops; nil when the
    /// destination loses nothing significant.
    static func lossStart(_ hops: [HopReport], trusted: [Int], destination: HopReport?) -> Int? {
        guard let destination, destination.lossPercent >= significantLossPercent, destination.sent - destination.received >= 2, !trusted.isEmpty else {
            return nil
        }
        func logLikelihood(_ range: ArraySlice<Int>) -> Double {
            let lost = range.reduce(0) { $0 + hops[$1].sent - hops[$1].received }
            let sent = range.reduce(0) { $0 + hops[$1].sent }
            guard sent > 0, lost > 0, lost < sent else { return 0 }
            let p = Double(lost) / Double(sent)
            return Double(lost) * Glibc.log(p) + Double(sent - lost) * Glibc.log(1 - p)
        }
        // A split always fits a little better: take it only when the likelihood ratio
        // is significant at 99 % (chi-square, 1 degree of freedom: 6.63); otherwise
        // the loss is the same everywhere and starts at the first hop.
        let unsplit = logLikelihood(trusted[...])
        var best = (position: 0, value: unsplit)
        for split in trusted.indices.dropFirst() {
            let value = logLikelihood(trusted[..<split]) + logLikelihood(trusted[split...])
            if value > best.value + 1e-9 { best = (split, value) }
        }
        if 2 * (best.value - unsplit) < 6.63 { best.position = 0 }
        return hops[trusted[best.position]].hop
    }

    /// Rule 4 on the forwarded medians (least median of a hop and every later one).
    /// - Returns: the hop and how much it adds, in milliseconds; nil when none adds enough.
    static func addedLatency(_ hops: [HopReport], destination: HopReport?) -> (hop: Int?, milliseconds: Double?)? {
        guard let destinationMedian = destination?.statistics?.median else { return nil }
        var medians = [Double?](repeating: nil, count: hops.count)
        var leastMedian: Double?
        for index in hops.indices.reversed() {
            if let median = hops[index].statistics?.median { leastMedian = min(leastMedian ?? median, median) }
            medians[index] = leastMedian
        }
        var previous = 0.0
        var best: (hop: Int, rise: Double)?
        for index in hops.indices {
            guard let median = medians[index] else { continue }
            let rise = median - previous
            if rise > (best?.rise ?? 0) { best = (hops[index].hop, rise) }
            previous = median
        }
        guard let best, best.rise >= 1, best.rise >= destinationMedian / 2 else { return nil }
        return (best.hop, best.rise)
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

    package static func percent(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value))%" : DecimalText.fixed(value, places: 1) + "%"
    }
}
