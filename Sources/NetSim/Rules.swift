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

/// The behaviour of every host inside one prefix.
public struct HostRule: Equatable, Sendable {
    /// The addresses the rule covers; the longest matching prefix wins.
    public var prefix: AddressPrefix
    public var delay: DelayDistribution = .fixed(0)
    /// Probability in 0...1 that a request is dropped without an answer.
    public var loss: Double = 0
    /// IPv4 TTL / IPv6 hop limit of every reply.
    public var ttl: UInt8 = 64
    /// Behaviour of listed TCP ports (ranges allowed).
    public var tcpPorts: [(ports: ClosedRange<UInt16>, behaviour: PortBehaviour)] = []
    /// Behaviour of every other TCP port.
    public var tcpDefault: PortBehaviour = .closed
    /// The host answers everything with ICMP host unreachable.
    public var unreachable = false
    /// The host drops ICMP echo requests (a firewall that filters ping); routers in front
    /// of it still answer TTL-limited ones.
    public var icmpFiltered = false
    /// The routers in front of the hosts, nearest first: one list per hop, of equal-cost
    /// alternatives a packet's flow hash chooses between (empty: the hosts are one hop away).
    /// Each router behaves as the rule for its own address says (see `RouterBehaviour`).
    public var path: [[SimulatedAddress]] = []
    /// As a router: ICMP errors (time exceeded, too big) it generates per second, at most;
    /// nil for no limit.
    public var icmpRatePerSecond: Double?
    /// As a router: the MTU of its next link; bigger packets (IPv4 with DF set, all IPv6)
    /// get "fragmentation needed" / "packet too big". Nil for no limit.
    public var mtu: Int?
    /// As a router: how many bytes past the quoted IP header its ICMP errors quote (8 as
    /// RFC 792, many old routers); nil quotes as much as fits 576 (IPv4) / 1280 (IPv6) bytes.
    public var quoteBytes: Int?

    public init(prefix: AddressPrefix) {
        self.prefix = prefix
    }

    /// What a SYN to `port` gets.
    public func behaviour(port: UInt16) -> PortBehaviour {
        // Later entries win, so "1-1000:open,22:closed" reads naturally.
        for entry in tcpPorts.reversed() where entry.ports.contains(port) { return entry.behaviour }
        return tcpDefault
    }

    public static func == (lhs: HostRule, rhs: HostRule) -> Bool {
        lhs.prefix == rhs.prefix && lhs.delay == rhs.delay && lhs.loss == rhs.loss && lhs.ttl == rhs.ttl
            && lhs.tcpPorts.map(\.ports) == rhs.tcpPorts.map(\.ports) && lhs.tcpPorts.map(\.behaviour) == rhs.tcpPorts.map(\.behaviour)
            && lhs.tcpDefault == rhs.tcpDefault && lhs.unreachable == rhs.unreachable
            && lhs.icmpFiltered == rhs.icmpFiltered && lhs.path == rhs.path && lhs.icmpRatePerSecond == rhs.icmpRatePerSecond && lhs.mtu == rhs.mtu && lhs.quoteBytes == rhs.quoteBytes
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
          ttl=60                          TTL / hop limit of replies (default 64)
          tcp=80:open,81:closed,82:filtered,83:rejected,1000-1010:open
          tcp-default=closed              unlisted ports (default closed)
          unreachable                     answer all with ICMP host unreachable
          icmp=filtered                   drop ICMP echo requests (default: answer)
          path=R1,R2|R2b,R3               routers in front of the hosts, nearest first;
                                          R2|R2b: equal-cost branches picked by flow hash
                                          (src, dst, protocol, first 4 transport bytes)
        As a router (a rule covering a router's address), the same keys mean:
          delay, jitter                   round-trip time this hop adds
          loss                            probability a packet reaching it is dropped
          ttl                             TTL / hop limit of the ICMP errors it sends
          icmp-rate=1                     time-exceeded / too-big it sends per second
          mtu=1400                        MTU of its next link (DF / IPv6: too big)
          quote=8                         bytes past the IP header its errors quote
                                          (default: as much as fits 576 / 1280 bytes)
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
                unreachable = true
                continue
            }
            guard let equals = word.firstIndex(of: "=") else { throw RuleError("'\(word)' in rule '\(text)': expected KEY=VALUE or 'unreachable'") }
            try apply(key: String(word[..<equals]), value: String(word[word.index(after: equals)...]), jitter: &jitter)
        }
        try applyJitter(jitter)
    }

    /// Parses a rule given as a YAML mapping: `prefix` plus the keys of the flag syntax.
    init(mapping: [String: String]) throws(RuleError) {
        guard let prefixText = mapping["prefix"] else { throw RuleError("a rule needs 'prefix: ADDRESS/LENGTH'") }
        guard let prefix = AddressPrefix(prefixText) else { throw RuleError("'\(prefixText)' is not a prefix: write ADDRESS/LENGTH") }
        self.init(prefix: prefix)
        var jitter: String?
        for (key, value) in mapping.sorted(by: { $0.key < $1.key }) where key != "prefix" {
            if key == "unreachable" {
                guard let flag = Bool(value.lowercased()) else { throw RuleError("unreachable must be true or false, got '\(value)'") }
                unreachable = flag
                continue
            }
            try apply(key: key, value: value, jitter: &jitter)
        }
        try applyJitter(jitter)
    }

    private mutating func apply(key: String, value: String, jitter: inout String?) throws(RuleError) {
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
                    guard let router = SimulatedAddress(String(text)) else {
                        throw RuleError("path='\(value)': '\(text)' is not an address: write R1,R2|R2b,R3 with literal addresses")
                    }
                    guard router.isIPv6 == prefix.address.isIPv6 else { throw RuleError("path='\(value)': router \(text) is not of the prefix's address family") }
                    guard Self.simulatedRanges.contains(where: { $0.contains(router) }) else {
                        throw RuleError("path='\(value)': router \(text) is outside 198.18.0.0/15 and 2001:db8::/32")
                    }
                    branches.append(router)
                }
                hops.append(branches)
            }
            guard hops.count <= 64 else { throw RuleError("path='\(value)': at most 64 routers") }
            path = hops
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
        case "icmp":
            guard value == "filtered" || value == "answer" else { throw RuleError("icmp='\(value)': write filtered (drop echo requests) or answer") }
            icmpFiltered = value == "filtered"
        case "tcp-default":
            guard let behaviour = PortBehaviour(rawValue: value) else { throw RuleError("tcp-default='\(value)': write open, closed, filtered or rejected") }
            tcpDefault = behaviour
        default:
            throw RuleError("unknown key '\(key)': use delay, jitter, loss, ttl, tcp, tcp-default, icmp, unreachable, path, icmp-rate, mtu or quote")
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

    /// Reads rules from YAML:
    /// ```yaml
    /// rules:
    ///   - prefix: 198.18.1.0/24
    ///     delay: 10ms
    ///     jitter: normal:1ms
    ///     loss: 0.2
    ///     tcp: 80:open,81:closed
    ///   - prefix: 198.18.9.0/24
    ///     unreachable: true
    /// ```
    /// - Throws: `RuleError` naming the rule that is wrong.
    public static func rules(yaml text: String, file: String = "config") throws -> [HostRule] {
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw RuleError("\(file): not YAML: \(error)")
        }
        guard let root = document as? [String: Any], let list = root["rules"] as? [Any] else {
            throw RuleError("\(file): expected a mapping with a 'rules:' list")
        }
        var rules: [HostRule] = []
        for (index, item) in list.enumerated() {
            guard let mapping = item as? [String: Any] else { throw RuleError("\(file): rule \(index + 1) is not a mapping") }
            var strings: [String: String] = [:]
            for (key, value) in mapping { strings[key] = "\(value)" }
            do {
                rules.append(try HostRule(mapping: strings))
            } catch {
                throw RuleError("\(file): rule \(index + 1): \(error.description)")
            }
        }
        return rules
    }
}
