import ArgumentParser
import FoundationEssentials
import Glibc
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine

/// Where `run` writes rounds when no InfluxDB server is configured.
enum QuickLookFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
    case lineProtocol = "line-protocol"
}

struct RunCommand: AsyncParsableCommand, PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Probe every target of the targets files forever and ship the results to InfluxDB.",
        discussion: """
            Every target gets a round (count probes, spacing apart) every interval; the \
            targets' rounds are spread evenly over the interval, a round never overlaps the \
            next one for the same target, and each round's schedule slip is measured. Names \
            are re-resolved every resolve_interval (every 30 s while one fails, which then \
            reports "unresolved" rounds); a changed address shows in the address tag.

            Every configured InfluxDB server gets every point through its own queue and \
            durable spool: a slow, dead or restarting server delays no other and loses \
            nothing, and neither does a restart of netprobe. With no server configured, \
            results go to standard output (--output).

            Signals: SIGTERM / SIGINT stop probing, send or spool everything and exit 0 \
            within 5 s. SIGHUP reloads the config and targets files (an invalid new config \
            is logged and the old one kept; TTL and address family need a restart).

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
    func acquirePrivilegedResources() throws {
        let configuration: NetprobeConfiguration
        do {
            configuration = try ConfigurationLoader.load(path: config)
        } catch {
            Terminal.printError(error.description)
            Terminal.printError("netprobe: the config is invalid; nothing was started (check it with `netprobe validate --config \(config)`)")
            throw ExitCode(2)
        }
        RunState.configuration.withLock { $0 = configuration }
        if !configuration.pingTargets.isEmpty {
            let families: Set<AddressFamily> = switch configuration.icmp.family {
            case .ipv4: [.ipv4]
            case .ipv6: [.ipv6]
            case .any: [.ipv4, .ipv6]
            }
            do {
                let sockets = try ICMPSocketSet.open(families: families, optional: families.count > 1 ? families : [],
                                                     ttl: configuration.icmp.ttl, logger: makeLogger())
                PrivilegedResources.storeICMPSockets(sockets)
            } catch {
                Terminal.printError(PingCommand.explain(error))
                throw ExitCode(ExitStatus.systemError)
            }
        }
        try dropPrivileges()
    }

    func run() async throws {
        let logger = makeLogger()
        guard let initial = RunState.configuration.withLock({ $0 }) else { throw ExitCode(ExitStatus.systemError) }
        var configuration = initial
        let loop = try ProbeLoop(logger: logger)
        let icmpProber = try PrivilegedResources.takeICMPSockets().map {
            try ICMPProber(sockets: $0, configuration: icmpSettings(configuration), loop: loop, logger: logger)
        }
        defer { icmpProber?.close() }
        let tcpProber = try TCPProber(configuration: tcpSettings(configuration, targetCount: configuration.tcpTargets.count, logger: logger),
                                      loop: loop, logger: logger)
        var sink = try makeSink(configuration, logger: logger)
        let control = ControlChannel()
        SignalWatcher.start(channel: control)
        logger.info("netprobe run started", metadata: [
            "probe": "\(configuration.probeName)", "ping_targets": "\(configuration.pingTargets.count)",
            "tcp_targets": "\(configuration.tcpTargets.count)", "influxdb_servers": "\(configuration.influxServers.count)",
        ])

        let (pingHosts, icmpFamily, tcpList, tcpFamily) = (configuration.pingTargets.map(\.host), configuration.icmp.family, configuration.tcpTargets, configuration.tcp.family)
        async let initialPing = resolve(pingHosts, family: icmpFamily)
        async let initialTCP = resolveTCP(tcpList, family: tcpFamily)
        var (pingTargets, tcpTargets) = await (initialPing, initialTCP)
        _ = keepingLastAddresses(pingTargets + tcpTargets, previous: pingTargets + tcpTargets, logger: logger)  // count and log failures
        while true {
            let writer = RoundWriter(probe: configuration.probeName, sink: sink, format: output, logger: logger)
            let pingEnvs = configuration.pingTargets.map(\.env)
            let tcpEnvs = configuration.tcpTargets.map(\.env)
            let icmpEvents = configuration.pingTargets.isEmpty ? nil
                : icmpProber?.probe(pingTargets, configuration: icmpSettings(configuration), reportingAttempts: false)
            let tcpEvents = tcpTargets.isEmpty ? nil
                : tcpProber.probe(tcpTargets, configuration: tcpSettings(configuration, targetCount: tcpTargets.count, logger: logger), reportingAttempts: false)
            let monitorInterval = configuration.icmp.intervalNanoseconds
            let resolveInterval = configuration.resolveIntervalNanoseconds
            let current = configuration
            let currentPing = pingTargets
            let currentTCP = tcpTargets

            // Probing runs until a signal or a changed address asks for a restart.
            let decision: ControlDecision = await withTaskGroup(of: ControlDecision?.self) { group in
                group.addTask { await writer.consume(icmpEvents, envs: pingEnvs); return nil }
                group.addTask { await writer.consume(tcpEvents, envs: tcpEnvs); return nil }
                group.addTask { await writer.monitor(every: monitorInterval); return nil }
                group.addTask {
                    await controller(control: control, configuration: current, ping: currentPing, tcp: currentTCP,
                                     resolveInterval: resolveInterval, logger: logger)
                }
                var decision = ControlDecision.terminate
                for await result in group {
                    if let result {
                        decision = result
                        icmpProber?.stop()
                        tcpProber.stop()
                        writer.stopMonitoring()
                    }
                }
                return decision
            }
            await writer.flush()

            switch decision {
            case .terminate:
                logger.info("stopping: sending or spooling what is left")
                await sink?.shutdown(deadlineSeconds: 2.5)
                return
            case .restart(let newPing, let newTCP):
                logger.info("addresses changed: restarting the rounds with the new ones")
                pingTargets = newPing
                tcpTargets = newTCP
            case .reload(let newConfiguration, let newPing, let newTCP):
                logger.info("reloaded the config", metadata: ["file": "\(config)"])
                if newConfiguration.influxServers != configuration.influxServers || newConfiguration.spoolDirectory != configuration.spoolDirectory {
                    await sink?.shutdown(deadlineSeconds: 2)
                    sink = try makeSink(newConfiguration, logger: logger)
                }
                if newConfiguration.icmp.ttl != configuration.icmp.ttl || newConfiguration.icmp.family != configuration.icmp.family {
                    logger.warning("icmp ttl and family take effect at the next restart (the sockets were opened with the old ones)")
                }
                if icmpProber == nil && !newConfiguration.pingTargets.isEmpty {
                    logger.warning("ping targets were added, but ICMP sockets are opened only at start: restart netprobe to probe them")
                }
                configuration = newConfiguration
                pingTargets = newPing
                tcpTargets = newTCP
            }
        }
    }

    func makeSink(_ configuration: NetprobeConfiguration, logger: Logger) throws -> InfluxSink? {
        guard !configuration.influxServers.isEmpty else { return nil }
        let servers = try configuration.influxServers.map { settings -> InfluxServer in
            guard let url = URL(string: settings.url) else { throw ValidationError("\(configuration.file): influxdb url '\(settings.url)' is not a URL") }
            let api: InfluxServer.API = switch settings.api {
            case .v1(let database, let retentionPolicy, let username, let password):
                .v1(database: database, retentionPolicy: retentionPolicy, username: username, password: password?.value)
            case .v2(let org, let bucket, let token):
                .v2(org: org, bucket: bucket, token: token.value)
            }
            return InfluxServer(name: settings.name, url: url, api: api, caFile: settings.caFile, gzip: settings.gzip)
        }
        return try InfluxSink(servers: servers, spoolDirectory: configuration.spoolDirectory, spoolLimitBytes: configuration.spoolMaximumBytes,
                              batchSize: configuration.batchSize, flushIntervalNanoseconds: configuration.flushIntervalNanoseconds, logger: logger)
    }
}

/// State handed from the privileged set-up (main thread) to run().
enum RunState {
    static let configuration = Locked<NetprobeConfiguration?>(nil)
    /// Name lookups that failed since the start (the `resolve_failures` counter).
    static let resolveFailures = Locked(0)
}

// MARK: settings

/// Probes per second the engine may send: twice what the targets need on average, and at
/// least 100, so phases stay spread but a late round can catch up.
private func rate(targets: Int, settings: ProbeSettings) -> Double {
    let needed = Double(targets * max(1, settings.count)) / (Double(settings.intervalNanoseconds) / 1e9)
    return max(100, 2 * needed)
}

func icmpSettings(_ configuration: NetprobeConfiguration) -> ICMPProbeConfiguration {
    let settings = configuration.icmp
    var result = ICMPProbeConfiguration(count: settings.count, intervalNanoseconds: settings.spacingNanoseconds, timeoutNanoseconds: settings.timeoutNanoseconds,
                                        payloadLength: settings.payloadSize, ttl: settings.ttl,
                                        packetsPerSecond: rate(targets: configuration.pingTargets.count, settings: settings))
    result.roundIntervalNanoseconds = settings.intervalNanoseconds
    return result
}

func tcpSettings(_ configuration: NetprobeConfiguration, targetCount: Int, logger: Logger) -> TCPProbeConfiguration {
    let settings = configuration.tcp
    var result = tcpConfiguration(count: settings.count, interval: DurationArgument(nanoseconds: settings.spacingNanoseconds),
                                  timeout: DurationArgument(nanoseconds: settings.timeoutNanoseconds),
                                  rate: rate(targets: targetCount, settings: settings), targetCount: targetCount, logger: logger)
    result.roundIntervalNanoseconds = settings.intervalNanoseconds
    return result
}

private func preference(_ family: AddressFamilyPreference) -> AddressPreference {
    switch family {
    case .any: return .any
    case .ipv4: return .ipv4Only
    case .ipv6: return .ipv6Only
    }
}

/// How long a round of name lookups may take: a resolver that never answers must not hold
/// up the start, a reload or a stop; names it did not answer are tried again later.
let resolveTimeoutNanoseconds: Int64 = 5_000_000_000

func resolve(_ hosts: [String], family: AddressFamilyPreference) async -> [ProbeTarget] {
    await Resolver.resolve(hosts, preference: preference(family), timeoutNanoseconds: resolveTimeoutNanoseconds)
}

func resolveTCP(_ targets: [TCPTarget], family: AddressFamilyPreference) async -> [ProbeTarget] {
    let hosts = await Resolver.resolve(targets.map(\.host), preference: preference(family), timeoutNanoseconds: resolveTimeoutNanoseconds)
    return zip(hosts, targets).map { host, target in
        var probe = host
        probe.port = target.port
        return probe
    }
}

// MARK: control

enum ControlEvent: Sendable {
    case terminate
    case reload
    /// A periodic lookup of the names finished (it runs beside the control loop, so a slow
    /// resolver never holds up a signal).
    case resolved(ping: [ProbeTarget], tcp: [ProbeTarget])
}

enum ControlDecision: Sendable {
    case terminate
    case restart(ping: [ProbeTarget], tcp: [ProbeTarget])
    case reload(NetprobeConfiguration, ping: [ProbeTarget], tcp: [ProbeTarget])
}

/// Signals and timers, as one stream of events for the run loop.
final class ControlChannel: Sendable {
    let events: AsyncStream<ControlEvent>
    private let continuation: AsyncStream<ControlEvent>.Continuation

    init() {
        (events, continuation) = AsyncStream<ControlEvent>.makeStream()
    }

    func send(_ event: ControlEvent) {
        continuation.yield(event)
    }
}

/// The write end of the self-pipe the signal handler writes to (set once, before the
/// handlers are installed).
nonisolated(unsafe) private var signalPipeWriter: Int32 = -1

/// The signal handler: only write(2), which is async-signal-safe.
private func forwardSignal(_ signal: Int32) {
    var byte = UInt8(truncatingIfNeeded: signal)
    _ = Glibc.write(signalPipeWriter, &byte, 1)
}

/// Turns SIGTERM, SIGINT and SIGHUP into control events with the self-pipe trick.
///
/// Neither Dispatch signal sources (they raced with our dispositions: a SIGTERM sometimes
/// still killed the process) nor a blocked mask with sigwait (Dispatch's main loop leaves
/// the main thread unblocked) held up here; a handler that writes to a pipe always does.
enum SignalWatcher {
    /// Installs the handlers and forwards each signal to `channel` for the life of the process.
    static func start(channel: ControlChannel) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        signalPipeWriter = fds[1]
        let reader = fds[0]
        NativeThread.spawn(name: "netprobe-signals") {
            var byte: UInt8 = 0
            while true {
                let count = Glibc.read(reader, &byte, 1)
                if count < 0 && errno == EINTR { continue }
                guard count == 1 else { return }
                channel.send(Int32(byte) == SIGHUP ? .reload : .terminate)
            }
        }
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            _ = signal(signalNumber, forwardSignal)
        }
    }
}

/// Waits for a reason to stop the current rounds: a signal, or addresses that changed.
private func controller(control: ControlChannel, configuration: NetprobeConfiguration, ping: [ProbeTarget], tcp: [ProbeTarget],
                        resolveInterval: Int64, logger: Logger) async -> ControlDecision {
    // While a name fails, look again every 30 s so probing resumes soon after it resolves.
    let anyUnresolved = (ping + tcp).contains { $0.address == nil }
    let period = anyUnresolved ? min(resolveInterval, 30_000_000_000) : resolveInterval
    let timer = Task {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(period))
            if Task.isCancelled { break }
            let newPing = await resolve(configuration.pingTargets.map(\.host), family: configuration.icmp.family)
            let newTCP = await resolveTCP(configuration.tcpTargets, family: configuration.tcp.family)
            if Task.isCancelled { break }
            control.send(.resolved(ping: newPing, tcp: newTCP))
        }
    }
    defer { timer.cancel() }
    for await event in control.events {
        switch event {
        case .terminate:
            return .terminate
        case .resolved(let resolvedPing, let resolvedTCP):
            // A lookup started before a restart or reload is stale.
            guard resolvedPing.map(\.name) == ping.map(\.name), resolvedTCP.map(\.name) == tcp.map(\.name) else { continue }
            let newPing = keepingLastAddresses(resolvedPing, previous: ping, logger: logger)
            let newTCP = keepingLastAddresses(resolvedTCP, previous: tcp, logger: logger)
            if newPing.map(\.address) != ping.map(\.address) || newTCP.map(\.address) != tcp.map(\.address) {
                return .restart(ping: newPing, tcp: newTCP)
            }
        case .reload:
            do {
                let reloaded = try ConfigurationLoader.load(path: configuration.file)
                let newPing = await resolve(reloaded.pingTargets.map(\.host), family: reloaded.icmp.family)
                let newTCP = await resolveTCP(reloaded.tcpTargets, family: reloaded.tcp.family)
                return .reload(reloaded, ping: keepingLastAddresses(newPing, previous: ping, logger: logger),
                               tcp: keepingLastAddresses(newTCP, previous: tcp, logger: logger))
            } catch {
                logger.error("SIGHUP: the new config is invalid; keeping the old one", metadata: ["errors": "\(error.description)"])
            }
        }
    }
    return .terminate
}

/// The new lookups, except that a name whose lookup failed only for now (the resolver did
/// not answer) keeps its last address: a dead resolver must not stop the probing of targets
/// that were resolved. Failures are counted and logged (rate-limited: one cause).
func keepingLastAddresses(_ resolved: [ProbeTarget], previous: [ProbeTarget], logger: Logger) -> [ProbeTarget] {
    var lastAddresses: [String: IPAddress] = [:]
    for target in previous { lastAddresses[target.name] = target.address ?? lastAddresses[target.name] }
    var failures = 0
    let result = resolved.map { new -> ProbeTarget in
        guard new.address == nil, let error = new.resolutionError else { return new }
        failures += 1
        if new.resolutionFailureIsTemporary, let address = lastAddresses[new.name] {
            logger.warning("cannot resolve \(new.name) (\(error)): probing its last address \(address)")
            var kept = new
            kept.address = address
            kept.resolutionError = nil
            kept.resolutionFailureIsTemporary = false
            return kept
        }
        logger.warning("cannot resolve \(new.name) (\(error)): its rounds report unresolved")
        return new
    }
    RunState.resolveFailures.withLock { $0 += failures }
    return result
}

// MARK: output

/// Turns rounds into points for the sink, or prints them in quick-look mode, and writes the
/// self-monitoring points.
final class RoundWriter: Sendable {
    let probe: String
    let sink: InfluxSink?
    let format: QuickLookFormat
    let logger: Logger
    private let state = Locked((monitor: SelfMonitor(), stopped: false))
    private let wakeMonitor: AsyncStream<Void>.Continuation
    private let monitorWakes: AsyncStream<Void>

    init(probe: String, sink: InfluxSink?, format: QuickLookFormat, logger: Logger) {
        self.probe = probe
        self.sink = sink
        self.format = format
        self.logger = logger
        (monitorWakes, wakeMonitor) = AsyncStream<Void>.makeStream()
    }

    func consume(_ events: AsyncStream<ProbeEvent>?, envs: [String]) async {
        guard let events else { return }
        for await event in events {
            guard case .round(let round) = event else { continue }
            state.withLock { $0.monitor.count(round) }
            let env = round.targetIndex < envs.count ? envs[round.targetIndex] : ""
            let point = Schema.point(for: round, env: env, probe: probe)
            if let sink {
                do {
                    try sink.write([point])
                } catch {
                    logger.error("cannot spool a round", metadata: ["error": "\(error)"])
                }
            } else {
                printQuickLook(round, env: env, point: point)
            }
        }
    }

    func printQuickLook(_ round: RoundResult, env: String, point: InfluxPoint) {
        switch format {
        case .table:
            Terminal.printLine("\(ResultPrinter.timeFormat.format(round.startTime)) \(round.kind.rawValue) [\(env)] \(ResultPrinter.summaryLine(round))")
        case .json:
            Terminal.printLine(ResultPrinter.jsonLine(round, env: env, probe: probe))
        case .lineProtocol:
            if let line = LineProtocol.encode(point) { Terminal.printLine(line) }
        }
    }

    /// Writes a `netprobe` self-monitoring point every `interval` until stopped.
    func monitor(every interval: Int64) async {
        guard sink != nil else { return }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval))
                wakeMonitor.yield()
            }
        }
        defer { ticker.cancel() }
        for await _ in monitorWakes {
            let (monitor, stopped) = state.withLock { state in
                defer { state.monitor = SelfMonitor() }
                return (state.monitor, state.stopped)
            }
            if stopped { break }
            writeMonitor(monitor)
        }
    }

    private func writeMonitor(_ monitor: SelfMonitor) {
        guard let sink else { return }
        do {
            try sink.write(monitor.points(probe: probe, servers: sink.statistics(), suppressedLogLines: RunCommand.logLimiter.suppressedTotal,
                                          resolveFailures: RunState.resolveFailures.withLock { $0 }, now: Date()))
        } catch {
            logger.error("cannot spool the self-monitoring point", metadata: ["error": "\(error)"])
        }
    }

    func stopMonitoring() {
        state.withLock { $0.stopped = true }
        wakeMonitor.finish()
    }

    /// The last self-monitoring point of this run.
    func flush() async {
        let monitor = state.withLock { $0.monitor }
        if monitor.rounds > 0 { writeMonitor(monitor) }
    }
}
