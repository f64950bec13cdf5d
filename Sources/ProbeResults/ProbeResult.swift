import FoundationEssentials

/// Which prober measured something.
public enum ProbeKind: String, Sendable, Codable {
    /// ICMP / ICMPv6 echo round trip.
    case icmp
    /// TCP handshake, SYN to SYN-ACK.
    case tcp
}

/// The outcome of one attempt or of a target's round. The raw value is safe as a tag value.
public enum ProbeOutcome: String, Sendable, Codable, CaseIterable {
    /// A reply (ICMP) or a completed handshake (TCP) arrived in time.
    case ok
    /// Nothing came back before the deadline (TCP: the port is filtered).
    case timeout
    /// The network said the host cannot be reached (ICMP unreachable, ENETUNREACH, ...).
    case unreachable
    /// The name did not resolve to an address of the wanted family.
    case unresolved
    /// A local failure (e.g. the kernel refused the send for a reason other than routing).
    case error
    /// TCP only: the port answered with RST or ICMP port unreachable.
    case refused
    /// ICMP with don't-fragment: the packet is larger than the path allows: a router's
    /// "fragmentation needed" (IPv4) / "packet too big" (IPv6), or the outgoing interface's
    /// MTU here (a local EMSGSIZE). The round's `pathMTU` says how large a packet may be.
    case tooBig = "too_big"

    /// Stable integer code, for stores that prefer numbers.
    public var code: Int {
        switch self {
        case .ok: return 0
        case .timeout: return 1
        case .unreachable: return 2
        case .unresolved: return 3
        case .error: return 4
        case .refused: return 5
        case .tooBig: return 6
        }
    }
}

/// Where a round-trip time came from.
public enum TimestampSource: String, Sendable, Codable {
    /// The kernel's own measure: SO_TIMESTAMPING stamps at both ends (ICMP), or TCP_INFO's
    /// first RTT sample of the connection (TCP).
    case kernel
    /// A user-space clock read around the syscalls, at one end at least.
    case user
    /// A round whose samples came from both sources.
    case mixed

    /// The source of samples counted by source: "kernel" or "user" when every sample
    /// agrees, "mixed" otherwise; nil with no samples.
    public init?(kernel: Int, user: Int) {
        switch (kernel, user) {
        case (0, 0): return nil
        case (_, 0): self = .kernel
        case (0, _): self = .user
        default: self = .mixed
        }
    }
}

/// One probe target: the name the user gave, the address it resolved to, and for TCP the port.
public struct ProbeTarget: Hashable, Sendable {
    /// The name or address as the user wrote it.
    public var name: String
    /// The address probed; nil when the name did not resolve.
    public var address: IPAddress?
    /// TCP port; nil for ICMP.
    public var port: UInt16?
    /// Why resolution failed, when it did.
    public var resolutionError: String?
    /// The failure may pass by itself (no answer from the resolver, EAI_AGAIN), as opposed
    /// to an answer that the name does not exist.
    public var resolutionFailureIsTemporary: Bool
    /// The options of the packets sent to this target (TOS, source address, interface);
    /// `.none` unless the user set one. Part of the target's identity: the same address
    /// with another class is another series.
    public var options: PacketOptions = .none
    /// The user's labels of this target (site, circuit, ...), written as tags beside the
    /// schema's own; empty unless the targets file gives some. The config has checked the
    /// names (no schema tag shadowed, Prometheus' label-name rules).
    public var labels: [String: String] = [:]

    public init(name: String, address: IPAddress?, port: UInt16? = nil, resolutionError: String? = nil, resolutionFailureIsTemporary: Bool = false,
                options: PacketOptions = .none, labels: [String: String] = [:]) {
        self.name = name
        self.address = address
        self.port = port
        self.resolutionError = resolutionError
        self.resolutionFailureIsTemporary = resolutionFailureIsTemporary
        self.options = options
        self.labels = labels
    }
}

/// One attempt as it completes (an ICMP reply, a TCP handshake's outcome), for live output.
public struct AttemptEvent: Sendable {
    public var kind: ProbeKind
    /// Index of the target in the list given to the prober.
    public var targetIndex: Int
    public var target: ProbeTarget
    /// 1-based number of this attempt within the target's round (ping's icmp_seq).
    public var sequence: Int
    public var outcome: ProbeOutcome
    /// ICMP payload bytes received; nil for TCP.
    public var bytes: Int?
    /// TTL (IPv4) or hop limit (IPv6) of the reply, when known.
    public var ttl: Int?
    /// Round-trip time in milliseconds, when the attempt succeeded.
    public var rttMilliseconds: Double?
    /// Where the time came from.
    public var timestampSource: TimestampSource?
    /// ICMP: a second copy of a reply already counted.
    public var isDuplicate: Bool
    /// `tooBig`: the MTU the answer named (bytes), when it named one.
    public var mtu: Int? = nil
    /// `tooBig`: who said so (a router's address; nil for this host's own EMSGSIZE).
    public var reportedBy: IPAddress? = nil

    package init(kind: ProbeKind, targetIndex: Int, target: ProbeTarget, sequence: Int, outcome: ProbeOutcome, bytes: Int? = nil, ttl: Int? = nil, rttMilliseconds: Double? = nil, timestampSource: TimestampSource? = nil, isDuplicate: Bool) {
        self.kind = kind
        self.targetIndex = targetIndex
        self.target = target
        self.sequence = sequence
        self.outcome = outcome
        self.bytes = bytes
        self.ttl = ttl
        self.rttMilliseconds = rttMilliseconds
        self.timestampSource = timestampSource
        self.isDuplicate = isDuplicate
    }
}

/// Everything measured for one target in one round.
public struct RoundResult: Sendable {
    public var kind: ProbeKind
    public var targetIndex: Int
    public var target: ProbeTarget
    /// Wall-clock time of the round's start.
    public var startTime: Date { Date(timeIntervalSince1970: Double(startNanoseconds) / 1e9) }
    /// The same instant in whole nanoseconds since the epoch (CLOCK_REALTIME), without a
    /// Double's rounding: what a point's timestamp is made from.
    public var startNanoseconds: Int64
    /// Probes sent (ICMP echo requests, TCP connection attempts).
    public var sent: Int
    /// Distinct timely replies (ICMP) or completed handshakes (TCP).
    public var received: Int
    /// ICMP: extra copies of replies already received.
    public var duplicates: Int
    /// ICMP: replies after the timeout (counted as lost, never as received).
    public var late: Int
    /// Attempts answered by "unreachable" (ICMP errors, ENETUNREACH, EHOSTUNREACH).
    public var unreachable: Int
    /// TCP: attempts refused (RST or ICMP port unreachable).
    public var refused: Int
    /// Attempts that failed locally.
    public var errors: Int
    /// TCP: handshakes the server saw completed (our final ACK reached it): every
    /// successful one in connect mode; in half-open mode only those whose delayed ACK left
    /// before netprobe closed the socket (the loop was late), each a connection the
    /// server's application may have logged. 0 for ICMP.
    public var completed: Int = 0
    /// TCP: how the handshakes were ended; nil for ICMP.
    public var tcpMode: TCPProbeMode? = nil
    /// ICMP with don't-fragment: attempts answered "fragmentation needed" / "packet too
    /// big" by a router, or refused with EMSGSIZE by this host.
    public var tooBig: Int = 0
    /// The smallest MTU those answers named (bytes, IP header included); nil without any.
    public var pathMTU: Int? = nil
    /// Attempts with no answer before the deadline.
    public var timeouts: Int { max(0, sent - received - unreachable - refused - errors - tooBig) }
    /// Percentage of attempts without a timely success; 100 when nothing was sent.
    public var lossPercent: Double
    /// RTT statistics in milliseconds; nil when nothing was received.
    public var statistics: RTTStatistics?
    /// Every RTT in milliseconds, in send order.
    public var rttsMilliseconds: [Double]
    /// ICMP: TTL (IPv4) or hop limit (IPv6) of the last reply.
    public var ttl: Int?
    /// Samples timed by the kernel and by user space.
    public var kernelTimestamps: Int
    public var userTimestamps: Int
    /// The bounded outcome of the round.
    public var outcome: ProbeOutcome
    /// How late the round's first probe left against its plan, in milliseconds (`run`'s
    /// repeating rounds only; nil for one-off rounds).
    public var scheduleSlipMilliseconds: Double?

    /// Attempts per outcome (ok, refused, timeout, unreachable, error; too_big when any).
    public var outcomeCounts: [ProbeOutcome: Int] {
        var counts: [ProbeOutcome: Int] = [.ok: received, .refused: refused, .timeout: timeouts, .unreachable: unreachable, .error: errors]
        if tooBig > 0 { counts[.tooBig] = tooBig }
        return counts
    }

    /// "kernel" or "user" when every sample agrees, "mixed" otherwise; nil with no samples.
    public var timestampSource: TimestampSource? { TimestampSource(kernel: kernelTimestamps, user: userTimestamps) }

    package init(kind: ProbeKind, targetIndex: Int, target: ProbeTarget, startNanoseconds: Int64, sent: Int, received: Int, duplicates: Int, late: Int, unreachable: Int, refused: Int, errors: Int, completed: Int = 0, tcpMode: TCPProbeMode? = nil, lossPercent: Double, statistics: RTTStatistics? = nil, rttsMilliseconds: [Double], ttl: Int? = nil, kernelTimestamps: Int, userTimestamps: Int, outcome: ProbeOutcome, scheduleSlipMilliseconds: Double? = nil) {
        self.kind = kind
        self.targetIndex = targetIndex
        self.target = target
        self.startNanoseconds = startNanoseconds
        self.sent = sent
        self.received = received
        self.duplicates = duplicates
        self.late = late
        self.unreachable = unreachable
        self.refused = refused
        self.errors = errors
        self.completed = completed
        self.tcpMode = tcpMode
        self.lossPercent = lossPercent
        self.statistics = statistics
        self.rttsMilliseconds = rttsMilliseconds
        self.ttl = ttl
        self.kernelTimestamps = kernelTimestamps
        self.userTimestamps = userTimestamps
        self.outcome = outcome
        self.scheduleSlipMilliseconds = scheduleSlipMilliseconds
    }
}

/// What a prober reports while it runs.
public enum ProbeEvent: Sendable {
    /// One attempt completed (ICMP: a reply or a duplicate; TCP: any outcome).
    case attempt(AttemptEvent)
    /// A target's round is complete.
    case round(RoundResult)
    /// Repeating rounds only: a round in flight when the run stopped that could not finish
    /// within `RoundRun.stopBudgetNanoseconds`. It is not a measurement and has no result.
    case abandoned(targetIndex: Int, target: ProbeTarget)
}

/// Changes to the targets of a running `netprobe run`-style probe (repeating rounds),
/// applied on the loop thread without disturbing any other target's schedule.
public struct TargetUpdate: Sendable {
    /// New targets: they take the next free indices, in order (the prober's `update`
    /// returns them), and start at phase slots of their own within one round interval.
    public var added: [ProbeTarget]
    /// Indices of targets to stop: a round in flight finishes and is reported; no other
    /// round starts.
    public var removed: [Int]
    /// Targets with a new address (or a new resolution failure), by index: a round in
    /// flight finishes on the old address; the next one uses the new.
    public var changed: [(index: Int, target: ProbeTarget)]

    public init(added: [ProbeTarget] = [], removed: [Int] = [], changed: [(index: Int, target: ProbeTarget)] = []) {
        self.added = added
        self.removed = removed
        self.changed = changed
    }

    public var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty }
}
