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

    static func start(_ arguments: [String], input: String? = nil) throws -> RunningProcess {
        let process = Process()
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
        let deadline = Date().addingTimeInterval(timeout)
        while running.process.isRunning && Date() < deadline { usleep(10_000) }
        if running.process.isRunning {
            running.process.terminate()
            running.process.waitUntilExit()
            XCTFail("\(running.process.executableURL?.path ?? "?") ran past \(timeout) s")
        }
        running.process.waitUntilExit()
        let (output, error) = running.collected()
        return CommandResult(status: running.process.terminationStatus, standardOutput: output, standardError: error)
    }

    /// Waits for something a process does (a line in a log, a counter reaching a value),
    /// looking every 10 ms; false if it has not happened within `seconds`.
    static func wait(within seconds: TimeInterval, until condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(10_000)
        }
        return try condition()
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
