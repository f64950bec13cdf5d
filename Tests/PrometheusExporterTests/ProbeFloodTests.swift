import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Acceptance 4: thousands of concurrent /probe requests, a third malformed, a third for
/// targets outside the allow-list, a third real: each gets its clear answer, netprobe's
/// memory stays bounded and `run` keeps its schedule (no round missing in InfluxDB).
final class ProbeFloodTests: XCTestCase {
    /// Sends every request on its own connection, all at once (non-blocking sockets, one
    /// poll loop), and returns each one's HTTP status (0: no answer by the deadline).
    static func flood(port: Int, paths: [String], deadline: Date) -> [Int] {
        struct Connection {
            var fd: Int32
            var request: [UInt8]
            var sent = 0
            var response: [UInt8] = []
            var done = false
        }
        var connections: [Connection] = paths.map { path in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            return Connection(fd: fd, request: Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
        }
        var buffer = [UInt8](repeating: 0, count: 16384)
        while Date() < deadline, connections.contains(where: { !$0.done }) {
            let open = connections.indices.filter { !connections[$0].done }
            var polled = open.map { pollfd(fd: connections[$0].fd, events: Int16(connections[$0].sent < connections[$0].request.count ? POLLOUT : POLLIN), revents: 0) }
            guard poll(&polled, nfds_t(polled.count), 100) > 0 else { continue }
            for (slot, index) in open.enumerated() where polled[slot].revents != 0 {
                if connections[index].sent < connections[index].request.count {
                    let count = connections[index].request[connections[index].sent...].withUnsafeBytes { send(connections[index].fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if count > 0 { connections[index].sent += count } else if errno != EAGAIN { connections[index].done = true }
                } else {
                    let count = recv(connections[index].fd, &buffer, buffer.count, 0)
                    if count > 0 {
                        connections[index].response += buffer[0..<count]
                    } else if count == 0 || errno != EAGAIN {
                        // As every HTTP client does: the server's connection slot frees
                        // when both sides have closed.
                        connections[index].done = true
                        close(connections[index].fd)
                        connections[index].fd = -1
                    }
                }
            }
        }
        return connections.map { connection in
            if connection.fd >= 0 { close(connection.fd) }
            let head = String(decoding: connection.response.prefix(12), as: UTF8.self)
            guard head.hasPrefix("HTTP/1.1 "), let status = Int(head.dropFirst(9).prefix(3)) else { return 0 }
            return status
        }
    }

    func testThousandsOfConcurrentProbeRequestsGetClearAnswersAndRunKeepsItsSchedule() async throws {
        try Privilege.requireRoot()
        let influx = try await InfluxDBTestServer.start()
        try await influx.createDatabase("netprobe")
        let listener = try LoopbackListener()
        let setup = try PrometheusAcceptanceTests.makeSetup(influx: influx, open: listener.port)
        let run = try await PrometheusAcceptanceTests.startRun(setup)
        defer { XCTAssertEqual(run.stop(), 0, run.errorLog) }
        // Rounds of 127.0.0.1 in InfluxDB before the flood, and netprobe's memory then.
        let started = Date()
        let warm = try await TestEnvironment.eventually(within: 60) {
            let rows = try await influx.series("SELECT count(result_code) FROM icmp WHERE target = '127.0.0.1'", database: "netprobe")
            let count = ((rows.first?["values"] as? [[Any]])?.first?.last as? NSNumber)?.intValue ?? 0
            return count >= 2
        }
        XCTAssertTrue(warm)
        let before = try XCTUnwrap(run.residentKilobytes)

        let kinds = ["malformed", "forbidden", "probe"]
        var paths: [String] = []
        for index in 0..<3000 {
            switch kinds[index % 3] {
            case "malformed": paths.append(["/probe?module=icmp&target=%ZZ", "/probe?module=nope&target=127.0.0.1", "/probe?module=tcp&target=" + String(repeating: "x", count: 1500)][index % 9 / 3])
            case "forbidden": paths.append("/probe?module=tcp&target=\(randomLoopbackAddress()):\(listener.port)")
            default: paths.append("/probe?module=tcp&target=127.0.0.1:\(listener.port)")
            }
        }
        let statuses = Self.flood(port: setup.port, paths: paths, deadline: Date().addingTimeInterval(120))
        var tally: [String: [Int: Int]] = [:]
        for (index, status) in statuses.enumerated() { tally[kinds[index % 3], default: [:]][status, default: 0] += 1 }
        print("flood: \(tally)")
        XCTAssertEqual(Set(tally["malformed", default: [:]].keys), [400], "every malformed request gets a 400")
        XCTAssertEqual(Set(tally["forbidden", default: [:]].keys), [403], "every target outside the allow-list gets a 403")
        XCTAssertTrue(Set(tally["probe", default: [:]].keys).isSubset(of: [200, 429, 503]), "a real probe is answered or refused by the limits: \(tally)")
        XCTAssertFalse(statuses.contains(0), "every request was answered")

        // Memory: the flood is refused, not queued. 64 MB is far above what netprobe needs
        // for the connections Hummingbird keeps open (256), far below a queue of 3000.
        let after = try XCTUnwrap(run.residentKilobytes)
        print("flood: netprobe resident \(before) kB before, \(after) kB after")
        XCTAssertLessThan(after - before, 64_000)

        // The probing schedule went on: no round missing since the start.
        let times = try await influx.series("SELECT result_code FROM icmp WHERE target = '127.0.0.1' AND time > \(Int64(started.timeIntervalSince1970 * 1e9) - 2_000_000_000) ORDER BY time", database: "netprobe")
        let stamps = ((times.first?["values"] as? [[Any]]) ?? []).compactMap { ($0.first as? NSNumber)?.int64Value }
        XCTAssertGreaterThanOrEqual(stamps.count, 3)
        for (earlier, later) in zip(stamps, stamps.dropFirst()) {
            XCTAssertEqual(later - earlier, 1_000_000_000, "consecutive rounds one interval apart (a round's time is its planned start): none skipped")
        }
        let metrics = try await TestEnvironment.http("GET", setup.metricsURL)
        XCTAssertTrue(String(decoding: metrics.body, as: UTF8.self).contains("netprobe_rounds_abandoned_total{probe=\"prom-e2e\"} 0\n"))
    }
}
