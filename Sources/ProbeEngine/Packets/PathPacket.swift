import ProbeResults
/// The packets of a path probe (`netprobe trace`): TTL-limited echo requests whose ICMP
/// checksum stays constant per flow, and the ICMP errors routers send about them.
///
/// Paris traceroute's rule: a per-flow load balancer hashes the first 4 bytes after the IP
/// header (for ICMP: type, code, checksum), so a classic traceroute, whose checksum changes
/// with every sequence number, sends each probe down a different branch and prints hops
/// that are not one path. Here the checksum is the flow's: a 16-bit word in the payload
/// cancels the sequence and probe number out of the sum.
///
/// Request payload: cookie (8 bytes), probe number (4), flow word (2), then the fill
/// pattern of ICMPEcho. Everything here is pure: bytes in, values out. Errors come from
/// routers anywhere on the path and are hostile input: every read is bounds-checked and
/// anything that does not parse is rejected with a reason.
public enum PathPacket {
    /// Payload bytes a path probe needs: cookie, probe number and the flow word.
    public static let minimumPayloadLength = ICMPEcho.minimumPayloadLength + 2

    /// The ICMP checksum (IPv4) or the message sum (IPv6, where the kernel adds the
    /// pseudo-header, the same for every probe to one target) of flow `index`. Fixed, so a
    /// trace is reproducible; never 0x0000 or 0xffff (one's-complement zero has two forms).
    public static func flowChecksum(_ index: Int) -> UInt16 {
        let value = UInt16(truncatingIfNeeded: 0x5a5a &+ index &* 0x3c3d)
        return value == 0 || value == 0xffff ? 0x1234 : value
    }

    /// Writes a path probe (an echo request) into `buffer` (resized to header + payload).
    /// - Parameters:
    ///   - flow: the flow index; every probe of one flow has the same checksum.
    ///   - payloadLength: at least `minimumPayloadLength`.
    public static func encodeRequest(family: AddressFamily, identifier: UInt16, probeNumber: UInt32, cookie: UInt64, flow: Int,
                                     payloadLength: Int, into buffer: inout [UInt8]) {
        precondition(payloadLength >= minimumPayloadLength)
        ICMPEcho.encodeRequest(family: family, identifier: identifier, probeNumber: probeNumber, cookie: cookie, payloadLength: payloadLength, into: &buffer)
        let flowOffset = ICMPEcho.headerLength + ICMPEcho.minimumPayloadLength
        buffer.withUnsafeMutableBytes { packet in
            packet.storeBytes(of: 0, toByteOffset: 2, as: UInt16.self)
            packet.storeBytes(of: 0, toByteOffset: flowOffset, as: UInt16.self)
            // checksum() is ~sum; the flow word w must make ~(sum + w) the flow's checksum,
            // i.e. w = ~target - sum in one's-complement arithmetic.
            let sum = ~ICMPEcho.checksum(UnsafeRawBufferPointer(packet))
            let target = flowChecksum(flow)
            var word = UInt32(~target) &+ UInt32(~sum)
            while word >> 16 != 0 { word = (word & 0xffff) &+ (word >> 16) }
            packet.storeBytes(of: UInt16(word).bigEndian, toByteOffset: flowOffset, as: UInt16.self)
            if family == .ipv4 {
                packet.storeBytes(of: target.bigEndian, toByteOffset: 2, as: UInt16.self)
            }
        }
    }

    /// What an ICMP error says about a packet.
    public enum ErrorKind: String, Equatable, Sendable {
        /// TTL / hop limit ran out at the router that sent it.
        case timeExceeded = "time_exceeded"
        /// Destination, network, port... unreachable.
        case unreachable
        /// Needs fragmentation (IPv4, DF set) / packet too big (IPv6).
        case tooBig = "too_big"
    }

    /// The part of our probe an ICMP error quotes.
    public enum QuotedProbe: Equatable, Sendable {
        /// An echo request: identifier and sequence always; cookie and probe number when
        /// the router quoted more than 8 bytes past the IP header.
        case echo(identifier: UInt16, sequence: UInt16, cookie: UInt64?, probeNumber: UInt32?)
        /// A TCP segment: ports and sequence number (the first 8 bytes).
        case tcp(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32)
    }

    /// An ICMP error about a packet of ours, as a router sent it.
    public struct ErrorReport: Equatable, Sendable {
        public var kind: ErrorKind
        public var type: UInt8
        public var code: UInt8
        /// Source and destination of the quoted packet (ours, if it is ours).
        public var quotedSource: IPAddress
        public var quotedDestination: IPAddress
        /// The quoted packet's TTL / hop limit as the router saw it (usually 1 or 0).
        public var quotedTTL: UInt8
        public var probe: QuotedProbe
        /// `tooBig`: the next-hop MTU the router named (IPv4: bytes 6-7, RFC 1191; IPv6:
        /// bytes 4-7, capped at 65535); nil for other kinds and for a router that named none (0).
        public var mtu: Int? = nil
        /// The MPLS label stack of an ICMP extension (RFC 4884 / 4950), top first; empty
        /// without one (or when the extension was rejected).
        public var labelStack: [MPLSLabelStackEntry] = []
        /// Why the message's extension structure was rejected; the error itself still
        /// counts (a bad extension must not lose the hop's answer).
        public var extensionRejection: ICMPExtensions.Rejection? = nil
    }

    /// Why a packet was not an ICMP error about a probe: the reasons of the echo decoder
    /// (unrelatedError here also covers a quoted TCP segment of another flow and a
    /// non-first fragment).
    public typealias Rejection = ICMPEcho.Rejection

    /// Decodes an ICMP error that a raw socket read.
    /// - Parameters:
    ///   - packet: what recvmsg returned (raw IPv4: from the IP header; IPv6: from the ICMPv6 header).
    ///   - family: the socket's family.
    ///   - includesIPHeader: true for raw IPv4 sockets.
    public static func decodeError(_ packet: UnsafeRawBufferPointer, family: AddressFamily, includesIPHeader: Bool) -> Result<ErrorReport, Rejection> {
        var message = packet
        if includesIPHeader {
            guard packet.count >= 20 else { return .failure(.truncated) }
            let headerLength = Int(packet[0] & 0x0f) * 4
            guard packet[0] >> 4 == 4, headerLength >= 20, packet[9] == 1 else { return .failure(.malformedIPHeader) }
            guard packet.count >= headerLength else { return .failure(.truncated) }
            message = UnsafeRawBufferPointer(rebasing: packet[headerLength...])
        }
        guard message.count >= ICMPEcho.headerLength else { return .failure(.truncated) }
        let type = message[0]
        let kind: ErrorKind
        switch (family, type) {
        case (.ipv4, 11), (.ipv6, 3): kind = .timeExceeded
        case (.ipv4, 3): kind = message[1] == 4 ? .tooBig : .unreachable
        case (.ipv6, 1): kind = .unreachable
        case (.ipv6, 2): kind = .tooBig
        default: return .failure(.otherType)
        }
        if family == .ipv4, ICMPEcho.checksum(message) != 0 { return .failure(.badChecksum) }
        let quoted = UnsafeRawBufferPointer(rebasing: message[ICMPEcho.headerLength...])
        var mtu: Int?
        if kind == .tooBig {
            let named = family == .ipv4 ? Int(readUInt16(message, 6)) : Int(readUInt16(message, 4)) << 16 | Int(readUInt16(message, 6))
            mtu = named > 0 ? min(named, 65_535) : nil
        }
        return decodeQuoted(quoted, family: family).map { quote in
            var report = ErrorReport(kind: kind, type: type, code: message[1], quotedSource: quote.source, quotedDestination: quote.destination,
                                     quotedTTL: quote.ttl, probe: quote.probe, mtu: mtu)
            switch ICMPExtensions.decode(message, family: family) {
            case .success(let extensions): report.labelStack = extensions.labelStack
            case .failure(let rejection): report.extensionRejection = rejection
            }
            return report
        }
    }

    /// Takes the quoted packet of an ICMP error apart: IP header, then at least 8 bytes.
    static func decodeQuoted(_ quoted: UnsafeRawBufferPointer, family: AddressFamily) -> Result<(source: IPAddress, destination: IPAddress, ttl: UInt8, probe: QuotedProbe), Rejection> {
        let headerLength: Int
        let transport: UInt8
        let source: IPAddress
        let destination: IPAddress
        let ttl: UInt8
        switch family {
        case .ipv4:
            guard quoted.count >= 20 else { return .failure(.truncated) }
            headerLength = Int(quoted[0] & 0x0f) * 4
            guard quoted[0] >> 4 == 4, headerLength >= 20 else { return .failure(.malformedIPHeader) }
            // A later fragment carries no transport header to match.
            let fragmentOffset = (UInt16(quoted[6]) << 8 | UInt16(quoted[7])) & 0x1fff
            guard fragmentOffset == 0 else { return .failure(.unrelatedError) }
            transport = quoted[9]
            ttl = quoted[8]
            guard let from = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[12..<16]), family: .ipv4),
                  let to = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[16..<20]), family: .ipv4) else { return .failure(.truncated) }
            source = from
            destination = to
        case .ipv6:
            guard quoted.count >= 40 else { return .failure(.truncated) }
            guard quoted[0] >> 4 == 6 else { return .failure(.malformedIPHeader) }
            // We send no extension headers, so the next header is the transport.
            headerLength = 40
            transport = quoted[6]
            ttl = quoted[7]
            guard let from = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[8..<24]), family: .ipv6),
                  let to = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: quoted[24..<40]), family: .ipv6) else { return .failure(.truncated) }
            source = from
            destination = to
        }
        guard quoted.count >= headerLength + 8 else { return .failure(.truncated) }
        let inner = UnsafeRawBufferPointer(rebasing: quoted[headerLength...])
        let echoType: UInt8 = family == .ipv4 ? 8 : 128
        let icmpProtocol: UInt8 = family == .ipv4 ? 1 : 58
        if transport == icmpProtocol {
            guard inner[0] == echoType, inner[1] == 0 else { return .failure(.unrelatedError) }
            let hasPayload = inner.count >= ICMPEcho.headerLength + ICMPEcho.minimumPayloadLength
            return .success((source, destination, ttl, .echo(
                identifier: readUInt16(inner, 4), sequence: readUInt16(inner, 6),
                cookie: hasPayload ? UInt64(bigEndian: inner.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) : nil,
                probeNumber: hasPayload ? UInt32(bigEndian: inner.loadUnaligned(fromByteOffset: 16, as: UInt32.self)) : nil)))
        }
        if transport == 6 {
            return .success((source, destination, ttl, .tcp(sourcePort: readUInt16(inner, 0), destinationPort: readUInt16(inner, 2),
                                                            sequence: UInt32(readUInt16(inner, 4)) << 16 | UInt32(readUInt16(inner, 6)))))
        }
        return .failure(.unrelatedError)
    }

    @inline(__always)
    static func readUInt16(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
}
