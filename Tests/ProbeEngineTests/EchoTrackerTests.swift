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
        XCTAssertEqual(tracker.records[100]?.state, .inFlight)
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
        XCTAssertEqual(tracker.records[100]?.state, .inFlight, "a spoofed reply must not answer the probe")
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
        XCTAssertEqual(tracker.records[100]?.state, .answeredLate)
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
        XCTAssertNil(tracker.records[100])
        XCTAssertNil(tracker.nextDeadline)
    }

    func testReplyAfterAnICMPErrorIsIgnored() {
        var tracker = makeTracker()
        XCTAssertNotNil(tracker.fail(probeNumber: 100))
        XCTAssertNil(tracker.fail(probeNumber: 100), "a probe fails once")
        XCTAssertEqual(classify(&tracker, reply()), .ignored(.afterError))
    }
}

extension EchoTracker.Verdict {
    /// For late verdicts, whether the probe was concluded now; nil for other verdicts.
    var lateConcludes: Bool? {
        if case .late(_, let concludes) = self { return concludes }
        return nil
    }
}
