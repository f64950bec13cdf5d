import CSystemShims
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

/// The raw TCP sockets of the path prober, one per address family, each with the TCP
/// socket that reserves its source port.
public final class PathTCPSockets: @unchecked Sendable {
    final class Socket {
        let family: AddressFamily
        let descriptor: Descriptor
        /// The TCP sockets that hold the source ports (bound, never listening).
        let reservations: [Descriptor]
        /// The source port of each flow's SYNs.
        let ports: [UInt16]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 8)
        let address = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)

        init(family: AddressFamily, descriptor: Descriptor, reservations: [Descriptor], ports: [UInt16]) {
            self.family = family
            self.descriptor = descriptor
            self.reservations = reservations
            self.ports = ports
        }

        deinit {
            buffer.deallocate()
            address.deallocate()
        }

        func close() {
            if descriptor.isOpen { try? descriptor.close() }
            for reservation in reservations where reservation.isOpen { try? reservation.close() }
        }

        /// Sends one segment; false when the socket would block.
        func send(_ segment: [UInt8], to destination: IPAddress) throws(SystemCallError) -> Bool {
            let fd = descriptor.rawValue
            let result = try segment.withUnsafeBytes { (bytes) -> Result<IOResult<Int>, SystemCallError> in
                Result { () throws(SystemCallError) -> IOResult<Int> in
                    try destination.withSocketAddress { (address, length) throws(SystemCallError) -> IOResult<Int> in
                        try Posix.nonBlocking("sendto") { Glibc.sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), address, length) }
                    }
                }
            }.get()
            if case .processed = result { return true }
            return false
        }

        /// Reads one segment: the bytes (valid until the next read), who sent them, and when.
        func receive() throws(SystemCallError) -> (packet: UnsafeRawBufferPointer, source: IPAddress?, realtime: Int64)? {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = descriptor.rawValue
            let buffer = self.buffer
            let address = self.address
            let result = try Posix.nonBlocking("recvfrom") {
                address.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT), $0, &length) }
            }
            let realtime = Clock.realtimeNanoseconds()
            guard case .processed(let count) = result else { return nil }
            return (UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<min(count, buffer.count)]),
                    IPAddress(socketAddress: address, length: Int(length)), realtime)
        }
    }

    private var sockets: [AddressFamily: Socket]

    private init(_ sockets: [AddressFamily: Socket]) {
        self.sockets = sockets
    }

    /// Opens a raw TCP socket and one source-port reservation per flow, per family.
    /// - Parameters:
    ///   - flows: flow identifiers per trace (each has its own source port).
    ///   - optional: families that may be missing (their TCP targets then are not reached).
    /// - Throws: `SystemCallError` (EPERM without CAP_NET_RAW).
    public static func open(families: Set<AddressFamily>, flows: Int = 1, optional: Set<AddressFamily> = []) throws(SystemCallError) -> PathTCPSockets {
        var opened: [AddressFamily: Socket] = [:]
        for family in families.sorted(by: { $0.rawValue < $1.rawValue }) {
            do {
                opened[family] = try openOne(family, flows: max(1, flows))
            } catch where optional.contains(family) {
                continue
            } catch {
                for socket in opened.values { socket.close() }
                throw error
            }
        }
        return PathTCPSockets(opened)
    }

    private static func openOne(_ family: AddressFamily, flows: Int) throws(SystemCallError) -> Socket {
        let raw = Descriptor(taking: try Posix.socket(family.posixDomain, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_TCP)))
        var reservations: [Descriptor] = []
        var ports: [UInt16] = []
        do {
            if family == .ipv6 {
                // The kernel fills the TCP checksum (it knows the source address) at byte 16.
                try Posix.setsockopt(raw.rawValue, Int32(IPPROTO_IPV6), IPV6_CHECKSUM, Int32(16))
            }
            for _ in 0..<flows {
                let reservation = Descriptor(taking: try Posix.socket(family.posixDomain, Int32(SOCK_STREAM.rawValue), 0))
                reservations.append(reservation)
                let any: IPAddress = family == .ipv4 ? .v4(0) : .v6(0, 0)
                try any.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(reservation.rawValue, address, length) }
                var storage = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                try withUnsafeMutablePointer(to: &storage) { (pointer) throws(SystemCallError) in
                    try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(SystemCallError) in
                        try Posix.getsockname(reservation.rawValue, address, &length)
                    }
                }
                ports.append(withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) })
            }
            return Socket(family: family, descriptor: raw, reservations: reservations, ports: ports)
        } catch {
            try? raw.close()
            for reservation in reservations { try? reservation.close() }
            throw error
        }
    }

    /// Hands the sockets to their new owner.
    func take() -> [AddressFamily: Socket] {
        defer { sockets = [:] }
        return sockets
    }

    deinit {
        for socket in sockets.values { socket.close() }
    }

    /// Our source address towards `destination` (a UDP socket's route lookup: nothing is sent).
    static func sourceAddress(towards destination: IPAddress) -> IPAddress? {
        guard let fd = try? Posix.socket(destination.family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0) else { return nil }
        defer { _ = Glibc.close(fd) }
        let connected = destination.withSocketAddress(port: 9) { address, length in Glibc.connect(fd, address, length) == 0 }
        guard connected else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &length) == 0 }
        }
        guard named else { return nil }
        return withUnsafePointer(to: &storage) { IPAddress(socketAddress: UnsafeRawPointer($0), length: Int(length)) }
    }
}
