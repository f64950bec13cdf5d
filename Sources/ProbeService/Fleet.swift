import Foundation
import ProbeConfig
import ProbeEngine
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Rendezvous (highest random weight) hashing: every key gets a score per bucket, and the
/// bucket with the highest score owns it. Adding a bucket moves only the keys the new
/// bucket now wins, about 1/(N+1) of them, and no key is owned twice or by nobody.
/// The hash is fixed (FNV-1a, then a SplitMix64 finaliser), not Swift's per-process seeded
/// `Hasher`, so that every instance of a fleet, on any version, computes the same owners.
public enum RendezvousHash {
    /// 64-bit FNV-1a of the UTF-8 bytes.
    public static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// SplitMix64's finaliser: spreads every input bit over the output.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// The score of a key (its hash) in a bucket (its hash).
    @inline(__always)
    public static func score(key: UInt64, bucket: UInt64) -> UInt64 {
        mix(key ^ mix(bucket))
    }

    /// The bucket 0..<count that owns `key`.
    public static func owner(of key: String, buckets count: Int) -> Int {
        precondition(count > 0)
        let keyHash = fnv1a(key)
        var best = 0
        var bestScore: UInt64 = 0
        for bucket in 0..<count {
            let value = score(key: keyHash, bucket: UInt64(bucket))
            if bucket == 0 || value > bestScore { best = bucket; bestScore = value }
        }
        return best
    }

    /// The `k` candidates that score highest for `chooser` (each chooser its own stable
    /// subset; a candidate added or removed changes at most one pick of each subset).
    public static func top(_ k: Int, of candidates: [String], for chooser: String) -> [String] {
        guard k < candidates.count else { return candidates }
        let chooserHash = fnv1a(chooser)
        let ranked = candidates.map { ($0, score(key: fnv1a($0), bucket: chooserHash)) }
            .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        let chosen = Set(ranked.prefix(k).map(\.0))
        return candidates.filter { chosen.contains($0) }
    }
}

/// How this instance recognises itself in a peers list: by its addresses (every address
/// of its interfaces, from getifaddrs: a pod's IP, a node's IPs) and by its names (the
/// host name, its first label, and the `probe` name).
public struct LocalIdentity: Sendable, Equatable {
    public var names: Set<String>
    public var addresses: Set<IPAddress>

    public init(names: Set<String>, addresses: Set<IPAddress>) {
        self.names = Set(names.map(Self.canonicalName))
        self.addresses = addresses
    }

    /// This machine (or network namespace) as it is now.
    public static func current(probeName: String) -> LocalIdentity {
        var names: Set<String> = [probeName]
        var buffer = [CChar](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count - 1) == 0 {
            let host = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !host.isEmpty {
                names.insert(host)
                if let first = host.split(separator: ".").first { names.insert(String(first)) }
            }
        }
        return LocalIdentity(names: names, addresses: interfaceAddresses())
    }

    /// Whether `peer` (an address or a name, as a peers list writes it) is this instance.
    public func isSelf(_ peer: String) -> Bool {
        let bare = IPAddress.bareName(peer)
        if let address = IPAddress(parsing: bare) { return addresses.contains(address) }
        let name = Self.canonicalName(bare)
        if names.contains(name) { return true }
        // A short host name (a pod's) is this instance under any domain: netprobe-abc is
        // netprobe-abc.mesh.monitoring.svc.cluster.local.
        guard let label = name.split(separator: ".").first.map(String.init), label != name else { return false }
        return names.contains(label) && !names.contains { $0.hasPrefix(label + ".") && $0 != name }
    }

    static func canonicalName(_ name: String) -> String {
        var lowered = name.lowercased()
        if lowered.hasSuffix("."), lowered.count > 1 { lowered.removeLast() }
        return lowered
    }

    /// Every IPv4 and IPv6 address of every interface.
    static func interfaceAddresses() -> Set<IPAddress> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var addresses = Set<IPAddress>()
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let socketAddress = entry.pointee.ifa_addr else { continue }
            switch Int32(socketAddress.pointee.sa_family) {
            case AF_INET:
                var address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                guard inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil else { continue }
            case AF_INET6:
                var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { continue }
            default:
                continue
            }
            let string = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let address = IPAddress(parsing: string) { addresses.insert(address) }
        }
        return addresses
    }
}

/// What one instance of a fleet probes: its shard of the targets files, and its peers of
/// each mesh group. The plan's part of sharding and meshes: the config says who is who,
/// this says what follows.
public enum Fleet {
    /// The key a target is hashed by: its identity (kind, group, host, port).
    public static func shardKey(_ target: PlannedTarget, kind: String) -> String {
        "\(kind)\u{0}\(target.env)\u{0}\(target.host)\u{0}\(target.port.map(String.init) ?? "")"
    }

    /// `targets` restricted to `shard` (all of them without one).
    public static func select(_ targets: [PlannedTarget], kind: String, shard: ShardSettings?) -> [PlannedTarget] {
        guard let shard, shard.count > 1 else { return targets }
        return targets.filter { RendezvousHash.owner(of: shardKey($0, kind: kind), buckets: shard.count) == shard.index }
    }

    /// The peers of a mesh group this instance probes: every peer but itself, or the
    /// `peers_per_probe` of them that score highest for this probe's name.
    public static func peers(of group: MeshGroup, candidates: [String], probe: String, identity: LocalIdentity) -> [PlannedTarget] {
        let others = candidates.filter { !identity.isSelf($0) }
        let chosen = group.peersPerProbe.map { RendezvousHash.top($0, of: others, for: probe) } ?? others
        return chosen.map { PlannedTarget(env: group.env, host: $0) }
    }

    /// The ping targets of this instance: its shard of the file's hosts, then its peers of
    /// every mesh group (a peer is a target of its own, env = the mesh group, even where its
    /// host is also listed as a host of another group).
    /// - Parameter dnsPeers: the addresses of each `peers_dns` name, by name.
    public static func ping(_ configuration: NetprobeConfiguration, identity: LocalIdentity, dnsPeers: [String: [String]] = [:]) -> [PlannedTarget] {
        var targets = select(PlannedTarget.ping(configuration), kind: "ping", shard: configuration.shard)
        var seen = Set(targets)
        for group in configuration.meshGroups {
            let candidates: [String]
            switch group.source {
            case .file: candidates = group.peers
            case .dns(let name): candidates = dnsPeers[name] ?? []
            }
            for peer in peers(of: group, candidates: candidates, probe: configuration.probeName, identity: identity) where seen.insert(peer).inserted {
                targets.append(peer)
            }
        }
        return targets
    }

    /// The TCP targets of this instance: its shard.
    public static func tcp(_ configuration: NetprobeConfiguration) -> [PlannedTarget] {
        select(PlannedTarget.tcp(configuration), kind: "tcp", shard: configuration.shard)
    }
}
