import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A simulator in a network namespace of its own, for tests and benchmarks.
///
/// `run` creates a fresh namespace (only loopback up, no default route), starts
/// `ip netns exec NAME netsim --rule ...` in it, waits for "netsim ready", runs the body
/// with the namespace name, stops the simulator with SIGTERM and returns its summary.
/// The namespace is deleted on every path, errors included. Needs root (or
/// CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2.
public enum SimulatedNetwork {
    /// Why a simulated network could not be used.
    public enum Failure: Error, CustomStringConvertible {
        /// Namespaces and TUN devices need root.
        case notPrivileged
        /// A program the network needs is not installed.
        case missingTool(String)
        /// The simulator exited, or printed nothing, before it was ready.
        case simulatorNotReady(standardError: String)
        /// The simulator ended without a readable summary.
        case noSummary(standardError: String)
        /// A set-up command failed.
        case commandFailed(command: String, output: String)

        public var description: String {
            switch self {
            case .notPrivileged: return "a simulated network needs root (network namespaces, TUN devices)"
            case .missingTool(let tool): return "\(tool) is not installed (apt-get install iproute2)"
            case .simulatorNotReady(let standardError): return "netsim did not get ready: \(standardError)"
            case .noSummary(let standardError): return "netsim left no summary: \(standardError)"
            case .commandFailed(let command, let output): return "\(command) failed: \(output)"
            }
        }
    }

    /// What a finished command printed and returned.
    public struct CommandOutput: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
    }

    /// True when this process may create namespaces and TUN devices.
    public static var isPrivileged: Bool { geteuid() == 0 }

    /// The path of `ip`, or nil when iproute2 is missing.
    public static var ipPath: String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Finds a built executable (netsim, netprobe): `$NAME_BINARY` (upper-cased), then the
    /// directories of the running program and of the test bundle.
    public static func executable(named name: String) -> String? {
        if let path = ProcessInfo.processInfo.environment[name.uppercased() + "_BINARY"] { return path }
        let arguments = CommandLine.arguments
        let directories = [
            Bundle.main.bundleURL,
            Bundle.main.bundleURL.deletingLastPathComponent(),
            URL(fileURLWithPath: arguments[0]).deletingLastPathComponent(),
            URL(fileURLWithPath: arguments.last ?? "").deletingLastPathComponent(),
        ] + Bundle.allBundles.map { $0.bundleURL.deletingLastPathComponent() }
        return directories.map { $0.appendingPathComponent(name).path }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `body` against a simulator playing `rules`.
    /// - Parameters:
    ///   - rules: `--rule` values, e.g. "198.18.1.0/24 delay=10ms".
    ///   - netsimPath: the netsim executable.
    ///   - extraArguments: more netsim arguments (e.g. ["--seed", "1"]).
    ///   - recordPath: where netsim writes its per-packet record, if wanted.
    ///   - readyTimeout: how long to wait for "netsim ready".
    ///   - body: gets the namespace name; run probes with `execute(_:inNamespace:)`.
    /// - Returns: the body's value and the simulator's final summary.
    /// - Throws: `Failure`, or whatever `body` throws (the namespace is deleted either way).
    public static func run<Value>(rules: [String], netsimPath: String, extraArguments: [String] = [], recordPath: String? = nil,
                                  readyTimeout: TimeInterval = 10, _ body: (_ namespace: String) throws -> Value) throws -> (value: Value, summary: SimulationSummary) {
        try run(rules: rules, netsimPath: netsimPath, extraArguments: extraArguments, recordPath: recordPath, readyTimeout: readyTimeout) { namespace, _ in
            try body(namespace)
        }
    }

    /// The running simulator, for a body that changes it while it runs.
    public struct Handle: Sendable {
        fileprivate let process: ChildProcess
        fileprivate let summaryPath: String

        /// Sends SIGHUP: netsim reads its --config again (a path that changes at run time).
        public func reload() { process.signal(SIGHUP) }

        /// Asks netsim for its counters so far (SIGUSR1); `requestedSummary` has them once
        /// written. netsim takes the snapshot on its packet thread, between packets, so the
        /// counters agree with each other (a reply held for its delay is `pending`).
        public func requestSummary() {
            try? FileManager.default.removeItem(atPath: summaryPath)
            process.signal(SIGUSR1)
        }

        /// The summary `requestSummary()` asked for, nil until netsim has written it.
        public var requestedSummary: SimulationSummary? {
            FileManager.default.contents(atPath: summaryPath).flatMap { try? JSONDecoder().decode(SimulationSummary.self, from: $0) }
        }

        /// What netsim wrote to standard error so far (its log: "reloaded N rules ...").
        public var standardError: String { process.standardError }
    }

    /// As `run(rules:netsimPath:...)`, with a handle on the simulator for the body.
    public static func run<Value>(rules: [String], netsimPath: String, extraArguments: [String] = [], recordPath: String? = nil,
                                  readyTimeout: TimeInterval = 10, _ body: (_ namespace: String, _ simulator: Handle) throws -> Value) throws -> (value: Value, summary: SimulationSummary) {
        guard isPrivileged else { throw Failure.notPrivileged }
        guard let ip = ipPath else { throw Failure.missingTool("ip") }
        let namespace = "netsim-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        let summaryPath = FileManager.default.temporaryDirectory.appendingPathComponent("\(namespace)-summary.json").path
        try command([ip, "netns", "add", namespace])
        defer {
            _ = try? command([ip, "netns", "delete", namespace])
            try? FileManager.default.removeItem(atPath: summaryPath)
        }
        try command([ip, "-n", namespace, "link", "set", "lo", "up"])

        var arguments = [ip, "netns", "exec", namespace, netsimPath, "--summary", summaryPath]
        for rule in rules { arguments += ["--rule", rule] }
        if let recordPath { arguments += ["--record", recordPath] }
        arguments += extraArguments
        let simulator = try ChildProcess(arguments)
        // `ip netns exec` execs netsim in place, so the child's pid is netsim's.
        var stopped = false
        defer { if !stopped { simulator.terminate(); _ = simulator.wait(timeout: 5) } }

        let deadline = Date().addingTimeInterval(readyTimeout)
        while !simulator.standardOutput.contains("netsim ready") {
            guard simulator.isRunning, Date() < deadline else {
                throw Failure.simulatorNotReady(standardError: simulator.standardError)
            }
            usleep(5_000)
        }

        let value = try body(namespace, Handle(process: simulator, summaryPath: summaryPath))

        simulator.terminate()
        stopped = simulator.wait(timeout: 15)
        if !stopped { simulator.kill() ; stopped = simulator.wait(timeout: 5) }
        guard simulator.exitStatus == 0, let data = FileManager.default.contents(atPath: summaryPath),
              let summary = try? JSONDecoder().decode(SimulationSummary.self, from: data) else {
            throw Failure.noSummary(standardError: "exit status \(simulator.exitStatus.map(String.init) ?? "?"); " + simulator.standardError)
        }
        return (value, summary)
    }

    /// Runs a program inside `namespace` (`ip netns exec`) to completion.
    /// - Parameter timeout: the program is killed after this many seconds.
    /// - Returns: its status and output.
    public static func execute(_ arguments: [String], inNamespace namespace: String, timeout: TimeInterval = 120) throws -> CommandOutput {
        guard let ip = ipPath else { throw Failure.missingTool("ip") }
        return try run([ip, "netns", "exec", namespace] + arguments, timeout: timeout)
    }

    /// Runs a program to completion.
    public static func run(_ arguments: [String], timeout: TimeInterval = 120) throws -> CommandOutput {
        let process = try ChildProcess(arguments)
        if !process.wait(timeout: timeout) {
            process.kill()
            _ = process.wait(timeout: 5)
        }
        return CommandOutput(status: process.exitStatus ?? -1, standardOutput: process.standardOutput, standardError: process.standardError)
    }

    @discardableResult
    static func command(_ arguments: [String]) throws -> CommandOutput {
        let output = try run(arguments, timeout: 30)
        guard output.status == 0 else { throw Failure.commandFailed(command: arguments.joined(separator: " "), output: output.standardError) }
        return output
    }
}

/// A child process whose output is collected while it runs.
final class ChildProcess: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var output = Data()
    private var error = Data()
    private let readers = DispatchGroup()

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let outputPipe = Pipe()
        let errorPipe = Pipe()
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        for (pipe, isOutput) in [(outputPipe, true), (errorPipe, false)] {
            readers.enter()
            Thread { [self] in
                while true {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    if isOutput { output.append(chunk) } else { error.append(chunk) }
                    lock.unlock()
                }
                readers.leave()
            }.start()
        }
    }

    var isRunning: Bool { process.isRunning }

    var standardOutput: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: output, as: UTF8.self)
    }

    var standardError: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: error, as: UTF8.self)
    }

    /// The exit status once the process ended (a signal number counts as its status).
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    func terminate() {
        signal(SIGTERM)
    }

    func signal(_ number: Int32) {
        if process.isRunning { Glibc.kill(process.processIdentifier, number) }
    }

    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for the exit and for the output to be read; false on timeout.
    func wait(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() >= deadline { return false }
            usleep(2_000)
        }
        process.waitUntilExit()
        _ = readers.wait(timeout: .now() + 5)
        return true
    }
}
