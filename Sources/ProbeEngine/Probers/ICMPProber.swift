import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
#if canImport(Glibc)
import Glibc
import ProbeResults
#endif

extension ICMPProbeConfiguration {
    /// About how many probes the tracker holds at once: those sent over one timeout and
    /// retention, at the rate the targets, spacing, rounds and rate limit allow, plus a
    /// quarter; a single round holds at most all of its probes.
    func recordsKept(targets: Int, retention: Int64) -> Int {
        let window = Double(timeoutNanoseconds + retention) / 1e9
        var perTarget = 1e9 / Double(max(1, intervalNanoseconds))
        if let roundInterval = roundIntervalNanoseconds, count > 0 {
            perTarget = min(perTarget, Double(count) * 1e9 / Double(max(1, roundInterval)))
        }
        var kept = min(Double(targets) * perTarget, packetsPerSecond) * window * 1.25
        if roundIntervalNanoseconds == nil, count > 0 { kept = min(kept, Double(targets * count)) }
        return kept.isFinite ? Int(min(kept, 1_048_576).rounded(.up)) : 0
    }
}

/// How an ICMP prober sends.
public struct ICMPProbeConfiguration: Sendable {
    /// Echo requests per target; 0 keeps probing until `stop()`.
    public var count: Int
    /// Time between two requests to the same target, in nanoseconds.
    public var intervalNanoseconds: Int64
    /// How long to wait for a reply before the probe is lost, in nanoseconds.
    public var timeoutNanoseconds: Int64
    /// ICMP payload bytes (ping's -s), at least `ICMPEcho.minimumPayloadLength`.
    public var payloadLength: Int
    /// IP TTL / IPv6 hop limit of requests; nil keeps the system default.
    public var ttl: Int?
    /// Upper bound on requests per second over all targets.
    public var packetsPerSecond: Double
    /// Repeat each target's round of `count` probes every this many nanoseconds until
    /// `stop()` (`netprobe run`); nil for a single round.
    public var roundIntervalNanoseconds: Int64? = nil
    /// How long a round with lost probes waits for their replies to come late (they are
    /// then counted as `late`, not missed); nil: one more timeout. 0 ends the round at its
    /// last deadline: on-demand probes (`/probe`) whose answer is due by then.
    public var lateWindowNanoseconds: Int64? = nil

    public init(count: Int = 5, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                payloadLength: Int = 56, ttl: Int? = nil, packetsPerSecond: Double = 1000) {
        self.count = count
        self.intervalNanoseconds = intervalNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.payloadLength = payloadLength
        self.ttl = ttl
        self.packetsPerSecond = packetsPerSecond
    }
}

/// Counters of what the prober saw but did not count as replies.
public struct ICMPProberDiagnostics: Sendable {
    /// Packets that did not decode (truncated, bad checksum, other types), by reason.
    public var rejectedPackets: [String: Int] = [:]
    /// Well-formed replies that were not ours or did not match a probe, by reason.
    public var ignoredReplies: [String: Int] = [:]
    /// Replies whose RTT was taken from kernel stamps at both ends, and the others.
    public var kernelSamples = 0
    public var userSamples = 0
}

/// The ICMP echo prober: one socket per address family shared by every target, sends
/// spread evenly, kernel timestamps, strict reply matching. It runs as a task of a
/// `ProbeLoop`, the one event-loop thread that owns every probe socket.
///
/// Use: open the sockets with `ICMPSocketSet.open` (the only step that needs CAP_NET_RAW,
/// so privileges can be dropped right after), create the prober, call `probe(_:)` once for
/// the stream of events, and `stop()` to end early.
public final class ICMPProber: @unchecked Sendable {
    public let configuration: ICMPProbeConfiguration
    let logger: Logger
    let sockets: [AddressFamily: ICMPSocket]
    let loop: ProbeLoop
    let cookie: UInt64
    private var nextProbeNumber: UInt32

    /// The gate of `probe(_:)`'s run; runs of `probeAlongside` have one each.
    let gate = RunGate()
    /// Reads the sockets for every run of this prober (loop thread).
    fileprivate let receiver = ICMPReceiver()
    private let shared = Locked(SharedState())

    private struct SharedState {
        var closed = false
        /// `shutDown()` was called: the sockets close when the last run has ended.
        var closingWhenIdle = false
        /// The gates of `probeAlongside` runs on the loop.
        var alongside: [RunGate] = []
        var diagnostics = ICMPProberDiagnostics()
    }

    /// The mode each socket is in (raw with CAP_NET_RAW, else datagram).
    public var socketModes: [AddressFamily: ICMPSocketMode] { sockets.mapValues(\.mode) }

    /// What the prober rejected or ignored so far.
    public var diagnostics: ICMPProberDiagnostics {
        shared.withLock { $0.diagnostics }
    }

    /// Prepares a prober on sockets opened earlier.
    /// - Parameters:
    ///   - sockets: the ICMP sockets; the prober owns them from now on and closes them.
    ///   - configuration: counts, timing, sizes.
    ///   - loop: the event loop to run on (shared with other probers); nil makes one.
    ///   - logger: where the prober reports what it does.
    /// - Throws: `SystemCallError` when a new event loop cannot be created.
    public init(sockets: ICMPSocketSet, configuration: ICMPProbeConfiguration, loop: ProbeLoop? = nil, logger: Logger) throws {
        precondition(configuration.payloadLength >= ICMPEcho.minimumPayloadLength)
        self.configuration = configuration
        self.logger = logger
        let taken = sockets.take()
        do {
            self.loop = try loop ?? ProbeLoop(logger: logger)
        } catch {
            for socket in taken.values { try? socket.close() }
            throw error
        }
        self.sockets = taken
        var generator = SystemRandomNumberGenerator()
        cookie = generator.next()
        nextProbeNumber = generator.next()
    }

    /// Closes the sockets. Call after the last stream finished (or never started).
    public func close() {
        precondition(!gate.isRunning && shared.withLock({ $0.alongside.isEmpty }), "close() while probing")
        let wasOpen = shared.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        if wasOpen { closeSockets() }
    }

    /// Stops every run and closes the sockets once the last one has ended (at once when
    /// none runs); later probe calls get nothing. Safe from any thread, with runs in flight.
    public func shutDown() {
        let (running, closeNow) = shared.withLock { state in
            state.closingWhenIdle = true
            let idle = !state.closed && state.alongside.isEmpty && !gate.isRunning
            if idle { state.closed = true }
            return (state.alongside, idle)
        }
        gate.requestStop()
        for run in running { run.requestStop() }
        loop.wake()
        if closeNow { closeSockets() }
    }

    private func closeSockets() {
        for socket in sockets.values { try? socket.close() }
    }

    /// A run has left the loop: the last one closes the sockets after `shutDown()`.
    fileprivate func runEnded(_ runGate: RunGate) {
        let closeNow = shared.withLock { state in
            state.alongside.removeAll { $0 === runGate }
            guard state.closingWhenIdle, !state.closed, state.alongside.isEmpty, !gate.isRunning else { return false }
            state.closed = true
            return true
        }
        if closeNow { closeSockets() }
    }

    deinit {
        if !shared.withLock({ $0.closed }) { for socket in sockets.values { try? socket.close() } }
    }

    /// Starts probing `targets` on the loop thread. Call again for new targets once the
    /// previous stream has finished; the sockets stay open in between.
    /// - Returns: replies as they arrive and one round result per target; the stream
    ///   finishes when every target's round is complete (or after `stop()`).
    /// - Parameters:
    ///   - targets: what to probe.
    ///   - configuration: settings for this run only (e.g. after a reload); nil keeps the
    ///     prober's own. Socket options (TTL) stay as the sockets were opened.
    ///   - reportingAttempts: false leaves out the per-attempt events (cheaper when only
    ///     the rounds are wanted).
    public func probe(_ targets: [ProbeTarget], configuration override: ICMPProbeConfiguration? = nil, reportingAttempts: Bool = true) -> AsyncStream<ProbeEvent> {
        precondition(!shared.withLock { $0.closed }, "probe() after close()")
        let (stream, continuation) = gate.begin("an ICMPProber", targetCount: targets.count) { [weak self] in self?.stop() }
        loop.add(ICMPRun(prober: self, gate: gate, configuration: override ?? configuration, targets: targets, reportingAttempts: reportingAttempts, continuation: continuation))
        return stream
    }

    /// How many `probeAlongside` calls are probing now.
    public var runningAlongside: Int { shared.withLock { $0.alongside.count } }

    /// Probes one target once, beside any other call of this method and beside
    /// `probe(_:)`: the runs share the sockets, and each reply goes to the run that sent
    /// its request. For on-demand probes (`/probe`), where a silent target must not hold up
    /// the requests that come after it. Cancelling the calling task stops sending; the
    /// probes in flight still get their timeout.
    /// - Returns: the target's round; nil once the prober is shut down or closed.
    public func probeAlongside(_ target: ProbeTarget, configuration: ICMPProbeConfiguration) async -> RoundResult? {
        let runGate = RunGate()
        let accepted = shared.withLock { state in
            guard !state.closed && !state.closingWhenIdle else { return false }
            state.alongside.append(runGate)
            return true
        }
        guard accepted else { return nil }
        let (stream, continuation) = runGate.begin("an ICMP run", targetCount: 1) { [weak runGate, weak self] in
            runGate?.requestStop()
            self?.loop.wake()
        }
        loop.add(ICMPRun(prober: self, gate: runGate, configuration: configuration, targets: [target], reportingAttempts: false, continuation: continuation))
        var round: RoundResult?
        for await event in stream {
            if case .round(let result) = event { round = result }
        }
        return round
    }

    /// Changes the targets of the running repeating probe (`netprobe run`) without
    /// touching the schedule of any other target. Safe from any thread.
    /// - Returns: the target indices of `update.added`, as their results will carry them;
    ///   nil when no probe is running (or it is stopping): the update was dropped.
    @discardableResult
    public func update(_ update: TargetUpdate) -> Range<Int>? {
        defer { loop.wake() }
        return gate.submit(update)
    }

    /// Stops sending. Probes in flight still get their timeout to answer, then every
    /// unfinished round is reported and the stream finishes. Safe from any thread.
    public func stop() {
        gate.requestStop()
        loop.wake()
    }

    /// Adds what a run saw to the prober's counts.
    fileprivate func publish(_ diagnostics: ICMPProberDiagnostics) {
        shared.withLock { state in
            state.diagnostics.rejectedPackets.merge(diagnostics.rejectedPackets, uniquingKeysWith: +)
            state.diagnostics.ignoredReplies.merge(diagnostics.ignoredReplies, uniquingKeysWith: +)
            state.diagnostics.kernelSamples += diagnostics.kernelSamples
            state.diagnostics.userSamples += diagnostics.userSamples
        }
    }

    /// The next probe number, for every run of the prober (loop thread).
    func takeProbeNumber() -> UInt32 {
        let number = nextProbeNumber
        nextProbeNumber &+= 1
        return number
    }

    /// The number the last request carried (loop thread).
    var lastProbeNumber: UInt32 { nextProbeNumber &- 1 }
}

/// The receiving side of a prober's sockets, which its runs share (loop thread only): the
/// sockets are watched while any run is on the loop, and each message goes to the run that
/// sent the request it answers (found by the probe number; with one run, that run).
private final class ICMPReceiver: DescriptorOwner {
    private var runs: [ICMPRun] = []

    func join(_ run: ICMPRun, loop: ProbeLoop) throws {
        if runs.isEmpty {
            for socket in run.prober.sockets.values {
                try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue, for: self)
            }
        }
        runs.append(run)
    }

    func leave(_ run: ICMPRun, loop: ProbeLoop?) {
        guard let position = runs.firstIndex(where: { $0 === run }) else { return }
        runs.remove(at: position)
        if runs.isEmpty {
            for socket in run.prober.sockets.values { loop?.unwatch(socket.descriptor.rawValue) }
        }
    }

    /// The run whose request carried `probeNumber`; nil when none of several remembers it.
    /// A lone run (`run`, `ping`) gets everything, as before runs could share the sockets:
    /// its tracker sorts out what is not its own, with no lookup here first.
    private func run(holding probeNumber: UInt32) -> ICMPRun? {
        if runs.count == 1 { return runs[0] }
        return runs.first { $0.tracker.record(probeNumber) != nil }
    }

    func handle(fd: Int32, events: UInt32) throws {
        guard let socket = runs.first?.prober.sockets.values.first(where: { $0.descriptor.rawValue == fd }) else { return }
        // One message per queue and wake-up: epoll is level-triggered, so more queued
        // messages wake the loop again at once, and a lone message (the common case) costs
        // no extra recvmsg that ends in EAGAIN.
        if events & EPOLLERR.rawValue != 0 { try drainErrorQueue(socket, limit: 1) }
        if events & EPOLLIN.rawValue != 0 { try drainReplies(socket, limit: 1) }
    }

    func drainErrorQueue(_ socket: ICMPSocket, limit: Int = 4096) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            switch message {
            case .transmitStamp(let probeNumber, let realtime):
                run(holding: probeNumber)?.tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
            case .icmpError(_, _, let destination, let quoted):
                guard let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                failProbe(sequence: request.sequence, probeNumber: request.cookie == runs.first?.prober.cookie ? request.probeNumber : nil,
                          destination: destination, unreachable: true)
            case .localError(let code, let destination, let quoted):
                guard let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                failProbe(sequence: request.sequence, probeNumber: request.cookie == runs.first?.prober.cookie ? request.probeNumber : nil,
                          destination: destination, unreachable: [ENETUNREACH, EHOSTUNREACH].contains(code))
            case .other:
                continue
            }
        }
    }

    func drainReplies(_ socket: ICMPSocket, limit: Int = 4096) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source, let first = runs.first else { continue }
            switch ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
            case .failure(let rejection):
                first.diagnostics.rejectedPackets[rejection.rawValue, default: 0] += 1
            case .success(.error(let report)):
                if socket.mode == .raw && report.identifier != socket.identifier { continue }
                failProbe(sequence: report.sequence, probeNumber: report.cookie == first.prober.cookie ? report.probeNumber : nil,
                          destination: report.originalDestination, unreachable: true)
            case .success(.reply(let reply)):
                // A reply no run remembers is classified by the first (unknown, foreign).
                let run = run(holding: reply.probeNumber) ?? first
                if run.tracker.needsTransmitStamp(probeNumber: reply.probeNumber) {
                    // The transmit stamp may still sit on the error queue: read it first.
                    try drainErrorQueue(socket)
                }
                run.receive(reply, from: source, on: socket, received: received)
            }
        }
    }

    /// Ends a probe that an ICMP error or a local error answered.
    private func failProbe(sequence: UInt16, probeNumber: UInt32?, destination: IPAddress?, unreachable: Bool) {
        guard let first = runs.first else { return }
        // Without a quoted payload, take the most recent probe with this sequence.
        let last = first.prober.lastProbeNumber
        let candidate = probeNumber ?? (last &- UInt32(UInt16(truncatingIfNeeded: last) &- sequence))
        guard let run = run(holding: candidate), run.failProbe(candidate, destination: destination, unreachable: unreachable) else {
            first.diagnostics.ignoredReplies["unmatched_icmp_error", default: 0] += 1
            return
        }
    }
}

/// The state of one `probe` call, owned by the loop thread.
private final class ICMPRun: RoundRun, LoopTask {
    let prober: ICMPProber
    /// The prober's own gate (`probe`), or this run's (`probeAlongside`).
    let gate: RunGate
    let configuration: ICMPProbeConfiguration
    /// When the late windows of lost probes end, in order (deadlines expire in send order).
    var lateWindows = Deque<(end: Int64, targetIndex: Int)>()
    var tracker: EchoTracker
    var packet: [UInt8] = []
    var diagnostics = ICMPProberDiagnostics()

    init(prober: ICMPProber, gate: RunGate, configuration: ICMPProbeConfiguration, targets: [ProbeTarget], reportingAttempts: Bool,
         continuation: AsyncStream<ProbeEvent>.Continuation) {
        self.prober = prober
        self.gate = gate
        self.configuration = configuration
        // Remembered past the deadline for the late window (one timeout) and a second more,
        // to tell late replies and duplicates from foreign ones; no longer, since at
        // 100,000 targets every record kept costs memory.
        let retention = configuration.timeoutNanoseconds + 1_000_000_000
        tracker = EchoTracker(cookie: prober.cookie, timeoutNanoseconds: configuration.timeoutNanoseconds, retentionNanoseconds: retention)
        tracker.reserveCapacity(configuration.recordsKept(targets: targets.count, retention: retention))
        super.init(kind: .icmp, targets: targets, roundCount: configuration.count, roundInterval: configuration.roundIntervalNanoseconds,
                   reportingAttempts: reportingAttempts, continuation: continuation)
    }

    func attach(to loop: ProbeLoop, now: Int64) throws {
        self.loop = loop
        try prober.receiver.join(self, loop: loop)
        planRounds(now: now, interval: configuration.intervalNanoseconds, timeout: configuration.timeoutNanoseconds,
                   packetsPerSecond: configuration.packetsPerSecond)
    }

    func service(now: Int64) throws {
        applyUpdates(gate.takeUpdates(), now: now)
        checkStop(requested: gate.isStopRequested)
        try sendDue(now: now)
        var lost: [Int] = []
        tracker.expire(nowMonotonic: now) { lost.append($0.targetIndex) }
        for index in lost {
            // A lost probe's reply may still come: wait one more timeout to count it late.
            let windowEnd = now + (configuration.lateWindowNanoseconds ?? configuration.timeoutNanoseconds)
            tallies[index].concluded += 1
            tallies[index].lostAwaitingLate += 1
            tallies[index].lateWindowEnd = windowEnd
            lateWindows.append((windowEnd, index))
        }
        while let first = lateWindows.first, first.end <= now {
            lateWindows.removeFirst()
            tallies.touch(first.targetIndex)
        }
        reportFinished()
        outbox.flush(now: now, force: isFinished)
    }

    var nextWake: Int64? {
        earliest(earliest(schedule.nextWake, tracker.nextDeadline), earliest(outbox.nextFlush, lateWindows.first?.end))
    }

    var isFinished: Bool {
        roundsAreOver && schedule.isEmpty && tallies.unreported == 0
    }

    func detach(error: Error?) {
        if let error {
            prober.logger.error("ICMP probing stopped", metadata: ["error": "\(error)"])
            for index in targets.indices where !tallies[index].reported {
                tallies[index].errors += 1
                report(index)
            }
        }
        prober.receiver.leave(self, loop: loop)
        prober.publish(diagnostics)
        gate.end()
        outbox.flush(now: Clock.monotonicNanoseconds(), force: true)
        // Off the prober's list before the caller resumes: whoever awaited this run sees
        // it gone (and may close the prober).
        prober.runEnded(gate)
        continuation.finish()
    }

    // MARK: sending

    func sendDue(now: Int64) throws {
        while let due = schedule.popDue(now: now) {
            let index = due.targetIndex
            guard isActive(index) else { continue }
            if tallies[index].sent == 0 { tallies[index].slipNanoseconds = cycle.slip(of: index, now: now) }
            guard let address = targets[index].address else {
                markRoundStart(index)
                report(index)
                startNextRound(index, now: now)
                continue
            }
            if try send(to: address, targetIndex: index) {
                if configuration.count == 0 || tallies[index].sent < configuration.count {
                    schedule.scheduleNext(after: due)
                }
            } else {
                // The socket buffer is full: try this target again shortly.
                schedule.retry(index, at: now + 1_000_000)
            }
        }
    }

    /// Sends one request; false when the socket would block.
    func send(to address: IPAddress, targetIndex index: Int) throws -> Bool {
        markRoundStart(index)
        guard let socket = prober.sockets[address.family] else {
            tallies[index].sent += 1
            tallies[index].errors += 1
            tallies[index].concluded += 1
            prober.logger.error("no ICMP socket for the target's address family", metadata: ["target": "\(targets[index].name)"])
            return true
        }
        let probeNumber = prober.takeProbeNumber()
        ICMPEcho.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber,
                               cookie: prober.cookie, payloadLength: configuration.payloadLength, into: &packet)
        let sentAt = Clock.realtimeNanoseconds()
        let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
        do {
            guard case .processed = try socket.send(packet, to: address, probeNumber: probeNumber) else { return false }
        } catch {
            tallies[index].sent += 1
            tallies[index].concluded += 1
            if [ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, EACCES].contains(error.errno) {
                tallies[index].unreachable += 1
            } else {
                tallies[index].errors += 1
            }
            prober.logger.debug("send failed", metadata: ["target": "\(targets[index].name)", "error": "\(error)"])
            return true
        }
        let record = EchoTracker.Record(targetIndex: index, indexInRound: tallies[index].sent, destination: address,
                                        userSentRealtime: sentAt, kernelSentRealtime: nil, deadlineMonotonic: deadline, state: .inFlight)
        tracker.register(probeNumber: probeNumber, record)
        tallies[index].sent += 1
        // Loopback, TUN and most drivers stamp the packet inside sendmsg: read the stamp now
        // rather than on a wake-up of its own.
        try prober.receiver.drainErrorQueue(socket, limit: 1)
        return true
    }

    // MARK: receiving (the prober's receiver hands over what is this run's)

    /// An echo reply that carries one of this run's probe numbers (or no run's).
    func receive(_ reply: ICMPEcho.Reply, from source: IPAddress, on socket: ICMPSocket, received: ICMPSocket.Received) {
        let verdict = tracker.classify(reply, from: source, expectedIdentifier: socket.mode == .raw ? socket.identifier : nil,
                                       expectedPayloadLength: configuration.payloadLength,
                                       kernelReceivedRealtime: received.kernelRealtime, userReceivedRealtime: received.userRealtime)
        handle(verdict, bytes: reply.payloadLength, ttl: reply.ttl ?? received.hopLimit)
    }

    func handle(_ verdict: EchoTracker.Verdict, bytes: Int, ttl: Int?) {
        switch verdict {
        case .received(let record, let rtt, let source):
            let index = record.targetIndex
            let milliseconds = Double(rtt) / 1_000_000
            tallies[index].recordSample(index: record.indexInRound, milliseconds: milliseconds, source: source)
            if source == .kernel { diagnostics.kernelSamples += 1 } else { diagnostics.userSamples += 1 }
            tallies[index].ttl = ttl
            tallies[index].concluded += 1
            if reportingAttempts { continuation.yield(.attempt(AttemptEvent(kind: .icmp, targetIndex: index, target: targets[index], sequence: record.indexInRound + 1,
                                                     outcome: .ok, bytes: bytes, ttl: ttl, rttMilliseconds: milliseconds,
                                                     timestampSource: source, isDuplicate: false))) }
        case .duplicate(let record, let rtt, let source):
            tallies[record.targetIndex].duplicates += 1
            if reportingAttempts { continuation.yield(.attempt(AttemptEvent(kind: .icmp, targetIndex: record.targetIndex, target: targets[record.targetIndex],
                                                     sequence: record.indexInRound + 1, outcome: .ok, bytes: bytes, ttl: ttl,
                                                     rttMilliseconds: Double(rtt) / 1_000_000, timestampSource: source, isDuplicate: true))) }
        case .late(let record, let concludesProbe):
            tallies[record.targetIndex].late += 1
            if concludesProbe {
                tallies[record.targetIndex].concluded += 1
            } else if tallies[record.targetIndex].lostAwaitingLate > 0 {
                // (After a new round began, a late reply of the last one only counts as late.)
                tallies[record.targetIndex].lostAwaitingLate -= 1
            }
        case .ignored(let reason):
            diagnostics.ignoredReplies[reason.rawValue, default: 0] += 1
        }
    }

    /// Ends one of this run's probes that an ICMP error or a local error answered.
    /// - Returns: false when the probe had already concluded or went elsewhere.
    func failProbe(_ probeNumber: UInt32, destination: IPAddress?, unreachable: Bool) -> Bool {
        guard let record = tracker.record(probeNumber), destination == nil || destination == record.destination,
              tracker.fail(probeNumber: probeNumber) != nil else { return false }
        if unreachable { tallies[record.targetIndex].unreachable += 1 } else { tallies[record.targetIndex].errors += 1 }
        tallies[record.targetIndex].concluded += 1
        return true
    }

}
