import ArgumentParser
import ProbeEngine
import ProbeResults

/// A target as typed on the command line: HOST, HOST:PORT, HOST:PORT,PORT, [IPv6]:PORT.
struct Endpoint: Equatable {
    /// The host as the user wrote it, without IPv6 brackets.
    var host: String
    /// The ports, in the order given; empty when none was given.
    var ports: [UInt16]

    /// - Parameters:
    ///   - text: the argument.
    ///   - requirePort: true for `tcp`, where a port is mandatory.
    /// - Throws: `ValidationError` naming the argument and how to write it.
    static func parse(_ text: String, requirePort: Bool) throws -> Endpoint {
        let host: String
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ValidationError("'\(text)': missing ']' after the IPv6 address; write [2001:db8::1]:443.")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw ValidationError("'\(text)': expected ':PORT' after ']'; write [2001:db8::1]:443.") }
                portText = rest.dropFirst()
            }
        } else {
            let colons = text.filter { $0 == ":" }.count
            if colons == 1 {
                let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                host = String(parts[0])
                portText = parts[1]
            } else if colons > 1 && requirePort {
                throw ValidationError("'\(text)': write an IPv6 address in brackets before its port, e.g. [\(text)]:443 or [::1]:80.")
            } else {
                host = text
            }
        }
        guard !host.isEmpty else { throw ValidationError("'\(text)': the host is missing; write HOST:PORT, e.g. db.example.com:5432.") }
        var ports: [UInt16] = []
        if let portText {
            for piece in portText.split(separator: ",", omittingEmptySubsequences: false) {
                guard let port = UInt16(piece), port > 0 else {
                    throw ValidationError("'\(text)': '\(piece)' is not a port (1 to 65535); write HOST:PORT or HOST:PORT,PORT.")
                }
                ports.append(port)
            }
        }
        if requirePort && ports.isEmpty {
            throw ValidationError("'\(text)': a port is needed; write HOST:PORT, e.g. \(host):443.")
        }
        return Endpoint(host: host, ports: ports)
    }
}

/// Resolves each distinct host once and pairs it with its ports.
/// - Returns: one target per host and port, in the order given (unresolved ones included).
func resolveEndpoints(_ endpoints: [Endpoint], preference: AddressPreference) async -> [ProbeTarget] {
    var hosts: [String] = []
    for endpoint in endpoints where !hosts.contains(endpoint.host) { hosts.append(endpoint.host) }
    let resolved = await Resolver.resolve(hosts, preference: preference)
    let byHost = Dictionary(uniqueKeysWithValues: zip(hosts, resolved))
    return endpoints.flatMap { endpoint in
        endpoint.ports.map { port in
            var target = byHost[endpoint.host]!
            target.port = port
            return target
        }
    }
}

extension Endpoint {
    /// Whether any of the arguments names a port (then `check` and `trace` trace with TCP
    /// SYNs as well, and open the raw TCP sockets for it before privileges drop).
    static func anyHasPort(_ texts: [String]) -> Bool {
        texts.contains { ((try? parse($0, requirePort: false))?.ports.isEmpty) == false }
    }
}

extension AddressPreference {
    /// The socket families a command opens for this preference (-4, -6 or neither), and
    /// which of them may be missing: with both wanted, a host without IPv6 still works.
    var socketFamilies: (wanted: Set<AddressFamily>, optional: Set<AddressFamily>) {
        switch self {
        case .ipv4Only: return ([.ipv4], [])
        case .ipv6Only: return ([.ipv6], [])
        case .any: return ([.ipv4, .ipv6], [.ipv4, .ipv6])
        }
    }
}
