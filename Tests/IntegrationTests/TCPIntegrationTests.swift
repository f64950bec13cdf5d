import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe tcp` and `netprobe check` against real listeners on loopback.
final class TCPIntegrationTests: XCTestCase {
    var netprobe: String { Harness.netprobePath }

    /// A listening socket on a free loopback port; the kernel completes handshakes itself.
    final class Listener {
        let fd: Int32
        let port: UInt16

        init(family: Int32 = AF_INET) throws {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw POSIXError(.EMFILE) }
            self.fd = fd
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var storage = sockaddr_storage()
            var length: socklen_t
            if family == AF_INET {
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                length = socklen_t(MemoryLayout<sockaddr_in>.size)
                _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            } else {
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                address.sin6_addr = in6addr_loopback
                length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            }
            guard listen(fd, 4096) == 0 else { throw POSIXError(.EADDRINUSE) }
            length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            self.port = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
        }

        deinit { close(fd) }

        /// Takes every connection the kernel has completed and queued, without waiting:
        /// the connections the server's application would have seen.
        func acceptQueued() -> [Int32] {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var accepted: [Int32] = []
            while case let client = accept(fd, nil, nil), client >= 0 { accepted.append(client) }
            return accepted
        }
    }

    /// What an accepted connection's first read says: the client closed with a FIN (end of
    /// stream), reset it, or sent data.
    static func firstRead(_ client: Int32) -> String {
        var byte: UInt8 = 0
        let count = read(client, &byte, 1)
        close(client)
        if count == 0 { return "fin" }
        return count < 0 ? (errno == ECONNRESET ? "reset" : "error \(errno)") : "data"
    }

    /// A loopback port nothing listens on: bound then closed at once.
    static func closedPort() throws -> UInt16 {
        let listener = try Listener()
        return listener.port
    }

    func testListeningPortIsOkWithKernelTimingAndClosedPortIsRefused() throws {
        let listener = try Listener()
        let closed = try Self.closedPort()
        let result = try Harness.run([netprobe, "tcp", "-c", "10", "-i", "0.02", "127.0.0.1:\(listener.port),\(closed)", "--json"])
        XCTAssertEqual(result.status, 1, "one target refused: exit 1; \(result.standardError)")
        let lines = try result.jsonLines()
        XCTAssertEqual(lines.count, 2)
        let open = try XCTUnwrap(lines.first { $0["port"] as? Int == Int(listener.port) })
        XCTAssertEqual(Set(open.keys), PingIntegrationTests.jsonKeys.union(["port", "mode", "completed"]))
        XCTAssertEqual(open["kind"] as? String, "tcp")
        XCTAssertEqual(open["mode"] as? String, "half-open", "half-open is the default")
        XCTAssertEqual(open["completed"] as? Int, 0, "no final ACK left: the listener saw no connection")
        XCTAssertEqual(open["sent"] as? Int, 10)
        XCTAssertEqual(open["received"] as? Int, 10)
        XCTAssertEqual(open["result"] as? String, "ok")
        XCTAssertEqual(open["timestamp_source"] as? String, "kernel", "TCP_INFO's RTT of a clean handshake")
        XCTAssertTrue(open["ttl"] is NSNull)
        XCTAssertGreaterThan(try XCTUnwrap(open["rtt_median_ms"] as? Double), 0)
        let refused = try XCTUnwrap(lines.first { $0["port"] as? Int == Int(closed) })
        XCTAssertEqual(refused["result"] as? String, "refused")
        XCTAssertEqual(refused["received"] as? Int, 0)
        XCTAssertEqual(refused["loss_percent"] as? Double, 100)
        XCTAssertTrue(refused["rtt_median_ms"] is NSNull)
    }

    func testIPv6TargetInBrackets() throws {
        let listener = try Listener(family: AF_INET6)
        let result = try Harness.run([netprobe, "tcp", "-c", "3", "-i", "0.02", "[::1]:\(listener.port)", "--json"])
        XCTAssertEqual(result.status, 0, result.standardError)
        let line = try XCTUnwrap(try result.jsonLines().first)
        XCTAssertEqual(line["target"] as? String, "::1")
        XCTAssertEqual(line["address"] as? String, "::1")
        XCTAssertEqual(line["received"] as? Int, 3)
    }

    func timeWaitSockets(port: UInt16) throws -> Int {
        let result = try Harness.run(["ss", "-tanH", "state", "time-wait", "( dport = :\(port) or sport = :\(port) )"])
        return result.standardOutput.split(separator: "\n").count
    }

    func testFiveThousandHalfOpenProbesLeaveNoTimeWaitAndEveryAcceptedOneIsCountedCompleted() throws {
        try Harness.requireTools(["ss"])
        let listener = try Listener()
        let result = try Harness.run([netprobe, "tcp", "-c", "5000", "-i", "0.001", "--rate", "4000", "--json", "127.0.0.1:\(listener.port)"], timeout: 60)
        XCTAssertEqual(result.status, 0, result.standardError)
        let round = try XCTUnwrap(try result.jsonLines().first)
        XCTAssertEqual(round["sent"] as? Int, 5000)
        XCTAssertEqual(round["received"] as? Int, 5000)
        XCTAssertEqual(try timeWaitSockets(port: listener.port), 0, "an RST in place of the final ACK: no TIME_WAIT on either side")
        // At 4,000/s a probe may now and then come later than the 200 ms delayed-ACK timer;
        // whatever the server did see must be what netprobe reports as completed.
        let accepted = listener.acceptQueued()
        accepted.forEach { close($0) }
        print("5000 half-open probes at 4000/s: \(round["completed"] ?? "?") completed, \(accepted.count) accepted by the listener")
        XCTAssertEqual(round["completed"] as? Int, accepted.count, "every connection the listener could accept is counted completed")
    }

    func testHalfOpenProbesAreNeverAcceptedAndConnectModeClosesEachAcceptedConnectionWithAFIN() throws {
        let halfOpen = try Listener()
        let quiet = try Harness.run([netprobe, "tcp", "-c", "20", "-i", "0.05", "--json", "127.0.0.1:\(halfOpen.port)"])
        XCTAssertEqual(quiet.status, 0, quiet.standardError)
        let quietRound = try XCTUnwrap(try quiet.jsonLines().first)
        XCTAssertEqual(quietRound["received"] as? Int, 20)
        XCTAssertEqual(quietRound["completed"] as? Int, 0)
        XCTAssertEqual(quietRound["timestamp_source"] as? String, "kernel")
        XCTAssertEqual(halfOpen.acceptQueued().count, 0, "half-open: the application is never handed a connection")

        let connect = try Listener()
        let full = try Harness.run([netprobe, "tcp", "-c", "20", "-i", "0.05", "-W", "0.2", "--tcp-mode", "connect", "--json", "127.0.0.1:\(connect.port)"])
        XCTAssertEqual(full.status, 0, full.standardError)
        let fullRound = try XCTUnwrap(try full.jsonLines().first)
        XCTAssertEqual(fullRound["mode"] as? String, "connect")
        XCTAssertEqual(fullRound["received"] as? Int, 20)
        XCTAssertEqual(fullRound["completed"] as? Int, 20, "connect mode: every handshake is a connection")
        XCTAssertEqual(fullRound["timestamp_source"] as? String, "kernel")
        let reads = connect.acceptQueued().map(Self.firstRead)
        XCTAssertEqual(reads, Array(repeating: "fin", count: 20), "connect mode: each connection ends with a FIN, never an RST")
    }

    func testAnUnprivilegedUserWithNoCapabilitiesProbesInBothModes() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["setpriv"])
        for mode in ["half-open", "connect"] {
            let listener = try Listener()
            let result = try Harness.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--",
                                          netprobe, "tcp", "-c", "5", "-i", "0.05", "-W", "0.2", "--tcp-mode", mode, "--json", "127.0.0.1:\(listener.port)"])
            XCTAssertEqual(result.status, 0, "\(mode): \(result.standardError)")
            let round = try XCTUnwrap(try result.jsonLines().first, mode)
            XCTAssertEqual(round["received"] as? Int, 5, mode)
            XCTAssertEqual(round["mode"] as? String, mode)
            XCTAssertEqual(round["completed"] as? Int, mode == "connect" ? 5 : 0, mode)
            XCTAssertEqual(round["timestamp_source"] as? String, "kernel", mode)
            XCTAssertEqual(listener.acceptQueued().map(Self.firstRead).count, mode == "connect" ? 5 : 0, mode)
        }
    }

    func testAnUnknownTCPModeIsRefusedNamingTheChoices() throws {
        let result = try Harness.run([netprobe, "tcp", "--tcp-mode", "syn", "127.0.0.1:80"])
        XCTAssertEqual(result.status, 3, result.standardError)
        XCTAssertTrue(result.standardError.contains("half-open") && result.standardError.contains("connect"), result.standardError)
    }

    func testBadTargetsExitThreeNamingTheFix() throws {
        for (target, hint) in [("127.0.0.1", "a port is needed"), ("::1:80", "brackets"), ("127.0.0.1:99999", "not a port"), ("[::1", "missing ']'")] {
            let result = try Harness.run([netprobe, "tcp", target])
            XCTAssertEqual(result.status, 3, "\(target): \(result.standardError)")
            XCTAssertTrue(result.standardError.contains(hint), "\(target): \(result.standardError)")
        }
    }

    func testCheckOnLoopbackSaysNeitherForAListeningPortAndServiceDownForAClosedOne() throws {
        try Harness.requireRoot()
        let listener = try Listener()
        let closed = try Self.closedPort()
        let healthy = try Harness.run([netprobe, "check", "--duration", "1", "127.0.0.1:\(listener.port)"])
        XCTAssertEqual(healthy.status, 0, healthy.standardOutput + healthy.standardError)
        XCTAssertTrue(healthy.standardOutput.hasPrefix("127.0.0.1: neither: ICMP loss 0.0 % (95 % interval 0.0-"), healthy.standardOutput)
        let down = try Harness.run([netprobe, "check", "--duration", "1", "--json", "127.0.0.1:\(closed)"])
        XCTAssertEqual(down.status, 1)
        let verdict = try XCTUnwrap(try down.jsonLines().first)
        XCTAssertEqual(verdict["verdict"] as? String, "server")
        // check adds its trace of the path after the verdict (loopback: one hop, clean).
        XCTAssertTrue((verdict["summary"] as? String)?.hasSuffix("refused: service down; path clean: 1 hop, no loss persists to the target") == true, "\(verdict)")
        XCTAssertEqual((verdict["path"] as? [String: Any])?["reached"] as? Bool, true, "the TCP trace reaches the closed port: its RST is the destination answering")
        XCTAssertEqual((verdict["icmp"] as? [String: Any])?["result"] as? String, "ok")
    }
}
