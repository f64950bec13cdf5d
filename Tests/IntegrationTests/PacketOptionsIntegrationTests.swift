import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// -Q/--tos, -S/--source and -I/--interface on real kernels, in namespaces of the test's
/// own (nothing leaves them):
///
///     host --A (198.18.20.0/24, 2001:db8:20::/64)-- routerA --(198.18.22.0/24)-- destination
///          --B (198.18.21.0/24, 2001:db8:21::/64)-- routerB --(198.18.23.0/24)--/
///
/// The destination holds 198.18.30.1 and 2001:db8:30::1 and answers each of the host's two
/// networks through its own router. The host's main route to it goes via A; a second main
/// route via B has a higher metric (what `-I B` needs: a route through B), and `ip rule
/// from <B's address> table 100` routes B's address via B. The routers' nftables counters
/// say which way packets went; an AF_PACKET socket in the host sees the classes sent.
final class PacketOptionsIntegrationTests: XCTestCase {
    final class Network {
        let tag = "\(getpid() % 100_000)-\(UInt16.random(in: 0...UInt16.max))"
        var host: String { "np-knobs-h-\(tag)" }
        var routerA: String { "np-knobs-a-\(tag)" }
        var routerB: String { "np-knobs-b-\(tag)" }
        var destination: String { "np-knobs-d-\(tag)" }
        let interfaceA = "knobsA"
        let interfaceB = "knobsB"
        let target4 = "198.18.30.1"
        let target6 = "2001:db8:30::1"
        let hostA4 = "198.18.20.1", hostB4 = "198.18.21.1"
        let hostA6 = "2001:db8:20::1", hostB6 = "2001:db8:21::1"

        func run(_ arguments: [String], input: String? = nil) throws {
            let result = try Harness.run(arguments, input: input)
            guard result.status == 0 else {
                throw NSError(domain: "PacketOptionsIntegrationTests", code: Int(result.status), userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")): \(result.standardError)"])
            }
        }

        func ip(_ namespace: String, _ arguments: String) throws {
            try run(["ip", "-n", namespace] + arguments.split(separator: " ").map(String.init))
        }

        func build() throws {
            for namespace in [host, routerA, routerB, destination] {
                try run(["ip", "netns", "add", namespace])
                try ip(namespace, "link set lo up")
                try run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                         "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])
            }
            // host <-> routers
            try run(["ip", "link", "add", interfaceA, "netns", host, "type", "veth", "peer", "name", "toHost", "netns", routerA])
            try run(["ip", "link", "add", interfaceB, "netns", host, "type", "veth", "peer", "name", "toHost", "netns", routerB])
            try run(["ip", "link", "add", "toDest", "netns", routerA, "type", "veth", "peer", "name", "viaA", "netns", destination])
            try run(["ip", "link", "add", "toDest", "netns", routerB, "type", "veth", "peer", "name", "viaB", "netns", destination])
            try ip(host, "addr add \(hostA4)/24 dev \(interfaceA)")
            try ip(host, "addr add \(hostB4)/24 dev \(interfaceB)")
            try ip(host, "-6 addr add \(hostA6)/64 dev \(interfaceA) nodad")
            try ip(host, "-6 addr add \(hostB6)/64 dev \(interfaceB) nodad")
            for router in [routerA, routerB] {
                let (net, net6, far, far6) = router == routerA ? ("20", "20", "22", "22") : ("21", "21", "23", "23")
                try ip(router, "addr add 198.18.\(net).2/24 dev toHost")
                try ip(router, "-6 addr add 2001:db8:\(net6)::2/64 dev toHost nodad")
                try ip(router, "addr add 198.18.\(far).1/24 dev toDest")
                try ip(router, "-6 addr add 2001:db8:\(far6)::1/64 dev toDest nodad")
                try ip(router, "link set toHost up")
                try ip(router, "link set toDest up")
                try ip(router, "route add \(target4)/32 via 198.18.\(far).2")
                try ip(router, "-6 route add \(target6)/128 via 2001:db8:\(far6)::2")
                // Ground truth: what this router forwards towards the destination and back.
                try run(["ip", "netns", "exec", router, "nft", "-f", "-"], input: """
                    table inet knobs {
                        counter toward {}
                        counter back {}
                        chain forward {
                            type filter hook forward priority 0; policy accept;
                            ip daddr \(target4) counter name toward
                            ip6 daddr \(target6) counter name toward
                            ip saddr \(target4) counter name back
                            ip6 saddr \(target6) counter name back
                        }
                    }
                    """)
            }
            try ip(destination, "addr add 198.18.22.2/24 dev viaA")
            try ip(destination, "addr add 198.18.23.2/24 dev viaB")
            try ip(destination, "-6 addr add 2001:db8:22::2/64 dev viaA nodad")
            try ip(destination, "-6 addr add 2001:db8:23::2/64 dev viaB nodad")
            try ip(destination, "addr add \(target4)/32 dev lo")
            try ip(destination, "-6 addr add \(target6)/128 dev lo nodad")
            for link in ["viaA", "viaB"] { try ip(destination, "link set \(link) up") }
            try ip(destination, "route add 198.18.20.0/24 via 198.18.22.1")
            try ip(destination, "route add 198.18.21.0/24 via 198.18.23.1")
            try ip(destination, "-6 route add 2001:db8:20::/64 via 2001:db8:22::1")
            try ip(destination, "-6 route add 2001:db8:21::/64 via 2001:db8:23::1")
            for link in [interfaceA, interfaceB] { try ip(host, "link set \(link) up") }
            try ip(host, "route add \(target4)/32 via 198.18.20.2")
            try ip(host, "route add \(target4)/32 via 198.18.21.2 metric 200")
            try ip(host, "-6 route add \(target6)/128 via 2001:db8:20::2")
            try ip(host, "-6 route add \(target6)/128 via 2001:db8:21::2 metric 200")
            try ip(host, "rule add from \(hostB4) table 100")
            try ip(host, "route add \(target4)/32 via 198.18.21.2 table 100")
            try ip(host, "-6 rule add from \(hostB6) table 100")
            try ip(host, "-6 route add \(target6)/128 via 2001:db8:21::2 table 100")
            // Both families answer before any test counts (IPv6 neighbours, routes).
            for target in [target4, target6] {
                let answered = TestEnvironment.eventually(within: 30, every: 0.05) {
                    ((try? Harness.run(["ip", "netns", "exec", host, "ping", "-n", "-q", "-c", "1", "-W", "1", target]))?.status ?? 1) == 0
                }
                guard answered else { throw NSError(domain: "PacketOptionsIntegrationTests", code: 2, userInfo: [NSLocalizedDescriptionKey: "\(target) never answered"]) }
            }
        }

        deinit {
            for namespace in [host, routerA, routerB, destination] { _ = try? Harness.run(["ip", "netns", "delete", namespace]) }
        }

        /// A router's counter: packets toward the destination or back from it.
        func packets(_ router: String, _ counter: String) throws -> Int {
            let result = try Harness.run(["ip", "netns", "exec", router, "nft", "list", "counter", "inet", "knobs", counter])
            guard let range = result.standardOutput.range(of: #"packets (\d+)"#, options: .regularExpression) else { return -1 }
            return Int(result.standardOutput[range].split(separator: " ")[1]) ?? -1
        }

        func resetCounters() throws {
            for router in [routerA, routerB] {
                _ = try Harness.run(["ip", "netns", "exec", router, "nft", "reset", "counters", "table", "inet", "knobs"])
            }
        }

        /// netprobe inside the host namespace.
        func netprobe(_ arguments: [String], timeout: TimeInterval = 60) throws -> CommandResult {
            try Harness.run(["ip", "netns", "exec", host, Harness.netprobePath] + arguments, timeout: timeout)
        }
    }

    static func makeNetwork() throws -> Network {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "nft", "ping"])
        let network = Network()
        try network.build()
        return network
    }

    // MARK: acceptance 2: the interface and the source address choose the way out and back

    @discardableResult
    func checkLeavesAndReturnsThroughB(_ network: Network, _ arguments: [String], expectedProbes: Int, file: StaticString = #filePath, line: UInt = #line) throws -> CommandResult {
        try network.resetCounters()
        let run = try network.netprobe(arguments)
        XCTAssertTrue([0, 1].contains(run.status), "\(arguments): status \(run.status)\n\(run.standardError)", file: file, line: line)
        XCTAssertEqual(try network.packets(network.routerA, "toward"), 0, "\(arguments): nothing leaves through A", file: file, line: line)
        XCTAssertEqual(try network.packets(network.routerA, "back"), 0, "\(arguments): nothing returns through A", file: file, line: line)
        XCTAssertGreaterThanOrEqual(try network.packets(network.routerB, "toward"), expectedProbes, "\(arguments): the probes leave through B", file: file, line: line)
        XCTAssertGreaterThanOrEqual(try network.packets(network.routerB, "back"), 1, "\(arguments): answers return through B", file: file, line: line)
        return run
    }

    func testInterfaceAndSourceSendPingTCPAndTraceThroughTheSecondUplink() throws {
        let network = try Self.makeNetwork()
        // Without options everything goes via A (the main route): the ground truth works.
        try network.resetCounters()
        let plain = try network.netprobe(["ping", "-c", "3", "-i", "50ms", "-q", network.target4])
        XCTAssertEqual(plain.status, 0, plain.standardError)
        XCTAssertEqual(try network.packets(network.routerA, "toward"), 3)
        XCTAssertEqual(try network.packets(network.routerB, "toward"), 0)

        for (target, source) in [(network.target4, network.hostB4), (network.target6, network.hostB6)] {
            for choice in [["-I", network.interfaceB], ["-S", source]] {
                try checkLeavesAndReturnsThroughB(network, ["ping", "-c", "3", "-i", "50ms", "--json"] + choice + [target], expectedProbes: 3)
                let ping = try network.netprobe(["ping", "-c", "3", "-i", "50ms", "--json"] + choice + [target])
                let object = try XCTUnwrap(ping.jsonLines().first)
                XCTAssertEqual(object["received"] as? Int, 3, "\(choice) \(target): every reply matched\n\(ping.standardError)")
                XCTAssertEqual(object["timestamp_source"] as? String, "kernel", "kernel stamps with \(choice)")
                if choice[0] == "-I" { XCTAssertEqual(object["interface"] as? String, network.interfaceB) } else { XCTAssertEqual(object["source"] as? String, source) }

                let tcpTarget = target.contains(":") ? "[\(target)]:8080" : "\(target):8080"
                try checkLeavesAndReturnsThroughB(network, ["tcp", "-c", "2", "-i", "50ms", "--json"] + choice + [tcpTarget], expectedProbes: 2)
                for trace in [[target], [tcpTarget]] {
                    // Router B answers TTL 1 itself; the probes of TTL 2 are the ones it forwards.
                    let run = try checkLeavesAndReturnsThroughB(network, ["trace", "-c", "1", "-i", "100ms", "-W", "500ms", "-m", "4", "--json"] + choice + trace,
                                                                expectedProbes: 1)
                    let (viaB, viaA) = target.contains(":") ? ("2001:db8:21::2", "2001:db8:20::2") : ("198.18.21.2", "198.18.20.2")
                    XCTAssertTrue(run.standardOutput.contains("\"\(viaB)\""), "\(choice) \(trace): hop 1 is router B\n\(run.standardOutput)")
                    XCTAssertFalse(run.standardOutput.contains("\"\(viaA)\""), "\(choice) \(trace): router A is not on the path")
                    let object = try XCTUnwrap(run.jsonLines().first)
                    XCTAssertEqual(object["reached"] as? Bool, true, "\(choice) \(trace)")
                }
            }
        }
    }

    /// A reply to A's address for a probe that chose B's: the echo reply of a probe sent
    /// from B, forged by the destination towards A (nftables rewrites its destination), is
    /// not counted: the probe is lost, not received.
    func testEchoReplyToAnotherOfOurAddressesIsNotCountedForAProbeFromTheChosenSource() throws {
        let network = try Self.makeNetwork()
        // In the destination: replies to B's address leave rewritten to A's (a forged
        // reply as far as the host can tell), so they come back through A to A's address.
        // A route chain, stateless: NAT would not touch a reply of a tracked echo.
        let forge = try Harness.run(["ip", "netns", "exec", network.destination, "nft", "-f", "-"], input: """
            table ip forge {
                chain out {
                    type route hook output priority 0; policy accept;
                    icmp type echo-reply ip daddr \(network.hostB4) ip daddr set \(network.hostA4)
                }
            }
            """)
        XCTAssertEqual(forge.status, 0, forge.standardError)
        let run = try network.netprobe(["ping", "-c", "2", "-i", "50ms", "-W", "300ms", "--json", "-v", "-S", network.hostB4, network.target4])
        let object = try XCTUnwrap(run.jsonLines().first, run.standardError)
        XCTAssertEqual(object["sent"] as? Int, 2)
        XCTAssertEqual(object["received"] as? Int, 0, "a reply to A's address does not answer a probe sent from B\n\(run.standardError)")
        XCTAssertTrue(run.standardError.contains("wrong_destination"), "the replies are ignored as wrong_destination:\n\(run.standardError)")
    }

    // MARK: acceptance 1: the class asked for is the class on the wire

    func testTheClassAskedForIsOnTheWireForEchoSYNsAndPathProbes() throws {
        let network = try Self.makeNetwork()
        let capture = try OutgoingCapture(namespace: network.host)
        for target in [network.target4, network.target6] {
            let tcpTarget = target.contains(":") ? "[\(target)]:8080" : "\(target):8080"
            let version = target.contains(":") ? 6 : 4
            let echoRequest = version == 4 ? 8 : 128
            let icmp = version == 4 ? 1 : 58
            _ = capture.outgoing()
            let ping = try network.netprobe(["ping", "-c", "2", "-i", "50ms", "-Q", "ef", target])
            XCTAssertEqual(ping.status, 0, ping.standardError)
            let echoes = capture.outgoing().filter { $0.version == version && $0.proto == icmp && $0.type == echoRequest }
            XCTAssertEqual(echoes.count, 2)
            XCTAssertEqual(Set(echoes.map(\.tos)), [0xb8], "ping -Q ef: IPv\(version) echo requests carry 0xb8")

            _ = try network.netprobe(["tcp", "-c", "2", "-i", "50ms", "-Q", "af41", tcpTarget])
            let syns = capture.outgoing().filter { $0.version == version && $0.proto == 6 && $0.tcpFlags & 0x12 == 0x02 }
            XCTAssertEqual(syns.count, 2)
            XCTAssertEqual(Set(syns.map(\.tos)), [0x88], "tcp -Q af41: IPv\(version) SYNs carry 0x88")

            for trace in [target, tcpTarget] {
                _ = try network.netprobe(["trace", "-c", "1", "-W", "500ms", "-m", "3", "-Q", "cs6", trace])
                let probes = capture.outgoing().filter { $0.version == version && (trace == target ? ($0.proto == icmp && $0.type == echoRequest) : ($0.proto == 6 && $0.tcpFlags & 0x12 == 0x02)) }
                XCTAssertGreaterThanOrEqual(probes.count, 2, "trace \(trace): TTL-limited probes seen")
                XCTAssertEqual(Set(probes.map(\.tos)), [0xc0], "trace -Q cs6 \(trace): IPv\(version) probes carry 0xc0")
            }
            // Without -Q, class 0 (the default stays 0).
            _ = try network.netprobe(["ping", "-c", "1", target])
            XCTAssertEqual(Set(capture.outgoing().filter { $0.version == version && $0.proto == icmp && $0.type == echoRequest }.map(\.tos)), [0])
        }
    }

    // MARK: bad arguments: exit 3

    func testImpossibleOptionsAreRefusedWithExitThree() throws {
        try Harness.requireRoot()
        try Harness.withNamespace { namespace in
            func netprobe(_ arguments: [String]) throws -> CommandResult {
                try Harness.run(["ip", "netns", "exec", namespace, Harness.netprobePath] + arguments)
            }
            let cases: [([String], String)] = [
                (["ping", "-Q", "0xb9", "127.0.0.1"], "0xb9 sets ECN bits; did you mean 0xb8 (ef)?"),
                (["tcp", "--tos", "af44", "127.0.0.1:80"], "is not a TOS value"),
                (["ping", "-S", "198.18.99.1", "127.0.0.1"], "source address 198.18.99.1 is not an address of this host"),
                (["trace", "-S", "192.0.2.300", "127.0.0.1"], "is not an IP address"),
                (["ping", "-S", "127.0.0.1", "::1"], "cannot send to ::1"),
                (["tcp", "-S", "::1", "127.0.0.1:80"], "cannot send to 127.0.0.1"),
                (["ping", "-6", "-S", "127.0.0.1", "::1"], "-6 asks for the other family"),
                (["check", "-I", "nosuch0", "--duration", "1s", "127.0.0.1"], "interface nosuch0 does not exist"),
                (["trace", "-I", "nosuch0", "127.0.0.1"], "interface nosuch0 does not exist"),
            ]
            for (arguments, message) in cases {
                let run = try netprobe(arguments)
                XCTAssertEqual(run.status, 3, "\(arguments): exit 3\n\(run.standardError)")
                XCTAssertTrue(run.standardError.contains(message), "\(arguments): \(run.standardError)")
            }
            let help = try Harness.run([Harness.netprobePath, "ping", "--help"])
            XCTAssertTrue(help.standardOutput.contains("--tos"), help.standardOutput)
            XCTAssertTrue(help.standardOutput.contains("Default 0"), help.standardOutput)
        }
    }
}
