#if canImport(Glibc)
import Glibc
#endif

/// IPv4 or IPv6.
public enum AddressFamily: String, Sendable, Hashable, CaseIterable, Codable {
    case ipv4
    case ipv6

    package var posixDomain: Int32 {
        switch self {
        case .ipv4: return AF_INET
        case .ipv6: return AF_INET6
        }
    }
}

/// An IP address stored by value (no allocation), comparable and hashable.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// IPv4, the 32 bits as they are in memory (network byte order).
    case v4(UInt32)
    /// IPv6, the 128 bits as two halves in memory order.
    case v6(UInt64, UInt64)

    /// Parses a numeric address ("127.0.0.1", "::1"); nil for anything else.
    public init?(parsing text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(v4.s_addr)
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = IPAddress(v6)
            return
        }
        return nil
    }

    package init(_ address: in6_addr) {
        let halves = withUnsafeBytes(of: address) { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        self = .v6(halves.0, halves.1)
    }

    /// Reads the address from the 4 or 16 bytes at the start of `bytes`.
    package init?(bytes: UnsafeRawBufferPointer, family: AddressFamily) {
        switch family {
        case .ipv4:
            guard bytes.count >= 4 else { return nil }
            self = .v4(bytes.loadUnaligned(as: UInt32.self))
        case .ipv6:
            guard bytes.count >= 16 else { return nil }
            self = .v6(bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
    }

    /// Reads the address of a `sockaddr_in` or `sockaddr_in6`; nil for other families.
    package init?(socketAddress: UnsafeRawPointer, length: Int) {
        let family = socketAddress.loadUnaligned(as: sa_family_t.self)
        if Int32(family) == AF_INET, length >= MemoryLayout<sockaddr_in>.size {
            let address = socketAddress.loadUnaligned(as: sockaddr_in.self)
            self = .v4(address.sin_addr.s_addr)
        } else if Int32(family) == AF_INET6, length >= MemoryLayout<sockaddr_in6>.size {
            let address = socketAddress.loadUnaligned(as: sockaddr_in6.self)
            self = IPAddress(address.sin6_addr)
        } else {
            return nil
        }
    }

    public var family: AddressFamily {
        switch self {
        case .v4: return .ipv4
        case .v6: return .ipv6
        }
    }

    /// True for 127.0.0.0/8 and ::1.
    public var isLoopback: Bool {
        switch self {
        case .v4(let raw): return UInt32(bigEndian: raw) >> 24 == 127
        case .v6(let high, let low): return high == 0 && low == UInt64(1).bigEndian
        }
    }

    /// The address in network order: 4 bytes or 16.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let raw): return withUnsafeBytes(of: raw) { Array($0) }
        case .v6(let high, let low): return withUnsafeBytes(of: high) { Array($0) } + withUnsafeBytes(of: low) { Array($0) }
        }
    }

    /// True for 0.0.0.0 and ::, which a listener takes to mean every address of the host.
    public var isUnspecified: Bool {
        switch self {
        case .v4(let raw): return raw == 0
        case .v6(let high, let low): return high == 0 && low == 0
        }
    }

    /// Calls `body` with this address as a `sockaddr_in` / `sockaddr_in6` (port 0).
    package func withSocketAddress<Result, Failure: Error>(port: UInt16 = 0, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(Failure) -> Result) throws(Failure) -> Result {
        switch self {
        case .v4(let raw):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = raw
            return try withUnsafePointer(to: &address) { (pointer) throws(Failure) -> Result in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (rebound) throws(Failure) -> Result in
                    try body(rebound, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6(let high, let low):
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { raw in
                raw.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
                raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            return try withUnsafePointer(to: &address) { (pointer) throws(Failure) -> Result in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (rebound) throws(Failure) -> Result in
                    try body(rebound, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch self {
        case .v4(let raw):
            var address = in_addr(s_addr: raw)
            inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
        case .v6(let high, let low):
            var address = in6_addr()
            withUnsafeMutableBytes(of: &address) { raw in
                raw.storeBytes(of: high, toByteOffset: 0, as: UInt64.self)
                raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension IPAddress {
    /// A name or address without the brackets of "[::1]" (as URLs and `HOST:PORT` write an
    /// IPv6 address).
    public static func bareName(_ name: String) -> String {
        if name.hasPrefix("["), name.hasSuffix("]") { return String(name.dropFirst().dropLast()) }
        return name
    }
}
