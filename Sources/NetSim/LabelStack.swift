/// An MPLS label stack a router attaches to the time exceeded and destination unreachable
/// messages it sends (RFC 4950), as a label switch router reports the stack of the packet
/// that expired there: in an ICMP extension structure (RFC 4884), in either placement.
///
/// Built here from the RFCs, apart from netprobe's parser (`ICMPExtensions`), so the tests
/// of one check the other.
public struct SimulatedLabelStack: Equatable, Sendable {
    /// Where the extension structure goes.
    public enum Placement: String, Equatable, Sendable, CaseIterable {
        /// The length field (IPv4 byte 5 in 32-bit words, ICMPv6 byte 4 in 64-bit words)
        /// gives the original datagram's length, padded to at least 128 bytes; the
        /// extension follows it.
        case rfc4884
        /// The older placement: the length field 0, the original datagram cut or padded to
        /// exactly 128 bytes, the extension after it.
        case fixed128
    }

    /// One label stack entry; the bottom-of-stack bit is set on the last one.
    public struct Entry: Equatable, Sendable {
        /// 20 bits.
        public var label: UInt32
        /// Traffic class, 3 bits.
        public var trafficClass: UInt8
        public var ttl: UInt8

        public init(label: UInt32, trafficClass: UInt8 = 0, ttl: UInt8 = 1) {
            self.label = label
            self.trafficClass = trafficClass
            self.ttl = ttl
        }
    }

    /// Top of the stack first.
    public var entries: [Entry]
    public var placement: Placement

    public init(entries: [Entry], placement: Placement = .rfc4884) {
        self.entries = entries
        self.placement = placement
    }

    /// The extension structure: header (version 2, reserved 0, checksum over the whole
    /// structure), then one MPLS label stack object (class-num 1, C-type 1) of 4-byte
    /// entries: label (20 bits), TC (3), S (1), TTL (8).
    public var extensionStructure: [UInt8] {
        var bytes: [UInt8] = [0x20, 0, 0, 0]
        let objectLength = 4 + 4 * entries.count
        bytes += [UInt8(objectLength >> 8), UInt8(objectLength & 0xff), 1, 1]
        for (index, entry) in entries.enumerated() {
            let bottom: UInt32 = index == entries.count - 1 ? 1 : 0
            let word = (entry.label & 0xf_ffff) << 12 | UInt32(entry.trafficClass & 0x7) << 9 | bottom << 8 | UInt32(entry.ttl)
            bytes += [UInt8(word >> 24), UInt8((word >> 16) & 0xff), UInt8((word >> 8) & 0xff), UInt8(word & 0xff)]
        }
        SimulatedPacket.store(SimulatedPacket.checksum(bytes), into: &bytes, at: 2)
        return bytes
    }

    /// The quote and the rest of the ICMP header for an error carrying this stack.
    /// - Parameters:
    ///   - quote: the original datagram as far as the error would quote it without an extension.
    ///   - room: the bytes the quote and the extension may take together.
    /// - Returns: the original datagram field (cut, padded) followed by the extension, and
    ///   the value of the length field (in words of the family's size; 0 for `fixed128`).
    func extend(quote: [UInt8], room: Int, isIPv6: Bool) -> (bytes: [UInt8], lengthField: UInt8) {
        let structure = extensionStructure
        switch placement {
        case .fixed128:
            var datagram = Array(quote.prefix(128))
            datagram += [UInt8](repeating: 0, count: 128 - datagram.count)
            return (datagram + structure, 0)
        case .rfc4884:
            let word = isIPv6 ? 8 : 4
            let fits = (room - structure.count) / word * word
            var datagram = Array(quote.prefix(fits))
            let padded = max(128, (datagram.count + word - 1) / word * word)
            datagram += [UInt8](repeating: 0, count: padded - datagram.count)
            return (datagram + structure, UInt8(datagram.count / word))
        }
    }
}
