/// Where the MTU of a path drops (`netprobe trace --mtu`, `run`'s `trace: mtu: true`).
///
/// Probes leave with don't-fragment set, at the largest size the path has let through so
/// far. A router that cannot forward one onto its next link answers "fragmentation
/// needed" (IPv4) / "packet too big" (IPv6) with that link's MTU; the probes go on at
/// that size, and the hop that answered is where the MTU drops.
public struct PathMTUDrop: Sendable, Equatable {
    /// The hop (TTL) of the router that answered "too big": the link after it carries less.
    public var hop: Int
    /// The router's address (the source of its answer).
    public var address: IPAddress
    /// The MTU the router named for its next link (or, when it named none or one no
    /// smaller than the probe, the next lower RFC 1191 plateau).
    public var mtu: Int

    public init(hop: Int, address: IPAddress, mtu: Int) {
        self.hop = hop
        self.address = address
        self.mtu = mtu
    }
}

/// A trace's path MTU, as the don't-fragment probes found it.
public struct PathMTUReport: Sendable, Equatable {
    /// The largest IP packet (headers included) that left this host: the size asked for
    /// (`-s`), or the outgoing interface's MTU when that is smaller or none was asked.
    public var firstSize: Int
    /// The outgoing interface's MTU when this host refused a larger probe (a local
    /// EMSGSIZE, the MTU from the error queue's `ee_info`); nil when none was refused.
    public var interfaceMTU: Int?
    /// Where the MTU drops, nearest hop first.
    public var drops: [PathMTUDrop]
    /// The largest size that reached the farthest hop that answered (the destination's,
    /// when it answered); nil when nothing answered.
    public var pathMTU: Int?

    public init(firstSize: Int, interfaceMTU: Int?, drops: [PathMTUDrop], pathMTU: Int?) {
        self.firstSize = firstSize
        self.interfaceMTU = interfaceMTU
        self.drops = drops
        self.pathMTU = pathMTU
    }

    /// The report's line: `path MTU 1500 -> 1400 at hop 2 (198.18.2.2), -> 1280 at hop 3
    /// (198.18.3.2)`; `path MTU 1500 (no drop)`.
    public var sentence: String {
        guard !drops.isEmpty else {
            return pathMTU == nil ? "path MTU unknown: no probe of up to \(firstSize) bytes was answered" : "path MTU \(firstSize) (no drop)"
        }
        return "path MTU \(firstSize) " + drops.map { "-> \($0.mtu) at hop \($0.hop) (\($0.address))" }.joined(separator: ", ")
    }
}
