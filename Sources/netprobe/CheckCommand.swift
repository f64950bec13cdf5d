import ArgumentParser
import FoundationEssentials
import Glibc
import Diagnosis
import Logging
import ProbeEngine
import ProbeResults
import ProbeService

struct CheckCommand: PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Is it the network, the server, or neither? ICMP and TCP side by side, then a verdict.",
        discussion: """
            Probes every host with ICMP echo and, where a port is given, with TCP handshakes, \
            side by side for --duration, then prints a verdict per host with the numbers \
            behind it. Example: netprobe check db.example.com:5432

            Side by side, check traces the path to every host (TTL-limited ICMP, or TCP \
            SYNs to the first port given, as `netprobe trace`; needs raw sockets, skip it \
            with --no-trace). The trace is part of the evidence (rules 2 and 4), and the \
            verdict ends with what it found: for a network problem the first hop from \
            which loss or added latency persists to the host ("loss starts at hop 4, \
            198.51.100.1: 12.0 % from there to the target"), or where the path ends; \
            otherwise whether the path is clean and which hops only rate-limit their ICMP \
            (see `netprobe trace --help` for how a trace is read).

            How sure: a loss rate is an estimate with a 95 % confidence interval (the Wilson \
            score interval), "ICMP loss 4.0 % (95 % interval 1.1-13.5 %, 50 probes)". \
            Against the 5 % threshold it is a problem when the interval's lower bound is at \
            or above 5 %, no problem when its upper bound is below 5 %, and undecided when \
            the interval straddles 5 %. The ICMP loss pools the pings with the ICMP trace's \
            probes that reached the host (the same packets on the same path; a TCP trace is \
            not pooled); where that straddles 5 % but the pings alone decide, they do. \
            Handshake failures are judged the same way. While a verdict is \
            undecided after --duration, check probes on (the trace too), up to \
            --max-duration; what is still undecided then is "inconclusive".

            The rules, first match wins (threshold 5 %; interval: the 95 % interval):
              1. the name does not resolve                  -> name: DNS problem
              2. ICMP or TCP answered only "unreachable", or
                 the trace ends unreachable or in a loop,
                 or ICMP with -M do answered only "too big" -> network
              3. ICMP loss interval at or above 5 %         -> network
              4. the trace's loss start is a significant
                 change point (99 %) and the target's loss
                 interval starts at or above 1 %            -> network, from that hop
              5. no ICMP reply: if a TCP port answers (even with a refusal),
                 ICMP is only filtered and TCP decides;
                 if nothing answers                         -> network (or host down)
              6. a TCP port refuses                         -> server: service down
              7. a TCP port never answers                   -> server: filtered, or
                                                               accept backlog full
              8. handshake median > 2 x ICMP median + 1 ms  -> server: slow to accept
              9. ICMP loss interval straddles 5 %           -> inconclusive
             10. a port's handshake failure interval
                 at or above 5 %                            -> server: overloaded
                 straddling 5 %                             -> inconclusive
             11. otherwise                                  -> neither: look at the
                                                               application
            Loss explains none of rules 6-8, so they come before its undecided rule 9.

            TCP probes are half-open unless --tcp-mode connect is given: the server's \
            application never sees a connection, so a production database logs nothing \
            (see `netprobe tcp --help`).

            ICMP needs CAP_NET_RAW or net.ipv4.ping_group_range (see `netprobe ping --help`); \
            without either, check runs TCP only and says so.

            Exit status: 0 every verdict is "neither", 1 some host has a problem (network \
            or server), 2 a name did not resolve, 3 bad arguments, 4 system error, 5 some \
            verdict is inconclusive (and none of 1 or 2 applies). The first that applies of \
            2, 1, 5 wins.
            """
    )

    @Option(help: ArgumentHelp("How long to probe (seconds, or with a unit: 30s, 1m).", valueName: "duration"))
    var duration = DurationArgument(nanoseconds: 10_000_000_000)

    @Option(help: ArgumentHelp("How long to probe on past --duration while a loss or failure rate is undecided against 5 % (default 60s, or --duration when longer; at least --duration).",
                               valueName: "max-duration"))
    var maxDuration: DurationArgument?

    @Option(name: .shortAndLong, help: ArgumentHelp("Time between two probes of one kind to the same host and port.", valueName: "interval"))
    var interval = DurationArgument(nanoseconds: 200_000_000)

    @Option(name: [.customShort("W"), .long], help: ArgumentHelp("How long to wait for each reply or handshake.", valueName: "timeout"))
    var timeout = DurationArgument(nanoseconds: 1_000_000_000)

    @OptionGroup var family: AddressFamilyOption

    @OptionGroup var tcp: TCPModeOption

    @OptionGroup(title: "Packet options") var packet: PacketOptionsOption

    @OptionGroup var fragmentation: FragmentationOption

    @Option(name: .shortAndLong, help: ArgumentHelp("ICMP payload bytes of the echo requests (\(ICMPEcho.minimumPayloadLength) to \(ICMPEcho.maximumPayloadLength)), as ping -s.", valueName: "bytes"))
    var size: Int = 56

    @Flag(name: .long, help: "Do not trace the path to the hosts.")
    var noTrace = false

    @Flag(help: "Print one JSON object per host with the verdict and the rounds behind it.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log what netprobe does to standard error.")
    var verbose = false

    @Argument(help: ArgumentHelp("HOST, HOST:PORT or HOST:PORT,PORT ([IPv6]:PORT).", valueName: "host[:port]"))
    var targets: [String]

    func validate() throws {
        guard duration.nanoseconds >= 100_000_000 else { throw ValidationError("--duration must be at least 100ms, got \(duration).") }
        guard interval.nanoseconds >= 1_000_000 else { throw ValidationError("--interval must be at least 1ms, got \(interval).") }
        guard timeout.nanoseconds >= 1_000_000 else { throw ValidationError("--timeout must be at least 1ms, got \(timeout).") }
        if let maxDuration, maxDuration.nanoseconds < duration.nanoseconds {
            throw ValidationError("--max-duration must be at least --duration (\(duration)), got \(maxDuration).")
        }
        for target in targets { _ = try Endpoint.parse(target, requirePort: false) }
        _ = try packet.preference(family.preference)
        _ = try fragmentation.fragmentation()
        guard size >= ICMPEcho.minimumPayloadLength, size <= ICMPEcho.maximumPayloadLength else {
            throw ValidationError("--size must be between \(ICMPEcho.minimumPayloadLength) and \(ICMPEcho.maximumPayloadLength) bytes (netprobe's payload carries a cookie and the probe number), got \(size).")
        }
    }

    /// -4 / -6, narrowed to the family of --source when one is given.
    var preference: AddressPreference { (try? packet.preference(family.preference)) ?? family.preference }

    /// How long check may probe in all: --max-duration, by default 60 s or --duration if longer.
    var probingBound: DurationArgument {
        maxDuration ?? DurationArgument(nanoseconds: max(duration.nanoseconds, Self.defaultMaxDurationNanoseconds))
    }

    static let defaultMaxDurationNanoseconds: Int64 = 60_000_000_000

    func makeLogger() -> Logger { CommandLogger.make(verbose: verbose) }

    /// Opens the ICMP sockets if allowed (TCP needs nothing), then drops every capability.
    func acquirePrivilegedResources() throws -> PrivilegedResources {
        let logger = makeLogger()
        let (families, optional) = preference.socketFamilies
        var resources = PrivilegedResources()
        let kinds = try fragmentation.socketKinds()
        do {
            resources.icmpSockets = try ICMPSocketSet.open(families: families, optional: optional, ttl: nil, fragmentation: kinds, logger: logger)
        } catch {
            writeError("netprobe: ICMP is not available, checking TCP only: \(error)\n  (see `netprobe ping --help` for the two ways to allow ICMP)")
        }
        if let sockets = resources.icmpSockets { try packet.checkSockets(sockets) }
        if !noTrace, resources.icmpSockets?.modes.values.allSatisfy({ $0 == .raw }) == true {
            resources.pathSockets = try? ICMPSocketSet.open(families: families, optional: optional, ttl: nil, logger: logger)
            // A host given with a port is traced with TCP SYNs to its first port: that
            // reaches hosts that filter ICMP echo.
            if Endpoint.anyHasPort(targets) {
                resources.pathTCPSockets = try? PathTCPSockets.open(families: families, optional: optional)
            }
        }
        try dropPrivileges()
        return resources
    }

    func run(with resources: PrivilegedResources) async throws {
        let logger = makeLogger()
        let endpoints = try targets.map { try Endpoint.parse($0, requirePort: false) }
        var hosts: [String] = []
        for endpoint in endpoints where !hosts.contains(endpoint.host) { hosts.append(endpoint.host) }
        try packet.checkFamilies(of: hosts)
        let packetOptions = try packet.packetOptions()
        let hostTargets = PacketOptionsOption.apply(packetOptions, to: await Resolver.resolve(hosts, preference: preference))
        // Don't-fragment is ICMP echo's only (TCP's segments are the kernel's to size).
        let echoTargets = try fragmentation.apply(to: hostTargets)
        try fragmentation.checkSize(size, targets: echoTargets)
        let tcpTargets = PacketOptionsOption.apply(packetOptions, to: await resolveEndpoints(endpoints, preference: preference))

        let probers = try Probers(sockets: ProbeSockets(icmp: resources.icmpSockets, path: resources.pathSockets, pathTCP: resources.pathTCPSockets), logger: logger)
        let icmpProber = try probers.icmp(ICMPProbeConfiguration(count: 0, intervalNanoseconds: interval.nanoseconds, timeoutNanoseconds: timeout.nanoseconds,
                                                                 payloadLength: size, ttl: nil, packetsPerSecond: 1000))
        let tcpProber = try probers.tcp(EngineSettings.tcp(count: 0, intervalNanoseconds: interval.nanoseconds, timeoutNanoseconds: timeout.nanoseconds,
                                                           rate: 1000, targetCount: tcpTargets.count, mode: tcp.mode, logger: logger))
        let pathProber = try probers.path(PathProbeConfiguration(rounds: 0, intervalNanoseconds: interval.nanoseconds, timeoutNanoseconds: timeout.nanoseconds))
        let stopAll: @Sendable () -> Void = {
            icmpProber?.stop()
            tcpProber.stop()
            pathProber?.stop()
        }
        let interrupts = SignalWatcher.onInterrupt(stopAll)
        defer { interrupts.cancel() }

        let progress = Progress(hosts: hosts.count, ports: tcpTargets.count, duration: duration.seconds, maxDuration: probingBound.seconds)
        let live = Locked(LiveRounds(icmp: icmpProber == nil ? [] : echoTargets, tcp: tcpTargets))
        let icmpEvents = icmpProber?.probe(echoTargets)
        let tcpEvents = tcpTargets.isEmpty ? nil : tcpProber.probe(tcpTargets)
        let (durationNanoseconds, boundNanoseconds) = (duration.nanoseconds, probingBound.nanoseconds)
        // After --duration, probing goes on while the rounds so far leave a verdict
        // undecided that more probes could settle, up to --max-duration.
        let timer = Task {
            let start = Date()
            while true {
                try await Task.sleep(nanoseconds: 250_000_000)
                let elapsed = Date().timeIntervalSince(start)
                progress.show(elapsed: elapsed)
                guard elapsed * 1e9 >= Double(durationNanoseconds) else { continue }
                if elapsed * 1e9 >= Double(boundNanoseconds) || !live.withLock({ $0.wantMoreProbes(hosts: hostTargets) }) { break }
            }
            stopAll()
        }
        async let icmpRounds = collect(icmpEvents, progress: progress, live: live)
        async let tcpRounds = collect(tcpEvents, progress: progress, live: live)
        let traceTargets = hostTargets.map { host in
            var target = host
            if resources.pathTCPSockets != nil { target.port = endpoints.first { $0.host == host.name }?.ports.first }
            return target
        }
        async let pathTraces = collect(pathProber?.trace(traceTargets))
        let (icmp, tcp, traces) = await (icmpRounds, tcpRounds, pathTraces)
        timer.cancel()
        progress.finish()

        var statuses: [Int32] = []
        for verdict in Diagnosis.verdicts(hosts: hostTargets, icmp: icmp, tcp: tcp, traces: traces) {
            print(report(host: verdict.host, diagnosis: verdict.diagnosis, icmp: verdict.icmp, tcp: verdict.tcp, trace: verdict.trace))
            switch verdict.diagnosis.culprit {
            case .name: statuses.append(ExitStatus.unresolved)
            case .network, .server: statuses.append(ExitStatus.someUnanswered)
            case .inconclusive: statuses.append(ExitStatus.inconclusive)
            case .neither: statuses.append(ExitStatus.allAnswered)
            }
        }
        // A name problem first, then a network or server problem, then an open question.
        let status = [ExitStatus.unresolved, ExitStatus.someUnanswered, ExitStatus.inconclusive].first(where: statuses.contains) ?? ExitStatus.allAnswered
        if status != ExitStatus.allAnswered { throw ExitCode(status) }
    }

    func collect(_ events: AsyncStream<ProbeEvent>?, progress: Progress, live: Locked<LiveRounds>) async -> [RoundResult] {
        guard let events else { return [] }
        var rounds: [RoundResult] = []
        for await event in events {
            switch event {
            case .attempt(let attempt):
                progress.count(attempt)
                live.withLock { $0.record(attempt) }
            case .round(let round): rounds.append(round)
            case .abandoned: break  // repeating rounds only
            }
        }
        return rounds
    }

    func collect(_ traces: AsyncStream<PathTrace>?) async -> [PathTrace] {
        guard let traces else { return [] }
        var collected: [PathTrace] = []
        for await trace in traces { collected.append(trace) }
        return collected
    }

    func report(host: ProbeTarget, diagnosis: Diagnosis, icmp: RoundResult?, tcp: [RoundResult], trace: PathTrace? = nil) -> String {
        if json {
            var object = JSONObject()
            object.add("target", .string(host.name))
            object.add("address", host.address.map { .string($0.description) } ?? .null)
            ResultPrinter.addPacketOptions(host.options, to: &object)
            object.add("verdict", .string(diagnosis.culprit.rawValue))
            object.add("reason", .string(diagnosis.reason.rawValue))
            object.add("summary", .string(diagnosis.summary))
            object.add("loss", diagnosis.icmpLoss.map { .raw(Self.json($0).serialized) } ?? .null)
            object.add("handshake_failures", .array(diagnosis.handshakeFailures.map { .raw(Self.json($0.failures, port: $0.port).serialized) }))
            object.add("icmp", icmp.map { .raw(ResultPrinter.jsonLine($0)) } ?? .null)
            object.add("tcp", .array(tcp.map { .raw(ResultPrinter.jsonLine($0)) }))
            object.add("path", trace.map { .raw(TracePrinter.json($0)) } ?? .null)
            return object.serialized
        }
        // (The summary starts with the verdict: "network: ICMP loss 10.0 % ...".)
        var lines = ["\(ResultPrinter.label(host)): \(diagnosis.summary)"]
        if let icmp { lines.append("  icmp     " + ResultPrinter.summaryLine(icmp)) }
        for round in tcp { lines.append("  tcp      " + ResultPrinter.summaryLine(round)) }
        if let trace {
            lines.append("  path     " + TracePrinter.text(trace).split(separator: "\n").joined(separator: "\n           "))
        }
        return lines.joined(separator: "\n")
    }

    /// {"percent", "low", "high", "probes", "trace_probes"}: a rate and its 95 % interval
    /// (with "port" first for a port's failed handshakes).
    static func json(_ estimate: LossEstimate, port: UInt16? = nil) -> JSONObject {
        var object = JSONObject()
        if let port { object.add("port", .integer(Int(port))) }
        object.add("percent", .number(estimate.percent))
        object.add("low", .number(estimate.lowPercent))
        object.add("high", .number(estimate.highPercent))
        object.add("probes", .integer(estimate.probes))
        object.add("trace_probes", .integer(estimate.traceProbes))
        return object
    }
}

/// Live progress on standard error (only when it is a terminal).
final class Progress: Sendable {
    private let counts = Locked((icmpReplies: 0, tcpConnected: 0, tcpFailed: 0))
    private let hosts: Int
    private let ports: Int
    private let duration: Double
    private let maxDuration: Double
    private let enabled = isatty(STDERR_FILENO) == 1

    init(hosts: Int, ports: Int, duration: Double, maxDuration: Double) {
        self.hosts = hosts
        self.ports = ports
        self.duration = duration
        self.maxDuration = maxDuration
    }

    func count(_ attempt: AttemptEvent) {
        counts.withLock { counts in
            switch (attempt.kind, attempt.outcome) {
            case (.icmp, _): if !attempt.isDuplicate { counts.icmpReplies += 1 }
            case (.tcp, .ok): counts.tcpConnected += 1
            case (.tcp, _): counts.tcpFailed += 1
            }
        }
    }

    func show(elapsed: Double) {
        guard enabled else { return }
        let now = counts.withLock { $0 }
        let seconds = elapsed < duration ? "\(Int(elapsed))/\(Int(duration)) s" : "\(Int(min(elapsed, maxDuration))) s, undecided: probing on up to \(Int(maxDuration)) s"
        Terminal.write("\rchecking \(hosts) host(s), \(ports) port(s): \(seconds), icmp replies \(now.icmpReplies), tcp connected \(now.tcpConnected), failed \(now.tcpFailed) ", to: STDERR_FILENO)
    }

    func finish() {
        if enabled { Terminal.write("\r\u{1b}[K", to: STDERR_FILENO) }
    }
}
