import CSystemShims
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// How an ICMP socket was opened.
public enum ICMPSocketMode: String, Sendable {
    /// SOCK_RAW: needs CAP_NET_RAW; we choose the echo identifier and filter by it.
    case raw
    /// SOCK_DGRAM ("ping socket"): needs the group in net.ipv4.ping_group_range; the
    /// kernel sets the identifier and routes replies to us by it.
    case datagram
}

/// Why an ICMP socket could not be opened.
public enum ICMPSocketError: Error, CustomStringConvertible, Sendable {
    /// Neither a raw socket (no CAP_NET_RAW) nor a datagram socket (group outside
    /// net.ipv4.ping_group_range) is allowed.
    case notPermitted(family: AddressFamily, groupID: UInt32)
    /// Any other failure, e.g. the family is not supported on this host.
    case system(family: AddressFamily, SystemCallError)

    public var description: String {
        switch self {
        case .notPermitted(let family, let groupID):
            return "not permitted to open an \(family == .ipv4 ? "ICMP" : "ICMPv6") socket: raw sockets need CAP_NET_RAW, and group \(groupID) is outside net.ipv4.ping_group_range"
        case .system(let family, let error):
            return "cannot open an \(family == .ipv4 ? "ICMP" : "ICMPv6") socket: \(error)"
        }
    }
}

/// The ICMP sockets of a process, one per address family, opened before privileges are
/// dropped and then handed to an `ICMPProber`.
public final class ICMPSocketSet: @unchecked Sendable {
    private var sockets: [AddressFamily: ICMPSocket]
    /// Sockets for don't-fragment choices (`ping -M`), per family and kind.
    private var fragmentationSockets: [FragmentationSocketKey: ICMPSocket]

    private init(_ sockets: [AddressFamily: ICMPSocket], fragmentation: [FragmentationSocketKey: ICMPSocket] = [:]) {
        self.sockets = sockets
        self.fragmentationSockets = fragmentation
    }

    /// The mode each socket ended up in (raw with CAP_NET_RAW, else datagram).
    public var modes: [AddressFamily: ICMPSocketMode] { sockets.mapValues(\.mode) }

    /// Opens one socket per family.
    /// - Parameters:
    ///   - families: the families wanted.
    ///   - optional: families that may be missing (e.g. IPv6 on a host without it);
    ///     their failure is logged, and targets of that family then report `error`.
    ///   - ttl: IP TTL / hop limit of requests; nil keeps the system default.
    ///   - fragmentation: the don't-fragment choices probes will make (`ping -M`): one
    ///     more socket per family for those that set DF (`do`, `probe`) and one for `dont`.
    /// - Throws: `ICMPSocketError`; `.notPermitted` when neither raw nor datagram ICMP
    ///   sockets are allowed.
    public static func open(families: Set<AddressFamily>, optional: Set<AddressFamily> = [], ttl: Int?,
                            fragmentation: Set<Fragmentation> = [], logger: Logger) throws(ICMPSocketError) -> ICMPSocketSet {
        var generator = SystemRandomNumberGenerator()
        let identifier: UInt16 = generator.next()
        var opened: [AddressFamily: ICMPSocket] = [:]
        var extra: [FragmentationSocketKey: ICMPSocket] = [:]
        let kinds = Set(fragmentation.map(\.setsDontFragment)).sorted { !$0 && $1 }
        for family in families.sorted(by: { $0.rawValue < $1.rawValue }) {
            do {
                let socket = try ICMPSocket.open(family: family, ttl: ttl, identifier: identifier, logger: logger)
                opened[family] = socket
                for dontFragment in kinds {
                    // Raw: the same identifier, so answers reach the family's main socket,
                    // which reads them; datagram: the kernel's own, read on this socket.
                    extra[FragmentationSocketKey(family: family, dontFragment: dontFragment)] =
                        try ICMPSocket.open(family: family, ttl: ttl, identifier: socket.identifier, logger: logger,
                                            fragmentation: dontFragment ? .probe : .dont, forcedMode: socket.mode)
                }
            } catch {
                if case .system = error, optional.contains(family), opened[family] == nil {
                    logger.warning("cannot open an ICMP socket; targets of this family will report error", metadata: ["family": "\(family.rawValue)", "error": "\(error)"])
                    continue
                }
                for socket in opened.values { try? socket.close() }
                for socket in extra.values { try? socket.close() }
                throw error
            }
        }
        return ICMPSocketSet(opened, fragmentation: extra)
    }

    /// Hands the sockets over to their new owner.
    func take() -> [AddressFamily: ICMPSocket] {
        defer { sockets = [:] }
        return sockets
    }

    /// Hands the don't-fragment choices' sockets over to their new owner.
    func takeFragmentationSockets() -> [FragmentationSocketKey: ICMPSocket] {
        defer { fragmentationSockets = [:] }
        return fragmentationSockets
    }

    deinit {
        for socket in sockets.values { try? socket.close() }
        for socket in fragmentationSockets.values { try? socket.close() }
    }
}

/// Which of a family's extra sockets a don't-fragment choice sends on.
struct FragmentationSocketKey: Hashable {
    var family: AddressFamily
    /// True for `do` / `probe` (IP_PMTUDISC_PROBE), false for `dont` (IP_PMTUDISC_DONT).
    var dontFragment: Bool

    init(family: AddressFamily, dontFragment: Bool) {
        self.family = family
        self.dontFragment = dontFragment
    }

    init(family: AddressFamily, _ fragmentation: Fragmentation) {
        self.init(family: family, dontFragment: fragmentation.setsDontFragment)
    }
}

/// One ICMP or ICMPv6 socket shared by every target of its family, with kernel
/// timestamping switched on. Owned by the event-loop thread.
final class ICMPSocket {
    let family: AddressFamily
    let mode: ICMPSocketMode
    let descriptor: Descriptor
    /// The echo identifier our requests carry (raw: random; datagram: the kernel's choice).
    let identifier: UInt16
    /// True when reads start at the IPv4 header (raw IPv4 only).
    var includesIPHeader: Bool { mode == .raw && family == .ipv4 }
    /// The don't-fragment choice this socket was opened for; nil for a family's main socket.
    let fragmentation: Fragmentation?
    /// A raw socket that only sends (a don't-fragment choice's): its answers reach the
    /// family's main socket, and it reads only its error queue (transmit stamps, EMSGSIZE).
    var onlySends: Bool { fragmentation != nil && mode == .raw }

    /// How transmit stamps name their probe (SCM_TS_OPT_ID per send, or the socket's counter).
    private var stampNaming = TransmitStampNaming()
    /// Whether each send names its own timestamp id (SCM_TS_OPT_ID, Linux 6.13+). When the
    /// kernel refuses it we fall back to the socket's own OPT_ID counter.
    var usesPerSendTimestampID: Bool { stampNaming.usesPerSendID }

    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private let controlBuffer: UnsafeMutableRawBufferPointer
    private let sendControlBuffer: UnsafeMutableRawBufferPointer
    private let addressBuffer: UnsafeMutablePointer<sockaddr_storage>

    private static let solRaw: Int32 = 255

    private init(family: AddressFamily, mode: ICMPSocketMode, descriptor: Descriptor, identifier: UInt16, fragmentation: Fragmentation?) {
        self.family = family
        self.mode = mode
        self.descriptor = descriptor
        self.identifier = identifier
        self.fragmentation = fragmentation
        receiveBuffer = .allocate(byteCount: 65_536 + 128, alignment: 8)
        controlBuffer = .allocate(byteCount: 1024, alignment: MemoryLayout<Int>.alignment)
        // Room for one of each message a send carries (timestamp id, hop limit, TOS, packet info).
        sendControlBuffer = .allocate(byteCount: 4 * OutboundControlMessage.largestSpace, alignment: MemoryLayout<Int>.alignment)
        sendControlBuffer.initializeMemory(as: UInt8.self, repeating: 0)
        addressBuffer = .allocate(capacity: 1)
    }

    deinit {
        receiveBuffer.deallocate()
        controlBuffer.deallocate()
        sendControlBuffer.deallocate()
        addressBuffer.deallocate()
    }

    func close() throws(SystemCallError) {
        try descriptor.close()
    }

    /// Opens a raw socket if allowed, else a datagram socket, and configures it.
    /// - Parameters:
    ///   - family: IPv4 or IPv6.
    ///   - ttl: IP TTL / hop limit for requests; nil keeps the system default.
    ///   - identifier: the echo identifier to use on a raw socket.
    ///   - fragmentation: a don't-fragment choice's socket (`ping -M`); nil for the main one.
    ///   - forcedMode: open this mode only (the extra sockets follow the main socket's).
    /// - Throws: `ICMPSocketError.notPermitted` when neither kind is allowed.
    static func open(family: AddressFamily, ttl: Int?, identifier: UInt16, logger: Logger, fragmentation: Fragmentation? = nil,
                     forcedMode: ICMPSocketMode? = nil) throws(ICMPSocketError) -> ICMPSocket {
        let proto = family == .ipv4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6)
        let raw: Int32
        let mode: ICMPSocketMode
        do throws(SystemCallError) {
            if forcedMode == .datagram { throw SystemCallError(call: "socket", errno: EPERM) }
            raw = try Posix.socket(family.posixDomain, Int32(SOCK_RAW.rawValue), proto)
            mode = .raw
        } catch where error.errno == EPERM || error.errno == EACCES {
            do {
                raw = try Posix.socket(family.posixDomain, Int32(SOCK_DGRAM.rawValue), proto)
                mode = .datagram
            } catch where error.errno == EPERM || error.errno == EACCES {
                throw .notPermitted(family: family, groupID: getegid())
            } catch {
                throw .system(family: family, error)
            }
        } catch {
            throw .system(family: family, error)
        }
        let descriptor = Descriptor(taking: raw)
        do {
            let socket = try configure(descriptor, family: family, mode: mode, ttl: ttl, identifier: identifier, fragmentation: fragmentation, logger: logger)
            logger.debug("opened ICMP socket", metadata: ["family": "\(family.rawValue)", "mode": "\(mode.rawValue)", "identifier": "\(socket.identifier)"])
            return socket
        } catch {
            try? descriptor.close()
            throw .system(family: family, error)
        }
    }

    private static func configure(_ descriptor: Descriptor, family: AddressFamily, mode: ICMPSocketMode, ttl: Int?, identifier: UInt16,
                                  fragmentation: Fragmentation?, logger: Logger) throws(SystemCallError) -> ICMPSocket {
        let fd = descriptor.rawValue
        let flags = CSystemShims_SOF_TIMESTAMPING_TX_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE
            | CSystemShims_SOF_TIMESTAMPING_SOFTWARE | CSystemShims_SOF_TIMESTAMPING_OPT_ID | CSystemShims_SOF_TIMESTAMPING_OPT_TSONLY
        try Posix.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, Int32(flags))

        // A larger receive buffer keeps replies from thousands of targets from being dropped
        // between two reads; SO_RCVBUFFORCE needs CAP_NET_ADMIN, so fall back quietly.
        let bufferBytes: Int32 = 4 << 20
        do { try Posix.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, bufferBytes) } catch {
            try? Posix.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, bufferBytes)
        }

        switch family {
        case .ipv4:
            try Posix.setsockopt(fd, Int32(IPPROTO_IP), IP_RECVTTL, Int32(1))
            // Which of our addresses a reply came to: part of the match when a probe chose its source.
            try Posix.setsockopt(fd, Int32(IPPROTO_IP), IP_PKTINFO, Int32(1))
            if let ttl { try Posix.setHopLimit(fd, family: .ipv4, ttl) }
            if mode == .raw {
                // Block every type but echo reply, destination unreachable and time exceeded.
                let passed: UInt32 = (1 << 0) | (1 << 3) | (1 << 11)
                try Posix.setsockopt(fd, solRaw, CSystemShims_ICMP_FILTER, CSystemShims_icmp_filter(data: ~passed))
            } else {
                try Posix.setsockopt(fd, Int32(IPPROTO_IP), IP_RECVERR, Int32(1))
            }
        case .ipv6:
            try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVHOPLIMIT, Int32(1))
            try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), ControlMessageConstants.ipv6ReceivePacketInfo, Int32(1))
            if let ttl { try Posix.setHopLimit(fd, family: .ipv6, ttl) }
            if mode == .raw {
                var filter = CSystemShims_icmp6_filter()
                CSystemShims_ICMP6_FILTER_SETBLOCKALL(&filter)
                for type in [ICMPEcho.echoReplyV6, ICMPEcho.destinationUnreachableV6, ICMPEcho.packetTooBigV6, ICMPEcho.timeExceededV6] {
                    CSystemShims_ICMP6_FILTER_SETPASS(Int32(type), &filter)
                }
                try Posix.setsockopt(fd, Int32(IPPROTO_ICMPV6), CSystemShims_ICMP6_FILTER, filter)
            } else {
                try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVERR, Int32(1))
            }
        }

        if let fragmentation {
            try setFragmentation(fragmentation, on: fd, family: family, onlySends: mode == .raw)
        }

        var chosenIdentifier = identifier
        if mode == .datagram {
            // The kernel uses the socket's "port" as the echo identifier: bind to port 0 so
            // it picks a free one, then read it back.
            let any: IPAddress = family == .ipv4 ? .v4(0) : .v6(0, 0)
            try any.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(fd, address, length) }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            try withUnsafeMutablePointer(to: &storage) { (pointer) throws(SystemCallError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(SystemCallError) in
                    try Posix.getsockname(fd, address, &length)
                }
            }
            chosenIdentifier = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
        }
        return ICMPSocket(family: family, mode: mode, descriptor: descriptor, identifier: chosenIdentifier, fragmentation: fragmentation)
    }

    /// IP_MTU_DISCOVER / IPV6_MTU_DISCOVER (ip(7), ipv6(7)): PROBE sets DF and ignores the
    /// host's path-MTU cache, so every probe asks the path; DONT never sets DF. IPv6 also
    /// needs IPV6_DONTFRAG, or this host would fragment what the interface cannot carry.
    /// IP_RECVERR / IPV6_RECVERR queue a local EMSGSIZE with the interface's MTU in
    /// `ee_info`. `onlySends`: a raw socket beside the family's main one, which reads the
    /// answers; a filter that keeps nothing stops the kernel from queueing every ICMP
    /// packet of the host to it a second time.
    static func setFragmentation(_ fragmentation: Fragmentation, on fd: Int32, family: AddressFamily, onlySends: Bool) throws(SystemCallError) {
        let value = fragmentation.setsDontFragment ? ControlMessageConstants.pmtuDiscoveryProbe : ControlMessageConstants.pmtuDiscoveryDont
        switch family {
        case .ipv4:
            try Posix.setsockopt(fd, Int32(IPPROTO_IP), ControlMessageConstants.ipMTUDiscover, value)
            try Posix.setsockopt(fd, Int32(IPPROTO_IP), IP_RECVERR, Int32(1))
        case .ipv6:
            try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), ControlMessageConstants.ipv6MTUDiscover, value)
            try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), ControlMessageConstants.ipv6DontFragment, Int32(fragmentation.setsDontFragment ? 1 : 0))
            try Posix.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVERR, Int32(1))
        }
        if onlySends {
            try SocketFilter.attach([SocketFilter.reject], to: fd)
        }
    }

    // MARK: sending

    /// Whether a send can choose its source address per packet. Not on a datagram ICMPv6
    /// socket: the kernel ignores IPV6_PKTINFO's address there and sends from the socket's
    /// (checked on Linux 6.18), so such a send is refused rather than sent from elsewhere.
    var choosesSourcePerPacket: Bool { !(mode == .datagram && family == .ipv6) }

    /// Sends one request. The kernel's transmit stamp for it will carry `probeNumber`.
    /// - Parameters:
    ///   - hopLimit: this packet's TTL / hop limit (path probes); nil keeps the socket's.
    ///   - options: the target's TOS, source address and interface, as control messages.
    /// - Throws: `SystemCallError`; EOPNOTSUPP for a source address this socket cannot choose.
    func send(_ packet: [UInt8], to destination: IPAddress, probeNumber: UInt32, hopLimit: Int? = nil, options: SendOptions = .none) throws(SystemCallError) -> IOResult<Int> {
        if options.source != nil && !choosesSourcePerPacket {
            throw SystemCallError(call: "sendmsg (a datagram ICMPv6 socket cannot choose its source address; a raw socket, CAP_NET_RAW, can)", errno: EOPNOTSUPP)
        }
        return try stampNaming.send(probeNumber: probeNumber) { (perSendID) throws(SystemCallError) -> IOResult<Int> in
            try sendOnce(packet, to: destination, probeNumber: probeNumber, hopLimit: hopLimit, options: options, perSendID: perSendID)
        }
    }

    private func sendOnce(_ packet: [UInt8], to destination: IPAddress, probeNumber: UInt32, hopLimit: Int?, options: SendOptions, perSendID: Bool) throws(SystemCallError) -> IOResult<Int> {
        var control = ControlMessageBuilder(storage: sendControlBuffer)
        if perSendID { control.append(.timestampID(probeNumber)) }
        if let hopLimit { control.append(.hopLimit(hopLimit, family)) }
        control.append(options, family: family)
        return try Posix.sendmsg(descriptor.rawValue, packet, to: destination, control: control.bytes)
    }

    // MARK: receiving

    /// One datagram read from the normal queue.
    struct Received {
        /// The bytes read, valid until the next receive on this socket.
        var packet: UnsafeRawBufferPointer
        var source: IPAddress?
        var kernelRealtime: Int64?
        var userRealtime: Int64
        /// TTL / hop limit from the IP_TTL / IPV6_HOPLIMIT control message.
        var hopLimit: Int?
        /// Which of our addresses the packet was sent to (IP_PKTINFO / IPV6_PKTINFO).
        var destination: IPAddress?
        /// Whether every control message arrived (MSG_CTRUNC makes it `.truncated`).
        var controlState: ReceivedControlMessages.State
    }

    /// What the error queue held.
    enum ErrorQueueMessage {
        /// The software transmit stamp of one of our requests.
        case transmitStamp(probeNumber: UInt32, realtime: Int64)
        /// An ICMP error about one of our requests (datagram sockets, IP_RECVERR).
        case icmpError(type: UInt8, code: UInt8, info: UInt32, destination: IPAddress?, quotedRequest: UnsafeRawBufferPointer)
        /// A local error for one of our requests (e.g. EMSGSIZE, with the MTU in `info`).
        case localError(errno: Int32, info: UInt32, destination: IPAddress?, quotedRequest: UnsafeRawBufferPointer)
        /// Something we do not use.
        case other
    }

    /// Reads one datagram; nil when the queue is empty.
    func receive() throws(SystemCallError) -> Received? {
        guard let (message, userRealtime) = try receive(flags: 0) else { return nil }
        let control = ReceivedControlMessages(parsing: message.control, flags: message.flags)
        return Received(packet: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(receiveBuffer)[0..<min(message.length, receiveBuffer.count)]),
                        source: IPAddress(socketAddress: addressBuffer, length: message.sourceLength),
                        kernelRealtime: control.softwareRealtime, userRealtime: userRealtime, hopLimit: control.hopLimit,
                        destination: control.destination, controlState: control.state)
    }

    /// Reads one message from the error queue; nil when it is empty.
    func receiveError() throws(SystemCallError) -> ErrorQueueMessage? {
        guard let (message, _) = try receive(flags: Int32(MSG_ERRQUEUE)) else { return nil }
        let control = ReceivedControlMessages(parsing: message.control, flags: message.flags)
        guard let extended = control.extendedError else { return .other }
        let quoted = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(receiveBuffer)[0..<min(message.length, receiveBuffer.count)])
        let destination = IPAddress(socketAddress: addressBuffer, length: message.sourceLength)
        switch extended.origin {
        case .timestamping:
            guard let stamp = stampNaming.transmitStamp(in: control) else { return .other }
            return .transmitStamp(probeNumber: stamp.probeNumber, realtime: stamp.realtime)
        case .icmp, .icmp6:
            return .icmpError(type: extended.type, code: extended.code, info: extended.info, destination: destination, quotedRequest: quoted)
        case .local:
            return .localError(errno: extended.errno, info: extended.info, destination: destination, quotedRequest: quoted)
        case .other:
            return .other
        }
    }

    private func receive(flags: Int32) throws(SystemCallError) -> (ReceivedDatagram, userRealtime: Int64)? {
        let result = try Posix.recvmsg(descriptor.rawValue, into: receiveBuffer, source: addressBuffer, control: controlBuffer, flags: flags)
        // Read the user-space clock right after the syscall: the fallback when the kernel
        // did not stamp this packet.
        let userRealtime = Clock.realtimeNanoseconds()
        guard case .processed(let message) = result else { return nil }
        return (message, userRealtime)
    }
}
