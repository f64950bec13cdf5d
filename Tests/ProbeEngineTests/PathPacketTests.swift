import ProbeResults
import XCTest
@testable import ProbeEngine

/// Path probes and the ICMP errors routers send about them: the Paris checksum, and the
/// error decoder as hostile input (every field, every truncation, random bytes).
final class PathPacketTests: XCTestCase {
    let cookie: UInt64 = 0x0123_4567_89ab_cdef
    let source: [UInt8] = [198, 18, 0, 1]
    let target: [UInt8] = [198, 18, 50, 9]
    let router: [UInt8] = [198, 18, 100, 3]

    func request(_ family: AddressFamily = .ipv4, probeNumber: UInt32, flow: Int = 0, payload: Int = 24) -> [UInt8] {
        var packet: [UInt8] = []
        PathPacket.encodeRequest(family: family, identifier: 0xbeef, probeNumber: probeNumber, cookie: cookie, flow: flow, payloadLength: payload, into: &packet)
        return packet
    }

    /// One's-complement sum of the message (what the kernel adds the IPv6 pseudo-header to).
    func messageSum(_ bytes: [UInt8]) -> UInt16 { ~ICMPEcho.checksum(bytes) }

    func testEveryProbeOfAFlowHasTheFlowsChecksumWhateverItsSequence() {
        var checksums = Set<UInt16>()
        for probeNumber: UInt32 in [0, 1, 2, 0xffff, 0x1_0000, 0xdead_beef, 0xffff_ffff] {
            let packet = request(probeNumber: probeNumber, flow: 3)
            XCTAssertEqual(ICMPEcho.checksum(packet), 0, "a valid ICMP checksum")
            checksums.insert(UInt16(packet[2]) << 8 | UInt16(packet[3]))
            XCTAssertEqual(Array(packet[4..<8]), [0xbe, 0xef, UInt8(truncatingIfNeeded: probeNumber >> 8), UInt8(truncatingIfNeeded: probeNumber)])
            XCTAssertEqual(packet.withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self)) }, probeNumber)
        }
        XCTAssertEqual(checksums, [PathPacket.flowChecksum(3)], "one flow, one checksum: the first 4 bytes a load balancer hashes never change")
        let flows = Set((0..<16).map { PathPacket.flowChecksum($0) })
        XCTAssertEqual(flows.count, 16, "each flow its own checksum")
        XCTAssertFalse(flows.contains(0) || flows.contains(0xffff))
    }

    func testIPv6ProbesKeepTheMessageSumSoTheKernelsChecksumIsConstant() {
        let sums = Set((0..<200).map { messageSum(request(.ipv6, probeNumber: UInt32($0) &* 7919, flow: 1)) })
        XCTAssertEqual(sums.count, 1)
        XCTAssertEqual(request(.ipv6, probeNumber: 5, flow: 1)[2...3], [0, 0], "the kernel fills the ICMPv6 checksum")
        XCTAssertNotEqual(messageSum(request(.ipv6, probeNumber: 5, flow: 1)), messageSum(request(.ipv6, probeNumber: 5, flow: 2)))
    }

    // MARK: errors

    func ipv4Header(protocolNumber: UInt8, ttl: UInt8, from: [UInt8], to: [UInt8], fragmentOffset: UInt16 = 0) -> [UInt8] {
        [0x45, 0, 0, 0, 0, 0, UInt8(fragmentOffset >> 8), UInt8(fragmentOffset & 0xff), ttl, protocolNumber, 0, 0] + from + to
    }

    /// A raw IPv4 read of a router's ICMP error quoting `quoted` (IP header included).
    func errorV4(type: UInt8 = 11, code: UInt8 = 0, quoting quoted: [UInt8]) -> [UInt8] {
        var message: [UInt8] = [type, code, 0, 0, 0, 0, 0, 0] + quoted
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return ipv4Header(protocolNumber: 1, ttl: 253, from: router, to: source) + message
    }

    func quotedProbe(probeNumber: UInt32, bytes: Int? = nil) -> [UInt8] {
        let probe = request(probeNumber: probeNumber)
        return ipv4Header(protocolNumber: 1, ttl: 1, from: source, to: target) + probe.prefix(bytes ?? probe.count)
    }

    func decode(_ bytes: [UInt8], _ family: AddressFamily = .ipv4, includesIPHeader: Bool = true) -> Result<PathPacket.ErrorReport, PathPacket.Rejection> {
        bytes.withUnsafeBytes { PathPacket.decodeError($0, family: family, includesIPHeader: includesIPHeader) }
    }

    func testTimeExceededQuotingTheWholeProbeGivesCookieAndProbeNumber() throws {
        let report = try decode(errorV4(quoting: quotedProbe(probeNumber: 0x0102_0304))).get()
        XCTAssertEqual(report.kind, .timeExceeded)
        XCTAssertEqual(report.quotedDestination, IPAddress(parsing: "198.18.50.9"))
        XCTAssertEqual(report.quotedSource, IPAddress(parsing: "198.18.0.1"))
        XCTAssertEqual(report.quotedTTL, 1)
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 0x0304, cookie: cookie, probeNumber: 0x0102_0304))
    }

    func testAnEightByteQuoteGivesIdentifierAndSequenceOnly() throws {
        let report = try decode(errorV4(quoting: quotedProbe(probeNumber: 0x0102_0304, bytes: 8))).get()
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 0x0304, cookie: nil, probeNumber: nil))
    }

    func testUnreachableTooBigAndTCPQuotesDecode() throws {
        XCTAssertEqual(try decode(errorV4(type: 3, code: 1, quoting: quotedProbe(probeNumber: 9))).get().kind, .unreachable)
        XCTAssertEqual(try decode(errorV4(type: 3, code: 4, quoting: quotedProbe(probeNumber: 9))).get().kind, .tooBig)
        let syn: [UInt8] = [0xc3, 0x50, 0x01, 0xbb, 0x11, 0x22, 0x33, 0x44]
        let report = try decode(errorV4(quoting: ipv4Header(protocolNumber: 6, ttl: 1, from: source, to: target) + syn)).get()
        XCTAssertEqual(report.probe, .tcp(sourcePort: 50000, destinationPort: 443, sequence: 0x1122_3344))
    }

    func testIPv6TimeExceededDecodesFromTheICMPv6Header() throws {
        var probe = request(.ipv6, probeNumber: 77)
        probe = Array(probe)
        let from = [UInt8](repeating: 0, count: 15) + [1]
        let to = [0x20, 0x01, 0x0d, 0xb8, 0, 0x50] + [UInt8](repeating: 0, count: 9) + [9]
        let quotedHeader: [UInt8] = [0x60, 0, 0, 0, 0, UInt8(probe.count), 58, 1] + from + to
        let message: [UInt8] = [3, 0, 0, 0, 0, 0, 0, 0] + quotedHeader + probe
        let report = try decode(message, .ipv6, includesIPHeader: false).get()
        XCTAssertEqual(report.kind, .timeExceeded)
        XCTAssertEqual(report.quotedDestination, IPAddress(parsing: "2001:db8:50::9"))
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 77, cookie: cookie, probeNumber: 77))
        XCTAssertEqual(try decode([2, 0, 0, 0, 0, 0, 5, 0] + quotedHeader + probe, .ipv6, includesIPHeader: false).get().kind, .tooBig)
    }

    func testMalformedErrorsAreRejectedWithAReason() {
        let good = errorV4(quoting: quotedProbe(probeNumber: 1))
        XCTAssertEqual(decode(Array(good.prefix(19))).failure, .truncated)
        var corrupted = good
        corrupted[30] ^= 0xff
        XCTAssertEqual(decode(corrupted).failure, .badChecksum)
        XCTAssertEqual(decode(errorV4(type: 5, quoting: quotedProbe(probeNumber: 1))).failure, .otherType, "redirects are not ours to read")
        XCTAssertEqual(decode(errorV4(quoting: ipv4Header(protocolNumber: 17, ttl: 1, from: source, to: target) + [0, 53, 0, 53, 0, 8, 0, 0])).failure, .unrelatedError)
        XCTAssertEqual(decode(errorV4(quoting: ipv4Header(protocolNumber: 1, ttl: 1, from: source, to: target, fragmentOffset: 185) + Array(repeating: 0, count: 8))).failure,
                       .unrelatedError, "a later fragment has no ICMP header to match")
        var badVersion = quotedProbe(probeNumber: 1)
        badVersion[0] = 0x65
        XCTAssertEqual(decode(errorV4(quoting: badVersion)).failure, .malformedIPHeader)
        var quotedReply = quotedProbe(probeNumber: 1)
        quotedReply[20] = 0
        XCTAssertEqual(decode(errorV4(quoting: quotedReply)).failure, .unrelatedError, "an error about an echo reply is not about our request")
    }

    func testEveryTruncationOfAValidErrorIsRejectedNeverMisread() {
        let good = errorV4(quoting: quotedProbe(probeNumber: 0xabcd_0123, bytes: 8))
        for length in 0..<good.count {
            // Checksums cover the cut message; a cut one mostly fails that, else a length check.
            let result = decode(Array(good.prefix(length)))
            if case .success = result { XCTFail("a \(length)-byte prefix decoded") }
        }
    }

    func testRandomBytesAndMutationsNeverCrashTheDecoder() {
        var generator = SplitMix(seed: 14)
        let seeds = [errorV4(quoting: quotedProbe(probeNumber: 3)), errorV4(quoting: quotedProbe(probeNumber: 3, bytes: 8)),
                     errorV4(type: 3, code: 3, quoting: quotedProbe(probeNumber: 3))]
        var decoded = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(generator.next() % 120)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            } else {
                bytes = seeds[round % seeds.count]
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
                if generator.next() % 3 == 0 { bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1)))) }
            }
            for family in AddressFamily.allCases {
                for header in [true, false] {
                    if case .success(let report) = decode(bytes, family, includesIPHeader: header) {
                        decoded += 1
                        XCTAssertEqual(report.quotedDestination.family, family)
                    }
                }
            }
        }
        XCTAssertGreaterThan(decoded, 0, "some mutations keep a valid error (a mutated ID or TTL), so the success path is fuzzed too")
    }
}

extension PathPacketTests {
    func testSYNProbesCarryThePortsTheProbeNumberAsSequenceAndAValidChecksum() throws {
        let from = try XCTUnwrap(IPAddress(parsing: "198.18.0.1")), to = try XCTUnwrap(IPAddress(parsing: "198.18.70.9"))
        let segment = PathTCPSegment.syn(sourcePort: 40000, destinationPort: 443, sequence: 0xdead_beef, source: from, destination: to)
        XCTAssertEqual(segment.count, 24)
        XCTAssertEqual(Array(segment[0..<8]), [0x9c, 0x40, 0x01, 0xbb, 0xde, 0xad, 0xbe, 0xef])
        XCTAssertEqual(segment[13], 0x02, "SYN only")
        let pseudo: [UInt8] = [198, 18, 0, 1, 198, 18, 70, 9, 0, 6, 0, 24]
        XCTAssertEqual(ICMPEcho.checksum(pseudo + segment), 0, "the TCP checksum with the IPv4 pseudo-header")
        let v6 = PathTCPSegment.syn(sourcePort: 1, destinationPort: 2, sequence: 3, source: nil, destination: try XCTUnwrap(IPAddress(parsing: "2001:db8::9")))
        XCTAssertEqual(Array(v6[16..<18]), [0, 0], "IPv6: the kernel fills the checksum (IPV6_CHECKSUM)")
    }

    func testOnlySynAckAndResetAnswersDecode() {
        func segment(flags: UInt8, acknowledgment: UInt32 = 0xdead_bef0) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 20)
            bytes[0] = 0x01; bytes[1] = 0xbb; bytes[2] = 0x9c; bytes[3] = 0x40
            bytes[8] = UInt8(acknowledgment >> 24); bytes[9] = UInt8(acknowledgment >> 16 & 0xff)
            bytes[10] = UInt8(acknowledgment >> 8 & 0xff); bytes[11] = UInt8(acknowledgment & 0xff)
            bytes[12] = 5 << 4
            bytes[13] = flags
            return bytes
        }
        func decode(_ bytes: [UInt8], _ family: AddressFamily = .ipv6) -> PathTCPSegment.Answer? {
            bytes.withUnsafeBytes { PathTCPSegment.decodeAnswer($0, family: family) }
        }
        XCTAssertEqual(decode(segment(flags: 0x12)), PathTCPSegment.Answer(sourcePort: 443, destinationPort: 40000, acknowledgment: 0xdead_bef0, isSynAck: true, isReset: false))
        XCTAssertEqual(decode(segment(flags: 0x14))?.isReset, true)
        XCTAssertNil(decode(segment(flags: 0x02)), "our own SYN (seen on loopback) is no answer")
        XCTAssertNil(decode(segment(flags: 0x10)), "a bare ACK is no answer to a SYN")
        XCTAssertNil(decode(Array(segment(flags: 0x12).prefix(19))))
        let ipv4 = [0x45, 0, 0, 40, 0, 0, 0, 0, 60, 6, 0, 0, 198, 18, 70, 9, 198, 18, 0, 1] + segment(flags: 0x12)
        XCTAssertEqual(decode(ipv4, .ipv4)?.sourcePort, 443)
        XCTAssertNil(decode(Array(ipv4.prefix(30)), .ipv4))
        var udp = ipv4
        udp[9] = 17
        XCTAssertNil(decode(udp, .ipv4))
    }
}

/// A small seedable generator for the fuzz cases.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
