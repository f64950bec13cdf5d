import CSystemShims
import Foundation
import HeapModule
import Logging
#if canImport(Glibc)
import Glibc
#endif

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

/// The ICMP echo prober: one event-loop thread, one socket per address family shared by
/// every target, sends spread evenly, kernel timestamps, strict reply matching.
///
/// Use: `init` opens the sockets (the only step that needs CAP_NET_RAW, so privileges can
/// be dropped right after), `probe(_:)` starts the loop and returns the stream of events,
/// `stop()` ends it early. One prober runs one `probe` call.
public final class ICMPProber: @unchecked Sendable {
    public let configuration: ICMPProbeConfiguration
    private let logger: Logger
    private var sockets: [AddressFamily: ICMPSocket] = [:]
    private let loop: EventLoop
    private let cookie: UInt64
    private var nextProbeNumber: UInt32

    private let lock = NSLock()
    private var stopRequested = false
    private var loopRunning = false
    private var lockedDiagnostics = ICMPProberDiagnostics()

    /// The mode each opened socket ended up in (raw with CAP_NET_RAW, else datagram).
    public var socketModes: [AddressFamily: ICMPSocketMode] { sockets.mapValues(\.mode) }

    /// What the prober rejected or ignored so far.
    public var diagnostics: ICMPProberDiagnostics {
        lock.lock()
        defer { lock.unlock() }
        return lockedDiagnostics
    }

    /// Prepares a prober on sockets opened earlier (see `ICMPSocketSet.open`), so that
    /// the process can drop its privileges between opening them and probing.
    /// - Parameters:
    ///   - sockets: the ICMP sockets; the prober owns them from now on and closes them.
    ///   - configuration: counts, timing, sizes.
    ///   - logger: where the prober reports what it does.
    /// - Throws: `SystemCallError` when the event loop cannot be created.
    public init(sockets: ICMPSocketSet, configuration: ICMPProbeConfiguration, logger: Logger) throws {
        precondition(configuration.payloadLength >= ICMPEcho.minimumPayloadLength)
        self.configuration = configuration
        self.logger = logger
        self.sockets = sockets.take()
        var generator = SystemRandomNumberGenerator()
        cookie = generator.next()
        nextProbeNumber = generator.next()
        do {
            loop = try EventLoop()
            for socket in self.sockets.values {
                try loop.register(socket.descriptor.rawValue, events: EPOLLIN.rawValue)
            }
        } catch {
            for socket in self.sockets.values { try? socket.close() }
            throw error
        }
    }

    /// Starts probing `targets` on the prober's own thread.
    /// - Returns: replies as they arrive and one round result per target; the stream
    ///   finishes when every target's round is complete (or after `stop()`).
    public func probe(_ targets: [ProbeTarget]) -> AsyncStream<ICMPProbeEvent> {
        let (stream, continuation) = AsyncStream<ICMPProbeEvent>.makeStream(bufferingPolicy: .unbounded)
        lock.lock()
        precondition(!loopRunning, "an ICMPProber runs one probe call")
        loopRunning = true
        lock.unlock()
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.stop() }
        }
        let thread = Thread { [self] in
            var run = Run(prober: self, targets: targets, continuation: continuation)
            run.loop()
            for socket in sockets.values { try? socket.close() }
            lock.lock()
            loopRunning = false
            loop.close()
            lock.unlock()
            continuation.finish()
        }
        thread.name = "netprobe-icmp"
        thread.start()
        return stream
    }

    /// Stops sending. Probes in flight still get their timeout to answer, then every
    /// unfinished round is reported and the stream finishes. Safe from any thread.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        stopRequested = true
        if loopRunning { loop.wake() }
    }

    fileprivate var isStopRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopRequested
    }

    fileprivate func updateDiagnostics(_ body: (inout ICMPProberDiagnostics) -> Void) {
        lock.lock()
        body(&lockedDiagnostics)
        lock.unlock()
    }

    fileprivate func takeProbeNumber() -> UInt32 {
        let number = nextProbeNumber
        nextProbeNumber &+= 1
        return number
    }

    /// The state of one `probe` call, owned by the loop thread.
    private struct Run {
        struct Due: Comparable {
            var instant: Int64
            var targetIndex: Int
            static func < (lhs: Due, rhs: Due) -> Bool {
                (lhs.instant, lhs.targetIndex) < (rhs.instant, rhs.targetIndex)
            }
        }

        struct TargetState {
            var sent = 0
            var concluded = 0
            var received = 0
            var duplicates = 0
            var late = 0
            var unreachable = 0
            var errors = 0
            var samples: [(index: Int, milliseconds: Double)] = []
            var kernelSamples = 0
            var userSamples = 0
            var ttl: Int?
            var startTime: Date?
            var reported = false
        }

        let prober: ICMPProber
        let targets: [ProbeTarget]
        let continuation: AsyncStream<ICMPProbeEvent>.Continuation
        let configuration: ICMPProbeConfiguration
        var states: [TargetState]
        var schedule = Heap<Due>()
        var tracker: EchoTracker
        var packet: [UInt8] = []
        var nextSendSlot: Int64
        let spacing: Int64
        var stopping = false
        var diagnostics = ICMPProberDiagnostics()
        var lastProbeNumber: UInt32 = 0

        init(prober: ICMPProber, targets: [ProbeTarget], continuation: AsyncStream<ICMPProbeEvent>.Continuation) {
            self.prober = prober
            self.targets = targets
            self.continuation = continuation
            configuration = prober.configuration
            states = Array(repeating: TargetState(), count: targets.count)
            let retention = max(5_000_000_000, 10 * configuration.timeoutNanoseconds)
            tracker = EchoTracker(cookie: prober.cookie, timeoutNanoseconds: configuration.timeoutNanoseconds, retentionNanoseconds: retention)
            // Spread the first sends evenly over one interval, never faster than the rate.
            let probed = targets.filter { $0.address != nil }.count
            let rateSpacing = Int64(1_000_000_000 / configuration.packetsPerSecond)
            spacing = max(1, rateSpacing)
            let phaseStep = max(rateSpacing, probed > 0 ? configuration.intervalNanoseconds / Int64(probed) : 0)
            let start = Clock.monotonicNanoseconds()
            nextSendSlot = start
            var phase: Int64 = 0
            for (index, target) in targets.enumerated() {
                if target.address == nil { continue }
                schedule.insert(Due(instant: start + phase, targetIndex: index))
                phase += phaseStep
            }
        }

        mutating func loop() {
            for index in targets.indices where targets[index].address == nil {
                states[index].startTime = Date()
                report(index)
            }
            do {
                while true {
                    if !stopping && prober.isStopRequested {
                        stopping = true
                        schedule = Heap()
                    }
                    let now = Clock.monotonicNanoseconds()
                    try sendDue(now: now)
                    var lost: [Int] = []
                    tracker.expire(nowMonotonic: now) { lost.append($0.targetIndex) }
                    for index in lost { conclude(index) }
                    reportFinished()
                    if isDone { break }
                    try prober.loop.armTimer(atMonotonic: nextWake)
                    let readiness = try prober.loop.wait()
                    for (fd, events) in readiness.ready {
                        guard let socket = prober.sockets.values.first(where: { $0.descriptor.rawValue == fd }) else { continue }
                        if events & EPOLLERR.rawValue != 0 { try drainErrorQueue(socket) }
                        if events & EPOLLIN.rawValue != 0 { try drainReplies(socket) }
                    }
                }
            } catch {
                prober.logger.error("ICMP event loop failed", metadata: ["error": "\(error)"])
                for index in targets.indices where !states[index].reported {
                    states[index].errors += 1
                    report(index)
                }
            }
            let diagnostics = self.diagnostics
            prober.updateDiagnostics { $0 = diagnostics }
        }

        var nextWake: Int64? {
            let send = schedule.min.map { max($0.instant, nextSendSlot) }
            switch (send, tracker.nextDeadline) {
            case (let send?, let deadline?): return min(send, deadline)
            case (let send?, nil): return send
            case (nil, let deadline?): return deadline
            case (nil, nil): return nil
            }
        }

        var isDone: Bool {
            schedule.isEmpty && tracker.nextDeadline == nil && !states.contains { !$0.reported }
        }

        // MARK: sending

        mutating func sendDue(now: Int64) throws {
            while let due = schedule.min, max(due.instant, nextSendSlot) <= now {
                _ = schedule.removeMin()
                let slot = max(due.instant, nextSendSlot)
                nextSendSlot = slot + spacing
                let index = due.targetIndex
                guard let address = targets[index].address else { continue }
                if try send(to: address, targetIndex: index) {
                    if configuration.count == 0 || states[index].sent < configuration.count {
                        schedule.insert(Due(instant: due.instant + configuration.intervalNanoseconds, targetIndex: index))
                    }
                } else {
                    // The socket buffer is full: try this target again shortly.
                    schedule.insert(Due(instant: now + 1_000_000, targetIndex: index))
                }
            }
        }

        /// Sends one request; false when the socket would block.
        mutating func send(to address: IPAddress, targetIndex index: Int) throws -> Bool {
            if states[index].startTime == nil { states[index].startTime = Date() }
            guard let socket = prober.sockets[address.family] else {
                states[index].sent += 1
                states[index].errors += 1
                states[index].concluded += 1
                prober.logger.error("no socket for the target's address family", metadata: ["target": "\(targets[index].name)"])
                return true
            }
            let probeNumber = prober.takeProbeNumber()
            lastProbeNumber = probeNumber
            ICMPEcho.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber,
                                   cookie: prober.cookie, payloadLength: configuration.payloadLength, into: &packet)
            let sentAt = Clock.realtimeNanoseconds()
            let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
            do {
                guard case .processed = try socket.send(packet, to: address, probeNumber: probeNumber) else { return false }
            } catch {
                states[index].sent += 1
                states[index].concluded += 1
                if [ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, EACCES].contains(error.errno) {
                    states[index].unreachable += 1
                } else {
                    states[index].errors += 1
                }
                prober.logger.debug("send failed", metadata: ["target": "\(targets[index].name)", "error": "\(error)"])
                return true
            }
            let record = EchoTracker.Record(targetIndex: index, indexInRound: states[index].sent, destination: address,
                                            userSentRealtime: sentAt, kernelSentRealtime: nil, deadlineMonotonic: deadline, state: .inFlight)
            tracker.register(probeNumber: probeNumber, record)
            states[index].sent += 1
            return true
        }

        // MARK: receiving

        mutating func drainErrorQueue(_ socket: ICMPSocket) throws {
            for _ in 0..<4096 {
                guard let message = try socket.receiveError() else { return }
                switch message {
                case .transmitStamp(let probeNumber, let realtime):
                    tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
                case .icmpError(let type, _, let destination, let quoted):
                    guard let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                    failProbe(sequence: request.sequence, probeNumber: request.cookie == prober.cookie ? request.probeNumber : nil,
                              destination: destination, unreachable: true, icmpType: type)
                case .localError(let code, let destination, let quoted):
                    guard let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                    let unreachable = [ENETUNREACH, EHOSTUNREACH].contains(code)
                    failProbe(sequence: request.sequence, probeNumber: request.cookie == prober.cookie ? request.probeNumber : nil,
                              destination: destination, unreachable: unreachable, icmpType: nil)
                case .other:
                    continue
                }
            }
        }

        mutating func drainReplies(_ socket: ICMPSocket) throws {
            for _ in 0..<4096 {
                guard let received = try socket.receive() else { return }
                guard let source = received.source else { continue }
                switch ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                case .failure(let rejection):
                    diagnostics.rejectedPackets[rejection.rawValue, default: 0] += 1
                case .success(.error(let report)):
                    if socket.mode == .raw && report.identifier != socket.identifier { continue }
                    failProbe(sequence: report.sequence, probeNumber: report.cookie == prober.cookie ? report.probeNumber : nil,
                              destination: report.originalDestination, unreachable: true, icmpType: report.type)
                case .success(.reply(let reply)):
                    if tracker.needsTransmitStamp(probeNumber: reply.probeNumber) {
                        // The transmit stamp may still sit on the error queue: read it first.
                        try drainErrorQueue(socket)
                    }
                    let verdict = tracker.classify(reply, from: source, expectedIdentifier: socket.mode == .raw ? socket.identifier : nil,
                                                   expectedPayloadLength: configuration.payloadLength,
                                                   kernelReceivedRealtime: received.kernelRealtime, userReceivedRealtime: received.userRealtime)
                    handle(verdict, bytes: reply.payloadLength, ttl: reply.ttl ?? received.hopLimit)
                }
            }
        }

        mutating func handle(_ verdict: EchoTracker.Verdict, bytes: Int, ttl: Int?) {
            switch verdict {
            case .received(let record, let rtt, let source):
                let index = record.targetIndex
                let milliseconds = Double(rtt) / 1_000_000
                states[index].received += 1
                states[index].samples.append((record.indexInRound, milliseconds))
                if source == .kernel { states[index].kernelSamples += 1; diagnostics.kernelSamples += 1 } else { states[index].userSamples += 1; diagnostics.userSamples += 1 }
                states[index].ttl = ttl
                conclude(index)
                continuation.yield(.reply(ICMPReplyEvent(targetIndex: index, target: targets[index], sequence: record.indexInRound + 1, bytes: bytes,
                                                         ttl: ttl, rttMilliseconds: milliseconds, timestampSource: source, isDuplicate: false)))
            case .duplicate(let record, let rtt, let source):
                states[record.targetIndex].duplicates += 1
                continuation.yield(.reply(ICMPReplyEvent(targetIndex: record.targetIndex, target: targets[record.targetIndex], sequence: record.indexInRound + 1,
                                                         bytes: bytes, ttl: ttl, rttMilliseconds: Double(rtt) / 1_000_000, timestampSource: source, isDuplicate: true)))
            case .late(let record, let concludesProbe):
                states[record.targetIndex].late += 1
                if concludesProbe { conclude(record.targetIndex) }
            case .ignored(let reason):
                diagnostics.ignoredReplies[reason.rawValue, default: 0] += 1
            }
        }

        /// Ends a probe that an ICMP error or a local error answered.
        mutating func failProbe(sequence: UInt16, probeNumber: UInt32?, destination: IPAddress?, unreachable: Bool, icmpType: UInt8?) {
            // Without a quoted payload, find the most recent probe with this sequence.
            let candidate = probeNumber ?? (lastProbeNumber &- UInt32(UInt16(truncatingIfNeeded: lastProbeNumber) &- sequence))
            guard let record = tracker.records[candidate], destination == nil || destination == record.destination,
                  tracker.fail(probeNumber: candidate) != nil else {
                diagnostics.ignoredReplies["unmatched_icmp_error", default: 0] += 1
                return
            }
            if unreachable { states[record.targetIndex].unreachable += 1 } else { states[record.targetIndex].errors += 1 }
            conclude(record.targetIndex)
        }

        // MARK: rounds

        mutating func conclude(_ index: Int) {
            states[index].concluded += 1
        }

        mutating func reportFinished() {
            for index in states.indices where !states[index].reported {
                let state = states[index]
                let allSent = stopping || (configuration.count > 0 && state.sent >= configuration.count)
                if allSent && state.concluded >= state.sent { report(index) }
            }
        }

        mutating func report(_ index: Int) {
            let state = states[index]
            states[index].reported = true
            let rtts = state.samples.sorted { $0.index < $1.index }.map(\.milliseconds)
            let outcome: ProbeOutcome
            if targets[index].address == nil {
                outcome = .unresolved
            } else if state.received > 0 {
                outcome = .ok
            } else if state.unreachable > 0 {
                outcome = .unreachable
            } else if state.errors > 0 {
                outcome = .error
            } else {
                outcome = .timeout
            }
            let loss = state.sent > 0 ? Double(state.sent - state.received) / Double(state.sent) * 100 : 100
            continuation.yield(.round(ICMPRoundResult(
                targetIndex: index, target: targets[index], startTime: state.startTime ?? Date(),
                sent: state.sent, received: state.received, duplicates: state.duplicates, late: state.late,
                unreachable: state.unreachable, errors: state.errors, lossPercent: loss,
                statistics: RTTStatistics(samples: rtts), rttsMilliseconds: rtts, ttl: state.ttl,
                kernelTimestamps: state.kernelSamples, userTimestamps: state.userSamples, outcome: outcome)))
        }
    }
}
