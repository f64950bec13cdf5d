import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe run` under the faults of a sick machine (issue 10): a full disk, hung and
/// failing servers, a dead resolver. Each checks that probing goes on, that the log stays
/// at a line or two per cause per minute, that memory stays bounded and that, after
/// recovery, every point arrives except those counted as dropped. No assertion is about
/// how fast anything happens; the timing figures are printed.
final class FaultIntegrationTests: XCTestCase {
    var netprobe: String { Harness.netprobePath }

    /// 127.1.X.Y loopback addresses: every one answers ICMP on Linux.
    static func loopbackTargets(_ count: Int) -> [String] {
        (0..<count).map { "127.1.\($0 / 250).\($0 % 250 + 1)" }
    }

    func writeConfig(_ directory: URL, targets: [String], influx: [(name: String, url: String)], extra: String = "") throws -> String {
        try ("local: [" + targets.map { "\"\($0)\"" }.joined(separator: ", ") + "]\n")
            .write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        let servers = influx.map { "  - name: \($0.name)\n    url: \($0.url)\n    database: netprobe" }.joined(separator: "\n")
        let config = directory.appendingPathComponent("netprobe.yaml").path
        try """
            probe: fault-probe
            targets: {ping: ping.yaml, tcp: null}
            icmp: {interval: 1s, count: 1, spacing: 10ms, timeout: 500ms}
            resolve_interval: 1h
            spool: {directory: spool, max_size: 1MB}
            batch: {size: 1000, flush_interval: 200ms}
            \(extra)
            influxdb:
            \(servers)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        return config
    }

    /// Samples netprobe's resident memory until stopped.
    final class MemorySampler: @unchecked Sendable {
        private let lock = NSLock()
        private var samples: [(Date, Int)] = []
        private var task: Task<Void, Never>?

        init(pid: pid_t) {
            task = Task.detached { [self] in
                while !Task.isCancelled {
                    if let kilobytes = Harness.residentKilobytes(pid) { lock.withLock { samples.append((Date(), kilobytes)) } }
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }

        func stop() -> [(Date, Int)] {
            task?.cancel()
            return lock.withLock { samples }
        }
    }

    /// Prints the problem lines and checks the log rules: at most `total` lines, at most two
    /// per cause in any minute.
    func checkLog(_ log: String, atMost total: Int, _ label: String) {
        let problems = Harness.problemLines(log)
        print("\(label): \(problems.count) warning/error lines:\n" + problems.map { "  " + $0.prefix(300) }.joined(separator: "\n"))
        XCTAssertLessThanOrEqual(problems.count, total, "\(label): a handful of log lines, not one per point")
        let worst = Harness.mostLinesPerCausePerMinute(problems)
        XCTAssertLessThanOrEqual(worst.count, 2, "\(label): at most 2 lines per cause per minute; \(worst.cause)")
    }

    func icmpCount(_ server: InfluxDBTestServer, target: String, after: Date? = nil) async throws -> Int {
        let since = after.map { " AND time > \(Int64($0.timeIntervalSince1970 * 1e9))" } ?? ""
        let rows = try await Harness.rows(server, "SELECT count(result_code) FROM icmp WHERE target = '\(target)'\(since)")
        return rows.first?["count"] as? Int ?? 0
    }

    /// Probing went on on schedule: the target's rounds since `after` leave no interval out
    /// (spool order is FIFO, so what arrived is a gap-free run; a round may be late, never
    /// skipped). Counts, not durations: n rounds span at most n + 1 intervals.
    func checkNoRoundMissing(_ server: InfluxDBTestServer, target: String, after: Date, intervalSeconds: Double = 1) async throws {
        let times = try await Harness.rows(server, "SELECT result_code FROM icmp WHERE target = '\(target)' AND time > \(Int64(after.timeIntervalSince1970 * 1e9)) ORDER BY time")
            .compactMap { ($0["time"] as? NSNumber)?.int64Value }
        XCTAssertGreaterThanOrEqual(times.count, 3, "rounds of \(target) after \(after)")
        guard let first = times.first, let last = times.last else { return }
        let intervals = Double(last - first) / 1e9 / intervalSeconds
        print("rounds of \(target): \(times.count) over \(String(format: "%.1f", intervals)) intervals")
        XCTAssertGreaterThanOrEqual(Double(times.count), intervals - 1, "no round of \(target) skipped")
    }

    /// The issue's case: the spool on a 600 KB tmpfs, 500 targets every second, InfluxDB down
    /// for a minute; then the tmpfs grows (space freed) and InfluxDB starts.
    func testAFullDiskWithTheServerDownKeepsProbingLogsAHandfulOfLinesAndDeliveryResumes() async throws {
        try Harness.requireRoot()
        try Harness.requireTools(["unshare", "nsenter"])
        _ = try TestEnvironment.requireBinary("influxd", package: "influxdb")
        let directory = try TestEnvironment.temporaryDirectory("netprobe-diskfull")
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = directory.appendingPathComponent("spool").path
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        let port = TestEnvironment.freePort()
        let targets = Self.loopbackTargets(500)
        let config = try writeConfig(directory, targets: targets, influx: [("db", "http://127.0.0.1:\(port)")])
        // The tmpfs exists only in netprobe's own mount namespace: it goes away with it.
        let running = try Harness.start(["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                                         "mount -t tmpfs -o size=600k tmpfs \"$1\" && exec \"$2\" run --config \"$3\"", "sh", spool, netprobe, config])
        let pid = running.process.processIdentifier
        let memory = MemorySampler(pid: pid)
        let started = Date()

        // Down for a minute: the spool fills the tmpfs within seconds.
        try await Task.sleep(for: .seconds(60))
        XCTAssertTrue(running.process.isRunning, "netprobe survives the full disk: \(running.errorSoFar.suffix(2000))")
        let df = try Harness.run(["nsenter", "--mount=/proc/\(pid)/ns/mnt", "df", "-k", spool])
        print("disk full: \(df.standardOutput)")
        XCTAssertTrue(df.standardOutput.contains(" 100% "), "the spool filled its tmpfs: \(df.standardOutput)")

        // Space returns and the server starts.
        let grown = try Harness.run(["nsenter", "--mount=/proc/\(pid)/ns/mnt", "mount", "-o", "remount,size=64m", spool])
        XCTAssertEqual(grown.status, 0, grown.standardError)
        let server = try await InfluxDBTestServer.start(port: port)
        try await server.createDatabase("netprobe")
        let recovered = Date()
        // Delivery resumes: fresh rounds of the first and the last target arrive.
        let delivered = try await TestEnvironment.eventually(within: 90) {
            let first = try await self.icmpCount(server, target: targets[0], after: recovered.addingTimeInterval(3))
            let last = try await self.icmpCount(server, target: targets[targets.count - 1], after: recovered.addingTimeInterval(3))
            return first >= 10 && last >= 10
        }
        XCTAssertTrue(delivered, "rounds after recovery reach InfluxDB: \(running.errorSoFar.suffix(2000))")
        let windowSeconds = Date().timeIntervalSince(recovered)
        kill(pid, SIGTERM)
        let result = try Harness.finish(running, timeout: 30)
        let samples = memory.stop()
        XCTAssertEqual(result.status, 0, result.standardError.suffix(2000).description)

        try await checkNoRoundMissing(server, target: targets[0], after: recovered)

        // The counters add up, and InfluxDB holds exactly what was written.
        let counters = Harness.metadata(ofLastLine: "InfluxDB server db since the start", in: result.standardError)
        print("disk full: counters at exit \(counters), \(Int(Date().timeIntervalSince(started))) s run, delivered \(Int(windowSeconds)) s after recovery")
        let produced = try XCTUnwrap(counters["produced"], result.standardError.suffix(2000).description)
        let written = try XCTUnwrap(counters["written"])
        let dropped = try XCTUnwrap(counters["dropped"])
        let spooled = try XCTUnwrap(counters["spooled"])
        XCTAssertEqual(written + dropped + spooled + (counters["permanentErrors"] ?? 0), produced, "written + dropped + spooled = produced")
        XCTAssertGreaterThan(dropped, 0, "the full disk forced points out")
        XCTAssertGreaterThan(counters["spoolErrors"] ?? 0, 0)
        var stored = 0
        for (measurement, field) in [("icmp", "result_code"), ("netprobe", "rounds"), ("netprobe", "points_written")] {
            let rows = try await Harness.rows(server, "SELECT count(\(field)) FROM \(measurement)")
            stored += rows.first?["count"] as? Int ?? 0
        }
        XCTAssertEqual(stored, written, "InfluxDB has every point netprobe counted as written, none lost")
        XCTAssertGreaterThan(produced, 60 * targets.count, "500 targets a second for over a minute")

        checkLog(result.standardError, atMost: 12, "disk full")
        let rss = samples.map(\.1)
        print("disk full: RSS \(rss.min() ?? 0)...\(rss.max() ?? 0) kB over \(samples.count) samples")
        let settled = samples.filter { $0.0.timeIntervalSince(started) > 20 }.map(\.1)
        if let base = settled.first, let peak = settled.max() {
            XCTAssertLessThan(peak - base, 16_384, "resident memory stays bounded: \(base) kB at 20 s, peak \(peak) kB")
        }
    }
}
