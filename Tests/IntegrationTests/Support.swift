import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What a finished command printed and returned.
struct CommandResult {
    var status: Int32
    var standardOutput: String
    var standardError: String

    /// The JSON objects of a JSON Lines output.
    func jsonLines() throws -> [[String: Any]] {
        try standardOutput.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            guard let dictionary = object as? [String: Any] else { throw CocoaError(.coderReadCorrupt) }
            return dictionary
        }
    }
}

enum Harness {
    /// The netprobe binary built next to the test bundle.
    static var netprobePath: String {
        TestEnvironment.builtExecutable("netprobe")
    }

    /// In CI (CI=true) a missing prerequisite is a failure, not a skip: CI runs as root
    /// with every tool installed, so a skip there would hide a broken install step.
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    static func requireRoot() throws {
        guard geteuid() == 0 else {
            if isCI { XCTFail("CI must run the tests as root") }
            throw XCTSkip("needs root (raw sockets, network namespaces, setpriv); CI runs as root")
        }
    }

    static func requireTools(_ tools: [String]) throws {
        for tool in tools where which(tool) == nil {
            if isCI { XCTFail("\(tool) is missing: .ci/run must install it") }
            throw XCTSkip("needs \(tool) on PATH (.ci/run installs it)")
        }
    }

    static func which(_ tool: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":") + ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let path = "\(directory)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a program to completion, with a hard time limit.
    @discardableResult
    static func run(_ arguments: [String], timeout: TimeInterval = 60, input: String? = nil) throws -> CommandResult {
        let process = try start(arguments, input: input)
        return try finish(process, timeout: timeout)
    }

    static func start(_ arguments: [String], input: String? = nil, environment: [String: String] = [:]) throws -> RunningProcess {
        let process = Process()
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let executable = arguments[0].hasPrefix("/") ? arguments[0] : (which(arguments[0]) ?? arguments[0])
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        let output = Pipe()
        let error = Pipe()
        let standardInput = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = standardInput
        let running = RunningProcess(process: process, output: output, error: error)
        try process.run()
        if let input { standardInput.fileHandleForWriting.write(Data(input.utf8)) }
        try? standardInput.fileHandleForWriting.close()
        running.startReading()
        return running
    }

    static func finish(_ running: RunningProcess, timeout: TimeInterval) throws -> CommandResult {
        TestEnvironment.eventually(within: timeout) { !running.process.isRunning }
        if running.process.isRunning {
            running.process.terminate()
            running.process.waitUntilExit()
            XCTFail("\(running.process.executableURL?.path ?? "?") ran past \(timeout) s")
        }
        running.process.waitUntilExit()
        let (output, error) = running.collected()
        return CommandResult(status: running.process.terminationStatus, standardOutput: output, standardError: error)
    }

    /// SIGTERM, then the process's end (at most 10 s).
    static func stopGracefully(_ running: RunningProcess) throws -> CommandResult {
        kill(running.process.processIdentifier, SIGTERM)
        return try finish(running, timeout: 10)
    }

    /// A network namespace of the test's own, with only loopback up, deleted afterwards.
    /// Nothing sent inside it can leave the machine: it has no other interface and no route.
    static func withNamespace<T>(pingGroupRange: String? = nil, _ body: (String) throws -> T) throws -> T {
        let name = "netprobe-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try run(["ip", "netns", "add", name])
        defer { _ = try? run(["ip", "netns", "delete", name]) }
        try run(["ip", "-n", name, "link", "set", "lo", "up"])
        if let pingGroupRange {
            let result = try run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=\(pingGroupRange)"])
            XCTAssertEqual(result.status, 0, result.standardError)
        }
        return try body(name)
    }
}

/// A child process whose output is collected as it runs.
final class RunningProcess: @unchecked Sendable {
    let process: Process
    private let output: Pipe
    private let error: Pipe
    private let lock = NSLock()
    private var outputData = Data()
    private var errorData = Data()
    private let done = DispatchGroup()

    init(process: Process, output: Pipe, error: Pipe) {
        self.process = process
        self.output = output
        self.error = error
    }

    func startReading() {
        for (pipe, isOutput) in [(output, true), (error, false)] {
            done.enter()
            Thread { [self] in
                while true {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    if isOutput { outputData.append(chunk) } else { errorData.append(chunk) }
                    lock.unlock()
                }
                done.leave()
            }.start()
        }
    }

    /// Standard output so far.
    var outputSoFar: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: outputData, as: UTF8.self)
    }

    /// Standard error so far.
    var errorSoFar: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: errorData, as: UTF8.self)
    }

    func collected() -> (String, String) {
        _ = done.wait(timeout: .now() + 10)
        lock.lock()
        defer { lock.unlock() }
        return (String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
    }
}

extension Harness {
    /// The rows of an InfluxQL query against database "netprobe", each with its series' tags.
    static func rows(_ server: InfluxDBTestServer, _ query: String) async throws -> [[String: Any]] {
        let series = try await server.series(query, database: "netprobe")
        return series.flatMap { series -> [[String: Any]] in
            guard let columns = series["columns"] as? [String], let values = series["values"] as? [[Any]] else { return [] }
            let tags = series["tags"] as? [String: Any] ?? [:]
            return values.map { row in
                var object = tags
                for (column, value) in zip(columns, row) where !(value is NSNull) { object[column] = value }
                return object
            }
        }
    }

    /// Resident memory of a process, in kilobytes (VmRSS).
    static func residentKilobytes(_ pid: pid_t) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// netprobe's warning and error lines (swift-log's stream format: "TIME LEVEL label: ...").
    static func problemLines(_ log: String) -> [Substring] {
        log.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }
    }

    /// A line's cause: its text without metadata, numbers and the " (N more ...)" tail.
    static func cause(of line: Substring) -> String {
        var text = line
        if let bracket = text.range(of: "] ") { text = text[bracket.upperBound...] }
        else if let colon = text.range(of: ": ") { text = text[colon.upperBound...] }
        if let more = text.range(of: " more since the last such line)") { text = text[..<more.lowerBound] }
        return String(text.prefix(60).filter { !$0.isNumber })
    }

    /// The most lines any one cause wrote within any 60 s (by the lines' own timestamps).
    static func mostLinesPerCausePerMinute(_ lines: [Substring]) -> (count: Int, cause: String) {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        var byCause: [String: [Date]] = [:]
        for line in lines {
            guard let date = formatter.date(from: String(line.prefix(19))) else { continue }
            byCause[cause(of: line), default: []].append(date)
        }
        var worst = (count: 0, cause: "")
        for (cause, dates) in byCause {
            let sorted = dates.sorted()
            for (index, start) in sorted.enumerated() {
                let inWindow = sorted[index...].prefix { $0.timeIntervalSince(start) < 60 }.count
                if inWindow > worst.count { worst = (inWindow, cause) }
            }
        }
        return worst
    }

    /// The key=value metadata of the last log line containing `marker`.
    static func metadata(ofLastLine marker: String, in log: String) -> [String: Int] {
        guard let line = log.split(separator: "\n").last(where: { $0.contains(marker) }) else { return [:] }
        var values: [String: Int] = [:]
        for token in line.split(separator: " ") {
            let parts = token.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
        }
        return values
    }

    /// Probing went on on schedule: the target's rounds since `after` leave no interval out
    /// (spool order is FIFO, so what arrived is a gap-free run; a round may be late, never
    /// skipped). Counts, not durations: n rounds span at most n + 1 intervals.
    static func checkNoRoundMissing(_ server: InfluxDBTestServer, target: String, after: Date, intervalSeconds: Double = 1) async throws {
        let times = try await rows(server, "SELECT result_code FROM icmp WHERE target = '\(target)' AND time > \(Int64(after.timeIntervalSince1970 * 1e9)) ORDER BY time")
            .compactMap { ($0["time"] as? NSNumber)?.int64Value }
        XCTAssertGreaterThanOrEqual(times.count, 3, "rounds of \(target) after \(after)")
        guard let first = times.first, let last = times.last else { return }
        let intervals = Double(last - first) / 1e9 / intervalSeconds
        print("rounds of \(target): \(times.count) over \(String(format: "%.1f", intervals)) intervals")
        XCTAssertGreaterThanOrEqual(Double(times.count), intervals - 1, "no round of \(target) skipped")
    }
}
