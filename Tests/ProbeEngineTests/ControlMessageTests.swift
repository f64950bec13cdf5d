import ProbeResults
import CSystemShims
import XCTest
@testable import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

/// The control-message codec on hand-built byte buffers (the layout written out here,
/// independently of the codec: 8-byte cmsg_len, 4-byte level, 4-byte type, data, padding
/// to 8), then once through the kernel on loopback UDP sockets.
final class ControlMessageTests: XCTestCase {
    // MARK: hand-built bytes

    /// One cmsg as glibc lays it out on 64-bit Linux.
    /// - Parameter length: cmsg_len to write; nil writes the true one (16 + data).
    static func cmsg(level: Int32, type: Int32, data: [UInt8], length: Int? = nil, padded: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes += withUnsafeBytes(of: UInt64(length ?? 16 + data.count).littleEndian, Array.init)
        bytes += withUnsafeBytes(of: level.littleEndian, Array.init)
        bytes += withUnsafeBytes(of: type.littleEndian, Array.init)
        bytes += data
        if padded { while bytes.count % 8 != 0 { bytes.append(0) } }
        return bytes
    }

    static func int32(_ value: Int32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian, Array.init) }
    static func uint32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian, Array.init) }
    static func int64(_ value: Int64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian, Array.init) }

    /// struct scm_timestamping: three timespecs (tv_sec, tv_nsec), software first.
    static func timestamping(seconds: Int64, nanoseconds: Int64) -> [UInt8] {
        int64(seconds) + int64(nanoseconds) + [UInt8](repeating: 0, count: 32)
    }

    /// struct sock_extended_err then the offender address.
    static func extendedError(errno: UInt32, origin: UInt8, type: UInt8 = 0, code: UInt8 = 0, info: UInt32 = 0, data: UInt32 = 0, offender: [UInt8]) -> [UInt8] {
        uint32(errno) + [origin, type, code, 0] + uint32(info) + uint32(data) + offender
    }

    /// sockaddr_in for 192.0.2.1 (AF_INET, port 0).
    static let offenderV4: [UInt8] = withUnsafeBytes(of: UInt16(AF_INET), Array.init) + [0, 0, 192, 0, 2, 1] + [UInt8](repeating: 0, count: 8)
    /// sockaddr_in6 for 2001:db8::1.
    static let offenderV6: [UInt8] = withUnsafeBytes(of: UInt16(AF_INET6), Array.init) + [0, 0] + [0, 0, 0, 0]
        + [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1] + [0, 0, 0, 0]
    /// An AF_UNSPEC sockaddr, as the kernel writes for timestamps and local errors.
    static let noOffender = [UInt8](repeating: 0, count: 16)

    func messages(_ bytes: [UInt8]) -> (messages: [ControlMessage], malformedAt: Int?) {
        bytes.withUnsafeBytes { buffer in
            var reader = ControlMessageReader(buffer)
            var messages: [ControlMessage] = []
            while let message = reader.next() { messages.append(message) }
            return (messages, reader.malformedAt)
        }
    }

    func parsed(_ bytes: [UInt8], flags: Int32 = 0) -> ReceivedControlMessages {
        bytes.withUnsafeBytes { ReceivedControlMessages(parsing: $0, flags: flags) }
    }

    func testTheLayoutIsTheOneTheseBuffersAreWrittenIn() {
        XCTAssertEqual(ControlMessageLayout.headerLength, 16)
        XCTAssertEqual(ControlMessageLayout.space(dataLength: 4), 24)
        XCTAssertEqual(ControlMessageLayout.length(dataLength: 4), 20)
        XCTAssertEqual(ControlMessageLayout.aligned(20), 24)
    }

    // MARK: every kind netprobe reads

    func testSoftwareTimestampIsTheFirstOfTheThreeTimespecs() {
        let bytes = Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.timestamping(seconds: 1_700_000_000, nanoseconds: 123_456_789))
        XCTAssertEqual(messages(bytes).messages, [.timestamps(softwareRealtime: 1_700_000_000_123_456_789)])
        XCTAssertEqual(parsed(bytes).softwareRealtime, 1_700_000_000_123_456_789)
        XCTAssertEqual(parsed(bytes).state, .complete)
    }

    func testAZeroSoftwareStampIsNoStamp() {
        let bytes = Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.timestamping(seconds: 0, nanoseconds: 0))
        XCTAssertEqual(messages(bytes).messages, [.timestamps(softwareRealtime: nil)])
        XCTAssertNil(parsed(bytes).softwareRealtime)
    }

    func testIPv4ICMPErrorCarriesTypeCodeAndTheOffendingRouter() {
        let data = Self.extendedError(errno: UInt32(EHOSTUNREACH), origin: UInt8(CSystemShims_SO_EE_ORIGIN_ICMP), type: 3, code: 1, offender: Self.offenderV4)
        let bytes = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_RECVERR, data: data)
        XCTAssertEqual(messages(bytes).messages, [.extendedError(ExtendedSocketError(
            errno: EHOSTUNREACH, origin: .icmp, type: 3, code: 1, info: 0, data: 0, offender: IPAddress(parsing: "192.0.2.1")))])
    }

    func testIPv6ICMPErrorCarriesTheOffendingRouter() {
        let data = Self.extendedError(errno: UInt32(EHOSTUNREACH), origin: UInt8(CSystemShims_SO_EE_ORIGIN_ICMP6), type: 3, code: 0, offender: Self.offenderV6)
        let bytes = Self.cmsg(level: Int32(IPPROTO_IPV6), type: IPV6_RECVERR, data: data)
        guard case .extendedError(let error)? = messages(bytes).messages.first else { return XCTFail("not an extended error") }
        XCTAssertEqual(error.origin, .icmp6)
        XCTAssertEqual(error.type, 3)
        XCTAssertEqual(error.offender, IPAddress(parsing: "2001:db8::1"))
    }

    func testTransmitStampOnTheErrorQueueGivesTheStampAndTheTimestampID() {
        let stamp = Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.timestamping(seconds: 5, nanoseconds: 6))
        let error = Self.cmsg(level: Int32(IPPROTO_IPV6), type: IPV6_RECVERR, data: Self.extendedError(
            errno: UInt32(ENOMSG), origin: UInt8(CSystemShims_SO_EE_ORIGIN_TIMESTAMPING), info: UInt32(CSystemShims_SCM_TSTAMP_SND), data: 4242,
            offender: Self.noOffender))
        let control = parsed(stamp + error)
        XCTAssertEqual(control.softwareRealtime, 5_000_000_006)
        XCTAssertEqual(control.extendedError, ExtendedSocketError(errno: ENOMSG, origin: .timestamping, type: 0, code: 0,
                                                                   info: UInt32(CSystemShims_SCM_TSTAMP_SND), data: 4242, offender: nil))
        XCTAssertEqual(control.state, .complete)
    }

    func testLocalErrorCarriesItsErrnoAndNoOffender() {
        let bytes = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_RECVERR, data: Self.extendedError(
            errno: UInt32(EMSGSIZE), origin: UInt8(CSystemShims_SO_EE_ORIGIN_LOCAL), info: 1500, offender: Self.noOffender))
        XCTAssertEqual(parsed(bytes).extendedError?.origin, .local)
        XCTAssertEqual(parsed(bytes).extendedError?.errno, EMSGSIZE)
        XCTAssertEqual(parsed(bytes).extendedError?.info, 1500)
        XCTAssertNil(parsed(bytes).extendedError?.offender)
    }

    func testExtendedErrorWithoutAnOffenderAddressStillDecodes() {
        let bytes = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_RECVERR, data: Self.extendedError(errno: UInt32(ENOMSG), origin: 99, offender: []))
        XCTAssertEqual(parsed(bytes).extendedError?.origin, .other(99))
        XCTAssertNil(parsed(bytes).extendedError?.offender)
    }

    func testIPv4TTLAndIPv6HopLimitAreTheHopLimit() {
        XCTAssertEqual(messages(Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(61))).messages, [.hopLimit(61)])
        XCTAssertEqual(messages(Self.cmsg(level: Int32(IPPROTO_IPV6), type: IPV6_HOPLIMIT, data: Self.int32(255))).messages, [.hopLimit(255)])
        XCTAssertEqual(parsed(Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(1))).hopLimit, 1)
    }

    func testTimestampIDReadsBack() {
        XCTAssertEqual(messages(Self.cmsg(level: SOL_SOCKET, type: CSystemShims_SCM_TS_OPT_ID, data: Self.uint32(0xdead_beef))).messages,
                       [.timestampID(0xdead_beef)])
    }

    // MARK: malformed and partial buffers

    func testAnEmptyControlBufferHasNoMessagesAndIsComplete() {
        XCTAssertEqual(messages([]).messages, [])
        XCTAssertEqual(parsed([]), ReceivedControlMessages())
    }

    func testATimestampCutShortIsShortNotAStamp() {
        // The kernel cuts the last message to the room left (cmsg_len shrinks with it).
        let cut = Array(Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.timestamping(seconds: 1, nanoseconds: 2), length: 16 + 20)[0..<(16 + 20)])
        XCTAssertEqual(messages(cut).messages, [.short(level: SOL_SOCKET, type: SCM_TIMESTAMPING, dataLength: 20)])
        XCTAssertNil(parsed(cut).softwareRealtime)
        XCTAssertEqual(parsed(cut).skipped, 1)
    }

    func testAnExtendedErrorCutShortIsShort() {
        let bytes = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_RECVERR, data: [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(messages(bytes).messages, [.short(level: Int32(IPPROTO_IP), type: IP_RECVERR, dataLength: 8)])
        XCTAssertNil(parsed(bytes).extendedError)
    }

    func testAKnownKindWithZeroLengthDataIsShort() {
        let bytes = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: [])
        XCTAssertEqual(bytes.count, 16)
        XCTAssertEqual(messages(bytes).messages, [.short(level: Int32(IPPROTO_IP), type: IP_TTL, dataLength: 0)])
        XCTAssertNil(parsed(bytes).hopLimit)
        XCTAssertEqual(parsed(bytes).state, .complete)
    }

    func testALengthRunningPastTheBufferEndsTheWalkAsMalformed() {
        let good = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(9))
        let overlong = Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.int64(1), length: 16 + 48)
        let (found, malformedAt) = messages(good + overlong)
        XCTAssertEqual(found, [.hopLimit(9)], "what came before is kept; the overlong message is not read")
        XCTAssertEqual(malformedAt, good.count)
        XCTAssertEqual(parsed(good + overlong).state, .malformed(offset: 24))
        XCTAssertEqual(parsed(good + overlong).hopLimit, 9)
    }

    func testALengthBelowTheHeaderEndsTheWalkAsMalformed() {
        let zero = Self.cmsg(level: SOL_SOCKET, type: SCM_TIMESTAMPING, data: Self.timestamping(seconds: 1, nanoseconds: 1), length: 0)
        let behind = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(9))
        let (found, malformedAt) = messages(zero + behind)
        XCTAssertEqual(found, [], "a zero cmsg_len would loop forever if walked; nothing after it is trusted")
        XCTAssertEqual(malformedAt, 0)
        XCTAssertEqual(parsed(Self.cmsg(level: 0, type: 0, data: [], length: 15)).state, .malformed(offset: 0))
    }

    func testUnknownLevelsAndTypesAreSkippedAndWhatFollowsIsRead() {
        let unknownType = Self.cmsg(level: Int32(IPPROTO_IP), type: 999, data: [1, 2, 3])
        let unknownLevel = Self.cmsg(level: 12_345, type: IP_TTL, data: Self.int32(7))
        let ttl = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(64))
        XCTAssertEqual(messages(unknownType + unknownLevel + ttl).messages,
                       [.unrecognized(level: Int32(IPPROTO_IP), type: 999), .unrecognized(level: 12_345, type: IP_TTL), .hopLimit(64)])
        let control = parsed(unknownType + unknownLevel + ttl)
        XCTAssertEqual(control.hopLimit, 64)
        XCTAssertEqual(control.skipped, 2)
        XCTAssertEqual(control.state, .complete)
    }

    func testUnpaddedLastMessageAndTrailingBytesShorterThanAHeaderAreTheEnd() {
        let ttl = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(64), padded: false)
        XCTAssertEqual(messages(ttl).messages, [.hopLimit(64)])
        let (found, malformedAt) = messages(Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(64)) + [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(found, [.hopLimit(64)])
        XCTAssertNil(malformedAt)
    }

    func testMSGCTRUNCIsReportedAsTruncatedWithWhatArrived() {
        let ttl = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(64))
        let control = parsed(ttl, flags: Int32(MSG_CTRUNC))
        XCTAssertEqual(control.state, .truncated)
        XCTAssertEqual(control.hopLimit, 64)
        XCTAssertEqual(parsed([], flags: Int32(MSG_CTRUNC)).state, .truncated)
    }

    // MARK: builder

    func withBuilder<T>(bytes: Int = 2 * OutboundControlMessage.largestSpace, _ body: (inout ControlMessageBuilder) -> T) -> T {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 8)
        defer { storage.deallocate() }
        storage.initializeMemory(as: UInt8.self, repeating: 0xaa)
        var builder = ControlMessageBuilder(storage: storage)
        return body(&builder)
    }

    func testBuilderWritesTheBytesTheKernelExpects() {
        let written = withBuilder { builder in
            XCTAssertTrue(builder.append(.timestampID(0x0102_0304)))
            XCTAssertTrue(builder.append(.hopLimit(7, .ipv4)))
            return Array(builder.bytes)
        }
        XCTAssertEqual(written, Self.cmsg(level: SOL_SOCKET, type: CSystemShims_SCM_TS_OPT_ID, data: Self.uint32(0x0102_0304))
                       + Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TTL, data: Self.int32(7)),
                       "cmsg_len without padding, padding zeroed")
    }

    func testBuilderHopLimitIsIPv6HopLimitOnIPv6AndReadsBack() {
        let written = withBuilder { builder in
            builder.append(.hopLimit(3, .ipv6))
            return Array(builder.bytes)
        }
        XCTAssertEqual(written, Self.cmsg(level: Int32(IPPROTO_IPV6), type: IPV6_HOPLIMIT, data: Self.int32(3)))
        XCTAssertEqual(messages(written).messages, [.hopLimit(3)])
    }

    func testBuilderRefusesAMessageThatDoesNotFitAndKeepsWhatItHas() {
        withBuilder(bytes: OutboundControlMessage.largestSpace) { builder in
            XCTAssertTrue(builder.append(.hopLimit(1, .ipv4)))
            XCTAssertFalse(builder.append(.timestampID(1)))
            XCTAssertEqual(builder.length, 24)
            builder.removeAll()
            XCTAssertEqual(builder.bytes.count, 0)
        }
        XCTAssertEqual(ControlMessageBuilder.space(for: [.timestampID(1), .hopLimit(1, .ipv6)]), 48)
    }

    func testBuilderWritesTrafficClassAndPacketInfoAsTheKernelReadsThem() {
        let source4 = IPAddress(parsing: "198.18.0.2")!
        let written4 = withBuilder(bytes: 4 * OutboundControlMessage.largestSpace) { builder in
            XCTAssertTrue(builder.append(SendOptions(tos: 0xb8, source: source4, interfaceIndex: 7), family: .ipv4))
            return Array(builder.bytes)
        }
        XCTAssertEqual(written4, Self.cmsg(level: Int32(IPPROTO_IP), type: IP_TOS, data: Self.int32(0xb8))
                       + Self.cmsg(level: Int32(IPPROTO_IP), type: IP_PKTINFO, data: Self.uint32(7) + source4.bytes + [0, 0, 0, 0]),
                       "in_pktinfo: ifindex, spec_dst (the source), addr 0")
        let source6 = IPAddress(parsing: "2001:db8::2")!
        let written6 = withBuilder(bytes: 4 * OutboundControlMessage.largestSpace) { builder in
            XCTAssertTrue(builder.append(SendOptions(tos: 0x88, source: source6), family: .ipv6))
            return Array(builder.bytes)
        }
        XCTAssertEqual(written6, Self.cmsg(level: Int32(IPPROTO_IPV6), type: 67, data: Self.int32(0x88))
                       + Self.cmsg(level: Int32(IPPROTO_IPV6), type: 50, data: source6.bytes + Self.uint32(0)),
                       "in6_pktinfo: the source, then ifindex")
    }

    func testDefaultOptionsAddNoMessage() {
        let written = withBuilder { builder in
            XCTAssertTrue(builder.append(SendOptions.none, family: .ipv4))
            return builder.length
        }
        XCTAssertEqual(written, 0)
    }

    func testReceivedPacketInfoIsTheDestinationAndInterface() {
        let v4 = Self.cmsg(level: Int32(IPPROTO_IP), type: IP_PKTINFO, data: Self.uint32(3) + [0, 0, 0, 0] + IPAddress(parsing: "198.18.0.2")!.bytes)
        XCTAssertEqual(messages(v4).messages, [.packetInfo(destination: IPAddress(parsing: "198.18.0.2")!, interfaceIndex: 3)])
        let v6 = Self.cmsg(level: Int32(IPPROTO_IPV6), type: 50, data: IPAddress(parsing: "2001:db8::2")!.bytes + Self.uint32(4))
        let control = v6.withUnsafeBytes { ReceivedControlMessages(parsing: $0, flags: 0) }
        XCTAssertEqual(control.destination, IPAddress(parsing: "2001:db8::2"))
        XCTAssertEqual(control.interfaceIndex, 4)
        let short = Self.cmsg(level: Int32(IPPROTO_IPV6), type: 50, data: [1, 2, 3])
        XCTAssertEqual(messages(short).messages, [.short(level: Int32(IPPROTO_IPV6), type: 50, dataLength: 3)])
    }

    // MARK: through the kernel

    /// A UDP datagram to ourselves on loopback with a per-packet hop limit from the
    /// builder; the receiver asks for the hop limit and software stamps and reads them
    /// with the reader. No privileges needed.
    func roundTrip(_ family: AddressFamily, controlBytes: Int = 1024) throws -> (ReceivedControlMessages, Int) {
        let loopback = IPAddress(parsing: family == .ipv4 ? "127.0.0.1" : "::1")!
        let receiver = try Posix.socket(family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0)
        defer { _ = Glibc.close(receiver) }
        let sender = try Posix.socket(family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0)
        defer { _ = Glibc.close(sender) }
        try loopback.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(receiver, address, length) }
        var bound = sockaddr_storage()
        var boundLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try withUnsafeMutablePointer(to: &bound) { (pointer) throws(SystemCallError) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(SystemCallError) in try Posix.getsockname(receiver, address, &boundLength) }
        }
        if family == .ipv4 {
            try Posix.setsockopt(receiver, Int32(IPPROTO_IP), IP_RECVTTL, Int32(1))
        } else {
            try Posix.setsockopt(receiver, Int32(IPPROTO_IPV6), IPV6_RECVHOPLIMIT, Int32(1))
        }
        try Posix.setsockopt(receiver, SOL_SOCKET, SO_TIMESTAMPING,
                             Int32(CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_SOFTWARE))

        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: OutboundControlMessage.largestSpace, alignment: 8)
        defer { storage.deallocate() }
        var builder = ControlMessageBuilder(storage: storage)
        XCTAssertTrue(builder.append(.hopLimit(7, family)))
        let payload: [UInt8] = [1, 2, 3]
        let sent = try payload.withUnsafeBytes { bytes in
            try withUnsafePointer(to: &bound) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    try Posix.sendmsg(sender, bytes, to: address, boundLength, control: builder.bytes, flags: 0)
                }
            }
        }
        guard case .processed(3) = sent else { throw XCTSkip("send did not complete") }

        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: controlBytes, alignment: 8)
        defer { control.deallocate() }
        let source = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
        defer { source.deallocate() }
        var pollDescriptor = pollfd(fd: receiver, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pollDescriptor, 1, 5_000), 1, "the datagram arrives on loopback")
        guard case .processed(let received) = try Posix.recvmsg(receiver, into: buffer, source: source, control: control, flags: 0) else {
            throw XCTSkip("nothing received")
        }
        XCTAssertEqual(IPAddress(socketAddress: source, length: received.sourceLength), loopback)
        return (ReceivedControlMessages(parsing: received.control, flags: received.flags), received.length)
    }

    func testKernelAcceptsTheBuiltHopLimitAndTheReaderReadsItBackIPv4() throws {
        let (control, length) = try roundTrip(.ipv4)
        XCTAssertEqual(length, 3)
        XCTAssertEqual(control.hopLimit, 7)
        XCTAssertEqual(control.state, .complete)
    }

    func testKernelAcceptsTheBuiltHopLimitAndTheReaderReadsItBackIPv6() throws {
        let (control, _) = try roundTrip(.ipv6)
        XCTAssertEqual(control.hopLimit, 7)
        XCTAssertEqual(control.state, .complete)
    }

    func testKernelControlBufferTooSmallIsTruncated() throws {
        // Room for one header and no data: whichever message comes first is cut to it.
        let (control, _) = try roundTrip(.ipv4, controlBytes: 16)
        XCTAssertEqual(control.state, .truncated)
    }
}
