import ProbeResults
import XCTest
@testable import ProbeEngine

final class EchoTrackerTests: XCTestCase {
    let cookie: UInt64 = 0xfeed_face_cafe_beef
    let target = IPAddress(parsing: "127.0.0.1")!
    let other = IPAddress(parsing: "127.0.0.2")!
    let timeout: Int64 = 1_000_000_000
    let sentAt: Int64 = 1_700_000_000_000_000_000

    func makeTracker(probes: [UInt32] = [100]) -> EchoTracker {
        var tracker = EchoTracker(cookie: cookie, timeoutNanoseconds: timeout, retentionNanoseconds: 10 * timeout)
        for (index, probe) in probes.enumerated() {
            tracker.register(probeNumber: probe, EchoTracker.Record(
                targetIndex: 0, indexInRound: index, destination: target, userSentRealtime: sentAt + Int64(index),
                kernelSentRealtime: nil, deadlineMonotonic: 5_000 + Int64(index), state: .inFlight))
        }
        return tracker
    }

    func reply(_ probe: UInt32 = 100, identifier: UInt16 = 77, cookie: UInt64? = nil, sequence: UInt16? = nil, length: Int = 56) -> ICMPEcho.Reply {
        ICMPEcho.Reply(identifier: identifier, sequence: sequence ?? UInt16(truncatingIfNeeded: probe), cookie: cookie ?? self.cookie,
                       probeNumber: probe, payloadLength: length, ttl: 64)
    }

    func classify(_ tracker: inout EchoTracker, _ reply: ICMPEcho.Reply, from source: IPAddress? = nil, rtt: Int64 = 250_000, kernel: Bool = true) -> EchoTracker.Verdict {
        tracker.classify(reply, from: source ?? target, expectedIdentifier: 77, expectedPayloadLength: 56,
                         kernelReceivedRealtime: kernel ? sentAt + rtt : nil, userReceivedRealtime: sentAt + rtt + 40_000)
    }

    func testMatchingReplyWithKernelStampsIsReceivedWithKernelRTT() {
        var tracker = makeTracker()
        tracker.recordTransmitStamp(probeNumber: 100, realtime: sentAt + 5_000)
        guard case .received(let record, let rtt, let source) = classify(&tracker, reply()) else { return XCTFail("not received") }
        XCTAssertEqual(record.targetIndex, 0)
        XCTAssertEqual(rtt, 245_000, "receive stamp minus transmit stamp")
        XCTAssertEqual(source, .kernel)
    }

    func testMissingTransmitStampFallsBackToTheUserClockAndSaysSo() {
        var tracker = makeTracker()
        guard case .received(_, let rtt, let source) = classify(&tracker, reply()) else { return XCTFail("not received") }
        XCTAssertEqual(rtt, 250_000)
        XCTAssertEqual(source, .user)
    }

    func testMissingReceiveStampUsesTheReadAfterRecvmsg() {
        var tracker = makeTracker()
        tracker.recordTransmitStamp(probeNumber: 100, realtime: sentAt)
        guard case .received(_, let rtt, let source) = classify(&tracker, reply(), kernel: false) else { return XCTFail("not received") }
        XCTAssertEqual(rtt, 290_000)
        XCTAssertEqual(source, .user)
    }

    func testWrongCookieIsIgnored() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(cookie: 1)), .ignored(.wrongCookie))
        XCTAssertEqual(tracker.record(100)?.state, .inFlight)
    }

    func testWrongIdentifierIsIgnoredOnRawSockets() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(identifier: 78)), .ignored(.wrongIdentifier))
    }

    func testDatagramSocketsDoNotCheckTheIdentifierTheKernelRewrote() {
        var tracker = makeTracker()
        let verdict = tracker.classify(reply(identifier: 4242), from: target, expectedIdentifier: nil, expectedPayloadLength: 56,
                                       kernelReceivedRealtime: nil, userReceivedRealtime: sentAt + 1_000)
        guard case .received = verdict else { return XCTFail("datagram reply not received: \(verdict)") }
    }

    func testReplyFromAnotherAddressIsIgnored() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(), from: other), .ignored(.wrongSource))
        XCTAssertEqual(tracker.record(100)?.state, .inFlight, "a spoofed reply must not answer the probe")
    }

    func testReplyToAnotherOfOurAddressesThanTheChosenSourceIsIgnoredAsWrongDestination() {
        let chosen = IPAddress(parsing: "198.18.11.1")!
        let otherOfOurs = IPAddress(parsing: "198.18.10.1")!
        var tracker = EchoTracker(cookie: cookie, timeoutNanoseconds: timeout, retentionNanoseconds: 10 * timeout)
        tracker.register(probeNumber: 100, EchoTracker.Record(targetIndex: 0, indexInRound: 0, destination: target, chosenSource: chosen,
                                                              userSentRealtime: sentAt, kernelSentRealtime: nil, deadlineMonotonic: 5_000, state: .inFlight))
        func classify(to destination: IPAddress?) -> EchoTracker.Verdict {
            tracker.classify(reply(), from: target, to: destination, expectedIdentifier: 77, expectedPayloadLength: 56,
                             kernelReceivedRealtime: nil, userReceivedRealtime: sentAt + 1_000)
        }
        XCTAssertEqual(classify(to: otherOfOurs), .ignored(.wrongDestination))
        XCTAssertEqual(classify(to: nil), .ignored(.wrongDestination), "no IP_PKTINFO: the destination is unknown, not trusted")
        XCTAssertEqual(tracker.record(100)?.state, .inFlight, "a reply to another address must not answer the probe")
        guard case .received = classify(to: chosen) else { return XCTFail("the reply to the chosen source is the answer") }
        XCTAssertEqual(EchoTracker.IgnoredReason.wrongDestination.rawValue, PathTracker.IgnoredReason.wrongDestination.rawValue)
    }

    func testWithoutAChosenSourceAReplyToAnyOfOurAddressesCounts() {
        var tracker = makeTracker()
        let verdict = tracker.classify(reply(), from: target, to: IPAddress(parsing: "198.18.10.1"), expectedIdentifier: 77, expectedPayloadLength: 56,
                                       kernelReceivedRealtime: nil, userReceivedRealtime: sentAt + 1_000)
        guard case .received = verdict else { return XCTFail("\(verdict)") }
    }

    func testUnknownProbeNumberIsIgnored() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(101)), .ignored(.unknownProbe))
    }

    func testSequenceThatDisagreesWithTheProbeNumberIsIgnored() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(100, sequence: 5)), .ignored(.sequenceMismatch))
    }

    func testTruncatedPayloadIsIgnored() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(length: 40)), .ignored(.wrongLength))
    }

    func testSecondCopyIsADuplicateNotASecondReceive() {
        var tracker = makeTracker()
        guard case .received = classify(&tracker, reply()) else { return XCTFail("first copy not received") }
        guard case .duplicate(let record, _, _) = classify(&tracker, reply()) else { return XCTFail("second copy not a duplicate") }
        XCTAssertEqual(record.state, .answered)
    }

    func testReplySlowerThanTheTimeoutIsLateEvenBeforeTheLoopExpiredIt() {
        var tracker = makeTracker()
        XCTAssertEqual(classify(&tracker, reply(), rtt: timeout + 1).lateConcludes, true)
        XCTAssertEqual(tracker.record(100)?.state, .answeredLate)
    }

    func testLateReplyAfterExpiryCountsLateAndNotReceived() {
        var tracker = makeTracker(probes: [100, 101])
        var lost: [Int] = []
        tracker.expire(nowMonotonic: 5_000) { lost.append($0.indexInRound) }
        XCTAssertEqual(lost, [0], "only the first deadline has passed")
        XCTAssertEqual(classify(&tracker, reply(100), rtt: timeout + 5).lateConcludes, false, "already counted lost by the loop")
        guard case .duplicate = classify(&tracker, reply(100), rtt: timeout + 6) else { return XCTFail("second late copy should be a duplicate") }
        guard case .received = classify(&tracker, reply(101)) else { return XCTFail("the second probe is still in flight") }
    }

    func testExpiryForgetsRecordsAfterTheRetention() {
        var tracker = makeTracker()
        tracker.expire(nowMonotonic: 5_000 + 10 * timeout) { _ in }
        XCTAssertNil(tracker.record(100))
        XCTAssertNil(tracker.nextDeadline)
    }

    func testReplyAfterAnICMPErrorIsIgnored() {
        var tracker = makeTracker()
        XCTAssertNotNil(tracker.fail(probeNumber: 100))
        XCTAssertNil(tracker.fail(probeNumber: 100), "a probe fails once")
        XCTAssertEqual(classify(&tracker, reply()), .ignored(.afterError))
    }

    /// Records are found by their distance from the first probe number: numbers another
    /// run (or a send that would block) took are missing, and the 32-bit counter wraps.
    func testProbesAreFoundAcrossMissingNumbersAndTheCounterWrapping() {
        let numbers: [UInt32] = [UInt32.max - 3, UInt32.max - 1, UInt32.max, 0, 1, 5, 6, 40, 41, 42, 1000]
        var tracker = makeTracker(probes: numbers)
        for (index, number) in numbers.enumerated() {
            XCTAssertEqual(tracker.record(number)?.indexInRound, index, "probe \(number)")
            XCTAssertEqual(tracker.record(number)?.probeNumber, number)
        }
        for missing: UInt32 in [UInt32.max - 4, UInt32.max - 2, 2, 4, 7, 39, 43, 999, 1001, 1 << 31] {
            XCTAssertNil(tracker.record(missing), "probe \(missing) was never sent")
            XCTAssertEqual(classify(&tracker, reply(missing)), .ignored(.unknownProbe))
        }
        guard case .received(let record, _, _) = classify(&tracker, reply(0)) else { return XCTFail("probe 0 is in flight") }
        XCTAssertEqual(record.indexInRound, 3)
        XCTAssertEqual(tracker.record(0)?.state, .answered)
        XCTAssertEqual(tracker.fail(probeNumber: 41)?.indexInRound, 8)
        XCTAssertEqual(tracker.record(41)?.state, .failed)
    }

    /// Expiry walks the deadlines in send order past answered probes, and forgets a
    /// probe only after its retention, in order.
    func testExpiryCountsEachInFlightProbeLostOnceAndForgetsInOrder() {
        var tracker = makeTracker(probes: [10, 11, 13, 14])
        tracker.recordTransmitStamp(probeNumber: 13, realtime: sentAt + 2)
        XCTAssertEqual(tracker.record(13)?.kernelSentRealtime, sentAt + 2)
        XCTAssertFalse(tracker.needsTransmitStamp(probeNumber: 13))
        XCTAssertTrue(tracker.needsTransmitStamp(probeNumber: 14))
        guard case .received = classify(&tracker, reply(11)) else { return XCTFail("probe 11 is in flight") }
        XCTAssertEqual(tracker.nextDeadline, 5_000)
        var lost: [Int] = []
        tracker.expire(nowMonotonic: 5_002) { lost.append($0.indexInRound) }
        XCTAssertEqual(lost, [0, 2], "probes 10 and 13 timed out; 11 was answered")
        XCTAssertEqual(tracker.nextDeadline, 5_003, "probe 14 is next")
        tracker.expire(nowMonotonic: 5_002) { lost.append($0.indexInRound) }
        XCTAssertEqual(lost, [0, 2], "a probe is lost once")
        XCTAssertEqual(tracker.count, 4)
        tracker.expire(nowMonotonic: 5_001 + 10 * timeout) { lost.append($0.indexInRound) }
        XCTAssertEqual(lost, [0, 2, 3])
        XCTAssertNil(tracker.record(10))
        XCTAssertNil(tracker.record(11))
        XCTAssertEqual(tracker.record(13)?.state, .lost, "kept until its own retention ends")
        XCTAssertEqual(tracker.count, 2)
        tracker.expire(nowMonotonic: 5_003 + 10 * timeout) { _ in }
        XCTAssertEqual(tracker.count, 0)
        XCTAssertNil(tracker.nextDeadline)
        // A tracker emptied starts again from any number.
        tracker.register(probeNumber: 7, EchoTracker.Record(targetIndex: 2, indexInRound: 0, destination: target, userSentRealtime: sentAt,
                                                           kernelSentRealtime: nil, deadlineMonotonic: 9_000, state: .inFlight))
        XCTAssertEqual(tracker.record(7)?.targetIndex, 2)
    }

    /// The tracker is sized once for the probes a run keeps: sent over one timeout and
    /// retention, at the rate the targets, rounds and rate limit allow, plus a quarter.
    func testTheTrackerIsSizedForTheProbesARunKeeps() {
        var run = ICMPProbeConfiguration(count: 1, intervalNanoseconds: 1_000_000_000, timeoutNanoseconds: 500_000_000, packetsPerSecond: 20_000)
        run.roundIntervalNanoseconds = 1_000_000_000
        // 10,000 targets once a second, kept 0.5 s + 1.5 s: 20,000, and a quarter more.
        XCTAssertEqual(run.recordsKept(targets: 10_000, retention: 1_500_000_000), 25_000)
        run.packetsPerSecond = 1_000
        XCTAssertEqual(run.recordsKept(targets: 10_000, retention: 1_500_000_000), 2_500, "the rate limit bounds it")
        // Three probes 200 ms apart every 5 s: 0.6 probes a second a target.
        var spaced = ICMPProbeConfiguration(count: 3, intervalNanoseconds: 200_000_000, timeoutNanoseconds: 500_000_000, packetsPerSecond: 1e6)
        spaced.roundIntervalNanoseconds = 5_000_000_000
        XCTAssertEqual(spaced.recordsKept(targets: 1_000, retention: 1_500_000_000), 1_500)
        // One round holds at most its own probes.
        let once = ICMPProbeConfiguration(count: 1, intervalNanoseconds: 1_000_000, timeoutNanoseconds: 1_000_000_000, packetsPerSecond: 10_000)
        XCTAssertEqual(once.recordsKept(targets: 5_000, retention: 2_000_000_000), 5_000)
    }
}

extension EchoTracker.Verdict {
    /// For late verdicts, whether the probe was concluded now; nil for other verdicts.
    var lateConcludes: Bool? {
        if case .late(_, let concludes) = self { return concludes }
        return nil
    }
}
