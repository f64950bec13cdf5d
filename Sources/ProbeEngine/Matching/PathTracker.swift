import ProbeResults
import DequeModule

/// The path probes in flight and the rules that decide what an answer to one is.
///
/// An answer (echo reply, ICMP error quoting a probe, SYN-ACK or RST) concludes a probe
/// only when it names a probe we sent (identifier or source port, cookie, probe number,
/// sequence), about the destination that probe went to, from the right source, within
/// the timeout. Anything else is classified with a stable reason code, never trusted.
/// The socket plumbing stays in `PathRun`; this has no sockets and no clock of its own.
struct PathTracker {
    /// What a probe was sent over: decides the matching rules and which stamps it gets.
    enum Transport: Equatable {
        /// A TTL-limited echo request on the raw ICMP socket (its stamps on that socket).
        case echo
        /// A TTL-limited TCP SYN on the raw TCP socket (its transmit stamp on that socket,
        /// whichever socket the answer comes in on).
        case tcp
    }

    /// A probe we sent.
    struct Probe: Equatable {
        var targetIndex: Int
        var flow: Int
        var ttl: Int
        /// The target's round the probe belongs to (1 for the first).
        var round: Int = 1
        var transport: Transport
        /// Position in the target's send order, to keep RTTs in send order.
        var order: Int
        /// CLOCK_REALTIME read just before the send: the fallback.
        var userSentRealtime: Int64
        /// The kernel's software transmit stamp, once read from the error queue.
        var kernelSentRealtime: Int64?
        /// CLOCK_MONOTONIC instant after which the probe is lost.
        var deadline: Int64
        /// The IP packet's size (headers included) of a don't-fragment probe (`trace
        /// --mtu`), whose payload length varies; nil: `payloadLength` as every probe.
        var size: Int? = nil
    }

    /// Where each target's probes go, to check that an answer is about them.
    struct Destination: Equatable {
        var address: IPAddress?
        /// The TCP port of a SYN trace; nil for echo traces.
        var port: UInt16?
        /// The source address the probes leave from, when one was chosen (`-S`): an answer
        /// about a probe is sent to it and quotes it, else it is about someone else's packet.
        var chosenSource: IPAddress? = nil
    }

    /// Why an answer was ignored. Raw values are stable, for the trace's `ignored` counts;
    /// those shared with `EchoTracker.IgnoredReason` are spelt the same.
    enum IgnoredReason: String, Equatable, CaseIterable {
        case wrongCookie = "wrong_cookie"
        case sequenceMismatch = "sequence_mismatch"
        case wrongLength = "wrong_length"
        case unknownProbe = "unknown_probe"
        case wrongSource = "wrong_source"
        /// An ICMP error quoting our probe sent to another address than the probe's.
        case wrongDestination = "wrong_destination"
        /// An answer to a probe already concluded (answered or timed out), or slower than the timeout.
        case lateOrDuplicate = "late_or_duplicate"
        /// A TCP target of a family without a raw TCP socket.
        case noTCPSocket = "no_tcp_socket"
        /// The send failed: no route.
        case sendUnreachable = "send_unreachable"
        /// The send failed otherwise.
        case sendError = "send_error"
    }

    /// What an answer is about, before it concludes anything.
    enum Match: Equatable {
        /// The answer names this probe; `conclude` decides the rest.
        case probe(UInt32, from: IPAddress, isDestination: Bool, unreachable: UnreachableMark?)
        case ignored(IgnoredReason)
        /// Not about any packet of ours (another prober's identifier, a port we do not
        /// hold): not counted anywhere, the host's other traffic.
        case notOurs
    }

    /// What concluding a probe did.
    enum Verdict: Equatable {
        /// A timely answer: count it at the probe's TTL. `kernelTimed`: the RTT is from the
        /// kernel's stamps at both ends (else from user-space reads at both ends).
        case answered(Probe, rttNanoseconds: Int64, from: IPAddress, isDestination: Bool, unreachable: UnreachableMark?, kernelTimed: Bool)
        /// An unreachable for a probe whose timeout passed, within `unreachableWindowNanoseconds`
        /// of its send: the path's ending (a router's neighbour lookup gave up), not a reply.
        case lateUnreachable(Probe, from: IPAddress, mark: UnreachableMark)
        case ignored(IgnoredReason)
    }

    /// How long after a probe's send an unreachable still names the path's ending: a Linux
    /// router that cannot resolve the next hop answers after its neighbour lookup gives up
    /// (3 solicitations 1 s apart: about 3 s); 4 s leaves a second for the way back.
    static let unreachableWindowNanoseconds: Int64 = 4_000_000_000

    let cookie: UInt64
    let payloadLength: Int
    let timeoutNanoseconds: Int64
    /// How long a concluded probe is remembered, to tell late answers from foreign ones.
    let retentionNanoseconds: Int64
    let destinations: [Destination]

    private(set) var inFlight: [UInt32: Probe] = [:]
    /// Every probe's deadline, in send order (answered ones stay until then: the loop wakes).
    private var deadlines = Deque<(deadline: Int64, probeNumber: UInt32)>()
    /// Probes recently concluded, and whether they were answered (an expired one may still
    /// get a late unreachable).
    private var recent: [UInt32: (probe: Probe, answered: Bool)] = [:]
    private var recentOrder = Deque<(forgetAt: Int64, probeNumber: UInt32)>()
    /// The last probe number sent: an 8-byte quote names only the sequence.
    private(set) var lastProbeNumber: UInt32 = 0
    /// Ignored answers and failed sends per reason code.
    private(set) var ignored: [String: Int] = [:]

    init(cookie: UInt64, payloadLength: Int, timeoutNanoseconds: Int64, retentionNanoseconds: Int64? = nil, destinations: [Destination]) {
        self.cookie = cookie
        self.payloadLength = payloadLength
        self.timeoutNanoseconds = timeoutNanoseconds
        self.retentionNanoseconds = retentionNanoseconds ?? max(timeoutNanoseconds, Self.unreachableWindowNanoseconds) + 1_000_000_000
        self.destinations = destinations
    }

    var nextDeadline: Int64? { deadlines.first?.deadline }
    var hasProbesInFlight: Bool { !inFlight.isEmpty }

    // MARK: sending

    /// Remembers a probe that just left.
    mutating func register(probeNumber: UInt32, _ probe: Probe) {
        lastProbeNumber = probeNumber
        inFlight[probeNumber] = probe
        deadlines.append((probe.deadline, probeNumber))
    }

    mutating func count(_ reason: IgnoredReason) {
        ignored[reason.rawValue, default: 0] += 1
    }

    /// Counts a packet the decoder rejected, under `rejected_<code>`.
    mutating func countRejected(_ code: String) {
        ignored["rejected_\(code)", default: 0] += 1
    }

    mutating func recordTransmitStamp(probeNumber: UInt32, realtime: Int64) {
        inFlight[probeNumber]?.kernelSentRealtime = realtime
    }

    /// True for a probe still in flight (echo request or SYN) whose transmit stamp has not
    /// come back: read its socket's error queue before concluding it.
    func needsTransmitStamp(probeNumber: UInt32) -> Bool {
        guard let probe = inFlight[probeNumber] else { return false }
        return probe.kernelSentRealtime == nil
    }

    // MARK: matching

    private func probe(_ probeNumber: UInt32) -> Probe? {
        inFlight[probeNumber] ?? recent[probeNumber]?.probe
    }

    /// An echo reply on the ICMP socket.
    /// - Parameter identifier: our echo identifier on that socket.
    /// - Parameter destination: which of our addresses it was sent to (IP_PKTINFO /
    ///   IPV6_PKTINFO), checked against the probe's chosen source when it chose one.
    func match(echoReply reply: ICMPEcho.Reply, from source: IPAddress, to destination: IPAddress? = nil, identifier: UInt16) -> Match {
        guard reply.identifier == identifier else { return .notOurs }  // another prober's, or ping's
        guard reply.cookie == cookie else { return .ignored(.wrongCookie) }
        guard reply.sequence == UInt16(truncatingIfNeeded: reply.probeNumber) else { return .ignored(.sequenceMismatch) }
        guard reply.payloadLength == expectedPayloadLength(reply.probeNumber) else { return .ignored(.wrongLength) }
        if let probe = probe(reply.probeNumber), let chosen = destinations[probe.targetIndex].chosenSource, destination != chosen {
            return .ignored(.wrongDestination)
        }
        return .probe(reply.probeNumber, from: source, isDestination: true, unreachable: nil)
    }

    /// The echo payload a reply to `probeNumber` carries: the configured one, or what a
    /// don't-fragment probe's size leaves after the IP and ICMP headers.
    private func expectedPayloadLength(_ probeNumber: UInt32) -> Int {
        guard let probe = probe(probeNumber), let size = probe.size, let family = destinations[probe.targetIndex].address?.family else { return payloadLength }
        return PathMTUSearch.payloadLength(size: size, family: family)
    }

    /// Whether an ICMP error about a probe of `targetIndex` was sent to, and quotes, the
    /// source the probe chose (always true when it chose none).
    private func agreesWithChosenSource(_ report: PathPacket.ErrorReport, to destination: IPAddress?, targetIndex: Int) -> Bool {
        guard let chosen = destinations[targetIndex].chosenSource else { return true }
        return report.quotedSource == chosen && (destination == nil || destination == chosen)
    }

    /// An ICMP error (time exceeded, unreachable) quoting one of our echo requests or SYNs.
    /// - Parameters:
    ///   - identifier: our echo identifier on the socket it came in on.
    ///   - tcpPorts: the source ports of our SYNs (one per flow) in that family; nil without a TCP socket.
    ///   - destination: which of our addresses it was sent to, when the socket says.
    func match(error report: PathPacket.ErrorReport, from source: IPAddress, to destination: IPAddress? = nil, identifier: UInt16, tcpPorts: [UInt16]?) -> Match {
        switch report.probe {
        case .tcp(let sourcePort, let destinationPort, let sequence):
            guard let ports = tcpPorts, ports.contains(sourcePort) else { return .notOurs }
            guard let probe = probe(sequence), destinations[probe.targetIndex].port == destinationPort,
                  ports[probe.flow % ports.count] == sourcePort else { return .ignored(.unknownProbe) }
            let address = destinations[probe.targetIndex].address
            guard report.quotedDestination == address, agreesWithChosenSource(report, to: destination, targetIndex: probe.targetIndex) else {
                return .ignored(.wrongDestination)
            }
            // The destination's own port unreachable is a closed port (as a RST would say);
            // every other unreachable ends the path.
            let mark = report.kind == .unreachable ? UnreachableMark(family: source.family, code: report.code) : nil
            let closedPort = source == address && mark?.isPortUnreachable == true
            let isDestination = closedPort || (source == address && report.kind != .timeExceeded && mark == nil)
            return .probe(sequence, from: source, isDestination: isDestination, unreachable: closedPort ? nil : mark)
        case .echo(let quotedIdentifier, let sequence, let quotedCookie, let quotedNumber):
            guard quotedIdentifier == identifier else { return .notOurs }
            if let quotedCookie, quotedCookie != cookie { return .ignored(.wrongCookie) }
            // Without a quoted payload (8-byte quotes), the most recent probe with this sequence.
            let probeNumber = quotedNumber ?? (lastProbeNumber &- UInt32(UInt16(truncatingIfNeeded: lastProbeNumber) &- sequence))
            guard UInt16(truncatingIfNeeded: probeNumber) == sequence else { return .ignored(.sequenceMismatch) }
            guard let probe = probe(probeNumber) else { return .ignored(.unknownProbe) }
            let address = destinations[probe.targetIndex].address
            guard report.quotedDestination == address, agreesWithChosenSource(report, to: destination, targetIndex: probe.targetIndex) else {
                return .ignored(.wrongDestination)
            }
            // An unreachable is never a reply, not even from the destination itself (a
            // firewall there rejecting echo): it ends the path.
            let mark = report.kind == .unreachable ? UnreachableMark(family: source.family, code: report.code) : nil
            return .probe(probeNumber, from: source, isDestination: source == address && report.kind != .timeExceeded && mark == nil, unreachable: mark)
        }
    }

    /// A SYN-ACK or RST on the raw TCP socket: it acknowledges our SYN's sequence, the probe number.
    /// - Parameter ports: the source ports of our SYNs in that family, one per flow.
    func match(tcpAnswer answer: PathTCPSegment.Answer, from source: IPAddress, ports: [UInt16]) -> Match {
        guard ports.contains(answer.destinationPort) else { return .notOurs }  // every TCP segment of the host comes here
        let probeNumber = answer.acknowledgment &- 1
        guard let probe = probe(probeNumber) else { return .ignored(.unknownProbe) }
        let destination = destinations[probe.targetIndex]
        guard destination.address == source, destination.port == answer.sourcePort,
              ports[probe.flow % ports.count] == answer.destinationPort else { return .ignored(.wrongSource) }
        return .probe(probeNumber, from: source, isDestination: true, unreachable: nil)
    }

    // MARK: concluding

    /// Concludes the probe an answer named.
    /// - Parameters:
    ///   - kernelReceivedRealtime: the RX stamp; used only when the probe has a TX stamp
    ///     (kernel stamps at both ends, or user-space reads at both: never one of each).
    ///   - userReceivedRealtime: CLOCK_REALTIME read right after the read.
    ///   - nowMonotonic: when the probe starts to be remembered as concluded.
    mutating func conclude(_ probeNumber: UInt32, from source: IPAddress, isDestination: Bool, unreachable: UnreachableMark?,
                           kernelReceivedRealtime: Int64?, userReceivedRealtime: Int64, nowMonotonic: Int64) -> Verdict {
        guard let probe = inFlight[probeNumber] else {
            guard let past = recent[probeNumber] else { return .ignored(.unknownProbe) }
            let sent = past.probe.kernelSentRealtime ?? past.probe.userSentRealtime
            if let unreachable, !past.answered, userReceivedRealtime - sent <= Self.unreachableWindowNanoseconds {
                recent[probeNumber]?.answered = true
                return .lateUnreachable(past.probe, from: source, mark: unreachable)
            }
            return .ignored(.lateOrDuplicate)
        }
        // An echo reply or SYN-ACK must come from the target itself.
        if isDestination && unreachable == nil && source != destinations[probe.targetIndex].address { return .ignored(.wrongSource) }
        let rtt: Int64
        let kernelTimed: Bool
        if let sent = probe.kernelSentRealtime, let arrived = kernelReceivedRealtime, arrived >= sent {
            (rtt, kernelTimed) = (arrived - sent, true)
        } else {
            (rtt, kernelTimed) = (max(0, userReceivedRealtime - probe.userSentRealtime), false)
        }
        inFlight[probeNumber] = nil
        remember(probeNumber, probe, answered: true, now: nowMonotonic)
        if rtt > timeoutNanoseconds {
            if let unreachable { return .lateUnreachable(probe, from: source, mark: unreachable) }
            return .ignored(.lateOrDuplicate)
        }
        return .answered(probe, rttNanoseconds: rtt, from: source, isDestination: isDestination, unreachable: unreachable, kernelTimed: kernelTimed)
    }

    /// Ends the probes past their deadline (their answers are late from now on) and
    /// forgets concluded probes past the retention.
    /// - Returns: the probes that expired unanswered now.
    @discardableResult
    mutating func expire(nowMonotonic now: Int64) -> [Probe] {
        var expired: [Probe] = []
        while let first = deadlines.first, first.deadline <= now {
            deadlines.removeFirst()
            if let probe = inFlight.removeValue(forKey: first.probeNumber) {
                remember(first.probeNumber, probe, answered: false, now: now)
                expired.append(probe)
            }
        }
        while let first = recentOrder.first, first.forgetAt <= now {
            recentOrder.removeFirst()
            recent[first.probeNumber] = nil
        }
        return expired
    }

    private mutating func remember(_ probeNumber: UInt32, _ probe: Probe, answered: Bool, now: Int64) {
        recent[probeNumber] = (probe, answered)
        recentOrder.append((now + retentionNanoseconds, probeNumber))
    }
}
