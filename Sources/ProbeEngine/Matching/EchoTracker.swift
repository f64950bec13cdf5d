import DequeModule
import ProbeResults

/// The probes in flight and the rules that decide what an incoming reply is.
///
/// A reply counts as received only when its identifier (raw sockets), cookie, probe
/// number, sequence, length and source address all match a probe we sent (and, when the
/// probe chose its source address, the reply's destination is that address), and it came
/// back within the timeout. Anything else is classified, never trusted.
struct EchoTracker {
    /// One probe we sent. Laid out for size, the 8-byte fields first: 88 bytes a record
    /// (64 before the chosen source joined), and at 10,000 probes a second some 20,000
    /// are kept (timeout plus retention).
    struct Record: Equatable {
        /// CLOCK_REALTIME read just before sendmsg.
        var userSentRealtime: Int64
        private var kernelSent: Int64
        /// CLOCK_MONOTONIC instant after which the probe is lost.
        var deadlineMonotonic: Int64
        /// 0-based position of the probe in its target's round.
        var indexInRound: Int
        var destination: IPAddress
        /// The source address the probe was sent from when the target chose one: its reply
        /// must come back to that address. nil: any of ours (the route chose).
        var chosenSource: IPAddress?
        /// Set by `register`.
        fileprivate(set) var probeNumber: UInt32 = 0
        private var target: UInt32
        var state: State

        init(targetIndex: Int, indexInRound: Int, destination: IPAddress, chosenSource: IPAddress? = nil, userSentRealtime: Int64, kernelSentRealtime: Int64?,
             deadlineMonotonic: Int64, state: State) {
            self.chosenSource = chosenSource
            self.userSentRealtime = userSentRealtime
            kernelSent = kernelSentRealtime ?? Self.noStamp
            self.deadlineMonotonic = deadlineMonotonic
            self.indexInRound = indexInRound
            self.destination = destination
            target = UInt32(targetIndex)
            self.state = state
        }

        private static let noStamp = Int64.min

        var targetIndex: Int { Int(target) }

        /// The kernel's software transmit stamp, once it has come back on the error queue.
        var kernelSentRealtime: Int64? {
            get { kernelSent == Self.noStamp ? nil : kernelSent }
            set { kernelSent = newValue ?? Self.noStamp }
        }
    }

    enum State: Equatable {
        case inFlight
        case answered
        /// Timed out; a reply after this is late.
        case lost
        /// A reply came after the timeout; more copies are duplicates.
        case answeredLate
        /// An ICMP error or a send failure ended it.
        case failed
    }

    /// Why a reply was ignored. Raw values are stable, for counters and logs.
    enum IgnoredReason: String, Equatable, CaseIterable {
        case wrongIdentifier = "wrong_identifier"
        case wrongCookie = "wrong_cookie"
        case unknownProbe = "unknown_probe"
        case sequenceMismatch = "sequence_mismatch"
        case wrongSource = "wrong_source"
        /// The probe chose its source address and the reply came to another of ours (or the
        /// kernel did not say which: IP_PKTINFO / IPV6_PKTINFO missing).
        case wrongDestination = "wrong_destination"
        case wrongLength = "wrong_length"
        case afterError = "after_error"
    }

    enum Verdict: Equatable {
        /// A timely reply: the probe is answered.
        case received(Record, rttNanoseconds: Int64, source: TimestampSource)
        /// Another copy of a reply already counted (timely or late).
        case duplicate(Record, rttNanoseconds: Int64, source: TimestampSource)
        /// A reply after the timeout. `concludesProbe` is true when the probe was still in
        /// flight (the loop had not expired it yet): the caller counts it lost now.
        case late(Record, concludesProbe: Bool)
        case ignored(IgnoredReason)
    }

    let cookie: UInt64
    let timeoutNanoseconds: Int64
    /// How long a concluded probe is remembered, to recognise late replies and duplicates.
    let retentionNanoseconds: Int64
    /// The probes remembered, in the order they were sent: probe numbers are taken in
    /// order (numbers taken by other runs of the prober, or by sends that would block,
    /// are missing), so a probe is found by its distance from the first, without hashing.
    private var records = Deque<Record>()
    /// Records before this position are past their deadline or concluded; the one at it
    /// (if any) is the next probe that may time out.
    private var deadlineCursor = 0

    init(cookie: UInt64, timeoutNanoseconds: Int64, retentionNanoseconds: Int64) {
        self.cookie = cookie
        self.timeoutNanoseconds = timeoutNanoseconds
        self.retentionNanoseconds = retentionNanoseconds
    }

    var nextDeadline: Int64? { deadlineCursor < records.count ? records[deadlineCursor].deadlineMonotonic : nil }

    /// Makes room for `count` records at once: a deque grown by steps holds the old and
    /// the new storage at its peak (2.9 MB at 10,000 targets, against 1.6 MB reserved).
    mutating func reserveCapacity(_ count: Int) {
        records.reserveCapacity(count)
    }

    /// How many probes are remembered (in flight, or concluded and within the retention).
    var count: Int { records.count }

    /// The record of a probe, while it is remembered.
    func record(_ probeNumber: UInt32) -> Record? {
        position(of: probeNumber).map { records[$0] }
    }

    /// Where a probe's record is. Numbers are compared by their distance from the first
    /// record's, so that the 32-bit counter may wrap.
    private func position(of probeNumber: UInt32) -> Int? {
        guard let first = records.first else { return nil }
        let distance = Int(probeNumber &- first.probeNumber)
        guard distance < UInt32.max / 2 else { return nil }
        // With no number missing, the distance is the position; else the position is lower.
        var high = min(distance, records.count - 1)
        if records[high].probeNumber == probeNumber { return high }
        var low = 0
        while low < high {
            let middle = (low + high) / 2
            if Int(records[middle].probeNumber &- first.probeNumber) < distance { low = middle + 1 } else { high = middle }
        }
        return records[low].probeNumber == probeNumber ? low : nil
    }

    /// Remembers a probe that was just sent. Probe numbers and deadlines must both be
    /// registered in order.
    mutating func register(probeNumber: UInt32, _ record: Record) {
        if let last = records.last {
            assert(probeNumber &- last.probeNumber > 0 && probeNumber &- last.probeNumber < UInt32.max / 2, "probe numbers are registered in order")
        }
        var record = record
        record.probeNumber = probeNumber
        records.append(record)
    }

    /// Attaches the kernel's transmit stamp to a probe; unknown probe numbers are ignored.
    mutating func recordTransmitStamp(probeNumber: UInt32, realtime: Int64) {
        guard let position = position(of: probeNumber) else { return }
        records[position].kernelSentRealtime = realtime
    }

    func needsTransmitStamp(probeNumber: UInt32) -> Bool {
        guard let position = position(of: probeNumber) else { return false }
        return records[position].kernelSentRealtime == nil
    }

    /// Decides what a decoded echo reply is.
    /// - Parameters:
    ///   - destination: which of our addresses the reply was sent to (IP_PKTINFO /
    ///     IPV6_PKTINFO); checked against the probe's chosen source, when it chose one.
    ///   - expectedIdentifier: our echo identifier on raw sockets; nil on datagram sockets,
    ///     where the kernel already routed the reply by identifier.
    ///   - kernelReceivedRealtime: the RX software stamp, when the kernel gave one.
    ///   - userReceivedRealtime: CLOCK_REALTIME read right after recvmsg returned.
    mutating func classify(_ reply: ICMPEcho.Reply, from source: IPAddress, to destination: IPAddress? = nil, expectedIdentifier: UInt16?, expectedPayloadLength: Int,
                           kernelReceivedRealtime: Int64?, userReceivedRealtime: Int64) -> Verdict {
        if let expectedIdentifier, reply.identifier != expectedIdentifier { return .ignored(.wrongIdentifier) }
        guard reply.cookie == cookie else { return .ignored(.wrongCookie) }
        guard let position = position(of: reply.probeNumber) else { return .ignored(.unknownProbe) }
        var record = records[position]
        guard reply.sequence == UInt16(truncatingIfNeeded: reply.probeNumber) else { return .ignored(.sequenceMismatch) }
        guard source == record.destination else { return .ignored(.wrongSource) }
        if let chosen = record.chosenSource, destination != chosen { return .ignored(.wrongDestination) }
        guard reply.payloadLength == expectedPayloadLength else { return .ignored(.wrongLength) }

        let (rtt, timestampSource) = Self.roundTrip(record, kernelReceivedRealtime: kernelReceivedRealtime, userReceivedRealtime: userReceivedRealtime)
        switch record.state {
        case .inFlight:
            if rtt > timeoutNanoseconds {
                record.state = .answeredLate
                records[position] = record
                return .late(record, concludesProbe: true)
            }
            record.state = .answered
            records[position] = record
            return .received(record, rttNanoseconds: rtt, source: timestampSource)
        case .answered, .answeredLate:
            return .duplicate(record, rttNanoseconds: rtt, source: timestampSource)
        case .lost:
            record.state = .answeredLate
            records[position] = record
            return .late(record, concludesProbe: false)
        case .failed:
            return .ignored(.afterError)
        }
    }

    /// The RTT from the best stamps available: kernel stamps at both ends give a kernel
    /// sample; a missing stamp at either end is replaced by the user-space read at that
    /// end, and the sample is marked user.
    static func roundTrip(_ record: Record, kernelReceivedRealtime: Int64?, userReceivedRealtime: Int64) -> (Int64, TimestampSource) {
        if let sent = record.kernelSentRealtime, let received = kernelReceivedRealtime, received >= sent {
            return (received - sent, .kernel)
        }
        let sent = record.kernelSentRealtime ?? record.userSentRealtime
        let received = kernelReceivedRealtime ?? userReceivedRealtime
        if received >= sent { return (received - sent, .user) }
        return (max(0, userReceivedRealtime - record.userSentRealtime), .user)
    }

    /// Ends an in-flight probe because of an ICMP error or a failed send.
    /// - Returns: the record, when the probe was in flight (so the caller counts it once).
    mutating func fail(probeNumber: UInt32) -> Record? {
        guard let position = position(of: probeNumber), records[position].state == .inFlight else { return nil }
        records[position].state = .failed
        return records[position]
    }

    /// Marks every in-flight probe whose deadline is not after `now` as lost, calling
    /// `lost` for each, and forgets probes past their retention.
    mutating func expire(nowMonotonic now: Int64, lost: (Record) -> Void) {
        // Past the probes that timed out, and those answered or failed (they need no
        // timer), so that `nextDeadline` names a probe still in flight.
        while deadlineCursor < records.count {
            let record = records[deadlineCursor]
            if record.state == .inFlight {
                guard record.deadlineMonotonic <= now else { break }
                records[deadlineCursor].state = .lost
                lost(records[deadlineCursor])
            }
            deadlineCursor += 1
        }
        // Deadlines are in send order, and so are the ends of the retention.
        while deadlineCursor > 0, let first = records.first, first.deadlineMonotonic + retentionNanoseconds <= now {
            records.removeFirst()
            deadlineCursor -= 1
        }
    }

    /// Counts probes of `targetIndex` still in flight (slow; for tests and diagnostics).
    func inFlight(targetIndex: Int) -> Int {
        records.filter { $0.targetIndex == targetIndex && $0.state == .inFlight }.count
    }
}
