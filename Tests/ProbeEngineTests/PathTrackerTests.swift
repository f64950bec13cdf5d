import ProbeResults
import XCTest
@testable import ProbeEngine

/// The path prober's matching rules, one test per rule, without sockets.
final class PathTrackerTests: XCTestCase {
    let cookie: UInt64 = 0xfeed_face_cafe_beef
    let identifier: UInt16 = 77
    let target = IPAddress(parsing: "198.51.100.7")!
    let tcpTarget = IPAddress(parsing: "198.51.100.8")!
    let router = IPAddress(parsing: "192.0.2.1")!
    let timeout: Int64 = 1_000_000_000
    let sentAt: Int64 = 1_700_000_000_000_000_000
    let ports: [UInt16] = [40_000, 40_001]

    /// Target 0: echo trace to `target`; target 1: SYN trace to `tcpTarget`:443.
    func makeTracker() -> PathTracker {
        var tracker = PathTracker(cookie: cookie, payloadLength: 24, timeoutNanoseconds: timeout,
                                  destinations: [.init(address: target, port: nil), .init(address: tcpTarget, port: 443)])
        tracker.register(probeNumber: 100, probe(target: 0, ttl: 3))
        tracker.register(probeNumber: 101, probe(target: 1, flow: 1, ttl: 2, transport: .tcp))
        return tracker
    }

    func probe(target: Int, flow: Int = 0, ttl: Int, transport: PathTracker.Transport = .echo) -> PathTracker.Probe {
        PathTracker.Probe(targetIndex: target, flow: flow, ttl: ttl, transport: transport, order: 0, userSentRealtime: sentAt,
                          kernelSentRealtime: nil, deadline: 5_000)
    }

    func reply(_ number: UInt32 = 100, identifier: UInt16? = nil, cookie: UInt64? = nil, sequence: UInt16? = nil, length: Int = 24) -> ICMPEcho.Reply {
        ICMPEcho.Reply(identifier: identifier ?? self.identifier, sequence: sequence ?? UInt16(truncatingIfNeeded: number), cookie: cookie ?? self.cookie,
                       probeNumber: number, payloadLength: length, ttl: 60)
    }

    func echoError(_ kind: PathPacket.ErrorKind = .timeExceeded, code: UInt8 = 0, number: UInt32? = 100, sequence: UInt16 = 100, cookie: UInt64? = nil,
                   identifier: UInt16? = nil, quotedDestination: IPAddress? = nil) -> PathPacket.ErrorReport {
        PathPacket.ErrorReport(kind: kind, type: kind == .unreachable ? 3 : 11, code: code, quotedSource: router, quotedDestination: quotedDestination ?? target, quotedTTL: 1,
                               probe: .echo(identifier: identifier ?? self.identifier, sequence: sequence, cookie: number == nil ? nil : (cookie ?? self.cookie), probeNumber: number))
    }

    func tcpError(_ kind: PathPacket.ErrorKind = .timeExceeded, code: UInt8 = 0, sourcePort: UInt16 = 40_001, destinationPort: UInt16 = 443, sequence: UInt32 = 101,
                  quotedDestination: IPAddress? = nil) -> PathPacket.ErrorReport {
        PathPacket.ErrorReport(kind: kind, type: kind == .unreachable ? 3 : 11, code: code, quotedSource: router, quotedDestination: quotedDestination ?? tcpTarget, quotedTTL: 1,
                               probe: .tcp(sourcePort: sourcePort, destinationPort: destinationPort, sequence: sequence))
    }

    func synAck(acknowledging number: UInt32 = 101, from port: UInt16 = 443, to ourPort: UInt16 = 40_001) -> PathTCPSegment.Answer {
        PathTCPSegment.Answer(sourcePort: port, destinationPort: ourPort, acknowledgment: number &+ 1, isSynAck: true, isReset: false)
    }

    func conclude(_ tracker: inout PathTracker, _ match: PathTracker.Match, rtt: Int64 = 2_000_000, kernel: Int64? = nil) -> PathTracker.Verdict? {
        guard case .probe(let number, let source, let isDestination, let unreachable) = match else { return nil }
        return tracker.conclude(number, from: source, isDestination: isDestination, unreachable: unreachable,
                                kernelReceivedRealtime: kernel, userReceivedRealtime: sentAt + rtt, nowMonotonic: 1_000)
    }

    // MARK: echo replies

    /// With a chosen source (`trace -S`), an answer sent to another of our addresses, or an
    /// error quoting a packet from another source, is about someone else's probe.
    func testAnswersNotAddressedToTheChosenSourceAreIgnored() {
        let chosen = IPAddress(parsing: "192.0.2.10")!, other = IPAddress(parsing: "192.0.2.20")!
        var tracker = PathTracker(cookie: cookie, payloadLength: 24, timeoutNanoseconds: timeout,
                                  destinations: [.init(address: target, port: nil, chosenSource: chosen)])
        tracker.register(probeNumber: 100, probe(target: 0, ttl: 3))
        XCTAssertEqual(tracker.match(echoReply: reply(), from: target, to: other, identifier: identifier), .ignored(.wrongDestination))
        XCTAssertEqual(tracker.match(echoReply: reply(), from: target, to: nil, identifier: identifier), .ignored(.wrongDestination),
                       "a reply whose destination is unknown cannot be shown to be ours")
        XCTAssertEqual(tracker.match(echoReply: reply(), from: target, to: chosen, identifier: identifier),
                       .probe(100, from: target, isDestination: true, unreachable: nil))
        var quotingOther = echoError()
        quotingOther.quotedSource = other
        XCTAssertEqual(tracker.match(error: quotingOther, from: router, to: chosen, identifier: identifier, tcpPorts: nil), .ignored(.wrongDestination))
        var quotingChosen = echoError()
        quotingChosen.quotedSource = chosen
        XCTAssertEqual(tracker.match(error: quotingChosen, from: router, to: other, identifier: identifier, tcpPorts: nil), .ignored(.wrongDestination))
        XCTAssertEqual(tracker.match(error: quotingChosen, from: router, to: chosen, identifier: identifier, tcpPorts: nil),
                       .probe(100, from: router, isDestination: false, unreachable: nil))
    }

    func testEchoReplyFromTheTargetConcludesItsProbeAtTheDestination() {
        var tracker = makeTracker()
        let match = tracker.match(echoReply: reply(), from: target, identifier: identifier)
        XCTAssertEqual(match, .probe(100, from: target, isDestination: true, unreachable: nil))
        XCTAssertEqual(conclude(&tracker, match), .answered(probe(target: 0, ttl: 3), rttNanoseconds: 2_000_000, from: target, isDestination: true, unreachable: nil, kernelTimed: false))
        XCTAssertFalse(tracker.inFlight.keys.contains(100))
    }

    func testEchoReplyWithAnotherIdentifierIsNotOursAndNotCounted() {
        XCTAssertEqual(makeTracker().match(echoReply: reply(identifier: 78), from: target, identifier: identifier), .notOurs)
    }

    func testEchoReplyWithAnotherCookieIsIgnored() {
        XCTAssertEqual(makeTracker().match(echoReply: reply(cookie: 1), from: target, identifier: identifier), .ignored(.wrongCookie))
    }

    func testEchoReplyWhoseSequenceDisagreesWithTheProbeNumberIsIgnored() {
        XCTAssertEqual(makeTracker().match(echoReply: reply(sequence: 7), from: target, identifier: identifier), .ignored(.sequenceMismatch))
    }

    func testEchoReplyOfAnotherLengthIsIgnored() {
        XCTAssertEqual(makeTracker().match(echoReply: reply(length: 56), from: target, identifier: identifier), .ignored(.wrongLength))
    }

    func testEchoReplyFromAnotherAddressIsTheWrongSource() {
        var tracker = makeTracker()
        XCTAssertEqual(conclude(&tracker, tracker.match(echoReply: reply(), from: router, identifier: identifier)), .ignored(.wrongSource))
        XCTAssertTrue(tracker.inFlight.keys.contains(100), "the probe still waits for its own answer")
    }

    // MARK: ICMP errors about echo requests

    func testTimeExceededFromARouterConcludesTheProbeAtItsTTLNotAtTheDestination() {
        var tracker = makeTracker()
        let match = tracker.match(error: echoError(), from: router, identifier: identifier, tcpPorts: nil)
        XCTAssertEqual(match, .probe(100, from: router, isDestination: false, unreachable: nil))
        guard case .answered(let probe, _, let source, false, nil, _)? = conclude(&tracker, match) else { return XCTFail("not answered") }
        XCTAssertEqual(probe.ttl, 3)
        XCTAssertEqual(source, router)
    }

    func testUnreachableFromTheTargetEndsThePathAsUnreachableNotAsAReply() {
        let match = makeTracker().match(error: echoError(.unreachable, code: 13), from: target, identifier: identifier, tcpPorts: nil)
        XCTAssertEqual(match, .probe(100, from: target, isDestination: false, unreachable: UnreachableMark(family: .ipv4, code: 13)))
    }

    func testUnreachableMarksAreMtrs() {
        let v4: [UInt8: String] = [0: "!N", 1: "!H", 2: "!P", 3: "!P", 4: "!F", 6: "!N", 7: "!H", 9: "!X", 10: "!X", 11: "!N", 12: "!H", 13: "!X", 14: "!14"]
        for (code, mark) in v4 { XCTAssertEqual(UnreachableMark(family: .ipv4, code: code).mark, mark, "ICMP code \(code)") }
        let v6: [UInt8: String] = [0: "!N", 1: "!X", 2: "!N", 3: "!H", 4: "!P", 5: "!X", 6: "!X", 7: "!7"]
        for (code, mark) in v6 { XCTAssertEqual(UnreachableMark(family: .ipv6, code: code).mark, mark, "ICMPv6 code \(code)") }
    }

    func testAnUnreachableAfterTheTimeoutIsTheLateEndingOfThePathNotAReply() {
        var tracker = makeTracker()
        tracker.expire(nowMonotonic: 5_000)
        let match = tracker.match(error: echoError(.unreachable, code: 1), from: router, identifier: identifier, tcpPorts: nil)
        let mark = UnreachableMark(family: .ipv4, code: 1)
        // A router's neighbour lookup gives up after about 3 s: still the path's ending.
        XCTAssertEqual(conclude(&tracker, match, rtt: 3_000_000_000), .lateUnreachable(probe(target: 0, ttl: 3), from: router, mark: mark))
        XCTAssertEqual(conclude(&tracker, match, rtt: 3_100_000_000), .ignored(.lateOrDuplicate), "one ending per probe")
        var slower = makeTracker()
        slower.expire(nowMonotonic: 5_000)
        XCTAssertEqual(conclude(&slower, match, rtt: PathTracker.unreachableWindowNanoseconds + 1), .ignored(.lateOrDuplicate), "past the window")
        var inFlight = makeTracker()
        XCTAssertEqual(conclude(&inFlight, match, rtt: timeout + 1), .lateUnreachable(probe(target: 0, ttl: 3), from: router, mark: mark),
                       "read after the timeout but before the deadline was served")
    }

    func testATimeExceededAfterTheTimeoutStaysLate() {
        var tracker = makeTracker()
        tracker.expire(nowMonotonic: 5_000)
        XCTAssertEqual(conclude(&tracker, tracker.match(error: echoError(), from: router, identifier: identifier, tcpPorts: nil), rtt: 2_000_000_000),
                       .ignored(.lateOrDuplicate))
    }

    func testErrorQuotingAnotherIdentifierIsNotOurs() {
        XCTAssertEqual(makeTracker().match(error: echoError(identifier: 5), from: router, identifier: identifier, tcpPorts: nil), .notOurs)
    }

    func testErrorQuotingAnotherCookieIsIgnored() {
        XCTAssertEqual(makeTracker().match(error: echoError(cookie: 9), from: router, identifier: identifier, tcpPorts: nil), .ignored(.wrongCookie))
    }

    func testEightByteQuoteFindsTheLatestProbeWithThatSequence() {
        let match = makeTracker().match(error: echoError(number: nil, sequence: 100), from: router, identifier: identifier, tcpPorts: nil)
        XCTAssertEqual(match, .probe(100, from: router, isDestination: false, unreachable: nil))
    }

    func testQuotedProbeNumberThatDisagreesWithTheSequenceIsIgnored() {
        XCTAssertEqual(makeTracker().match(error: echoError(number: 100, sequence: 5), from: router, identifier: identifier, tcpPorts: nil),
                       .ignored(.sequenceMismatch))
    }

    func testErrorAboutAProbeNeverSentIsUnknown() {
        XCTAssertEqual(makeTracker().match(error: echoError(number: 300, sequence: 300), from: router, identifier: identifier, tcpPorts: nil),
                       .ignored(.unknownProbe))
    }

    func testErrorQuotingAnotherDestinationIsIgnored() {
        XCTAssertEqual(makeTracker().match(error: echoError(quotedDestination: router), from: router, identifier: identifier, tcpPorts: nil),
                       .ignored(.wrongDestination))
    }

    // MARK: TCP probes

    func testSynAckFromTheTargetPortConcludesTheSYNAtTheDestination() {
        var tracker = makeTracker()
        let match = tracker.match(tcpAnswer: synAck(), from: tcpTarget, ports: ports)
        XCTAssertEqual(match, .probe(101, from: tcpTarget, isDestination: true, unreachable: nil))
        guard case .answered(let probe, _, _, true, nil, _)? = conclude(&tracker, match) else { return XCTFail("not answered") }
        XCTAssertEqual(probe.transport, .tcp)
    }

    func testSegmentToAPortWeDoNotHoldIsNotOurs() {
        XCTAssertEqual(makeTracker().match(tcpAnswer: synAck(to: 9), from: tcpTarget, ports: ports), .notOurs)
    }

    func testSegmentAcknowledgingNoProbeIsUnknown() {
        XCTAssertEqual(makeTracker().match(tcpAnswer: synAck(acknowledging: 999), from: tcpTarget, ports: ports), .ignored(.unknownProbe))
    }

    func testSegmentFromAnotherAddressPortOrFlowIsTheWrongSource() {
        let tracker = makeTracker()
        XCTAssertEqual(tracker.match(tcpAnswer: synAck(), from: target, ports: ports), .ignored(.wrongSource))
        XCTAssertEqual(tracker.match(tcpAnswer: synAck(from: 80), from: tcpTarget, ports: ports), .ignored(.wrongSource))
        XCTAssertEqual(tracker.match(tcpAnswer: synAck(to: 40_000), from: tcpTarget, ports: ports), .ignored(.wrongSource), "flow 1's SYN left from port 40001")
    }

    func testTimeExceededQuotingOurSYNConcludesItAtItsTTL() {
        let match = makeTracker().match(error: tcpError(), from: router, identifier: identifier, tcpPorts: ports)
        XCTAssertEqual(match, .probe(101, from: router, isDestination: false, unreachable: nil))
    }

    func testErrorQuotingASYNFromAPortWeDoNotHoldIsNotOurs() {
        XCTAssertEqual(makeTracker().match(error: tcpError(sourcePort: 9), from: router, identifier: identifier, tcpPorts: ports), .notOurs)
        XCTAssertEqual(makeTracker().match(error: tcpError(), from: router, identifier: identifier, tcpPorts: nil), .notOurs)
    }

    func testErrorQuotingASYNToAnotherPortIsUnknown() {
        XCTAssertEqual(makeTracker().match(error: tcpError(destinationPort: 80), from: router, identifier: identifier, tcpPorts: ports), .ignored(.unknownProbe))
    }

    func testErrorQuotingASYNToAnotherAddressIsIgnored() {
        XCTAssertEqual(makeTracker().match(error: tcpError(quotedDestination: target), from: router, identifier: identifier, tcpPorts: ports),
                       .ignored(.wrongDestination))
    }

    func testUnreachableFromARouterAboutASYNEndsThePathAsUnreachable() {
        XCTAssertEqual(makeTracker().match(error: tcpError(.unreachable, code: 1), from: router, identifier: identifier, tcpPorts: ports),
                       .probe(101, from: router, isDestination: false, unreachable: UnreachableMark(family: .ipv4, code: 1)))
    }

    func testPortUnreachableFromTheTCPTargetIsAClosedPortAnswering() {
        XCTAssertEqual(makeTracker().match(error: tcpError(.unreachable, code: 3), from: tcpTarget, identifier: identifier, tcpPorts: ports),
                       .probe(101, from: tcpTarget, isDestination: true, unreachable: nil))
        XCTAssertEqual(makeTracker().match(error: tcpError(.unreachable, code: 13), from: tcpTarget, identifier: identifier, tcpPorts: ports),
                       .probe(101, from: tcpTarget, isDestination: false, unreachable: UnreachableMark(family: .ipv4, code: 13)),
                       "a prohibited from the host's firewall ends the path")
    }

    // MARK: concluding

    func testASecondAnswerIsLateOrDuplicate() {
        var tracker = makeTracker()
        let match = tracker.match(echoReply: reply(), from: target, identifier: identifier)
        _ = conclude(&tracker, match)
        XCTAssertEqual(conclude(&tracker, match), .ignored(.lateOrDuplicate))
    }

    func testAnAnswerSlowerThanTheTimeoutIsLateAndConcludesTheProbe() {
        var tracker = makeTracker()
        let match = tracker.match(echoReply: reply(), from: target, identifier: identifier)
        XCTAssertEqual(conclude(&tracker, match, rtt: timeout + 1), .ignored(.lateOrDuplicate))
        XCTAssertFalse(tracker.inFlight.keys.contains(100), "concluded: it no longer waits")
    }

    func testAnAnswerAfterTheDeadlineIsLateAndAfterTheRetentionUnknown() {
        var tracker = makeTracker()
        tracker.expire(nowMonotonic: 5_000)
        XCTAssertFalse(tracker.hasProbesInFlight)
        let match = tracker.match(echoReply: reply(), from: target, identifier: identifier)
        XCTAssertEqual(conclude(&tracker, match), .ignored(.lateOrDuplicate), "remembered, so late rather than unknown")
        tracker.expire(nowMonotonic: 5_000 + tracker.retentionNanoseconds)
        // An echo reply names its probe itself: whether that probe is known is decided on concluding.
        XCTAssertEqual(conclude(&tracker, match), .ignored(.unknownProbe))
    }

    func testKernelStampsAreUsedOnlyWhenBothEndsHaveThem() {
        var tracker = makeTracker()
        XCTAssertTrue(tracker.needsTransmitStamp(probeNumber: 100))
        let match = tracker.match(echoReply: reply(), from: target, identifier: identifier)
        var withoutTXStamp = tracker
        guard case .answered(_, let userRTT, _, _, _, let userTimed)? = conclude(&withoutTXStamp, match, rtt: 2_000_000, kernel: sentAt + 1_000_000) else { return XCTFail() }
        XCTAssertEqual(userRTT, 2_000_000, "no TX stamp: user-space reads at both ends")
        XCTAssertFalse(userTimed)
        tracker.recordTransmitStamp(probeNumber: 100, realtime: sentAt + 100_000)
        XCTAssertFalse(tracker.needsTransmitStamp(probeNumber: 100))
        var withoutRXStamp = tracker
        guard case .answered(_, let mixedRTT, _, _, _, let mixedTimed)? = conclude(&withoutRXStamp, match, rtt: 2_000_000, kernel: nil) else { return XCTFail() }
        XCTAssertEqual(mixedRTT, 2_000_000, "no RX stamp: user-space reads at both ends, never one of each")
        XCTAssertFalse(mixedTimed)
        guard case .answered(_, let kernelRTT, _, _, _, let kernelTimed)? = conclude(&tracker, match, rtt: 2_000_000, kernel: sentAt + 1_000_000) else { return XCTFail() }
        XCTAssertEqual(kernelRTT, 900_000, "kernel stamps at both ends")
        XCTAssertTrue(kernelTimed)
    }

    func testSYNsAreKernelTimedLikeEchoRequests() {
        var tracker = makeTracker()
        XCTAssertTrue(tracker.needsTransmitStamp(probeNumber: 101), "a SYN waits for its transmit stamp as an echo request does")
        tracker.recordTransmitStamp(probeNumber: 101, realtime: sentAt + 100_000)
        XCTAssertFalse(tracker.needsTransmitStamp(probeNumber: 101))
        let match = tracker.match(tcpAnswer: synAck(), from: tcpTarget, ports: ports)
        guard case .answered(_, let rtt, _, true, nil, let kernelTimed)? = conclude(&tracker, match, rtt: 2_000_000, kernel: sentAt + 700_000) else { return XCTFail() }
        XCTAssertEqual(rtt, 600_000, "the SYN's transmit stamp and the SYN-ACK's receive stamp")
        XCTAssertTrue(kernelTimed)
    }

    func testReasonCodesAreCountedUnderTheirStableNamesSharedWithTheEchoTracker() {
        var tracker = makeTracker()
        tracker.count(.wrongCookie)
        tracker.count(.wrongCookie)
        tracker.count(.sendUnreachable)
        tracker.countRejected("checksum")
        XCTAssertEqual(tracker.ignored, ["wrong_cookie": 2, "send_unreachable": 1, "rejected_checksum": 1])
        for reason in PathTracker.IgnoredReason.allCases {
            if let echo = EchoTracker.IgnoredReason.allCases.first(where: { "\($0)" == "\(reason)" }) {
                XCTAssertEqual(reason.rawValue, echo.rawValue, "the same reason is spelt the same in both trackers")
            }
        }
    }
}
