// A chain of real Linux routers for tests: network namespaces with forwarding on, joined by
// veth pairs, so every time exceeded, unreachable and drop comes from the kernel itself, and
// nftables counters in the namespaces are the ground truth a report is held against.
// Nothing sent inside can leave the machine: the only addresses are 198.18.0.0/15 and
// 2001:db8::/32 on the chain's own links and no namespace has a default route.
// Needs root, iproute2, nftables and procps (sysctl); CI has them.
//
//   prober --1-- r1 --2-- r2 --3-- ... rN --(N+1)-- destination
//
// Link j joins node j-1 ("next") and node j ("prev"): 198.18.j.1 / 2001:db8:j::1 on the
// left, 198.18.j.2 / 2001:db8:j::2 on the right. Hop k is router k, which answers from
// 198.18.k.2 / 2001:db8:k::2; the destination is hop N+1 at 198.18.(N+1).2.
//
//   var options = RouterChain.Options(routers: 5)
//   options.loss = .init(fromHop: 4, pattern: .everyNth(10))        // nftables numgen, counted
//   let chain = try RouterChain.make(options)                       // deleted with the object
//   let run = try chain.netprobe(["trace", "--json", "-c", "10", chain.destination(.ipv4)])
//   try chain.probesSent(ttl: 3)                                    // what the kernel sent
//   try chain.timeExceeded(from: chain.routerAddress(hop: 3, .ipv4))

import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

public final class RouterChain {
    public enum Family: String, Sendable, CaseIterable {
        case ipv4, ipv6
    }

    /// How often a lossy hop drops a probe (echo request or TCP SYN from the prober).
    public enum LossPattern: Sendable, Equatable {
        /// Every nth probe that enters the router (`numgen inc mod n == 0`): a fixed count.
        case everyNth(Int)
        /// Each probe with probability perMille/1000 (`numgen random mod 1000 < perMille`).
        case randomPerMille(Int)

        var nftablesCondition: String {
            switch self {
            case .everyNth(let n): return "numgen inc mod \(n) == 0"
            case .randomPerMille(let perMille): return "numgen random mod 1000 < \(perMille)"
            }
        }
    }

    /// Loss from a hop on: the router of that hop drops in prerouting, before its TTL check,
    /// so probes that expire at it are dropped as often as those it forwards ("loss starts at
    /// hop k": hop k and every hop after it lose). The pattern runs per arriving TTL and
    /// family, so with `.everyNth(10)` each hop from k on loses exactly every 10th of its
    /// probes (the first included), and so do pings.
    public struct Loss: Sendable, Equatable {
        public var fromHop: Int
        public var pattern: LossPattern
        public init(fromHop: Int, pattern: LossPattern) {
            self.fromHop = fromHop
            self.pattern = pattern
        }
    }

    /// What makes a hop answer "destination unreachable" for one destination address of its own.
    public enum UnreachableKind: Sendable, Equatable {
        /// `ip route add unreachable ADDRESS`: IPv4 code 1 (host), IPv6 code 0 (no route).
        /// IPv4 route errors have a limiter of their own, host-wide and not per namespace
        /// (net.ipv4.route.error_cost 1 s, error_burst 5 s, per source address and router):
        /// a router answers 5 probes at once, then one a second. A test leaves it alone and
        /// sends at most 5 probes a router's route must answer.
        case unreachableRoute
        /// `ip route add prohibit ADDRESS`: IPv4 code 13, IPv6 code 1 (administratively prohibited).
        case prohibitRoute
        /// nftables `reject with icmp type net-unreachable` / `icmpv6 type no-route`.
        case rejectNet
        /// `host-unreachable` / `addr-unreachable`.
        case rejectHost
        /// `prot-unreachable` / ICMPv6 has no protocol unreachable: `port-unreachable`.
        case rejectProtocol
        /// `port-unreachable` / `port-unreachable`.
        case rejectPort
        /// `admin-prohibited` / `admin-prohibited`.
        case rejectAdminProhibited
        /// The router of the hop before routes the address via a neighbour on a link where
        /// nobody answers ARP / neighbour solicitations: it answers host unreachable (IPv4 code
        /// 1, IPv6 code 3) once its neighbour lookup gives up, about 3 s after the probe.
        case neighbourLookupFails

        /// The ICMP code a Linux router sends for it (what the prober's kernel counts).
        public func icmpCode(_ family: Family) -> Int {
            switch (self, family) {
            case (.unreachableRoute, .ipv4): return 1
            case (.unreachableRoute, .ipv6): return 0
            case (.prohibitRoute, .ipv4): return 13
            case (.prohibitRoute, .ipv6): return 1
            case (.rejectNet, _): return 0
            case (.rejectHost, .ipv4): return 1
            case (.rejectHost, .ipv6): return 3
            case (.rejectProtocol, .ipv4): return 2
            case (.rejectProtocol, .ipv6): return 4
            case (.rejectPort, .ipv4): return 3
            case (.rejectPort, .ipv6): return 4
            case (.rejectAdminProhibited, .ipv4): return 13
            case (.rejectAdminProhibited, .ipv6): return 1
            case (.neighbourLookupFails, .ipv4): return 1
            case (.neighbourLookupFails, .ipv6): return 3
            }
        }

        var rejectType: (ipv4: String, ipv6: String)? {
            switch self {
            case .rejectNet: return ("net-unreachable", "no-route")
            case .rejectHost: return ("host-unreachable", "addr-unreachable")
            case .rejectProtocol: return ("prot-unreachable", "port-unreachable")
            case .rejectPort: return ("port-unreachable", "port-unreachable")
            case .rejectAdminProhibited: return ("admin-prohibited", "admin-prohibited")
            default: return nil
            }
        }
    }

    /// Hop `hop` answers unreachable for a destination address of this ending's own
    /// (`chain.destination(.ipv4, unreachable: index)`), so one chain can hold every kind.
    public struct Unreachable: Sendable, Equatable {
        public var hop: Int
        public var kind: UnreachableKind
        public init(hop: Int, kind: UnreachableKind) {
            self.hop = hop
            self.kind = kind
        }
    }

    /// How the router before the branches splits flows between them.
    public enum Balancing: Sendable, Equatable {
        /// The kernel's ECMP: a multipath route with the L4 hash (fib_multipath_hash_policy
        /// 1): TCP flows split by source port, at random; ICMP (no ports) all takes one branch.
        case kernelHash
        /// nftables gives each new flow (TCP source port, ICMP checksum: what a Paris
        /// traceroute keeps constant per flow) the other branch than the flow before, by
        /// fwmark: with 2n flows, n take each branch, whatever their ports.
        case alternatingFlows
    }

    /// Two equal-cost branches for hop `afterHop + 1`: router afterHop+1 ("first") and its
    /// twin ("second"), both joined to router afterHop and to the next node.
    public struct Branches: Sendable, Equatable {
        public var afterHop: Int
        public var balancing: Balancing
        /// Loss on the second branch (prerouting of the twin, counted per flow).
        public var secondBranchLoss: LossPattern?
        public init(afterHop: Int, balancing: Balancing = .alternatingFlows, secondBranchLoss: LossPattern? = .everyNth(5)) {
            self.afterHop = afterHop
            self.balancing = balancing
            self.secondBranchLoss = secondBranchLoss
        }
    }

    public struct Options: Sendable, Equatable {
        /// Routers between the prober and the destination (the destination is hop routers+1).
        public var routers: Int
        public var loss: Loss?
        /// Hops that keep the kernel's ICMP rate limits (1000 ms per peer, a burst of 6; the
        /// namespace's 1000 errors/s, burst 50): they look lossy to a tracer although they
        /// forward everything. Every other router answers every probe (icmp_ratelimit 0 and a
        /// global budget of 100000/s).
        public var rateLimitingHops: Set<Int> = []
        /// Each gets a destination address of its own, 198.18.(N+1).(10+index).
        public var unreachables: [Unreachable] = []
        /// A routing loop for the destination: router k routes it on to router k+1, which
        /// routes it back.
        public var loopAtHop: Int?
        /// The destination drops echo requests (nftables, counted): a filtered destination.
        public var destinationDropsEcho = false
        /// A TCP listener at the destination (every address, both families) on `tcpPort`.
        public var tcpListener = true
        public var branches: Branches?
        /// Link j's MTU (both ends of its veth pair), by link number (1: prober -- router 1,
        /// routers + 1: last router -- destination); absent: 1500. A router forwarding a
        /// don't-fragment packet onto a smaller link answers "fragmentation needed" /
        /// "packet too big" with the link's MTU for every such packet: the kernels never
        /// rate-limit those (icmpv4_mask_allow, icmpv6_mask_allow: "don't limit PMTU
        /// discovery"), whatever icmp_ratelimit says.
        public var linkMTUs: [Int: Int] = [:]

        public init(routers: Int = 5) {
            self.routers = routers
        }
    }

    /// The destination's listening port (a socket of the test process, opened inside the
    /// destination namespace: no server process to start or stop).
    public let tcpPort = 8080
    public let options: Options
    public let prober: String
    /// routerNamespaces[k - 1] is router k.
    public let routerNamespaces: [String]
    public let destinationNamespace: String
    /// The second router of the branches' hop, when there are branches.
    public let twinNamespace: String?
    /// The namespace where neighbour lookups go unanswered, when an ending needs it.
    public let voidNamespace: String?
    private var listeners: [Int32] = []

    /// The tables this builder installs (each namespace its own).
    public static let truthTable = "netprobe_truth"
    /// The lossy hop's drop rule, the unreachables' rejects, the filtered destination's drop.
    public static let faultTable = "netprobe_fault"
    /// The branches: flows per branch and the second branch's drops (and the fork's marks).
    public static let branchTable = "netprobe_branch"

    private init(options: Options, tag: String) {
        self.options = options
        prober = "netprobe-rc-p-\(tag)"
        routerNamespaces = (1...options.routers).map { "netprobe-rc-r\($0)-\(tag)" }
        destinationNamespace = "netprobe-rc-d-\(tag)"
        twinNamespace = options.branches == nil ? nil : "netprobe-rc-t-\(tag)"
        voidNamespace = options.unreachables.contains { $0.kind == .neighbourLookupFails } ? "netprobe-rc-v-\(tag)" : nil
    }

    deinit {
        for descriptor in listeners { close(descriptor) }
        for namespace in allNamespaces { _ = try? NetworkNamespace.command(["ip", "netns", "delete", namespace]) }
    }

    var allNamespaces: [String] {
        [prober] + routerNamespaces + [destinationNamespace] + [twinNamespace, voidNamespace].compactMap { $0 }
    }

    // MARK: addresses

    /// The prober's address (the source of every probe).
    public func proberAddress(_ family: Family) -> String { address(link: 1, side: 1, family) }

    /// The address hop k's router answers from (its side of the link toward the prober).
    public func routerAddress(hop: Int, _ family: Family) -> String { address(link: hop, side: 2, family) }

    /// The address the second branch's router answers from.
    public func twinAddress(_ family: Family) -> String {
        address(link: 100 + branchesAfterHop + 1, side: 2, family)
    }

    /// The destination's hop number.
    public var destinationHop: Int { options.routers + 1 }

    /// The destination's main address.
    public func destination(_ family: Family) -> String { address(link: destinationHop, side: 2, family) }

    /// The destination address of `options.unreachables[index]`.
    public func destination(_ family: Family, unreachable index: Int) -> String {
        family == .ipv4 ? "198.18.\(destinationHop).\(10 + index)" : "2001:db8:\(destinationHop)::\(10 + index)"
    }

    /// The address that answers unreachable for `options.unreachables[index]`: the router of
    /// its hop, or for a failed neighbour lookup the router before it (which forwards the
    /// probes of that hop and cannot deliver them), from the same hop number.
    public func unreachableSource(_ family: Family, unreachable index: Int) -> String {
        let ending = options.unreachables[index]
        return routerAddress(hop: ending.kind == .neighbourLookupFails ? ending.hop - 1 : ending.hop, family)
    }

    /// The two addresses a loop at hop k shows: router k+1 and router k as the packet comes
    /// back to it. IPv4 answers from the link toward the prober (k.2); IPv6 from the link the
    /// looping packet arrived on (router k's (k+1)::1), as the kernels do.
    public func loopAddresses(_ family: Family) -> [String] {
        guard let hop = options.loopAtHop else { return [] }
        return family == .ipv4 ? [routerAddress(hop: hop, .ipv4), routerAddress(hop: hop + 1, .ipv4)]
            : [address(link: hop + 1, side: 1, .ipv6), routerAddress(hop: hop + 1, .ipv6)]
    }

    private var branchesAfterHop: Int { options.branches?.afterHop ?? 0 }

    /// Link j's address on side 1 (node j-1) or side 2 (node j).
    private func address(link: Int, side: Int, _ family: Family) -> String {
        family == .ipv4 ? "198.18.\(link).\(side)" : "2001:db8:\(link)::\(side)"
    }

    // MARK: building

    /// Builds the chain, waits until every router and the destination answer a ping from
    /// the prober (both families), then adds the faults and the counters.
    /// - Throws: a skip without root or the tools (an XCTFail first in CI); an error naming
    ///   the command that failed.
    public static func make(_ options: Options = Options()) throws -> RouterChain {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (network namespaces); CI runs as root")
        }
        _ = try TestEnvironment.requireBinary("ip", package: "iproute2")
        _ = try TestEnvironment.requireBinary("nft", package: "nftables")
        _ = try TestEnvironment.requireBinary("sysctl", package: "procps")
        _ = try TestEnvironment.requireBinary("ping", package: "iputils-ping")
        try validate(options)
        let tag = "\(getpid() % 100_000)-\(UInt16.random(in: 0...UInt16.max))"
        let chain = RouterChain(options: options, tag: tag)
        try chain.build()
        return chain
    }

    private static func validate(_ options: Options) throws {
        func fail(_ text: String) -> NSError { NSError(domain: "RouterChain", code: 1, userInfo: [NSLocalizedDescriptionKey: text]) }
        let routers = 1...options.routers
        guard options.routers >= 1, options.routers <= 60 else { throw fail("1 to 60 routers") }
        if let loss = options.loss, !routers.contains(loss.fromHop) { throw fail("loss from hop \(loss.fromHop): no such router") }
        for ending in options.unreachables where !routers.contains(ending.hop) || (ending.kind == .neighbourLookupFails && ending.hop < 2) {
            throw fail("unreachable at hop \(ending.hop): needs a router there (and one before it for a failed neighbour lookup)")
        }
        guard options.unreachables.count <= 80 else { throw fail("at most 80 unreachable endings") }
        if let hop = options.loopAtHop, !(1..<options.routers).contains(hop) { throw fail("a loop at hop \(hop) needs routers \(hop) and \(hop + 1)") }
        for (link, mtu) in options.linkMTUs where !(1...(options.routers + 1)).contains(link) || !(1280...65_535).contains(mtu) {
            throw fail("link \(link) MTU \(mtu): links are 1 to \(options.routers + 1), MTUs 1280 (IPv6's least) to 65535")
        }
        if let branches = options.branches, !(1..<options.routers).contains(branches.afterHop) || branches.afterHop + 1 > 90 {
            throw fail("branches after hop \(branches.afterHop) need a router there and one after it")
        }
    }

    private func run(_ arguments: [String], input: String? = nil) throws {
        try NetworkNamespace.run(arguments, input: input)
    }

    private func ip(_ namespace: String, _ arguments: String) throws {
        try run(["ip", "-n", namespace] + arguments.split(separator: " ").map(String.init))
    }

    /// Applies an nftables script inside `namespace`.
    public func nft(_ namespace: String, _ script: String) throws {
        try run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input: script)
    }

    private func build() throws {
        let routers = options.routers
        // Sysctls first: interfaces made afterwards take the defaults (no DAD delay, no
        // reverse-path filter that would drop what a branch brings back the other way).
        for namespace in allNamespaces {
            try run(["ip", "netns", "add", namespace])
            try ip(namespace, "link set lo up")
            var settings = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                            "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
            let isRouter = namespace != prober && namespace != destinationNamespace && namespace != voidNamespace
            settings += ["net.ipv4.ip_forward=\(isRouter ? 1 : 0)", "net.ipv6.conf.all.forwarding=\(isRouter ? 1 : 0)"]
            let hop = routerNamespaces.firstIndex(of: namespace).map { $0 + 1 }
            let rateLimits = hop.map { options.rateLimitingHops.contains($0) } ?? false
            settings += ["net.ipv4.icmp_ratelimit=\(rateLimits ? 1000 : 0)", "net.ipv6.icmp.ratelimit=\(rateLimits ? 1000 : 0)"]
            // The namespace's global ICMP error budget (1000/s, a burst of 50, shared by
            // both families) would cap a router hit by a first round of 5 targets x 30 TTLs.
            if !rateLimits { settings += ["net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=10000"] }
            if namespace == router(branchesAfterHop), options.branches?.balancing == .kernelHash {
                settings += ["net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1"]
            }
            try run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w"] + settings)
        }
        // The chain's links: node j-1 "next" -- node j "prev".
        let nodes = [prober] + routerNamespaces + [destinationNamespace]
        for link in 1...(routers + 1) {
            try join(nodes[link - 1], "next", nodes[link], "prev", link: link)
            if let mtu = options.linkMTUs[link] { try setLinkMTU(link, mtu) }
        }
        if let branches = options.branches, let twin = twinNamespace {
            let fork = branches.afterHop
            try join(router(fork), "nextb", twin, "prev", link: 100 + fork + 1)
            try join(twin, "next", nodes[fork + 2], "prevb", link: 100 + fork + 2)
        }
        // Routes: toward the destination side by the whole prefix, back to the prober by its link.
        for (position, namespace) in nodes.enumerated() {
            for family in Family.allCases {
                let (whole, proberLink) = family == .ipv4 ? ("198.18.0.0/15", "198.18.1.0/24") : ("2001:db8::/32", "2001:db8:1::/64")
                let flag = family == .ipv4 ? "-4" : "-6"
                if position <= routers {
                    if let branches = options.branches, position == branches.afterHop {
                        try ip(namespace, "\(flag) route add \(whole) nexthop via \(address(link: position + 1, side: 2, family)) nexthop via \(address(link: 100 + position + 1, side: 2, family))")
                    } else {
                        try ip(namespace, "\(flag) route add \(whole) via \(address(link: position + 1, side: 2, family))")
                    }
                } else {
                    try ip(namespace, "\(flag) route add \(whole) via \(address(link: position, side: 1, family))")
                }
                if position >= 2, position <= routers {
                    try ip(namespace, "\(flag) route add \(proberLink) via \(address(link: position, side: 1, family))")
                }
            }
        }
        if let branches = options.branches, let twin = twinNamespace {
            let link = 100 + branches.afterHop + 1
            try ip(twin, "-4 route add 198.18.0.0/15 via \(address(link: link + 1, side: 2, .ipv4))")
            try ip(twin, "-6 route add 2001:db8::/32 via \(address(link: link + 1, side: 2, .ipv6))")
            try ip(twin, "-4 route add 198.18.1.0/24 via \(address(link: link, side: 1, .ipv4))")
            try ip(twin, "-6 route add 2001:db8:1::/64 via \(address(link: link, side: 1, .ipv6))")
        }
        for index in options.unreachables.indices {
            for family in Family.allCases {
                try ip(destinationNamespace, "addr add \(destination(family, unreachable: index))/\(family == .ipv4 ? 24 : 64) dev prev\(family == .ipv6 ? " nodad" : "")")
            }
        }
        try waitUntilEveryNodeAnswers()
        try addCounters()
        try addFaults()
        if options.tcpListener { try openListener() }
    }

    /// Sets link `link`'s MTU on both ends of its veth pair (also while a test runs).
    public func setLinkMTU(_ link: Int, _ mtu: Int) throws {
        let nodes = [prober] + routerNamespaces + [destinationNamespace]
        precondition((1..<nodes.count).contains(link), "no link \(link) in this chain")
        try ip(nodes[link - 1], "link set next mtu \(mtu)")
        try ip(nodes[link], "link set prev mtu \(mtu)")
    }

    private func router(_ hop: Int) -> String {
        hop >= 1 && hop <= routerNamespaces.count ? routerNamespaces[hop - 1] : ""
    }

    /// A veth pair made inside both namespaces at once (its names never touch the host's),
    /// addressed as link `link`, up.
    private func join(_ left: String, _ leftName: String, _ right: String, _ rightName: String, link: Int) throws {
        try run(["ip", "link", "add", rightName, "netns", right, "type", "veth", "peer", "name", leftName, "netns", left])
        for (namespace, name, side) in [(left, leftName, 1), (right, rightName, 2)] {
            try ip(namespace, "-4 addr add \(address(link: link, side: side, .ipv4))/24 dev \(name)")
            try ip(namespace, "-6 addr add \(address(link: link, side: side, .ipv6))/64 dev \(name) nodad")
            try ip(namespace, "link set \(name) up")
        }
    }

    /// Polls (ping) until every router, the twin and the destination answer from the prober:
    /// links come up and neighbours resolve in their own time.
    private func waitUntilEveryNodeAnswers() throws {
        var addresses: [String] = []
        for family in Family.allCases {
            addresses += (1...options.routers).map { routerAddress(hop: $0, family) } + [destination(family)]
            if options.branches != nil { addresses.append(twinAddress(family)) }
        }
        for address in addresses {
            let answered = TestEnvironment.eventually(within: 30, every: 0.05) {
                ((try? NetworkNamespace.command(["ip", "netns", "exec", prober, "ping", "-n", "-q", "-c", "1", "-W", "1", address]))?.status ?? 1) == 0
            }
            guard answered else {
                throw NSError(domain: "RouterChain", code: 2, userInfo: [NSLocalizedDescriptionKey: "\(address) never answered a ping from the prober namespace"])
            }
        }
    }

    // MARK: ground truth

    /// The prober's table: what left it per TTL, what came back per address (and code).
    private func addCounters() throws {
        let table = Self.truthTable
        try nft(prober, """
            table inet \(table) {
              set probes4 { typeof ip ttl; flags dynamic; counter; }
              set probes6 { typeof ip6 hoplimit; flags dynamic; counter; }
              set exceeded4 { typeof ip saddr; flags dynamic; counter; }
              set exceeded6 { typeof ip6 saddr; flags dynamic; counter; }
              set unreachable4 { typeof ip saddr . icmp code; flags dynamic; counter; }
              set unreachable6 { typeof ip6 saddr . icmpv6 code; flags dynamic; counter; }
              set replies4 { typeof ip saddr; flags dynamic; counter; }
              set replies6 { typeof ip6 saddr; flags dynamic; counter; }
              chain output {
                type filter hook output priority 0; policy accept;
                icmp type echo-request update @probes4 { ip ttl }
                icmpv6 type echo-request update @probes6 { ip6 hoplimit }
                meta nfproto ipv4 tcp flags syn / syn,ack update @probes4 { ip ttl }
                meta nfproto ipv6 tcp flags syn / syn,ack update @probes6 { ip6 hoplimit }
              }
              chain input {
                type filter hook input priority 0; policy accept;
                icmp type time-exceeded update @exceeded4 { ip saddr }
                icmpv6 type time-exceeded update @exceeded6 { ip6 saddr }
                icmp type destination-unreachable update @unreachable4 { ip saddr . icmp code }
                icmpv6 type destination-unreachable update @unreachable6 { ip6 saddr . icmpv6 code }
                icmp type echo-reply update @replies4 { ip saddr }
                icmpv6 type echo-reply update @replies6 { ip6 saddr }
                meta nfproto ipv4 tcp flags & (syn | rst) != 0 update @replies4 { ip saddr }
                meta nfproto ipv6 tcp flags & (syn | rst) != 0 update @replies6 { ip6 saddr }
              }
            }
            """)
        try nft(destinationNamespace, """
            table inet \(table) {
              counter echo_requests {}
              counter syns {}
              chain prerouting {
                type filter hook prerouting priority -200; policy accept;
                icmp type echo-request counter name "echo_requests"
                icmpv6 type echo-request counter name "echo_requests"
                tcp flags syn / syn,ack counter name "syns"
              }
            }
            """)
    }

    /// Probes (echo requests and TCP SYNs, both families) that left the prober with this TTL
    /// or hop limit.
    public func probesSent(ttl: Int) throws -> Int {
        try (setCounts("probes4", in: prober)[String(ttl)] ?? 0) + (setCounts("probes6", in: prober)[String(ttl)] ?? 0)
    }

    /// Probes that left the prober per TTL / hop limit.
    public func probesSentPerTTL() throws -> [Int: Int] {
        var counts: [Int: Int] = [:]
        for set in ["probes4", "probes6"] {
            for (key, packets) in try setCounts(set, in: prober) { counts[Int(key) ?? -1, default: 0] += packets }
        }
        return counts
    }

    /// Time exceeded messages the prober received from `address`.
    public func timeExceeded(from address: String) throws -> Int {
        try setCounts(address.contains(":") ? "exceeded6" : "exceeded4", in: prober)[address] ?? 0
    }

    /// Destination unreachables the prober received, by source address and ICMP code.
    public func unreachables() throws -> [(address: String, code: Int, count: Int)] {
        var found: [(address: String, code: Int, count: Int)] = []
        for set in ["unreachable4", "unreachable6"] {
            for (key, packets) in try setCounts(set, in: prober) {
                let parts = key.components(separatedBy: " . ")
                found.append((parts[0], Int(parts.last ?? "") ?? -1, packets))
            }
        }
        return found.sorted { ($0.address, $0.code) < ($1.address, $1.code) }
    }

    /// Echo replies and TCP SYN-ACKs / RSTs the prober received from `address`.
    public func replies(from address: String) throws -> Int {
        try setCounts(address.contains(":") ? "replies6" : "replies4", in: prober)[address] ?? 0
    }

    /// Echo requests that reached the destination namespace (all its addresses, both
    /// families, before any filter of it).
    public func destinationEchoRequests() throws -> Int { try counter("echo_requests", in: destinationNamespace) }

    /// TCP SYNs that reached the destination namespace.
    public func destinationSYNs() throws -> Int { try counter("syns", in: destinationNamespace) }

    /// Probes the lossy hop dropped (`options.loss`).
    public func droppedByLoss() throws -> Int {
        guard let loss = options.loss else { return 0 }
        return try counter("dropped", in: router(loss.fromHop), table: Self.faultTable)
    }

    /// Probes that entered the lossy hop's drop rule (dropped or not).
    public func seenByLoss() throws -> Int {
        guard let loss = options.loss else { return 0 }
        return try counter("seen", in: router(loss.fromHop), table: Self.faultTable)
    }

    /// Probes the second branch dropped, in all.
    public func droppedOnSecondBranch() throws -> Int {
        guard let twin = twinNamespace else { return 0 }
        return try counter("dropped", in: twin, table: Self.branchTable)
    }

    /// Per flow key (TCP source port, or "icmp <checksum>"): probes that entered each branch
    /// (prerouting, so those that expire there too), and those the second branch dropped.
    public func branchFlows() throws -> (first: [String: Int], second: [String: Int], droppedOnSecond: [String: Int]) {
        guard options.branches != nil, let twin = twinNamespace else { return ([:], [:], [:]) }
        let first = router(branchesAfterHop + 1)
        func flows(_ namespace: String, _ prefix: String) throws -> [String: Int] {
            var counts: [String: Int] = [:]
            for (set, label) in [("\(prefix)tcp", ""), ("\(prefix)icmp4", "icmp "), ("\(prefix)icmp6", "icmp ")] {
                for (key, packets) in try setCounts(set, in: namespace, table: Self.branchTable) { counts[label + key, default: 0] += packets }
            }
            return counts
        }
        return (try flows(first, "flows_"), try flows(twin, "flows_"), try flows(twin, "dropped_"))
    }

    /// A named counter's packets.
    public func counter(_ name: String, in namespace: String, table: String = RouterChain.truthTable) throws -> Int {
        let text = try NetworkNamespace.run(["ip", "netns", "exec", namespace, "nft", "list", "counter", "inet", table, name])
        guard let range = text.range(of: "packets ") else { throw NSError(domain: "RouterChain", code: 3, userInfo: [NSLocalizedDescriptionKey: "no packets in: \(text)"]) }
        return Int(text[range.upperBound...].prefix { $0.isNumber }) ?? -1
    }

    /// A dynamic set's per-element packet counters, keyed by the element as nft prints it
    /// numerically (concatenations joined by " . ").
    public func setCounts(_ set: String, in namespace: String, table: String = RouterChain.truthTable) throws -> [String: Int] {
        let text = try NetworkNamespace.run(["ip", "netns", "exec", namespace, "nft", "-n", "-j", "list", "set", "inet", table, set])
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let items = object["nftables"] as? [[String: Any]] else { return [:] }
        var counts: [String: Int] = [:]
        for item in items {
            guard let body = item["set"] as? [String: Any], let elements = body["elem"] as? [Any] else { continue }
            for element in elements {
                guard let wrapper = (element as? [String: Any])?["elem"] as? [String: Any],
                      let packets = (wrapper["counter"] as? [String: Any])?["packets"] as? Int else { continue }
                let value = wrapper["val"]
                let key: String
                if let concat = (value as? [String: Any])?["concat"] as? [Any] {
                    key = concat.map { "\($0)" }.joined(separator: " . ")
                } else {
                    key = value.map { "\($0)" } ?? ""
                }
                counts[key, default: 0] += packets
            }
        }
        return counts
    }

    // MARK: faults

    private func addFaults() throws {
        let table = Self.faultTable
        if let loss = options.loss {
            // Prerouting comes before the TTL check: probes that expire at this hop are
            // dropped as often as those it forwards. One numgen per arriving TTL (and
            // family): every hop from here on, and the pings, lose every nth of their own
            // probes. One numgen for all would alias with the probes' periodic order (4
            // probes an interval through it, every 10th dropped: hop 4 or the pings lose
            // 0 % or 25 %, and loss seems to start a hop later).
            var chains: [String] = []
            var dispatch: [String] = []
            for (family, field) in [("4", "ip ttl"), ("6", "ip6 hoplimit")] {
                for ttl in (1...64).map(String.init) + ["other"] {
                    chains.append("""
                      chain lossy_\(family)_\(ttl) {
                        counter name "seen"
                        \(loss.pattern.nftablesCondition) counter name "dropped" drop
                      }
                    """)
                }
                let entries = (1...64).map { "\($0) : goto lossy_\(family)_\($0)" }.joined(separator: ", ")
                dispatch.append("""
                  chain probe\(family) {
                    \(field) vmap { \(entries) }
                    goto lossy_\(family)_other
                  }
                """)
            }
            let v4 = proberAddress(.ipv4), v6 = proberAddress(.ipv6)
            try nft(router(loss.fromHop), """
                table inet \(table) {
                  counter seen {}
                  counter dropped {}
                \(chains.joined(separator: "\n"))
                \(dispatch.joined(separator: "\n"))
                  chain prerouting {
                    type filter hook prerouting priority -150; policy accept;
                    ip saddr \(v4) icmp type echo-request jump probe4
                    ip saddr \(v4) tcp flags syn / syn,ack jump probe4
                    ip6 saddr \(v6) icmpv6 type echo-request jump probe6
                    ip6 saddr \(v6) tcp flags syn / syn,ack jump probe6
                  }
                }
                """)
        }
        for (index, ending) in options.unreachables.enumerated() {
            let v4 = destination(.ipv4, unreachable: index), v6 = destination(.ipv6, unreachable: index)
            let namespace = router(ending.hop)
            switch ending.kind {
            case .unreachableRoute, .prohibitRoute:
                let type = ending.kind == .unreachableRoute ? "unreachable" : "prohibit"
                try ip(namespace, "-4 route add \(type) \(v4)/32")
                try ip(namespace, "-6 route add \(type) \(v6)/128")
            case .neighbourLookupFails:
                // Router hop-1 forwards the probes of this hop to a neighbour that never answers.
                try addVoidLink(to: router(ending.hop - 1))
                try ip(router(ending.hop - 1), "-4 route add \(v4)/32 via 198.18.250.9 dev void")
                try ip(router(ending.hop - 1), "-6 route add \(v6)/128 via 2001:db8:250::9 dev void")
            default:
                // Prerouting: before the TTL check, so the hop's own probes are rejected too.
                guard let types = ending.kind.rejectType else { continue }
                try nft(namespace, """
                    table inet \(table)_unreachable_\(index) {
                      chain prerouting {
                        type filter hook prerouting priority -150; policy accept;
                        ip daddr \(v4) reject with icmp type \(types.ipv4)
                        ip6 daddr \(v6) reject with icmpv6 type \(types.ipv6)
                      }
                    }
                    """)
            }
        }
        if let hop = options.loopAtHop {
            // Router hop already sends the destination on to hop+1; hop+1 sends it back.
            try ip(router(hop + 1), "-4 route add \(destination(.ipv4))/32 via \(address(link: hop + 1, side: 1, .ipv4))")
            try ip(router(hop + 1), "-6 route add \(destination(.ipv6))/128 via \(address(link: hop + 1, side: 1, .ipv6))")
        }
        if options.destinationDropsEcho {
            try nft(destinationNamespace, """
                table inet \(table) {
                  counter dropped {}
                  chain input {
                    type filter hook input priority 0; policy accept;
                    icmp type echo-request counter name "dropped" drop
                    icmpv6 type echo-request counter name "dropped" drop
                  }
                }
                """)
        }
        if let branches = options.branches { try addBranchRules(branches) }
    }

    /// A link to a namespace where nothing answers ARP or neighbour solicitations.
    private var voidLinks: Set<String> = []
    private func addVoidLink(to namespace: String) throws {
        guard let void = voidNamespace, !voidLinks.contains(namespace) else { return }
        guard voidLinks.isEmpty else { throw NSError(domain: "RouterChain", code: 4, userInfo: [NSLocalizedDescriptionKey: "failed neighbour lookups at one hop only"]) }
        voidLinks.insert(namespace)
        try run(["ip", "link", "add", "void", "netns", void, "type", "veth", "peer", "name", "void", "netns", namespace])
        try ip(void, "link set void up")
        try ip(namespace, "-4 addr add 198.18.250.1/24 dev void")
        try ip(namespace, "-6 addr add 2001:db8:250::1/64 dev void nodad")
        try ip(namespace, "link set void up")
    }

    private func addBranchRules(_ branches: Branches) throws {
        let table = Self.branchTable
        let fork = router(branches.afterHop)
        let v4 = proberAddress(.ipv4), v6 = proberAddress(.ipv6)
        if branches.balancing == .alternatingFlows {
            // Marks 1 and 2 route by tables 101 (first branch) and 102 (second); a new flow
            // (a key not seen yet) takes the branch numgen gives it, alternately.
            for (mark, via) in [(1, branches.afterHop + 1), (2, 100 + branches.afterHop + 1)] {
                try ip(fork, "-4 rule add fwmark \(mark) table \(100 + mark)")
                try ip(fork, "-6 rule add fwmark \(mark) table \(100 + mark)")
                try ip(fork, "-4 route add 198.18.0.0/15 via \(address(link: via, side: 2, .ipv4)) table \(100 + mark)")
                try ip(fork, "-6 route add 2001:db8::/32 via \(address(link: via, side: 2, .ipv6)) table \(100 + mark)")
            }
            let keys = [("tcp", "ip saddr \(v4) tcp flags syn / syn,ack", "tcp sport"), ("tcp", "ip6 saddr \(v6) tcp flags syn / syn,ack", "tcp sport"),
                        ("icmp4", "ip saddr \(v4) icmp type echo-request", "icmp checksum"), ("icmp6", "ip6 saddr \(v6) icmpv6 type echo-request", "icmpv6 checksum")]
            var rules: [String] = []
            for (set, match, key) in keys {
                rules.append("\(match) \(key) != @known_\(set) numgen inc mod 2 == 1 add @second_\(set) { \(key) }")
                rules.append("\(match) add @known_\(set) { \(key) }")
                rules.append("\(match) \(key) @second_\(set) meta mark set 2")
                rules.append("\(match) \(key) != @second_\(set) meta mark set 1")
            }
            try nft(fork, """
                table inet \(table) {
                  set known_tcp { typeof tcp sport; flags dynamic; }
                  set second_tcp { typeof tcp sport; flags dynamic; }
                  set known_icmp4 { typeof icmp checksum; flags dynamic; }
                  set second_icmp4 { typeof icmp checksum; flags dynamic; }
                  set known_icmp6 { typeof icmpv6 checksum; flags dynamic; }
                  set second_icmp6 { typeof icmpv6 checksum; flags dynamic; }
                  chain prerouting {
                    type filter hook prerouting priority -150; policy accept;
                    \(rules.joined(separator: "\n    "))
                  }
                }
                """)
        }
        // Both branches count flows; the second drops (before its TTL check) and counts per flow.
        for (namespace, loss) in [(router(branches.afterHop + 1), nil), (twinNamespace ?? "", branches.secondBranchLoss)] {
            let drop = loss.map { pattern in
                ["tcp": "update @dropped_tcp { tcp sport }", "icmp4": "update @dropped_icmp4 { icmp checksum }", "icmp6": "update @dropped_icmp6 { icmpv6 checksum }"]
                    .mapValues { "\(pattern.nftablesCondition) \($0) counter name \"dropped\" drop" }
            } ?? [:]
            try nft(namespace, """
                table inet \(table) {
                  counter dropped {}
                  set flows_tcp { typeof tcp sport; flags dynamic; counter; }
                  set flows_icmp4 { typeof icmp checksum; flags dynamic; counter; }
                  set flows_icmp6 { typeof icmpv6 checksum; flags dynamic; counter; }
                  set dropped_tcp { typeof tcp sport; flags dynamic; counter; }
                  set dropped_icmp4 { typeof icmp checksum; flags dynamic; counter; }
                  set dropped_icmp6 { typeof icmpv6 checksum; flags dynamic; counter; }
                  chain tcp_probe {
                    update @flows_tcp { tcp sport }
                    \(drop["tcp"] ?? "")
                  }
                  chain icmp4_probe {
                    update @flows_icmp4 { icmp checksum }
                    \(drop["icmp4"] ?? "")
                  }
                  chain icmp6_probe {
                    update @flows_icmp6 { icmpv6 checksum }
                    \(drop["icmp6"] ?? "")
                  }
                  chain prerouting {
                    type filter hook prerouting priority -150; policy accept;
                    ip saddr \(v4) tcp flags syn / syn,ack jump tcp_probe
                    ip6 saddr \(v6) tcp flags syn / syn,ack jump tcp_probe
                    ip saddr \(v4) icmp type echo-request jump icmp4_probe
                    ip6 saddr \(v6) icmpv6 type echo-request jump icmp6_probe
                  }
                }
                """)
        }
    }

    /// A dual-stack listener on every destination address (backlog enough for every SYN a
    /// test sends: half-open probes never complete, nothing is accepted).
    private func openListener() throws {
        let port = tcpPort
        let descriptor = try NetworkNamespace.inside(destinationNamespace) { () throws -> Int32 in
            let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
            var zero: Int32 = 0, one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            guard fd >= 0, bound == 0, listen(fd, 1024) == 0 else {
                let error = errno
                if fd >= 0 { close(fd) }
                throw NSError(domain: "RouterChain", code: Int(error), userInfo: [NSLocalizedDescriptionKey: "listener on port \(port) in the destination"])
            }
            return fd
        }
        listeners.append(descriptor)
    }

    // MARK: running

    /// What a command run inside the prober printed and returned.
    public struct Execution: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String

        /// The JSON objects of a JSON Lines standard output.
        public func jsonLines() throws -> [[String: Any]] {
            try standardOutput.split(separator: "\n").map { line in
                guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { throw CocoaError(.coderReadCorrupt) }
                return object
            }
        }
    }

    /// Runs a command inside the prober namespace to its end (killed after `timeout` s, a
    /// bound that only keeps a broken run from hanging the suite).
    public func exec(_ arguments: [String], timeout: Double = 180) throws -> Execution {
        try NetworkNamespace.execute(["ip", "netns", "exec", prober] + arguments, timeout: timeout)
    }

    /// The netprobe binary built with the tests (TestEnvironment.builtExecutable), inside
    /// the prober namespace.
    public func netprobe(_ arguments: [String], timeout: Double = 180) throws -> Execution {
        try exec([TestEnvironment.builtExecutable("netprobe")] + arguments, timeout: timeout)
    }
}

extension NetworkNamespace {
    /// Runs a command; throws when it exits non-zero.
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil) throws -> String {
        let (status, output) = try command(arguments, input: input)
        guard status == 0 else {
            throw NSError(domain: "NetworkNamespace", code: Int(status), userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")): \(output)"])
        }
        return output
    }

    /// Runs a command to its end: exit status and output (stdout and stderr together).
    public static func command(_ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String) {
        try SilentNetwork.command(arguments, input: input)
    }

    /// Runs a command to its end with its standard output and error apart; SIGKILL after
    /// `timeout` seconds (then an XCTFail).
    public static func execute(_ arguments: [String], timeout: Double) throws -> RouterChain.Execution {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = FileHandle.nullDevice
        let collected = CollectedOutput()
        try process.run()
        let readers = DispatchGroup()
        for (pipe, isOutput) in [(output, true), (error, false)] {
            readers.enter()
            Thread {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                collected.store(data, isOutput: isOutput)
                readers.leave()
            }.start()
        }
        let finished = TestEnvironment.eventually(within: timeout, every: 0.05) { !process.isRunning }
        if !finished {
            kill(process.processIdentifier, SIGKILL)
            XCTFail("\(arguments.joined(separator: " ")) ran past \(timeout) s")
        }
        process.waitUntilExit()
        _ = readers.wait(timeout: .now() + 10)
        let (standardOutput, standardError) = collected.texts
        return RouterChain.Execution(status: process.terminationStatus, standardOutput: standardOutput, standardError: standardError)
    }
}

/// Standard output and error of a child, written by their reader threads.
private final class CollectedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var output = Data()
    private var error = Data()

    func store(_ data: Data, isOutput: Bool) {
        lock.lock()
        if isOutput { output = data } else { error = data }
        lock.unlock()
    }

    var texts: (String, String) {
        lock.lock()
        defer { lock.unlock() }
        return (String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }
}
