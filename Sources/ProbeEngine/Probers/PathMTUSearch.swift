import ProbeResults

/// The don't-fragment side of a trace (`PathProbeConfiguration.discoversMTU`, tracepath's
/// way): per target, the IP packet size its echo probes leave at now, the largest size
/// answered at each hop, and where the MTU dropped.
///
/// Probes start at the size asked for (payload plus headers), or at the largest IP packet (65535 bytes): the host
/// refuses what its outgoing interface cannot carry with EMSGSIZE and that interface's MTU
/// (IP_RECVERR's `ee_info`), so the first probe that leaves is at the interface's MTU. A
/// router that cannot forward a probe onto its next link answers "fragmentation needed" /
/// "packet too big" naming that link's MTU: the probes of the TTLs beyond that router go
/// on at that size (those up to it keep theirs, so each hop is asked the largest size the
/// links before it carry, whatever order the answers come in), and the probe is sent
/// again at once (it is not counted as sent, nor as lost). A router that names no MTU, or
/// one no smaller than the probe, gets the next lower RFC 1191 plateau. Each lowering is
/// strictly smaller, so a hop is re-probed a bounded number of times. Pure state: the
/// sockets stay in `PathRun`.
struct PathMTUSearch {
    struct Target {
        let family: AddressFamily
        /// The size asked for (`-s`); nil: the largest, the interface names its MTU.
        let requested: Int?
        /// The largest size this host sends (what was asked, or the interface's MTU).
        var size: Int
        /// [ttl - 1]: the largest size answered (time exceeded, the destination's reply); 0 none.
        var passed: [Int]
        /// [ttl - 1]: "too big" answers.
        var tooBig: [Int]
        var drops: [PathMTUDrop] = []
        var interfaceMTU: Int?
    }

    /// nil for targets whose MTU is not searched (TCP traces, no address, or no `--mtu`).
    private(set) var targets: [Target?]

    /// The largest IP packet.
    static let largestSize = 65_535
    /// RFC 1191's plateau table, for routers that name no MTU.
    static let plateaus = [32_000, 17_914, 8_166, 4_352, 2_002, 1_492, 1_006, 508, 296, 68]

    /// IP header bytes of a probe (no options, no extension headers).
    static func ipHeaderLength(_ family: AddressFamily) -> Int { family == .ipv4 ? 20 : 40 }

    /// The smallest probe that still carries the path payload (cookie, probe number, flow word).
    static func smallestSize(_ family: AddressFamily) -> Int {
        ipHeaderLength(family) + ICMPEcho.headerLength + PathPacket.minimumPayloadLength
    }

    /// The smallest MTU a "too big" may lower probes to: IPv6 links carry at least 1280
    /// bytes (RFC 8200), IPv4 ones 68 (RFC 791).
    static func smallestMTU(_ family: AddressFamily) -> Int { family == .ipv4 ? 68 : 1280 }

    init(targets: [ProbeTarget], configuration: PathProbeConfiguration) {
        self.targets = targets.map { target in
            guard configuration.discoversMTU, target.port == nil, let family = target.address?.family else { return nil }
            let requested = configuration.mtuStartPayloadLength.map { $0 + Self.ipHeaderLength(family) + ICMPEcho.headerLength }
            let size = min(requested ?? Self.largestSize, Self.largestSize)
            return Target(family: family, requested: requested, size: size,
                          passed: Array(repeating: 0, count: configuration.maxHops), tooBig: Array(repeating: 0, count: configuration.maxHops))
        }
    }

    /// The size `index`'s next probe with `ttl` leaves at: the smallest MTU named by a
    /// router before that TTL, at most what this host sends; nil when its MTU is not searched.
    func size(of index: Int, ttl: Int) -> Int? {
        guard let target = targets[index] else { return nil }
        return target.drops.lazy.filter { $0.hop < ttl }.map(\.mtu).min().map { min($0, target.size) } ?? target.size
    }

    /// The echo payload of a probe of `size` bytes.
    static func payloadLength(size: Int, family: AddressFamily) -> Int {
        size - ipHeaderLength(family) - ICMPEcho.headerLength
    }

    /// This host refused a probe of `size` (EMSGSIZE); `interfaceMTU` is what the error
    /// queue named.
    /// - Returns: true when the probe is to be sent again (smaller).
    mutating func refused(_ index: Int, size: Int, interfaceMTU: Int?) -> Bool {
        guard var target = targets[index] else { return false }
        defer { targets[index] = target }
        if let interfaceMTU { target.interfaceMTU = min(target.interfaceMTU ?? interfaceMTU, interfaceMTU) }
        guard let lower = Self.lower(size, named: interfaceMTU, family: target.family) else { return false }
        target.size = min(target.size, lower)
        return true
    }

    /// A router answered "too big" for a probe of `size` sent with `ttl`.
    /// - Parameters:
    ///   - quotedTTL: the TTL the router quotes: routers check the MTU before they
    ///     decrement it, so the router is hop `ttl - quotedTTL + 1`.
    ///   - sourceHop: the hop the router's address answered at, for a quote that names no
    ///     plausible hop.
    /// - Returns: true when the probe is to be sent again (smaller).
    mutating func tooBig(_ index: Int, ttl: Int, size: Int, quotedTTL: Int, from source: IPAddress, named mtu: Int?, sourceHop: Int?) -> Bool {
        guard var target = targets[index] else { return false }
        defer { targets[index] = target }
        target.tooBig[ttl - 1] += 1
        guard let lower = Self.lower(size, named: mtu, family: target.family) else { return false }
        let quotedHop = ttl - quotedTTL + 1
        // Before the probe's own TTL (a router answers "too big" only for what it forwards):
        // the re-sent probe is then smaller.
        let hop = min(ttl - 1, max(0, (1..<ttl).contains(quotedHop) ? quotedHop : sourceHop ?? ttl - 1))
        if let known = target.drops.firstIndex(where: { $0.hop == hop }) {
            target.drops[known].mtu = min(target.drops[known].mtu, lower)
        } else {
            target.drops.append(PathMTUDrop(hop: hop, address: source, mtu: lower))
            target.drops.sort { $0.hop < $1.hop }
        }
        return true
    }

    /// A probe of `size` sent with `ttl` was answered (time exceeded, or the destination's reply).
    mutating func passed(_ index: Int, ttl: Int, size: Int) {
        guard targets[index] != nil else { return }
        targets[index]!.passed[ttl - 1] = max(targets[index]!.passed[ttl - 1], size)
    }

    /// The size below `size` to try next: the MTU named when it is smaller and possible,
    /// else the next lower plateau; nil when nothing smaller can carry a probe.
    static func lower(_ size: Int, named: Int?, family: AddressFamily) -> Int? {
        let floor = max(smallestSize(family), smallestMTU(family))
        if let named, named < size, named >= floor { return named }
        if let plateau = plateaus.first(where: { $0 < size }), plateau >= floor { return plateau }
        return size > floor ? floor : nil
    }

    /// Fills in each hop's `mtu` and `tooBig`, and returns the target's report.
    /// - Parameter endTTL: the smallest TTL at which the path ended (the destination
    ///   answers every TTL from there on: its hop takes the largest of them).
    func report(_ index: Int, hops: inout [HopReport], endTTL: Int?) -> PathMTUReport? {
        guard let target = targets[index] else { return nil }
        for position in hops.indices {
            let ttl = hops[position].hop
            let answered = ttl == endTTL ? target.passed[(ttl - 1)...].max() ?? 0 : target.passed[ttl - 1]
            hops[position].mtu = answered > 0 ? answered : nil
            hops[position].tooBig = ttl == endTTL ? target.tooBig[(ttl - 1)...].reduce(0, +) : target.tooBig[ttl - 1]
        }
        let firstSize = min(target.requested ?? Self.largestSize, target.interfaceMTU ?? Self.largestSize)
        return PathMTUReport(firstSize: firstSize, interfaceMTU: target.interfaceMTU, drops: target.drops, pathMTU: hops.last { $0.mtu != nil }?.mtu)
    }
}
