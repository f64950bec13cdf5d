import ProbeResults
import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

// Control messages (cmsgs) and the `msghdr` plumbing of sendmsg/recvmsg, in one place.
//
// Nothing else in the engine names `msghdr` or a CMSG_* macro: a socket hands this file
// its buffers and gets back typed values. The reader works on the bytes of a control
// buffer alone (no `msghdr`, no pointers into it survive a call), so its tests are byte
// arrays. Layout, as glibc's CMSG_* macros define it on Linux: each message is a
// `cmsghdr` (cmsg_len, cmsg_level, cmsg_type) whose cmsg_len counts the header and the
// data, then the data at CMSG_LEN(0), then padding to the next multiple of the
// alignment (CMSG_SPACE). The shim's CMSG_LEN/CMSG_SPACE give the sizes, so nothing here
// hard-codes them.

// MARK: - Layout

enum ControlMessageLayout {
    /// Bytes of the header before the data (CMSG_LEN(0)).
    static let headerLength = Int(CSystemShims_CMSG_LEN(0))

    /// Bytes one message with `dataLength` bytes of data occupies, padding included (CMSG_SPACE).
    static func space(dataLength: Int) -> Int { Int(CSystemShims_CMSG_SPACE(dataLength)) }

    /// The value of cmsg_len for `dataLength` bytes of data (CMSG_LEN).
    static func length(dataLength: Int) -> Int { Int(CSystemShims_CMSG_LEN(dataLength)) }

    /// `length` rounded up to the alignment of the next header (CMSG_ALIGN).
    static func aligned(_ length: Int) -> Int { space(dataLength: length) - space(dataLength: 0) }
}

// MARK: - Received messages

/// A `sock_extended_err` from the error queue (IP_RECVERR / IPV6_RECVERR) with the
/// offender address that follows it.
struct ExtendedSocketError: Equatable, Sendable {
    /// Who reported the error (`ee_origin`).
    enum Origin: Equatable, Sendable {
        /// A local error, e.g. EMSGSIZE (SO_EE_ORIGIN_LOCAL).
        case local
        /// An ICMP message (SO_EE_ORIGIN_ICMP).
        case icmp
        /// An ICMPv6 message (SO_EE_ORIGIN_ICMP6).
        case icmp6
        /// A transmit timestamp (SO_EE_ORIGIN_TIMESTAMPING).
        case timestamping
        /// Any other origin, by number.
        case other(UInt8)

        init(_ raw: UInt8) {
            switch Int32(raw) {
            case CSystemShims_SO_EE_ORIGIN_LOCAL: self = .local
            case CSystemShims_SO_EE_ORIGIN_ICMP: self = .icmp
            case CSystemShims_SO_EE_ORIGIN_ICMP6: self = .icmp6
            case CSystemShims_SO_EE_ORIGIN_TIMESTAMPING: self = .timestamping
            default: self = .other(raw)
            }
        }
    }

    /// The errno the error stands for (ENOMSG for timestamps).
    var errno: Int32
    var origin: Origin
    /// ICMP type and code (ICMP origins).
    var type: UInt8
    var code: UInt8
    /// SCM_TSTAMP_* for timestamps; the MTU for EMSGSIZE.
    var info: UInt32
    /// The OPT_ID of the stamped packet (timestamps).
    var data: UInt32
    /// The router or host that sent the ICMP error (SO_EE_OFFENDER); nil when the kernel
    /// names none (AF_UNSPEC: local errors, timestamps).
    var offender: IPAddress?
}

/// One control message of a received message, decoded.
enum ControlMessage: Equatable, Sendable {
    /// SOL_SOCKET / SCM_TIMESTAMPING: the software stamp (`ts[0]`, CLOCK_REALTIME ns);
    /// nil when the kernel left it zero.
    case timestamps(softwareRealtime: Int64?)
    /// IP_RECVERR / IPV6_RECVERR from the error queue.
    case extendedError(ExtendedSocketError)
    /// IP_TTL (IP_RECVTTL) / IPV6_HOPLIMIT (IPV6_RECVHOPLIMIT) of the received packet.
    case hopLimit(Int)
    /// SOL_SOCKET / SCM_TS_OPT_ID: the timestamp id a send named (what the builder writes).
    case timestampID(UInt32)
    /// IP_PKTINFO / IPV6_PKTINFO of a received packet: the destination address in its IP
    /// header (`ipi_addr` / `ipi6_addr`) and the interface it arrived on.
    case packetInfo(destination: IPAddress, interfaceIndex: UInt32)
    /// A kind we know whose data is shorter than its type (the kernel cuts the last
    /// message to what fits when the buffer is too small, and sets MSG_CTRUNC).
    case short(level: Int32, type: Int32, dataLength: Int)
    /// A level/type the engine does not read; skipped.
    case unrecognized(level: Int32, type: Int32)

    /// Decodes one message's data.
    /// - Parameters:
    ///   - level: cmsg_level.
    ///   - type: cmsg_type.
    ///   - data: the bytes from CMSG_DATA to cmsg_len (padding excluded).
    init(level: Int32, type: Int32, data: UnsafeRawBufferPointer) {
        switch (level, type) {
        case (SOL_SOCKET, SCM_TIMESTAMPING):
            guard data.count >= MemoryLayout<CSystemShims_scm_timestamping>.size else { self = .short(level: level, type: type, dataLength: data.count); return }
            let software = data.loadUnaligned(as: CSystemShims_scm_timestamping.self).ts.0
            self = .timestamps(softwareRealtime: software.tv_sec == 0 && software.tv_nsec == 0 ? nil : Clock.nanoseconds(software))
        case (SOL_SOCKET, CSystemShims_SCM_TS_OPT_ID):
            guard data.count >= MemoryLayout<UInt32>.size else { self = .short(level: level, type: type, dataLength: data.count); return }
            self = .timestampID(data.loadUnaligned(as: UInt32.self))
        case (Int32(IPPROTO_IP), IP_RECVERR), (Int32(IPPROTO_IPV6), IPV6_RECVERR):
            let headerSize = MemoryLayout<CSystemShims_sock_extended_err>.size
            guard data.count >= headerSize else { self = .short(level: level, type: type, dataLength: data.count); return }
            let raw = data.loadUnaligned(as: CSystemShims_sock_extended_err.self)
            let offenderBytes = UnsafeRawBufferPointer(rebasing: data[headerSize...])
            var offender: IPAddress?
            if let start = offenderBytes.baseAddress, offenderBytes.count >= MemoryLayout<sa_family_t>.size {
                offender = IPAddress(socketAddress: start, length: offenderBytes.count)
            }
            self = .extendedError(ExtendedSocketError(errno: Int32(bitPattern: raw.ee_errno), origin: .init(raw.ee_origin), type: raw.ee_type, code: raw.ee_code,
                                                      info: raw.ee_info, data: raw.ee_data, offender: offender))
        case (Int32(IPPROTO_IP), IP_PKTINFO):
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
            guard data.count >= 12, let destination = IPAddress(bytes: UnsafeRawBufferPointer(rebasing: data[8...]), family: .ipv4) else {
                self = .short(level: level, type: type, dataLength: data.count); return
            }
            self = .packetInfo(destination: destination, interfaceIndex: data.loadUnaligned(as: UInt32.self))
        case (Int32(IPPROTO_IPV6), ControlMessageConstants.ipv6PacketInfo):
            // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
            guard data.count >= 20, let destination = IPAddress(bytes: data, family: .ipv6) else {
                self = .short(level: level, type: type, dataLength: data.count); return
            }
            self = .packetInfo(destination: destination, interfaceIndex: data.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        case (Int32(IPPROTO_IP), IP_TTL), (Int32(IPPROTO_IPV6), IPV6_HOPLIMIT):
            guard data.count >= MemoryLayout<Int32>.size else { self = .short(level: level, type: type, dataLength: data.count); return }
            self = .hopLimit(Int(data.loadUnaligned(as: Int32.self)))
        default:
            self = .unrecognized(level: level, type: type)
        }
    }
}

/// Walks the control buffer of one received message, message by message, bounds-checked
/// against the buffer: a header that claims less than itself or more than what is left
/// ends the walk and marks it malformed (glibc's CMSG_NXTHDR stops there too).
struct ControlMessageReader: Sequence, IteratorProtocol {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0
    /// Set once a header with an impossible length was met; nothing after it is read.
    private(set) var malformedAt: Int?

    /// - Parameter bytes: the control buffer, msg_controllen bytes as recvmsg returned it.
    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    mutating func next() -> ControlMessage? {
        let header = ControlMessageLayout.headerLength
        // Fewer bytes than a header left: padding, the end.
        guard malformedAt == nil, bytes.count - offset >= header else { return nil }
        let raw = bytes.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
        let length = Int(raw.cmsg_len)
        guard length >= header, length <= bytes.count - offset else {
            malformedAt = offset
            return nil
        }
        let data = UnsafeRawBufferPointer(rebasing: bytes[(offset + header)..<(offset + length)])
        offset += Swift.min(ControlMessageLayout.aligned(length), bytes.count - offset)
        return ControlMessage(level: raw.cmsg_level, type: raw.cmsg_type, data: data)
    }
}

/// What the control messages of one received message said, in the fields the engine reads.
struct ReceivedControlMessages: Equatable {
    /// Whether every control message arrived and was well formed.
    enum State: Equatable {
        case complete
        /// MSG_CTRUNC: the control buffer was too small and the kernel dropped or cut
        /// messages; what did arrive is still decoded.
        case truncated
        /// A header's cmsg_len was below the header size or ran past the buffer (at this
        /// byte offset); the messages before it are decoded.
        case malformed(offset: Int)
    }

    /// SCM_TIMESTAMPING's software stamp, CLOCK_REALTIME ns.
    var softwareRealtime: Int64?
    var extendedError: ExtendedSocketError?
    /// TTL / hop limit of the received packet.
    var hopLimit: Int?
    /// The destination address of the received packet (IP_PKTINFO / IPV6_PKTINFO): which of
    /// this host's addresses it was sent to.
    var destination: IPAddress?
    /// The interface it arrived on (IP_PKTINFO / IPV6_PKTINFO).
    var interfaceIndex: UInt32?
    /// Unrecognized or too short messages skipped.
    var skipped = 0
    var state: State = .complete

    init() {}

    /// Decodes every message of a control buffer.
    /// - Parameters:
    ///   - control: the control bytes (msg_controllen of them).
    ///   - flags: msg_flags as recvmsg returned them (MSG_CTRUNC is read from it).
    init(parsing control: UnsafeRawBufferPointer, flags: Int32) {
        var reader = ControlMessageReader(control)
        while let message = reader.next() {
            switch message {
            case .timestamps(let realtime): softwareRealtime = realtime
            case .extendedError(let error): extendedError = error
            case .hopLimit(let limit): hopLimit = limit
            case .packetInfo(let address, let index):
                destination = address
                interfaceIndex = index
            case .timestampID, .short, .unrecognized: skipped += 1
            }
        }
        if flags & Int32(MSG_CTRUNC) != 0 {
            state = .truncated
        } else if let offset = reader.malformedAt {
            state = .malformed(offset: offset)
        }
    }
}

// MARK: - Messages to send

/// Socket option numbers glibc declares only under names Swift may not import.
enum ControlMessageConstants {
    /// IPV6_RECVPKTINFO (<netinet/in.h>, RFC 3542).
    static let ipv6ReceivePacketInfo: Int32 = 49
    /// IPV6_PKTINFO (RFC 3542; 50 on Linux).
    static let ipv6PacketInfo: Int32 = 50
    /// IPV6_TCLASS.
    static let ipv6TrafficClass: Int32 = 67
    /// IP_MTU_DISCOVER (<linux/in.h>) and IPV6_MTU_DISCOVER, IPV6_DONTFRAG (<linux/in6.h>).
    static let ipMTUDiscover: Int32 = 10
    static let ipv6MTUDiscover: Int32 = 23
    static let ipv6DontFragment: Int32 = 62
    /// IP_PMTUDISC_DONT / IPV6_PMTUDISC_DONT and IP_PMTUDISC_PROBE / IPV6_PMTUDISC_PROBE.
    static let pmtuDiscoveryDont: Int32 = 0
    static let pmtuDiscoveryProbe: Int32 = 3
}

/// One control message to send with a packet: the per-packet options of DESIGN.md (TOS /
/// traffic class, source address and interface, TTL), a level, a type and a payload each.
///
/// Checked on Linux 6.18 (raw and datagram ICMP sockets, IPv4 and IPv6, captured on the
/// wire): IP_TOS / IPV6_TCLASS and the interface index of IP_PKTINFO / IPV6_PKTINFO are
/// honoured per packet by all four; the source address of IP_PKTINFO by raw and datagram
/// IPv4 and of IPV6_PKTINFO by raw IPv6 only: a datagram ICMPv6 socket silently sends
/// from its bound address (`ping_v6_sendmsg` takes the socket's), so the ICMP socket
/// refuses a chosen source there instead of sending from the wrong one.
enum OutboundControlMessage: Equatable, Sendable {
    /// SCM_TS_OPT_ID: the id the kernel's transmit stamp of this packet will carry.
    case timestampID(UInt32)
    /// IP_TTL / IPV6_HOPLIMIT of this packet (1...255), instead of the socket's.
    case hopLimit(Int, AddressFamily)
    /// IP_TOS / IPV6_TCLASS of this packet: the whole byte (DSCP and ECN bits).
    case trafficClass(UInt8, AddressFamily)
    /// IP_PKTINFO / IPV6_PKTINFO: the source address (nil: the route's) and the interface
    /// (index 0: the route's) of this packet. The source must be one of this host's.
    case packetInfo(source: IPAddress?, interfaceIndex: UInt32, AddressFamily)

    var level: Int32 {
        switch self {
        case .timestampID: return SOL_SOCKET
        case .hopLimit(_, .ipv4), .trafficClass(_, .ipv4), .packetInfo(_, _, .ipv4): return Int32(IPPROTO_IP)
        case .hopLimit(_, .ipv6), .trafficClass(_, .ipv6), .packetInfo(_, _, .ipv6): return Int32(IPPROTO_IPV6)
        }
    }

    var type: Int32 {
        switch self {
        case .timestampID: return CSystemShims_SCM_TS_OPT_ID
        case .hopLimit(_, .ipv4): return IP_TTL
        case .hopLimit(_, .ipv6): return IPV6_HOPLIMIT
        case .trafficClass(_, .ipv4): return IP_TOS
        case .trafficClass(_, .ipv6): return ControlMessageConstants.ipv6TrafficClass
        case .packetInfo(_, _, .ipv4): return IP_PKTINFO
        case .packetInfo(_, _, .ipv6): return ControlMessageConstants.ipv6PacketInfo
        }
    }

    /// Data bytes: the kernel checks cmsg_len against exactly these sizes (an int for
    /// IP_TTL, IPV6_HOPLIMIT, IP_TOS and IPV6_TCLASS, a u32 for SCM_TS_OPT_ID, an
    /// `in_pktinfo` (12 bytes) or `in6_pktinfo` (20 bytes) for the packet info).
    var dataLength: Int {
        switch self {
        case .timestampID: return MemoryLayout<UInt32>.size
        case .hopLimit, .trafficClass: return MemoryLayout<Int32>.size
        case .packetInfo(_, _, .ipv4): return 12
        case .packetInfo(_, _, .ipv6): return 20
        }
    }

    func storeData(into data: UnsafeMutableRawBufferPointer) {
        switch self {
        case .timestampID(let id): data.storeBytes(of: id, as: UInt32.self)
        case .hopLimit(let limit, _): data.storeBytes(of: Int32(limit), as: Int32.self)
        case .trafficClass(let value, _): data.storeBytes(of: Int32(value), as: Int32.self)
        case .packetInfo(let source, let interfaceIndex, .ipv4):
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst (the source); in_addr ipi_addr (unused on send); }
            data.storeBytes(of: interfaceIndex, toByteOffset: 0, as: UInt32.self)
            if case .v4(let raw) = source { data.storeBytes(of: raw, toByteOffset: 4, as: UInt32.self) }
        case .packetInfo(let source, let interfaceIndex, .ipv6):
            // struct in6_pktinfo { in6_addr ipi6_addr (the source); unsigned ipi6_ifindex; }
            if case .v6(let high, let low) = source {
                data.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
                data.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            data.storeBytes(of: interfaceIndex, toByteOffset: 16, as: UInt32.self)
        }
    }

    /// Bytes the largest message takes, padding included: size a builder's storage with it.
    static let largestSpace = ControlMessageLayout.space(dataLength: 20)
}

/// Writes the control messages of one send into storage the socket owns.
struct ControlMessageBuilder {
    private let storage: UnsafeMutableRawBufferPointer
    /// Bytes written so far: msg_controllen.
    private(set) var length = 0

    /// - Parameter storage: zeroed memory, aligned for `cmsghdr`, e.g. `messages *
    ///   OutboundControlMessage.largestSpace` bytes; it must outlive the builder's bytes.
    init(storage: UnsafeMutableRawBufferPointer) {
        self.storage = storage
    }

    /// Bytes `messages` need.
    static func space(for messages: [OutboundControlMessage]) -> Int {
        messages.reduce(0) { $0 + ControlMessageLayout.space(dataLength: $1.dataLength) }
    }

    /// Appends one message.
    /// - Returns: false (and writes nothing) when the storage has no room for it.
    @discardableResult
    mutating func append(_ message: OutboundControlMessage) -> Bool {
        let space = ControlMessageLayout.space(dataLength: message.dataLength)
        guard storage.count - length >= space else { return false }
        let slot = UnsafeMutableRawBufferPointer(rebasing: storage[length..<(length + space)])
        slot.initializeMemory(as: UInt8.self, repeating: 0)
        var header = cmsghdr()
        header.cmsg_len = .init(ControlMessageLayout.length(dataLength: message.dataLength))
        header.cmsg_level = message.level
        header.cmsg_type = message.type
        slot.storeBytes(of: header, as: cmsghdr.self)
        let dataStart = ControlMessageLayout.headerLength
        message.storeData(into: UnsafeMutableRawBufferPointer(rebasing: slot[dataStart..<(dataStart + message.dataLength)]))
        length += space
        return true
    }

    /// Starts over (the storage is reused for the next send).
    mutating func removeAll() {
        length = 0
    }

    /// The messages written, for sendmsg; valid while the storage is.
    var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(storage)[0..<length])
    }
}

// MARK: - sendmsg / recvmsg

/// What one recvmsg filled in.
struct ReceivedDatagram {
    /// Bytes read into the data buffer (the datagram's length when not truncated).
    var length: Int
    /// Bytes of the source address written.
    var sourceLength: Int
    /// The control bytes the kernel wrote (msg_controllen of them).
    var control: UnsafeRawBufferPointer
    /// msg_flags (MSG_CTRUNC, MSG_TRUNC, MSG_ERRQUEUE).
    var flags: Int32
}

extension Posix {
    /// sendmsg with one data buffer, a destination and control messages.
    /// - Parameters:
    ///   - bytes: the datagram.
    ///   - address: destination socket address, `addressLength` bytes.
    ///   - control: built by `ControlMessageBuilder`; empty for none.
    /// - Returns: bytes sent, or `.wouldBlock`.
    /// - Throws: `SystemCallError` (ENETUNREACH, EINVAL for a message the kernel refuses, ...).
    static func sendmsg(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: UnsafePointer<sockaddr>, _ addressLength: socklen_t,
                        control: UnsafeRawBufferPointer, flags: Int32) throws(SystemCallError) -> IOResult<Int> {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(SystemCallError) -> IOResult<Int> in
            var message = msghdr()
            message.msg_name = UnsafeMutableRawPointer(mutating: address)
            message.msg_namelen = addressLength
            message.msg_iov = vectorPointer
            message.msg_iovlen = 1
            if control.count > 0 {
                message.msg_control = UnsafeMutableRawPointer(mutating: control.baseAddress)
                message.msg_controllen = control.count
            }
            return try nonBlocking("sendmsg") { Glibc.sendmsg(fd, &message, flags) }
        }
    }

    /// sendmsg of one packet to `destination`, without blocking, with control messages:
    /// what the ICMP and the raw TCP sockets send.
    static func sendmsg(_ fd: Int32, _ packet: [UInt8], to destination: IPAddress, control: UnsafeRawBufferPointer) throws(SystemCallError) -> IOResult<Int> {
        // Array.withUnsafeBytes rethrows untyped errors: carry the typed one out in a Result.
        try packet.withUnsafeBytes { (bytes) -> Result<IOResult<Int>, SystemCallError> in
            Result { () throws(SystemCallError) -> IOResult<Int> in
                try destination.withSocketAddress { (address, length) throws(SystemCallError) -> IOResult<Int> in
                    try sendmsg(fd, bytes, to: address, length, control: control, flags: Int32(MSG_DONTWAIT))
                }
            }
        }.get()
    }

    /// recvmsg into one data buffer, with the source address and control messages.
    /// - Parameters:
    ///   - buffer: where the datagram goes.
    ///   - source: where its source address goes.
    ///   - control: where the control messages go (aligned for `cmsghdr`).
    ///   - flags: MSG_ERRQUEUE or 0; MSG_DONTWAIT is always added.
    /// - Returns: what was received, or `.wouldBlock` when the queue is empty.
    static func recvmsg(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, source: UnsafeMutablePointer<sockaddr_storage>,
                        control: UnsafeMutableRawBufferPointer, flags: Int32) throws(SystemCallError) -> IOResult<ReceivedDatagram> {
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var message = msghdr()
        message.msg_name = UnsafeMutableRawPointer(source)
        message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        message.msg_control = control.baseAddress
        message.msg_controllen = control.count
        let result = try withUnsafeMutablePointer(to: &vector) { (vectorPointer) throws(SystemCallError) -> IOResult<Int> in
            message.msg_iov = vectorPointer
            message.msg_iovlen = 1
            return try nonBlocking("recvmsg") { Glibc.recvmsg(fd, &message, flags | Int32(MSG_DONTWAIT)) }
        }
        guard case .processed(let length) = result else { return .wouldBlock }
        let controlLength = min(Int(message.msg_controllen), control.count)
        return .processed(ReceivedDatagram(length: length, sourceLength: Int(message.msg_namelen),
                                           control: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(control)[0..<controlLength]),
                                           flags: message.msg_flags))
    }
}

// MARK: - Per-target packet options

/// A target's `PacketOptions` as a send uses them: the interface by index.
struct SendOptions: Equatable, Sendable {
    /// The TOS / traffic-class byte; 0 sends no message (the socket's class, 0).
    var tos: UInt8 = 0
    /// The source address; nil: the route's.
    var source: IPAddress?
    /// The interface index; 0: the route's.
    var interfaceIndex: UInt32 = 0

    static let none = SendOptions()

    var isDefault: Bool { self == .none }

    /// Why a target's options cannot be used.
    enum Failure: Error, Equatable, CustomStringConvertible {
        case noSuchInterface(String)
        case sourceFamily(source: IPAddress, destination: AddressFamily)

        var description: String {
            switch self {
            case .noSuchInterface(let name): return "interface \(name) does not exist"
            case .sourceFamily(let source, let family): return "source address \(source) is not an \(family == .ipv4 ? "IPv4" : "IPv6") address"
            }
        }
    }

    /// The options for packets to a destination of `family`.
    /// - Parameter interfaceIndex: looks an interface name up (if_nametoindex; 0 when absent).
    /// - Throws: `Failure` for an interface that does not exist or a source of the other family.
    init(_ options: PacketOptions, family: AddressFamily, interfaceIndex: (String) -> UInt32) throws(Failure) {
        tos = options.tos
        if let source = options.source {
            guard source.family == family else { throw .sourceFamily(source: source, destination: family) }
            self.source = source
        }
        if let name = options.interface {
            let index = interfaceIndex(name)
            guard index != 0 else { throw .noSuchInterface(name) }
            self.interfaceIndex = index
        }
    }

    init(tos: UInt8 = 0, source: IPAddress? = nil, interfaceIndex: UInt32 = 0) {
        self.tos = tos
        self.source = source
        self.interfaceIndex = interfaceIndex
    }

    /// if_nametoindex; 0 when there is no such interface.
    static func systemInterfaceIndex(_ name: String) -> UInt32 {
        UInt32(if_nametoindex(name))
    }
}

extension ControlMessageBuilder {
    /// Appends the messages of a target's options (nothing for the defaults).
    /// - Returns: false when the storage had no room for one of them.
    @discardableResult
    mutating func append(_ options: SendOptions, family: AddressFamily) -> Bool {
        guard !options.isDefault else { return true }
        var fitted = true
        if options.tos != 0 { fitted = append(.trafficClass(options.tos, family)) && fitted }
        if options.source != nil || options.interfaceIndex != 0 {
            fitted = append(.packetInfo(source: options.source, interfaceIndex: options.interfaceIndex, family)) && fitted
        }
        return fitted
    }
}
