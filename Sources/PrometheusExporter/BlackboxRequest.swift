import ProbeConfig
import ProbeResults

/// Why a `/probe` request is refused, with its HTTP status. The message is safe to send
/// back: it names the rule, never echoes more than a bounded piece of the request.
public struct BlackboxRefusal: Error, Equatable, Sendable {
    public var status: Int
    public var message: String

    static func badRequest(_ message: String) -> BlackboxRefusal { BlackboxRefusal(status: 400, message: message) }
    static func forbidden(_ message: String) -> BlackboxRefusal { BlackboxRefusal(status: 403, message: message) }
}

/// A `/probe?module=M&target=T` request, parsed and checked against the configuration
/// before anything is looked up or sent.
public struct BlackboxRequest: Equatable, Sendable {
    public var moduleName: String
    public var module: BlackboxModule
    /// The host as written, without IPv6 brackets.
    public var host: String
    /// The address when the host is a literal one; nil for a name (resolved later).
    public var address: IPAddress?
    /// The allow entry of a name (nil for a literal address).
    public var allowedName: AllowedName?
    public var port: UInt16?

    /// The longest query string accepted, and the longest target (a 253-character name and
    /// a port, in brackets).
    static let maximumQueryLength = 2048
    static let maximumTargetLength = 261

    /// Parses the raw (still percent-encoded) query string and applies the allow-list to
    /// what it names: a literal address must lie in an allowed prefix, a name must be
    /// listed (its addresses are checked once it is looked up, `BlackboxProber`).
    /// - Throws: `BlackboxRefusal` 400 for a malformed query, a missing or unknown module,
    ///   a malformed or huge target; 403 for a target the allow-list does not name.
    public static func parse(query: String?, settings: BlackboxSettings) throws(BlackboxRefusal) -> BlackboxRequest {
        let parameters = try Self.parameters(query ?? "")
        guard let moduleName = parameters["module"] else {
            throw .badRequest("missing 'module' parameter; use /probe?module=NAME&target=HOST (modules: \(settings.modules.keys.sorted().joined(separator: ", ")))")
        }
        guard let module = settings.modules[moduleName] else {
            throw .badRequest("unknown module '\(shown(moduleName))'; configured modules: \(settings.modules.keys.sorted().joined(separator: ", "))")
        }
        guard let target = parameters["target"], !target.isEmpty else {
            throw .badRequest("missing 'target' parameter; use /probe?module=\(moduleName)&target=HOST\(module.kind == .tcp ? ":PORT" : "")")
        }
        guard target.utf8.count <= maximumTargetLength else {
            throw .badRequest("target is \(target.utf8.count) bytes long; at most \(maximumTargetLength) (a host name has at most 253)")
        }
        let (host, port) = try split(target, kind: module.kind)
        var request = BlackboxRequest(moduleName: moduleName, module: module, host: host, address: IPAddress(parsing: host), port: port)
        // The allow-list is applied to what the client wrote, before any lookup: a name
        // that is not listed is never given to the resolver (no DNS query leaks it), an
        // address outside the prefixes never gets a packet.
        if let address = request.address {
            guard settings.allows(address) else {
                throw .forbidden("target \(address) is not inside an allowed prefix (prometheus: probe: allow)")
            }
        } else {
            guard let allowed = settings.allowedName(host) else {
                throw .forbidden("target '\(shown(host))' is not in the allow-list (prometheus: probe: allow)")
            }
            request.host = allowed.name
            request.allowedName = allowed
        }
        return request
    }

    /// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address (ICMP).
    static func split(_ target: String, kind: ProbeKind) throws(BlackboxRefusal) -> (String, UInt16?) {
        guard target.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_:[]".unicodeScalars.contains($0)) }) else {
            throw .badRequest("target may hold only letters, digits and . - _ : [ ]")
        }
        var host = target
        var portText: Substring?
        if target.hasPrefix("[") {
            guard let close = target.firstIndex(of: "]") else { throw .badRequest("target: missing ']' after the IPv6 address; write [2001:db8::1]:443") }
            host = String(target[target.index(after: target.startIndex)..<close])
            let rest = target[target.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw .badRequest("target: expected ':PORT' after ']'") }
                portText = rest.dropFirst()
            }
        } else if target.filter({ $0 == ":" }).count == 1 {
            let parts = target.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            host = String(parts[0])
            portText = parts[1]
        } else if target.contains(":"), IPAddress(parsing: target) == nil {
            throw .badRequest("target: write an IPv6 address in brackets before its port, e.g. [::1]:80")
        }
        guard !host.isEmpty else { throw .badRequest("target has no host") }
        var port: UInt16?
        if let portText {
            guard let value = UInt16(portText), value > 0 else { throw .badRequest("target port must be 1 to 65535, got '\(shown(String(portText)))'") }
            port = value
        }
        if kind == .tcp && port == nil { throw .badRequest("a tcp module needs target=HOST:PORT") }
        if kind == .icmp && port != nil { throw .badRequest("an icmp module takes target=HOST without a port") }
        return (host, port)
    }

    /// Strict `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` must be
    /// two hex digits of valid UTF-8, and `module` and `target` may appear once.
    static func parameters(_ query: String) throws(BlackboxRefusal) -> [String: String] {
        guard query.utf8.count <= maximumQueryLength else { throw .badRequest("query string longer than \(maximumQueryLength) bytes") }
        var result: [String: String] = [:]
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = decode(parts[0]), let value = decode(parts.count > 1 ? parts[1] : "") else {
                throw .badRequest("malformed query string: bad %-escape or invalid UTF-8")
            }
            if (key == "module" || key == "target") && result[key] != nil { throw .badRequest("'\(key)' given more than once") }
            result[key] = value
        }
        return result
    }

    static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// At most 64 characters of client text, control characters replaced, for messages.
    static func shown(_ text: String) -> String {
        String(text.prefix(64).map { $0.isASCII && !$0.isWhitespace || $0 == " " ? $0 : "?" })
    }
}
