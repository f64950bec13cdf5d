/// The per-target options of the packets a probe sends: the TOS / traffic-class byte, the
/// source address and the interface. Every field is off by default, and off means what
/// the kernel does without the option: class 0, the route's source address, the route's
/// interface.
///
/// The TOS default stays 0 on purpose: pro-bing once marked its probes CS6 (network
/// control) by default, and on paths that police or prioritise by class that made lossy
/// transit paths look clean. A class other than 0 is something a user asks for.
public struct PacketOptions: Hashable, Sendable {
    /// The whole IPv4 TOS / IPv6 traffic-class byte: the DSCP in the upper six bits, the
    /// ECN bits (the lower two) always 0 (`TrafficClass.parse` refuses anything else).
    public var tos: UInt8
    /// The source address the probes leave from; nil: the route's choice.
    public var source: IPAddress?
    /// The interface the probes leave by, as `ping -I NAME` (SO_BINDTODEVICE for TCP, the
    /// interface index of IP_PKTINFO / IPV6_PKTINFO for ICMP); nil: the route's choice.
    public var interface: String?
    /// ICMP echo only: the don't-fragment choice as `ping -M`; nil: the kernel's default
    /// (DF set while the packet fits the host's cached path MTU, fragmented after).
    public var fragmentation: Fragmentation?

    /// - Parameters:
    ///   - tos: the TOS / traffic-class byte, ECN bits 0.
    ///   - source: the source address; nil for the route's.
    ///   - interface: the interface name; nil for the route's.
    ///   - fragmentation: ICMP's don't-fragment choice; nil for the kernel's default.
    public init(tos: UInt8 = 0, source: IPAddress? = nil, interface: String? = nil, fragmentation: Fragmentation? = nil) {
        precondition(tos & TrafficClass.ecnMask == 0, "the ECN bits of a probe's TOS byte are 0")
        self.tos = tos
        self.source = source
        self.interface = interface
        self.fragmentation = fragmentation
    }

    /// Nothing set: what every probe sent before these options existed.
    public static let none = PacketOptions()

    /// True when no option is set.
    public var isDefault: Bool { self == .none }
}

/// Don't-fragment for ICMP echo probes, as `ping -M` takes it.
///
/// `do` and `probe` both send with DF set (IPv6: IPV6_DONTFRAG) on a socket in
/// IP_PMTUDISC_PROBE / IPV6_PMTUDISC_PROBE mode: every probe leaves at its full size
/// whatever the host's path-MTU cache holds (a "fragmentation needed" fills that cache for
/// 10 minutes, and a `ping -M do` socket would then answer later probes itself with a
/// local EMSGSIZE), so each probe asks the path again. A packet larger than the outgoing
/// interface's MTU ends at once with a local EMSGSIZE carrying that MTU.
/// `dont` never sets DF: routers fragment IPv4; IPv6 is fragmented by this host.
public enum Fragmentation: String, Hashable, Sendable, CaseIterable {
    case dont
    case `do`
    case probe

    /// True when packets leave with DF set.
    public var setsDontFragment: Bool { self != .dont }
}

/// The TOS / traffic-class byte as `ping -Q`, `mtr -Q` and `fping -O` take it, and as
/// netprobe writes it back.
public enum TrafficClass {
    /// The two ECN bits of the byte: the kernel's business (RFC 3168), never a probe's.
    public static let ecnMask: UInt8 = 0x03

    /// Why a TOS argument was refused.
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// The message, naming the nearest valid value where there is one.
        public var description: String
    }

    /// The DSCP names and their code points (RFC 2474, 2597, 3246): ef, af11..af43, cs0..cs7.
    public static let dscpNames: [(name: String, dscp: UInt8)] = {
        var names: [(String, UInt8)] = [("ef", 46)]
        for drop in 1...4 {
            for precedence in 1...3 { names.append(("af\(drop)\(precedence)", UInt8(8 * drop + 2 * precedence))) }
        }
        for selector in 0...7 { names.append(("cs\(selector)", UInt8(8 * selector))) }
        return names
    }()

    /// Reads a TOS argument: a byte in decimal (184) or 0x hex (0xb8), or a DSCP name
    /// (ef, af11..af43, cs0..cs7, any case) meaning that DSCP shifted left by 2.
    /// - Parameter text: the argument.
    /// - Returns: the TOS byte, ECN bits 0.
    /// - Throws: `ParseError` for anything else, and for a byte with ECN bits set (the
    ///   error names the nearest valid value, e.g. "0xb9 sets ECN bits; did you mean
    ///   0xb8 (ef)?").
    public static func parse(_ text: String) throws(ParseError) -> UInt8 {
        let word = text.trimmingWhitespace().lowercased()
        if let entry = dscpNames.first(where: { $0.name == word }) { return entry.dscp << 2 }
        let value: Int?
        if word.hasPrefix("0x") {
            value = Int(word.dropFirst(2), radix: 16)
        } else {
            value = Int(word, radix: 10)
        }
        guard let value, (0...255).contains(value) else {
            throw ParseError(description: "\"\(text)\" is not a TOS value: give the TOS byte (0-255, decimal or 0x hex, e.g. 0xb8) or a DSCP name (ef, af11..af43, cs0..cs7)")
        }
        let byte = UInt8(value)
        guard byte & ecnMask == 0 else {
            let nearest = byte & ~ecnMask
            throw ParseError(description: "\(hex(byte)) sets ECN bits; did you mean \(describe(nearest))?")
        }
        return byte
    }

    /// The byte as "0xb8 (ef)": hex, with the DSCP name when it has one.
    public static func describe(_ tos: UInt8) -> String {
        if let name = name(tos) { return "\(hex(tos)) (\(name))" }
        return hex(tos)
    }

    /// The DSCP name of a TOS byte (ECN bits 0), e.g. "ef" for 0xb8; nil when the code
    /// point has none. 0 is "cs0".
    public static func name(_ tos: UInt8) -> String? {
        guard tos & ecnMask == 0 else { return nil }
        return dscpNames.first { $0.dscp == tos >> 2 }?.name
    }

    /// "0xb8".
    public static func hex(_ tos: UInt8) -> String {
        let digits = String(tos, radix: 16)
        return "0x" + (digits.count < 2 ? "0" + digits : digits)
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
