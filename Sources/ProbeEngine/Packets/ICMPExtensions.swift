import ProbeResults

/// ICMP extension structures (RFC 4884) in time exceeded and destination unreachable
/// messages, and the MPLS label stack object they carry (RFC 4950).
///
/// Two placements exist on the wire:
/// - RFC 4884: the message's length field (IPv4: byte 5, in 32-bit words; ICMPv6: byte 4,
///   in 64-bit words) gives the length of the padded "original datagram" (at least 128
///   bytes); the extension structure starts right after it.
/// - The older fixed placement that many routers still send (RFC 4884 section 5.5, the
///   "non-compliant" implementations): the length field is 0, the original datagram is
///   exactly 128 bytes and the extension structure follows it. A receiver can tell it only
///   by a valid extension header at byte 128 of the quote.
///
/// Extension header: version (4 bits, must be 2), reserved (12 bits), checksum (16 bits:
/// the Internet checksum over the whole extension structure). Then objects: length (16
/// bits, header included), class-num, C-type, payload. MPLS label stack: class 1, C-type 1,
/// one 4-byte entry per label.
///
/// Checksum rule (RFC 4884 section 7: "An all-zero value means that no checksum was
/// transmitted", which Linux's `ip_icmp_error_rfc4884_validate` follows too): in the RFC 4884
/// placement a zero checksum is accepted unverified, any other value must verify. In the
/// fixed placement the version and a verifying checksum are the only sign that the bytes
/// are an extension and not more of the quoted packet: a version other than 2 there means
/// "no extension" (not an error), and version 2 with a zero or wrong checksum is rejected
/// as `bad_checksum`.
///
/// Everything here is pure: bytes in, values out. The bytes come from routers anywhere on
/// the path and are hostile input: every length is bounds-checked, every loop advances by
/// at least 4 bytes, and a rejection has a stable reason. Unknown object classes are
/// skipped, not errors.
public enum ICMPExtensions {
    /// Where the extension structure was found.
    public enum Placement: String, Equatable, Sendable, CaseIterable {
        /// After the original datagram whose length the message's length field gives.
        case rfc4884
        /// At byte 128 of the quote, the length field 0 (pre-RFC 4884 routers).
        case fixed128
    }

    /// Why an extension structure was rejected. Raw values are stable (counted as
    /// `rejected_extension_<reason>` among a trace's ignored answers).
    public enum Rejection: String, Error, Equatable, Sendable, CaseIterable {
        /// The message ends before what its length field or an object's length promises.
        case truncated
        /// The RFC 4884 length field gives an original datagram shorter than 128 bytes.
        case badLength = "bad_length"
        /// The extension header's version is not 2 (RFC 4884 placement).
        case badVersion = "bad_version"
        /// The checksum does not verify (or is missing in the fixed placement).
        case badChecksum = "bad_checksum"
        /// An object's length is under 4 or not a multiple of 4.
        case badObjectLength = "bad_object_length"
        /// An MPLS label stack object with no entry.
        case emptyLabelStack = "empty_label_stack"
        /// An MPLS label stack object with more than `maximumLabelStackEntries` entries.
        case tooManyLabels = "too_many_labels"
    }

    /// What a message carries.
    public struct Extensions: Equatable, Sendable {
        /// nil when the message has no extension structure.
        public var placement: Placement?
        /// The first MPLS label stack object's entries, top of stack first; empty without one.
        public var labelStack: [MPLSLabelStackEntry]

        public init(placement: Placement?, labelStack: [MPLSLabelStackEntry]) {
            self.placement = placement
            self.labelStack = labelStack
        }

        public static let absent = Extensions(placement: nil, labelStack: [])
    }

    /// The length of the original datagram the fixed placement assumes, and the least RFC
    /// 4884 allows.
    public static let originalDatagramLength = 128
    /// More entries than any real label stack holds (mtr keeps 8); a bigger object is hostile.
    public static let maximumLabelStackEntries = 16
    /// Class-num and C-type of the MPLS label stack object (RFC 4950).
    public static let mplsClass: UInt8 = 1, mplsIncomingStackType: UInt8 = 1

    /// The extensions of an ICMP message (from its ICMP header on: type, code, checksum,
    /// 4 bytes, then the quote). Types other than time exceeded and destination unreachable
    /// (IPv4 types 11 and 3, ICMPv6 types 3 and 1) have none.
    public static func decode(_ message: UnsafeRawBufferPointer, family: AddressFamily) -> Result<Extensions, Rejection> {
        guard message.count >= 8 else { return .failure(.truncated) }
        switch (family, message[0]) {
        case (.ipv4, 11), (.ipv4, 3), (.ipv6, 3), (.ipv6, 1): break
        default: return .success(.absent)
        }
        let lengthField = family == .ipv4 ? Int(message[5]) * 4 : Int(message[4]) * 8
        let quoteLength = message.count - 8
        if lengthField > 0 {
            guard lengthField >= originalDatagramLength else { return .failure(.badLength) }
            guard lengthField <= quoteLength else { return .failure(.truncated) }
            // A length field and no bytes after it: an RFC 4884 sender with nothing to add.
            guard lengthField < quoteLength else { return .success(.absent) }
            let structure = UnsafeRawBufferPointer(rebasing: message[(8 + lengthField)...])
            return decodeStructure(structure, checksumRequired: false).map { Extensions(placement: .rfc4884, labelStack: $0) }
        }
        // No length: the fixed placement, if the quote goes on past 128 bytes with a
        // version-2 header there; otherwise the quote is just a long quote.
        guard quoteLength >= originalDatagramLength + 4 else { return .success(.absent) }
        let structure = UnsafeRawBufferPointer(rebasing: message[(8 + originalDatagramLength)...])
        guard structure[0] >> 4 == 2 else { return .success(.absent) }
        return decodeStructure(structure, checksumRequired: true).map { Extensions(placement: .fixed128, labelStack: $0) }
    }

    /// The extension header and its objects; the first MPLS label stack's entries.
    static func decodeStructure(_ structure: UnsafeRawBufferPointer, checksumRequired: Bool) -> Result<[MPLSLabelStackEntry], Rejection> {
        guard structure.count >= 4 else { return .failure(.truncated) }
        guard structure[0] >> 4 == 2 else { return .failure(.badVersion) }
        let checksum = UInt16(structure[2]) << 8 | UInt16(structure[3])
        if checksum != 0 || checksumRequired {
            guard checksum != 0, ICMPEcho.checksum(structure) == 0 else { return .failure(.badChecksum) }
        }
        var stack: [MPLSLabelStackEntry]?
        var offset = 4
        while offset < structure.count {
            guard structure.count - offset >= 4 else { return .failure(.truncated) }
            let length = Int(structure[offset]) << 8 | Int(structure[offset + 1])
            guard length >= 4, length % 4 == 0 else { return .failure(.badObjectLength) }
            guard length <= structure.count - offset else { return .failure(.truncated) }
            if stack == nil, structure[offset + 2] == mplsClass, structure[offset + 3] == mplsIncomingStackType {
                let entries = (length - 4) / 4
                guard entries > 0 else { return .failure(.emptyLabelStack) }
                guard entries <= maximumLabelStackEntries else { return .failure(.tooManyLabels) }
                stack = (0..<entries).map { index in
                    let at = offset + 4 + index * 4
                    return MPLSLabelStackEntry(word: UInt32(structure[at]) << 24 | UInt32(structure[at + 1]) << 16 | UInt32(structure[at + 2]) << 8 | UInt32(structure[at + 3]))
                }
            }
            offset += length
        }
        return .success(stack ?? [])
    }

    /// The bytes of an extension structure holding one MPLS label stack object, checksum
    /// filled in (for tests and the simulator's counterpart).
    public static func encodeLabelStack(_ stack: [MPLSLabelStackEntry]) -> [UInt8] {
        var bytes: [UInt8] = [0x20, 0, 0, 0]
        let length = 4 + 4 * stack.count
        bytes += [UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), mplsClass, mplsIncomingStackType]
        for entry in stack {
            let word = entry.word
            bytes += [UInt8(truncatingIfNeeded: word >> 24), UInt8(truncatingIfNeeded: word >> 16), UInt8(truncatingIfNeeded: word >> 8), UInt8(truncatingIfNeeded: word)]
        }
        let sum = ICMPEcho.checksum(bytes)
        bytes[2] = UInt8(sum >> 8)
        bytes[3] = UInt8(sum & 0xff)
        return bytes
    }
}
