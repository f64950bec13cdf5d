import FoundationEssentials
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// `run`'s traces: every ping target (ICMP) and tcp target (TCP SYN) of the configuration
/// at their `trace:` intervals, first at the start; each trace's hops are written as `hop`
/// points, and a `path` point whenever a target's hop list (or, with `mtu: true`, its path
/// MTU) differs from the last one written (the first trace of a run always writes one).
final class PathTracing: Sendable {
    let prober: PathProber
    let probe: String
    let logger: Logger
    /// The configuration in force (a reload replaces it).
    let configuration: Locked<NetprobeConfiguration>
    let resolve: @Sendable (NetprobeConfiguration) async -> (ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)])
    let write: @Sendable ([DataPoint]) -> Void
    /// Hands each trace, with its env, to the run's observers (the live view).
    let observe: @Sendable (PathTrace, String) -> Void
    private let lastPaths = Locked([PathKey: PathIdentity]())

    init(prober: PathProber, configuration: NetprobeConfiguration, probe: String, logger: Logger,
         resolve: @escaping @Sendable (NetprobeConfiguration) async -> (ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)]),
         write: @escaping @Sendable ([DataPoint]) -> Void, observe: @escaping @Sendable (PathTrace, String) -> Void = { _, _ in }) {
        self.observe = observe
        self.prober = prober
        self.configuration = Locked(configuration)
        self.probe = probe
        self.logger = logger
        self.resolve = resolve
        self.write = write
    }

    /// Traces until the task is cancelled; a trace cut short by the stop is not written.
    func run() async {
        var nextICMP: Int64? = configuration.withLock { $0.trace.icmpIntervalNanoseconds } == nil ? nil : Clock.monotonicNanoseconds()
        var nextTCP: Int64? = configuration.withLock { $0.trace.tcpIntervalNanoseconds } == nil ? nil : Clock.monotonicNanoseconds()
        while !Task.isCancelled {
            guard let due = [nextICMP, nextTCP].compactMap({ $0 }).min() else { return }
            let wait = due - Clock.monotonicNanoseconds()
            if wait > 0 { try? await Task.sleep(nanoseconds: UInt64(wait)) }
            if Task.isCancelled { return }
            let current = configuration.withLock { $0 }
            let now = Clock.monotonicNanoseconds()
            let icmpDue = nextICMP.map { $0 <= now } ?? false
            let tcpDue = nextTCP.map { $0 <= now } ?? false
            let (ping, tcp) = await resolve(current)
            let traced = (icmpDue ? ping : []) + (tcpDue ? tcp : [])
            if icmpDue { nextICMP = current.trace.icmpIntervalNanoseconds.map { now + $0 } }
            if tcpDue { nextTCP = current.trace.tcpIntervalNanoseconds.map { now + $0 } }
            guard !traced.isEmpty else { continue }
            var traces: [PathTrace] = []
            for await trace in prober.trace(traced.map(\.target)) { traces.append(trace) }
            if Task.isCancelled { return }
            var points: [DataPoint] = []
            for trace in traces where trace.target.address != nil {
                let env = traced[trace.targetIndex].planned.env
                observe(trace, env)
                points += Schema.hopPoints(for: trace, env: env, probe: probe)
                // One path per series: a target traced in two classes (or from two sources)
                // may take two paths.
                let key = PathKey(name: trace.target.name, port: trace.target.port, options: trace.target.options)
                let identity = PathIdentity(hash: trace.pathHash, pathMTU: trace.mtu?.pathMTU)
                let changed = lastPaths.withLock { last in
                    defer { last[key] = identity }
                    return last[key] != identity
                }
                if changed { points.append(Schema.pathPoint(for: trace, env: env, probe: probe)) }
            }
            write(points)
        }
    }

    /// A reload: the next traces use the new targets and settings.
    func update(_ configuration: NetprobeConfiguration) {
        self.configuration.withLock { $0 = configuration }
    }
}

/// What a `path` point records of a path: a new one is written when it changes.
struct PathIdentity: Equatable {
    /// `PathTrace.pathHash`: the hop list.
    var hash: UInt64
    /// The path MTU, with `trace: mtu: true` (ICMP traces).
    var pathMTU: Int?
}

/// What tells one traced path from another: the target and the options its probes carry.
struct PathKey: Hashable {
    var name: String
    var port: UInt16?
    var options: PacketOptions
}
