import Logging
import ProbeResults

/// The engine's probes on demand (`/probe`): a probe loop of their own, so a burst of
/// requests never shares a thread with `run`'s schedule; ICMP runs side by side on shared
/// sockets (`probeAlongside`); each TCP probe has a prober of its own (it holds no socket
/// between probes, and many run on the loop at once).
public final class OnDemandEngine: OnDemandProber {
    /// How a name is looked up: the system's resolver, or a test's.
    public typealias Lookup = @Sendable (String, AddressPreference, Int64) async -> Result<[IPAddress], LookupFailure>

    let probers: Probers
    let icmp: ICMPProber?
    let logger: Logger
    let lookUp: Lookup

    /// - Parameters:
    ///   - icmpSockets: ICMP sockets opened for these probes alone (the run's prober owns
    ///     its own); nil when ICMP is not wanted or not allowed (then ICMP cannot be probed).
    ///   - logger: where it reports.
    ///   - lookUp: the resolver (the system's by default).
    /// - Throws: when the probe loop cannot start.
    public init(icmpSockets: ICMPSocketSet?, logger: Logger, lookUp: @escaping Lookup = { name, preference, timeout in
        await Resolver.addresses(of: name, preference: preference, timeoutNanoseconds: timeout)
    }) throws {
        self.logger = logger
        self.lookUp = lookUp
        probers = try Probers(sockets: ProbeSockets(icmp: icmpSockets), logger: logger)
        icmp = try probers.icmp(ICMPProbeConfiguration(count: 1))
    }

    public func canProbe(_ kind: ProbeKind) -> Bool {
        kind == .tcp || icmp != nil
    }

    public func run(_ probe: OnDemandProbe, on target: ProbeTarget) async -> RoundResult? {
        switch probe.kind {
        case .icmp:
            var configuration = ICMPProbeConfiguration(count: probe.count, intervalNanoseconds: probe.spacingNanoseconds, timeoutNanoseconds: probe.timeoutNanoseconds,
                                                       payloadLength: probe.payloadLength, ttl: nil, packetsPerSecond: 1000)
            // The answer is due at the last deadline: no wait for late replies.
            configuration.lateWindowNanoseconds = 0
            return await icmp?.probeAlongside(target, configuration: configuration)
        case .tcp:
            let configuration = TCPProbeConfiguration(count: probe.count, intervalNanoseconds: probe.spacingNanoseconds, timeoutNanoseconds: probe.timeoutNanoseconds,
                                                      attemptsPerSecond: 1000, maximumInFlight: 16, mode: probe.tcpMode)
            guard let prober = try? probers.tcp(configuration) else { return nil }
            var result: RoundResult?
            for await event in prober.probe([target], reportingAttempts: false) {
                if case .round(let round) = event { result = round }
            }
            return result
        }
    }

    public func addresses(of name: String, preference: AddressPreference, timeoutNanoseconds: Int64) async -> Result<[IPAddress], LookupFailure> {
        await lookUp(name, preference, timeoutNanoseconds)
    }

    public func shutDown() {
        icmp?.shutDown()
    }
}
