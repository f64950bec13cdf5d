import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

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
        /// The hop-limit control message of each send.
        let sendControl = UnsafeMutableRawBufferPointer.allocate(byteCount: OutboundControlMessage.largestSpace, alignment: MemoryLayout<Int>.alignment)

        init(family: AddressFamily, descriptor: Descriptor, reservations: [Descriptor], ports: [UInt16]) {
            self.family = family
            self.descriptor = descriptor
            self.reservations = reservations
            self.ports = ports
        }

        deinit {
            buffer.deallocate()
            address.deallocate()
            sendControl.deallocate()
        }

        func close() {
            if descriptor.isOpen { try? descriptor.close() }
            for reservation in reservations where reservation.isOpen { try? reservation.close() }
        }

        /// Sends one segment; false when the socket would block.
        /// - Parameter hopLimit: the segment's TTL / hop limit, as a control message.
        func send(_ segment: [UInt8], to destination: IPAddress, hopLimit: Int) throws(SystemCallError) -> Bool {
            let fd = descriptor.rawValue
            var control = ControlMessageBuilder(storage: sendControl)
            control.append(.hopLimit(hopLimit, family))
            let controlBytes = control.bytes
            let result = try segment.withUnsafeBytes { (bytes) -> Result<IOResult<Int>, SystemCallError> in
                Result { () throws(SystemCallError) -> IOResult<Int> in
                    try destination.withSocketAddress { (address, length) throws(SystemCallError) -> IOResult<Int> in
                        try Posix.sendmsg(fd, bytes, to: address, length, control: controlBytes, flags: Int32(MSG_DONTWAIT))
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
