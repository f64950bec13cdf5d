import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// An ICMP destination unreachable, named as mtr and traceroute name it.
public struct UnreachableMark: Hashable, Sendable {
    public var family: AddressFamily
    /// The ICMP (type 3) or ICMPv6 (type 1) code.
    public var code: UInt8

    public init(family: AddressFamily, code: UInt8) {
        self.family = family
        self.code = code
    }

    /// "!N" net, "!H" host, "!P" protocol or port, "!X" administratively prohibited, "!F"
    /// fragmentation needed, "!<code>" otherwise.
    public var mark: String {
        switch (family, code) {
        case (.ipv4, 0), (.ipv4, 6), (.ipv4, 11), (.ipv6, 0), (.ipv6, 2): return "!N"
        case (.ipv4, 1), (.ipv4, 7), (.ipv4, 12), (.ipv6, 3): return "!H"
        case (.ipv4, 2), (.ipv4, 3), (.ipv6, 4): return "!P"
        case (.ipv4, 9), (.ipv4, 10), (.ipv4, 13), (.ipv6, 1), (.ipv6, 5), (.ipv6, 6): return "!X"
        case (.ipv4, 4): return "!F"
        default: return "!\(code)"
        }
    }

    /// The code in words.
    public var meaning: String {
        switch (family, code) {
        case (.ipv4, 0), (.ipv4, 6), (.ipv4, 11): return "net unreachable"
        case (.ipv6, 0): return "no route"
        case (.ipv6, 2): return "beyond scope"
        case (.ipv4, 1), (.ipv4, 7), (.ipv4, 12), (.ipv6, 3): return "host unreachable"
        case (.ipv4, 2): return "protocol unreachable"
        case (.ipv4, 3), (.ipv6, 4): return "port unreachable"
        case (.ipv4, 9), (.ipv4, 10), (.ipv4, 13), (.ipv6, 1): return "administratively prohibited"
        case (.ipv6, 5): return "source address failed policy"
        case (.ipv6, 6): return "reject route"
        case (.ipv4, 4): return "fragmentation needed"
        default: return "unreachable code \(code)"
        }
    }

    /// True for a port unreachable (ICMP code 3, ICMPv6 code 4): from a TCP trace's
    /// destination it means the port is closed, an answer like a RST.
    public var isPortUnreachable: Bool { (family == .ipv4 && code == 3) || (family == .ipv6 && code == 4) }
}

/// What one flow saw at one hop (`--flows`): its own loss and times, so a lossy
/// equal-cost branch shows in the flows that take it.
public struct FlowHop: Sendable, Equatable {
    public var flow: Int
    public var addresses: [AddressCount]
    public var sent: Int
    public var received: Int
    public var unreachable: Int
    public var rttsMilliseconds: [Double]

    public var address: IPAddress? { addresses.first?.address }
    public var lossPercent: Double { sent == 0 ? 0 : Double(max(0, sent - received - unreachable)) / Double(sent) * 100 }
    public var statistics: RTTStatistics? { RTTStatistics(samples: rttsMilliseconds) }

    package init(flow: Int, addresses: [AddressCount], sent: Int, received: Int, unreachable: Int, rttsMilliseconds: [Double]) {
        self.flow = flow
        self.addresses = addresses
        self.sent = sent
        self.received = received
        self.unreachable = unreachable
        self.rttsMilliseconds = rttsMilliseconds
    }
}

/// An address that answered at a hop, and how many answers it gave.
public struct AddressCount: Sendable, Equatable {
    public var address: IPAddress
    public var answers: Int
    /// The MPLS label stack its time exceeded (or unreachable) messages carried (RFC 4950),
    /// top first: the most common one, the latest of equally common ones; empty for none.
    public var labelStack: [MPLSLabelStackEntry]

    package init(address: IPAddress, answers: Int, labelStack: [MPLSLabelStackEntry] = []) {
        self.address = address
        self.answers = answers
        self.labelStack = labelStack
    }
}

/// One hop of a trace: every probe sent with this TTL. At the destination's hop (and a
/// hop that ends the path with unreachable) one probe per round and flow counts: the
/// lowest-TTL probe of the round that reached it; probes sent beyond it count nowhere.
public struct HopReport: Sendable, Equatable {
    /// TTL / hop limit of the probes, 1 for the first router.
    public var hop: Int
    /// Who answered (replies and unreachables), most answers first (several: equal-cost
    /// branches, with `--flows`, or a path that changed).
    public var addressCounts: [AddressCount]
    /// Probes sent.
    public var sent: Int
    /// Timely replies (time exceeded from a router, echo reply, SYN-ACK or RST from the
    /// destination). An unreachable is never a reply: it is counted in `unreachable`.
    public var received: Int
    /// RTTs of the replies in milliseconds, in send order.
    public var rttsMilliseconds: [Double]
    /// True for the destination's hop.
    public var isDestination: Bool
    /// Answers that were "unreachable" (the path ends here), timely or late.
    public var unreachable: Int
    /// The unreachables by mark ("!H": 75).
    public var unreachableMarks: [String: Int]
    /// Replies timed by the kernel's stamps at both ends (SO_TIMESTAMPING: the probe's
    /// transmit stamp and the answer's receive stamp).
    public var kernelTimestamps: Int
    /// Replies timed by user-space clock reads at both ends (a stamp was missing).
    public var userTimestamps: Int
    /// Per flow, in flow order (the flows that were probed at this hop).
    public var flows: [FlowHop]
    /// The hop's loss is its own (ICMP rate limiting or a slow control plane), not loss of
    /// traffic: later hops and the destination lose less. Set by `PathAnalysis`.
    public var ratesLimited = false
    /// `trace --mtu`: the largest IP packet (headers included) answered at this hop; nil
    /// when none was, or without `--mtu`.
    public var mtu: Int? = nil
    /// `trace --mtu`: probes of this TTL a router answered "too big" (sent again smaller;
    /// not counted in `sent`).
    public var tooBig = 0

    /// Probes that got no answer at all, in percent of those sent.
    public var lossPercent: Double { sent == 0 ? 0 : Double(unanswered) / Double(sent) * 100 }
    public var unanswered: Int { max(0, sent - received - unreachable) }
    public var statistics: RTTStatistics? { RTTStatistics(samples: rttsMilliseconds) }
    /// The address with the most answers.
    public var address: IPAddress? { addressCounts.first?.address }
    /// The MPLS label stack of the address with the most answers, top first (empty: none).
    public var labelStack: [MPLSLabelStackEntry] { addressCounts.first?.labelStack ?? [] }
    /// Who answered, as (address, answers) pairs.
    public var addresses: [(address: IPAddress, answers: Int)] { addressCounts.map { ($0.address, $0.answers) } }
    /// Nothing answered at this hop: shown as "???".
    public var isSilent: Bool { received == 0 && unreachable == 0 }
    /// The most frequent unreachable mark, when there were unreachables.
    public var unreachableMark: String? { unreachableMarks.max { ($0.value, $1.key) < ($1.value, $0.key) }?.key }

    /// "kernel" or "user" when every reply agrees, "mixed" otherwise; nil with no replies.
    public var timestampSource: TimestampSource? { TimestampSource(kernel: kernelTimestamps, user: userTimestamps) }

    package init(hop: Int, addresses: [(address: IPAddress, answers: Int)], sent: Int, received: Int, rttsMilliseconds: [Double], isDestination: Bool, unreachable: Int,
                 unreachableMarks: [String: Int] = [:], kernelTimestamps: Int = 0, userTimestamps: Int = 0, flows: [FlowHop] = [],
                 labelStacks: [IPAddress: [MPLSLabelStackEntry]] = [:]) {
        self.hop = hop
        self.addressCounts = addresses.map { AddressCount(address: $0.address, answers: $0.answers, labelStack: labelStacks[$0.address] ?? []) }
        self.sent = sent
        self.received = received
        self.rttsMilliseconds = rttsMilliseconds
        self.isDestination = isDestination
        self.unreachable = unreachable
        self.unreachableMarks = unreachableMarks
        self.kernelTimestamps = kernelTimestamps
        self.userTimestamps = userTimestamps
        self.flows = flows
    }
}

/// How a trace ended: the destination answered, or why it did not.
public enum PathEnding: Sendable, Equatable {
    /// The destination answered.
    case reached
    /// A router (or the host) answered "unreachable": the path ends at `hop`.
    case unreachable(hop: Int, address: IPAddress, mark: UnreachableMark)
    /// The same addresses answer again at later TTLs: packets go round between them.
    case loop(addresses: [IPAddress], fromHop: Int)
    /// The largest TTL probed was answered by a router: the target is farther away.
    case maxHops(Int)
    /// The target never answered and the hops after `lastRespondingHop` stayed silent over
    /// 2 rounds: probing past them stopped (a destination or firewall that drops the probes).
    case filtered(lastRespondingHop: Int?, silentHops: [Int])
    /// The target did not answer (too few rounds to call it filtered).
    case noAnswer(lastRespondingHop: Int?)

    /// The name in `--json` ("reached", "unreachable", "routing_loop", "max_hops",
    /// "filtered", "no_answer").
    public var name: String {
        switch self {
        case .reached: return "reached"
        case .unreachable: return "unreachable"
        case .loop: return "routing_loop"
        case .maxHops: return "max_hops"
        case .filtered: return "filtered"
        case .noAnswer: return "no_answer"
        }
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
    /// How the path ended: reached, or why not.
    public var ending: PathEnding
    /// Replies and errors that were not ours or matched no probe, by reason.
    public var ignored: [String: Int]
    /// What the hops say, per the rules of `PathAnalysis`.
    public var analysis: PathAnalysis
    /// `trace --mtu` (ICMP traces): where the MTU drops; nil without.
    public var mtu: PathMTUReport? = nil

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

    package init(targetIndex: Int, target: ProbeTarget, startNanoseconds: Int64, rounds: Int, flows: Int, hops: [HopReport], flowPaths: [FlowPath], reached: Bool,
                 ending: PathEnding? = nil, ignored: [String: Int], analysis: PathAnalysis) {
        self.ending = ending ?? (reached ? .reached : .noAnswer(lastRespondingHop: hops.last { !$0.isSilent }?.hop))
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

extension PathTrace {
    /// The ending in words ("unreachable at hop 5, 198.18.5.2 (!H host unreachable)"); nil
    /// when the destination answered.
    public var endingSentence: String? {
        func hop(_ number: Int?) -> String {
            guard let number else { return "hop -" }
            return "hop \(number), " + (hops.first { $0.hop == number }?.address?.description ?? "???")
        }
        switch ending {
        case .reached:
            return nil
        case .unreachable(let number, let address, let mark):
            return "unreachable at hop \(number), \(address) (\(mark.mark) \(mark.meaning))"
        case .loop(let addresses, let from):
            let names = addresses.map(\.description)
            let between = names.count == 2 ? "\(names[0]) and \(names[1])" : names.joined(separator: ", ")
            return "routing loop between \(between) from hop \(from): the target is never reached"
        case .maxHops(let maximum):
            return "max hops (\(maximum)) reached before the target"
        case .filtered(let last, let silent):
            let range = silent.count > 1 ? "hops \(silent.first!)-\(silent.last!)" : "hop \(silent.first ?? 0)"
            let after = last == nil ? "from the first hop on" : "after \(hop(last))"
            return "the target does not answer (filtered?): \(range) silent \(after); probing stopped there"
        case .noAnswer(let last):
            return last == nil ? "nothing answered, not even the first hop" : "the target did not answer; the last hop that did is \(hop(last))"
        }
    }

    /// The report's headline: how the path ended, where loss and latency start, which hops
    /// only rate-limit.
    public var summary: String {
        let analysis = analysis.summary(hops: hops)
        guard let ending = endingSentence else { return analysis }
        return analysis.isEmpty ? ending : ending + "; " + analysis
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
    /// True when the loss start is a significant change point (rule 3's test); false when
    /// the loss looks the same from the first hop on (then `lossStartHop` is the first).
    public var lossStartIsChangePoint = false
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
        let start = Self.lossStart(hops, trusted: trusted, destination: destination)
        lossStartHop = start?.hop
        lossStartIsChangePoint = start?.isChangePoint ?? false
        (latencyStartHop, addedLatencyMilliseconds) = Self.addedLatency(hops, destination: destination) ?? (nil, nil)
    }

    /// Rule 1, from the end: each measured hop against the pool of later trusted hops.
    /// - Returns: the indices of the hops that rate-limit.
    static func rateLimiting(_ hops: [HopReport], measured: [Int]) -> Set<Int> {
        var limiting = Set<Int>()
        var pool = (lost: 0, sent: 0)
        for (position, index) in measured.enumerated().reversed() {
            let hop = hops[index]
            let lost = hop.unanswered
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
            blocks.append((Double(hops[index].unanswered), Double(hops[index].sent), 1))
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
    static func lossStart(_ hops: [HopReport], trusted: [Int], destination: HopReport?) -> (hop: Int, isChangePoint: Bool)? {
        guard let destination, destination.lossPercent >= significantLossPercent, destination.unanswered >= 2, !trusted.isEmpty else {
            return nil
        }
        func logLikelihood(_ range: ArraySlice<Int>) -> Double {
            let lost = range.reduce(0) { $0 + hops[$1].unanswered }
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
        return (hops[trusted[best.position]].hop, best.position > 0)
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
