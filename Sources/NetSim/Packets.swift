/// IPv4 / IPv6 packets as the simulator sees them: taking requests apart and building
/// replies. Everything here is pure (bytes in, bytes out) so it can be tested without
/// a TUN device. Requests come from the kernel of the namespace, but are still treated
/// as untrusted: every read is bounds-checked.
public enum SimulatedPacket {
    public static let protocolICMP: UInt8 = 1
    public static let protocolTCP: UInt8 = 6
    public static let protocolICMPv6: UInt8 = 58
    /// Largest IPv4 ICMP error (RFC 1812 4.3.2.3: as much of the original as fits 576 bytes).
    public static let maximumICMPErrorLengthV4 = 576
    /// Largest ICMPv6 error (RFC 4443 2.4(c): the IPv6 minimum MTU).
    public static let maximumICMPErrorLengthV6 = 1280

    /// The IP header fields of a packet that matter to the simulator.
    public struct Header: Equatable, Sendable {
        public var isIPv6: Bool
        public var source: SimulatedAddress
        public var destination: SimulatedAddress
        /// IPv4 protocol / IPv6 next header (no extension headers are followed).
        public var transport: UInt8
        /// TTL / hop limit.
        public var ttl: UInt8
        /// Offset of the transport header.
        public var transportOffset: Int
        /// End of the packet as the IP header states it (never past the bytes read).
        public var end: Int
    }

    /// What a request asks of a simulated host.
    public enum Request: Equatable, Sendable {
        case echoRequest(identifier: UInt16, sequence: UInt16)
        case tcpSyn(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32)
        /// Any other TCP segment (the client kernel's ACK, RST, FIN): never answered.
        case tcpOther(sourcePort: UInt16, destinationPort: UInt16)
        /// ICMP that is not an echo request (errors, neighbour discovery, MLD): never answered.
        case icmpOther(type: UInt8)
        /// Anything else (UDP, ...).
        case other(transport: UInt8)

        /// ICMP errors, neighbour discovery, MLD: never answered, never expire on a path.
        var isICMPOther: Bool {
            if case .icmpOther = self { return true }
            return false
        }
    }

    /// Why a packet did not parse.
    public enum Malformed: Error, Equatable, Sendable {
        case truncated
        case notIP
    }

    // MARK: parsing

    /// Reads the IP header.
    public static func header(_ packet: UnsafeRawBufferPointer) throws(Malformed) -> Header {
        guard packet.count >= 1 else { throw .truncated }
        switch packet[0] >> 4 {
        case 4:
            guard packet.count >= 20 else { throw .truncated }
            let headerLength = Int(packet[0] & 0x0f) * 4
            let total = Int(readUInt16(packet, 2))
            guard headerLength >= 20, total >= headerLength, packet.count >= headerLength else { throw .truncated }
            return Header(isIPv6: false, source: SimulatedAddress(packet, offset: 12, isIPv6: false),
                          destination: SimulatedAddress(packet, offset: 16, isIPv6: false),
                          transport: packet[9], ttl: packet[8], transportOffset: headerLength, end: min(total, packet.count))
        case 6:
            guard packet.count >= 40 else { throw .truncated }
            let payload = Int(readUInt16(packet, 4))
            return Header(isIPv6: true, source: SimulatedAddress(packet, offset: 8, isIPv6: true),
                          destination: SimulatedAddress(packet, offset: 24, isIPv6: true),
                          transport: packet[6], ttl: packet[7], transportOffset: 40, end: min(40 + payload, packet.count))
        default:
            throw .notIP
        }
    }

    /// Classifies the transport part of a packet whose header is `header`.
    public static func request(_ packet: UnsafeRawBufferPointer, header: Header) throws(Malformed) -> Request {
        let offset = header.transportOffset
        let available = header.end - offset
        switch header.transport {
        case protocolICMP where !header.isIPv6, protocolICMPv6 where header.isIPv6:
            guard available >= 8 else { throw .truncated }
            let type = packet[offset]
            if type == (header.isIPv6 ? 128 : 8) && packet[offset + 1] == 0 {
                return .echoRequest(identifier: readUInt16(packet, offset + 4), sequence: readUInt16(packet, offset + 6))
            }
            return .icmpOther(type: type)
        case protocolTCP:
            guard available >= 20 else { throw .truncated }
            let sourcePort = readUInt16(packet, offset)
            let destinationPort = readUInt16(packet, offset + 2)
            let flags = packet[offset + 13]
            // SYN without ACK, RST or FIN: a connection attempt.
            if flags & 0x17 == 0x02 {
                return .tcpSyn(sourcePort: sourcePort, destinationPort: destinationPort, sequence: readUInt32(packet, offset + 4))
            }
            return .tcpOther(sourcePort: sourcePort, destinationPort: destinationPort)
        default:
            return .other(transport: header.transport)
        }
    }

    // MARK: replies

    /// An ICMP echo reply (ICMPv6 type 129) carrying the request's identifier, sequence and data.
    public static func echoReply(to packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8) -> [UInt8] {
        var message = Array(packet[header.transportOffset..<header.end])
        message[0] = header.isIPv6 ? 129 : 0
        message[1] = 0
        return ipPacket(source: header.destination, destination: header.source, transport: header.isIPv6 ? protocolICMPv6 : protocolICMP,
                        ttl: ttl, transportMessage: message, checksumOffset: 2)
    }

    /// A SYN-ACK from the request's destination port, acknowledging the SYN, with one option: MSS.
    public static func tcpSynAck(to packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8, initialSequence: UInt32, maximumSegmentSize: UInt16) -> [UInt8] {
        let offset = header.transportOffset
        var segment = [UInt8](repeating: 0, count: 24)
        segment[0] = packet[offset + 2]; segment[1] = packet[offset + 3]            // source port = their destination port
        segment[2] = packet[offset]; segment[3] = packet[offset + 1]                // destination port = their source port
        store(initialSequence, into: &segment, at: 4)
        store(readUInt32(packet, offset + 4) &+ 1, into: &segment, at: 8)
        segment[12] = 6 << 4                                        // data offset: 6 words
        segment[13] = 0x12                                          // SYN | ACK
        store(UInt16(65535), into: &segment, at: 14)                // window
        segment[20] = 2                                             // option MSS
        segment[21] = 4
        store(maximumSegmentSize, into: &segment, at: 22)
        return ipPacket(source: header.destination, destination: header.source, transport: protocolTCP, ttl: ttl,
                        transportMessage: segment, checksumOffset: 16)
    }

    /// RST+ACK for a segment to a closed port (RFC 9293 3.10.7.1: SEQ 0, ACK = SEG.SEQ + SEG.LEN).
    public static func tcpResetAck(to packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8) -> [UInt8] {
        let offset = header.transportOffset
        let dataOffset = Int(packet[offset + 12] >> 4) * 4
        let flags = packet[offset + 13]
        let segmentLength = max(0, header.end - offset - dataOffset) + (flags & 0x02 != 0 ? 1 : 0) + (flags & 0x01 != 0 ? 1 : 0)
        var segment = [UInt8](repeating: 0, count: 20)
        segment[0] = packet[offset + 2]; segment[1] = packet[offset + 3]
        segment[2] = packet[offset]; segment[3] = packet[offset + 1]
        store(readUInt32(packet, offset + 4) &+ UInt32(truncatingIfNeeded: segmentLength), into: &segment, at: 8)
        segment[12] = 5 << 4
        segment[13] = 0x14                                          // RST | ACK
        return ipPacket(source: header.destination, destination: header.source, transport: protocolTCP, ttl: ttl,
                        transportMessage: segment, checksumOffset: 16)
    }

    /// The destination-unreachable errors the simulator sends, by what they say (the
    /// marks are mtr's and traceroute's).
    public enum Unreachable: Equatable, Sendable {
        /// !N: v4 type 3 code 0; v6 type 1 code 0 ("no route to destination").
        case net
        /// !H: v4 type 3 code 1; v6 type 1 code 3 ("address unreachable").
        case host
        /// !P: v4 type 3 code 2. ICMPv6 has no such code: a v6 host that does not speak
        /// the protocol sends parameter problem code 1 (unrecognized next header), and so
        /// does the simulator (the rules refuse `protocol` for IPv6 prefixes).
        case `protocol`
        /// !P: v4 type 3 code 3; v6 type 1 code 4.
        case port
        /// !X: v4 type 3 code 13 ("communication administratively prohibited"); v6 type 1
        /// code 1 (as Linux's `prohibit` routes and nftables' admin-prohibited send).
        case prohibited
        /// Any other code of v4 type 3 / v6 type 1, as given.
        case code(UInt8)

        /// The names the rules use; a number stands for itself.
        public static let names: [(String, Unreachable)] = [("net", .net), ("host", .host), ("protocol", .protocol), ("port", .port), ("prohibited", .prohibited)]

        /// Code `number` of v4 type 3 / v6 type 1, by its name where it has one (one code,
        /// one spelling: one verdict in the summary).
        public init(number: UInt8, isIPv6: Bool) {
            self = Self.names.map(\.1).first { $0.typeAndCode(isIPv6: isIPv6) == (isIPv6 ? 1 : 3, number, 0) } ?? .code(number)
        }

        /// The name the rules use, or the number.
        public var name: String {
            if case .code(let code) = self { return "\(code)" }
            return Self.names.first { $0.1 == self }!.0
        }

        /// ICMP type and code, and the rest-of-header word (the pointer of a parameter problem).
        func typeAndCode(isIPv6: Bool) -> (type: UInt8, code: UInt8, restOfHeader: UInt32) {
            switch (self, isIPv6) {
            case (.net, false): return (3, 0, 0)
            case (.host, false): return (3, 1, 0)
            case (.protocol, false): return (3, 2, 0)
            case (.port, false): return (3, 3, 0)
            case (.prohibited, false): return (3, 13, 0)
            case (.code(let code), false): return (3, code, 0)
            case (.net, true): return (1, 0, 0)
            case (.host, true): return (1, 3, 0)
            case (.protocol, true): return (4, 1, 6)          // parameter problem at the next-header byte
            case (.port, true): return (1, 4, 0)
            case (.prohibited, true): return (1, 1, 0)
            case (.code(let code), true): return (1, code, 0)
            }
        }
    }

    /// An ICMP / ICMPv6 destination unreachable from `source` (the request's destination
    /// when nil: the host itself), quoting the request as a time exceeded does.
    /// - Parameter quoteBytes: bytes past the quoted IP header; nil quotes as much as fits
    ///   576 (v4) / 1280 (v6) bytes.
    /// - Parameter labelStack: an MPLS label stack extension (not on ICMPv6's parameter
    ///   problem, which stands in for IPv4's protocol unreachable: RFC 4884 has no length there).
    public static func unreachable(_ kind: Unreachable, from source: SimulatedAddress? = nil, quoting packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8,
                                   quoteBytes: Int? = nil, labelStack: SimulatedLabelStack? = nil) -> [UInt8] {
        let (type, code, restOfHeader) = kind.typeAndCode(isIPv6: header.isIPv6)
        return icmpError(type: type, code: code, from: source ?? header.destination, quoting: packet, header: header, ttl: ttl,
                         quoteBytes: quoteBytes, restOfHeader: restOfHeader, labelStack: header.isIPv6 && type != 1 ? nil : labelStack)
    }

    /// An ICMP time exceeded in transit (v4 type 11 code 0, v6 type 3 code 0) from `router`,
    /// as a router sends it for a packet whose TTL / hop limit ran out there.
    /// - Parameter quoteBytes: bytes past the quoted IP header (8 as RFC 792); nil quotes
    ///   as much as fits 576 / 1280 bytes (RFC 1812 4.3.2.3, RFC 4443 2.4(c)).
    /// - Parameter labelStack: an MPLS label stack extension (RFC 4950) in its placement.
    public static func timeExceeded(from router: SimulatedAddress, quoting packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8, quoteBytes: Int? = nil,
                                    labelStack: SimulatedLabelStack? = nil) -> [UInt8] {
        icmpError(type: header.isIPv6 ? 3 : 11, code: 0, from: router, quoting: packet, header: header, ttl: ttl, quoteBytes: quoteBytes, labelStack: labelStack)
    }

    /// "Fragmentation needed and DF set" (v4 type 3 code 4, next-hop MTU in bytes 6-7) or
    /// "packet too big" (v6 type 2, MTU in bytes 4-7) from `router`.
    public static func tooBig(from router: SimulatedAddress, mtu: Int, quoting packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8, quoteBytes: Int? = nil) -> [UInt8] {
        let mtuWord = UInt32(clamping: mtu)
        return icmpError(type: header.isIPv6 ? 2 : 3, code: header.isIPv6 ? 0 : 4, from: router, quoting: packet, header: header, ttl: ttl,
                         quoteBytes: quoteBytes, restOfHeader: header.isIPv6 ? mtuWord : mtuWord & 0xffff)
    }

    /// An ICMP error from `source` to the request's source, quoting the request from its
    /// IP header on, as far as `quoteBytes` past that header or the minimum-MTU limit allow.
    static func icmpError(type: UInt8, code: UInt8, from source: SimulatedAddress, quoting packet: UnsafeRawBufferPointer, header: Header, ttl: UInt8,
                          quoteBytes: Int? = nil, restOfHeader: UInt32 = 0, labelStack: SimulatedLabelStack? = nil) -> [UInt8] {
        let ipHeaderLength = header.isIPv6 ? 40 : 20
        let room = (header.isIPv6 ? maximumICMPErrorLengthV6 : maximumICMPErrorLengthV4) - ipHeaderLength - 8
        var limit = room
        if let quoteBytes { limit = min(limit, header.transportOffset + quoteBytes) }
        let quoted = packet[0..<min(header.end, limit)]
        var message = [UInt8](repeating: 0, count: 8)
        message[0] = type
        message[1] = code
        store(restOfHeader, into: &message, at: 4)
        if let labelStack {
            let extended = labelStack.extend(quote: Array(quoted), room: room, isIPv6: header.isIPv6)
            message[header.isIPv6 ? 4 : 5] = extended.lengthField
            message.append(contentsOf: extended.bytes)
        } else {
            message.append(contentsOf: quoted)
        }
        return ipPacket(source: source, destination: header.source, transport: header.isIPv6 ? protocolICMPv6 : protocolICMP,
                        ttl: ttl, transportMessage: message, checksumOffset: 2)
    }

    // MARK: assembly

    /// Wraps a transport message in an IPv4 or IPv6 header and fills the transport checksum
    /// at `checksumOffset` (pseudo-header included for TCP and ICMPv6, not for ICMPv4).
    public static func ipPacket(source: SimulatedAddress, destination: SimulatedAddress, transport: UInt8, ttl: UInt8,
                                transportMessage: [UInt8], checksumOffset: Int, identification: UInt16 = 0) -> [UInt8] {
        var message = transportMessage
        message[checksumOffset] = 0
        message[checksumOffset + 1] = 0
        let sourceBytes = source.bytes
        let destinationBytes = destination.bytes
        let usesPseudoHeader = transport != protocolICMP
        let sum = checksum(message, pseudoHeader: usesPseudoHeader ? pseudoHeader(source: sourceBytes, destination: destinationBytes, transport: transport, length: message.count) : [])
        store(sum, into: &message, at: checksumOffset)

        var packet: [UInt8]
        if source.isIPv6 {
            packet = [UInt8](repeating: 0, count: 40)
            packet[0] = 0x60
            store(UInt16(message.count), into: &packet, at: 4)
            packet[6] = transport
            packet[7] = ttl
            packet[8..<24] = sourceBytes[...]
            packet[24..<40] = destinationBytes[...]
        } else {
            packet = [UInt8](repeating: 0, count: 20)
            packet[0] = 0x45
            store(UInt16(20 + message.count), into: &packet, at: 2)
            store(identification, into: &packet, at: 4)
            packet[8] = ttl
            packet[9] = transport
            packet[12..<16] = sourceBytes[...]
            packet[16..<20] = destinationBytes[...]
            store(checksum(packet), into: &packet, at: 10)
        }
        packet.append(contentsOf: message)
        return packet
    }

    /// The pseudo-header TCP, UDP and ICMPv6 checksums cover (RFC 9293 3.1, RFC 8200 8.1).
    public static func pseudoHeader(source: [UInt8], destination: [UInt8], transport: UInt8, length: Int) -> [UInt8] {
        var bytes = source + destination
        if source.count == 16 {
            bytes += [UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
            bytes += [0, 0, 0, transport]
        } else {
            bytes += [0, transport, UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
        }
        return bytes
    }

    /// The Internet checksum (RFC 1071) over `pseudoHeader` followed by `bytes`. A packet
    /// whose checksum field is filled in sums to 0 when checked this way.
    public static func checksum(_ bytes: [UInt8], pseudoHeader: [UInt8] = []) -> UInt16 {
        var sum: UInt32 = 0
        for part in [pseudoHeader, bytes] {
            var index = 0
            let count = part.count
            while index + 1 < count {
                sum &+= UInt32(part[index]) << 8 | UInt32(part[index + 1])
                index += 2
            }
            // The pseudo-header is always an even length, so padding only the last part is right.
            if index < count { sum &+= UInt32(part[index]) << 8 }
        }
        while sum >> 16 != 0 { sum = (sum & 0xffff) &+ (sum >> 16) }
        return ~UInt16(truncatingIfNeeded: sum)
    }

    @inline(__always)
    static func readUInt16(_ packet: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(packet[offset]) << 8 | UInt16(packet[offset + 1])
    }

    @inline(__always)
    static func readUInt32(_ packet: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(readUInt16(packet, offset)) << 16 | UInt32(readUInt16(packet, offset + 2))
    }

    @inline(__always)
    static func store(_ value: UInt16, into bytes: inout [UInt8], at offset: Int) {
        bytes[offset] = UInt8(truncatingIfNeeded: value >> 8)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    @inline(__always)
    static func store(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
        store(UInt16(truncatingIfNeeded: value >> 16), into: &bytes, at: offset)
        store(UInt16(truncatingIfNeeded: value), into: &bytes, at: offset + 2)
    }
}
