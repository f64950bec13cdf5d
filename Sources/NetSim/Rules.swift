import Foundation
import Yams

/// How long a simulated host holds a reply, in nanoseconds.
public enum DelayDistribution: Equatable, Sendable {
    /// Always the same.
    case fixed(Int64)
    /// Uniform between the two bounds (inclusive).
    case uniform(minimum: Int64, maximum: Int64)
    /// Normal with this mean and standard deviation, clipped at 0.
    case normal(mean: Int64, standardDeviation: Int64)

    /// Draws one delay.
    func sample<Generator: RandomNumberGenerator>(using generator: inout Generator) -> Int64 {
        switch self {
        case .fixed(let value):
            return value
        case .uniform(let minimum, let maximum):
            return maximum > minimum ? Int64.random(in: minimum...maximum, using: &generator) : minimum
        case .normal(let mean, let standardDeviation):
            // Box-Muller; one of the pair is enough at these rates.
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &generator)
            let u2 = Double.random(in: 0..<1, using: &generator)
            let z = (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
            return max(0, mean + Int64((z * Double(standardDeviation)).rounded()))
        }
    }
}

/// What a simulated host does with a TCP SYN to one port.
public enum PortBehaviour: String, Equatable, Sendable, CaseIterable {
    /// SYN-ACK with an MSS option.
    case open
    /// RST+ACK.
    case closed
    /// Silence.
    case filtered
    /// ICMP port unreachable (ICMPv6 destination unreachable, code 4).
    case rejected
}

/// Destination unreachable instead of an answer: which code, who sends it, how late.
public struct UnreachableAnswer: Equatable, Sendable {
    /// Who sends the unreachable.
    public enum Place: Equatable, Sendable {
        /// The hosts themselves, after the whole path (`unreachable: true`).
        case host
        /// The router at this hop (1 = the first router of the path), for every packet that
        /// reaches it, TTL-limited ones included: a Linux `unreachable` / `prohibit` route,
        /// whose route lookup comes before the TTL check.
        case atHop(Int)
        /// The router at this hop, for the packets it would forward; those whose TTL runs out
        /// there still get time exceeded: a forward-chain reject (nftables), or a next hop
        /// whose neighbour lookup fails (with `delay: 3s`).
        case afterHop(Int)

        /// The hop of the router, nil for the host.
        public var hop: Int? {
            switch self {
            case .host: return nil
            case .atHop(let hop), .afterHop(let hop): return hop
            }
        }
    }

    /// The code; host unreachable unless given.
    public var code: SimulatedPacket.Unreachable = .host
    public var place: Place = .host
    /// How long the sender holds the unreachable, in nanoseconds, on top of the path's
    /// delays (a router's neighbour lookup gives up after about 3 s: 3 tries of 1 s).
    public var delay: Int64 = 0

    public init(code: SimulatedPacket.Unreachable = .host, place: Place = .host, delay: Int64 = 0) {
        self.code = code
        self.place = place
        self.delay = delay
    }
}

/// Loss that starts at a known request and follows a fixed pattern, where a test needs to
/// know which round is the first lossy one (random `loss` cannot say).
public struct DropSchedule: Equatable, Sendable {
    /// Drop one request of this many (2: 50 %).
    public var every: Int
    /// Requests of the kind a host answers before the first drop.
    public var after: Int

    public init(every: Int, after: Int) {
        self.every = every
        self.after = after
    }

    /// True when the host's `number`-th request of a kind (from 1) is dropped: the first
    /// past `after`, and every `every`-th after it (every 2, after 20: the 21st, 23rd, ...).
    public func drops(requestNumber number: Int) -> Bool {
        number > after && (number - after - 1) % every == 0
    }
}

/// The behaviour of every host inside one prefix.
public struct HostRule: Equatable, Sendable {
    /// The addresses the rule covers; the longest matching prefix wins.
    public var prefix: AddressPrefix
    public var delay: DelayDistribution = .fixed(0)
    /// Probability in 0...1 that a request is dropped without an answer.
    public var loss: Double = 0
    /// Deterministic drops of each host's echo requests and TCP SYNs (counted apart, so
    /// ICMP and TCP rounds of the same count turn lossy at the same round); nil: none.
    public var dropSchedule: DropSchedule?
    /// IPv4 TTL / IPv6 hop limit of every reply.
    public var ttl: UInt8 = 64
    /// Behaviour of listed TCP ports (ranges allowed).
    public var tcpPorts: [(ports: ClosedRange<UInt16>, behaviour: PortBehaviour)] = []
    /// Behaviour of every other TCP port.
    public var tcpDefault: PortBehaviour = .closed
    /// Destination unreachable instead of every answer (from the host or a router of the
    /// path); nil: the hosts answer.
    public var unreachable: UnreachableAnswer?
    /// The host drops ICMP echo requests (a firewall that filters ping); routers in front
    /// of it still answer TTL-limited ones.
    public var icmpFiltered = false
    /// The routers in front of the hosts, nearest first: one list per hop, of equal-cost
    /// alternatives a packet's flow hash chooses between (empty: the hosts are one hop away).
    /// Each router behaves as the rule for its own address says (see `RouterBehaviour`).
    public var path: [[SimulatedAddress]] = []
    /// A routing loop after the path: packets that passed it go round these routers (the
    /// first follows the path's last hop, the last hands back to the first) until their TTL
    /// runs out; the hosts are never reached. Empty: no loop.
    public var loop: [SimulatedAddress] = []
    /// As a router: ICMP errors (time exceeded, too big, unreachable) it generates per second, at most;
    /// nil for no limit.
    public var icmpRatePerSecond: Double?
    /// As a router: the MTU of its next link; bigger packets (IPv4 with DF set, all IPv6)
    /// get "fragmentation needed" / "packet too big". Nil for no limit.
    public var mtu: Int?
    /// As a router: how many bytes past the quoted IP header its ICMP errors quote (8 as
    /// RFC 792, many old routers); nil quotes as much as fits 576 (IPv4) / 1280 (IPv6) bytes.
    public var quoteBytes: Int?
    /// As a router: the MPLS label stack its time exceeded and unreachable messages carry
    /// (RFC 4950, in an RFC 4884 extension); nil for none.
    public var mpls: SimulatedLabelStack?

    public init(prefix: AddressPrefix) {
        self.prefix = prefix
    }

    /// The `unreachable` a router of the path sends (it names a hop), if any.
    var routerRefusal: UnreachableAnswer? { unreachable?.place.hop == nil ? nil : unreachable }

    /// The `unreachable` the hosts send themselves, if any.
    var hostRefusal: UnreachableAnswer? { unreachable?.place == .host ? unreachable : nil }

    /// What a SYN to `port` gets.
    public func behaviour(port: UInt16) -> PortBehaviour {
        // Later entries win, so "1-1000:open,22:closed" reads naturally.
        for entry in tcpPorts.reversed() where entry.ports.contains(port) { return entry.behaviour }
        return tcpDefault
    }

    public static func == (lhs: HostRule, rhs: HostRule) -> Bool {
        lhs.prefix == rhs.prefix && lhs.delay == rhs.delay && lhs.loss == rhs.loss && lhs.dropSchedule == rhs.dropSchedule && lhs.ttl == rhs.ttl
            && lhs.tcpPorts.map(\.ports) == rhs.tcpPorts.map(\.ports) && lhs.tcpPorts.map(\.behaviour) == rhs.tcpPorts.map(\.behaviour)
            && lhs.tcpDefault == rhs.tcpDefault && lhs.unreachable == rhs.unreachable
            && lhs.icmpFiltered == rhs.icmpFiltered && lhs.path == rhs.path && lhs.loop == rhs.loop && lhs.icmpRatePerSecond == rhs.icmpRatePerSecond && lhs.mtu == rhs.mtu && lhs.quoteBytes == rhs.quoteBytes
            && lhs.mpls == rhs.mpls
    }
}

/// A rule that did not parse, with what to change.
public struct RuleError: Error, CustomStringConvertible, Equatable {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension HostRule {
    /// The rule syntax, for help texts.
    public static let syntax = """
        PREFIX [KEY=VALUE | unreachable]...
          delay=10ms | delay=5ms..15ms    fixed, or uniform between the bounds
          jitter=normal:1ms               normal around delay (stddev), clipped at 0
          jitter=uniform:2ms              uniform in delay-2ms..delay+2ms
          loss=0.2                        probability that a request is dropped
          drop=every:2,after:20           deterministic loss: each host's echo requests
                                          and TCP SYNs counted apart, the first 20 of
                                          each answered, then the next one and every 2nd
                                          after it dropped (50 % from a known request)
          ttl=60                          TTL / hop limit of replies (default 64)
          tcp=80:open,81:closed,82:filtered,83:rejected,1000-1010:open
          tcp-default=closed              unlisted ports (default closed)
          unreachable                     answer all with ICMP host unreachable
          unreachable=CODE[,at-hop:N | ,after-hop:N][,delay:D]
                                          destination unreachable with CODE: net (!N),
                                          host (!H), protocol (!P, IPv4 only), port (!P),
                                          prohibited (!X) or a number 0-255; from the
                                          hosts, or from the router at hop N of the path:
                                          at-hop: for every packet reaching it (an
                                          unreachable route); after-hop: for the packets
                                          it would forward, TTL-limited ones still expire
                                          there (a reject, a failed neighbour lookup);
                                          delay:3s holds each unreachable that long
          icmp=filtered                   drop ICMP echo requests (default: answer)
          path=R1,R2|R2b,R3               routers in front of the hosts, nearest first;
                                          R2|R2b: equal-cost branches picked by flow hash
                                          (src, dst, protocol, first 4 transport bytes)
          loop=R4,R5                      a routing loop after the path: packets go round
                                          R4, R5, R4, ... until their TTL runs out; the
                                          hosts are never reached
        As a router (a rule covering a router's address), the same keys mean:
          delay, jitter                   round-trip time this hop adds
          loss                            probability a packet reaching it is dropped
          ttl                             TTL / hop limit of the ICMP errors it sends
          icmp-rate=1                     ICMP errors (time exceeded, too big,
                                          unreachable) it sends per second
          mtu=1400                        MTU of its next link (DF / IPv6: too big)
          quote=8                         bytes past the IP header its errors quote
                                          (default: as much as fits 576 / 1280 bytes)
          mpls=16005/0/1,24001            MPLS label stack (RFC 4950) on its time
                                          exceeded and unreachable messages, top first:
                                          LABEL[/TC[/TTL]] (TC 0-7, default 0; TTL
                                          0-255, default 1); S is set on the last; 1 to
                                          16 entries
          mpls-placement=fixed128         where the extension goes: rfc4884 (default:
                                          after the padded quote its length field
                                          gives) or fixed128 (length 0, quote of
                                          exactly 128 bytes, as older routers send)
        Router addresses must lie inside 198.18.0.0/15 or 2001:db8::/32.
        Durations take ns, us, ms or s (bare numbers are ms). The longest
        matching prefix wins; addresses no rule covers answer at once, TTL 64,
        every TCP port closed.
        """

    /// Parses one `--rule` value, e.g. "198.18.1.0/24 delay=10ms loss=0.2 tcp=80:open".
    public init(parsing text: String) throws(RuleError) {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first else { throw RuleError("empty rule: start with a prefix such as 198.18.1.0/24") }
        guard let prefix = AddressPrefix(first) else { throw RuleError("'\(first)' is not a prefix: write ADDRESS/LENGTH, e.g. 198.18.1.0/24 or 2001:db8:1::/48") }
        self.init(prefix: prefix)
        var jitter: String?
        for word in words.dropFirst() {
            if word == "unreachable" {
                try apply(key: "unreachable", value: "true", jitter: &jitter)
                continue
            }
            guard let equals = word.firstIndex(of: "=") else { throw RuleError("'\(word)' in rule '\(text)': expected KEY=VALUE or 'unreachable'") }
            try apply(key: String(word[..<equals]), value: String(word[word.index(after: equals)...]), jitter: &jitter)
        }
        try finish(jitter: jitter)
    }

    fileprivate mutating func apply(key: String, value: String, jitter: inout String?) throws(RuleError) {
        switch key {
        case "delay":
            if let range = value.range(of: "..") {
                guard let minimum = Self.duration(String(value[..<range.lowerBound])), let maximum = Self.duration(String(value[range.upperBound...])),
                      minimum <= maximum else { throw RuleError("delay='\(value)': write MIN..MAX with units, e.g. 5ms..15ms") }
                delay = .uniform(minimum: minimum, maximum: maximum)
            } else {
                guard let fixed = Self.duration(value) else { throw RuleError("delay='\(value)': write a duration with a unit, e.g. 10ms") }
                delay = .fixed(fixed)
            }
        case "jitter":
            jitter = value
        case "loss":
            guard let probability = Double(value), probability >= 0, probability <= 1 else { throw RuleError("loss='\(value)': write a probability between 0 and 1, e.g. 0.2") }
            loss = probability
        case "drop":
            dropSchedule = try dropSchedule(value)
        case "ttl", "hop-limit":
            guard let parsed = UInt8(value), parsed > 0 else { throw RuleError("\(key)='\(value)': write 1 to 255") }
            ttl = parsed
        case "tcp":
            for item in value.split(separator: ",") {
                let pair = item.split(separator: ":")
                guard pair.count == 2, let behaviour = PortBehaviour(rawValue: String(pair[1])) else {
                    throw RuleError("tcp='\(value)': write PORT:STATE with STATE one of open, closed, filtered, rejected")
                }
                let bounds = pair[0].split(separator: "-")
                guard (1...2).contains(bounds.count), let low = UInt16(bounds[0]), let high = UInt16(bounds.last!), low <= high else {
                    throw RuleError("tcp='\(value)': '\(pair[0])' is not a port or LOW-HIGH range")
                }
                tcpPorts.append((low...high, behaviour))
            }
        case "path":
            var hops: [[SimulatedAddress]] = []
            for hop in value.split(separator: ",", omittingEmptySubsequences: false) {
                var branches: [SimulatedAddress] = []
                for text in hop.split(separator: "|", omittingEmptySubsequences: false) {
                    branches.append(try router(String(text), key: key, value: value, example: "R1,R2|R2b,R3"))
                }
                hops.append(branches)
            }
            guard hops.count <= 64 else { throw RuleError("path='\(value)': at most 64 routers") }
            path = hops
        case "loop":
            var routers: [SimulatedAddress] = []
            for text in value.split(separator: ",", omittingEmptySubsequences: false) {
                let address = try router(String(text), key: key, value: value, example: "R1,R2")
                guard !routers.contains(address) else {
                    throw RuleError("loop='\(value)': \(text) appears twice: a router is in a loop once (it has one next hop for the hosts)")
                }
                routers.append(address)
            }
            guard (2...16).contains(routers.count) else { throw RuleError("loop='\(value)': a loop goes round 2 to 16 routers, e.g. loop=198.18.6.2,198.18.6.1") }
            loop = routers
        case "unreachable":
            switch value.lowercased() {
            case "true": unreachable = UnreachableAnswer()
            case "false": unreachable = nil
            default: unreachable = try unreachableAnswer(value)
            }
        case "icmp-rate":
            guard let rate = Double(value.hasSuffix("/s") ? String(value.dropLast(2)) : value), rate.isFinite, rate > 0 else {
                throw RuleError("icmp-rate='\(value)': write ICMP errors per second, e.g. 1 or 0.5")
            }
            icmpRatePerSecond = rate
        case "mtu":
            guard let parsed = Int(value), (68...65535).contains(parsed) else { throw RuleError("mtu='\(value)': write 68 to 65535") }
            mtu = parsed
        case "quote":
            guard let parsed = Int(value), (8...1500).contains(parsed) else { throw RuleError("quote='\(value)': write 8 to 1500 bytes") }
            quoteBytes = parsed
        case "mpls":
            mpls = SimulatedLabelStack(entries: try labelStack(value), placement: mpls?.placement ?? .rfc4884)
        case "mpls-placement":
            guard let placement = SimulatedLabelStack.Placement(rawValue: value) else {
                throw RuleError("mpls-placement='\(value)': write rfc4884 (the length field) or fixed128 (the older fixed 128-byte quote)")
            }
            mpls = SimulatedLabelStack(entries: mpls?.entries ?? [], placement: placement)
        case "icmp":
            guard value == "filtered" || value == "answer" else { throw RuleError("icmp='\(value)': write filtered (drop echo requests) or answer") }
            icmpFiltered = value == "filtered"
        case "tcp-default":
            guard let behaviour = PortBehaviour(rawValue: value) else { throw RuleError("tcp-default='\(value)': write open, closed, filtered or rejected") }
            tcpDefault = behaviour
        default:
            throw RuleError("unknown key '\(key)': use delay, jitter, loss, drop, ttl, tcp, tcp-default, icmp, unreachable, path, loop, icmp-rate, mtu, quote, mpls or mpls-placement")
        }
    }

    /// One router address of `path` or `loop`: a literal of the prefix's family, inside the simulator's ranges.
    private func router(_ text: String, key: String, value: String, example: String) throws(RuleError) -> SimulatedAddress {
        guard let router = SimulatedAddress(text) else {
            throw RuleError("\(key)='\(value)': '\(text)' is not an address: write \(example) with literal addresses")
        }
        guard router.isIPv6 == prefix.address.isIPv6 else { throw RuleError("\(key)='\(value)': router \(text) is not of the prefix's address family") }
        guard Self.simulatedRanges.contains(where: { $0.contains(router) }) else {
            throw RuleError("\(key)='\(value)': router \(text) is outside 198.18.0.0/15 and 2001:db8::/32")
        }
        return router
    }

    /// `mpls=LABEL[/TC[/TTL]],...`: 1 to 16 entries, top of the stack first.
    private func labelStack(_ value: String) throws(RuleError) -> [SimulatedLabelStack.Entry] {
        let example = "e.g. mpls=16005/0/1,24001 (LABEL/TC/TTL, top of the stack first)"
        var entries: [SimulatedLabelStack.Entry] = []
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard (1...3).contains(parts.count) else { throw RuleError("mpls='\(value)': '\(item)' is not LABEL[/TC[/TTL]], \(example)") }
            guard let label = UInt32(parts[0]), label <= 0xf_ffff else {
                throw RuleError("mpls='\(value)': label '\(parts[0])': write 0 to 1048575 (20 bits), \(example)")
            }
            var entry = SimulatedLabelStack.Entry(label: label)
            if parts.count > 1 {
                guard let trafficClass = UInt8(parts[1]), trafficClass <= 7 else { throw RuleError("mpls='\(value)': traffic class '\(parts[1])' in '\(item)': write 0 to 7, \(example)") }
                entry.trafficClass = trafficClass
            }
            if parts.count > 2 {
                guard let ttl = UInt8(parts[2]) else { throw RuleError("mpls='\(value)': TTL '\(parts[2])' in '\(item)': write 0 to 255, \(example)") }
                entry.ttl = ttl
            }
            entries.append(entry)
        }
        guard entries.count <= 16 else { throw RuleError("mpls='\(value)': \(entries.count) entries: give 1 to 16 (a deeper stack is not a real one)") }
        return entries
    }

    /// `drop=every:N,after:K`, both items required, in any order.
    private func dropSchedule(_ value: String) throws(RuleError) -> DropSchedule {
        let example = "e.g. drop=every:2,after:20 (50 % from each host's 21st echo request and 21st SYN)"
        var every: Int?, after: Int?
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, let number = Int(parts[1]) else { throw RuleError("drop='\(value)': '\(item)' is not NAME:NUMBER, \(example)") }
            switch parts[0] {
            case "every":
                guard every == nil else { throw RuleError("drop='\(value)': every given twice: give it once, \(example)") }
                guard (1...1_000_000).contains(number) else { throw RuleError("drop='\(value)': every:\(number): write 1 (every request) to 1000000, \(example)") }
                every = number
            case "after":
                guard after == nil else { throw RuleError("drop='\(value)': after given twice: give it once, \(example)") }
                guard number >= 0 else { throw RuleError("drop='\(value)': after:\(number): write 0 or more requests, \(example)") }
                after = number
            default:
                throw RuleError("drop='\(value)': unknown item '\(parts[0])': use every and after, \(example)")
            }
        }
        guard let every, let after else { throw RuleError("drop='\(value)': give both every and after, \(example)") }
        return DropSchedule(every: every, after: after)
    }

    /// `unreachable=CODE,at-hop:N,delay:D` (items in any order; `code:CODE` as well as a bare code).
    private func unreachableAnswer(_ value: String) throws(RuleError) -> UnreachableAnswer {
        let example = "e.g. unreachable=host,after-hop:5,delay:3s"
        var answer = UnreachableAnswer()
        var seen: Set<String> = []
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let (name, text) = parts.count == 2 ? (parts[0], parts[1]) : ("code", parts[0])
            let place = name == "after-hop" ? "at-hop" : name
            guard seen.insert(place).inserted else {
                throw RuleError("unreachable='\(value)': \(place == "at-hop" ? "at-hop or after-hop" : name) given twice: give each once, \(example)")
            }
            switch name {
            case "code":
                if let number = UInt8(text) {
                    answer.code = SimulatedPacket.Unreachable(number: number, isIPv6: prefix.address.isIPv6)
                } else if let named = SimulatedPacket.Unreachable.names.first(where: { $0.0 == text }) {
                    answer.code = named.1
                } else {
                    throw RuleError("unreachable='\(value)': '\(text)' is not a code: write net, host, protocol, port, prohibited or a number 0 to 255")
                }
                if answer.code == .protocol && prefix.address.isIPv6 {
                    throw RuleError("unreachable='\(value)': ICMPv6 has no protocol unreachable (IPv4 code 2): use port, prohibited, net, host or a number for \(prefix)")
                }
            case "at-hop", "after-hop":
                guard let hop = Int(text), (1...64).contains(hop) else {
                    throw RuleError("unreachable='\(value)': \(name) '\(text)': write the hop of a router of the path, 1 to 64, \(example)")
                }
                answer.place = name == "at-hop" ? .atHop(hop) : .afterHop(hop)
            case "delay":
                guard let delay = Self.duration(text), delay <= 60_000_000_000 else {
                    throw RuleError("unreachable='\(value)': delay '\(text)': write a duration up to 60s with a unit, e.g. delay:3s")
                }
                answer.delay = delay
            default:
                throw RuleError("unreachable='\(value)': unknown key '\(name)': use code, at-hop or after-hop, and delay, \(example)")
            }
        }
        return answer
    }

    /// What can only be checked once every key is read: the jitter (it needs the delay) and
    /// the keys that must agree with each other.
    fileprivate mutating func finish(jitter: String?) throws(RuleError) {
        try applyJitter(jitter)
        if let mpls, mpls.entries.isEmpty {
            throw RuleError("mpls-placement=\(mpls.placement.rawValue) without mpls: give the label stack too, e.g. mpls=16005/0/1")
        }
        if let answer = unreachable {
            guard loop.isEmpty else {
                throw RuleError("loop and unreachable exclude each other: a packet going round a loop never reaches the router or host that would refuse it")
            }
            if let hop = answer.place.hop, hop > path.count {
                let key = answer.place == .atHop(hop) ? "at-hop" : "after-hop"
                guard !path.isEmpty else {
                    throw RuleError("unreachable: \(key):\(hop) names a router, but the rule has no path: give it one (path=R1,R2), or name no hop for the hosts themselves")
                }
                throw RuleError("unreachable: \(key):\(hop), but the path has \(path.count) router\(path.count == 1 ? "" : "s"): name a hop of the path (1 to \(path.count)), or none for the hosts themselves")
            }
        }
    }

    private mutating func applyJitter(_ jitter: String?) throws(RuleError) {
        guard let jitter else { return }
        guard case .fixed(let base) = delay else { throw RuleError("jitter needs a fixed delay (delay=10ms), not a range") }
        let parts = jitter.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let amount = Self.duration(String(parts[1])) else { throw RuleError("jitter='\(jitter)': write normal:1ms or uniform:2ms") }
        switch parts[0] {
        case "normal": delay = .normal(mean: base, standardDeviation: amount)
        case "uniform": delay = .uniform(minimum: max(0, base - amount), maximum: base + amount)
        default: throw RuleError("jitter='\(jitter)': the distribution is normal or uniform")
        }
    }

    /// Where routers may be: the simulator's own ranges.
    static let simulatedRanges = [AddressPrefix("198.18.0.0/15")!, AddressPrefix("2001:db8::/32")!]

    /// "10ms", "250us", "1.5s", "100ns" in nanoseconds; a bare number is milliseconds.
    static func duration(_ text: String) -> Int64? {
        let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9)]
        var number = text
        var scale = 1e6
        for (suffix, factor) in units where number.hasSuffix(suffix) {
            number.removeLast(suffix.count)
            scale = factor
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
        return Int64((value * scale).rounded())
    }
}

/// Every rule of a simulation, looked up by longest prefix.
public struct RuleSet: Sendable {
    public private(set) var rules: [HostRule]

    /// - Parameter rules: in any order; the longest prefix that matches decides.
    public init(_ rules: [HostRule]) {
        self.rules = rules.sorted { $0.prefix.length > $1.prefix.length }
    }

    /// The rule for `address`; the default (no delay, no loss, TTL 64, ports closed) when none matches.
    public func rule(for address: SimulatedAddress) -> HostRule {
        rules.first { $0.prefix.contains(address) } ?? HostRule(prefix: AddressPrefix(address: address, length: address.width))
    }

    /// Reads rules from YAML: `prefix` and the keys of the flag syntax. A list is written
    /// as the flag's comma list (a list inside `path` as `|` branches), a mapping as its
    /// `key:value` items:
    /// ```yaml
    /// rules:
    ///   - prefix: 198.18.1.0/24
    ///     delay: 10ms
    ///     jitter: normal:1ms
    ///     loss: 0.2
    ///     tcp: 80:open,81:closed
    ///   - prefix: 198.18.9.0/24
    ///     unreachable: true
    ///   - prefix: 198.18.5.0/24
    ///     path: [198.18.105.1, 198.18.105.2, 198.18.105.3]
    ///     unreachable: {code: host, after-hop: 3, delay: 3s}
    ///   - prefix: 198.18.6.0/24
    ///     path: [198.18.106.1, 198.18.106.2]
    ///     loop: [198.18.106.3, 198.18.106.4]
    /// ```
    /// - Throws: `RuleError` naming the file, the line and the rule that is wrong.
    public static func rules(yaml text: String, file: String = "config") throws -> [HostRule] {
        let document: Node?
        do {
            document = try Yams.compose(yaml: text)
        } catch {
            throw RuleError("\(file): not YAML: \(error)")
        }
        guard let root = document?.mapping, let listNode = root["rules"], let list = listNode.sequence else {
            throw RuleError("\(file):\(document?.mark?.line ?? 1): expected a mapping with a 'rules:' list")
        }
        var rules: [HostRule] = []
        for (index, item) in list.enumerated() {
            let number = index + 1
            let itemLine = item.mark?.line ?? listNode.mark?.line ?? 1
            guard let mapping = item.mapping else { throw RuleError("\(file):\(itemLine): rule \(number) is not a mapping: write '- prefix: ADDRESS/LENGTH' and its keys") }
            guard let prefixNode = mapping["prefix"] else { throw RuleError("\(file):\(itemLine): rule \(number): a rule needs 'prefix: ADDRESS/LENGTH'") }
            guard let prefixText = prefixNode.scalar?.string, let prefix = AddressPrefix(prefixText) else {
                throw RuleError("\(file):\(prefixNode.mark?.line ?? itemLine): rule \(number): '\(flagText(prefixNode) ?? "?")' is not a prefix: write ADDRESS/LENGTH")
            }
            var rule = HostRule(prefix: prefix)
            var jitter: String?
            for (keyNode, valueNode) in mapping {
                let line = keyNode.mark?.line ?? itemLine
                guard let key = keyNode.scalar?.string else { throw RuleError("\(file):\(line): rule \(number): a key must be a word such as delay") }
                guard key != "prefix" else { continue }
                guard let value = flagText(valueNode) else {
                    throw RuleError("\(file):\(line): rule \(number): \(key) must be a value, a list or a mapping of values")
                }
                do {
                    try rule.apply(key: key, value: value, jitter: &jitter)
                } catch {
                    throw RuleError("\(file):\(line): rule \(number): \(error.description)")
                }
            }
            do {
                try rule.finish(jitter: jitter)
            } catch {
                throw RuleError("\(file):\(itemLine): rule \(number): \(error.description)")
            }
            rules.append(rule)
        }
        return rules
    }

    /// A YAML value in the flag syntax: a scalar as it is, a list as a comma list (a list
    /// inside it as `|` branches), a mapping as `key:value` items; nil for deeper nesting.
    /// - Parameter depth: 1 inside a list or mapping, where only scalars are taken.
    static func flagText(_ node: Node, depth: Int = 0) -> String? {
        switch node {
        case .scalar(let scalar):
            return scalar.string
        case .sequence(let sequence) where depth == 0:
            var items: [String] = []
            for item in sequence {
                var branches: [String] = []
                for branch in item.sequence.map(Array.init) ?? [item] {
                    guard let text = flagText(branch, depth: 1) else { return nil }
                    branches.append(text)
                }
                items.append(branches.joined(separator: "|"))
            }
            return items.joined(separator: ",")
        case .mapping(let mapping) where depth == 0:
            var items: [String] = []
            for (key, value) in mapping {
                guard let name = key.scalar?.string, let text = value.scalar?.string else { return nil }
                items.append("\(name):\(text)")
            }
            return items.joined(separator: ",")
        default:
            return nil
        }
    }
}
