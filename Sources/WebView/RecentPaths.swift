import ProbeResults
import Synchronization

/// The last trace of every traced series (`run`'s `trace:` section) and when its path last
/// changed: what the target page's hop table and the overview's path note show. Only where
/// traces run; a summary is the hop list (at most `trace:`'s max hops), not the probes.
public final class RecentPaths: Sendable {
    /// One traced path, as the page shows it.
    public struct Summary: Sendable, Equatable {
        /// One hop of the last trace.
        public struct Hop: Sendable, Equatable {
            public var hop: Int
            /// The address that answered most; nil where nothing did.
            public var address: String?
            /// Unanswered probes in percent; `forwardedLossPercent` is what the path after it
            /// lost (rate-limiting hops excluded), the figure that locates loss.
            public var lossPercent: Double
            public var forwardedLossPercent: Double
            public var medianMilliseconds: Double?
            public var rateLimited: Bool
        }

        public var env: String
        public var target: String
        /// nil for an ICMP trace, the port of a TCP (SYN) trace.
        public var port: UInt16?
        public var options: PacketOptions
        /// When the last trace started, nanoseconds since 1970.
        public var startNanoseconds: Int64
        public var hops: [Hop]
        /// `PathEnding.name`: reached, unreachable, routing_loop, max_hops, filtered, no_answer.
        public var ending: String
        /// The hop where loss that persists to the target starts, if any.
        public var lossStartHop: Int?
        /// Start times of the traces whose hop list differed from the one before, oldest
        /// first, at most `changesKept` (the first trace of the run is none).
        public var changes: [Int64]
        /// When this process first traced it.
        public var firstTracedNanoseconds: Int64
        var pathHash: UInt64

        /// "ICMP" or "TCP port 5432".
        public var protocolName: String { port.map { "TCP port \($0)" } ?? "ICMP" }
    }

    /// Path changes kept per traced series.
    public static let changesKept = 20

    private struct Key: Hashable {
        var env: String
        var target: String
        var port: UInt16?
        var options: PacketOptions
    }

    private let paths = Mutex([Key: Summary]())

    public init() {}

    /// Keeps a trace as its series' last.
    public func record(_ trace: PathTrace, env: String) {
        let analysis = trace.analysis
        let hops = trace.hops.enumerated().map { index, hop in
            Summary.Hop(hop: hop.hop, address: hop.address?.description, lossPercent: hop.lossPercent,
                        forwardedLossPercent: index < analysis.forwardedLossPercent.count ? analysis.forwardedLossPercent[index] : hop.lossPercent,
                        medianMilliseconds: hop.statistics?.median, rateLimited: hop.ratesLimited)
        }
        let key = Key(env: env, target: trace.target.name, port: trace.target.port, options: trace.target.options)
        paths.withLock { paths in
            var changes = paths[key]?.changes ?? []
            if let previous = paths[key], previous.pathHash != trace.pathHash {
                changes.append(trace.startNanoseconds)
                if changes.count > Self.changesKept { changes.removeFirst(changes.count - Self.changesKept) }
            }
            paths[key] = Summary(env: env, target: trace.target.name, port: trace.target.port, options: trace.target.options,
                                 startNanoseconds: trace.startNanoseconds, hops: hops, ending: trace.ending.name,
                                 lossStartHop: analysis.lossStartHop, changes: changes,
                                 firstTracedNanoseconds: paths[key]?.firstTracedNanoseconds ?? trace.startNanoseconds, pathHash: trace.pathHash)
        }
    }

    /// The traced paths of one host (group and name), ICMP first, then TCP by port.
    public func paths(env: String, target: String) -> [Summary] {
        paths.withLock { paths in
            paths.values.filter { $0.env == env && $0.target == target }
                .sorted { ($0.port ?? 0, $0.options.tos) < ($1.port ?? 0, $1.options.tos) }
        }
    }
}
