import ArgumentParser
import CSystemShims
import Glibc
import ProbeConfig
import ProbeEngine
import ProbeResults

/// Exit statuses, as fping's: scripts written for fping read netprobe the same way.
enum ExitStatus {
    /// Every target answered.
    static let allAnswered: Int32 = 0
    /// At least one target did not answer.
    static let someUnanswered: Int32 = 1
    /// At least one name did not resolve.
    static let unresolved: Int32 = 2
    /// Bad command line or input.
    static let badArguments: Int32 = 3
    /// A system error, e.g. no privilege to open ICMP sockets.
    static let systemError: Int32 = 4
    /// `check` only: some verdict is inconclusive (the evidence did not decide).
    static let inconclusive: Int32 = 5
}

@main
struct Netprobe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netprobe",
        abstract: "Is it the network? ICMP echo and TCP handshake times you can trust.",
        discussion: """
            Is it the network? netprobe answers with numbers you can trust: it sends its own \
            packets, takes send and receive times from the kernel, and matches every reply \
            strictly to a request it sent.

            Exit status (as fping): 0 every target answered, 1 some did not, 2 a name did \
            not resolve, 3 bad arguments, 4 system error (e.g. no privilege).
            """,
        version: "0.1.0",
        subcommands: [RunCommand.self, ValidateCommand.self, PingCommand.self, TCPCommand.self, CheckCommand.self, TraceCommand.self, DashboardsCommand.self]
    )

    /// Runs the command, mapping argument errors to exit status 3 (ArgumentParser's own
    /// default is 64, which fping-style scripts would not expect).
    static func main() async {
        // Two malloc arenas, not eight per core: the threads (probe loop, concurrency pool,
        // HTTP client) allocate little each, and an arena per thread kept about 2 MB more
        // resident at 10,000 targets (BENCHMARKS.md, "The daemon").
        _ = CSystemShims_mallopt_arena_max(2)
        do {
            var command = try LongTargetLists.parse(splittingAttachedValues(Array(CommandLine.arguments.dropFirst())))
            if let privileged = command as? any PrivilegedCommand {
                // Still on the main thread with no other thread started: capabilities are
                // per thread, so dropping them here leaves no thread holding one. What was
                // opened goes to the command by value.
                let resources = try privileged.acquirePrivilegedResources()
                try await privileged.run(with: resources)
            } else {
                // A command that needs no privilege gives up what the binary's file
                // capability (setcap, as in the image) handed a non-root user on exec.
                if getuid() != 0, !Privileges.holdsNoCapabilities { try dropPrivileges() }
                if let parsed = command as? AsyncParsableCommand {
                    // Only this task ever touches the command: handing it to the nonisolated run() is safe.
                    nonisolated(unsafe) var asyncCommand = parsed
                    try await asyncCommand.run()
                } else {
                    try command.run()
                }
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                Terminal.printError(fullMessage(for: error))
                Glibc.exit(ExitStatus.badArguments)
            }
            exit(withError: error)
        }
    }

    /// Short options that take a value, which ping users write attached ("-c1", "-i0.2").
    static let shortOptionsWithValues: Set<Character> = ["c", "i", "W", "s", "t", "f", "Q", "S", "I"]

    /// Turns "-c1" into "-c", "1" so ping habits work; ArgumentParser reads "-c1" as flags.
    static func splittingAttachedValues(_ arguments: [String]) -> [String] {
        var result: [String] = []
        for (position, argument) in arguments.enumerated() {
            if argument == "--" {
                result += arguments[position...]
                break
            }
            let characters = Array(argument)
            if characters.count > 2, characters[0] == "-", characters[1] != "-", shortOptionsWithValues.contains(characters[1]) {
                result += ["-" + String(characters[1]), String(characters[2...])]
            } else {
                result.append(argument)
            }
        }
        return result
    }
}

/// What a command opened with privileges on the main thread, handed to its run.
struct PrivilegedResources: Sendable {
    /// The ICMP sockets, when the command needs them and they could be opened.
    var icmpSockets: ICMPSocketSet?
    /// `check`: raw ICMP sockets of the path prober, when raw sockets are allowed.
    var pathSockets: ICMPSocketSet?
    /// `trace` of HOST:PORT targets: raw TCP sockets for SYN probes.
    var pathTCPSockets: PathTCPSockets?
    /// `run`: the configuration, read before the sockets it asks for were opened.
    var configuration: NetprobeConfiguration?
    /// `run`: ICMP sockets of the Prometheus exporter's `/probe` (its own prober's).
    var blackboxICMPSockets: ICMPSocketSet?
}

/// A command that opens privileged resources (raw sockets) and then drops privileges,
/// before any other thread exists; `Netprobe.main` calls the two in turn.
protocol PrivilegedCommand: AsyncParsableCommand {
    /// Main thread, no other thread started yet: open what needs a privilege, drop them all.
    func acquirePrivilegedResources() throws -> PrivilegedResources
    func run(with resources: PrivilegedResources) async throws
}

extension PrivilegedCommand {
    func run() async throws {
        try await run(with: acquirePrivilegedResources())
    }
}
