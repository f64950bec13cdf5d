import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A DNS server the test controls, on 127.0.0.1:53 inside a network namespace of the
/// test's own: it runs as a child process of this test binary (`ip netns exec NS
/// <test binary> IntegrationTests.DNSResponderProcess/testServe`).
///
/// Its zone is a file of "name address" lines (IPv4; a name on several lines has several
/// A records), re-read for every query; a name not in it is NXDOMAIN, AAAA questions get an empty answer. While the file `silent` exists
/// next to the zone, queries are read and never answered (a hung resolver).
struct DNSResponder {
    let zone: URL
    var silentFlag: URL { zone.deletingLastPathComponent().appendingPathComponent("silent") }

    /// Starts the responder inside `namespace`; returns once it listens.
    static func start(namespace: String, zone: URL) throws -> RunningProcess {
        let ready = zone.deletingLastPathComponent().appendingPathComponent("dns-ready")
        try? FileManager.default.removeItem(at: ready)
        let running = try Harness.start(["ip", "netns", "exec", namespace, ProcessInfo.processInfo.arguments[0], "IntegrationTests.DNSResponderProcess/testServe"],
                                        environment: ["NETPROBE_TEST_DNS_ZONE": zone.path, "NETPROBE_TEST_DNS_READY": ready.path])
        TestEnvironment.eventually(within: 30) { FileManager.default.fileExists(atPath: ready.path) || !running.process.isRunning }
        guard FileManager.default.fileExists(atPath: ready.path) else {
            kill(running.process.processIdentifier, SIGKILL)
            throw NSError(domain: "DNSResponder", code: 1, userInfo: [NSLocalizedDescriptionKey: "the DNS responder did not start: \(running.collected().1)"])
        }
        return running
    }

    /// One response to a query, or nil to stay silent. Pure: bytes in, bytes out.
    static func answer(_ query: [UInt8], zone: [String: [[UInt8]]]) -> [UInt8]? {
        guard query.count >= 12, query[2] & 0x80 == 0 else { return nil }
        var offset = 12
        var labels: [String] = []
        while offset < query.count, query[offset] != 0 {
            let length = Int(query[offset])
            guard length < 64, offset + 1 + length <= query.count else { return nil }
            labels.append(String(decoding: query[(offset + 1)..<(offset + 1 + length)], as: UTF8.self))
            offset += 1 + length
        }
        guard offset + 5 <= query.count else { return nil }
        let questionEnd = offset + 5
        let type = UInt16(query[offset + 1]) << 8 | UInt16(query[offset + 2])
        let name = labels.joined(separator: ".").lowercased()
        let addresses = zone[name]
        var response = Array(query[0..<2])
        let rcode: UInt8 = addresses == nil ? 3 : 0  // NXDOMAIN : NOERROR
        response += [0x84 | (query[2] & 0x01), 0x80 | rcode]  // QR, AA, RD copied; RA
        let answers = type == 1 ? min(addresses?.count ?? 0, 100) : 0
        response += [0, 1, 0, UInt8(answers), 0, 0, 0, 0]
        response += query[12..<questionEnd]
        for address in (addresses ?? []).prefix(answers) {
            response += [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4] + address  // pointer to the name, A, IN, TTL 1 s
        }
        return response
    }

    static func readZone(_ path: String) -> [String: [[UInt8]]] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        var zone: [String: [[UInt8]]] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { continue }
            let octets = parts[1].split(separator: ".").compactMap { UInt8($0) }
            if octets.count == 4 { zone[parts[0].lowercased(), default: []].append(octets) }
        }
        return zone
    }
}

/// The responder's process; skipped unless started by `DNSResponder.start`.
final class DNSResponderProcess: XCTestCase {
    func testServe() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let zonePath = environment["NETPROBE_TEST_DNS_ZONE"], let ready = environment["NETPROBE_TEST_DNS_READY"] else {
            throw XCTSkip("the DNS responder of the dead-resolver test; runs only as its child process")
        }
        let silent = URL(fileURLWithPath: zonePath).deletingLastPathComponent().appendingPathComponent("silent").path
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(53).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound, 0, "bind 127.0.0.1:53 in the test's namespace: \(String(cString: strerror(errno)))")
        guard bound == 0 else { return }
        _ = FileManager.default.createFile(atPath: ready, contents: Data())
        var buffer = [UInt8](repeating: 0, count: 1500)
        while true {
            var peer = sockaddr_storage()
            var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let count = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(descriptor, &buffer, buffer.count, 0, $0, &peerLength) }
            }
            guard count > 0 else { continue }
            if FileManager.default.fileExists(atPath: silent) { continue }
            guard let response = DNSResponder.answer(Array(buffer[0..<count]), zone: DNSResponder.readZone(zonePath)) else { continue }
            _ = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(descriptor, response, response.count, 0, $0, peerLength) }
            }
        }
    }
}
