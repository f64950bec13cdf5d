import FoundationEssentials
import Logging
import ProbeConfig
import ProbeEngine

/// Runs the probes of `/probe` requests on netprobe's engine: a probe loop of their own (so
/// a burst of requests never shares a thread with `run`'s schedule), kernel timestamps,
/// bounded concurrency and rate.
public final class BlackboxProber: Sendable {
    let settings: BlackboxSettings
    let loop: ProbeLoop
    let icmp: ICMPBatcher?
    let logger: Logger
    let limits: RequestLimits
    /// Name lookups of allowed names only (see BlackboxRequest.parse); a test replaces it.
    let lookUp: @Sendable (String, AddressPreference) async -> ProbeTarget

    /// - Parameters:
    ///   - settings: allow-list, modules and limits.
    ///   - icmpSockets: ICMP sockets opened for `/probe` alone (the run's prober owns its
    ///     own); nil when no module uses ICMP or ICMP is not allowed (then icmp modules
    ///     answer 503).
    ///   - logger: where it reports.
    public init(settings: BlackboxSettings, icmpSockets: ICMPSocketSet?, logger: Logger,
                lookUp: @escaping @Sendable (String, AddressPreference) async -> ProbeTarget = { name, preference in
                    await Resolver.resolve([name], preference: preference, threads: 1, timeoutNanoseconds: 5_000_000_000)[0]
                }) throws {
        self.settings = settings
        self.logger = logger
        self.lookUp = lookUp
        let loop = try ProbeLoop(logger: logger)
        self.loop = loop
        icmp = try icmpSockets.map { sockets in
            ICMPBatcher(prober: try ICMPProber(sockets: sockets, configuration: ICMPProbeConfiguration(count: 1), loop: loop, logger: logger))
        }
        limits = RequestLimits(concurrent: settings.maximumConcurrent, perSecond: settings.maximumPerSecond)
    }

    /// What a request got: a status, a content type and a body.
    public struct Answer: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        public var retryAfterSeconds: Int?
    }

    /// Answers `/probe?QUERY`.
    public func answer(query: String?, format: ExpositionFormat) async -> Answer {
        let started = Clock.monotonicNanoseconds()
        let request: BlackboxRequest
        do {
            request = try BlackboxRequest.parse(query: query, settings: settings)
        } catch {
            return Answer(status: error.status, contentType: "text/plain; charset=utf-8", body: error.message + "\n")
        }
        if request.module.kind == .icmp && icmp == nil {
            return Answer(status: 503, contentType: "text/plain; charset=utf-8", body: "ICMP is not available to /probe (no CAP_NET_RAW and no ping_group_range); only tcp modules work\n")
        }
        switch limits.acquire(now: started) {
        case .rateExceeded:
            return Answer(status: 429, contentType: "text/plain; charset=utf-8", body: "more than \(settings.maximumPerSecond) /probe requests a second (prometheus: probe: max_per_second)\n", retryAfterSeconds: 1)
        case .busy:
            return Answer(status: 503, contentType: "text/plain; charset=utf-8", body: "\(settings.maximumConcurrent) /probe requests are already probing (prometheus: probe: max_concurrent)\n", retryAfterSeconds: 1)
        case .granted:
            break
        }
        defer { limits.release() }
        let result = await probe(request)
        let duration = Double(Clock.monotonicNanoseconds() - started) / 1e9
        return Answer(status: 200, contentType: format.contentType, body: Self.render(request, result, duration: duration, format: format))
    }

    /// What one probe found.
    struct Outcome {
        var round: RoundResult?
        var address: IPAddress?
        var resolveSeconds: Double
    }

    func probe(_ request: BlackboxRequest) async -> Outcome {
        var target: ProbeTarget
        let resolveStart = Clock.monotonicNanoseconds()
        if let address = request.address {
            target = ProbeTarget(name: request.host, address: address, port: request.port)
        } else {
            target = await lookUp(request.host, request.module.family)
            target.name = request.host
            target.port = request.port
        }
        let resolveSeconds = Double(Clock.monotonicNanoseconds() - resolveStart) / 1e9
        if let address = target.address, !Self.familyAllowed(address, request.module.family) { target.address = nil }
        guard target.address != nil else { return Outcome(round: nil, address: nil, resolveSeconds: resolveSeconds) }
        let module = request.module
        let round: RoundResult?
        switch module.kind {
        case .icmp:
            round = await icmp?.probe(target, configuration: ICMPProbeConfiguration(
                count: module.count, intervalNanoseconds: module.spacingNanoseconds, timeoutNanoseconds: module.timeoutNanoseconds,
                payloadLength: 56, ttl: nil, packetsPerSecond: 1000))
        case .tcp:
            round = await probeTCP(target, module: module)
        }
        return Outcome(round: round, address: target.address, resolveSeconds: resolveSeconds)
    }

    static func familyAllowed(_ address: IPAddress, _ preference: AddressPreference) -> Bool {
        switch preference {
        case .any: return true
        case .ipv4Only: return address.family == .ipv4
        case .ipv6Only: return address.family == .ipv6
        }
    }

    /// One TCP prober per request: it holds no socket between probes and many run on the
    /// loop at once.
    func probeTCP(_ target: ProbeTarget, module: BlackboxModule) async -> RoundResult? {
        let configuration = TCPProbeConfiguration(count: module.count, intervalNanoseconds: module.spacingNanoseconds, timeoutNanoseconds: module.timeoutNanoseconds,
                                                  attemptsPerSecond: 1000, maximumInFlight: 16, mode: module.tcpMode)
        guard let prober = try? TCPProber(configuration: configuration, loop: loop, logger: logger) else { return nil }
        var result: RoundResult?
        for await event in prober.probe([target], reportingAttempts: false) {
            if case .round(let round) = event { result = round }
        }
        return result
    }

    /// The blackbox_exporter names (probe_success, probe_duration_seconds, probe_ip_protocol,
    /// probe_dns_lookup_time_seconds, probe_icmp_duration_seconds{phase}, its tcp twin), plus
    /// what several packets per probe add (sent, received, loss, RTT statistics).
    static func render(_ request: BlackboxRequest, _ outcome: Outcome, duration: Double, format: ExpositionFormat) -> String {
        var writer = ExpositionWriter(format: format)
        let round = outcome.round
        let kind = request.module.kind.rawValue
        writer.family("probe_dns_lookup_time_seconds", .gauge, help: "Returns the time taken for probe dns lookup in seconds")
        writer.sample("probe_dns_lookup_time_seconds", [], outcome.resolveSeconds)
        writer.family("probe_duration_seconds", .gauge, help: "Returns how long the probe took to complete in seconds")
        writer.sample("probe_duration_seconds", [], duration)
        writer.family("probe_\(kind)_duration_seconds", .gauge, help: "Duration of \(kind) request by phase (rtt: the median of the module's packets, kernel-timestamped)")
        writer.sample("probe_\(kind)_duration_seconds", [("phase", "resolve")], outcome.resolveSeconds)
        if let statistics = round?.statistics {
            writer.sample("probe_\(kind)_duration_seconds", [("phase", request.module.kind == .icmp ? "rtt" : "connect")], statistics.median / 1000)
        }
        writer.family("probe_ip_protocol", .gauge, help: "Specifies whether probe ip protocol is IP4 or IP6")
        writer.sample("probe_ip_protocol", [], outcome.address.map { $0.family == .ipv4 ? 4 : 6 } ?? 0)
        if request.module.kind == .icmp, let ttl = round?.ttl {
            writer.family("probe_icmp_reply_hop_limit", .gauge, help: "Replied packet hop limit (TTL for ipv4)")
            writer.sample("probe_icmp_reply_hop_limit", [], Double(ttl))
        }
        writer.family("probe_packets_sent", .gauge, help: "Packets (handshakes) this probe sent")
        writer.sample("probe_packets_sent", [], Double(round?.sent ?? 0))
        writer.family("probe_packets_received", .gauge, help: "Timely replies (completed handshakes) this probe got")
        writer.sample("probe_packets_received", [], Double(round?.received ?? 0))
        if let statistics = round?.statistics {
            writer.family("probe_rtt_seconds", .gauge, help: "RTT statistics over the probe's packets, in seconds")
            for (stat, value) in [("min", statistics.minimum), ("avg", statistics.average), ("max", statistics.maximum), ("median", statistics.median), ("stddev", statistics.standardDeviation)] {
                writer.sample("probe_rtt_seconds", [("stat", stat)], value / 1000)
            }
        }
        writer.family("probe_success", .gauge, help: "Displays whether or not the probe was a success")
        writer.sample("probe_success", [], (round?.received ?? 0) > 0 ? 1 : 0)
        return writer.finished()
    }

    /// Ends ICMP probing; call after the server stopped.
    public func close() {
        icmp?.close()
    }
}

/// Bounds on `/probe`: a token bucket (per second, with a burst of as many) and a count of
/// requests probing now. Nothing queues: what does not fit is refused at once, so a flood
/// costs a refusal each, not memory.
final class RequestLimits: Sendable {
    enum Decision { case granted, rateExceeded, busy }

    private let state: Locked<(tokens: Double, refilled: Int64, inFlight: Int)>
    let concurrent: Int
    let perSecond: Int

    init(concurrent: Int, perSecond: Int) {
        self.concurrent = concurrent
        self.perSecond = perSecond
        state = Locked((Double(perSecond), Clock.monotonicNanoseconds(), 0))
    }

    func acquire(now: Int64) -> Decision {
        state.withLock { state in
            let elapsed = Double(max(0, now - state.refilled)) / 1e9
            state.tokens = min(Double(perSecond), state.tokens + elapsed * Double(perSecond))
            state.refilled = max(state.refilled, now)
            guard state.tokens >= 1 else { return .rateExceeded }
            guard state.inFlight < concurrent else { return .busy }
            state.tokens -= 1
            state.inFlight += 1
            return .granted
        }
    }

    func release() {
        state.withLock { $0.inFlight -= 1 }
    }
}

/// `/probe`'s ICMP requests share one prober (one set of sockets), and a prober runs one
/// probe call at a time: requests that arrive while one runs wait and go together in the
/// next call, one target each, so a scrape of many targets costs one round, not a queue.
final class ICMPBatcher: Sendable {
    struct Waiting: Sendable {
        var target: ProbeTarget
        var configuration: ICMPProbeConfiguration
        var continuation: CheckedContinuation<RoundResult?, Never>
    }

    let prober: ICMPProber
    private let state = Locked((waiting: [Waiting](), running: false, closed: false))

    init(prober: ICMPProber) {
        self.prober = prober
    }

    func probe(_ target: ProbeTarget, configuration: ICMPProbeConfiguration) async -> RoundResult? {
        await withCheckedContinuation { continuation in
            let batch = state.withLock { state -> [Waiting]? in
                if state.closed { return [] }
                state.waiting.append(Waiting(target: target, configuration: configuration, continuation: continuation))
                guard !state.running else { return nil }
                state.running = true
                return Self.takeBatch(&state.waiting)
            }
            if let batch {
                if batch.isEmpty { continuation.resume(returning: nil) } else { launch(batch) }
            }
        }
    }

    /// The waiting requests with the first one's settings (a probe call has one).
    static func takeBatch(_ waiting: inout [Waiting]) -> [Waiting] {
        guard let first = waiting.first else { return [] }
        let same = { (other: Waiting) in
            other.configuration.count == first.configuration.count && other.configuration.intervalNanoseconds == first.configuration.intervalNanoseconds
                && other.configuration.timeoutNanoseconds == first.configuration.timeoutNanoseconds
        }
        let batch = waiting.filter(same)
        waiting.removeAll(where: same)
        return batch
    }

    private func launch(_ batch: [Waiting]) {
        Task {
            var rounds = [RoundResult?](repeating: nil, count: batch.count)
            for await event in prober.probe(batch.map(\.target), configuration: batch[0].configuration, reportingAttempts: false) {
                if case .round(let round) = event, round.targetIndex < rounds.count { rounds[round.targetIndex] = round }
            }
            for (waiting, round) in zip(batch, rounds) { waiting.continuation.resume(returning: round) }
            let next = state.withLock { state -> [Waiting] in
                let next = Self.takeBatch(&state.waiting)
                if next.isEmpty { state.running = false }
                return next
            }
            if !next.isEmpty { launch(next) }
        }
    }

    func close() {
        let (waiting, running) = state.withLock { state in
            defer { state.closed = true; state.waiting = [] }
            return (state.waiting, state.running)
        }
        for request in waiting { request.continuation.resume(returning: nil) }
        if running { prober.stop() } else { prober.close() }
    }
}
