import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The state of one `probe` call, owned by the loop thread.
final class ICMPRun: RoundRun, LoopTask {
    let prober: ICMPProber
    /// The prober's own gate (`probe`), or this run's (`probeAlongside`).
    let gate: RunGate
    let configuration: ICMPProbeConfiguration
    /// When the late windows of lost probes end, in order (deadlines expire in send order).
    var lateWindows = Deque<(end: Int64, targetIndex: Int)>()
    var tracker: EchoTracker
    var packet: [UInt8] = []
    var diagnostics = ICMPProberDiagnostics()
    /// Interface indices by name (if_nametoindex costs a socket and an ioctl: once per name).
    var interfaceIndexes: [String: UInt32] = [:]

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
        let fragmentation = targets[index].options.fragmentation
        guard let socket = prober.socket(for: address.family, fragmentation: fragmentation) else {
            tallies[index].sent += 1
            tallies[index].errors += 1
            tallies[index].concluded += 1
            prober.logger.error(fragmentation == nil ? "no ICMP socket for the target's address family" : "no ICMP socket for the target's don't-fragment choice",
                                metadata: ["target": "\(targets[index].name)"])
            return true
        }
        let options: SendOptions
        do {
            options = try sendOptions(for: index, family: address.family)
        } catch {
            tallies[index].sent += 1
            tallies[index].errors += 1
            tallies[index].concluded += 1
            prober.logger.debug("cannot send", metadata: ["target": "\(targets[index].name)", "error": "\(error)"])
            return true
        }
        let probeNumber = prober.takeProbeNumber()
        ICMPEcho.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber,
                               cookie: prober.cookie, payloadLength: configuration.payloadLength, into: &packet)
        let sentAt = Clock.realtimeNanoseconds()
        let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
        do {
            guard case .processed = try socket.send(packet, to: address, probeNumber: probeNumber, options: options) else { return false }
        } catch {
            tallies[index].sent += 1
            tallies[index].concluded += 1
            if error.errno == EMSGSIZE && socket.fragmentation?.setsDontFragment == true {
                // Larger than the outgoing interface carries, with DF: the answer is here.
                let mtu = prober.receiver.takeLocalMTU(socket)
                tallies[index].recordTooBig(mtu: mtu)
                reportTooBig(index: index, sequence: tallies[index].sent, mtu: mtu, reportedBy: nil)
                return true
            }
            if [ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, EACCES].contains(error.errno) {
                tallies[index].unreachable += 1
            } else {
                tallies[index].errors += 1
            }
            prober.logger.debug("send failed", metadata: ["target": "\(targets[index].name)", "error": "\(error)"])
            return true
        }
        let record = EchoTracker.Record(targetIndex: index, indexInRound: tallies[index].sent, destination: address, chosenSource: options.source,
                                        userSentRealtime: sentAt, kernelSentRealtime: nil, deadlineMonotonic: deadline, state: .inFlight)
        tracker.register(probeNumber: probeNumber, record)
        tallies[index].sent += 1
        // Loopback, TUN and most drivers stamp the packet inside sendmsg: read the stamp now
        // rather than on a wake-up of its own.
        try prober.receiver.drainErrorQueue(socket, limit: 1)
        return true
    }

    /// The target's packet options for a send (`.none`, at no cost, for a target without any).
    func sendOptions(for index: Int, family: AddressFamily) throws(SendOptions.Failure) -> SendOptions {
        let options = targets[index].options
        guard !options.isDefault else { return .none }
        return try SendOptions(options, family: family) { name in
            if let known = interfaceIndexes[name] { return known }
            let found = SendOptions.systemInterfaceIndex(name)
            if found != 0 { interfaceIndexes[name] = found }
            return found
        }
    }

    // MARK: receiving (the prober's receiver hands over what is this run's)

    /// An echo reply that carries one of this run's probe numbers (or no run's).
    func receive(_ reply: ICMPEcho.Reply, from source: IPAddress, on socket: ICMPSocket, received: ICMPSocket.Received) {
        let verdict = tracker.classify(reply, from: source, to: received.destination, expectedIdentifier: socket.mode == .raw ? socket.identifier : nil,
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

    /// What ended a probe without a reply.
    enum Failure {
        case unreachable
        case error
        /// Don't-fragment: a router's "fragmentation needed" / "packet too big" (`reportedBy`
        /// its address), or this host's EMSGSIZE (nil).
        case tooBig(mtu: Int?, reportedBy: IPAddress?)
    }

    /// Ends one of this run's probes that an ICMP error or a local error answered.
    /// - Returns: false when the probe had already concluded or went elsewhere.
    func failProbe(_ probeNumber: UInt32, destination: IPAddress?, failure: Failure) -> Bool {
        guard let record = tracker.record(probeNumber), destination == nil || destination == record.destination,
              tracker.fail(probeNumber: probeNumber) != nil else { return false }
        let index = record.targetIndex
        switch failure {
        case .unreachable: tallies[index].unreachable += 1
        case .error: tallies[index].errors += 1
        case .tooBig(let mtu, let reportedBy):
            tallies[index].recordTooBig(mtu: mtu)
            reportTooBig(index: index, sequence: record.indexInRound + 1, mtu: mtu, reportedBy: reportedBy)
        }
        tallies[index].concluded += 1
        return true
    }

    /// The attempt event of a don't-fragment probe answered "too big" (ping's
    /// "Frag needed and DF set (mtu = 1400)" line).
    func reportTooBig(index: Int, sequence: Int, mtu: Int?, reportedBy: IPAddress?) {
        guard reportingAttempts else { return }
        var event = AttemptEvent(kind: .icmp, targetIndex: index, target: targets[index], sequence: sequence, outcome: .tooBig, isDuplicate: false)
        event.mtu = mtu
        event.reportedBy = reportedBy
        continuation.yield(.attempt(event))
    }

}
