import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
import ProbeResults
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
    /// Half-open (the default: the server's application never sees the probe) or a full
    /// connection.
    public var mode: TCPProbeMode

    public init(count: Int = 5, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                attemptsPerSecond: Double = 1000, maximumInFlight: Int = 4096, mode: TCPProbeMode = .halfOpen) {
        self.mode = mode
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
/// Half-open by default (`TCPProbeMode`): the final ACK is delayed by the kernel's
/// delayed-ACK timer (200 ms after the SYN-ACK) and the socket is closed with an RST well
/// before it fires, so the server never completes the connection and no TIME_WAIT socket
/// is left on either side. Before closing, TCP_INFO's segment count shows whether the ACK
/// did leave (the loop was late): such a probe is still measured, and counted `completed`.
/// Needs no privilege.
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
        let (stream, continuation) = gate.begin("a TCPProber", targetCount: targets.count) { [weak self] in self?.stop() }
        loop.add(TCPRun(prober: self, configuration: override ?? configuration, targets: targets, reportingAttempts: reportingAttempts, continuation: continuation))
        return stream
    }

    /// Changes the targets of the running repeating probe (`netprobe run`) without
    /// touching the schedule of any other target. Safe from any thread.
    /// - Returns: the target indices of `update.added`, as their results will carry them;
    ///   nil when no probe is running (or it is stopping): the update was dropped.
    @discardableResult
    public func update(_ update: TargetUpdate) -> Range<Int>? {
        precondition(update.added.allSatisfy { $0.port != nil }, "TCP targets need a port")
        defer { loop.wake() }
        return gate.submit(update)
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
private final class TCPRun: RoundRun, LoopTask, DescriptorOwner {
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
    /// Connect mode: measured connections after our FIN, read until the server closes too
    /// (closing with unread data would send an RST), or until their deadline.
    var closing: [Int32: (descriptor: Descriptor, id: UInt64)] = [:]
    var closingDeadlines = Deque<(deadline: Int64, fd: Int32, id: UInt64)>()
    /// How long a connection closing in connect mode waits for the server at least (5 s):
    /// not part of the measurement, only of leaving the server a clean close.
    static let closingGraceNanoseconds: Int64 = 5_000_000_000
    var drainBuffer = [UInt8](repeating: 0, count: 4096)
    var nextAttemptID: UInt64 = 0
    var loggedDescriptorShortage = false

    /// Descriptors this run holds open: handshakes in flight and connections closing.
    var openDescriptors: Int { attempts.count + closing.count }

    init(prober: TCPProber, configuration: TCPProbeConfiguration, targets: [ProbeTarget], reportingAttempts: Bool, continuation: AsyncStream<ProbeEvent>.Continuation) {
        self.prober = prober
        self.configuration = configuration
        super.init(kind: .tcp, targets: targets, roundCount: configuration.count, roundInterval: configuration.roundIntervalNanoseconds,
                   reportingAttempts: reportingAttempts, continuation: continuation)
        tcpMode = configuration.mode
    }

    func attach(to loop: ProbeLoop, now: Int64) throws {
        self.loop = loop
        var rate = configuration.attemptsPerSecond
        if configuration.mode == .connect { rate = min(rate, TCPProbeMode.connectAttemptsPerSecondLimit) }
        planRounds(now: now, interval: configuration.intervalNanoseconds, timeout: configuration.timeoutNanoseconds, packetsPerSecond: rate)
    }

    func service(now: Int64) throws {
        applyUpdates(prober.gate.takeUpdates(), now: now)
        checkStop(requested: prober.gate.isStopRequested)
        while openDescriptors < configuration.maximumInFlight, let due = schedule.popDue(now: now) {
            let index = due.targetIndex
            guard isActive(index) else { continue }
            if tallies[index].sent == 0 { tallies[index].slipNanoseconds = cycle.slip(of: index, now: now) }
            guard targets[index].address != nil else {
                markRoundStart(index)
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
        while let first = closingDeadlines.first, first.deadline <= current || closing[first.fd]?.id != first.id {
            closingDeadlines.removeFirst()
            if closing[first.fd]?.id == first.id { drain(fd: first.fd, giveUp: true) }
        }
        reportFinished()
        outbox.flush(now: now, force: isFinished)
    }

    var nextWake: Int64? {
        let send = openDescriptors < configuration.maximumInFlight ? schedule.nextWake : nil
        return earliest(earliest(send, deadlines.first?.deadline), earliest(closingDeadlines.first?.deadline, outbox.nextFlush))
    }

    var isFinished: Bool {
        roundsAreOver && schedule.isEmpty && attempts.isEmpty && closing.isEmpty && tallies.unreported == 0
    }

    func detach(error: Error?) {
        for fd in Array(attempts.keys) {
            finish(fd: fd, outcome: error == nil ? .timeout : .error, rttMilliseconds: nil, source: nil)
        }
        for fd in Array(closing.keys) { drain(fd: fd, giveUp: true) }
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
        markRoundStart(index)
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
            if configuration.mode == .halfOpen {
                // The kernel holds the final ACK back (pingpong mode, set before connect()
                // so the SYN-ACK is handled in it), and the close sends an RST in its place:
                // no connection for the server, no TIME_WAIT for either side.
                try Posix.setsockopt(fd, Int32(IPPROTO_TCP), TCP_QUICKACK, Int32(0))
                try Posix.setsockopt(fd, SOL_SOCKET, SO_LINGER, linger(l_onoff: 1, l_linger: 0))
            }
            try targets[index].options.apply(toStreamSocket: fd, family: address.family)
            attempts[fd] = attempt
            let started = Clock.monotonicNanoseconds()
            attempts[fd]?.startedMonotonic = started
            let connected = try address.withSocketAddress(port: port) { (socketAddress, length) throws(SystemCallError) -> Bool in
                try Posix.connect(fd, socketAddress, length)
            }
            // Watched from here on, even when already connected: connect mode keeps the
            // socket, and changes what is watched, until the server closes.
            try loop?.watch(fd, events: EPOLLOUT.rawValue, for: self)
            if connected {
                handshakeEnded(fd: fd, finishedMonotonic: Clock.monotonicNanoseconds())
                return
            }
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
        if attempts[fd] != nil {
            handshakeEnded(fd: fd, finishedMonotonic: Clock.monotonicNanoseconds())
        } else if closing[fd] != nil {
            drain(fd: fd, giveUp: false)
        }
    }

    /// The handshake ended (writable or error): read the outcome and the time.
    func handshakeEnded(fd: Int32, finishedMonotonic: Int64) {
        guard let attempt = attempts[fd] else { return }
        let socketError = (try? Posix.getsockopt(fd, SOL_SOCKET, SO_ERROR, initial: Int32(0))) ?? EIO
        guard socketError == 0 else {
            finish(fd: fd, outcome: TCPProber.outcome(errno: socketError), rttMilliseconds: nil, source: nil)
            return
        }
        var info = CSystemShims_tcp_handshake_info()
        let haveInfo = CSystemShims_tcp_handshake_info_read(fd, &info) == 0
        // Half-open: while only SYNs have left, segs_out is 1 + total_retrans; one more is
        // the final ACK, sent because the loop came later than the delayed-ACK timer. The
        // close follows this read at once, so a probe counted clean left no connection.
        let leftConnection = configuration.mode == .connect || !haveInfo || info.segs_out > 1 + info.total_retrans
        // The kernel's first RTT sample is SYN -> SYN-ACK itself; after a retransmitted SYN
        // it is 0 (Karn) or coarse, so only a clean handshake's sample is used.
        if haveInfo, info.total_retrans == 0, info.rtt_us > 0 {
            finish(fd: fd, outcome: .ok, rttMilliseconds: Double(info.rtt_us) / 1000, source: .kernel, completed: leftConnection)
        } else {
            finish(fd: fd, outcome: .ok, rttMilliseconds: Double(finishedMonotonic - attempt.startedMonotonic) / 1_000_000, source: .user,
                   completed: leftConnection)
        }
    }

    /// Counts the attempt's outcome and lets go of its socket: closed at once (an RST in
    /// half-open mode, or after a failed handshake), or, for a connection made in connect
    /// mode, shut down with a FIN and kept until the server closes its side.
    func finish(fd: Int32, outcome: ProbeOutcome, rttMilliseconds: Double?, source: TimestampSource?, completed: Bool = false) {
        guard let attempt = attempts.removeValue(forKey: fd) else { return }
        if outcome == .ok && configuration.mode == .connect {
            startClosing(fd: fd, attempt: attempt)
        } else {
            loop?.forget(fd)
            try? attempt.descriptor.close()
        }
        conclude(attempt.targetIndex, indexInRound: attempt.indexInRound, outcome: outcome, rttMilliseconds: rttMilliseconds, source: source,
                 completed: completed)
    }

    /// Connect mode: our FIN now; the descriptor waits for the server's FIN (or data to
    /// discard), up to the probe timeout but at least `closingGraceNanoseconds`: a server
    /// that greets (MariaDB) or closes later than that, on a busy host, would otherwise
    /// send its greeting to an orphaned socket, and the kernel answers that with an RST.
    func startClosing(fd: Int32, attempt: Attempt) {
        do {
            try Posix.shutdown(fd, Int32(SHUT_WR))
            try loop?.rewatch(fd, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
        } catch {
            loop?.forget(fd)
            try? attempt.descriptor.close()
            return
        }
        closing[fd] = (attempt.descriptor, attempt.id)
        closingDeadlines.append((Clock.monotonicNanoseconds() + max(configuration.timeoutNanoseconds, Self.closingGraceNanoseconds), fd, attempt.id))
    }

    /// Reads and discards what the server sent; closes once it has closed its side (or
    /// reset, or `giveUp` at the deadline). Nothing unread is left at close, so the kernel
    /// ends with the FIN already sent, not an RST.
    func drain(fd: Int32, giveUp: Bool) {
        guard let entry = closing[fd] else { return }
        var serverClosed = false
        reading: while true {
            let result = drainBuffer.withUnsafeMutableBytes { buffer in Result { () throws(SystemCallError) in try Posix.recv(fd, buffer, 0) } }
            switch result {
            case .success(.processed(let count)) where count > 0: continue reading
            case .success(.wouldBlock): break reading
            default: serverClosed = true; break reading  // end of stream, or an error such as a reset
            }
        }
        guard serverClosed || giveUp else { return }
        closing[fd] = nil
        loop?.forget(fd)
        try? entry.descriptor.close()
    }

    func conclude(_ index: Int, indexInRound: Int, outcome: ProbeOutcome, rttMilliseconds: Double?, source: TimestampSource?, completed: Bool = false) {
        tallies[index].concluded += 1
        switch outcome {
        case .ok:
            if let rttMilliseconds, let source {
                tallies[index].recordSample(index: indexInRound, milliseconds: rttMilliseconds, source: source)
            }
            if completed { tallies[index].completed += 1 }
        case .refused: tallies[index].refused += 1
        case .unreachable: tallies[index].unreachable += 1
        case .error, .unresolved, .tooBig: tallies[index].errors += 1
        case .timeout: break
        }
        if reportingAttempts { continuation.yield(.attempt(AttemptEvent(kind: .tcp, targetIndex: index, target: targets[index], sequence: indexInRound + 1,
                                                 outcome: outcome, bytes: nil, ttl: nil, rttMilliseconds: rttMilliseconds,
                                                 timestampSource: source, isDuplicate: false))) }
    }

}

extension PacketOptions {
    /// Sets the options on a TCP socket before its connect(): per socket, since every
    /// handshake has a socket of its own. The TOS byte with IP_TOS / IPV6_TCLASS (the SYN
    /// carries it; SYN-ACKs come back as class 0 on Linux), the interface with
    /// SO_BINDTODEVICE (no privilege needed on a socket not yet bound to a device), the
    /// source with bind() and IP_BIND_ADDRESS_NO_PORT, so the port is still chosen by
    /// connect() per destination rather than reserved at bind.
    /// - Throws: `SystemCallError`: ENODEV for an interface that does not exist,
    ///   EADDRNOTAVAIL for a source that is not ours, EAFNOSUPPORT for the wrong family.
    func apply(toStreamSocket fd: Int32, family: AddressFamily) throws(SystemCallError) {
        guard !isDefault else { return }
        if tos != 0 {
            switch family {
            case .ipv4: try Posix.setsockopt(fd, Int32(IPPROTO_IP), IP_TOS, Int32(tos))
            case .ipv6: try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), ControlMessageConstants.ipv6TrafficClass, Int32(tos))
            }
        }
        if let interface {
            var name = Array(interface.utf8CString)
            _ = try Posix.retryingEINTR("setsockopt") {
                Glibc.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, socklen_t(name.count))
            }
        }
        if let source {
            guard source.family == family else { throw SystemCallError(call: "bind", errno: EAFNOSUPPORT) }
            try Posix.setsockopt(fd, Int32(IPPROTO_IP), PacketOptions.bindAddressNoPort, Int32(1))
            try source.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(fd, address, length) }
        }
    }

    /// IP_BIND_ADDRESS_NO_PORT (<linux/in.h>; not in glibc's headers).
    static let bindAddressNoPort: Int32 = 24
}
