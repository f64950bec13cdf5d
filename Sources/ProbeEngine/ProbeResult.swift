import Foundation

/// The outcome of a target's round. The raw value is safe as a tag value.
public enum ProbeOutcome: String, Sendable, Codable, CaseIterable {
    /// At least one reply arrived in time.
    case ok
    /// Nothing came back before the deadline.
    case timeout
    /// The network said the host cannot be reached (ICMP unreachable, ENETUNREACH, ...).
    case unreachable
    /// The name did not resolve to an address of the wanted family.
    case unresolved
    /// A local failure (e.g. sendmsg refused the packet for a reason other than routing).
    case error

    /// Stable integer code, for stores that prefer numbers.
    public var code: Int {
        switch self {
        case .ok: return 0
        case .timeout: return 1
        case .unreachable: return 2
        case .unresolved: return 3
        case .error: return 4
        }
    }
}

/// Where a round-trip time came from.
public enum TimestampSource: String, Sendable, Codable {
    /// Both ends stamped by the kernel (SO_TIMESTAMPING software stamps).
    case kernel
    /// At least one end read from CLOCK_REALTIME in user space, around the syscall.
    case user
    /// A round whose samples came from both sources.
    case mixed
}

/// One probe target: the name the user gave and the address it resolved to.
public struct ProbeTarget: Hashable, Sendable {
    /// The name or address as the user wrote it.
    public var name: String
    /// The address probed; nil when the name did not resolve.
    public var address: IPAddress?
    /// Why resolution failed, when it did.
    public var resolutionError: String?

    public init(name: String, address: IPAddress?, resolutionError: String? = nil) {
        self.name = name
        self.address = address
        self.resolutionError = resolutionError
    }
}

/// One ICMP echo reply as it arrives, for live output.
public struct ICMPReplyEvent: Sendable {
    /// Index of the target in the list given to the prober.
    public var targetIndex: Int
    public var target: ProbeTarget
    /// 1-based number of this probe within the target's round (ping's icmp_seq).
    public var sequence: Int
    /// ICMP payload bytes received.
    public var bytes: Int
    /// TTL (IPv4) or hop limit (IPv6) of the reply, when known.
    public var ttl: Int?
    /// Round-trip time in milliseconds.
    public var rttMilliseconds: Double
    /// Where the two timestamps came from.
    public var timestampSource: TimestampSource
    /// True when this is a second copy of a reply already counted.
    public var isDuplicate: Bool
}

/// Everything measured for one target in one round.
public struct ICMPRoundResult: Sendable {
    public var targetIndex: Int
    public var target: ProbeTarget
    /// Wall-clock time of the round's start.
    public var startTime: Date
    /// Echo requests sent.
    public var sent: Int
    /// Distinct replies received before the timeout.
    public var received: Int
    /// Extra copies of replies already received.
    public var duplicates: Int
    /// Replies that arrived after the timeout (counted as lost, never as received).
    public var late: Int
    /// ICMP unreachable / time exceeded messages, and sends the kernel refused as unroutable.
    public var unreachable: Int
    /// Sends that failed for other local reasons.
    public var errors: Int
    /// Percentage of sent probes without a timely reply; 100 when nothing was sent.
    public var lossPercent: Double
    /// RTT statistics in milliseconds; nil when nothing was received.
    public var statistics: RTTStatistics?
    /// Every RTT in milliseconds, in send order.
    public var rttsMilliseconds: [Double]
    /// TTL (IPv4) or hop limit (IPv6) of the last reply.
    public var ttl: Int?
    /// Samples timed by the kernel and by user space.
    public var kernelTimestamps: Int
    public var userTimestamps: Int
    /// The bounded outcome of the round.
    public var outcome: ProbeOutcome

    /// "kernel" or "user" when every sample agrees, "mixed" otherwise; nil with no samples.
    public var timestampSource: TimestampSource? {
        switch (kernelTimestamps, userTimestamps) {
        case (0, 0): return nil
        case (_, 0): return .kernel
        case (0, _): return .user
        default: return .mixed
        }
    }
}

/// What an ICMP prober reports while it runs.
public enum ICMPProbeEvent: Sendable {
    /// A reply arrived (or a duplicate of one).
    case reply(ICMPReplyEvent)
    /// A target's round is complete.
    case round(ICMPRoundResult)
}
