import CSystemShims
import Logging
import ProbeResults
import TestSupport
import XCTest
@testable import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

/// The path prober on real loopback sockets: a one-hop path, forged ICMP errors (hostile
/// input) that must not count as hops, and TCP traces timed by the kernel at both ends.
final class PathProberTests: XCTestCase {
    func traces(_ prober: PathProber, _ targets: [ProbeTarget], whileRunning body: () -> Void = {}) async -> [PathTrace] {
        let safety = Task {
            try? await Task.sleep(nanoseconds: 120_000_000_000)
            if !Task.isCancelled { prober.stop() }
        }
        let stream = prober.trace(targets)
        body()
        var collected: [PathTrace] = []
        for await trace in stream { collected.append(trace) }
        safety.cancel()
        return collected.sorted { $0.targetIndex < $1.targetIndex }
    }

    func testLoopbackIsOneHopAwayAndTheDestinationCountsOneProbePerRound() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        let sockets = try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv6], ttl: nil, logger: logger)
        let hasIPv6 = sockets.modes[.ipv6] != nil
        let prober = try PathProber(sockets: sockets, configuration: PathProbeConfiguration(rounds: 3, intervalNanoseconds: 20_000_000,
                                                                                             timeoutNanoseconds: 500_000_000, maxHops: 5), logger: logger)
        defer { prober.close() }
        var targets = [ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1")),
                       ProbeTarget(name: "gone.invalid", address: nil, resolutionError: "gone")]
        if hasIPv6 { targets.append(ProbeTarget(name: "::1", address: IPAddress(parsing: "::1"))) }
        let result = await traces(prober, targets)
        XCTAssertEqual(result.count, targets.count)
        for trace in result where trace.target.address != nil {
            XCTAssertTrue(trace.reached, "\(trace.target.name)")
            XCTAssertEqual(trace.rounds, 3)
            XCTAssertEqual(trace.hops.count, 1, "\(trace.target.name): the destination answers TTL 1")
            let hop = try XCTUnwrap(trace.hops.first)
            XCTAssertTrue(hop.isDestination)
            XCTAssertEqual(hop.address, trace.target.address)
            XCTAssertEqual(hop.sent, 3, "one probe per round counts at the destination, whatever round 1 sent beyond it")
            XCTAssertEqual(trace.ending, .reached)
            XCTAssertEqual(hop.timestampSource, .kernel)
            XCTAssertEqual(hop.received, hop.sent)
            XCTAssertEqual(hop.rttsMilliseconds.count, hop.sent)
            XCTAssertEqual(trace.flowPaths, [FlowPath(flow: 0, hops: [trace.target.address], reached: true)])
            XCTAssertNil(trace.analysis.lossStartHop)
            XCTAssertEqual(trace.analysis.destinationLossPercent, 0)
        }
        let unresolved = result[1]
        XCTAssertFalse(unresolved.reached)
        XCTAssertEqual(unresolved.hops.count, 0)
        XCTAssertEqual(unresolved.rounds, 0)
    }

    /// A TCP socket bound to `address` (port chosen by the kernel), listening or not: a
    /// SYN to a listening one is answered with a SYN-ACK, to a bound one with a RST (a
    /// closed port that nobody can open while the test holds it).
    func port(on address: IPAddress, listening: Bool) throws -> (descriptor: Int32, port: UInt16) {
        let descriptor = socket(address.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw XCTSkip("no \(address.family) TCP socket: errno \(errno)") }
        let bound = address.withSocketAddress(port: 0) { socketAddress, length in bind(descriptor, socketAddress, length) == 0 }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) == 0 } }
        guard bound, named, !listening || listen(descriptor, 16) == 0 else {
            let error = errno
            close(descriptor)
            throw NSError(domain: "PathProberTests.port", code: Int(error))
        }
        let port = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
        return (descriptor, port)
    }

    /// Waits until the kernel stamps what it receives. The first socket that asks for
    /// receive stamps switches them on through deferred work (FIELD-NOTES "Timestamps"),
    /// and answers before that are timed by user-space reads: the tests below assert that
    /// none was. A datagram to ourselves on loopback tells when stamping is on.
    func waitUntilReceivedPacketsAreStamped() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        defer { close(descriptor) }
        try Posix.setsockopt(descriptor, SOL_SOCKET, SO_TIMESTAMPING, Int32(CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_SOFTWARE))
        let loopback = try XCTUnwrap(IPAddress(parsing: "127.0.0.1"))
        XCTAssertTrue(loopback.withSocketAddress(port: 0) { address, length in bind(descriptor, address, length) == 0 })
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: MemoryLayout<Int>.alignment)
        let source = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
        defer { buffer.deallocate(); control.deallocate(); source.deallocate() }
        let stamped = try TestEnvironment.eventually(within: 10) {
            _ = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(descriptor, "stamp?", 6, 0, $0, length) } }
            var sawStamp = false
            while case .processed(let message) = try Posix.recvmsg(descriptor, into: buffer, source: source, control: control, flags: 0) {
                if ReceivedControlMessages(parsing: message.control, flags: message.flags).softwareRealtime != nil { sawStamp = true }
            }
            return sawStamp
        }
        XCTAssertTrue(stamped, "the kernel never stamped a received packet")
    }

    func testTCPTracesToAnOpenAndAClosedLoopbackPortAreKernelTimedAtBothEnds() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP and TCP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        let sockets = try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv6], ttl: nil, logger: logger)
        let tcpSockets = try PathTCPSockets.open(families: [.ipv4, .ipv6], optional: [.ipv6])
        let prober = try PathProber(sockets: sockets, tcpSockets: tcpSockets, configuration: PathProbeConfiguration(rounds: 3, intervalNanoseconds: 20_000_000,
                                                                                                                     timeoutNanoseconds: 500_000_000, maxHops: 5), logger: logger)
        defer { prober.close() }
        var addresses = [try XCTUnwrap(IPAddress(parsing: "127.0.0.1"))]
        if prober.sockets[.ipv6] != nil && prober.tcpSockets[.ipv6] != nil { addresses.append(try XCTUnwrap(IPAddress(parsing: "::1"))) }
        var held: [Int32] = []
        defer { for descriptor in held { close(descriptor) } }
        var targets: [ProbeTarget] = []
        for address in addresses {
            for listening in [true, false] {
                let (descriptor, port) = try port(on: address, listening: listening)
                held.append(descriptor)
                targets.append(ProbeTarget(name: "\(address) \(listening ? "open" : "closed")", address: address, port: port))
            }
        }
        try waitUntilReceivedPacketsAreStamped()
        let result = await traces(prober, targets)
        XCTAssertEqual(result.count, targets.count)
        for trace in result {
            let name = trace.target.name
            XCTAssertTrue(trace.reached, "\(name): a SYN-ACK or a RST is the destination answering")
            XCTAssertEqual(trace.hops.count, 1, "\(name): the destination answers TTL 1")
            for hop in trace.hops {
                XCTAssertGreaterThan(hop.received, 0, name)
                XCTAssertEqual(hop.received, hop.sent, name)
                XCTAssertEqual(hop.kernelTimestamps, hop.received, "\(name): every answer timed by the SYN's send stamp and the answer's receive stamp")
                XCTAssertEqual(hop.userTimestamps, 0, name)
                XCTAssertEqual(hop.timestampSource, .kernel, name)
            }
        }
    }

    func testTCPTracesThroughARouterAreKernelTimedAtEveryHop() async throws {
        let chain = try OneRouterNetwork.make()
        let logger = Logger(label: "test")
        // The sockets live in the prober namespace, and so does the loop thread (trace()
        // starts it below), where the IPv4 checksum's source address is looked up.
        let (sockets, tcpSockets) = try chain.inProber {
            (try ICMPSocketSet.open(families: [.ipv4, .ipv6], ttl: nil, logger: logger), try PathTCPSockets.open(families: [.ipv4, .ipv6]))
        }
        let prober = try PathProber(sockets: sockets, tcpSockets: tcpSockets, configuration: PathProbeConfiguration(rounds: 5, intervalNanoseconds: 20_000_000,
                                                                                                                     timeoutNanoseconds: 1_000_000_000, maxHops: 4), logger: logger)
        defer { prober.close() }
        var held: [Int32] = []
        defer { for descriptor in held { close(descriptor) } }
        var targets: [ProbeTarget] = []
        var routers: [IPAddress: IPAddress] = [:]
        for (host, router) in [(chain.hostAddress4, chain.routerAddress4), (chain.hostAddress6, chain.routerAddress6)] {
            let address = try XCTUnwrap(IPAddress(parsing: host))
            routers[address] = IPAddress(parsing: router)
            for listening in [true, false] {
                let (descriptor, port) = try chain.inHost { try self.port(on: address, listening: listening) }
                held.append(descriptor)
                targets.append(ProbeTarget(name: "\(host) \(listening ? "open" : "closed")", address: address, port: port))
            }
        }
        try waitUntilReceivedPacketsAreStamped()
        let safety = Task {
            try? await Task.sleep(nanoseconds: 120_000_000_000)
            if !Task.isCancelled { prober.stop() }
        }
        let stream = try chain.inProber { [targets] in prober.trace(targets) }
        var result: [PathTrace] = []
        for await trace in stream { result.append(trace) }
        safety.cancel()
        XCTAssertEqual(result.count, targets.count)
        for trace in result {
            let name = trace.target.name
            XCTAssertTrue(trace.reached, name)
            XCTAssertEqual(trace.hops.map(\.address), [routers[trace.target.address!], trace.target.address],
                           "\(name): the router's time exceeded (on the ICMP socket), then the host's SYN-ACK or RST")
            for hop in trace.hops {
                XCTAssertGreaterThan(hop.received, 0, "\(name) hop \(hop.hop)")
                XCTAssertEqual(hop.kernelTimestamps, hop.received, "\(name) hop \(hop.hop): the SYN's send stamp is on the TCP socket, whichever socket the answer came in on")
                XCTAssertEqual(hop.userTimestamps, 0, "\(name) hop \(hop.hop)")
                XCTAssertEqual(hop.timestampSource, .kernel, "\(name) hop \(hop.hop)")
            }
        }
    }

    /// An IPv4 time exceeded from 127.0.0.1 to itself quoting an echo request.
    func forgedTimeExceeded(identifier: UInt16, sequence: UInt16, cookie: UInt64, probeNumber: UInt32, quotedDestination: [UInt8]) -> [UInt8] {
        var probe: [UInt8] = []
        PathPacket.encodeRequest(family: .ipv4, identifier: identifier, probeNumber: probeNumber, cookie: cookie, flow: 0, payloadLength: 24, into: &probe)
        probe[6] = UInt8(sequence >> 8)
        probe[7] = UInt8(sequence & 0xff)
        let quotedHeader: [UInt8] = [0x45, 0, 0, 52, 0, 0, 0, 0, 1, 1, 0, 0, 127, 0, 0, 1] + quotedDestination
        var message: [UInt8] = [11, 0, 0, 0, 0, 0, 0, 0] + quotedHeader + probe
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return message
    }

    func testForgedTimeExceededMessagesAreIgnoredWithAReasonAndAddNoHop() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let logger = Logger(label: "test")
        let sockets = try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger)
        let prober = try PathProber(sockets: sockets, configuration: PathProbeConfiguration(rounds: 20, intervalNanoseconds: 25_000_000,
                                                                                             timeoutNanoseconds: 500_000_000, maxHops: 2), logger: logger)
        defer { prober.close() }
        let identifier = try XCTUnwrap(prober.sockets[.ipv4]).identifier
        let forger = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMP))
        XCTAssertGreaterThanOrEqual(forger, 0)
        defer { close(forger) }
        var loopback = sockaddr_in()
        loopback.sin_family = sa_family_t(AF_INET)
        loopback.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let unsent = prober.takeProbeNumber() &+ 0x8000_0000
        let forged = [
            // Not our cookie.
            forgedTimeExceeded(identifier: identifier, sequence: 1, cookie: prober.cookie ^ 1, probeNumber: 1, quotedDestination: [127, 0, 0, 1]),
            // Our cookie, a probe number never sent (the counter starts at a random value).
            forgedTimeExceeded(identifier: identifier, sequence: UInt16(truncatingIfNeeded: unsent), cookie: prober.cookie, probeNumber: unsent, quotedDestination: [127, 0, 0, 1]),
            // The sequence does not belong to the quoted probe number.
            forgedTimeExceeded(identifier: identifier, sequence: 9, cookie: prober.cookie, probeNumber: 0x100, quotedDestination: [127, 0, 0, 1]),
        ]
        let targets = [ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1"))]
        let result = await traces(prober, targets) {
            for packet in forged {
                let sent = packet.withUnsafeBytes { bytes in
                    withUnsafePointer(to: &loopback) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(forger, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    } }
                }
                XCTAssertEqual(sent, packet.count)
            }
        }
        let trace = try XCTUnwrap(result.first)
        XCTAssertEqual(trace.hops.count, 1)
        XCTAssertEqual(trace.hops[0].addresses.count, 1, "no forged hop")
        XCTAssertEqual(trace.hops[0].received, trace.hops[0].sent)
        XCTAssertEqual(trace.ignored["wrong_cookie"], 1, "\(trace.ignored)")
        XCTAssertEqual(trace.ignored["unknown_probe"], 1, "\(trace.ignored)")
        XCTAssertEqual(trace.ignored["sequence_mismatch"], 1, "\(trace.ignored)")
    }

    func testTheKernelFilterPassesErrorsAndOwnEchoRepliesOnly() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let receiver = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMP))
        let sender = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMP))
        defer { close(receiver); close(sender) }
        try SocketFilter.attach(SocketFilter.icmp(family: .ipv4, identifier: 0x1111), to: receiver)
        var scratch = [UInt8](repeating: 0, count: 2048)
        while recv(receiver, &scratch, scratch.count, Int32(MSG_DONTWAIT)) > 0 {}  // what came before the filter
        var loopback = sockaddr_in()
        loopback.sin_family = sa_family_t(AF_INET)
        loopback.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        func send(type: UInt8, identifier: UInt16, sequence: UInt16) {
            var message: [UInt8] = [type, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff), UInt8(sequence >> 8), UInt8(sequence & 0xff)]
            message += [UInt8](repeating: 0x42, count: 28)
            let sum = ICMPEcho.checksum(message)
            message[2] = UInt8(sum >> 8)
            message[3] = UInt8(sum & 0xff)
            _ = message.withUnsafeBytes { bytes in
                withUnsafePointer(to: &loopback) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(sender, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                } }
            }
        }
        send(type: 0, identifier: 0x2222, sequence: 1)   // someone else's echo reply: dropped
        send(type: 8, identifier: 0x1111, sequence: 2)   // an echo request: dropped (the kernel's reply to it is kept)
        send(type: 0, identifier: 0x1111, sequence: 3)   // ours: kept
        send(type: 11, identifier: 0x3333, sequence: 4)  // time exceeded (any): kept
        send(type: 13, identifier: 0x1111, sequence: 5)  // a timestamp request: dropped
        send(type: 0, identifier: 0x1111, sequence: 6)   // the end marker
        var sequences: [UInt16] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        var descriptor = pollfd(fd: receiver, events: Int16(POLLIN), revents: 0)
        // Loopback delivers at once; the limit only keeps a broken filter from hanging the test.
        while sequences.last != 6, poll(&descriptor, 1, 5000) == 1 {
            let count = recv(receiver, &buffer, buffer.count, 0)
            guard count >= 28 else { break }
            // Other sessions' ICMP errors on loopback pass the filter too: keep ours (the 0x42 fill).
            guard count >= 36, buffer[28..<36].allSatisfy({ $0 == 0x42 }) else { continue }
            sequences.append(UInt16(buffer[26]) << 8 | UInt16(buffer[27]))
        }
        XCTAssertEqual(sequences, [2, 3, 4, 6], "2 is the kernel's echo reply to our request, with our identifier")
    }
}
