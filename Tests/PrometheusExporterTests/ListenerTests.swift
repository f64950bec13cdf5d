import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import TestSupport
import XCTest
@testable import PrometheusExporter
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP listener under clients that misbehave (issue 25, acceptance 4 and 5): idle and
/// trickling connections cannot keep a scrape out, each one closes at its header deadline,
/// and the small things a user meets answer as HTTP says (405, HEAD, 400 with the reason,
/// a busy port in words, IPv6 loopback).
final class ListenerTests: XCTestCase {
    let logger = Logger(label: "test")

    /// Numbers events across threads, so a test can assert their order (not their times).
    final class Sequencer: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0
        func take() -> Int { lock.withLock { defer { next += 1 }; return next } }
    }

    /// Connections that send a request header one byte a second and never finish it, and
    /// what happened to each: closed by the server (EOF or reset) and when, in sequence
    /// numbers; whether any byte of an answer came.
    final class Tricklers: @unchecked Sendable {
        private let lock = NSLock()
        private var descriptors: [Int32]
        private var closedAt: [Int?]
        private var answered: [Bool]
        private var stopped = false
        private var thread: Thread?
        private let sequencer: Sequencer

        init(count: Int, port: Int, sequencer: Sequencer) throws {
            self.sequencer = sequencer
            descriptors = []
            for _ in 0..<count {
                let fd = try connectToLoopback(port: port)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                descriptors.append(fd)
            }
            closedAt = Array(repeating: nil, count: count)
            answered = Array(repeating: false, count: count)
            let thread = Thread { [self] in trickle() }
            self.thread = thread
            thread.start()
        }

        private func trickle() {
            let header = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
            var sent = 0
            var nextByte = Date()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !lock.withLock({ stopped }) {
                if Date() >= nextByte, sent < header.count - 2 {
                    for (index, fd) in descriptors.enumerated() where lock.withLock({ closedAt[index] == nil }) {
                        _ = header[sent...sent].withUnsafeBytes { send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                    }
                    sent += 1
                    nextByte = Date().addingTimeInterval(1)
                }
                let open = descriptors.indices.filter { index in lock.withLock { closedAt[index] == nil } }
                if open.isEmpty { return }
                var polled = open.map { pollfd(fd: descriptors[$0], events: Int16(POLLIN), revents: 0) }
                guard poll(&polled, nfds_t(polled.count), 100) > 0 else { continue }
                for (slot, index) in open.enumerated() where polled[slot].revents != 0 {
                    let count = recv(descriptors[index], &buffer, buffer.count, 0)
                    if count > 0 {
                        lock.withLock { answered[index] = true }
                    } else if count == 0 || errno != EAGAIN {
                        let order = sequencer.take()
                        lock.withLock { closedAt[index] = order }
                    }
                }
            }
        }

        /// When each was closed by the server (nil: still open).
        var closures: [Int?] { lock.withLock { closedAt } }
        var anyAnswered: Bool { lock.withLock { answered.contains(true) } }

        func stop() {
            lock.withLock { stopped = true }
            // Its loop looks at `stopped` every 100 ms at most; its descriptors are closed only once it is done.
            guard TestEnvironment.eventually(within: 30, { thread?.isFinished != false }) else { return XCTFail("the reading thread did not stop") }
            descriptors.forEach { close($0) }
        }
    }

    func makeExporter(limits: ConnectionLimits = ConnectionLimits(), host: String = "127.0.0.1", blackbox: BlackboxProber? = nil) async throws -> (PrometheusExporter, Int) {
        let settings = PrometheusSettings(host: host, port: 0, probe: BlackboxSettings(allowedPrefixes: [AddressPrefix(parsing: "127.0.0.0/8")!]))
        let answers = try blackbox ?? BlackboxProber(settings: settings.probe, prober: OnDemandEngine(icmpSockets: nil, logger: logger), logger: logger)
        let exporter = PrometheusExporter(settings: settings, connectionLimits: limits, blackbox: answers, logger: logger)
        let port = try await exporter.start()
        return (exporter, port)
    }

    func testAScrapeIsAnsweredWhileMoreConnectionsThanTheCapTrickleTheirHeadersAndEachClosesAtItsDeadline() async throws {
        ResourceLimits.raiseOpenFileLimit()
        // The default limits, with a header deadline long enough that a slow CI machine
        // connects all of them and scrapes well inside it (ordering, not timing, is asserted).
        var limits = ConnectionLimits()
        limits.headerTimeout = .seconds(15)
        let (exporter, port) = try await makeExporter(limits: limits)
        let sequencer = Sequencer()
        let count = limits.maximumServing + 50
        let tricklers = try Tricklers(count: count, port: port, sequencer: sequencer)
        defer { tricklers.stop() }
        let waiting = TestEnvironment.eventually(within: 30) { exporter.connections.open.waiting == count }
        XCTAssertTrue(waiting, "every trickling connection was accepted: \(exporter.connections.open)")

        let (status, body) = try await TestEnvironment.http("GET", URL(string: "http://127.0.0.1:\(port)/metrics")!)
        let answeredAt = sequencer.take()
        XCTAssertEqual(status, 200)
        XCTAssertTrue(String(decoding: body, as: UTF8.self).contains("netprobe_http_connections{probe=\"\",state=\"waiting\"} \(count)\n"))

        let allClosed = TestEnvironment.eventually(within: 60) { !tricklers.closures.contains(nil) }
        XCTAssertTrue(allClosed, "every trickling connection was closed: \(tricklers.closures.filter { $0 == nil }.count) open")
        XCTAssertGreaterThan(tricklers.closures.compactMap { $0 }.min() ?? -1, answeredAt, "the scrape was answered before any trickling connection was closed")
        XCTAssertFalse(tricklers.anyAnswered, "a header never finished is never answered")
        let closures = exporter.connections.closures
        XCTAssertEqual(closures[.headerTimeout], count, "each was closed by its header deadline")
        XCTAssertEqual(closures[.evicted], nil)
        await exporter.stop()
    }

    func testBeyondTheWaitingCapTheConnectionWaitingLongestIsClosedAndTheScrapeStillAnswered() async throws {
        var limits = ConnectionLimits()
        limits.maximumWaiting = 8
        limits.headerTimeout = .seconds(60)
        let (exporter, port) = try await makeExporter(limits: limits)
        let sequencer = Sequencer()
        let tricklers = try Tricklers(count: 8 + 50, port: port, sequencer: sequencer)
        defer { tricklers.stop() }
        let settled = TestEnvironment.eventually(within: 30) { tricklers.closures.compactMap { $0 }.count == 50 }
        XCTAssertTrue(settled, "50 connections beyond the 8 waiting ones were made room for")
        XCTAssertEqual(exporter.connections.open.waiting, 8)
        let (status, _) = try await TestEnvironment.http("GET", URL(string: "http://127.0.0.1:\(port)/metrics")!)
        XCTAssertEqual(status, 200, "the scrape's connection took the place of the one waiting longest")
        let closed = TestEnvironment.eventually(within: 30) { tricklers.closures.compactMap { $0 }.count == 51 }
        XCTAssertTrue(closed)
        XCTAssertEqual(exporter.connections.closures[.evicted], 51)
        XCTAssertEqual(tricklers.closures.filter { $0 == nil }.count, 7, "the others still wait")
        await exporter.stop()
    }

    func testRequestsBeyondTheServingCapGet503WithTheReason() async throws {
        var limits = ConnectionLimits()
        limits.maximumServing = 2
        let resolver = BlackboxTests.CountingResolver(address: "127.0.0.1")
        resolver.holding = true
        let listener = try LoopbackListener()
        let settings = BlackboxSettings(allowedNames: [AllowedName("db1.example.com")], allowedPrefixes: [AddressPrefix(parsing: "127.0.0.0/8")!])
        let blackbox = BlackboxProber(settings: settings, prober: try OnDemandEngine(icmpSockets: nil, logger: logger, lookUp: { name, preference, _ in await resolver.lookUp(name, preference) }), logger: logger)
        let (exporter, port) = try await makeExporter(limits: limits, blackbox: blackbox)
        let probe = URL(string: "http://127.0.0.1:\(port)/probe?module=tcp&target=db1.example.com:\(listener.port)")!
        let held = (0..<2).map { _ in Task { try await TestEnvironment.http("GET", probe) } }
        let holding = TestEnvironment.eventually(within: 30) { resolver.heldCount == 2 }
        XCTAssertTrue(holding)
        let (status, body) = try await TestEnvironment.http("GET", URL(string: "http://127.0.0.1:\(port)/metrics")!)
        XCTAssertEqual(status, 503)
        XCTAssertEqual(String(decoding: body, as: UTF8.self), "2 requests are being answered; try again shortly\n")
        XCTAssertEqual(exporter.connections.closures[.busy], 1)
        resolver.release()
        for task in held {
            let answer = try await task.value
            XCTAssertEqual(answer.status, 200)
        }
        let (after, _) = try await TestEnvironment.http("GET", URL(string: "http://127.0.0.1:\(port)/metrics")!)
        XCTAssertEqual(after, 200, "the slots are free again")
        await exporter.stop()
    }

    func testWrongMethodsGet405HeadWorksAndAnOverlongURLGets400WithTheReason() async throws {
        let (exporter, port) = try await makeExporter()
        let base = "http://127.0.0.1:\(port)"
        for (method, path, allow) in [("POST", "/metrics", "GET, HEAD"), ("DELETE", "/probe", "GET"), ("PUT", "/", "GET, HEAD")] {
            let (status, body) = try await rawRequest(port: port, "\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            XCTAssertEqual(status, 405, "\(method) \(path)")
            XCTAssertTrue(body.contains("Allow: \(allow)\r\n"), body)
            XCTAssertTrue(body.hasSuffix("\(path) answers \(allow) only\n"), body)
        }
        let (unknown, _) = try await TestEnvironment.http("GET", URL(string: base + "/nothing")!)
        XCTAssertEqual(unknown, 404, "a path that does not exist is still 404")

        let (head, headText) = try await rawRequest(port: port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(head, 200)
        XCTAssertTrue(headText.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), headText)
        XCTAssertTrue(headText.hasSuffix("\r\n\r\n"), "no body: \(headText)")

        let longTarget = String(repeating: "a", count: 10_000)
        let (long, longText) = try await rawRequest(port: port, "GET /probe?module=icmp&target=\(longTarget) HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(long, 400)
        XCTAssertTrue(longText.hasSuffix("the request line or a header is too long (at most 8192 bytes each, 16384 in all); a /probe query is at most 2048 bytes\n"), longText)
        XCTAssertEqual(exporter.connections.closures[.malformed], 1)
        let (garbage, garbageText) = try await rawRequest(port: port, "NOT HTTP AT ALL\r\n\r\n")
        XCTAssertEqual(garbage, 400)
        XCTAssertTrue(garbageText.contains("malformed HTTP request"), garbageText)
        await exporter.stop()
    }

    func testAPortInUseIsSaidInWordsAndIPv6LoopbackCanBeListenedOn() async throws {
        let listener = try LoopbackListener()
        let settings = PrometheusSettings(host: "127.0.0.1", port: listener.port)
        let exporter = PrometheusExporter(settings: settings, prober: try OnDemandEngine(icmpSockets: nil, logger: logger), logger: logger)
        do {
            try await exporter.start()
            XCTFail("bound a port that is in use")
        } catch {
            XCTAssertEqual("\(error)", "cannot listen on 127.0.0.1:\(listener.port): the port is already in use: another program listens there (`ss -ltnp 'sport = :\(listener.port)'` names it); stop it, or give prometheus: listen another port")
        }
        await exporter.stop()

        let (v6, port) = try await makeExporter(host: "::1")
        let (status, text) = try await rawRequest(port: port, "GET /metrics HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n", ipv6: true)
        XCTAssertEqual(status, 200)
        XCTAssertTrue(text.contains("# TYPE netprobe_rounds_total counter\n"), text)
        await v6.stop()
    }

    func testTheCommandLineSaysWhatIsWrongWithTheListenAddress() throws {
        let listener = try LoopbackListener()
        let directory = try TestEnvironment.temporaryDirectory("netprobe-listen")
        let busy = directory.appendingPathComponent("busy.yaml")
        try "targets: {ping: null, tcp: null}\nprometheus: {listen: \"127.0.0.1:\(listener.port)\"}\n".write(to: busy, atomically: true, encoding: .utf8)
        let run = try Self.netprobe(["run", "--config", busy.path])
        XCTAssertEqual(run.status, 4, "a system error")
        XCTAssertTrue(run.output.contains("netprobe: prometheus: cannot listen on 127.0.0.1:\(listener.port): the port is already in use: another program listens there"), run.output)
        XCTAssertFalse(run.output.contains("errno"), "no raw errno text: \(run.output)")

        let open = directory.appendingPathComponent("open.yaml")
        try "targets: {ping: null, tcp: null}\nprometheus:\n  listen: 0.0.0.0:19156\n  probe: {allow: [\"198.51.100.0/24\"]}\n".write(to: open, atomically: true, encoding: .utf8)
        let validate = try Self.netprobe(["validate", "--config", open.path])
        XCTAssertEqual(validate.status, 0, validate.output)
        XCTAssertTrue(validate.output.contains("\(open.path):3:11: warning: listen 0.0.0.0 takes connections on every address of this host, and /probe is on"), validate.output)
    }

    /// The built netprobe, run to its end: exit status and everything it printed.
    static func netprobe(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestEnvironment.builtExecutable("netprobe"))
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// Sends `request` as written and reads until the server closes: the status and the
    /// whole answer, headers included.
    func rawRequest(port: Int, _ request: String, ipv6: Bool = false) async throws -> (Int, String) {
        let fd = try connectToLoopback(port: port, ipv6: ipv6)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            // A server that answers before the whole request is in (400) may close first.
            if count <= 0 { break }
            sent += count
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        let status = text.hasPrefix("HTTP/1.1 ") ? Int(text.dropFirst(9).prefix(3)) ?? 0 : 0
        return (status, text)
    }
}

/// A TCP connection to 127.0.0.1 (or ::1) on `port`, connected (blocking).
func connectToLoopback(port: Int, ipv6: Bool = false) throws -> Int32 {
    let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    let connected: Int32
    if ipv6 {
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        address.sin6_port = UInt16(port).bigEndian
        connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
    } else {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }
    guard connected == 0 else {
        let error = errno
        close(fd)
        throw POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
    }
    return fd
}
