import ProbeResults
/// ICMP and ICMPv6 echo messages: building requests and taking replies apart.
///
/// Everything here is pure: bytes in, values out. Replies come from the network and are
/// hostile input, so every read is bounds-checked and anything that does not parse is
/// rejected with a reason instead of trapping.
public enum ICMPEcho {
    /// Bytes of the ICMP header: type, code, checksum, identifier, sequence.
    public static let headerLength = 8
    /// Payload bytes netprobe needs: an 8-byte cookie and the 32-bit probe number.
    public static let minimumPayloadLength = 12
    /// The largest payload that fits an IPv4 datagram (65535 - 20 - 8).
    public static let maximumPayloadLength = 65507

    static let echoRequestV4: UInt8 = 8
    static let echoReplyV4: UInt8 = 0
    static let destinationUnreachableV4: UInt8 = 3
    static let timeExceededV4: UInt8 = 11
    static let echoRequestV6: UInt8 = 128
    static let echoReplyV6: UInt8 = 129
    static let destinationUnreachableV6: UInt8 = 1
    static let packetTooBigV6: UInt8 = 2
    static let timeExceededV6: UInt8 = 3

    /// The Internet checksum (RFC 1071) of `bytes`: the one's complement of the one's
    /// complement sum of 16-bit big-endian words, an odd last byte padded with zero.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        let count = bytes.count
        while index + 1 < count {
            sum &+= UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < count { sum &+= UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) &+ (sum >> 16) }
        return ~UInt16(truncatingIfNeeded: sum)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt16 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// Writes an echo request into `buffer` (resized to header + payload).
    ///
    /// Payload: the cookie (8 bytes, big-endian), the probe number (4 bytes, big-endian),
    /// then the byte pattern 0x10, 0x11, ... as fill. The IPv4 checksum is computed here;
    /// for ICMPv6 the kernel fills it in (it needs the pseudo-header), so it stays 0.
    /// - Parameters:
    ///   - family: selects the ICMP or ICMPv6 type.
    ///   - identifier: echo identifier (the kernel overwrites it on datagram sockets).
    ///   - probeNumber: netprobe's 32-bit number of this probe; its low 16 bits are the sequence.
    ///   - cookie: the per-process random cookie.
    ///   - payloadLength: payload bytes, at least `minimumPayloadLength`.
    public static func encodeRequest(family: AddressFamily, identifier: UInt16, probeNumber: UInt32, cookie: UInt64, payloadLength: Int, into buffer: inout [UInt8]) {
        precondition(payloadLength >= minimumPayloadLength && payloadLength <= maximumPayloadLength)
        let total = headerLength + payloadLength
        if buffer.count != total {
            buffer = [UInt8](repeating: 0, count: total)
            for index in (headerLength + minimumPayloadLength)..<total {
                buffer[index] = UInt8(truncatingIfNeeded: 0x10 + index - headerLength - minimumPayloadLength)
            }
        }
        let sequence = UInt16(truncatingIfNeeded: probeNumber)
        buffer.withUnsafeMutableBytes { packet in
            packet[0] = family == .ipv4 ? echoRequestV4 : echoRequestV6
            packet[1] = 0
            packet.storeBytes(of: 0, toByteOffset: 2, as: UInt16.self)
            packet.storeBytes(of: identifier.bigEndian, toByteOffset: 4, as: UInt16.self)
            packet.storeBytes(of: sequence.bigEndian, toByteOffset: 6, as: UInt16.self)
            packet.storeBytes(of: cookie.bigEndian, toByteOffset: 8, as: UInt64.self)
            packet.storeBytes(of: probeNumber.bigEndian, toByteOffset: 16, as: UInt32.self)
            if family == .ipv4 {
                let sum = checksum(UnsafeRawBufferPointer(packet))
                packet.storeBytes(of: sum.bigEndian, toByteOffset: 2, as: UInt16.self)
            }
        }
    }

    /// An echo reply, as read from the wire.
    public struct Reply: Equatable, Sendable {
        /// The echo identifier in the reply.
        public var identifier: UInt16
        /// The 16-bit echo sequence in the reply.
        public var sequence: UInt16
        /// The cookie found in the payload.
        public var cookie: UInt64
        /// The 32-bit probe number found in the payload.
        public var probeNumber: UInt32
        /// Payload bytes after the ICMP header.
        public var payloadLength: Int
        /// TTL (IPv4) from the IP header when the packet carried one.
        public var ttl: Int?
    }

    /// An ICMP error (destination unreachable, time exceeded) about one of our requests.
    public struct ErrorReport: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            case destinationUnreachable
            case timeExceeded
            /// IPv4 "fragmentation needed and DF set" (unreachable code 4), IPv6 "packet too big".
            case tooBig
        }
        public var kind: Kind
        public var type: UInt8
        public var code: UInt8
        /// `tooBig`: the next-hop MTU the router named (IPv4: RFC 1191's 16 bits, 0 from
        /// routers older than RFC 1191; IPv6: 32 bits); nil when it named none.
        public var mtu: Int? = nil
        /// Destination of the request the error is about.
        public var originalDestination: IPAddress
        /// Identifier and sequence of the request the error is about.
        public var identifier: UInt16
        public var sequence: UInt16
        /// Cookie and probe number, when the router quoted enough of our payload.
        public var cookie: UInt64?
        public var probeNumber: UInt32?
    }

    /// Why an incoming packet was not a usable reply (the echo decoder's and the path
    /// decoder's, PathPacket.Rejection).
    public enum Rejection: String, Error, Sendable {
        /// Shorter than the headers it claims to carry.
        case truncated
        /// Not an echo reply, unreachable, time exceeded (or, for paths, packet too big) message.
        case otherType
        /// The IPv4 checksum does not add up.
        case badChecksum
        /// The IP header (raw IPv4) is not a well-formed IPv4 ICMP header, or a quoted one is malformed.
        case malformedIPHeader
        /// An ICMP error quoting a packet that is not one of ours (an echo request, or for
        /// paths a TCP segment; a fragment other than the first).
        case unrelatedError
    }

    public enum Decoded: Equatable, Sendable {
        case reply(Reply)
        case error(ErrorReport)

        func withMTU(_ mtu: Int?) -> Decoded {
            guard case .error(var report) = self else { return self }
            report.mtu = mtu
            return .error(report)
        }
    }

    /// Takes an incoming packet apart.
    /// - Parameters:
    ///   - packet: the bytes recvmsg returned.
    ///   - family: the socket's family.
    ///   - includesIPHeader: true for raw IPv4 sockets, whose reads start at the IP header.
    /// - Returns: the reply or error report, or why the packet was rejected.
    public static func decode(_ packet: UnsafeRawBufferPointer, family: AddressFamily, includesIPHeader: Bool) -> Result<Decoded, Rejection> {
        var message = packet
        var ttl: Int?
        if includesIPHeader {
            guard packet.count >= 20 else { return .failure(.truncated) }
            let versionAndLength = packet[0]
            let headerLength = Int(versionAndLength & 0x0f) * 4
            guard versionAndLength >> 4 == 4, headerLength >= 20, packet[9] == 1 else { return .failure(.malformedIPHeader) }
            guard packet.count >= headerLength else { return .failure(.truncated) }
            ttl = Int(packet[8])
            message = UnsafeRawBufferPointer(rebasing: packet[headerLength...])
        }
        guard message.count >= headerLength else { return .failure(.truncated) }
        let type = message[0]
        if family == .ipv4, checksum(message) != 0 { return .failure(.badChecksum) }
        switch (family, type) {
        case (.ipv4, echoReplyV4), (.ipv6, echoReplyV6):
            guard message.count >= headerLength + minimumPayloadLength else { return .failure(.truncated) }
            return .success(.reply(Reply(
                identifier: readUInt16(message, 4),
                sequence: readUInt16(message, 6),
                cookie: UInt64(bigEndian: message.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                probeNumber: UInt32(bigEndian: message.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
                payloadLength: message.count - headerLength,
                ttl: ttl)))
        case (.ipv4, destinationUnreachableV4) where message[1] == 4:
            let mtu = Int(readUInt16(message, 6))
            return decodeErrorV4(message, kind: .tooBig).map { decoded in decoded.withMTU(mtu > 0 ? mtu : nil) }
        case (.ipv4, destinationUnreachableV4), (.ipv4, timeExceededV4):
            return decodeErrorV4(message, kind: type == destinationUnreachableV4 ? .destinationUnreachable : .timeExceeded)
        case (.ipv6, packetTooBigV6):
            let mtu = Int(UInt32(bigEndian: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
            return decodeErrorV6(message, kind: .tooBig).map { decoded in decoded.withMTU(mtu > 0 ? min(mtu, 65_535) : nil) }
        case (.ipv6, destinationUnreachableV6), (.ipv6, timeExceededV6):
            return decodeErrorV6(message, kind: type == destinationUnreachableV6 ? .destinationUnreachable : .timeExceeded)
        default:
            return .failure(.otherType)
        }
    }

    /// Decodes the quoted request in an ICMP error delivered through the error queue of a
    /// datagram socket, where the kernel hands back our own request (ICMP header first).
    public static func decodeQuotedRequest(_ request: UnsafeRawBufferPointer, family: AddressFamily) -> (identifier: UInt16, sequence: UInt16, cookie: UInt64?, probeNumber: UInt32?)? {
        guard request.count >= headerLength else { return nil }
        let expectedType = family == .ipv4 ? echoRequestV4 : echoRequestV6
        guard request[0] == expectedType else { return nil }
        let hasPayload = request.count >= headerLength + minimumPayloadLength
        return (readUInt16(request, 4), readUInt16(request, 6),
                hasPayload ? UInt64(bigEndian: request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) : nil,
                hasPayload ? UInt32(bigEndian: request.loadUnaligned(fromByteOffset: 16, as: UInt32.self)) : nil)
    }

    private static func decodeErrorV4(_ message: UnsafeRawBufferPointer, kind: ErrorReport.Kind) -> Result<Decoded, Rejection> {
        // After the 8-byte ICMP header: the original IPv4 header, then at least 8 bytes of it.
        let quoted = UnsafeRawBufferPointer(rebasing: message[headerLength...])
        guard quoted.count >= 20 else { return .failure(.truncated) }
        let quotedHeaderLength = Int(quoted[0] & 0x0f) * 4
        guard quoted[0] >> 4 == 4, quotedHeaderLength >= 20 else { return .failure(.malformedIPHeader) }
        guard quoted[9] == 1 else { return .failure(.unrelatedError) }
        guard quoted.count >= quotedHeaderLength + headerLength else { return .failure(.truncated) }
        guard let destination = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[16..<20]), family: .ipv4) else { return .failure(.truncated) }
        let request = UnsafeRawBufferPointer(rebasing: quoted[quotedHeaderLength...])
        guard let echo = decodeQuotedRequest(request, family: .ipv4) else { return .failure(.unrelatedError) }
        return .success(.error(ErrorReport(kind: kind, type: message[0], code: message[1], originalDestination: destination,
                                           identifier: echo.identifier, sequence: echo.sequence, cookie: echo.cookie, probeNumber: echo.probeNumber)))
    }

    private static func decodeErrorV6(_ message: UnsafeRawBufferPointer, kind: ErrorReport.Kind) -> Result<Decoded, Rejection> {
        // After the 8-byte ICMPv6 header: the original 40-byte IPv6 header, then our request.
        let quoted = UnsafeRawBufferPointer(rebasing: message[headerLength...])
        guard quoted.count >= 40 + headerLength else { return .failure(.truncated) }
        guard quoted[0] >> 4 == 6 else { return .failure(.malformedIPHeader) }
        guard quoted[6] == 58 else { return .failure(.unrelatedError) } // next header: ICMPv6 (no extension headers from us)
        guard let destination = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[24..<40]), family: .ipv6) else { return .failure(.truncated) }
        let request = UnsafeRawBufferPointer(rebasing: quoted[40...])
        guard let echo = decodeQuotedRequest(request, family: .ipv6) else { return .failure(.unrelatedError) }
        return .success(.error(ErrorReport(kind: kind, type: message[0], code: message[1], originalDestination: destination,
                                           identifier: echo.identifier, sequence: echo.sequence, cookie: echo.cookie, probeNumber: echo.probeNumber)))
    }

    @inline(__always)
    private static func readUInt16(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
}
