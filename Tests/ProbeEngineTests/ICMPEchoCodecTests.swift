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

/// "Fragmentation needed" (IPv4 unreachable code 4, RFC 1191's next-hop MTU in bytes 6-7)
/// and ICMPv6 "packet too big" (RFC 4443's 32-bit MTU in bytes 4-7): errors of their own,
/// carrying the MTU, and as hostile as any other input.
final class ICMPTooBigCodecTests: XCTestCase {
    let cookie: UInt64 = 0x0123_4567_89ab_cdef

    func request(_ family: AddressFamily, identifier: UInt16, probeNumber: UInt32, payloadLength: Int = 1472) -> [UInt8] {
        var packet: [UInt8] = []
        ICMPEcho.encodeRequest(family: family, identifier: identifier, probeNumber: probeNumber, cookie: cookie, payloadLength: payloadLength, into: &packet)
        return packet
    }

    func ipv4Header(protocolNumber: UInt8 = 1, destination: [UInt8]) -> [UInt8] {
        [0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, protocolNumber, 0, 0, 198, 18, 230, 1] + destination
    }

    func ipv6Header(nextHeader: UInt8 = 58, destination: [UInt8]) -> [UInt8] {
        [0x60, 0, 0, 0, 0x05, 0xc8, nextHeader, 64] + [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1] + destination
    }

    /// An IPv4 "fragmentation needed" whose checksum is right for exactly these bytes.
    func fragmentationNeeded(mtu: UInt16, unused: UInt16 = 0, quoting quoted: [UInt8]) -> [UInt8] {
        withChecksum([3, 4, 0, 0, UInt8(unused >> 8), UInt8(unused & 0xff), UInt8(mtu >> 8), UInt8(mtu & 0xff)] + quoted)
    }

    func withChecksum(_ bytes: [UInt8]) -> [UInt8] {
        var message = bytes
        guard message.count >= 4 else { return message }
        message[2] = 0
        message[3] = 0
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return message
    }

    func packetTooBig(mtu: UInt32, quoting quoted: [UInt8]) -> [UInt8] {
        [2, 0, 0, 0, UInt8(mtu >> 24), UInt8((mtu >> 16) & 0xff), UInt8((mtu >> 8) & 0xff), UInt8(mtu & 0xff)] + quoted
    }

    func decode(_ bytes: [UInt8], family: AddressFamily, includesIPHeader: Bool = false) -> Result<ICMPEcho.Decoded, ICMPEcho.Rejection> {
        bytes.withUnsafeBytes { ICMPEcho.decode($0, family: family, includesIPHeader: includesIPHeader) }
    }

    let destination4: [UInt8] = [198, 18, 231, 2]
    var destination6: [UInt8] { [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x02, 0x31] + [UInt8](repeating: 0, count: 7) + [2] }

    func testIPv4FragmentationNeededIsTooBigWithTheNextHopMTU() throws {
        let message = fragmentationNeeded(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 0x4242, probeNumber: 0x0003_0004))
        XCTAssertEqual(try decode(message, family: .ipv4).get(), .error(ICMPEcho.ErrorReport(
            kind: .tooBig, type: 3, code: 4, mtu: 1400, originalDestination: IPAddress(parsing: "198.18.231.2")!,
            identifier: 0x4242, sequence: 4, cookie: cookie, probeNumber: 0x0003_0004)))
    }

    func testIPv4MTUIsReadFromBytesSixAndSevenOnly() throws {
        // RFC 1191: bytes 4-5 are unused; a router that leaves garbage there does not change the MTU.
        let message = fragmentationNeeded(mtu: 1280, unused: 0xffff, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2))
        guard case .error(let report) = try decode(message, family: .ipv4).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.kind, .tooBig)
        XCTAssertEqual(report.mtu, 1280)
    }

    func testIPv4FragmentationNeededFromAPreRFC1191RouterNamesNoMTU() throws {
        let message = fragmentationNeeded(mtu: 0, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2))
        guard case .error(let report) = try decode(message, family: .ipv4).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.kind, .tooBig)
        XCTAssertEqual(report.code, 4)
        XCTAssertNil(report.mtu, "MTU 0 is a router that names none")
        XCTAssertEqual(report.probeNumber, 2)
    }

    func testOtherIPv4UnreachableCodesCarryNoMTU() throws {
        var message = fragmentationNeeded(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2))
        message[1] = 1
        guard case .error(let report) = try decode(withChecksum(message), family: .ipv4).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.kind, .destinationUnreachable)
        XCTAssertNil(report.mtu)
    }

    func testRawIPv4FragmentationNeededDecodesAfterTheOuterHeader() throws {
        let outer: [UInt8] = [0x45, 0xc0, 0x02, 0x40, 0, 0, 0, 0, 63, 1, 0, 0, 198, 18, 230, 2, 198, 18, 230, 1]
        let message = fragmentationNeeded(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 7, probeNumber: 70_000).prefix(8 + 12))
        guard case .error(let report) = try decode(outer + message, family: .ipv4, includesIPHeader: true).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.kind, .tooBig)
        XCTAssertEqual(report.mtu, 1400)
        XCTAssertEqual(report.originalDestination, IPAddress(parsing: "198.18.231.2"))
        XCTAssertEqual(report.sequence, UInt16(70_000 & 0xffff))
        XCTAssertEqual(report.probeNumber, 70_000)
    }

    func testIPv4FragmentationNeededQuotingEightBytesNamesIdentifierAndSequenceOnly() throws {
        let message = fragmentationNeeded(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 9, probeNumber: 10).prefix(8))
        guard case .error(let report) = try decode(message, family: .ipv4).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(report.mtu, 1400)
        XCTAssertEqual(report.identifier, 9)
        XCTAssertEqual(report.sequence, 10)
        XCTAssertNil(report.cookie)
        XCTAssertNil(report.probeNumber)
    }

    func testTruncatedIPv4FragmentationNeededIsRejectedAtEveryLength() {
        // ICMP header (8) + quoted IPv4 header (20) + the quoted ICMP header (8): 36 bytes at least.
        let full = fragmentationNeeded(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2))
        for length in 0..<36 {
            // The checksum made right for the shorter packet: what is left to reject it is its length.
            XCTAssertEqual(decode(withChecksum(Array(full.prefix(length))), family: .ipv4), .failure(.truncated), "length \(length)")
        }
        XCTAssertNotNil(try? decode(withChecksum(Array(full.prefix(36))), family: .ipv4).get(), "36 bytes quote identifier and sequence")
        XCTAssertEqual(decode(Array(full.prefix(100)), family: .ipv4), .failure(.badChecksum), "the checksum covers what arrived")
    }

    func testIPv4FragmentationNeededWithAMalformedOrForeignQuoteIsRejected() {
        var badVersion = ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2)
        badVersion[0] = 0x65
        XCTAssertEqual(decode(fragmentationNeeded(mtu: 1400, quoting: badVersion), family: .ipv4), .failure(.malformedIPHeader))
        let udp = ipv4Header(protocolNumber: 17, destination: destination4) + [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(decode(fragmentationNeeded(mtu: 1400, quoting: udp), family: .ipv4), .failure(.unrelatedError))
        var reply = ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2)
        reply[20] = 0 // quotes an echo reply, not a request of ours
        XCTAssertEqual(decode(fragmentationNeeded(mtu: 1400, quoting: reply), family: .ipv4), .failure(.unrelatedError))
    }

    func testIPv6PacketTooBigIsTooBigWithTheThirtyTwoBitMTU() throws {
        let message = packetTooBig(mtu: 1280, quoting: ipv6Header(destination: destination6) + request(.ipv6, identifier: 0x0102, probeNumber: 0x000a_000b).prefix(1232))
        XCTAssertEqual(try decode(message, family: .ipv6).get(), .error(ICMPEcho.ErrorReport(
            kind: .tooBig, type: 2, code: 0, mtu: 1280, originalDestination: IPAddress(parsing: "2001:db8:0:231::2")!,
            identifier: 0x0102, sequence: 0x000b, cookie: cookie, probeNumber: 0x000a_000b)))
    }

    func testIPv6PacketTooBigReadsAllFourMTUBytes() throws {
        // 0x0001_0578: a reader of only the low 16 bits would say 1400.
        let quoted = ipv6Header(destination: destination6) + request(.ipv6, identifier: 1, probeNumber: 2, payloadLength: 56)
        guard case .error(let huge) = try decode(packetTooBig(mtu: 0x0001_0578, quoting: quoted), family: .ipv6).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(huge.mtu, 65_535, "an MTU past the largest IPv6 packet without jumbograms is held at 65535")
        guard case .error(let plain) = try decode(packetTooBig(mtu: 9000, quoting: quoted), family: .ipv6).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(plain.mtu, 9000)
        guard case .error(let none) = try decode(packetTooBig(mtu: 0, quoting: quoted), family: .ipv6).get() else { return XCTFail("not an error report") }
        XCTAssertEqual(none.kind, .tooBig)
        XCTAssertNil(none.mtu)
    }

    func testTruncatedIPv6PacketTooBigIsRejectedAtEveryLength() {
        // ICMPv6 header (8) + quoted IPv6 header (40) + the quoted ICMPv6 header (8): 56 bytes at least.
        let full = packetTooBig(mtu: 1280, quoting: ipv6Header(destination: destination6) + request(.ipv6, identifier: 1, probeNumber: 2, payloadLength: 56))
        for length in 0..<56 {
            XCTAssertEqual(decode(Array(full.prefix(length)), family: .ipv6), .failure(.truncated), "length \(length)")
        }
        guard case .success(.error(let report)) = decode(Array(full.prefix(56)), family: .ipv6) else { return XCTFail("56 bytes decode") }
        XCTAssertEqual(report.mtu, 1280)
        XCTAssertNil(report.cookie)
    }

    func testIPv6PacketTooBigAboutAnotherProtocolOrAnIPv4HeaderIsRejected() {
        let udp = ipv6Header(nextHeader: 17, destination: destination6) + [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(decode(packetTooBig(mtu: 1280, quoting: udp), family: .ipv6), .failure(.unrelatedError))
        var version4 = ipv6Header(destination: destination6) + request(.ipv6, identifier: 1, probeNumber: 2, payloadLength: 56)
        version4[0] = 0x45
        XCTAssertEqual(decode(packetTooBig(mtu: 1280, quoting: version4), family: .ipv6), .failure(.malformedIPHeader))
        // Type 2 is "packet too big" only in ICMPv6; in ICMP it is no type netprobe reads.
        let v4TypeTwo = withChecksum(packetTooBig(mtu: 1400, quoting: ipv4Header(destination: destination4) + request(.ipv4, identifier: 1, probeNumber: 2)))
        XCTAssertEqual(decode(v4TypeTwo, family: .ipv4), .failure(.otherType))
    }

    func testRandomBytesAfterATooBigHeaderNeverCrashTheDecoder() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...90, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if length > 1 { bytes[0] = Bool.random(using: &generator) ? 3 : 2 }
            if length > 1, bytes[0] == 3 { bytes[1] = 4 }
            for family in AddressFamily.allCases {
                for raw in [false, true] {
                    if case .success(.error(let report)) = decode(family == .ipv4 ? withChecksum(bytes) : bytes, family: family, includesIPHeader: raw),
                       let mtu = report.mtu {
                        XCTAssertTrue((1...65_535).contains(mtu), "MTU \(mtu)")
                    }
                }
            }
        }
    }
}
