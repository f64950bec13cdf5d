// Network namespaces of a test's own, for what loopback cannot play: a host that never
// answers (SilentNetwork), a real router between the prober and a host (OneRouterNetwork).
// Nothing sent inside them can leave the machine (no default route, no interface but
// loopback and the veth pairs between them). Needs root and iproute2 (CI has both).
//
//   let network = try SilentNetwork.make()            // deleted with the object
//   network.silentAddress                             // 198.18.211.7: routed, never answers
//   try network.inProber { try openSockets() }        // sockets that live in the prober namespace
//   try network.exec(["ping", "-c1", "127.0.0.1"])    // a command inside it
//   try network.http("http://127.0.0.1:PORT/metrics") // curl inside it: status and body

import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Two namespaces joined by a veth pair: "prober" (loopback up, a route for
/// 198.18.211.0/24 through the pair) and "router", whose blackhole route for that prefix
/// drops every packet without an answer: the silent host of the FIELD-NOTES recipe (a
/// blackhole route in the sender's own namespace would fail the send at once instead).
public final class SilentNetwork {
    public let prober: String
    public let router: String
    /// Routed into the router namespace and dropped there.
    public let silentPrefix = "198.18.211.0/24"
    public let silentAddress = "198.18.211.7"

    private init(prober: String, router: String) {
        self.prober = prober
        self.router = router
    }

    /// - Throws: a skip without root or `ip` (an XCTFail first in CI).
    public static func make() throws -> SilentNetwork {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (network namespaces); CI runs as root")
        }
        _ = try TestEnvironment.requireBinary("ip", package: "iproute2")
        let tag = "\(getpid() % 100_000)-\(UInt16.random(in: 0...UInt16.max))"
        let network = SilentNetwork(prober: "netprobe-silent-p-\(tag)", router: "netprobe-silent-r-\(tag)")
        let link = "nps\(UInt32.random(in: 0...0xFFFFFF))"
        for namespace in [network.prober, network.router] {
            try run(["ip", "netns", "add", namespace])
            try run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        }
        try run(["ip", "link", "add", link + "p", "netns", network.prober, "type", "veth", "peer", "name", link + "r", "netns", network.router])
        try run(["ip", "-n", network.prober, "addr", "add", "198.18.210.1/30", "dev", link + "p"])
        try run(["ip", "-n", network.router, "addr", "add", "198.18.210.2/30", "dev", link + "r"])
        try run(["ip", "-n", network.prober, "link", "set", link + "p", "up"])
        try run(["ip", "-n", network.router, "link", "set", link + "r", "up"])
        try run(["ip", "-n", network.prober, "route", "add", network.silentPrefix, "via", "198.18.210.2"])
        try run(["ip", "-n", network.router, "route", "add", "blackhole", network.silentPrefix])
        return network
    }

    deinit {
        for namespace in [prober, router] { _ = try? Self.run(["ip", "netns", "delete", namespace]) }
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(prober)")
    }

    /// Runs a command; throws when it exits non-zero.
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil) throws -> String {
        let (status, output) = try command(arguments, input: input)
        guard status == 0 else {
            throw NSError(domain: "SilentNetwork", code: Int(status), userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")): \(output)"])
        }
        return output
    }

    /// Runs a command to its end: exit status and output (stdout and stderr).
    public static func command(_ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// A command inside the prober namespace.
    @discardableResult
    public func exec(_ arguments: [String], input: String? = nil) throws -> String {
        try Self.run(["ip", "netns", "exec", prober] + arguments, input: input)
    }

    /// Names that resolve only inside the prober namespace (`ip netns exec` puts this file
    /// over /etc/hosts): one line per address, in this order.
    public func hosts(_ entries: [(address: String, name: String)]) throws {
        let directory = "/etc/netns/\(prober)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let text = "127.0.0.1 localhost\n" + entries.map { "\($0.address) \($0.name)\n" }.joined()
        try text.write(toFile: directory + "/hosts", atomically: true, encoding: .utf8)
    }

    /// One HTTP request from inside the prober namespace (curl): status and body. Status 0
    /// when curl got no answer.
    public func http(_ url: String, headers: [String: String] = [:], method: String = "GET", maximumSeconds: Double = 30) throws -> (status: Int, body: String) {
        _ = try TestEnvironment.requireBinary("curl", package: "curl")
        var arguments = ["ip", "netns", "exec", prober, "curl", "-sS", "-g", "-X", method, "--max-time", String(maximumSeconds), "-o", "-", "-w", "\n%{http_code}"]
        for (name, value) in headers { arguments += ["-H", "\(name): \(value)"] }
        let (_, output) = try Self.command(arguments + [url])
        guard let newline = output.lastIndex(of: "\n") else { return (0, output) }
        return (Int(output[output.index(after: newline)...]) ?? 0, String(output[..<newline]))
    }

    /// Runs `body` on a thread that has entered the prober namespace: sockets it opens live
    /// there, and keep living there when used from any other thread.
    public func inProber<T>(_ body: @escaping () throws -> T) throws -> T {
        try NetworkNamespace.inside(prober, body)
    }
}

/// What every namespace fixture needs: a thread inside a namespace (sockets of a test's own
/// there, e.g. a listener in a router chain's destination).
public enum NetworkNamespace {
    /// Runs `body` on a thread that has entered `namespace` (a name under /run/netns):
    /// sockets it opens live there, and keep living there when used from any other thread.
    public static func inside<T>(_ namespace: String, _ body: @escaping () throws -> T) throws -> T {
        let handOver = NamespaceHandOver<T>(body)
        let path = "/run/netns/\(namespace)"
        let thread = Thread {
            let outcome: Result<T, any Error>
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            if descriptor < 0 || Self.setns(descriptor, 0x4000_0000 /* CLONE_NEWNET */) != 0 {
                outcome = .failure(NSError(domain: "NetworkNamespace", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "setns into \(path) failed"]))
            } else {
                outcome = Result { try handOver.body() }
            }
            if descriptor >= 0 { close(descriptor) }
            handOver.condition.lock()
            handOver.result = outcome
            handOver.condition.signal()
            handOver.condition.unlock()
        }
        thread.start()
        handOver.condition.lock()
        while handOver.result == nil { handOver.condition.wait() }
        handOver.condition.unlock()
        return try handOver.result!.get()
    }

    /// setns(2), which Glibc's Swift module does not show (it needs _GNU_SOURCE).
    private static let setns: @convention(c) (Int32, Int32) -> Int32 = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { fatalError("glibc has no setns") }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
    }()
}

/// Three namespaces in a row, joined by veth pairs, IPv4 and IPv6: "prober", "router" (a
/// real Linux router: forwarding on, its ICMP errors not rate-limited, so it answers every
/// TTL-limited probe with time exceeded) and "host". A path of two hops from the prober:
/// the router, then the host. Nothing has a default route; nothing leaves the machine.
public final class OneRouterNetwork {
    public let prober: String
    public let router: String
    public let host: String
    /// The router's addresses on the prober's side (the source of its time exceeded).
    public let routerAddress4 = "198.18.220.2"
    public let routerAddress6 = "2001:db8:220::2"
    /// The host's addresses, two hops away.
    public let hostAddress4 = "198.18.221.2"
    public let hostAddress6 = "2001:db8:221::2"

    private init(tag: String) {
        prober = "netprobe-chain-p-\(tag)"
        router = "netprobe-chain-r-\(tag)"
        host = "netprobe-chain-h-\(tag)"
    }

    /// - Throws: a skip without root or `ip` (an XCTFail first in CI).
    /// - Parameter hostLinkMTU: the MTU of the router-host link (both ends); the
    ///   prober's link keeps 1500. A packet between the two with DF set gets the router's
    ///   "fragmentation needed" / "packet too big" naming it.
    public static func make(hostLinkMTU: Int? = nil) throws -> OneRouterNetwork {
        guard geteuid() == 0 else {
            if TestEnvironment.isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (network namespaces); CI runs as root")
        }
        _ = try TestEnvironment.requireBinary("ip", package: "iproute2")
        let chain = OneRouterNetwork(tag: "\(getpid() % 100_000)-\(UInt16.random(in: 0...UInt16.max))")
        func run(_ arguments: [String]) throws { try SilentNetwork.run(arguments) }
        for namespace in [chain.prober, chain.router, chain.host] {
            try run(["ip", "netns", "add", namespace])
            try run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            // No duplicate address detection: addresses (link-local ones too) usable at once.
            try run(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"])
        }
        try run(["ip", "netns", "exec", chain.router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                 "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=10000"])
        let link = "npc\(UInt32.random(in: 0...0xFFFFFF))"
        // Link "a": prober 198.18.220.1 / 2001:db8:220::1 - router .2; link "b": router
        // 198.18.221.1 / 2001:db8:221::1 - host .2.
        for (side, left, right, net4, net6) in [("a", chain.prober, chain.router, "198.18.220", "2001:db8:220"),
                                                ("b", chain.router, chain.host, "198.18.221", "2001:db8:221")] {
            try run(["ip", "link", "add", link + side + "l", "netns", left, "type", "veth", "peer", "name", link + side + "r", "netns", right])
            for (namespace, device, number) in [(left, link + side + "l", 1), (right, link + side + "r", 2)] {
                if side == "b", let hostLinkMTU { try run(["ip", "-n", namespace, "link", "set", device, "mtu", String(hostLinkMTU)]) }
                try run(["ip", "-n", namespace, "addr", "add", "\(net4).\(number)/24", "dev", device])
                try run(["ip", "-n", namespace, "addr", "add", "\(net6)::\(number)/64", "dev", device, "nodad"])
                try run(["ip", "-n", namespace, "link", "set", device, "up"])
            }
        }
        try run(["ip", "-n", chain.prober, "route", "add", "198.18.221.0/24", "via", "198.18.220.2"])
        try run(["ip", "-n", chain.prober, "-6", "route", "add", "2001:db8:221::/64", "via", "2001:db8:220::2"])
        try run(["ip", "-n", chain.host, "route", "add", "198.18.220.0/24", "via", "198.18.221.1"])
        try run(["ip", "-n", chain.host, "-6", "route", "add", "2001:db8:220::/64", "via", "2001:db8:221::1"])
        return chain
    }

    deinit {
        for namespace in [prober, router, host] { _ = try? SilentNetwork.run(["ip", "netns", "delete", namespace]) }
    }

    /// Runs `body` on a thread inside the prober namespace (see `NetworkNamespace.inside`).
    public func inProber<T>(_ body: @escaping () throws -> T) throws -> T {
        try NetworkNamespace.inside(prober, body)
    }

    /// Runs `body` on a thread inside the host namespace.
    public func inHost<T>(_ body: @escaping () throws -> T) throws -> T {
        try NetworkNamespace.inside(host, body)
    }
}

/// What `NetworkNamespace.inside`'s thread is given and hands back: written once by it, read after it
/// signalled.
private final class NamespaceHandOver<T>: @unchecked Sendable {
    let condition = NSCondition()
    let body: () throws -> T
    var result: Result<T, any Error>?

    init(_ body: @escaping () throws -> T) {
        self.body = body
    }
}
