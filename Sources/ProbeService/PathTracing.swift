import FoundationEssentials
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// The `hop` and `path` measurements (README "Schema"): what `run`'s traces write.
extension Schema {
    /// Tag keys of `hop` and `path` points (besides probe, env, target, port).
    public enum PathTag {
        /// "icmp" or "tcp": how the path was traced.
        public static let traceProtocol = "protocol"
        /// The hop's number (TTL), and the address that answered it most.
        public static let hop = "hop", hopAddress = "hop_address"
    }

    /// Field keys of `path` points.
    public enum PathField {
        public static let hash = "hash", hopCount = "hop_count", hops = "hops", reached = "reached", lossStartHop = "loss_start_hop"
    }

    /// One `hop` point per hop of `trace` (fields as for icmp, plus `forwarded_loss_percent`
    /// and `rate_limited`), at the trace's start.
    public static func hopPoints(for trace: PathTrace, env: String, probe: String) -> [InfluxPoint] {
        let time = trace.startNanoseconds / 1000 * 1000
        return trace.hops.enumerated().map { position, hop in
            var tags = pathTags(trace, env: env, probe: probe)
            tags[PathTag.hop] = String(hop.hop)
            tags[PathTag.hopAddress] = hop.address?.description ?? "*"
            var fields: [(key: String, value: FieldValue)] = [
                (Field.sent, .integer(Int64(hop.sent))), (Field.received, .integer(Int64(hop.received))), (Field.lossPercent, .float(hop.lossPercent)),
                ("forwarded_loss_percent", .float(trace.analysis.forwardedLossPercent[position])),
                ("rate_limited", .integer(hop.ratesLimited ? 1 : 0)),
            ]
            if let stats = hop.statistics {
                fields += [
                    (Field.rttMinimum, .float(stats.minimum)), (Field.rttAverage, .float(stats.average)), (Field.rttMaximum, .float(stats.maximum)),
                    (Field.rttMedian, .float(stats.median)), (Field.rttStandardDeviation, .float(stats.standardDeviation)), (Field.jitter, .float(stats.jitter)),
                ]
            }
            return InfluxPoint(measurement: "hop", tags: tags, fields: fields, timestampNanoseconds: time)
        }
    }

    /// The `path` point of `trace`: the hash of its hop list, the hop count, the hops.
    public static func pathPoint(for trace: PathTrace, env: String, probe: String) -> InfluxPoint {
        var fields: [(key: String, value: FieldValue)] = [
            (PathField.hash, .string(String(trace.pathHash, radix: 16))),
            (PathField.hopCount, .integer(Int64(trace.hops.count))),
            (PathField.hops, .string(trace.hops.map { $0.address?.description ?? "*" }.joined(separator: ","))),
            (PathField.reached, .integer(trace.reached ? 1 : 0)),
        ]
        if let start = trace.analysis.lossStartHop { fields.append((PathField.lossStartHop, .integer(Int64(start)))) }
        return InfluxPoint(measurement: "path", tags: pathTags(trace, env: env, probe: probe), fields: fields, timestampNanoseconds: trace.startNanoseconds / 1000 * 1000)
    }

    static func pathTags(_ trace: PathTrace, env: String, probe: String) -> [String: String] {
        var tags = [Tag.probe: probe, Tag.env: env, Tag.target: trace.target.name, PathTag.traceProtocol: trace.target.port == nil ? "icmp" : "tcp"]
        if let port = trace.target.port { tags[Tag.port] = String(port) }
        return tags
    }
}

/// `run`'s traces: every ping target (ICMP) and tcp target (TCP SYN) of the configuration
/// at their `trace:` intervals, first at the start; each trace's hops are written as `hop`
/// points, and a `path` point whenever a target's hop list differs from the last one
/// written (the first trace of a run always writes one).
final class PathTracing: Sendable {
    let prober: PathProber
    let probe: String
    let logger: Logger
    /// The configuration in force (a reload replaces it).
    let configuration: Locked<NetprobeConfiguration>
    let resolve: @Sendable (NetprobeConfiguration) async -> (ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)])
    let write: @Sendable ([InfluxPoint]) -> Void
    private let lastPaths = Locked([String: UInt64]())

    init(prober: PathProber, configuration: NetprobeConfiguration, probe: String, logger: Logger,
         resolve: @escaping @Sendable (NetprobeConfiguration) async -> (ping: [(planned: PlannedTarget, target: ProbeTarget)], tcp: [(planned: PlannedTarget, target: ProbeTarget)]),
         write: @escaping @Sendable ([InfluxPoint]) -> Void) {
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
            var points: [InfluxPoint] = []
            for trace in traces where trace.target.address != nil {
                let env = traced[trace.targetIndex].planned.env
                points += Schema.hopPoints(for: trace, env: env, probe: probe)
                let key = "\(trace.target.name)|\(trace.target.port.map(String.init) ?? "icmp")"
                let changed = lastPaths.withLock { last in
                    defer { last[key] = trace.pathHash }
                    return last[key] != trace.pathHash
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
