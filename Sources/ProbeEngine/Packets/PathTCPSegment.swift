import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// TCP SYN path probes: the segments and the raw sockets that send them.
///
/// Why raw sockets, not connect(): a flow identifier must stay the same for the whole
/// trace (Paris style: one 5-tuple), and the kernel allows one connection per 5-tuple at a
/// time, so connect()-based probes would have to go one by one. A raw IPPROTO_TCP socket
/// sends the SYNs itself, all from one source port that a bound (never listening) TCP
/// socket reserves; the probe's number is the SYN's sequence number, which ICMP errors
/// quote (the first 8 bytes) and a SYN-ACK or RST acknowledges (+1). The kernel sees the
/// SYN-ACK for a port nobody listens on and answers RST: SYN, SYN-ACK, RST, the half-open
/// handshake, so the server's application never sees a connection. Same privilege as the
/// raw ICMP socket (CAP_NET_RAW), opened before capabilities are dropped.
public enum PathTCPSegment {
    /// A SYN as Linux sends one, with an MSS option (24 bytes).
    /// - Parameters:
    ///   - source: our address, for the IPv4 checksum; nil for IPv6 (the kernel computes it).
    public static func syn(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32, source: IPAddress?, destination: IPAddress) -> [UInt8] {
        var segment = [UInt8](repeating: 0, count: 24)
        store(sourcePort, &segment, 0)
        store(destinationPort, &segment, 2)
        store(UInt16(truncatingIfNeeded: sequence >> 16), &segment, 4)
        store(UInt16(truncatingIfNeeded: sequence), &segment, 6)
        segment[12] = 6 << 4
        segment[13] = 0x02
        store(64240, &segment, 14)
        segment[20] = 2
        segment[21] = 4
        store(destination.family == .ipv4 ? 1460 : 1440, &segment, 22)
        if let source, source.family == .ipv4, case .v4(let from) = source, case .v4(let to) = destination {
            var pseudo = [UInt8](repeating: 0, count: 12)
            withUnsafeBytes(of: from) { pseudo.replaceSubrange(0..<4, with: $0) }
            withUnsafeBytes(of: to) { pseudo.replaceSubrange(4..<8, with: $0) }
            pseudo[9] = 6
            pseudo[11] = UInt8(segment.count)
            let sum = ICMPEcho.checksum(pseudo + segment)
            store(sum, &segment, 16)
        }
        return segment
    }

    /// A segment from the destination that answers a SYN.
    public struct Answer: Equatable, Sendable {
        public var sourcePort: UInt16
        public var destinationPort: UInt16
        public var acknowledgment: UInt32
        /// SYN-ACK (port open) or RST (closed); both mean the destination was reached.
        public var isSynAck: Bool
        public var isReset: Bool
    }

    /// Reads a TCP segment a raw TCP socket received (IPv4: from the IP header; IPv6:
    /// from the TCP header). Nil for anything too short or not SYN-ACK / RST with ACK.
    public static func decodeAnswer(_ packet: UnsafeRawBufferPointer, family: AddressFamily) -> Answer? {
        var segment = packet
        if family == .ipv4 {
            guard packet.count >= 20, packet[0] >> 4 == 4 else { return nil }
            let headerLength = Int(packet[0] & 0x0f) * 4
            guard headerLength >= 20, packet.count >= headerLength, packet[9] == 6 else { return nil }
            segment = UnsafeRawBufferPointer(rebasing: packet[headerLength...])
        }
        guard segment.count >= 20 else { return nil }
        let flags = segment[13]
        guard flags & 0x10 != 0 else { return nil }  // every answer to a SYN acknowledges it
        let isSynAck = flags & 0x12 == 0x12 && flags & 0x04 == 0
        let isReset = flags & 0x04 != 0
        guard isSynAck || isReset else { return nil }
        return Answer(sourcePort: read(segment, 0), destinationPort: read(segment, 2),
                      acknowledgment: UInt32(read(segment, 8)) << 16 | UInt32(read(segment, 10)), isSynAck: isSynAck, isReset: isReset)
    }

    static func store(_ value: UInt16, _ bytes: inout [UInt8], _ offset: Int) {
        bytes[offset] = UInt8(truncatingIfNeeded: value >> 8)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    static func read(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
}
