import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// One `run` of the service: its probers and the runs on them, the configuration in
/// force, and the lookups beside the control loop. `ProbeService.run` hands it every event.
struct RunSession {
    typealias Resolved = [(planned: PlannedTarget, target: ProbeTarget)]

    let service: ProbeService
    let send: AsyncStream<ProbeService.Event>.Continuation
    let probers: Probers
    let icmpProber: ICMPProber?
    let tcpProber: TCPProber
    let writer: RoundWriter
    let tracing: PathTracing?
    let fileWatch: FileWatch
    var configuration: NetprobeConfiguration
    var icmpRun: KindRun?
    var tcpRun: KindRun
    /// Lookups run beside the loop; a generation tells a stale result (from before a
    /// reload) from a current one.
    var generation = 0
    var resolving = Task<Void, Never> {}
    var logger: Logger { service.logger }

    /// Builds the probers, the writer and the traces of `configuration`, looks its targets
    /// up and starts probing them.
    /// - Throws: when the probe loop or the sink cannot start.
    static func start(_ service: ProbeService, configuration: NetprobeConfiguration, send: AsyncStream<ProbeService.Event>.Continuation) async throws -> RunSession {
        let logger = service.logger
        let probers = try Probers(sockets: ProbeSockets(icmp: service.icmpSockets, path: service.pathSockets, pathTCP: service.pathTCPSockets),
                                  timerSlackNanoseconds: ProbeService.timerSlack(configuration), logger: logger)
        let icmpProber = try probers.icmp(EngineSettings.icmp(configuration.icmp, targetCount: configuration.pingTargets.count))
        let tcpProber = try probers.tcp(EngineSettings.tcp(configuration.tcp, targetCount: configuration.tcpTargets.count, logger: logger))
        let writer = RoundWriter(probe: configuration.probeName, sink: try service.makeSink(configuration), output: service.output,
                                 logLimiter: service.logLimiter, resolveFailures: service.resolveFailures, logger: logger,
                                 observers: RoundObservers(observers: service.observers, probe: configuration.probeName))
        writer.observers.attach(writer)
        let tracing = try service.makeTracing(configuration, probers: probers, writer: writer)
        logger.info("netprobe run started", metadata: [
            "probe": "\(configuration.probeName)", "ping_targets": "\(configuration.pingTargets.count)",
            "tcp_targets": "\(configuration.tcpTargets.count)", "influxdb_servers": "\(configuration.influxServers.count)",
            "shard": "\(configuration.shard.map { "\($0.index) of \($0.count)" } ?? "none")", "mesh_groups": "\(configuration.meshGroups.count)",
        ])
        warnAboutPacketOptions(configuration, logger: logger)
        let (pingTargets, tcpTargets) = await service.resolve(configuration)
        if icmpProber == nil && !(configuration.pingTargets.isEmpty && configuration.meshGroups.isEmpty) {
            logger.warning("ping targets are configured but ICMP is not available: only TCP targets are probed")
        }
        let icmpRun = icmpProber.map { KindRun.start(icmp: $0, plan: ProbePlan(pingTargets), settings: configuration.icmp, writer: writer) }
        let tcpRun = KindRun.start(tcp: tcpProber, plan: ProbePlan(tcpTargets), settings: configuration.tcp, writer: writer, logger: logger)
        var session = RunSession(service: service, send: send, probers: probers, icmpProber: icmpProber, tcpProber: tcpProber, writer: writer,
                                 tracing: tracing, fileWatch: FileWatch(files: configuration.sourceFiles), configuration: configuration,
                                 icmpRun: icmpRun, tcpRun: tcpRun)
        session.scheduleLookups()
        // watch_interval: a changed config, targets or peers file is a reload (FileWatch.swift).
        if let interval = configuration.watchIntervalNanoseconds {
            session.fileWatch.start(intervalNanoseconds: interval) { changed in
                logger.info("config files changed: reloading", metadata: ["files": "\(changed.joined(separator: ", "))"])
                send.yield(.control(.reload))
            }
        }
        return session
    }

    /// Looks the names up again after the resolve interval (every 30 s at most while one
    /// fails, so probing resumes soon after it resolves), replacing the lookups scheduled.
    mutating func scheduleLookups() {
        resolving.cancel()
        let anyUnresolved = (icmpRun?.plan.entries ?? []).contains { $0.isActive && $0.target.address == nil }
            || tcpRun.plan.entries.contains { $0.isActive && $0.target.address == nil }
        let period = anyUnresolved ? min(configuration.resolveIntervalNanoseconds, 30_000_000_000) : configuration.resolveIntervalNanoseconds
        let current = configuration, currentGeneration = generation, service = self.service, send = self.send
        resolving = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(period))
                if Task.isCancelled { return }
                let (ping, tcp) = await service.resolve(current)
                if Task.isCancelled { return }
                send.yield(.resolved(generation: currentGeneration, ping: ping, tcp: tcp))
            }
        }
    }

    /// Acts on one event of the control loop.
    /// - Returns: false for a stop.
    /// - Throws: when a reload's new sink cannot start.
    mutating func handle(_ event: ProbeService.Event) async throws -> Bool {
        switch event {
        case .control(.stop):
            return false
        case .control(.reresolve):
            let current = configuration, currentGeneration = generation, service = self.service, send = self.send
            Task { let (ping, tcp) = await service.resolve(current); send.yield(.resolved(generation: currentGeneration, ping: ping, tcp: tcp)) }
        case .control(.reload):
            reload()
        case .resolved(let resolvedGeneration, let ping, let tcp):
            guard resolvedGeneration == generation else { return true }
            if let icmpProber { icmpRun?.apply(ping, prober: icmpProber) }
            tcpRun.apply(tcp, prober: tcpProber)
            scheduleLookups()
        case .reloaded(let reloadedGeneration, let reloaded, let ping, let tcp):
            guard reloadedGeneration == generation else { return true }
            try await apply(reloaded, ping: ping, tcp: tcp)
        }
        return true
    }

    /// Reads the configuration again and looks its targets up beside the loop; an invalid
    /// one is logged and the old one kept.
    mutating func reload() {
        let file = configuration.file
        do {
            let reloaded = try service.loadConfiguration(file)
            generation += 1
            let reloadGeneration = generation, service = self.service, send = self.send
            Task {
                let (ping, tcp) = await service.resolve(reloaded)
                send.yield(.reloaded(generation: reloadGeneration, reloaded, ping: ping, tcp: tcp))
            }
        } catch {
            logger.error("the new config is invalid; keeping the old one", metadata: ["file": "\(file)", "errors": "\(error)"])
        }
    }

    /// Applies a reloaded configuration: a new sink when the servers changed, a restarted
    /// run where a section changed, the target changes alone everywhere else.
    mutating func apply(_ reloaded: NetprobeConfiguration, ping: Resolved, tcp: Resolved) async throws {
        logger.info("reloaded the config", metadata: ["file": "\(reloaded.file)"])
        if reloaded.influxServers != configuration.influxServers || reloaded.spoolDirectory != configuration.spoolDirectory
            || reloaded.spoolMaximumBytes != configuration.spoolMaximumBytes || reloaded.batchSize != configuration.batchSize
            || reloaded.flushIntervalNanoseconds != configuration.flushIntervalNanoseconds {
            await writer.replaceSink(with: try service.makeSink(reloaded))
        }
        warnAboutWhatNeedsARestart(reloaded)
        Self.warnAboutPacketOptions(reloaded, logger: logger)
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

    /// Source addresses and interfaces the config names that this host does not have, said
    /// once per start or reload (one line per problem, with where it is written first). The
    /// config may be shared by several hosts and an interface may come up later (a VPN), so
    /// this is a warning: those probes are sent and fail (result `error` or `unreachable`)
    /// until it is fixed.
    static func warnAboutPacketOptions(_ configuration: NetprobeConfiguration, logger: Logger) {
        var places: [PacketOptions: (first: String, count: Int)] = [:]
        func note(_ options: PacketOptions, _ place: String) {
            guard options.source != nil || options.interface != nil else { return }
            // The class does not decide whether the address or interface exists.
            let key = PacketOptions(source: options.source, interface: options.interface)
            places[key, default: (place, 0)].count += 1
        }
        for target in configuration.pingTargets { note(target.options, "\(target.file):\(target.line) (\(target.host))") }
        for target in configuration.tcpTargets { note(target.options, "\(target.file):\(target.line) (\(target.host) port \(target.port))") }
        for (name, module) in configuration.prometheus?.probe.modules ?? [:] { note(module.options, "\(configuration.file): prometheus module \(name)") }
        // One line (the log's rate limit holds back a second line of one call site).
        let problems = places.sorted(by: { $0.value.first < $1.value.first }).flatMap { options, place in
            options.problemsOnThisHost().map { "\($0) (\(place.first)\(place.count > 1 ? " and \(place.count - 1) more" : ""))" }
        }
        if !problems.isEmpty {
            logger.warning("\(problems.joined(separator: "; ")): the probes that use \(problems.count == 1 ? "it" : "them") fail until \(problems.count == 1 ? "it exists" : "they exist")")
        }
    }

    /// What a reload cannot change in a running process, said once per reload.
    func warnAboutWhatNeedsARestart(_ reloaded: NetprobeConfiguration) {
        if reloaded.icmp.ttl != configuration.icmp.ttl || reloaded.icmp.family != configuration.icmp.family {
            logger.warning("icmp ttl and family take effect at the next restart (the sockets were opened with the old ones)")
        }
        if reloaded.trace.mtu != configuration.trace.mtu {
            logger.warning("trace mtu takes effect at the next restart (the path sockets were opened \(configuration.trace.mtu ? "with" : "without") don't-fragment)")
        }
        if reloaded.prometheus != configuration.prometheus {
            logger.warning("prometheus: changes take effect at the next restart (the endpoint keeps its address, allow-list and modules)")
        }
        if reloaded.web != configuration.web {
            logger.warning("web: changes take effect at the next restart (the view keeps its address, and stays on or off)")
        }
        if icmpProber == nil && !reloaded.pingTargets.isEmpty {
            logger.warning("ping targets are configured but ICMP is not available (sockets are opened only at start): restart netprobe to probe them")
        }
    }

    /// Stops sending; the rounds in flight finish and are written; traces stop.
    func stopProbing() async {
        icmpProber?.stop()
        tcpProber.stop()
        await icmpRun?.consumer.value
        await tcpRun.consumer.value
        tracing?.prober.stop()
    }

    /// Ends what runs beside the loop and closes the sockets (after `stopProbing`, or
    /// when the run ends on an error).
    func close() {
        resolving.cancel()
        fileWatch.stop()
        icmpProber?.close()
    }
}
