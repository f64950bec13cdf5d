import ArgumentParser
import Foundation

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
}

@main
struct Netprobe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netprobe",
        abstract: "Measure ICMP echo round-trip times with kernel timestamps.",
        discussion: """
            Is it the network? netprobe answers with numbers you can trust: it sends its own \
            packets, takes send and receive times from the kernel, and matches every reply \
            strictly to a request it sent.

            Exit status (as fping): 0 every target answered, 1 some did not, 2 a name did \
            not resolve, 3 bad arguments, 4 system error (e.g. no privilege).
            """,
        version: "0.1.0",
        subcommands: [PingCommand.self]
    )

    /// Runs the command, mapping argument errors to exit status 3 (ArgumentParser's own
    /// default is 64, which fping-style scripts would not expect).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(ExitStatus.badArguments)
            }
            exit(withError: error)
        }
    }
}
