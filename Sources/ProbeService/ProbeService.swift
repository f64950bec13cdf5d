import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// What the owner of a running service asks of it.
public enum ServiceControl: Sendable {
    /// Finish the rounds in flight, write them, deliver or spool everything, return.
    case stop
    /// Read the configuration again; apply what changed, keep the old one if it is invalid.
    case reload
    /// Look the names up now rather than at the next resolve interval.
    case reresolve
}

/// `netprobe run` as a library: configuration -> plan -> engine -> rounds -> points ->
/// sinks, with reloads and re-resolution applied as changes to the running plan (a target
/// that did not change keeps its schedule untouched), rounds written whole or not at all,
/// and self-monitoring. Drive it with `run(control:)`; nothing here needs a process.
public final class ProbeService: Sendable {
    let initialConfiguration: NetprobeConfiguration
    let icmpSockets: ICMPSocketSet?
    /// Raw sockets of the path prober (`trace:`), opened with privileges; nil: no traces.
    let pathSockets: ICMPSocketSet?
    let pathTCPSockets: PathTCPSockets?
    let output: (any RoundOutput)?
    /// Makes the sink of a configuration's servers (InfluxSink.make); nil: none is wanted.
    let sinks: SinkFactory?
    let logger: Logger
    let loadConfiguration: @Sendable (String) throws -> NetprobeConfiguration
    let lookUp: Lookup
    let logLimiter: RateLimitedLogHandler.Shared?
    /// Get every round beside the sink (the Prometheus exporter).
    let observers: [any RoundObserver]
    /// How late the probe loop's timed waits may end (ProbeLoop.batchingTimerSlack): sends
    /// due within 1 ms of each other share one wake-up. Measured with
    /// Tests/Benchmarks/daemon.sh at 10,000 targets a second: 49.7 % of a core with the
    /// kernel's 50 us, 40.8 % with 500 us, 37.5 % with 1 ms (fping -l: 27.7-29.8 %). A send
    /// is at most 1 ms (and 1 % of its target's spacing) late; RTTs are the kernel's stamps,
    /// and a reply is late by its RTT, not by when the loop looks. Fixed at the start:
    /// a reload that shortens the spacing keeps the first slack.
    static func timerSlack(_ configuration: NetprobeConfiguration) -> Int {
        var gap = min(configuration.icmp.intervalNanoseconds, configuration.tcp.intervalNanoseconds)
        if configuration.icmp.count > 1 { gap = min(gap, configuration.icmp.spacingNanoseconds) }
        if configuration.tcp.count > 1 { gap = min(gap, configuration.tcp.spacingNanoseconds) }
        return ProbeLoop.batchingTimerSlack(shortestGapNanoseconds: gap)
    }
    /// Names whose lookup failed, over the run (`resolve_failures`).
    let resolveFailures = Locked(0)
    /// The last addresses of each `peers_dns` name, kept while its lookups fail for now.
    let knownMeshPeers = Locked<[String: [String]]>([:])

    /// The sink of a configuration's servers, nil when it names none (the command line
    /// passes `InfluxSink.make(for:logger:)`).
    public typealias SinkFactory = @Sendable (NetprobeConfiguration, Logger) throws -> (any PointSink)?

    /// Turns planned targets into engine targets (addresses); `PlanResolver.resolve` unless
    /// a test plays the resolver.
    public typealias Lookup = @Sendable ([PlannedTarget], AddressPreference) async -> [(planned: PlannedTarget, target: ProbeTarget)]

    /// - Parameters:
    ///   - configuration: what to probe and where the results go.
    ///   - icmpSockets: opened with privileges before any thread started; nil when there
    ///     are no ping targets or ICMP is not allowed (then ping targets are not probed).
    ///   - output: where rounds go when no InfluxDB server is configured.
    ///   - sinks: makes the sink of the configuration's servers, at the start and at every
    ///     reload; required when a configuration names servers.
    ///   - logger: where the service reports.
    ///   - loadConfiguration: reads the configuration again on `.reload` (its file).
    ///   - lookUp: resolves names (the system's resolver by default).
    ///   - logLimiter: the rate limit behind `logger`'s handler, whose count of held-back
    ///     lines goes into self-monitoring.
    ///   - observers: get every round too, with or without an InfluxDB sink.
    public init(configuration: NetprobeConfiguration, icmpSockets: ICMPSocketSet?, output: (any RoundOutput)? = nil, sinks: SinkFactory? = nil, logger: Logger,
                logLimiter: RateLimitedLogHandler.Shared? = nil, observers: [any RoundObserver] = [],
                loadConfiguration: @escaping @Sendable (String) throws -> NetprobeConfiguration = { try ConfigurationLoader.load(path: $0) },
                lookUp: @escaping Lookup = { await PlanResolver.resolve($0, preference: $1) },
                pathSockets: ICMPSocketSet? = nil, pathTCPSockets: PathTCPSockets? = nil) {
        self.pathSockets = pathSockets
        self.pathTCPSockets = pathTCPSockets
        self.lookUp = lookUp
        self.logLimiter = logLimiter
        self.observers = observers
        initialConfiguration = configuration
        self.icmpSockets = icmpSockets
        self.output = output
        self.sinks = sinks
        self.logger = logger
        self.loadConfiguration = loadConfiguration
    }

    /// What the control loop acts on: the owner's requests and the results of work done
    /// beside it (lookups), so that no lookup ever holds up a stop.
    enum Event: Sendable {
        case control(ServiceControl)
        case resolved(generation: Int, ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)])
        case reloaded(generation: Int, NetprobeConfiguration, ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)])
    }

    /// Probes until `.stop` arrives (or `control` ends), then finishes the rounds in flight
    /// (at most `RoundRun`'s stop budget), writes them and shuts the sink down: within 5 s.
    /// - Throws: when the engine or the sink cannot start.
    public func run(control: AsyncStream<ServiceControl>) async throws {
        let (events, send) = AsyncStream<Event>.makeStream()
        let forwarder = Task {
            for await request in control { send.yield(.control(request)) }
            send.yield(.control(.stop))
        }
        defer { forwarder.cancel() }

        var configuration = initialConfiguration
        let probers = try Probers(sockets: ProbeSockets(icmp: icmpSockets, path: pathSockets, pathTCP: pathTCPSockets),
                                  timerSlackNanoseconds: Self.timerSlack(configuration), logger: logger)
        let icmpProber = try probers.icmp(EngineSettings.icmp(configuration.icmp, targetCount: configuration.pingTargets.count))
        defer { icmpProber?.close() }
        let tcpProber = try probers.tcp(EngineSettings.tcp(configuration.tcp, targetCount: configuration.tcpTargets.count, logger: logger))
        let writer = RoundWriter(probe: configuration.probeName, sink: try makeSink(configuration), output: output,
                                 logLimiter: logLimiter, resolveFailures: resolveFailures, logger: logger,
                                 observers: RoundObservers(observers: observers, probe: configuration.probeName))
        writer.observers.attach(writer)
        let monitorInterval = configuration.icmp.intervalNanoseconds
        let monitor = Task { await writer.monitor(every: monitorInterval) }
        let tracing = try makeTracing(configuration, probers: probers, writer: writer)
        let tracingTask = tracing.map { tracing in Task { await tracing.run() } }
        logger.info("netprobe run started", metadata: [
            "probe": "\(configuration.probeName)", "ping_targets": "\(configuration.pingTargets.count)",
            "tcp_targets": "\(configuration.tcpTargets.count)", "influxdb_servers": "\(configuration.influxServers.count)",
            "shard": "\(configuration.shard.map { "\($0.index) of \($0.count)" } ?? "none")", "mesh_groups": "\(configuration.meshGroups.count)",
        ])

        let (pingTargets, tcpTargets) = await self.resolve(initialConfiguration)
        if icmpProber == nil && !(configuration.pingTargets.isEmpty && configuration.meshGroups.isEmpty) {
            logger.warning("ping targets are configured but ICMP is not available: only TCP targets are probed")
        }
        var icmpRun = icmpProber.map { KindRun.start(icmp: $0, plan: ProbePlan(pingTargets), settings: configuration.icmp, writer: writer) }
        var tcpRun = KindRun.start(tcp: tcpProber, plan: ProbePlan(tcpTargets), settings: configuration.tcp, writer: writer, logger: logger)

        // Lookups run beside the loop; a generation tells a stale result (from before a
        // reload) from a current one.
        var generation = 0
        var resolving = Task<Void, Never> {}
        func scheduleLookups() {
            resolving.cancel()
            let anyUnresolved = (icmpRun?.plan.entries ?? []).contains { $0.isActive && $0.target.address == nil }
                || tcpRun.plan.entries.contains { $0.isActive && $0.target.address == nil }
            // While a name fails, look again every 30 s so probing resumes soon after it resolves.
            let period = anyUnresolved ? min(configuration.resolveIntervalNanoseconds, 30_000_000_000) : configuration.resolveIntervalNanoseconds
            let current = configuration, currentGeneration = generation
            resolving = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: UInt64(period))
                    if Task.isCancelled { return }
                    let (ping, tcp) = await self.resolve(current)
                    if Task.isCancelled { return }
                    send.yield(.resolved(generation: currentGeneration, ping: ping, tcp: tcp))
                }
            }
        }
        scheduleLookups()
        defer { resolving.cancel() }
        // watch_interval: a changed config, targets or peers file is a reload (FileWatch.swift).
        let fileWatch = FileWatch(files: configuration.sourceFiles)
        if let interval = configuration.watchIntervalNanoseconds {
            let logger = self.logger
            fileWatch.start(intervalNanoseconds: interval) { changed in
                logger.info("config files changed: reloading", metadata: ["files": "\(changed.joined(separator: ", "))"])
                send.yield(.control(.reload))
            }
        }
        defer { fileWatch.stop() }

        control: for await event in events {
            switch event {
            case .control(.stop):
                break control
            case .control(.reresolve):
                let current = configuration, currentGeneration = generation
                Task { let (ping, tcp) = await self.resolve(current); send.yield(.resolved(generation: currentGeneration, ping: ping, tcp: tcp)) }
            case .control(.reload):
                let file = configuration.file
                do {
                    let reloaded = try loadConfiguration(file)
                    generation += 1
                    let reloadGeneration = generation
                    Task {
                        let (ping, tcp) = await self.resolve(reloaded)
                        send.yield(.reloaded(generation: reloadGeneration, reloaded, ping: ping, tcp: tcp))
                    }
                } catch {
                    logger.error("the new config is invalid; keeping the old one", metadata: ["file": "\(file)", "errors": "\(error)"])
                }
            case .resolved(let resolvedGeneration, let ping, let tcp):
                guard resolvedGeneration == generation else { continue }
                if let icmpProber { icmpRun?.apply(ping, prober: icmpProber) }
                tcpRun.apply(tcp, prober: tcpProber)
                scheduleLookups()
            case .reloaded(let reloadedGeneration, let reloaded, let ping, let tcp):
                guard reloadedGeneration == generation else { continue }
                logger.info("reloaded the config", metadata: ["file": "\(reloaded.file)"])
                if reloaded.influxServers != configuration.influxServers || reloaded.spoolDirectory != configuration.spoolDirectory
                    || reloaded.spoolMaximumBytes != configuration.spoolMaximumBytes || reloaded.batchSize != configuration.batchSize
                    || reloaded.flushIntervalNanoseconds != configuration.flushIntervalNanoseconds {
                    await writer.replaceSink(with: try makeSink(reloaded))
                }
                if reloaded.icmp.ttl != configuration.icmp.ttl || reloaded.icmp.family != configuration.icmp.family {
                    logger.warning("icmp ttl and family take effect at the next restart (the sockets were opened with the old ones)")
                }
                if reloaded.prometheus != configuration.prometheus {
                    logger.warning("prometheus: changes take effect at the next restart (the endpoint keeps its address, allow-list and modules)")
                }
                if icmpProber == nil && !reloaded.pingTargets.isEmpty {
                    logger.warning("ping targets are configured but ICMP is not available (sockets are opened only at start): restart netprobe to probe them")
                }
                if let prober = icmpProber, var run = icmpRun {
                    if run.needsRestart(for: reloaded.icmp, targetCount: ping.count) {
                        await run.stop(prober)
                        run = KindRun.start(icmp: prober, plan: ProbePlan(run.plan.keepingKnownAddresses(ping)), settings: reloaded.icmp, writer: writer)
                    } else {
                        run.apply(ping, prober: prober)
                    }
                    icmpRun = run
                }
                if tcpRun.needsRestart(for: reloaded.tcp, targetCount: tcp.count) {
                    await tcpRun.stop(tcpProber)
                    tcpRun = KindRun.start(tcp: tcpProber, plan: ProbePlan(tcpRun.plan.keepingKnownAddresses(tcp)), settings: reloaded.tcp, writer: writer, logger: logger)
                } else {
                    tcpRun.apply(tcp, prober: tcpProber)
                }
                configuration = reloaded
                fileWatch.watch(reloaded.sourceFiles)
                tracing?.update(reloaded)
                scheduleLookups()
            }
        }

        logger.info("stopping: finishing the rounds in flight, then sending or spooling what is left")
        let stopStarted = Clock.monotonicNanoseconds()
        icmpProber?.stop()
        tcpProber.stop()
        await icmpRun?.consumer.value
        await tcpRun.consumer.value
        tracing?.prober.stop()
        tracingTask?.cancel()
        await tracingTask?.value
        tracing?.prober.close()
        writer.stopMonitoring()
        await monitor.value
        await writer.flushMonitor()
        // Whatever the rounds in flight took, the whole stop stays within 5 s.
        let spent = Double(Clock.monotonicNanoseconds() - stopStarted) / 1e9
        await writer.shutdown(deadlineSeconds: max(0.5, 4.5 - spent))
    }

    /// Looks up every target of `configuration`, ping and TCP at once; failures are logged
    /// (the log's rate limit makes that one line a minute) and counted in `resolve_failures`.
    func resolve(_ configuration: NetprobeConfiguration) async -> ([(planned: PlannedTarget, target: ProbeTarget)], [(planned: PlannedTarget, target: ProbeTarget)]) {
        // Sharding and meshes (Fleet.swift): this instance's share of the targets, and its peers.
        let dnsPeers = await meshPeersByName(configuration)
        let identity = LocalIdentity.current(probeName: configuration.probeName)
        async let ping = lookUp(Fleet.ping(configuration, identity: identity, dnsPeers: dnsPeers), configuration.icmp.family)
        async let tcp = lookUp(Fleet.tcp(configuration), configuration.tcp.family)
        let (pingTargets, tcpTargets) = await (ping, tcp)
        var names = Set<String>()
        for (_, target) in pingTargets + tcpTargets where target.address == nil && names.insert(target.name).inserted {
            let detail = target.resolutionFailureIsTemporary ? "no answer from the resolver; a known address is kept" : "its rounds report unresolved"
            logger.warning("cannot resolve \(target.name) (\(target.resolutionError ?? "no address")): \(detail)")
        }
        resolveFailures.withLock { $0 += names.count }
        return (pingTargets, tcpTargets)
    }

    /// The addresses of every `peers_dns` name of the mesh groups; a name whose lookup
    /// failed only for now keeps its last addresses (a resolver outage must not empty a mesh).
    func meshPeersByName(_ configuration: NetprobeConfiguration) async -> [String: [String]] {
        let names = configuration.meshGroups.compactMap { group -> String? in
            if case .dns(let name) = group.source { return name }
            return nil
        }
        guard !names.isEmpty else { return [:] }
        let outcomes = await PeerLookup.resolve(names, preference: configuration.icmp.family)
        return knownMeshPeers.withLock { known in
            var peers: [String: [String]] = [:]
            for (name, outcome) in outcomes {
                switch outcome {
                case .addresses(let addresses):
                    peers[name] = addresses
                    known[name] = addresses
                case .failed(let reason, let temporary):
                    peers[name] = temporary ? known[name] ?? [] : []
                    logger.warning("cannot look up the mesh peers \(name) (\(reason)): \(temporary ? "the last known peers are kept" : "no peers")")
                }
            }
            return peers
        }
    }

    /// The traces of `trace:`, on the probe loop; nil when the section is off or the path
    /// prober's raw sockets were not opened.
    func makeTracing(_ configuration: NetprobeConfiguration, probers: Probers, writer: RoundWriter) throws -> PathTracing? {
        let settings = configuration.trace
        guard settings.isEnabled else { return nil }
        guard let prober = try probers.path(PathProbeConfiguration(rounds: settings.rounds, intervalNanoseconds: settings.spacingNanoseconds,
                                                                   timeoutNanoseconds: settings.timeoutNanoseconds, maxHops: settings.maxHops)) else {
            logger.warning("trace: is configured but the raw ICMP sockets it needs could not be opened (CAP_NET_RAW): no traces")
            return nil
        }
        let logger = self.logger
        return PathTracing(prober: prober, configuration: configuration, probe: configuration.probeName, logger: logger,
                           resolve: { [self] current in await self.resolve(current) },
                           write: { points in
                               guard let sink = writer.sink, !points.isEmpty else { return }
                               do { try sink.write(points) } catch { logger.error("cannot spool trace points", metadata: ["error": "\(error)"]) }
                           })
    }
}

extension ProbeService {
    /// The sink of a configuration's servers; nil when it names none.
    /// - Throws: `ProbeServiceError.noSink` when it names servers and no factory was given.
    func makeSink(_ configuration: NetprobeConfiguration) throws -> (any PointSink)? {
        guard !configuration.influxServers.isEmpty else { return nil }
        guard let sinks else { throw ProbeServiceError.noSink(configuration.file) }
        return try sinks(configuration, logger)
    }
}

/// Why a service cannot start.
public enum ProbeServiceError: Error, CustomStringConvertible {
    /// The configuration names InfluxDB servers but the service was given no way to write to them.
    case noSink(String)

    public var description: String {
        switch self {
        case .noSink(let file): return "\(file): influxdb servers are configured but this service was started without a sink for them"
        }
    }
}

/// The envs of a run's targets by engine index, read by its consumer while the control
/// loop appends the added ones (before the engine is told about them).
final class EnvTable: Sendable {
    private let envs: Locked<[String]>

    init(_ envs: [String]) { self.envs = Locked(envs) }

    func append(_ added: [String]) { envs.withLock { $0 += added } }

    func env(at index: Int) -> String { envs.withLock { index < $0.count ? $0[index] : "" } }
}

/// One prober's current run: its plan (control loop only), the envs its consumer reads,
/// and the consumer.
struct KindRun {
    var plan: ProbePlan
    let envs: EnvTable
    let consumer: Task<Void, Never>
    /// The section and the rate the run was started with.
    let settings: ProbeSettings
    let rate: Double

    static func start(icmp prober: ICMPProber, plan: ProbePlan, settings: ProbeSettings, writer: RoundWriter) -> KindRun {
        let engine = EngineSettings.icmp(settings, targetCount: plan.activeCount)
        return start(prober, configuration: engine, rate: engine.packetsPerSecond, plan: plan, settings: settings, writer: writer)
    }

    static func start(tcp prober: TCPProber, plan: ProbePlan, settings: ProbeSettings, writer: RoundWriter, logger: Logger) -> KindRun {
        let engine = EngineSettings.tcp(settings, targetCount: plan.activeCount, logger: logger)
        return start(prober, configuration: engine, rate: engine.attemptsPerSecond, plan: plan, settings: settings, writer: writer)
    }

    /// Starts `prober` on the plan's targets, its rounds consumed by `writer`.
    static func start<Prober: RoundProber>(_ prober: Prober, configuration: Prober.Configuration, rate: Double, plan: ProbePlan, settings: ProbeSettings,
                                           writer: RoundWriter) -> KindRun {
        let envs = EnvTable(plan.entries.map(\.planned.env))
        let stream = prober.probe(plan.targets, configuration: configuration, reportingAttempts: false)
        return KindRun(plan: plan, envs: envs, consumer: Task { await writer.consume(stream, envs: envs) }, settings: settings, rate: rate)
    }

    /// A changed section (count, spacing, interval, timeout, mode...) needs a new run; so
    /// does a target list grown past what the run's rate was sized for. Anything else is
    /// applied to the running one.
    func needsRestart(for settings: ProbeSettings, targetCount: Int) -> Bool {
        settings != self.settings || EngineSettings.rate(targets: targetCount, settings: settings) > rate
    }

    /// Hands the prober what changed between the plan and `wanted`; nothing when nothing did.
    mutating func apply(_ wanted: [(planned: PlannedTarget, target: ProbeTarget)], prober: any RoundProber) {
        apply(wanted) { prober.update($0) }
    }

    private mutating func apply(_ wanted: [(planned: PlannedTarget, target: ProbeTarget)], submit: (TargetUpdate) -> Range<Int>?) {
        let before = plan.entries.count
        let update = plan.update(to: plan.keepingKnownAddresses(wanted))
        guard !update.isEmpty else { return }
        envs.append(plan.entries[before...].map(\.planned.env))
        let given = submit(update)
        assert(given == nil || given == before..<plan.entries.count, "the engine gave the added targets other indices than the plan")
    }

    /// Ends the run: rounds in flight finish and are written.
    func stop(_ prober: any RoundProber) async {
        prober.stop()
        await consumer.value
    }
}

/// Turns rounds into points for the sink (or the output), and writes the self-monitoring
/// points.
final class RoundWriter: Sendable {
    let probe: String
    let output: (any RoundOutput)?
    let logLimiter: RateLimitedLogHandler.Shared?
    let resolveFailures: Locked<Int>
    let logger: Logger
    let observers: RoundObservers
    private let state: Locked<(monitor: SelfMonitor, stopped: Bool, sink: (any PointSink)?)>
    private let wakeMonitor: AsyncStream<Void>.Continuation
    private let monitorWakes: AsyncStream<Void>

    init(probe: String, sink: (any PointSink)?, output: (any RoundOutput)?, logLimiter: RateLimitedLogHandler.Shared?, resolveFailures: Locked<Int>, logger: Logger,
         observers: RoundObservers = RoundObservers(observers: [], probe: "")) {
        self.observers = observers
        self.probe = probe
        self.output = output
        self.logLimiter = logLimiter
        self.resolveFailures = resolveFailures
        self.logger = logger
        state = Locked((SelfMonitor(), false, sink))
        (monitorWakes, wakeMonitor) = AsyncStream<Void>.makeStream()
    }

    var sink: (any PointSink)? { state.withLock { $0.sink } }

    func consume(_ events: AsyncStream<ProbeEvent>, envs: EnvTable) async {
        // One writer per stream and sink: it keeps per-target state (series keys).
        var current: (sink: any PointSink, writer: any RoundPointWriter)?
        for await event in events {
            observers.observe(event, envs: envs)
            switch event {
            case .round(let round):
                state.withLock { $0.monitor.count(round) }
                let env = envs.env(at: round.targetIndex)
                if let sink {
                    if current == nil || current?.sink !== sink { current = (sink, sink.roundWriter(probe: probe)) }
                    do {
                        try current?.writer.write(round, env: env)
                    } catch {
                        logger.error("cannot spool a round", metadata: ["error": "\(error)"])
                    }
                } else {
                    output?.write(round, env: env, point: Schema.point(for: round, env: env, probe: probe))
                }
            case .abandoned:
                state.withLock { $0.monitor.countAbandoned() }
            case .attempt:
                continue
            }
        }
    }

    /// Writes a `netprobe` self-monitoring point every `interval` until stopped.
    func monitor(every interval: Int64) async {
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
            write(monitor)
        }
    }

    private func write(_ monitor: SelfMonitor) {
        guard let sink else { return }
        do {
            try sink.write(monitor.points(probe: probe, servers: sink.statistics(), suppressedLogLines: logLimiter?.suppressedTotal ?? 0,
                                          resolveFailures: resolveFailures.withLock { $0 }, now: Date()))
        } catch {
            logger.error("cannot spool the self-monitoring point", metadata: ["error": "\(error)"])
        }
    }

    func stopMonitoring() {
        state.withLock { $0.stopped = true }
        wakeMonitor.finish()
    }

    /// The last self-monitoring point.
    func flushMonitor() async {
        let monitor = state.withLock { $0.monitor }
        if monitor.rounds > 0 || monitor.roundsAbandoned > 0 { write(monitor) }
    }

    /// A reload changed the servers: the old sink delivers or spools what it has, the new
    /// one takes every point from now on.
    func replaceSink(with sink: (any PointSink)?) async {
        let old = state.withLock { state in
            defer { state.sink = sink }
            return state.sink
        }
        await old?.shutdown(deadlineSeconds: 2)
    }

    func shutdown(deadlineSeconds: Double) async {
        await sink?.shutdown(deadlineSeconds: deadlineSeconds)
    }
}
