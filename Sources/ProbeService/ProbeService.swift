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
        var session = try await RunSession.start(self, configuration: initialConfiguration, send: send)
        let writer = session.writer, tracing = session.tracing, monitorInterval = initialConfiguration.icmp.intervalNanoseconds
        let stopStarted: Int64
        do {
            // Beside the control loop, and ended by it: the owner's requests, the
            // self-monitoring points, the traces.
            stopStarted = try await withThrowingDiscardingTaskGroup(returning: Int64.self) { group in
                group.addTask {
                    for await request in control { send.yield(.control(request)) }
                    send.yield(.control(.stop))
                }
                group.addTask { await writer.monitor(every: monitorInterval) }
                if let tracing { group.addTask { await tracing.run() } }
                for await event in events {
                    guard try await session.handle(event) else { break }
                }
                logger.info("stopping: finishing the rounds in flight, then sending or spooling what is left")
                let started = Clock.monotonicNanoseconds()
                await session.stopProbing()
                writer.stopMonitoring()
                group.cancelAll()
                return started
            }
        } catch {
            await session.stopProbing()
            session.close()
            throw error
        }
        session.close()
        tracing?.prober.close()
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
        // Whatever the lookup (a test's plays the resolver), each target is sent and tagged
        // with its own options and labels.
        let (pingLookups, tcpLookups) = await (ping, tcp)
        let pingTargets = pingLookups.map { ($0.planned, $0.planned.applied(to: $0.target)) }
        let tcpTargets = tcpLookups.map { ($0.planned, $0.planned.applied(to: $0.target)) }
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
                                                                   timeoutNanoseconds: settings.timeoutNanoseconds, maxHops: settings.maxHops,
                                                                   discoversMTU: settings.mtu)) else {
            logger.warning("trace: is configured but the raw ICMP sockets it needs could not be opened (CAP_NET_RAW): no traces")
            return nil
        }
        let logger = self.logger
        return PathTracing(prober: prober, configuration: configuration, probe: configuration.probeName, logger: logger,
                           resolve: { [self] current in await self.resolve(current) },
                           write: { points in
                               guard let sink = writer.sink, !points.isEmpty else { return }
                               do { try sink.write(points) } catch { logger.error("cannot spool trace points", metadata: ["error": "\(error)"]) }
                           },
                           observe: { trace, env in writer.observers.observeTrace(trace, env: env) })
    }
}

extension ProbeService {
    /// The sockets `run` needs for `configuration`, opened now: call it with privileges,
    /// before they are dropped. Echo sockets when there are ping targets (or meshes), of the
    /// families `icmp: family:` allows; raw path sockets when `trace:` is on.
    /// - Returns: the sockets, and what could not be opened without stopping the run (a
    ///   line for people each: traces need raw sockets).
    /// - Throws: the echo sockets' error when ping targets are configured and none opens.
    public static func openSockets(for configuration: NetprobeConfiguration, logger: Logger) throws(ICMPSocketError) -> (sockets: ProbeSockets, warnings: [String]) {
        var sockets = ProbeSockets()
        var warnings: [String] = []
        if !configuration.pingTargets.isEmpty || !configuration.meshGroups.isEmpty {
            let families: Set<AddressFamily> = switch configuration.icmp.family {
            case .ipv4Only: [.ipv4]
            case .ipv6Only: [.ipv6]
            case .any: [.ipv4, .ipv6]
            }
            // Both don't-fragment kinds are opened now, before privileges go: a reload may
            // ask for either (a raw one only sends; answers come to the main socket).
            sockets.icmp = try ICMPSocketSet.open(families: families, optional: families.count > 1 ? families : [], ttl: configuration.icmp.ttl,
                                                fragmentation: Set(Fragmentation.allCases), logger: logger)
        }
        if configuration.trace.isEnabled {
            // The path prober's own raw sockets (time exceeded reaches only raw sockets).
            let families: Set<AddressFamily> = [.ipv4, .ipv6]
            sockets.path = try? ICMPSocketSet.open(families: families, optional: families, ttl: nil, logger: logger)
            if configuration.trace.tcpIntervalNanoseconds != nil {
                sockets.pathTCP = try? PathTCPSockets.open(families: families, optional: families)
            }
            if sockets.path?.modes.values.contains(where: { $0 != .raw }) != false {
                warnings.append("netprobe: trace: needs raw ICMP sockets (CAP_NET_RAW); traces are off for this run")
                sockets.path = nil
            }
        }
        return (sockets, warnings)
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
