import Foundation

/// Percentiles of the hold times the simulator really applied, in microseconds.
public struct HoldTimeSummary: Codable, Equatable, Sendable {
    public var count: Int
    public var minimum: Double
    public var mean: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var maximum: Double

    enum CodingKeys: String, CodingKey {
        case count, mean, p50, p90, p99
        case minimum = "min"
        case maximum = "max"
    }

    /// - Parameter nanoseconds: hold times in any order.
    /// - Returns: nil when there are none.
    public init?(nanoseconds: [Int64]) {
        guard !nanoseconds.isEmpty else { return nil }
        let sorted = nanoseconds.sorted()
        count = sorted.count
        minimum = Double(sorted.first!) / 1000
        maximum = Double(sorted.last!) / 1000
        mean = Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000
        p50 = Self.percentile(sorted, 0.50) / 1000
        p90 = Self.percentile(sorted, 0.90) / 1000
        p99 = Self.percentile(sorted, 0.99) / 1000
    }

    /// Linear interpolation between closest ranks, so p50 is the usual median (the mean
    /// of the two middle values for an even count), as netprobe computes its median.
    static func percentile(_ sorted: [Int64], _ fraction: Double) -> Double {
        let position = fraction * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down))
        let upper = min(lower + 1, sorted.count - 1)
        let weight = position - Double(lower)
        return Double(sorted[lower]) * (1 - weight) + Double(sorted[upper]) * weight
    }
}

/// Ground truth for one simulated host (one destination address).
public struct HostSummary: Codable, Equatable, Sendable {
    /// Packets read for this address.
    public var packetsIn: Int
    /// Replies written (echo replies, SYN-ACKs, RSTs, ICMP errors).
    public var answered: Int
    /// Requests dropped by the rule's loss probability.
    public var dropped: Int
    /// Packets deliberately not answered (client ACK/RST/FIN, filtered ports, other protocols).
    public var ignored: Int
    /// Hold times of this host's replies.
    public var holdMicroseconds: HoldTimeSummary?

    enum CodingKeys: String, CodingKey {
        case packetsIn = "packets_in"
        case answered, dropped, ignored
        case holdMicroseconds = "hold_us"
    }
}

/// What the simulator did, written as JSON to `--summary` on exit and on SIGUSR1.
public struct SimulationSummary: Codable, Equatable, Sendable {
    /// Packets read from the TUN device.
    public var packetsIn: Int
    /// Replies written.
    public var answered: Int
    /// Requests dropped by a loss probability.
    public var dropped: Int
    /// Requests the kernel dropped before the simulator read them (TUN queue full): not
    /// part of the simulated behaviour, so a benchmark must report them.
    public var queueDropped: Int
    /// Packets deliberately left unanswered.
    public var ignored: Int
    /// Replies still held when the summary was written (0 after a clean exit).
    public var pending: Int
    /// Replies the kernel refused (write failed).
    public var writeErrors: Int
    /// Counts per verdict: echo_reply, syn_ack, rst, time_exceeded, too_big, the
    /// destination unreachables by code (net_unreachable, host_unreachable,
    /// protocol_unreachable, port_unreachable, prohibited, unreachable_other: from hosts and
    /// routers alike), rate_limited, filtered, dropped, ignored.
    public var kinds: [String: Int]
    /// Hold time of every reply: from read() returning the request to write() of the reply.
    public var holdMicroseconds: HoldTimeSummary?
    /// Per destination address inside the simulated prefixes.
    public var hosts: [String: HostSummary]
    /// True when the packet thread ran with SCHED_FIFO.
    public var realtimePriority: Bool
    /// Seconds from start to this summary.
    public var durationSeconds: Double
    /// Per router of the rules' paths (absent from summaries without paths).
    public var routers: [String: RouterSummary]? = nil

    enum CodingKeys: String, CodingKey {
        case packetsIn = "packets_in"
        case answered, dropped, ignored, pending, kinds, hosts
        case writeErrors = "write_errors"
        case queueDropped = "queue_dropped"
        case holdMicroseconds = "hold_us"
        case realtimePriority = "realtime_priority"
        case durationSeconds = "duration_s"
        case routers
    }

    /// The summary of one host; an all-zero summary when the host saw no packet.
    public func host(_ address: String) -> HostSummary {
        let key = SimulatedAddress(address)?.description ?? address
        return hosts[key] ?? HostSummary(packetsIn: 0, answered: 0, dropped: 0, ignored: 0, holdMicroseconds: nil)
    }

    /// The ground truth of one router; all zero when no packet reached it.
    public func router(_ address: String) -> RouterSummary {
        let key = SimulatedAddress(address)?.description ?? address
        return routers?[key] ?? RouterSummary()
    }

    /// JSON with sorted keys.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try encoder.encode(self)
    }
}
