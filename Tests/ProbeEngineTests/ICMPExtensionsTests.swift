import ProbeResults
import XCTest
@testable import ProbeEngine

/// ICMP extension structures (RFC 4884) with MPLS label stacks (RFC 4950): exact decodes of
/// hand-written structures in both placements and both families, every rejection by its
/// stable reason, and a seeded fuzz run over random, truncated, oversized and corrupted
/// messages.
final class ICMPExtensionsTests: XCTestCase {
    let cookie: UInt64 = 0x0123_4567_89ab_cdef
    let source: [UInt8] = [198, 18, 0, 1]
    let target: [UInt8] = [198, 18, 50, 9]

    /// Label 16005, TC 0, S 0, TTL 1 and label 24001, TC 5, S 1, TTL 254, written out by hand:
    /// 16005 = 0x3e85, so 0x3e85 << 12 | 0 << 9 | 0 << 8 | 1 = 0x03e85001; 24001 = 0x5dc1,
    /// 0x5dc1 << 12 | 5 << 9 | 1 << 8 | 0xfe = 0x05dc1bfe.
    let twoEntries: [UInt8] = [0x03, 0xe8, 0x50, 0x01, 0x05, 0xdc, 0x1b, 0xfe]
    let twoEntriesDecoded = [MPLSLabelStackEntry(label: 16005, trafficClass: 0, bottomOfStack: false, ttl: 1),
                             MPLSLabelStackEntry(label: 24001, trafficClass: 5, bottomOfStack: true, ttl: 254)]

    /// An extension structure: header (version 2), then `objects`; the checksum filled in
    /// unless `checksum` is given.
    func structure(_ objects: [UInt8], version: UInt8 = 2, checksum: UInt16? = nil) -> [UInt8] {
        var bytes: [UInt8] = [version << 4, 0, 0, 0] + objects
        let sum = checksum ?? ICMPEcho.checksum(bytes)
        bytes[2] = UInt8(sum >> 8)
        bytes[3] = UInt8(sum & 0xff)
        return bytes
    }

    func object(classNumber: UInt8 = 1, type: UInt8 = 1, payload: [UInt8], length: Int? = nil) -> [UInt8] {
        let total = length ?? (4 + payload.count)
        return [UInt8(total >> 8), UInt8(total & 0xff), classNumber, type] + payload
    }

    func ipv4Header(from: [UInt8], to: [UInt8], ttl: UInt8 = 1) -> [UInt8] {
        [0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 1, 0, 0] + from + to
    }

    /// Our path probe as quoted: IPv4 header and the echo request.
    func quotedProbeV4(probeNumber: UInt32 = 7, payload: Int = 24) -> [UInt8] {
        var probe: [UInt8] = []
        PathPacket.encodeRequest(family: .ipv4, identifier: 0xbeef, probeNumber: probeNumber, cookie: cookie, flow: 0, payloadLength: payload, into: &probe)
        return ipv4Header(from: source, to: target) + probe
    }

    func quotedProbeV6(probeNumber: UInt32 = 7) -> [UInt8] {
        var probe: [UInt8] = []
        PathPacket.encodeRequest(family: .ipv6, identifier: 0xbeef, probeNumber: probeNumber, cookie: cookie, flow: 0, payloadLength: 24, into: &probe)
        let from = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let to = [0x20, 0x01, 0x0d, 0xb8, 0, 0x50] + [UInt8](repeating: 0, count: 9) + [9]
        return [0x60, 0, 0, 0, 0, UInt8(probe.count), 58, 1] + from + to + probe
    }

    func padded(_ bytes: [UInt8], to length: Int) -> [UInt8] {
        Array(bytes.prefix(length)) + [UInt8](repeating: 0, count: max(0, length - bytes.count))
    }

    /// An ICMP message: type, code, checksum (filled for IPv4), the length byte at its
    /// family's place, then the quote and the extension.
    func message(_ family: AddressFamily, type: UInt8? = nil, lengthField: UInt8, quote: [UInt8], extension bytes: [UInt8]) -> [UInt8] {
        var header: [UInt8] = [type ?? (family == .ipv4 ? 11 : 3), 0, 0, 0, 0, 0, 0, 0]
        header[family == .ipv4 ? 5 : 4] = lengthField
        var message = header + quote + bytes
        if family == .ipv4 {
            let sum = ICMPEcho.checksum(message)
            message[2] = UInt8(sum >> 8)
            message[3] = UInt8(sum & 0xff)
        }
        return message
    }

    func decode(_ bytes: [UInt8], _ family: AddressFamily) -> Result<ICMPExtensions.Extensions, ICMPExtensions.Rejection> {
        bytes.withUnsafeBytes { ICMPExtensions.decode($0, family: family) }
    }

    func decodeError(_ bytes: [UInt8], _ family: AddressFamily) -> Result<PathPacket.ErrorReport, PathPacket.Rejection> {
        bytes.withUnsafeBytes { PathPacket.decodeError($0, family: family, includesIPHeader: false) }
    }

    // MARK: valid structures

    func testRFC4884PlacementIPv4GivesTheStackAndTheQuotedProbeStillDecodes() throws {
        let quote = padded(quotedProbeV4(probeNumber: 0x0102_0304), to: 128)
        let bytes = message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(bytes, .ipv4).get(), ICMPExtensions.Extensions(placement: .rfc4884, labelStack: twoEntriesDecoded))
        let report = try decodeError(bytes, .ipv4).get()
        XCTAssertEqual(report.labelStack, twoEntriesDecoded)
        XCTAssertNil(report.extensionRejection)
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 0x0304, cookie: cookie, probeNumber: 0x0102_0304), "the quote before the extension is read as before")
    }

    func testRFC4884PlacementIPv6CountsTheLengthIn64BitWords() throws {
        // A 200-byte original datagram field: 25 words of 8 bytes.
        let quote = padded(quotedProbeV6(probeNumber: 99), to: 200)
        let bytes = message(.ipv6, lengthField: 25, quote: quote, extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(bytes, .ipv6).get(), ICMPExtensions.Extensions(placement: .rfc4884, labelStack: twoEntriesDecoded))
        let report = try decodeError(bytes, .ipv6).get()
        XCTAssertEqual(report.labelStack, twoEntriesDecoded)
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 99, cookie: cookie, probeNumber: 99))
        // The same bytes read with the IPv4 rule (32-bit words) point into the quote.
        var asIPv4 = bytes
        asIPv4[5] = 25
        asIPv4[4] = 0
        XCTAssertEqual(decode(asIPv4, .ipv4).failure, .badLength, "25 words of 4 bytes is under 128")
    }

    func testFixed128PlacementBothFamiliesOneEntry() throws {
        let one = [MPLSLabelStackEntry(label: 16005, trafficClass: 0, bottomOfStack: true, ttl: 1)]
        // 0x3e85 << 12 | 1 << 8 | 1 = 0x03e85101
        let extensionBytes = structure(object(payload: [0x03, 0xe8, 0x51, 0x01]))
        for (family, quote) in [(AddressFamily.ipv4, quotedProbeV4()), (.ipv6, quotedProbeV6())] {
            let bytes = message(family, lengthField: 0, quote: padded(quote, to: 128), extension: extensionBytes)
            XCTAssertEqual(try decode(bytes, family).get(), ICMPExtensions.Extensions(placement: .fixed128, labelStack: one), "\(family)")
            XCTAssertEqual(try decodeError(bytes, family).get().labelStack, one, "\(family)")
        }
    }

    func testDestinationUnreachableCarriesExtensionsTooAndOtherTypesNone() throws {
        let quote = padded(quotedProbeV4(), to: 128)
        let bytes = message(.ipv4, type: 3, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(bytes, .ipv4).get().labelStack, twoEntriesDecoded)
        let v6 = message(.ipv6, type: 1, lengthField: 16, quote: padded(quotedProbeV6(), to: 128), extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(v6, .ipv6).get().labelStack, twoEntriesDecoded)
        let echoReply = message(.ipv4, type: 0, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(echoReply, .ipv4).get(), .absent, "an echo reply has no extensions to read")
        let packetTooBig = message(.ipv6, type: 2, lengthField: 16, quote: padded(quotedProbeV6(), to: 128), extension: structure(object(payload: twoEntries)))
        XCTAssertEqual(try decode(packetTooBig, .ipv6).get(), .absent, "packet too big has no length field (bytes 4-7 are the MTU)")
    }

    func testAZeroChecksumMeansNoneSentInRFC4884ButIsRejectedInTheFixedPlacement() throws {
        let unchecked = structure(object(payload: twoEntries), checksum: 0)
        let rfc = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128), extension: unchecked)
        XCTAssertEqual(try decode(rfc, .ipv4).get().labelStack, twoEntriesDecoded, "RFC 4884 section 7: all-zero means no checksum was transmitted")
        let fixed = message(.ipv4, lengthField: 0, quote: padded(quotedProbeV4(), to: 128), extension: unchecked)
        XCTAssertEqual(decode(fixed, .ipv4).failure, .badChecksum, "without a length field only the checksum says it is no quote")
    }

    func testUnknownObjectsAreSkippedAndTheFirstLabelStackCounts() throws {
        let interfaceInformation = object(classNumber: 2, type: 0x0c, payload: [1, 2, 3, 4, 5, 6, 7, 8])
        let second = object(payload: [0x00, 0x00, 0x11, 0x01])
        let bytes = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128),
                            extension: structure(interfaceInformation + object(payload: twoEntries) + second))
        XCTAssertEqual(try decode(bytes, .ipv4).get().labelStack, twoEntriesDecoded)
        let onlyUnknown = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128), extension: structure(interfaceInformation))
        XCTAssertEqual(try decode(onlyUnknown, .ipv4).get(), ICMPExtensions.Extensions(placement: .rfc4884, labelStack: []))
        let otherType = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128), extension: structure(object(type: 2, payload: twoEntries)))
        XCTAssertEqual(try decode(otherType, .ipv4).get().labelStack, [], "class 1 C-type 2 is not the incoming label stack")
    }

    func testMessagesWithoutAnExtensionHaveNoneAndNoRejection() throws {
        // A long quote (the whole probe, past 128 bytes) and no length field: our probes' fill
        // pattern never has version 2 at byte 128.
        for payload in [24, 120, 200, 500] {
            let quote = quotedProbeV4(payload: payload)
            let bytes = message(.ipv4, lengthField: 0, quote: quote, extension: [])
            XCTAssertEqual(try decode(bytes, .ipv4).get(), .absent, "payload \(payload)")
            let report = try decodeError(bytes, .ipv4).get()
            XCTAssertEqual(report.labelStack, [])
            XCTAssertNil(report.extensionRejection)
        }
        let exact = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128), extension: [])
        XCTAssertEqual(try decode(exact, .ipv4).get(), .absent, "a length field and nothing after the datagram")
    }

    // MARK: rejections

    func testEachMalformedStructureIsRejectedWithItsReasonAndTheAnswerStillDecodes() throws {
        let quote = padded(quotedProbeV4(), to: 128)
        let good = structure(object(payload: twoEntries))
        var corrupted = good
        corrupted[9] ^= 0x40
        let cases: [(String, [UInt8], ICMPExtensions.Rejection)] = [
            ("length field past the end", message(.ipv4, lengthField: 60, quote: quote, extension: good), .truncated),
            ("length field under 128 bytes", message(.ipv4, lengthField: 10, quote: quote, extension: good), .badLength),
            ("version 1", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries), version: 1)), .badVersion),
            ("a flipped label bit", message(.ipv4, lengthField: 32, quote: quote, extension: corrupted), .badChecksum),
            ("a header cut short", message(.ipv4, lengthField: 32, quote: quote, extension: [0x20, 0]), .truncated),
            ("an object length of 0", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries, length: 0))), .badObjectLength),
            ("an object length of 6", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries, length: 6))), .badObjectLength),
            ("an object past the end", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries, length: 16))), .truncated),
            ("2 bytes after the last object", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: twoEntries) + [0, 4])), .truncated),
            ("an empty stack", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: []))), .emptyLabelStack),
            ("17 entries", message(.ipv4, lengthField: 32, quote: quote, extension: structure(object(payload: [UInt8](repeating: 1, count: 68)))), .tooManyLabels),
            ("fixed placement, bad checksum", message(.ipv4, lengthField: 0, quote: quote, extension: corrupted), .badChecksum),
        ]
        for (what, bytes, reason) in cases {
            XCTAssertEqual(decode(bytes, .ipv4).failure, reason, what)
            let report = try decodeError(bytes, .ipv4).get()
            XCTAssertEqual(report.extensionRejection, reason, "\(what): the answer decodes, the extension is rejected")
            XCTAssertEqual(report.labelStack, [], what)
            XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 7, cookie: cookie, probeNumber: 7), what)
        }
        XCTAssertEqual(Set(ICMPExtensions.Rejection.allCases.map(\.rawValue)), Self.stableReasons, "the reasons are stable: counted by name")
    }

    static let stableReasons: Set<String> = ["truncated", "bad_length", "bad_version", "bad_checksum", "bad_object_length", "empty_label_stack", "too_many_labels"]

    func testSixteenEntriesAreTheMost() throws {
        let entries = (0..<16).flatMap { index -> [UInt8] in
            let word = UInt32(index + 100) << 12 | (index == 15 ? 0x100 : 0) | 64
            return [UInt8(word >> 24), UInt8(word >> 16 & 0xff), UInt8(word >> 8 & 0xff), UInt8(word & 0xff)]
        }
        let bytes = message(.ipv4, lengthField: 32, quote: padded(quotedProbeV4(), to: 128), extension: structure(object(payload: entries)))
        let stack = try decode(bytes, .ipv4).get().labelStack
        XCTAssertEqual(stack.map(\.label), Array(100..<116))
        XCTAssertEqual(stack.map(\.bottomOfStack), Array(repeating: false, count: 15) + [true])
        XCTAssertEqual(Set(stack.map(\.ttl)), [64])
    }

    func testEncoderRoundTripsAndTheCompactAndMtrForms() throws {
        let bytes = ICMPExtensions.encodeLabelStack(twoEntriesDecoded)
        XCTAssertEqual(bytes, structure(object(payload: twoEntries)))
        XCTAssertEqual(MPLSLabelStackEntry.compact(twoEntriesDecoded), "16005/0/0/1 24001/5/1/254")
        XCTAssertEqual(twoEntriesDecoded[1].mtrText, "[MPLS: Lbl 24001 TC 5 S 1 TTL 254]")
        XCTAssertEqual(MPLSLabelStackEntry(label: 0xf_ffff, trafficClass: 7, bottomOfStack: true, ttl: 255).word, 0xffff_ffff)
    }

    // MARK: fuzz

    func testRandomTruncatedOversizedAndCorruptedMessagesNeverCrashAndRejectWithAStableReason() {
        var generator = SplitMix(seed: 4950)
        let v4Quote = padded(quotedProbeV4(), to: 128)
        let v6Quote = padded(quotedProbeV6(), to: 128)
        let seeds: [(AddressFamily, [UInt8])] = [
            (.ipv4, message(.ipv4, lengthField: 32, quote: v4Quote, extension: structure(object(payload: twoEntries)))),
            (.ipv4, message(.ipv4, lengthField: 0, quote: v4Quote, extension: structure(object(payload: twoEntries)))),
            (.ipv6, message(.ipv6, lengthField: 16, quote: v6Quote, extension: structure(object(payload: twoEntries)))),
            (.ipv6, message(.ipv6, lengthField: 0, quote: v6Quote, extension: structure(object(classNumber: 2, payload: [1, 2, 3, 4]) + object(payload: twoEntries)))),
        ]
        var outcomes: [String: Int] = [:]
        for round in 0..<30_000 {
            var (family, bytes) = seeds[round % seeds.count]
            switch round % 5 {
            case 0:
                // Random bytes behind a plausible type.
                bytes = [family == .ipv4 ? 11 : 3, 0] + (0..<Int(generator.next() % 400)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            case 1:
                // Truncated anywhere.
                bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1))))
            case 2:
                // Oversized: a length field or an object length far past the end, trailing junk.
                bytes[family == .ipv4 ? 5 : 4] = UInt8(truncatingIfNeeded: generator.next())
                if generator.next() % 2 == 0 { bytes += (0..<Int(generator.next() % 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
            case 3:
                // A few bytes of the extension corrupted (bad checksum, version, lengths).
                for _ in 0..<(1 + Int(generator.next() % 3)) {
                    let at = 136 + Int(generator.next() % UInt64(bytes.count - 136))
                    bytes[at] = UInt8(truncatingIfNeeded: generator.next())
                }
            default:
                // Zero lengths: object length 0 with a valid checksum (a loop must still end).
                let at = 136 + 4
                bytes[at] = 0
                bytes[at + 1] = UInt8(generator.next() % 2 == 0 ? 0 : 2)
                bytes[136 + 2] = 0
                bytes[136 + 3] = 0
            }
            for reading in AddressFamily.allCases {
                switch decode(bytes, reading) {
                case .success(let extensions):
                    outcomes["decoded", default: 0] += 1
                    XCTAssertLessThanOrEqual(extensions.labelStack.count, ICMPExtensions.maximumLabelStackEntries)
                    if extensions.placement == nil { XCTAssertEqual(extensions.labelStack, []) }
                case .failure(let rejection):
                    XCTAssertTrue(Self.stableReasons.contains(rejection.rawValue), rejection.rawValue)
                    outcomes[rejection.rawValue, default: 0] += 1
                }
                // The whole error decoder with the extension in it never traps either.
                _ = decodeError(bytes, reading)
            }
        }
        for reason in ["decoded", "truncated", "bad_length", "bad_version", "bad_checksum", "bad_object_length"] {
            XCTAssertGreaterThan(outcomes[reason] ?? 0, 0, "the fuzz run reached \(reason): \(outcomes)")
        }
    }
}
