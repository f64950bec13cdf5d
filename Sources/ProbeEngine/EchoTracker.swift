import DequeModule

/// The probes in flight and the rules that decide what an incoming reply is.
///
/// A reply counts as received only when its identifier (raw sockets), cookie, probe
/// number, sequence, length and source address all match a probe we sent, and it came
/// back within the timeout. Anything else is classified, never trusted.
struct EchoTracker {
    /// One probe we sent.
    struct Record: Equatable {
        var targetIndex: Int
        /// 0-based position of the probe in its target's round.
        var indexInRound: Int
        var destination: IPAddress
        /// CLOCK_REALTIME read just before sendmsg.
        var userSentRealtime: Int64
        /// The kernel's software transmit stamp, once it has come back on the error queue.
        var kernelSentRealtime: Int64?
        /// CLOCK_MONOTONIC instant after which the probe is lost.
        var deadlineMonotonic: Int64
        var state: State
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
    private(set) var records: [UInt32: Record] = [:]
    private var deadlines = Deque<(deadline: Int64, probeNumber: UInt32)>()
    private var forgetting = Deque<(forgetAt: Int64, probeNumber: UInt32)>()

    init(cookie: UInt64, timeoutNanoseconds: Int64, retentionNanoseconds: Int64) {
        self.cookie = cookie
        self.timeoutNanoseconds = timeoutNanoseconds
        self.retentionNanoseconds = retentionNanoseconds
    }

    var nextDeadline: Int64? { deadlines.first?.deadline }

    /// Remembers a probe that was just sent. Deadlines must be registered in order.
    mutating func register(probeNumber: UInt32, _ record: Record) {
        records[probeNumber] = record
        deadlines.append((record.deadlineMonotonic, probeNumber))
        forgetting.append((record.deadlineMonotonic + retentionNanoseconds, probeNumber))
    }

    /// Attaches the kernel's transmit stamp to a probe; unknown probe numbers are ignored.
    mutating func recordTransmitStamp(probeNumber: UInt32, realtime: Int64) {
        records[probeNumber]?.kernelSentRealtime = realtime
    }

    func needsTransmitStamp(probeNumber: UInt32) -> Bool {
        guard let record = records[probeNumber] else { return false }
        return record.kernelSentRealtime == nil
    }

    /// Decides what a decoded echo reply is.
    /// - Parameters:
    ///   - expectedIdentifier: our echo identifier on raw sockets; nil on datagram sockets,
    ///     where the kernel already routed the reply by identifier.
    ///   - kernelReceivedRealtime: the RX software stamp, when the kernel gave one.
    ///   - userReceivedRealtime: CLOCK_REALTIME read right after recvmsg returned.
    mutating func classify(_ reply: ICMPEcho.Reply, from source: IPAddress, expectedIdentifier: UInt16?, expectedPayloadLength: Int,
                           kernelReceivedRealtime: Int64?, userReceivedRealtime: Int64) -> Verdict {
        if let expectedIdentifier, reply.identifier != expectedIdentifier { return .ignored(.wrongIdentifier) }
        guard reply.cookie == cookie else { return .ignored(.wrongCookie) }
        guard var record = records[reply.probeNumber] else { return .ignored(.unknownProbe) }
        guard reply.sequence == UInt16(truncatingIfNeeded: reply.probeNumber) else { return .ignored(.sequenceMismatch) }
        guard source == record.destination else { return .ignored(.wrongSource) }
        guard reply.payloadLength == expectedPayloadLength else { return .ignored(.wrongLength) }

        let (rtt, timestampSource) = Self.roundTrip(record, kernelReceivedRealtime: kernelReceivedRealtime, userReceivedRealtime: userReceivedRealtime)
        switch record.state {
        case .inFlight:
            if rtt > timeoutNanoseconds {
                record.state = .answeredLate
                records[reply.probeNumber] = record
                return .late(record, concludesProbe: true)
            }
            record.state = .answered
            records[reply.probeNumber] = record
            return .received(record, rttNanoseconds: rtt, source: timestampSource)
        case .answered, .answeredLate:
            return .duplicate(record, rttNanoseconds: rtt, source: timestampSource)
        case .lost:
            record.state = .answeredLate
            records[reply.probeNumber] = record
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
        guard var record = records[probeNumber], record.state == .inFlight else { return nil }
        record.state = .failed
        records[probeNumber] = record
        return record
    }

    /// Marks every in-flight probe whose deadline is not after `now` as lost, calling
    /// `lost` for each, and forgets probes past their retention.
    mutating func expire(nowMonotonic now: Int64, lost: (Record) -> Void) {
        while let first = deadlines.first, first.deadline <= now {
            deadlines.removeFirst()
            if var record = records[first.probeNumber], record.state == .inFlight {
                record.state = .lost
                records[first.probeNumber] = record
                lost(record)
            }
        }
        // Probes answered or failed before their deadline need no timer: drop them from
        // the front so `nextDeadline` names a probe still in flight.
        while let first = deadlines.first, records[first.probeNumber]?.state != .inFlight {
            deadlines.removeFirst()
        }
        while let first = forgetting.first, first.forgetAt <= now {
            forgetting.removeFirst()
            records[first.probeNumber] = nil
        }
    }

    /// Counts probes of `targetIndex` still in flight (slow; for tests and diagnostics).
    func inFlight(targetIndex: Int) -> Int {
        records.values.filter { $0.targetIndex == targetIndex && $0.state == .inFlight }.count
    }
}
