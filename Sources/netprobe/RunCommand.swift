import ArgumentParser
import FoundationEssentials
import Glibc
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import PrometheusExporter

/// Where `run` writes rounds when no InfluxDB server is configured.
enum QuickLookFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
    case lineProtocol = "line-protocol"
}

struct RunCommand: PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Probe every target of the targets files forever and ship the results to InfluxDB.",
        discussion: """
            Every target gets a round (count probes, spacing apart) every interval; the \
            targets' rounds are spread evenly over the interval, a round never overlaps the \
            next one for the same target, and each round's schedule slip is measured. A \
            round's timestamp is its planned start, so a target's points are exactly one \
            interval apart; a round is written whole or not at all. Names are re-resolved \
            every resolve_interval (every 30 s while one fails, which then reports \
            "unresolved" rounds); a changed address moves that target alone.

            Every configured InfluxDB server gets every point through its own queue and \
            durable spool: a slow, dead or restarting server delays no other and loses \
            nothing, and neither does a restart of netprobe. With no server configured, \
            results go to standard output (--output).

            Signals: SIGTERM / SIGINT let the rounds in flight finish, send or spool \
            everything and exit 0 within 5 s. SIGHUP reloads the config and targets files: \
            added targets start, removed ones stop after their round in flight, the others \
            keep their schedule (a changed icmp or tcp section restarts that kind's rounds; \
            an invalid new config is logged and the old one kept; TTL and address family \
            need a restart).

            Exit status: 0 after a clean stop, 2 invalid config (with file:line:column \
            messages), 4 system error (e.g. no privilege for ICMP).
            """
    )

    @Option(help: ArgumentHelp("The config file (see deploy/netprobe.yaml).", valueName: "file"))
    var config: String

    @Option(help: ArgumentHelp("Without InfluxDB servers: table, json or line-protocol on standard output.", valueName: "format"))
    var output: QuickLookFormat = .table

    @Flag(name: .shortAndLong, help: "Log what netprobe does to standard error.")
    var verbose = false

    /// One limiter for every logger of the daemon: a fault that repeats every round (a full
    /// disk, a dead server or resolver) writes a line a minute per cause, not one per round.
    static let logLimiter = RateLimitedLogHandler.Shared()

    func makeLogger() -> Logger {
        var logger = Logger(label: "netprobe") { RateLimitedLogHandler(wrapping: StreamLogHandler.standardError(label: $0), shared: Self.logLimiter) }
        logger.logLevel = verbose ? .debug : .info
        return logger
    }

    /// Loads the config (refusing an invalid one), opens the ICMP sockets if there are ping
    /// targets, raises the open-file limit and drops every capability.
    func acquirePrivilegedResources() throws -> PrivilegedResources {
        let configuration: NetprobeConfiguration
        do {
            configuration = try ConfigurationLoader.load(path: config)
        } catch {
            Terminal.printError(error.description)
            Terminal.printError("netprobe: the config is invalid; nothing was started (check it with `netprobe validate --config \(config)`)")
            throw ExitCode(2)
        }
        var resources = PrivilegedResources(configuration: configuration)
        do {
            let (sockets, warnings) = try ProbeService.openSockets(for: configuration, logger: makeLogger())
            warnings.forEach { Terminal.printError($0) }
            resources.icmpSockets = sockets.icmp
            resources.pathSockets = sockets.path
            resources.pathTCPSockets = sockets.pathTCP
        } catch {
            Terminal.printError(PingCommand.explain(error))
            throw ExitCode(ExitStatus.systemError)
        }
        resources.blackboxICMPSockets = PrometheusWiring.openICMPSockets(for: configuration, logger: makeLogger())
        try dropPrivileges()
        return resources
    }

    /// Runs the service until SIGTERM/SIGINT; SIGHUP reloads.
    func run(with resources: PrivilegedResources) async throws {
        guard let configuration = resources.configuration else { throw ExitCode(ExitStatus.systemError) }
        let front = try await PrometheusWiring.start(for: configuration, icmpSockets: resources.blackboxICMPSockets, logger: makeLogger())
        let exporter = front.exporter
        let service = ProbeService(configuration: configuration, icmpSockets: resources.icmpSockets, output: QuickLook(format: output, probe: configuration.probeName),
                                   sinks: { try InfluxSink.make(for: $0, logger: $1) }, logger: makeLogger(), logLimiter: Self.logLimiter, observers: front.observers,
                                   pathSockets: resources.pathSockets, pathTCPSockets: resources.pathTCPSockets)
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        let signals = Task {
            for await signal in SignalWatcher.signals { send.yield(signal == SIGHUP ? .reload : .stop) }
        }
        defer { signals.cancel() }
        do {
            try await service.run(control: control)
        } catch {
            await exporter?.stop()
            throw error
        }
        await exporter?.stop()
    }
}

/// `run` without InfluxDB servers: every round on standard output.
struct QuickLook: RoundOutput {
    let format: QuickLookFormat
    let probe: String

    func write(_ round: RoundResult, env: String, point: DataPoint) {
        switch format {
        case .table:
            Terminal.printLine("\(ResultPrinter.timeFormat.format(round.startTime)) \(round.kind.rawValue) [\(env)] \(ResultPrinter.summaryLine(round))")
        case .json:
            Terminal.printLine(ResultPrinter.jsonLine(round, env: env, probe: probe))
        case .lineProtocol:
            if let line = LineProtocol.encode(point) { Terminal.printLine(line) }
        }
    }
}
