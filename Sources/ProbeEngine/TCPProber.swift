import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How a TCP prober connects.
public struct TCPProbeConfiguration: Sendable {
    /// Handshakes per target; 0 keeps probing until `stop()`.
    public var count: Int
    /// Time between two handshakes to the same target, in nanoseconds.
    public var intervalNanoseconds: Int64
    /// How long a handshake may take before it counts as a timeout (filtered), in nanoseconds.
    public var timeoutNanoseconds: Int64
    /// Upper bound on connection attempts per second over all targets.
    public var attemptsPerSecond: Double
    /// Most handshakes in flight at once (bounded by the descriptor limit).
    public var maximumInFlight: Int
    /// Repeat each target's round of `count` handshakes every this many nanoseconds until
    /// `stop()` (`netprobe run`); nil for a single round.
    public var roundIntervalNanoseconds: Int64? = nil

    public init(count: Int = 5, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                attemptsPerSecond: Double = 1000, maximumInFlight: Int = 4096) {
        self.count = count
        self.intervalNanoseconds = intervalNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.attemptsPerSecond = attemptsPerSecond
        self.maximumInFlight = maximumInFlight
    }
}

/// The TCP handshake prober: non-blocking connects on the probe loop, thousands in flight,
/// the handshake time from the kernel's own RTT sample (TCP_INFO) where it is valid, and a
/// deadline enforced by the loop, not by SYN retries.
///
/// Each socket closes with SO_LINGER {1, 0}: an RST instead of a FIN, so probing at high
/// rates leaves no TIME_WAIT sockets behind. Needs no privilege.
public final class TCPProber: @unchecked Sendable {
    public let configuration: TCPProbeConfiguration
    let logger: Logger
    let loop: ProbeLoop
    let gate = RunGate()

    /// - Parameters:
    ///   - configuration: counts, timing, concurrency.
    ///   - loop: the event loop to run on (shared with other probers); nil makes one.
    ///   - logger: where the prober reports what it does.
    public init(configuration: TCPProbeConfiguration, loop: ProbeLoop? = nil, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.loop = try loop ?? ProbeLoop(logger: logger)
    }

    /// Starts probing `targets` (each with a port) on the loop thread.
    /// - Returns: each attempt's outcome as it completes and one round result per target;
    ///   the stream finishes when every round is complete (or after `stop()`).
    /// - Parameters:
    ///   - targets: what to probe.
    ///   - configuration: settings for this run only (e.g. after a reload); nil keeps the
    ///     prober's own.
    ///   - reportingAttempts: false leaves out the per-attempt events (cheaper when only
    ///     the rounds are wanted).
    public func probe(_ targets: [ProbeTarget], configuration override: TCPProbeConfiguration? = nil, reportingAttempts: Bool = true) -> AsyncStream<ProbeEvent> {
        precondition(targets.allSatisfy { $0.port != nil }, "TCP targets need a port")
        let (stream, continuation) = gate.begin("a TCPProber") { [weak self] in self?.stop() }
        loop.add(TCPRun(prober: self, configuration: override ?? configuration, targets: targets, reportingAttempts: reportingAttempts, continuation: continuation))
        return stream
    }

    /// Stops starting handshakes; those in flight finish or time out, then every unfinished
    /// round is reported and the stream finishes. Safe from any thread.
    public func stop() {
        gate.requestStop()
        loop.wake()
    }

    /// The outcome of a failed connect, from its errno.
    static func outcome(errno code: Int32) -> ProbeOutcome {
        switch code {
        case ECONNREFUSED: return .refused
        case EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENONET: return .unreachable
        case ETIMEDOUT: return .timeout
        default: return .error
        }
    }
}

/// The state of one `probe` call, owned by the loop thread.
private final class TCPRun: RoundRun, LoopTask {
    struct Attempt {
        var descriptor: Descriptor
        var id: UInt64
        var targetIndex: Int
        var indexInRound: Int
        var startedMonotonic: Int64
    }

    let prober: TCPProber
    let configuration: TCPProbeConfiguration
    var attempts: [Int32: Attempt] = [:]
    var deadlines = Deque<(deadline: Int64, fd: Int32, id: UInt64)>()
    var nextAttemptID: UInt64 = 0
    var loggedDescriptorShortage = false

    init(prober: TCPProber, configuration: TCPProbeConfiguration, targets: [ProbeTarget], reportingAttempts: Bool, continuation: AsyncStream<ProbeEvent>.Continuation) {
        self.prober = prober
        self.configuration = configuration
        super.init(kind: .tcp, targets: targets, roundCount: configuration.count, roundInterval: configuration.roundIntervalNanoseconds,
                   reportingAttempts: reportingAttempts, continuation: continuation)
    }

    func attach(to loop: ProbeLoop, now: Int64) throws {
        self.loop = loop
        planRounds(now: now, interval: configuration.intervalNanoseconds, packetsPerSecond: configuration.attemptsPerSecond)
    }

    func service(now: Int64) throws {
        checkStop(requested: prober.gate.isStopRequested)
        while attempts.count < configuration.maximumInFlight, let due = schedule.popDue(now: now) {
            let index = due.targetIndex
            if tallies[index].sent == 0 { tallies[index].slipNanoseconds = cycle.slip(of: index, now: now) }
            guard targets[index].address != nil else {
                tallies[index].startTime = Date()
                report(index)
                startNextRound(index, now: now)
                continue
            }
            try start(index)
            if configuration.count == 0 || tallies[index].sent < configuration.count {
                schedule.scheduleNext(after: due)
            }
        }
        let current = Clock.monotonicNanoseconds()
        while let first = deadlines.first, first.deadline <= current {
            deadlines.removeFirst()
            guard let attempt = attempts[first.fd], attempt.id == first.id else { continue }
            finish(fd: first.fd, outcome: .timeout, rttMilliseconds: nil, source: nil)
        }
        // Drop deadlines of handshakes already finished so the timer names a live one.
        while let first = deadlines.first, attempts[first.fd]?.id != first.id {
            deadlines.removeFirst()
        }
        reportFinished()
        outbox.flush(now: now, force: isFinished)
    }

    var nextWake: Int64? {
        let send = attempts.count < configuration.maximumInFlight ? schedule.nextWake : nil
        return [send, deadlines.first?.deadline, outbox.nextFlush].compactMap { $0 }.min()
    }

    var isFinished: Bool {
        schedule.isEmpty && attempts.isEmpty && tallies.unreported == 0
    }

    func detach(error: Error?) {
        for fd in Array(attempts.keys) {
            finish(fd: fd, outcome: error == nil ? .timeout : .error, rttMilliseconds: nil, source: nil)
        }
        if let error {
            prober.logger.error("TCP probing stopped", metadata: ["error": "\(error)"])
            for index in targets.indices where !tallies[index].reported {
                tallies[index].errors += 1
                report(index)
            }
        }
        reportFinished()
        outbox.flush(now: Clock.monotonicNanoseconds(), force: true)
        prober.gate.end()
        continuation.finish()
    }

    /// Opens a socket and starts its handshake.
    func start(_ index: Int) throws {
        guard let address = targets[index].address, let port = targets[index].port else { return }
        if tallies[index].startTime == nil { tallies[index].startTime = Date() }
        let indexInRound = tallies[index].sent
        tallies[index].sent += 1
        let fd: Int32
        do {
            fd = try Posix.socket(address.family.posixDomain, Int32(SOCK_STREAM.rawValue), 0)
        } catch {
            if (error.errno == EMFILE || error.errno == ENFILE) && !loggedDescriptorShortage {
                loggedDescriptorShortage = true
                prober.logger.error("out of file descriptors: raise the open-file limit (ulimit -n) or lower --rate", metadata: ["error": "\(error)"])
            }
            conclude(index, indexInRound: indexInRound, outcome: .error, rttMilliseconds: nil, source: nil)
            return
        }
        let descriptor = Descriptor(taking: fd)
        nextAttemptID += 1
        let attempt = Attempt(descriptor: descriptor, id: nextAttemptID, targetIndex: index, indexInRound: indexInRound, startedMonotonic: 0)
        do {
            // RST on close: no TIME_WAIT left behind, however fast we probe.
            try Posix.setsockopt(fd, SOL_SOCKET, SO_LINGER, linger(l_onoff: 1, l_linger: 0))
            attempts[fd] = attempt
            let started = Clock.monotonicNanoseconds()
            attempts[fd]?.startedMonotonic = started
            let connected = try address.withSocketAddress(port: port) { (socketAddress, length) throws(SystemCallError) -> Bool in
                try Posix.connect(fd, socketAddress, length)
            }
            if connected {
                completed(fd: fd, finishedMonotonic: Clock.monotonicNanoseconds())
                return
            }
            try loop?.watch(fd, events: EPOLLOUT.rawValue, for: self)
            deadlines.append((started + configuration.timeoutNanoseconds, fd, attempt.id))
        } catch let error as SystemCallError {
            if attempts[fd] != nil {
                finish(fd: fd, outcome: TCPProber.outcome(errno: error.errno), rttMilliseconds: nil, source: nil)
            } else {
                try? descriptor.close()
                conclude(index, indexInRound: indexInRound, outcome: .error, rttMilliseconds: nil, source: nil)
            }
        }
    }

    func handle(fd: Int32, events: UInt32) throws {
        guard attempts[fd] != nil else { return }
        completed(fd: fd, finishedMonotonic: Clock.monotonicNanoseconds())
    }

    /// The handshake ended (writable or error): read the outcome and the time.
    func completed(fd: Int32, finishedMonotonic: Int64) {
        guard let attempt = attempts[fd] else { return }
        let socketError = (try? Posix.getsockopt(fd, SOL_SOCKET, SO_ERROR, initial: Int32(0))) ?? EIO
        guard socketError == 0 else {
            finish(fd: fd, outcome: TCPProber.outcome(errno: socketError), rttMilliseconds: nil, source: nil)
            return
        }
        var info = CSystemShims_tcp_handshake_info()
        // The kernel's first RTT sample is SYN -> SYN-ACK itself; after a retransmitted SYN
        // it is 0 (Karn) or coarse, so only a clean handshake's sample is used.
        if CSystemShims_tcp_handshake_info_read(fd, &info) == 0, info.total_retrans == 0, info.rtt_us > 0 {
            finish(fd: fd, outcome: .ok, rttMilliseconds: Double(info.rtt_us) / 1000, source: .kernel)
        } else {
            finish(fd: fd, outcome: .ok, rttMilliseconds: Double(finishedMonotonic - attempt.startedMonotonic) / 1_000_000, source: .user)
        }
    }

    /// Closes the attempt's socket and counts its outcome.
    func finish(fd: Int32, outcome: ProbeOutcome, rttMilliseconds: Double?, source: TimestampSource?) {
        guard let attempt = attempts.removeValue(forKey: fd) else { return }
        loop?.forget(fd)
        try? attempt.descriptor.close()
        conclude(attempt.targetIndex, indexInRound: attempt.indexInRound, outcome: outcome, rttMilliseconds: rttMilliseconds, source: source)
    }

    func conclude(_ index: Int, indexInRound: Int, outcome: ProbeOutcome, rttMilliseconds: Double?, source: TimestampSource?) {
        tallies[index].concluded += 1
        switch outcome {
        case .ok:
            if let rttMilliseconds, let source {
                tallies[index].recordSample(index: indexInRound, milliseconds: rttMilliseconds, source: source)
            }
        case .refused: tallies[index].refused += 1
        case .unreachable: tallies[index].unreachable += 1
        case .error, .unresolved: tallies[index].errors += 1
        case .timeout: break
        }
        if reportingAttempts { continuation.yield(.attempt(AttemptEvent(kind: .tcp, targetIndex: index, target: targets[index], sequence: indexInRound + 1,
                                                 outcome: outcome, bytes: nil, ttl: nil, rttMilliseconds: rttMilliseconds,
                                                 timestampSource: source, isDuplicate: false))) }
    }

}
