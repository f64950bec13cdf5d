import Foundation
@testable import NetSim
import ProbeEngine
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Routing loops and refusals on the wire: echo requests with chosen TTLs from raw sockets
/// inside the simulator's namespace, and the ICMP the kernel hands back, IPv4 and IPv6.
/// The simulator's summary is the ground truth of what each router sent.
final class LoopAndUnreachablePacketTests: XCTestCase {
    /// A raw ICMP (ICMPv6) socket inside the simulator's namespace: echo requests out with a
    /// TTL of the caller's choice, and whatever ICMP comes back about them.
    final class ProbeSocket {
        let descriptor: Int32
        let isIPv6: Bool
        let identifier = UInt16(truncatingIfNeeded: getpid()) ^ 0x5a27

        /// What came back for one of our echo requests.
        struct Answer: Equatable {
            /// Who sent it.
            var source: String
            var type: UInt8
            var code: UInt8
            /// The sequence number of the request: echoed, or quoted in an error.
            var sequence: UInt16
            /// The destination of the quoted request (nil for an echo reply).
            var quotedDestination: String?
        }

        init(namespace: String, ipv6: Bool) throws {
            isIPv6 = ipv6
            descriptor = try NetworkNamespace.socket(inNamespace: namespace, domain: ipv6 ? AF_INET6 : AF_INET, type: Int32(SOCK_RAW.rawValue),
                                                     protocol: ipv6 ? Int32(IPPROTO_ICMPV6) : Int32(IPPROTO_ICMP))
        }

        deinit { close(descriptor) }

        /// Sends one echo request to `address` with this TTL / hop limit.
        func send(to address: String, ttl: Int32, sequence: UInt16) throws {
            var hops = ttl
            let set = isIPv6 ? setsockopt(descriptor, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, &hops, 4) : setsockopt(descriptor, Int32(IPPROTO_IP), IP_TTL, &hops, 4)
            XCTAssertEqual(set, 0, "setting the TTL: errno \(errno)")
            var message: [UInt8] = [isIPv6 ? 128 : 8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff), UInt8(sequence >> 8), UInt8(sequence & 0xff)]
            message += Array("netsim-27".utf8)
            if !isIPv6 {
                // ICMPv6 checksums are the kernel's (it knows the pseudo-header); ICMPv4's are ours.
                let sum = SimulatedPacket.checksum(message)
                message[2] = UInt8(sum >> 8)
                message[3] = UInt8(sum & 0xff)
            }
            let sent: Int
            if isIPv6 {
                var socketAddress = sockaddr_in6()
                socketAddress.sin6_family = sa_family_t(AF_INET6)
                XCTAssertEqual(inet_pton(AF_INET6, address, &socketAddress.sin6_addr), 1, address)
                sent = withUnsafePointer(to: &socketAddress) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(descriptor, message, message.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
                }
            } else {
                var socketAddress = sockaddr_in()
                socketAddress.sin_family = sa_family_t(AF_INET)
                XCTAssertEqual(inet_pton(AF_INET, address, &socketAddress.sin_addr), 1, address)
                sent = withUnsafePointer(to: &socketAddress) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(descriptor, message, message.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
            guard sent == message.count else { throw SystemCallError(call: "sendto \(address)", errno: errno) }
        }

        /// Every answer about our requests that has arrived (never waits).
        func receive() -> [Answer] {
            var answers: [Answer] = []
            var buffer = [UInt8](repeating: 0, count: 2048)
            while true {
                var from = sockaddr_in6()
                var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                let count = withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length) }
                }
                guard count > 0 else { return answers }
                let packet = Array(buffer[0..<count])
                if let answer = isIPv6 ? parse6(packet, from: from) : parse4(packet) { answers.append(answer) }
            }
        }

        /// IPv4: the IP header, the ICMP message, and for an error the quoted request.
        private func parse4(_ packet: [UInt8]) -> Answer? {
            let offset = Int(packet[0] & 0x0f) * 4
            guard packet.count >= offset + 8 else { return nil }
            let source = packet.withUnsafeBytes { SimulatedAddress($0, offset: 12, isIPv6: false) }.description
            let (type, code) = (packet[offset], packet[offset + 1])
            if type == 0 { return mine(packet, at: offset) ? Answer(source: source, type: type, code: code, sequence: word(packet, offset + 6)) : nil }
            let quoted = offset + 8
            guard packet.count >= quoted + 20 else { return nil }
            let request = quoted + Int(packet[quoted] & 0x0f) * 4
            guard packet.count >= request + 8, packet[request] == 8, mine(packet, at: request) else { return nil }
            let destination = packet.withUnsafeBytes { SimulatedAddress($0, offset: quoted + 16, isIPv6: false) }.description
            return Answer(source: source, type: type, code: code, sequence: word(packet, request + 6), quotedDestination: destination)
        }

        /// IPv6: the socket gives the ICMPv6 message only; the source comes with it.
        private func parse6(_ message: [UInt8], from: sockaddr_in6) -> Answer? {
            guard message.count >= 8 else { return nil }
            var address = from.sin6_addr
            let source = withUnsafeBytes(of: &address) { SimulatedAddress($0, offset: 0, isIPv6: true) }.description
            let (type, code) = (message[0], message[1])
            if type == 129 { return mine(message, at: 0) ? Answer(source: source, type: type, code: code, sequence: word(message, 6)) : nil }
            guard type < 128, message.count >= 8 + 40 + 8, message[48] == 128, mine(message, at: 48) else { return nil }
            let destination = message.withUnsafeBytes { SimulatedAddress($0, offset: 8 + 24, isIPv6: true) }.description
            return Answer(source: source, type: type, code: code, sequence: word(message, 54), quotedDestination: destination)
        }

        private func mine(_ bytes: [UInt8], at offset: Int) -> Bool { word(bytes, offset + 4) == identifier }
        private func word(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
    }

    func simulate<Value>(_ rules: [String], _ body: (String, SimulatedNetwork.Handle) throws -> Value) throws -> (value: Value, summary: SimulationSummary) {
        try SimulatorHarness.requirePrivileges()
        return try SimulatedNetwork.run(rules: rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "27"], body)
    }

    /// Collects answers until `done` says there are enough (or 30 s passed: a lost answer fails the test instead of hanging it).
    func collect(_ sockets: [ProbeSocket], until done: ([ProbeSocket.Answer]) -> Bool) -> [ProbeSocket.Answer] {
        var answers: [ProbeSocket.Answer] = []
        TestEnvironment.eventually(within: 30) {
            for socket in sockets { answers += socket.receive() }
            return done(answers)
        }
        return answers
    }

    func testEachUnreachableCodeLeavesARouterOrTheHostWithItsICMPTypeAndCodeOnIPv4AndIPv6() throws {
        // (code, net number, v4 type/code, v6 type/code); ICMPv6 has no protocol unreachable.
        let codes: [(String, Int, [UInt8], [UInt8]?)] = [
            ("net", 0, [3, 0], [1, 0]), ("host", 1, [3, 1], [1, 3]), ("protocol", 2, [3, 2], nil), ("port", 3, [3, 3], [1, 4]), ("prohibited", 4, [3, 13], [1, 1]),
        ]
        func routers(_ v6: Bool, _ net: Int) -> [String] { (1...3).map { v6 ? "2001:db8:17\(net)::\($0)" : "198.18.17\(net).\($0)" } }
        func target(_ v6: Bool, _ net: Int) -> String { v6 ? "2001:db8:7\(net)::9" : "198.18.7\(net).9" }
        var rules: [String] = []
        for (code, net, _, v6Code) in codes {
            for v6 in [false, true] where !(v6 && v6Code == nil) {
                rules.append("\(v6 ? "2001:db8:7\(net)::/48" : "198.18.7\(net).0/24") path=\(routers(v6, net).joined(separator: ",")) unreachable=code:\(code),at-hop:2")
            }
        }
        // The host itself refuses, behind one router.
        rules += ["198.18.79.0/24 path=198.18.179.1 unreachable=prohibited", "2001:db8:79::/48 path=2001:db8:179::1 unreachable=prohibited"]

        let (answers, summary) = try simulate(rules) { namespace, _ in
            let sockets = [try ProbeSocket(namespace: namespace, ipv6: false), try ProbeSocket(namespace: namespace, ipv6: true)]
            var expected = 0
            for (_, net, _, v6Code) in codes {
                for v6 in [false, true] where !(v6 && v6Code == nil) {
                    // TTL 2 would expire at the refusing router: its route lookup fails first.
                    try sockets[v6 ? 1 : 0].send(to: target(v6, net), ttl: 64, sequence: 1)
                    try sockets[v6 ? 1 : 0].send(to: target(v6, net), ttl: 2, sequence: 2)
                    expected += 2
                }
            }
            for v6 in [false, true] { try sockets[v6 ? 1 : 0].send(to: target(v6, 9), ttl: 64, sequence: 1) }
            return collect(sockets) { $0.count >= expected + 2 }
        }
        for (code, net, v4Code, v6Code) in codes {
            for (v6, typeAndCode) in [(false, v4Code), (true, v6Code)] {
                guard let typeAndCode else { continue }
                let mine = answers.filter { $0.quotedDestination == target(v6, net) }
                XCTAssertEqual(mine.map(\.sequence).sorted(), [1, 2], "\(code) v\(v6 ? 6 : 4): one answer per request: \(answers)")
                for answer in mine {
                    XCTAssertEqual(answer.source, routers(v6, net)[1], "\(code): hop 2 refuses")
                    XCTAssertEqual([answer.type, answer.code], typeAndCode, "\(code) v\(v6 ? 6 : 4)")
                }
                let router = summary.router(routers(v6, net)[1])
                XCTAssertEqual(router.unreachable, 2, "\(code): the summary counts what hop 2 sent")
                XCTAssertEqual(router.expired + router.timeExceeded + router.forwarded, 0)
                XCTAssertEqual(summary.router(routers(v6, net)[2]).packetsIn, 0, "nothing passes hop 2")
            }
        }
        for (v6, typeAndCode) in [(false, [UInt8(3), 13]), (true, [1, 1])] {
            let fromHost = answers.filter { $0.quotedDestination == target(v6, 9) }
            XCTAssertEqual(fromHost.map(\.source), [target(v6, 9)], "the host itself refuses")
            XCTAssertEqual(fromHost.map { [$0.type, $0.code] }, [typeAndCode])
            XCTAssertEqual(summary.host(target(v6, 9)).answered, 1)
        }
        XCTAssertEqual(summary.kinds["net_unreachable"], 4)
        XCTAssertEqual(summary.kinds["host_unreachable"], 4)
        XCTAssertEqual(summary.kinds["protocol_unreachable"], 2)
        XCTAssertEqual(summary.kinds["port_unreachable"], 4)
        XCTAssertEqual(summary.kinds["prohibited"], 6, "4 from routers, 2 from the hosts")
        XCTAssertEqual(summary.kinds["echo_reply"], 0)
        XCTAssertEqual(summary.pending, 0)
    }

    func testARoutingLoopAnswersEveryTTLPastThePathFromItsRoutersInTurnOnIPv4AndIPv6() throws {
        func routers(_ v6: Bool) -> [String] { (1...4).map { v6 ? "2001:db8:180::\($0)" : "198.18.180.\($0)" } }
        let targets = ["198.18.80.9", "2001:db8:80::9"]
        let rules = [false, true].map { v6 in
            let route = routers(v6)
            return "\(v6 ? "2001:db8:80::/48" : "198.18.80.0/24") path=\(route[0]),\(route[1]) loop=\(route[2]),\(route[3])"
        }
        let ttls: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 64]
        let (answers, summary) = try simulate(rules) { namespace, _ in
            let sockets = [try ProbeSocket(namespace: namespace, ipv6: false), try ProbeSocket(namespace: namespace, ipv6: true)]
            for (socket, target) in zip(sockets, targets) {
                for ttl in ttls { try socket.send(to: target, ttl: ttl, sequence: UInt16(ttl)) }
            }
            return collect(sockets) { $0.count >= 2 * ttls.count }
        }
        for (v6, target) in zip([false, true], targets) {
            let route = routers(v6)
            let mine = answers.filter { $0.quotedDestination == target }.sorted { $0.sequence < $1.sequence }
            XCTAssertEqual(mine.map(\.sequence), ttls.map { UInt16($0) }, "\(target): one answer per TTL: \(answers)")
            XCTAssertEqual(mine.map(\.source), [0, 1, 2, 3, 2, 3, 2, 3, 3].map { route[$0] },
                           "\(target): the path, then the loop's routers in turn; TTL 64 runs out at the second (64 - 3 is odd)")
            XCTAssertEqual(Set(mine.map { [$0.type, $0.code] }), [v6 ? [3, 0] : [11, 0]], "\(target): time exceeded in transit, every one")
            XCTAssertEqual(summary.host(target).packetsIn, 0, "\(target): a looping packet never reaches the host")
            // Router 3 is met at hops 3, 5, 7, ...: TTL t visits it (t - 1) / 2 times; router 4 (t - 2) / 2 times.
            let third = summary.router(route[2]), fourth = summary.router(route[3])
            XCTAssertEqual(third.looped, ttls.filter { $0 >= 3 }.map { Int($0 - 1) / 2 }.reduce(0, +))
            XCTAssertEqual(fourth.looped, ttls.filter { $0 >= 4 }.map { Int($0 - 2) / 2 }.reduce(0, +))
            XCTAssertEqual(third.timeExceeded, 3, "\(target): TTLs 3, 5, 7")
            XCTAssertEqual(fourth.timeExceeded, 4, "\(target): TTLs 4, 6, 8, 64")
            XCTAssertEqual(summary.router(route[1]).looped, 0)
        }
        XCTAssertEqual(summary.kinds["time_exceeded"], 2 * ttls.count)
        XCTAssertEqual(summary.kinds["echo_reply"], 0)
    }

    /// The unreachable a router sends after its neighbour lookup gave up (3 s) comes after a
    /// prober's usual 1 s timeout. Shown by order, never by a measured time: the answer to a
    /// later probe arrives first; a prober waiting its 1 s timeout sees nothing; the
    /// simulator, asked right then, has read the request and holds the unreachable; then it arrives.
    func testAnUnreachableAfterANeighbourLookupIsHeldPastTheProbeTimeoutOnIPv4AndIPv6() throws {
        func routers(_ v6: Bool) -> [String] { (1...3).map { v6 ? "2001:db8:185::\($0)" : "198.18.185.\($0)" } }
        let targets = ["198.18.85.9", "2001:db8:85::9"]
        let rules = [false, true].map { v6 in
            "\(v6 ? "2001:db8:85::/48" : "198.18.85.0/24") path=\(routers(v6).joined(separator: ",")) unreachable=host,after-hop:2,delay:3s"
        }
        let probeTimeoutMilliseconds: Int32 = 1000
        let ((first, silent, held, late), summary) = try simulate(rules) { namespace, simulator in
            let sockets = [try ProbeSocket(namespace: namespace, ipv6: false), try ProbeSocket(namespace: namespace, ipv6: true)]
            for (socket, target) in zip(sockets, targets) {
                try socket.send(to: target, ttl: 64, sequence: 1)     // past hop 2: refused, 3 s late
                try socket.send(to: target, ttl: 2, sequence: 2)      // expires at hop 2: time exceeded at once
            }
            let first = collect(sockets) { answers in answers.filter { $0.sequence == 2 }.count >= 2 }
            // A prober waits its timeout for the first request's answer.
            var descriptors = sockets.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), probeTimeoutMilliseconds)
            let silent = ready == 0 ? [] : sockets.flatMap { $0.receive() }
            simulator.requestSummary()
            var held: SimulationSummary?
            TestEnvironment.eventually(within: 30) {
                held = simulator.requestedSummary
                return held != nil
            }
            let late = collect(sockets) { answers in answers.filter { $0.sequence == 1 }.count >= 2 }
            return (first, silent, held, late)
        }
        XCTAssertEqual(first.map(\.sequence), [2, 2], "the later probe's answers come first: \(first)")
        XCTAssertEqual(silent, [], "nothing within the probe's timeout")
        let snapshot = try XCTUnwrap(held, "netsim wrote no summary on SIGUSR1")
        XCTAssertEqual(snapshot.pending, 2, "after the probe's timeout the simulator still holds both unreachables")
        XCTAssertEqual(snapshot.kinds["host_unreachable"], 0, "none sent yet")
        for (v6, target) in zip([false, true], targets) {
            let refusing = routers(v6)[1]
            XCTAssertEqual(snapshot.router(refusing).unreachable, 1, "\(target): hop 2 has refused the request")
            XCTAssertEqual(first.filter { $0.quotedDestination == target }.map { [$0.type, $0.code] }, [v6 ? [3, 0] : [11, 0]],
                           "\(target): a TTL-limited probe still expires at hop 2 (it would not be forwarded)")
            let answer = try XCTUnwrap(late.first { $0.quotedDestination == target && $0.sequence == 1 }, "\(target): the unreachable never came: \(late)")
            XCTAssertEqual(answer.source, refusing)
            XCTAssertEqual([answer.type, answer.code], v6 ? [1, 3] : [3, 1], "\(target): host unreachable (address unreachable)")
            XCTAssertEqual(summary.router(refusing).unreachable, 1)
            XCTAssertEqual(summary.router(refusing).timeExceeded, 1)
            XCTAssertEqual(summary.router(routers(v6)[2]).packetsIn, 0)
        }
        XCTAssertEqual(summary.kinds["host_unreachable"], 2)
        XCTAssertEqual(summary.pending, 0)
    }
}
