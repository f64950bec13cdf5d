import ProbeResults
import ProbeConfig
import Foundation
import Logging
import Synchronization
import TestSupport
import XCTest
@testable import InfluxSink
#if canImport(Glibc)
import Glibc
#endif

/// Fast retries for tests; production defaults are 0.5 s doubling to 30 s.
let quickPolicy = DeliveryPolicy(initialBackoffSeconds: 0.05, maximumBackoffSeconds: 0.2, requestTimeoutSeconds: 2)

/// Point `index` of a numbered sequence: field n = index, one nanosecond timestamp each.
func sequencePoint(_ index: Int, measurement: String = "seq") -> DataPoint {
    DataPoint(measurement: measurement, tags: ["run": "test"], fields: [("n", .integer(Int64(index)))],
                timestampNanoseconds: 1_700_000_000_000_000_000 + Int64(index) * 1000)
}

func v1(_ name: String, _ url: URL, database: String = "probes", username: String? = nil, password: Secret? = nil, gzip: Bool = false) -> InfluxServer {
    InfluxServer(name: name, url: url, api: .v1(database: database, retentionPolicy: nil, username: username, password: password), gzip: gzip)
}

/// The sink's log lines: what it decided (the wait before a retry it announces), which no
/// clock reading can show on a loaded machine.
final class CapturedLog: Sendable {
    let lines = Mutex<[String]>([])

    var logger: Logger {
        var logger = Logger(label: "sink") { _ in Handler(captured: self) }
        logger.logLevel = .trace
        return logger
    }

    /// The waits, in seconds, that the sender announced before retry number 1, 2, ... (it
    /// announces the 1st, 2nd, 4th, 8th...).
    var announcedWaits: [Int: Double] {
        var waits: [Int: Double] = [:]
        for line in lines.withLock({ $0 }) {
            guard let range = line.range(of: "retrying in "), let attemptRange = line.range(of: " s (attempt ") else { continue }
            let wait = Double(line[range.upperBound..<attemptRange.lowerBound])
            let attempt = Int(line[attemptRange.upperBound...].prefix { $0.isNumber })
            if let wait, let attempt { waits[attempt] = wait }
        }
        return waits
    }

    struct Handler: LogHandler {
        let captured: CapturedLog
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            captured.lines.withLock { $0.append(event.message.description) }
        }
    }
}

final class DeliveryTests: XCTestCase {
    private var spool: URL!

    override func setUpWithError() throws {
        spool = try TestEnvironment.temporaryDirectory("influxsink-spool")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: spool)
    }

    private func makeSink(_ servers: [InfluxServer], batchSize: Int = 50, flushMilliseconds: Int64 = 50, limit: Int64 = 1 << 26,
                          policy: DeliveryPolicy = quickPolicy, logger: Logger = testLogger("sink")) throws -> InfluxSink {
        try InfluxSink(servers: servers, spoolDirectory: spool.path, spoolLimitBytes: limit, batchSize: batchSize,
                       flushIntervalNanoseconds: flushMilliseconds * 1_000_000, logger: logger, deliveryPolicy: policy)
    }

    private func sequenceValues(_ server: InfluxDBTestServer, database: String = "probes") async throws -> [Int] {
        try await server.column("SELECT n FROM seq", database: database, column: "n").compactMap { ($0 as? NSNumber)?.intValue }
    }

    private func statistics(_ sink: InfluxSink, _ name: String) -> ServerStatistics {
        sink.statistics().first { $0.name == name }!
    }

    func testHealthyServerGetsEveryPointWhileTheOtherIsDownAndBothEndComplete() async throws {
        let healthy = try await InfluxDBTestServer.start()
        let flaky = try await InfluxDBTestServer.start()
        for server in [healthy, flaky] { try await server.createDatabase("probes") }
        let sink = try makeSink([v1("healthy", healthy.url), v1("flaky", flaky.url)], batchSize: 10)
        var next = 0
        func writeBatch() throws {
            try sink.write((next..<next + 10).map { sequencePoint($0) })
            next += 10
        }
        for _ in 0..<5 { try writeBatch() }
        let bothHaveFirst = TestEnvironment.eventually(within: 60) {
            statistics(sink, "healthy").written == 50 && statistics(sink, "flaky").written == 50
        }
        XCTAssertTrue(bothHaveFirst, "\(sink.statistics())")

        flaky.stop()
        var delays: [Double] = []
        for _ in 0..<20 {
            let failedAttempts = statistics(sink, "flaky").sendErrors
            try writeBatch()
            let written = Date()
            let target = next
            // Each batch reaches the healthy server before the next is written, while the other
            // server is still down: nothing waits for the dead one (how long it took is printed).
            let arrived = try await TestEnvironment.eventually(within: 60) { try await sequenceValues(healthy).count == target }
            XCTAssertTrue(arrived)
            delays.append(Date().timeIntervalSince(written))
            // ...and the dead one is being tried meanwhile: a failed attempt since the batch.
            let tried = TestEnvironment.eventually(within: 60) { statistics(sink, "flaky").sendErrors > failedAttempts }
            XCTAssertTrue(tried, "\(sink.statistics())")
            XCTAssertEqual(statistics(sink, "flaky").written, 50, "the other server is still down")
        }
        let whileDown = statistics(sink, "flaky")
        XCTAssertGreaterThan(whileDown.sendErrors, 0)
        XCTAssertEqual(whileDown.spooled, 200)
        try await flaky.restart()
        let flakyCaughtUp = try await TestEnvironment.eventually(within: 60) { try await sequenceValues(flaky).count == next }
        XCTAssertTrue(flakyCaughtUp, "\(sink.statistics())")
        await sink.shutdown(deadlineSeconds: 5)

        for server in [healthy, flaky] {
            let values = try await sequenceValues(server)
            XCTAssertEqual(values.sorted(), Array(0..<next), "no gaps, no duplicates")
        }
        for statistics in sink.statistics() {
            XCTAssertEqual(statistics.written, next, "every point sent once: \(statistics)")
            XCTAssertEqual(statistics.spooled, 0)
            XCTAssertEqual(statistics.permanentErrors, 0)
        }
        let sorted = delays.sorted()
        print("delivery: healthy server while the other was down: median \(Int(sorted[sorted.count / 2] * 1000)) ms, max \(Int(sorted.last! * 1000)) ms (write to visible in a query, flush interval 50 ms); flaky: \(statistics(sink, "flaky"))")
    }

    func testPointsSpooledBeforeSIGKILLAreReplayedByTheNextProcessAndATornLineIsIgnored() async throws {
        _ = try TestEnvironment.requireBinary("influxd", package: "influxdb")
        let port = TestEnvironment.freePort()
        let ready = spool.appendingPathComponent("child-ready").path
        let child = Process()
        child.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0])
        child.arguments = ["InfluxSinkTests.ChildProcessTests/testChildWritesThenWaitsToBeKilled"]
        var environment = ProcessInfo.processInfo.environment
        environment["INFLUXSINK_CHILD_SPOOL"] = spool.path
        environment["INFLUXSINK_CHILD_URL"] = "http://127.0.0.1:\(port)"
        environment["INFLUXSINK_CHILD_READY"] = ready
        child.environment = environment
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        let childReady = TestEnvironment.eventually(within: 30) { FileManager.default.fileExists(atPath: ready) }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        XCTAssertTrue(childReady, "the child never reported its points spooled")
        XCTAssertEqual(child.terminationReason, .uncaughtSignal)

        // A crash in the middle of write(2): the last segment ends in half a line.
        let directory = spool.appendingPathComponent("db").path
        let segments = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".lp") && $0 != "dead-letter.lp" }.sorted()
        let last = try XCTUnwrap(segments.last)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/" + last))
        handle.seekToEndOfFile()
        handle.write(Data("seq,run=test n=99999".utf8))
        try handle.close()

        let server = try await InfluxDBTestServer.start(port: port)
        try await server.createDatabase("probes")
        let sink = try makeSink([v1("db", server.url)])
        XCTAssertEqual(statistics(sink, "db").spooled, ChildProcessTests.pointCount)
        let replayed = try await TestEnvironment.eventually(within: 60) { try await sequenceValues(server).count == ChildProcessTests.pointCount }
        await sink.shutdown(deadlineSeconds: 5)
        XCTAssertTrue(replayed)
        let values = try await sequenceValues(server)
        XCTAssertEqual(values.sorted(), Array(0..<ChildProcessTests.pointCount))
        XCTAssertEqual(statistics(sink, "db").written, ChildProcessTests.pointCount)
        XCTAssertEqual(statistics(sink, "db").spooled, 0)
        // Acknowledged segments are gone; only the cursor, the lock and the empty active segment stay.
        let left = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".lp") }
        XCTAssertLessThanOrEqual(left.count, 1, "\(left)")
    }

    func testBasicAuthWorksAndAWrongPasswordIsAPermanentErrorNotARetryLoop() async throws {
        let server = try await InfluxDBTestServer.start(authEnabled: true)
        try await server.createDatabase("probes")
        let sink = try makeSink([v1("good", server.url, username: "admin", password: Secret("admin-secret"), gzip: true),
                                 v1("bad", server.url, username: "admin", password: Secret("wrong"))])
        try sink.write((0..<20).map { sequencePoint($0) })
        let settled = TestEnvironment.eventually(within: 60) {
            statistics(sink, "good").written == 20 && statistics(sink, "bad").permanentErrors == 20
        }
        XCTAssertTrue(settled, "\(sink.statistics())")
        // A later batch, in place of a pause to see whether the first is retried: each
        // server's batches go out in order, so once the later one is refused too, the first
        // was given up on (a retry, or a resend of it, would come before it).
        try sink.write((20..<25).map { sequencePoint($0) })
        let deadLetterPath = spool.appendingPathComponent("bad/dead-letter.lp").path
        func deadLetterLines() -> [Substring] { ((try? String(contentsOfFile: deadLetterPath, encoding: .utf8)) ?? "").split(separator: "\n") }
        // The counters move just before the dead-letter file is written: wait for both.
        let laterSettled = TestEnvironment.eventually(within: 60) {
            statistics(sink, "good").written == 25 && statistics(sink, "bad").permanentErrors >= 25 && deadLetterLines().count >= 2 + 25
        }
        XCTAssertTrue(laterSettled, "\(sink.statistics())")
        await sink.shutdown(deadlineSeconds: 2)
        let values = try await sequenceValues(server)
        XCTAssertEqual(values.sorted(), Array(0..<25))
        let bad = statistics(sink, "bad")
        XCTAssertEqual(bad.retried, 0)
        XCTAssertEqual(bad.sendErrors, 2, "one refusal per batch")
        XCTAssertEqual(bad.permanentErrors, 25)
        XCTAssertEqual(bad.spooled, 0)
        XCTAssertTrue(bad.lastError?.contains("authentication failed for server bad: check username/password") ?? false, bad.lastError ?? "")
        XCTAssertFalse(bad.lastError?.contains("wrong") ?? true, "no secrets in errors")
        let lines = deadLetterLines()
        XCTAssertEqual(lines.count, 2 + 25, "a header per batch, each point once")
        let headers = lines.enumerated().filter { $0.element.hasPrefix("# ") }
        XCTAssertEqual(headers.map(\.offset), [0, 21], "a header before each batch")
        XCTAssertTrue(headers.allSatisfy { $0.element.contains("HTTP 401") }, "\(headers.map(\.element))")
        XCTAssertEqual(lines.filter { !$0.hasPrefix("# ") }.map(String.init), (0..<25).map { LineProtocol.encode(sequencePoint($0))! },
                       "the batches in order, the first not sent twice")
    }

    func testMissingDatabaseAndTypeConflictAreReportedClearlyAndDeadLettered() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("probes")
        let sink = try makeSink([v1("nodb", server.url, database: "missing"), v1("ok", server.url)])
        try sink.write([DataPoint(measurement: "clash", fields: [("v", .float(1.5))], timestampNanoseconds: 1)])
        let first = TestEnvironment.eventually(within: 60) { statistics(sink, "ok").written == 1 }
        XCTAssertTrue(first)
        // Next batch: one line conflicts with the stored float, one does not.
        try sink.write([DataPoint(measurement: "clash", fields: [("v", .integer(2))], timestampNanoseconds: 2),
                        DataPoint(measurement: "clash", fields: [("v", .float(3.5))], timestampNanoseconds: 3)])
        let settled = TestEnvironment.eventually(within: 60) {
            statistics(sink, "nodb").permanentErrors == 3 && statistics(sink, "ok").sendErrors == 1
        }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(settled, "\(sink.statistics())")
        let missing = statistics(sink, "nodb")
        XCTAssertTrue(missing.lastError?.contains("database \"missing\" not found on server nodb") ?? false, missing.lastError ?? "")
        XCTAssertEqual(missing.retried, 0)
        let partial = statistics(sink, "ok")
        XCTAssertTrue(partial.lastError?.contains("partial write to server ok") ?? false, partial.lastError ?? "")
        XCTAssertEqual(partial.retried, 0)
        XCTAssertEqual(partial.written, 2)
        XCTAssertEqual(partial.permanentErrors, 1)
        let stored = try await server.column("SELECT v FROM clash", database: "probes", column: "v")
        XCTAssertEqual(stored.compactMap { ($0 as? NSNumber)?.doubleValue }, [1.5, 3.5], "the server kept the valid line")
        XCTAssertTrue(FileManager.default.fileExists(atPath: spool.appendingPathComponent("ok/dead-letter.lp").path))
    }

    func testV2APIWritesToVictoriaMetrics() async throws {
        let victoria = try await VictoriaMetricsTestServer.start()
        let sink = try makeSink([InfluxServer(name: "vm", url: victoria.url, api: .v2(org: "netprobe", bucket: "probes", token: Secret("secret-token")), gzip: true)])
        let base: Int64 = 1_700_000_000_000_000_000
        try sink.write((0..<40).map { index in
            DataPoint(measurement: "probe", tags: ["target": "host \(index % 2)", "kind": "icmp"],
                        fields: [("rtt", .float(Double(index) / 4)), ("ok", .boolean(true))],
                        timestampNanoseconds: base + Int64(index) * 1_000_000_000)
        })
        let sent = TestEnvironment.eventually(within: 60) { statistics(sink, "vm").written == 40 }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(sent, "\(sink.statistics())")
        var series: [[String: Any]] = []
        let visible = try await TestEnvironment.eventually(within: 60) {
            series = try await victoria.export(match: "{__name__=\"probe_rtt\"}")
            return series.reduce(0) { $0 + (($1["values"] as? [Any])?.count ?? 0) } == 40
        }
        XCTAssertTrue(visible, "\(series)")
        for item in series {
            let metric = item["metric"] as? [String: String] ?? [:]
            XCTAssertEqual(metric["kind"], "icmp")
            let even = metric["target"] == "host 0"
            let values = (item["values"] as? [NSNumber] ?? []).map(\.doubleValue)
            let timestamps = (item["timestamps"] as? [NSNumber] ?? []).map(\.int64Value)
            let indices = (0..<40).filter { $0.isMultiple(of: 2) == even }
            XCTAssertEqual(values, indices.map { Double($0) / 4 })
            XCTAssertEqual(timestamps, indices.map { (base + Int64($0) * 1_000_000_000) / 1_000_000 }, "milliseconds")
        }
    }

    func testRetryAfterOn429And503IsHonoured() async throws {
        let stub = try StubHTTPServer { index in
            switch index {
            case 0: return .init(status: 429, headers: ["Retry-After": "1"], body: #"{"code":"too many requests"}"#)
            case 1: return .init(status: 503, headers: ["Retry-After": "1"])
            default: return .init(status: 204)
            }
        }
        defer { stub.stop() }
        let log = CapturedLog()
        let sink = try makeSink([InfluxServer(name: "v2", url: stub.url.appendingPathComponent("prefix"), api: .v2(org: "my org+", bucket: "b/1", token: Secret("T0K")), gzip: true)],
                                logger: log.logger)
        try sink.write((0..<5).map { sequencePoint($0) })
        let done = TestEnvironment.eventually(within: 60) { statistics(sink, "v2").written == 5 }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(done, "\(sink.statistics())")
        let requests = stub.requests
        XCTAssertEqual(requests.count, 3)
        // Honoured: the sender waits the server's 1 s instead of its own backoff (0.05 s
        // doubling, quickPolicy). What it chose is asserted; how long it took is printed.
        XCTAssertEqual(log.announcedWaits, [1: 1.0, 2: 1.0], "\(log.lines.withLock { $0 })")
        print("delivery: Retry-After 1 s: requests \(zip(requests, requests.dropFirst()).map { String(format: "%.2f", $1.time.timeIntervalSince($0.time)) }) s apart")
        let counters = statistics(sink, "v2")
        XCTAssertEqual(counters.retried, 2)
        XCTAssertEqual(counters.sendErrors, 2)
        XCTAssertTrue(counters.lastError?.contains("HTTP 503") ?? false)
        XCTAssertEqual(requests[0].requestLine, "POST /prefix/api/v2/write?org=my%20org%2B&bucket=b%2F1&precision=ns HTTP/1.1")
        XCTAssertEqual(requests[0].headers["authorization"], "Token T0K")
        XCTAssertEqual(requests[0].headers["content-encoding"], "gzip")
        XCTAssertEqual(Array(requests[0].body.prefix(2)), [0x1f, 0x8b])
    }

    func testServerErrorsAreRetriedWithGrowingBackoffAndClientErrorsAreNot() async throws {
        let failing = try StubHTTPServer { index in index < 2 ? .init(status: 500, body: "boom") : .init(status: 204) }
        let refusing = try StubHTTPServer { _ in .init(status: 400, body: #"{"error":"unable to parse 'x': bad"}"#) }
        defer {
            failing.stop()
            refusing.stop()
        }
        let policy = DeliveryPolicy(initialBackoffSeconds: 0.2, maximumBackoffSeconds: 1, requestTimeoutSeconds: 2)
        let log = CapturedLog()
        let sink = try makeSink([v1("failing", failing.url, username: "u", password: Secret("p")), v1("refusing", refusing.url)], policy: policy,
                                logger: log.logger)
        try sink.write((0..<3).map { sequencePoint($0) })
        let done = TestEnvironment.eventually(within: 60) {
            statistics(sink, "failing").written == 3 && statistics(sink, "refusing").permanentErrors == 3
        }
        XCTAssertTrue(done, "\(sink.statistics())")
        // A later batch, in place of a pause to see whether the 400 is retried: batches go
        // out in order, so the refusing server's next request is a retry if there is one.
        let later = (3..<5).map { sequencePoint($0) }
        try sink.write(later)
        let laterDone = TestEnvironment.eventually(within: 60) {
            statistics(sink, "failing").written == 5 && statistics(sink, "refusing").permanentErrors >= 5
        }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(laterDone, "\(sink.statistics())")
        let body = { (points: [DataPoint]) in points.map { LineProtocol.encode($0)! + "\n" }.joined() }
        let attempts = failing.requests
        XCTAssertEqual(attempts.count, 4)
        // Growing: each wait is the policy's, with its jitter (50 to 100 %): 0.1-0.2 s, then
        // 0.2-0.4 s (announced to a tenth). The waits are asserted; the gaps are printed.
        let waits = log.announcedWaits
        XCTAssertTrue((0.1...0.2).contains(waits[1] ?? -1) && (0.2...0.4).contains(waits[2] ?? -1), "announced waits \(waits)")
        XCTAssertGreaterThanOrEqual(waits[2] ?? -1, waits[1] ?? 0, "the second wait is not shorter than the first")
        print("delivery: backoff 0.2 s: failing attempts \(zip(attempts, attempts.dropFirst()).map { String(format: "%.2f", $1.time.timeIntervalSince($0.time)) }) s apart, announced \(waits)")
        XCTAssertEqual(attempts[0].headers["authorization"], "Basic " + Data("u:p".utf8).base64EncodedString())
        XCTAssertEqual(attempts[0].requestLine, "POST /write?db=probes&precision=ns HTTP/1.1")
        XCTAssertEqual(attempts.map { String(decoding: $0.body, as: UTF8.self) },
                       Array(repeating: body((0..<3).map { sequencePoint($0) }), count: 3) + [body(later)], "the same batch until stored, then the next")
        XCTAssertEqual(statistics(sink, "failing").retried, 2)
        XCTAssertEqual(refusing.requests.map { String(decoding: $0.body, as: UTF8.self) }, [body((0..<3).map { sequencePoint($0) }), body(later)],
                       "a 400 is not retried: the next request is the next batch")
        XCTAssertEqual(statistics(sink, "refusing").retried, 0)
    }

    func testSpoolOverItsLimitDropsTheOldestPoints() async throws {
        let port = TestEnvironment.freePort()
        let sink = try makeSink([v1("late", URL(string: "http://127.0.0.1:\(port)")!)], batchSize: 1000, limit: 2000)
        let lineBytes = LineProtocol.encode(sequencePoint(0))!.utf8.count + 1
        for start in stride(from: 0, to: 200, by: 20) {
            try sink.write((start..<start + 20).map { sequencePoint($0) })
        }
        // Group commit: the points reach the spool (and its limit) within the commit interval.
        let committed = TestEnvironment.eventually(within: 10) { statistics(sink, "late").buffered == 0 }
        XCTAssertTrue(committed)
        let full = statistics(sink, "late")
        XCTAssertGreaterThan(full.dropped, 0)
        XCTAssertLessThanOrEqual(full.spooled * lineBytes, 2000)
        XCTAssertEqual(full.spooled + full.dropped, 200)
        let stub = try StubHTTPServer(port: port) { _ in .init(status: 204) }
        defer { stub.stop() }
        let drained = TestEnvironment.eventually(within: 60) { statistics(sink, "late").spooled == 0 }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(drained, "\(sink.statistics())")
        let received = stub.requests.flatMap { String(decoding: $0.body, as: UTF8.self).split(separator: "\n").map(String.init) }
        let expected = ((200 - received.count)..<200).map { LineProtocol.encode(sequencePoint($0))! }
        XCTAssertEqual(received, expected, "the newest points, in order")
        XCTAssertEqual(received.count + statistics(sink, "late").dropped, 200)
    }

    func testShutdownReturnsByItsDeadlineAndTheNextSinkSendsWhatWasLeft() async throws {
        let port = TestEnvironment.freePort()
        let server = v1("later", URL(string: "http://127.0.0.1:\(port)")!)
        do {
            let sink = try makeSink([server])
            try sink.write((0..<30).map { sequencePoint($0) })
            let started = Date()
            await sink.shutdown(deadlineSeconds: 0.5)
            print("delivery: shutdown with a 0.5 s deadline and the server down returned after \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            XCTAssertEqual(statistics(sink, "later").spooled, 30)
            XCTAssertThrowsError(try sink.write([sequencePoint(99)]))
        }
        let stub = try StubHTTPServer(port: port) { _ in .init(status: 204) }
        defer { stub.stop() }
        let sink = try makeSink([server])
        let sent = TestEnvironment.eventually(within: 60) { statistics(sink, "later").written == 30 }
        await sink.shutdown(deadlineSeconds: 2)
        XCTAssertTrue(sent, "\(sink.statistics())")
        XCTAssertEqual(stub.requests.flatMap { String(decoding: $0.body, as: UTF8.self).split(separator: "\n") }.count, 30)
    }

    func testSecondProcessCannotOpenTheSameSpool() throws {
        let sink = try makeSink([v1("one", URL(string: "http://127.0.0.1:9")!)])
        XCTAssertThrowsError(try makeSink([v1("one", URL(string: "http://127.0.0.1:9")!)])) { error in
            guard case InfluxSinkError.spoolLocked = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try InfluxSink(servers: [v1("a", URL(string: "http://x")!), v1("a", URL(string: "http://y")!)], spoolDirectory: spool.path + "/other",
                                            spoolLimitBytes: 1000, batchSize: 1, flushIntervalNanoseconds: 1, logger: testLogger("x")))
        _ = sink
    }
}

/// Run by the SIGKILL test as a child process (the same test binary); skipped otherwise.
final class ChildProcessTests: XCTestCase {
    static let pointCount = 200

    func testChildWritesThenWaitsToBeKilled() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let spool = environment["INFLUXSINK_CHILD_SPOOL"], let url = environment["INFLUXSINK_CHILD_URL"].flatMap(URL.init(string:)),
              let ready = environment["INFLUXSINK_CHILD_READY"] else {
            throw XCTSkip("helper for the SIGKILL test; runs only as its child process")
        }
        let sink = try InfluxSink(servers: [v1("db", url)], spoolDirectory: spool, spoolLimitBytes: 1 << 26, batchSize: 50,
                                  flushIntervalNanoseconds: 10_000_000, logger: testLogger("child"), deliveryPolicy: quickPolicy)
        for start in stride(from: 0, to: Self.pointCount, by: 50) {
            try sink.write((start..<start + 50).map { sequencePoint($0) })
        }
        _ = FileManager.default.createFile(atPath: ready, contents: Data())
        try await Task.sleep(for: .seconds(60))
        XCTFail("should have been killed")
    }
}
