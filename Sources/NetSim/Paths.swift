/// Multi-hop paths: the routers a rule's `path` puts in front of its hosts, and what
/// each does with a packet on its way there.
///
/// A packet sent with TTL (hop limit) t towards a host behind n routers meets router 1,
/// 2, ... in turn. At each router it may be lost (the router's `loss`), it picks up the
/// router's delay (round-trip time the hop adds), and at router t its TTL runs out: the
/// router answers "time exceeded", quoting the packet, unless its ICMP rate limit has no
/// token left. A packet bigger than a router's `mtu` (IPv4 with DF, any IPv6) gets "too
/// big" instead of being forwarded. A packet that passes every router reaches the host,
/// which answers as its own rule says, after the delays of the whole path.
///
/// Routing loops: a rule's `loop` follows its path; a packet that passed the path goes
/// round the loop's routers, one hop each, until its TTL runs out at one of them. Each visit
/// is a hop like any other (loss, delay, the rate limit); the error comes back as from the
/// router's first place on the path, whichever round the packet was on.
///
/// Refusals: a rule's `unreachable` naming a hop makes the router there answer destination
/// unreachable (the rule's code, after its delay): `at-hop` for every packet reaching it,
/// before the TTL and MTU checks (an unreachable route: the lookup fails first);
/// `after-hop` only for the packets it would forward (a reject in the forward chain, a
/// neighbour that never answers), so TTL-limited ones expire there as usual.
///
/// Equal-cost branches: where a hop lists several routers, the packet's flow hash (source,
/// destination, protocol and the first 4 transport bytes: TCP/UDP ports, ICMP type, code
/// and checksum, as per-flow load balancers hash) picks one, the same index at every such
/// hop, so one flow always takes one branch.
///
/// Determinism: each router draws its losses from a generator of its own, seeded by the
/// simulation's seed and the router's address, so with a fixed seed the same sequence of
/// packets through a router meets the same drops, whatever other traffic does.
struct PathWalker {
    /// One router's state and ground truth.
    struct Router {
        var rule: HostRule
        var generator: Xoshiro256
        /// ICMP tokens left (the rate limit's bucket holds one second's worth, at least 1).
        var tokens: Double
        var refilledAt: Int64?
        var counters = RouterSummary()
    }

    /// What became of a packet on the path.
    enum Outcome: Equatable {
        /// Lost at `router` (its loss probability).
        case dropped(router: SimulatedAddress, hop: Int)
        /// `router` answers with an ICMP error after `delay` (time exceeded or too big).
        case icmpError(router: SimulatedAddress, hop: Int, bytes: [UInt8], delay: Int64, tooBig: Bool)
        /// `router` refuses the packet: destination unreachable with `code`, after `delay`
        /// (the path's delays and the refusal's own).
        case unreachable(router: SimulatedAddress, hop: Int, bytes: [UInt8], delay: Int64, code: SimulatedPacket.Unreachable)
        /// `router` would have sent an ICMP error, but its rate limit held it back.
        case rateLimited(router: SimulatedAddress, hop: Int)
        /// Reached the host after `delay`; replies lose `hops` from their TTL.
        case delivered(delay: Int64, hops: Int)
    }

    private(set) var rules: RuleSet
    let seed: UInt64
    private(set) var routers: [SimulatedAddress: Router] = [:]

    init(rules: RuleSet, seed: UInt64) {
        self.rules = rules
        self.seed = seed
    }

    /// The flow hash a per-flow load balancer would compute: FNV-1a over source,
    /// destination, protocol and the first 4 bytes of the transport header.
    static func flowHash(_ packet: UnsafeRawBufferPointer, header: SimulatedPacket.Header) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        for byte in header.source.bytes { mix(byte) }
        for byte in header.destination.bytes { mix(byte) }
        mix(header.transport)
        for offset in header.transportOffset..<min(header.transportOffset + 4, header.end) { mix(packet[offset]) }
        return hash
    }

    /// Sends `packet` (to a host whose rule has `path`) along the path.
    /// - Parameters:
    ///   - loop: the rule's routing loop after the path (empty: none).
    ///   - refusal: the rule's `unreachable`, when it names a hop.
    ///   - now: CLOCK_MONOTONIC nanoseconds, for the ICMP rate limits.
    ///   - delayGenerator: draws the routers' delays.
    mutating func walk<Generator: RandomNumberGenerator>(_ packet: UnsafeRawBufferPointer, header: SimulatedPacket.Header, path: [[SimulatedAddress]],
                                                         loop: [SimulatedAddress] = [], refusal: UnreachableAnswer? = nil,
                                                         now: Int64, delayGenerator: inout Generator) -> Outcome {
        let hash = Self.flowHash(packet, header: header)
        var delay: Int64 = 0
        let length = header.end
        let dontFragment = !header.isIPv6 && packet.count >= 7 && packet[6] & 0x40 != 0
        var hop = 0
        // Ends: a loop is gone round until the TTL (at most 255) runs out.
        while true {
            hop += 1
            let looping = hop > path.count
            let address: SimulatedAddress
            if !looping {
                let branches = path[hop - 1]
                address = branches[Int(hash % UInt64(branches.count))]
            } else if !loop.isEmpty {
                address = loop[(hop - path.count - 1) % loop.count]
            } else {
                return .delivered(delay: delay, hops: path.count)
            }
            var router = routers[address] ?? makeRouter(address)
            defer { routers[address] = router }
            router.counters.packetsIn += 1
            if looping { router.counters.looped += 1 }
            let rule = router.rule
            if rule.loss > 0 && Double.random(in: 0..<1, using: &router.generator) < rule.loss {
                router.counters.dropped += 1
                return .dropped(router: address, hop: hop)
            }
            delay += rule.delay.sample(using: &delayGenerator)
            // The router decrements the TTL; at 0 the packet expires here (a TTL of 0 on
            // the wire expires at the first router too).
            let expires = Int(header.ttl) <= hop
            let tooBig = !expires && rule.mtu.map { length > $0 && (header.isIPv6 || dontFragment) } == true
            let refuses = switch refusal?.place {
            case .atHop(let refusing)?: refusing == hop
            case .afterHop(let refusing)?: refusing == hop && !expires && !tooBig
            default: false
            }
            guard expires || tooBig || refuses else {
                router.counters.forwarded += 1
                continue
            }
            if expires && !refuses { router.counters.expired += 1 }
            guard takeToken(&router, now: now) else {
                router.counters.rateLimited += 1
                return .rateLimited(router: address, hop: hop)
            }
            // The error travels back through the routers before this one.
            let ttl = UInt8(max(1, Int(rule.ttl) - Self.routersBefore(address, hop: hop, path: path, loop: loop)))
            if refuses, let refusal {
                router.counters.unreachable += 1
                let bytes = SimulatedPacket.unreachable(refusal.code, from: address, quoting: packet, header: header, ttl: ttl, quoteBytes: rule.quoteBytes,
                                                        labelStack: rule.mpls)
                return .unreachable(router: address, hop: hop, bytes: bytes, delay: delay + refusal.delay, code: refusal.code)
            }
            let bytes: [UInt8]
            if tooBig {
                router.counters.tooBig += 1
                bytes = SimulatedPacket.tooBig(from: address, mtu: rule.mtu!, quoting: packet, header: header, ttl: ttl, quoteBytes: rule.quoteBytes)
            } else {
                router.counters.timeExceeded += 1
                bytes = SimulatedPacket.timeExceeded(from: address, quoting: packet, header: header, ttl: ttl, quoteBytes: rule.quoteBytes, labelStack: rule.mpls)
            }
            return .icmpError(router: address, hop: hop, bytes: bytes, delay: delay, tooBig: tooBig)
        }
    }

    /// The routers an error from `address`, met at `hop`, crosses on its way back: those
    /// before the router's first place on the path and loop, however often the packet went round.
    static func routersBefore(_ address: SimulatedAddress, hop: Int, path: [[SimulatedAddress]], loop: [SimulatedAddress]) -> Int {
        guard hop > path.count else { return hop - 1 }
        if let index = path.firstIndex(where: { $0.contains(address) }) { return index }
        return path.count + (loop.firstIndex(of: address) ?? 0)
    }

    /// New rules for every router (a reload); generators, buckets and counters stay.
    mutating func replaceRules(_ rules: RuleSet) {
        self.rules = rules
        for address in routers.keys { routers[address]!.rule = rules.rule(for: address) }
    }

    private func makeRouter(_ address: SimulatedAddress) -> Router {
        // SplitMix inside Xoshiro256 spreads seed and address over the state.
        let mixed = seed ^ UInt64(truncatingIfNeeded: address.value) ^ UInt64(truncatingIfNeeded: address.value >> 64) &* 0x9e37_79b9_7f4a_7c15
        let rule = rules.rule(for: address)
        return Router(rule: rule, generator: Xoshiro256(seed: mixed), tokens: max(1, rule.icmpRatePerSecond ?? 1))
    }

    private func takeToken(_ router: inout Router, now: Int64) -> Bool {
        guard let rate = router.rule.icmpRatePerSecond else { return true }
        let capacity = max(1, rate)
        if let last = router.refilledAt {
            router.tokens = min(capacity, router.tokens + Double(max(0, now - last)) / 1e9 * rate)
        }
        router.refilledAt = now
        guard router.tokens >= 1 else { return false }
        router.tokens -= 1
        return true
    }

    /// Every router seen so far, with its ground truth.
    var summaries: [String: RouterSummary] {
        var result: [String: RouterSummary] = [:]
        for (address, router) in routers { result[address.description] = router.counters }
        return result
    }
}

/// Ground truth for one simulated router.
public struct RouterSummary: Codable, Equatable, Sendable {
    /// Packets that reached the router (forwarded, expired or lost there).
    public var packetsIn = 0
    /// Lost at this router (its loss probability): the following hops never saw them.
    public var dropped = 0
    /// Passed on towards the next hop.
    public var forwarded = 0
    /// Packets whose TTL / hop limit ran out here (and that it did not refuse).
    public var expired = 0
    /// Time-exceeded errors sent (expired minus rate-limited).
    public var timeExceeded = 0
    /// Fragmentation-needed / packet-too-big errors sent.
    public var tooBig = 0
    /// Destination-unreachable errors the router sent, or holds for their delay (the
    /// summary's `pending`): the packets it refused, its hop being the one a rule's
    /// `unreachable` names. Time exceeded and too big count the same way.
    public var unreachable = 0
    /// ICMP errors the router's rate limit held back (counted, never sent).
    public var rateLimited = 0
    /// Visits of packets going round a routing loop (a rule's `loop`), counted in
    /// `packetsIn` too: one packet can visit a router of a loop several times.
    public var looped = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case packetsIn = "packets_in"
        case dropped, forwarded, expired
        case timeExceeded = "time_exceeded"
        case tooBig = "too_big"
        case rateLimited = "rate_limited"
        case unreachable, looped
    }
}
