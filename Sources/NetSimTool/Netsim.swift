import ArgumentParser
import Foundation
import Logging
import NetSim
#if canImport(Glibc)
import Glibc
#endif

/// `netsim`: simulated hosts behind a TUN device, for tests and benchmarks of netprobe.
@main
struct Netsim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netsim",
        abstract: "Simulate hosts behind a TUN device: delay, loss, TTL, TCP ports, multi-hop paths, routing loops, unreachables.",
        discussion: """
            Creates the TUN device in the CURRENT network namespace, so run it inside a \
            namespace of its own (ip netns exec NAME netsim ...): it adds 198.18.0.1/32 and \
            2001:db8::1/128, routes 198.18.0.0/15 and 2001:db8::/32 into the device (using \
            `ip`), and plays one host per other address of those prefixes. It answers ICMP \
            and ICMPv6 echo requests and TCP SYNs itself, holds each reply for its delay \
            (timerfd, then a spin for the last 50us or more) and records the hold really applied.

            Prints "netsim ready" once the device, addresses and routes are in place. \
            SIGTERM / SIGINT: send the held replies, write the summary, exit 0. SIGUSR1: \
            rewrite the summary. SIGHUP: read --config again and put its rules (with the \
            --rule ones) in force from the next packet on, e.g. a path that changes; a \
            file that does not parse keeps the old rules.

            Rules (--rule, repeatable; or --config FILE with a 'rules:' list of mappings \
            using the same keys plus 'prefix'; there a list is the comma list, e.g. \
            'loop: [198.18.6.2, 198.18.6.1]', and a mapping its KEY:VALUE items, e.g. \
            'unreachable: {code: host, after-hop: 5, delay: 3s}'):

            \(HostRule.syntax)

            Examples:
              ip netns exec NS netsim --summary /tmp/sim.json \\
                --rule "198.18.1.0/24 delay=10ms jitter=normal:1ms loss=0.2 ttl=60" \\
                --rule "2001:db8:1::/48 tcp=80:open,81:closed,82:filtered,83:rejected" \\
                --rule "198.18.9.0/24 unreachable" \\
                --rule "198.18.5.0/24 path=198.18.105.1,198.18.105.2 unreachable=host,after-hop:2,delay:3s" \\
                --rule "198.18.6.0/24 path=198.18.106.1 loop=198.18.106.2,198.18.106.3"
            """
    )

    @Option(name: .long, help: ArgumentHelp("A rule: PREFIX KEY=VALUE... (see above). Repeatable.", valueName: "rule"))
    var rule: [String] = []

    @Option(name: .long, help: ArgumentHelp("YAML file with a 'rules:' list.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Write the JSON summary here on exit and on SIGUSR1.", valueName: "file"))
    var summary: String?

    @Option(name: .long, help: ArgumentHelp("Write one JSON line per answered, filtered or dropped packet here.", valueName: "file"))
    var record: String?

    @Option(name: .long, help: "Name of the TUN device.")
    var device = "netsim0"

    @Option(name: .long, help: "Seed of the loss and delay generator (random when absent).")
    var seed: UInt64?

    @Option(name: .long, help: ArgumentHelp("Spin at least this long before each release instead of sleeping; more when timer wake-ups come late (VMs).", valueName: "duration"))
    var spin = "50us"

    @Flag(name: .long, help: "Do not ask for SCHED_FIFO.")
    var noRealtime = false

    @Flag(name: .shortAndLong, help: "Log what netsim does to standard error.")
    var verbose = false

    func validate() throws {
        for text in rule {
            do { _ = try HostRule(parsing: text) } catch { throw ValidationError("--rule \"\(text)\": \(error.description)") }
        }
        if let config {
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else { throw ValidationError("--config \(config): cannot read the file") }
            do { _ = try RuleSet.rules(yaml: text, file: config) } catch { throw ValidationError("--config: \(error)") }
        }
        guard spinNanoseconds != nil else { throw ValidationError("--spin '\(spin)': write a duration such as 50us") }
        guard device.utf8.count < 16, !device.isEmpty else { throw ValidationError("--device must be 1 to 15 bytes") }
    }

    var spinNanoseconds: Int64? {
        var text = spin
        let units: [(String, Int64)] = [("us", 1000), ("ns", 1), ("ms", 1_000_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            text.removeLast(suffix.count)
            return Int64(text).map { $0 * factor }
        }
        return nil
    }

    func run() throws {
        // Signals become readable on a signalfd of the packet loop: block them first, before
        // any thread exists, so every thread inherits the mask.
        let signalDescriptor = try SignalDescriptor.blockAndOpen([SIGTERM, SIGINT, SIGUSR1, SIGHUP])
        defer { close(signalDescriptor) }

        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = verbose ? .debug : .notice
            return handler
        }
        let logger = Logger(label: "netsim")

        var rules = try rule.map { try HostRule(parsing: $0) }
        if let config { rules += try RuleSet.rules(yaml: String(contentsOfFile: config, encoding: .utf8), file: config) }
        var options = Simulator.Options(rules: RuleSet(rules), recordPath: record, seed: seed)
        options.spinNanoseconds = spinNanoseconds ?? 50_000

        let device: TunDevice
        do {
            device = try TunDevice(name: self.device)
            try device.configure(logger: logger)
        } catch {
            logger.critical("cannot set up the TUN device: \(error)")
            throw ExitCode(2)
        }
        defer { device.close() }

        options.deviceName = device.name
        let simulator = try Simulator(packetDescriptor: device.descriptor, options: options, logger: logger)
        if noRealtime {
            logger.notice("real-time priority not requested (--no-realtime)")
        } else if let error = RealTimePriority.enableForCurrentThread() {
            logger.notice("running without real-time priority: SCHED_FIFO refused (\(String(cString: strerror(error))))")
        } else {
            simulator.realtimePriority = true
            logger.info("packet loop runs at SCHED_FIFO")
        }

        FileHandle.standardOutput.write(Data("netsim ready\n".utf8))

        let summaryPath = summary
        let flagRules = try rule.map { try HostRule(parsing: $0) }
        let configPath = config
        let final = try simulator.run(signalDescriptor: signalDescriptor, summaryRequested: { current in
            Self.write(current, to: summaryPath, logger: logger)
        }, reloadRequested: {
            guard let configPath else { return RuleSet(flagRules) }
            do {
                let text = try String(contentsOfFile: configPath, encoding: .utf8)
                let reloaded = try RuleSet.rules(yaml: text, file: configPath)
                logger.notice("reloaded \(reloaded.count) rules from \(configPath)")
                return RuleSet(flagRules + reloaded)
            } catch {
                logger.error("cannot reload \(configPath), keeping the old rules: \(error)")
                return nil
            }
        })
        Self.write(final, to: summaryPath, logger: logger)
        logger.info("done: \(final.packetsIn) packets in, \(final.answered) answered, \(final.dropped) dropped, \(final.ignored) ignored")
    }

    /// Writes the summary next to its final place, then renames, so readers never see half a file.
    static func write(_ summary: SimulationSummary, to path: String?, logger: Logger) {
        guard let path else { return }
        do {
            let data = try summary.encoded()
            let temporary = path + ".tmp"
            try data.write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
        } catch {
            logger.error("cannot write the summary to \(path): \(error)")
        }
    }
}
