import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The raw TCP sockets of the path prober, one per address family, each with the TCP
/// socket that reserves its source port. Kernel-timed as the ICMP sockets are: every SYN's
/// software transmit stamp comes back on the error queue naming its probe, and every
/// segment read carries its receive stamp.
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
        /// The control messages of each send: timestamp id and hop limit.
        let sendControl = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * OutboundControlMessage.largestSpace, alignment: MemoryLayout<Int>.alignment)
        /// The control messages of each read: the receive stamp, or a transmit stamp's.
        let receiveControl = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: MemoryLayout<Int>.alignment)
        /// How each SYN's transmit stamp names its probe.
        private var stampNaming = TransmitStampNaming()

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
            receiveControl.deallocate()
        }

        func close() {
            if descriptor.isOpen { try? descriptor.close() }
            for reservation in reservations where reservation.isOpen { try? reservation.close() }
        }

        /// Sends one segment; false when the socket would block. Its transmit stamp will
        /// carry `probeNumber`.
        /// - Parameters:
        ///   - hopLimit: the segment's TTL / hop limit, as a control message.
        ///   - options: the target's TOS, source address and interface, as control messages
        ///     (the IPv4 checksum in `segment` must have been computed from that source).
        func send(_ segment: [UInt8], to destination: IPAddress, probeNumber: UInt32, hopLimit: Int, options: SendOptions = .none) throws(SystemCallError) -> Bool {
            let result = try stampNaming.send(probeNumber: probeNumber) { (perSendID) throws(SystemCallError) -> IOResult<Int> in
                try sendOnce(segment, to: destination, probeNumber: probeNumber, hopLimit: hopLimit, options: options, perSendID: perSendID)
            }
            if case .processed = result { return true }
            return false
        }

        private func sendOnce(_ segment: [UInt8], to destination: IPAddress, probeNumber: UInt32, hopLimit: Int, options: SendOptions, perSendID: Bool) throws(SystemCallError) -> IOResult<Int> {
            var control = ControlMessageBuilder(storage: sendControl)
            if perSendID { control.append(.timestampID(probeNumber)) }
            control.append(.hopLimit(hopLimit, family))
            control.append(options, family: family)
            return try Posix.sendmsg(descriptor.rawValue, segment, to: destination, control: control.bytes)
        }

        /// One segment read from the normal queue.
        struct Received {
            /// The bytes read (from the IPv4 header on, for IPv4), valid until the next read.
            var packet: UnsafeRawBufferPointer
            var source: IPAddress?
            /// The kernel's software receive stamp, CLOCK_REALTIME ns; nil when the packet has none.
            var kernelRealtime: Int64?
            /// CLOCK_REALTIME read right after the read: the fallback.
            var userRealtime: Int64
        }

        /// What the error queue held.
        enum ErrorQueueMessage {
            /// The software transmit stamp of one of our SYNs.
            case transmitStamp(probeNumber: UInt32, realtime: Int64)
            /// Anything else: dropped. (Without IP_RECVERR / IPV6_RECVERR, which this socket
            /// does not set, ICMP errors about our SYNs never land here: the ICMP socket reads them.)
            case other
        }

        /// Reads one segment; nil when the queue is empty.
        func receive() throws(SystemCallError) -> Received? {
            guard let (message, userRealtime) = try receive(flags: 0) else { return nil }
            let control = ReceivedControlMessages(parsing: message.control, flags: message.flags)
            return Received(packet: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<min(message.length, buffer.count)]),
                            source: IPAddress(socketAddress: address, length: message.sourceLength),
                            kernelRealtime: control.softwareRealtime, userRealtime: userRealtime)
        }

        /// Reads one message from the error queue; nil when it is empty.
        func receiveError() throws(SystemCallError) -> ErrorQueueMessage? {
            guard let (message, _) = try receive(flags: Int32(MSG_ERRQUEUE)) else { return nil }
            let control = ReceivedControlMessages(parsing: message.control, flags: message.flags)
            guard let stamp = stampNaming.transmitStamp(in: control) else { return .other }
            return .transmitStamp(probeNumber: stamp.probeNumber, realtime: stamp.realtime)
        }

        private func receive(flags: Int32) throws(SystemCallError) -> (ReceivedDatagram, userRealtime: Int64)? {
            let result = try Posix.recvmsg(descriptor.rawValue, into: buffer, source: address, control: receiveControl, flags: flags)
            // Read the user-space clock right after the syscall: the fallback when the kernel
            // did not stamp this segment.
            let userRealtime = Clock.realtimeNanoseconds()
            guard case .processed(let message) = result else { return nil }
            return (message, userRealtime)
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
            // Software stamps as on the ICMP sockets (FIELD-NOTES "Timestamps"). No
            // IP_RECVERR / IPV6_RECVERR: the transmit stamps come back with their
            // extended-error message without it (checked on Linux 6.18, IPv4 and IPv6),
            // and with it every ICMP error about our SYNs would land here too and set
            // SO_ERROR, which fails the next read; the ICMP socket reads those errors.
            let stamping = CSystemShims_SOF_TIMESTAMPING_TX_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE
                | CSystemShims_SOF_TIMESTAMPING_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_OPT_ID | CSystemShims_SOF_TIMESTAMPING_OPT_TSONLY
            try Posix.setsockopt(raw.rawValue, SOL_SOCKET, SO_TIMESTAMPING, Int32(stamping))
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
    static func sourceAddress(towards destination: IPAddress, interface: String? = nil) -> IPAddress? {
        guard let fd = try? Posix.socket(destination.family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0) else { return nil }
        defer { _ = Glibc.close(fd) }
        if let interface {
            // As the SYN will leave: through that interface, whatever the main route says.
            var name = Array(interface.utf8CString)
            guard Glibc.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, socklen_t(name.count)) == 0 else { return nil }
        }
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
