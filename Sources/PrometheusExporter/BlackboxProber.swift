import FoundationEssentials
import Logging
import ProbeConfig
import ProbeResults

/// Answers `/probe` requests with probes run by an engine (`OnDemandProber`; the command
/// line hands it the engine's): the allow-list by address, bounded concurrency and rate,
/// and an answer within the scrape's time.
///
/// Every request probes on its own (ICMP runs share the engine's sockets, TCP ones open
/// their own), so no request waits on another's target.
public final class BlackboxProber: Sendable {
    let settings: BlackboxSettings
    let prober: any OnDemandProber
    let logger: Logger
    let limits: RequestLimits

    /// - Parameters:
    ///   - settings: allow-list, modules and limits.
    ///   - prober: runs the probes and looks names up (`OnDemandEngine`; a test may give
    ///     one with a resolver of its own). Without ICMP, icmp modules answer 503.
    ///   - logger: where it reports.
    public init(settings: BlackboxSettings, prober: any OnDemandProber, logger: Logger) {
        self.settings = settings
        self.logger = logger
        self.prober = prober
        limits = RequestLimits(concurrent: settings.maximumConcurrent, perSecond: settings.maximumPerSecond)
    }

    /// What a request got: a status, a content type and a body.
    public struct Answer: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        public var retryAfterSeconds: Int?
    }

    static func refusal(_ refusal: BlackboxRefusal, retryAfterSeconds: Int? = nil) -> Answer {
        Answer(status: refusal.status, contentType: "text/plain; charset=utf-8", body: refusal.message + "\n", retryAfterSeconds: retryAfterSeconds)
    }

    /// Answers `/probe?QUERY`.
    /// - Parameters:
    ///   - scrapeTimeout: the `X-Prometheus-Scrape-Timeout-Seconds` header, when sent: the
    ///     answer comes `timeout_offset` before it.
    public func answer(query: String?, scrapeTimeout: String? = nil, format: ExpositionFormat) async -> Answer {
        let started = Clock.monotonicNanoseconds()
        let request: BlackboxRequest
        let budget: Int64?
        do {
            request = try BlackboxRequest.parse(query: query, settings: settings)
            budget = try Self.budget(scrapeTimeout: scrapeTimeout, offset: settings.timeoutOffsetNanoseconds)
        } catch {
            return Self.refusal(error)
        }
        if !prober.canProbe(request.module.kind) {
            return Self.refusal(BlackboxRefusal(status: 503, message: "ICMP is not available to /probe (no CAP_NET_RAW and no ping_group_range); only tcp modules work"))
        }
        switch limits.acquire(now: started) {
        case .rateExceeded:
            return Self.refusal(BlackboxRefusal(status: 429, message: "more than \(settings.maximumPerSecond) /probe requests a second (prometheus: probe: max_per_second)"), retryAfterSeconds: 1)
        case .busy:
            return Self.refusal(BlackboxRefusal(status: 503, message: "\(settings.maximumConcurrent) /probe requests are already probing (prometheus: probe: max_concurrent)"), retryAfterSeconds: 1)
        case .granted:
            break
        }
        defer { limits.release() }
        let outcome: Outcome
        do {
            outcome = try await probe(request, deadline: budget.map { started + $0 })
        } catch {
            return Self.refusal(error)
        }
        let duration = Double(Clock.monotonicNanoseconds() - started) / 1e9
        return Answer(status: 200, contentType: format.contentType, body: Self.render(request, outcome, duration: duration, format: format))
    }

    /// How long a request may take when the scraper says how long it waits: the scrape
    /// timeout minus the offset (half the scrape timeout when that is less than the offset),
    /// so that a silent target is an answer (`probe_success 0`), not a failed scrape. Nil
    /// without the header: the module's whole schedule, after a lookup of at most 5 s.
    /// - Throws: 400 for a header that is not a positive number of seconds.
    static func budget(scrapeTimeout: String?, offset: Int64) throws(BlackboxRefusal) -> Int64? {
        guard let scrapeTimeout else { return nil }
        guard let seconds = Double(scrapeTimeout), seconds.isFinite, seconds > 0 else {
            throw .badRequest("X-Prometheus-Scrape-Timeout-Seconds must be a positive number of seconds, got '\(BlackboxRequest.shown(scrapeTimeout))'")
        }
        let scrape = Int64(min(seconds, 3600) * 1e9)
        return scrape > offset ? scrape - offset : scrape / 2
    }

    /// The longest a name lookup may take when no scrape timeout bounds it.
    static let lookupTimeoutNanoseconds: Int64 = 5_000_000_000

    /// How many packets fit in the time left, and how long each may wait: the module's
    /// schedule, or as much of it as ends by the deadline (fewer packets, then a shorter
    /// timeout); zero packets when no time is left.
    static func schedule(for module: BlackboxModule, remaining: Int64) -> (count: Int, timeout: Int64) {
        guard remaining >= 1_000_000 else { return (0, 0) }
        let timeout = min(module.timeoutNanoseconds, remaining)
        let fitting = module.spacingNanoseconds > 0 ? (remaining - timeout) / module.spacingNanoseconds + 1 : Int64(module.count)
        return (Int(min(Int64(module.count), fitting)), timeout)
    }

    /// What one probe found.
    struct Outcome {
        var round: RoundResult?
        var address: IPAddress?
        var resolveSeconds: Double
        /// From the address being known to the first packet leaving (blackbox's "setup").
        var setupSeconds: Double?
    }

    /// Resolves (names), checks every address against the allow-list, and probes the
    /// first allowed one with what fits before `deadline` (nil: the whole module).
    /// - Throws: 403 when a name resolves only to addresses outside the allowed prefixes.
    func probe(_ request: BlackboxRequest, deadline: Int64?) async throws(BlackboxRefusal) -> Outcome {
        let resolveStart = Clock.monotonicNanoseconds()
        var address = request.address
        let lookupTimeout = min(Self.lookupTimeoutNanoseconds, deadline.map { max(0, $0 - resolveStart) } ?? .max)
        // A source address decides the family: a probe from 192.0.2.10 can only go to IPv4.
        let source = request.module.options.source
        let family = source.map { $0.family == .ipv4 ? AddressPreference.ipv4Only : .ipv6Only } ?? request.module.family
        if let literal = address {
            if let source, literal.family != source.family {
                throw .badRequest("target \(literal) is not of the family of module \(request.moduleName)'s source_ip_address \(source); probe it with a module without one or with a source of its family")
            }
            if !Self.familyAllowed(literal, family) { address = nil }
        } else if case .success(let addresses) = await prober.addresses(of: request.host, preference: family, timeoutNanoseconds: lookupTimeout) {
            let allowed = request.allowedName?.anyAddress == true ? addresses : addresses.filter(settings.allows)
            guard let first = allowed.first(where: { Self.familyAllowed($0, family) }) else {
                throw .forbidden("target '\(request.host)' resolves to \(addresses.prefix(4).map(\.description).joined(separator: ", "))\(addresses.count > 4 ? ", ..." : ""), none inside an allowed prefix (prometheus: probe: allow)\(source.map { " of the family of source_ip_address \($0)" } ?? "")")
            }
            address = first
        }
        let resolved = (monotonic: Clock.monotonicNanoseconds(), realtime: Clock.realtimeNanoseconds())
        var outcome = Outcome(round: nil, address: address, resolveSeconds: Double(resolved.monotonic - resolveStart) / 1e9)
        guard let address else { return outcome }
        let module = request.module
        let (count, timeout) = Self.schedule(for: module, remaining: deadline.map { $0 - resolved.monotonic } ?? module.worstCaseNanoseconds)
        guard count > 0 else { return outcome }
        var target = ProbeTarget(name: request.host, address: address, port: request.port)
        target.options = module.options
        outcome.round = await prober.run(OnDemandProbe(kind: module.kind, count: count, spacingNanoseconds: module.spacingNanoseconds,
                                                       timeoutNanoseconds: timeout, tcpMode: module.tcpMode, payloadLength: module.payloadSize), on: target)
        if let round = outcome.round, round.sent > 0 {
            outcome.setupSeconds = Double(max(0, round.startNanoseconds - resolved.realtime)) / 1e9
        }
        return outcome
    }

    static func familyAllowed(_ address: IPAddress, _ preference: AddressPreference) -> Bool {
        switch preference {
        case .any: return true
        case .ipv4Only: return address.family == .ipv4
        case .ipv6Only: return address.family == .ipv6
        }
    }

    /// blackbox_exporter's value for an address (`probe_ip_addr_hash`): FNV-1a (32 bits)
    /// over its bytes, 4 for IPv4 and 16 for IPv6, as a float.
    static func addressHash(_ address: IPAddress) -> Double {
        var hash: UInt32 = 2_166_136_261
        for byte in address.bytes {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return Double(hash)
    }

    /// The blackbox_exporter names (probe_success, probe_duration_seconds, probe_ip_protocol,
    /// probe_ip_addr_hash, probe_dns_lookup_time_seconds, probe_icmp_duration_seconds{phase},
    /// probe_icmp_reply_hop_limit), a tcp twin of the duration, plus what several packets per
    /// probe add (sent, received, RTT statistics). A phase or gauge that was not measured is
    /// left out rather than given as 0.
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
        if let setup = outcome.setupSeconds {
            writer.sample("probe_\(kind)_duration_seconds", [("phase", "setup")], setup)
        }
        if let statistics = round?.statistics {
            writer.sample("probe_\(kind)_duration_seconds", [("phase", request.module.kind == .icmp ? "rtt" : "connect")], statistics.median / 1000)
        }
        writer.family("probe_ip_protocol", .gauge, help: "Specifies whether probe ip protocol is IP4 or IP6")
        writer.sample("probe_ip_protocol", [], outcome.address.map { $0.family == .ipv4 ? 4 : 6 } ?? 0)
        if let address = outcome.address {
            writer.family("probe_ip_addr_hash", .gauge, help: "Specifies the hash of IP address. It's useful to detect if the IP address changes.")
            writer.sample("probe_ip_addr_hash", [], addressHash(address))
        }
        if request.module.kind == .icmp, let mtu = round?.pathMTU {
            writer.family("probe_icmp_path_mtu_bytes", .gauge, help: "The MTU a don't-fragment probe was told (fragmentation needed / packet too big, or this host's interface): packets of the module's size do not pass")
            writer.sample("probe_icmp_path_mtu_bytes", [], Double(mtu))
        }
        if request.module.kind == .icmp, let ttl = round?.ttl {
            writer.family("probe_icmp_reply_hop_limit", .gauge, help: "Replied packet hop limit (TTL for ipv4)")
            writer.sample("probe_icmp_reply_hop_limit", [], Double(ttl))
        }
        writer.family("probe_packets_sent", .gauge, help: "Packets (handshakes) this probe sent: the module's count, or fewer when the scrape timeout left less time")
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

    /// Ends ICMP probing (the probes in flight end first, at their timeout); call after
    /// the server stopped.
    public func close() {
        prober.shutDown()
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
