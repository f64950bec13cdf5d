#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address as a number (IPv4 in the low 32 bits), cheap to hash and mask.
public struct SimulatedAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// True for IPv6.
    public var isIPv6: Bool
    /// The address bits, most significant first as on the wire.
    public var value: UInt128

    public init(isIPv6: Bool, value: UInt128) {
        self.isIPv6 = isIPv6
        self.value = value
    }

    /// Parses "198.18.1.5" or "2001:db8::5"; nil for anything else.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(isIPv6: false, value: UInt128(UInt32(bigEndian: v4.s_addr)))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            self.init(bytes: bytes[...], isIPv6: true)
            return
        }
        return nil
    }

    /// Reads 4 or 16 bytes in network order.
    init(bytes: ArraySlice<UInt8>, isIPv6: Bool) {
        var value: UInt128 = 0
        for byte in bytes.prefix(isIPv6 ? 16 : 4) { value = value << 8 | UInt128(byte) }
        self.init(isIPv6: isIPv6, value: value)
    }

    /// Reads 4 or 16 bytes in network order at `offset`.
    init(_ packet: UnsafeRawBufferPointer, offset: Int, isIPv6: Bool) {
        var value: UInt128 = 0
        for index in offset..<(offset + (isIPv6 ? 16 : 4)) { value = value << 8 | UInt128(packet[index]) }
        self.init(isIPv6: isIPv6, value: value)
    }

    /// Bits in an address of this family.
    var width: Int { isIPv6 ? 128 : 32 }

    /// The address in network byte order.
    public var bytes: [UInt8] {
        (0..<(width / 8)).map { UInt8(truncatingIfNeeded: value >> UInt128(width - 8 - $0 * 8)) }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let raw = bytes
        _ = raw.withUnsafeBytes { inet_ntop(isIPv6 ? AF_INET6 : AF_INET, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (lhs: SimulatedAddress, rhs: SimulatedAddress) -> Bool {
        (lhs.isIPv6 ? 1 : 0, lhs.value) < (rhs.isIPv6 ? 1 : 0, rhs.value)
    }
}

/// An address prefix such as 198.18.1.0/24 or 2001:db8:1::/48.
public struct AddressPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: SimulatedAddress
    public var length: Int

    /// Parses "ADDRESS/LENGTH"; a bare address is a host prefix (/32, /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = SimulatedAddress(String(parts[0])) else { return nil }
        let length: Int
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), parsed >= 0, parsed <= address.width else { return nil }
            length = parsed
        } else {
            length = address.width
        }
        self.init(address: address, length: length)
    }

    public init(address: SimulatedAddress, length: Int) {
        self.length = length
        self.address = SimulatedAddress(isIPv6: address.isIPv6, value: address.value & Self.mask(length: length, width: address.width))
    }

    static func mask(length: Int, width: Int) -> UInt128 {
        guard length > 0 else { return 0 }
        let all: UInt128 = width == 128 ? .max : (UInt128(1) << UInt128(width)) - 1
        return all & ~((UInt128(1) << UInt128(width - length)) - 1)
    }

    /// True when `candidate` lies inside this prefix.
    public func contains(_ candidate: SimulatedAddress) -> Bool {
        candidate.isIPv6 == address.isIPv6 && candidate.value & Self.mask(length: length, width: address.width) == address.value
    }

    public var description: String { "\(address)/\(length)" }
}
