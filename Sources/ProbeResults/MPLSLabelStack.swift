/// One entry of an MPLS label stack as a label switch router reports it in an ICMP
/// extension (RFC 4950): the entry of the packet that expired there, as it was received.
public struct MPLSLabelStackEntry: Hashable, Sendable {
    /// The label, 20 bits (0 to 1,048,575).
    public var label: UInt32
    /// Traffic class (formerly EXP), 3 bits.
    public var trafficClass: UInt8
    /// The S bit: this entry is the last of the stack.
    public var bottomOfStack: Bool
    /// The entry's own TTL (usually 1 or 0 where the packet expired).
    public var ttl: UInt8

    public init(label: UInt32, trafficClass: UInt8, bottomOfStack: Bool, ttl: UInt8) {
        self.label = label
        self.trafficClass = trafficClass
        self.bottomOfStack = bottomOfStack
        self.ttl = ttl
    }

    /// The 4 bytes on the wire: label (20 bits), TC (3), S (1), TTL (8).
    public init(word: UInt32) {
        self.init(label: word >> 12, trafficClass: UInt8(truncatingIfNeeded: (word >> 9) & 0x7), bottomOfStack: (word >> 8) & 1 == 1,
                  ttl: UInt8(truncatingIfNeeded: word))
    }

    /// The 4 bytes on the wire, as a big-endian word.
    public var word: UInt32 {
        (label & 0xf_ffff) << 12 | UInt32(trafficClass & 0x7) << 9 | (bottomOfStack ? 1 << 8 : 0) | UInt32(ttl)
    }

    /// "16005/0/1/1": label/TC/S/TTL, the form of the `hop` points' `mpls` field.
    public var compact: String { "\(label)/\(trafficClass)/\(bottomOfStack ? 1 : 0)/\(ttl)" }

    /// As mtr --mpls prints it: "[MPLS: Lbl 16005 TC 0 S 1 TTL 1]".
    public var mtrText: String { "[MPLS: Lbl \(label) TC \(trafficClass) S \(bottomOfStack ? 1 : 0) TTL \(ttl)]" }

    /// A stack in the `mpls` field form: entries top first, separated by spaces.
    public static func compact(_ stack: [MPLSLabelStackEntry]) -> String {
        stack.map(\.compact).joined(separator: " ")
    }
}
