import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every IPv4 / IPv6 packet a namespace (or this one) sends, as an AF_PACKET socket sees
/// it: the ground truth of what went on the wire (the class, the source address), read
/// from the kernel's copy rather than from what netprobe says it sent.
public final class OutgoingCapture {
    /// One outgoing packet's header fields.
    public struct Packet: Sendable {
        /// 4 or 6.
        public var version: Int
        /// The TOS / traffic-class byte.
        public var tos: Int
        /// The protocol (next header): 1 ICMP, 6 TCP, 58 ICMPv6.
        public var proto: Int
        public var source: String
        public var destination: String
        /// The transport's first byte (the ICMP type).
        public var type: Int
        /// TCP only: the flags byte and the destination port.
        public var tcpFlags: Int
        public var destinationPort: Int
    }

    let descriptor: Int32

    /// - Parameter namespace: a namespace under /run/netns, or nil for this process' own.
    public init(namespace: String? = nil) throws {
        let open: () throws -> Int32 = {
            // ETH_P_ALL in network order; SOCK_DGRAM: from the IP header on.
            let fd = socket(AF_PACKET, Int32(SOCK_DGRAM.rawValue), Int32(UInt16(0x0003).bigEndian))
            guard fd >= 0 else { throw NSError(domain: "OutgoingCapture", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "AF_PACKET socket: errno \(errno) (needs root)"]) }
            return fd
        }
        descriptor = try namespace.map { try NetworkNamespace.inside($0, open) } ?? open()
    }

    deinit { close(descriptor) }

    /// The outgoing packets queued since the last call.
    public func outgoing() -> [Packet] {
        var packets: [Packet] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        var address = sockaddr_storage()
        while true {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let count = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &length) }
            }
            guard count > 0 else { return packets }
            // sockaddr_ll: family, protocol, ifindex, hatype, pkttype (PACKET_OUTGOING = 4) at byte 10.
            let packetType = withUnsafeBytes(of: address) { $0[10] }
            guard packetType == 4, count >= 40 else { continue }
            let version = Int(buffer[0] >> 4)
            if version == 4 {
                let header = Int(buffer[0] & 0x0f) * 4
                guard count >= header + 14 else { continue }
                packets.append(Packet(version: 4, tos: Int(buffer[1]), proto: Int(buffer[9]), source: Self.text(buffer[12..<16], AF_INET),
                                      destination: Self.text(buffer[16..<20], AF_INET), type: Int(buffer[header]), tcpFlags: Int(buffer[header + 13]),
                                      destinationPort: Int(buffer[header + 2]) << 8 | Int(buffer[header + 3])))
            } else if version == 6 {
                let tcp = count >= 54
                packets.append(Packet(version: 6, tos: Int((buffer[0] & 0x0f) << 4 | buffer[1] >> 4), proto: Int(buffer[6]),
                                      source: Self.text(buffer[8..<24], AF_INET6), destination: Self.text(buffer[24..<40], AF_INET6),
                                      type: Int(buffer[40]), tcpFlags: tcp ? Int(buffer[53]) : 0,
                                      destinationPort: tcp ? Int(buffer[42]) << 8 | Int(buffer[43]) : 0))
            }
        }
    }

    private static func text(_ bytes: ArraySlice<UInt8>, _ family: Int32) -> String {
        var output = [CChar](repeating: 0, count: 64)
        let raw = Array(bytes)
        _ = raw.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &output, socklen_t(output.count)) }
        return String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
