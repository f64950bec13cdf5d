import ProbeResults
import XCTest
@testable import ProbeEngine

final class ICMPEchoCodecTests: XCTestCase {
    let cookie: UInt64 = 0x0123_4567_89ab_cdef

    func testChecksumMatchesRFC1071Example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0x220d (folded 0xddf2 complemented).
        XCTAssertEqual(ICMPEcho.checksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d)
    }

    func testChecksumPadsAnOddLastByteWithZero() {
        XCTAssertEqual(ICMPEcho.checksum([0x12, 0x34, 0x56]), ICMPEcho.checksum([0x12, 0x34, 0x56, 0x00]))
        XCTAssertEqual(ICMPEcho.checksum([0x12, 0x34, 0x56]), ~UInt16(0x1234 + 0x5600))
    }

    func testChecksumOfAPacketIncludingItsChecksumIsZero() {
        var packet: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv4, identifier: 0xbeef, probeNumber: 0x0001_0203, cookie: cookie, payloadLength: 56, into: &packet)
        XCTAssertEqual(ICMPEcho.checksum(packet), 0)
    }

    func testEncodedIPv4RequestHasTypeIdentifierSequenceCookieAndProbeNumber() {
        var packet: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv4, identifier: 0xbeef, probeNumber: 0xa1b2_c3d4, cookie: cookie, payloadLength: 56, into: &packet)
        XCTAssertEqual(packet.count, 64)
        XCTAssertEqual(Array(packet[0..<2]), [8, 0])
        XCTAssertEqual(Array(packet[4..<8]), [0xbe, 0xef, 0xc3, 0xd4], "identifier, then the low 16 bits of the probe number as sequence")
        XCTAssertEqual(Array(packet[8..<16]), [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef])
        XCTAssertEqual(Array(packet[16..<20]), [0xa1, 0xb2, 0xc3, 0xd4])
        XCTAssertEqual(packet[20], 0x10, "fill pattern starts after cookie and probe number")
    }

    func testEncodedIPv6RequestLeavesTheChecksumToTheKernel() {
        var packet: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv6, identifier: 7, probeNumber: 9, cookie: cookie, payloadLength: 12, into: &packet)
        XCTAssertEqual(packet.count, 20)
        XCTAssertEqual(packet[0], 128)
        XCTAssertEqual(Array(packet[2..<4]), [0, 0])
    }

    /// Turns an encoded request into the reply a host would send (type 0 / 129).
    func reply(family: AddressFamily, identifier: UInt16, probeNumber: UInt32, payloadLength: Int = 56) -> [UInt8] {
        var packet: [UInt8] = []
        ICMPEcho.encodeRequest(family: family, identifier: identifier, probeNumber: probeNumber, cookie: cookie, payloadLength: payloadLength, into: &packet)
        packet[0] = family == .ipv4 ? 0 : 129
        if family == .ipv4 {
            packet[2] = 0
            packet[3] = 0
            let sum = ICMPEcho.checksum(packet)
            packet[2] = UInt8(sum >> 8)
            packet[3] = UInt8(sum & 0xff)
        }
        return packet
    }

    func ipv4Header(protocolNumber: UInt8 = 1, ttl: UInt8 = 61, source: [UInt8] = [127, 0, 0, 1], destination: [UInt8] = [127, 0, 0, 1]) -> [UInt8] {
        [0x45, 0, 0, 0, 0, 0, 0, 0, ttl, protocolNumber, 0, 0] + source + destination
    }

    func decode(_ bytes: [UInt8], family: AddressFamily, includesIPHeader: Bool = false) -> Result<ICMPEcho.Decoded, ICMPEcho.Rejection> {
        bytes.withUnsafeBytes { ICMPEcho.decode($0, family: family, includesIPHeader: includesIPHeader) }
    }

    func testIPv4ReplyDecodesAllFields() throws {
        let result = decode(reply(family: .ipv4, identifier: 0x1234, probeNumber: 0x0007_0009), family: .ipv4)
        XCTAssertEqual(try result.get(), .reply(ICMPEcho.Reply(identifier: 0x1234, sequence: 0x0009, cookie: cookie, probeNumber: 0x0007_0009, payloadLength: 56, ttl: nil)))
    }

    func testRawIPv4ReplyTakesTheTTLFromTheIPHeader() throws {
        let bytes = ipv4Header(ttl: 61) + reply(family: .ipv4, identifier: 1, probeNumber: 2)
        guard case .reply(let decoded) = try decode(bytes, family: .ipv4, includesIPHeader: true).get() else { return XCTFail("not a reply") }
        XCTAssertEqual(decoded.ttl, 61)
        XCTAssertEqual(decoded.probeNumber, 2)
    }

    func testIPv6ReplyDecodes() throws {
        let result = decode(reply(family: .ipv6, identifier: 5, probeNumber: 70_000, payloadLength: 12), family: .ipv6)
        XCTAssertEqual(try result.get(), .reply(ICMPEcho.Reply(identifier: 5, sequence: UInt16(70_000 & 0xffff), cookie: cookie, probeNumber: 70_000, payloadLength: 12, ttl: nil)))
    }

    func testTruncatedPacketsAreRejectedAtEveryLength() {
        let full = reply(family: .ipv4, identifier: 1, probeNumber: 2, payloadLength: 12)
        for length in 0..<(ICMPEcho.headerLength + ICMPEcho.minimumPayloadLength) {
            let result = decode(Array(full.prefix(length)), family: .ipv4)
            guard case .failure(let rejection) = result else { return XCTFail("length \(length) accepted") }
            XCTAssertTrue([.truncated, .badChecksum].contains(rejection), "length \(length): \(rejection)")
        }
        let rawTruncated = Array((ipv4Header() + full).prefix(19))
        XCTAssertEqual(decode(rawTruncated, family: .ipv4, includesIPHeader: true), .failure(.truncated))
        let shortV6 = Array(reply(family: .ipv6, identifier: 1, probeNumber: 2).prefix(15))
        XCTAssertEqual(decode(shortV6, family: .ipv6), .failure(.truncated))
    }

    func testCorruptedIPv4ReplyFailsTheChecksum() {
        var bytes = reply(family: .ipv4, identifier: 1, probeNumber: 2)
        bytes[30] ^= 0xff
        XCTAssertEqual(decode(bytes, family: .ipv4), .failure(.badChecksum))
    }

    func testEchoRequestsAndOtherTypesAreNotReplies() {
        var request: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv4, identifier: 1, probeNumber: 2, cookie: cookie, payloadLength: 56, into: &request)
        XCTAssertEqual(decode(request, family: .ipv4), .failure(.otherType))
        var v6Request: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv6, identifier: 1, probeNumber: 2, cookie: cookie, payloadLength: 56, into: &v6Request)
        XCTAssertEqual(decode(v6Request, family: .ipv6), .failure(.otherType))
    }

    func testGarbledIPHeaderIsRejected() {
        var bytes = ipv4Header() + reply(family: .ipv4, identifier: 1, probeNumber: 2)
        bytes[0] = 0x65 // version 6 in an IPv4 header
        XCTAssertEqual(decode(bytes, family: .ipv4, includesIPHeader: true), .failure(.malformedIPHeader))
        let udp = ipv4Header(protocolNumber: 17) + reply(family: .ipv4, identifier: 1, probeNumber: 2)
        XCTAssertEqual(decode(udp, family: .ipv4, includesIPHeader: true), .failure(.malformedIPHeader))
        var longHeader = ipv4Header() + reply(family: .ipv4, identifier: 1, probeNumber: 2)
        longHeader[0] = 0x4f // claims a 60-byte header in a 40-byte packet
        XCTAssertEqual(decode(Array(longHeader.prefix(40)), family: .ipv4, includesIPHeader: true), .failure(.truncated))
    }

    func testIPv4DestinationUnreachableQuotingOurRequestDecodes() throws {
        var request: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv4, identifier: 0x4242, probeNumber: 0x0003_0004, cookie: cookie, payloadLength: 56, into: &request)
        var message: [UInt8] = [3, 1, 0, 0, 0, 0, 0, 0] + ipv4Header(destination: [198, 18, 0, 9]) + request
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        let decoded = try decode(message, family: .ipv4).get()
        XCTAssertEqual(decoded, .error(ICMPEcho.ErrorReport(kind: .destinationUnreachable, type: 3, code: 1, originalDestination: IPAddress(parsing: "198.18.0.9")!,
                                                            identifier: 0x4242, sequence: 4, cookie: cookie, probeNumber: 0x0003_0004)))
    }

    func testIPv4ErrorQuotingOnlyEightBytesStillNamesIdentifierAndSequence() throws {
        var request: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv4, identifier: 9, probeNumber: 10, cookie: cookie, payloadLength: 56, into: &request)
        var message: [UInt8] = [11, 0, 0, 0, 0, 0, 0, 0] + ipv4Header(destination: [198, 18, 0, 1]) + request.prefix(8)
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        guard case .error(let report) = try decode(message, family: .ipv4).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.kind, .timeExceeded)
        XCTAssertEqual(report.identifier, 9)
        XCTAssertEqual(report.sequence, 10)
        XCTAssertNil(report.cookie)
        XCTAssertNil(report.probeNumber)
    }

    func testIPv6DestinationUnreachableDecodes() throws {
        var request: [UInt8] = []
        ICMPEcho.encodeRequest(family: .ipv6, identifier: 3, probeNumber: 4, cookie: cookie, payloadLength: 56, into: &request)
        let destination: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [5]
        let ipv6Header: [UInt8] = [0x60, 0, 0, 0, 0, 64, 58, 64] + [UInt8](repeating: 0, count: 16) + destination
        let message: [UInt8] = [1, 3, 0, 0, 0, 0, 0, 0] + ipv6Header + request
        guard case .error(let report) = try decode(message, family: .ipv6).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.originalDestination, IPAddress(parsing: "2001:db8::5"))
        XCTAssertEqual(report.probeNumber, 4)
        XCTAssertEqual(report.code, 3)
    }

    func testErrorAboutAnUnrelatedProtocolIsRejected() {
        var message: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + ipv4Header(protocolNumber: 17) + [UInt8](repeating: 0, count: 8)
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        XCTAssertEqual(decode(message, family: .ipv4), .failure(.unrelatedError))
    }

    func testRandomBytesNeverCrashTheDecoder() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...120, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if length > 0, Bool.random() { bytes[0] = [0, 3, 11, 129, 1, 0x45][Int.random(in: 0...5)] }
            for family in AddressFamily.allCases {
                _ = decode(bytes, family: family)
                _ = decode(bytes, family: family, includesIPHeader: true)
            }
        }
    }
}
