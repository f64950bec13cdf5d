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
        XCTAssertEqual(Set(open.keys), PingIntegrationTests.jsonKeys.union(["port"]))
        XCTAssertEqual(open["kind"] as? String, "tcp")
        XCTAssertEqual(open["sent"] as? Int, 10)
        XCTAssertEqual(open["received"] as? Int, 10)
        XCTAssertEqual(open["result"] as? String, "ok")
        XCTAssertEqual(open["timestamp_source"] as? String, "kernel", "TCP_INFO's RTT of a clean handshake")
        XCTAssertTrue(open["ttl"] is NSNull)
        let median = try XCTUnwrap(open["rtt_median_ms"] as? Double)
        XCTAssertGreaterThan(median, 0)
        XCTAssertLessThan(median, 20)
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

    func testFiveThousandProbesLeaveNoTimeWait() throws {
        try Harness.requireTools(["ss"])
        let listener = try Listener()
        // Accept and close on our side too, as a real server would.
        let listeningFD = listener.fd
        let acceptor = Thread {
            while true {
                let client = accept(listeningFD, nil, nil)
                if client < 0 { break }
                close(client)
            }
        }
        acceptor.start()
        let result = try Harness.run([netprobe, "tcp", "-c", "5000", "-i", "0.001", "--rate", "4000", "-q", "127.0.0.1:\(listener.port)"], timeout: 60)
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardOutput.contains("sent 5000, connected 5000"), result.standardOutput)
        XCTAssertEqual(try timeWaitSockets(port: listener.port), 0, "SO_LINGER 0 closes with RST: no TIME_WAIT")
        shutdown(listener.fd, Int32(SHUT_RDWR))
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
        XCTAssertTrue(healthy.standardOutput.hasPrefix("127.0.0.1: neither: network OK (icmp 0% loss"), healthy.standardOutput)
        let down = try Harness.run([netprobe, "check", "--duration", "1", "--json", "127.0.0.1:\(closed)"])
        XCTAssertEqual(down.status, 1)
        let verdict = try XCTUnwrap(try down.jsonLines().first)
        XCTAssertEqual(verdict["verdict"] as? String, "server")
        XCTAssertTrue((verdict["summary"] as? String)?.hasSuffix("refused: service down") == true, "\(verdict)")
        XCTAssertEqual((verdict["icmp"] as? [String: Any])?["result"] as? String, "ok")
    }
}
