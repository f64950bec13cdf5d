import ProbeResults
import Yams

/// The `web:` section: the read-only live view of `netprobe run`. Off unless the section
/// is present; `web:` alone (or `{}`) turns it on with the defaults, `enabled: false` turns
/// it off again without deleting the section.
///
/// ```yaml
/// web:
///   listen: 127.0.0.1:19157   # loopback only (an SSH tunnel reaches it from elsewhere)
///   enabled: true
/// ```
///
/// **One HTTP server.** The view is served by the same server as `/metrics` and `/probe`,
/// which listens on one address. So with both `web:` and `prometheus:` on:
/// - a section without `listen` takes the other's (either way round);
/// - both with `listen`: they must be the same address, or `validate` fails;
/// - neither with `listen`: prometheus' default, 127.0.0.1:19156, so scrape configs
///   written for it keep working when the view is added.
///
/// With `web:` alone the default is 127.0.0.1:19157.
///
/// **Loopback only** (for now): the view has no login, so its address must be 127.0.0.0/8
/// or ::1, and a `prometheus:` listen on another address is an error while the view is on
/// (it would be served there too). The error names the SSH tunnel that reaches it instead.
public struct WebSettings: Sendable, Equatable {
    /// The default port with `web:` alone, 19157: next to the exporter's 19156 and chosen
    /// the same way (outside 9100-9999, every port of which Prometheus' "Default port
    /// allocations" list has given out; 9428, the obvious pick, is VictoriaLogs' HTTP
    /// port; below Linux's ephemeral range 32768-60999, so no outgoing connection takes
    /// it first; not in IANA's service list).
    public static let defaultPort = 19157

    /// Address the server listens on (`listen`, host part, or prometheus'): always loopback.
    public var host: String
    /// Port of the server (`listen`, port part, or prometheus'); 0 lets the system choose (tests).
    public var port: Int

    public init(host: String = "127.0.0.1", port: Int = WebSettings.defaultPort) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:19157` or `[::1]:19157`, as written in a `listen`.
    public var listenText: String { Self.listenText(host: host, port: port) }

    /// The view's address, for logs and summaries: `http://127.0.0.1:19157/`.
    public var url: String { "http://\(listenText)/" }

    /// The command that reaches the view from another machine:
    /// `ssh -L 19157:127.0.0.1:19157 HOST` (then open http://127.0.0.1:19157/ there).
    public var sshTunnel: String { Self.sshTunnel(host: host, port: port) }

    static func listenText(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    static func sshTunnel(host: String, port: Int) -> String {
        "ssh -L \(port):\(listenText(host: host, port: port)) HOST"
    }
}

extension ConfigurationLoader {
    static let webKeys = ["listen", "enabled"]

    /// Reads `web:` and settles the one server's address with `prometheus:` (already read,
    /// and moved to web's `listen` when it has none of its own).
    ///
    /// - Parameters:
    ///   - node: the `web:` section.
    ///   - prometheusSection: the `prometheus:` section's node, for the position of its `listen`.
    ///   - prometheus: the exporter's settings; nil when off.
    /// - Returns: the view's settings; nil when off (`enabled: false`) or unreadable.
    static func readWeb(_ node: Node, prometheusSection: Node?, prometheus: inout PrometheusSettings?, reader: inout Reader) -> WebSettings? {
        guard let entries = reader.entries(of: node, section: "web", known: webKeys) else { return nil }
        var enabled = true
        if let value = entries["enabled"], let flag = reader.boolean(value, "enabled") { enabled = flag }
        var listen: (host: String, port: Int, node: Node)?
        if let node = entries["listen"], let text = reader.string(node, "listen") {
            if let (host, port) = parseListen(text) {
                listen = (host, port, node)
            } else {
                reader.error(node, "listen must be ADDRESS:PORT with a numeric loopback address, e.g. '127.0.0.1:\(WebSettings.defaultPort)' or '[::1]:\(WebSettings.defaultPort)', got '\(text)'")
                return nil
            }
        }
        guard enabled else { return nil }

        let prometheusListen = prometheus == nil ? nil : prometheusSection.flatMap(listenNode(of:))
        var settings = WebSettings()
        if let listen {
            settings = WebSettings(host: listen.host, port: listen.port)
            if var exporter = prometheus {
                if let prometheusListen {
                    if !sameAddress(exporter.host, exporter.port, listen.host, listen.port) {
                        let line = Position(prometheusListen).line
                        reader.error(listen.node, "web listen \(settings.listenText) differs from prometheus listen \(WebSettings.listenText(host: exporter.host, port: exporter.port)) (line \(line)): the view is served by the same HTTP server as /metrics, which listens on one address; give both the same listen, or remove this one to serve the view on prometheus' address")
                        return nil
                    }
                } else {
                    // One server: the exporter moves to the address the view was given.
                    exporter.host = listen.host
                    exporter.port = listen.port
                    prometheus = exporter
                }
            }
        } else if let exporter = prometheus {
            settings = WebSettings(host: exporter.host, port: exporter.port)
        }

        guard let address = IPAddress(parsing: settings.host), !address.isLoopback else { return settings }
        let loopbackTunnel = WebSettings.sshTunnel(host: "127.0.0.1", port: settings.port)
        if let listen {
            reader.error(listen.node, "web listen \(settings.listenText) is not a loopback address: the view has no login and is served on loopback only; listen on 127.0.0.1:\(settings.port) (or [::1]) and reach it from your machine through an SSH tunnel, '\(loopbackTunnel)', then open http://127.0.0.1:\(settings.port)/")
        } else if let prometheusListen {
            reader.error(prometheusListen, "prometheus listen \(settings.listenText) is not a loopback address, and the web view (web:), served by the same HTTP server, is loopback only: listen on 127.0.0.1:\(settings.port) and reach the view and /metrics through an SSH tunnel, '\(loopbackTunnel)', or turn the view off with 'web: {enabled: false}' to keep /metrics on this address")
        }
        return nil
    }

    /// The `listen` value of a section's mapping when it is a valid address, without
    /// reporting anything (the section's own reader has done that).
    private static func listenNode(of section: Node) -> Node? {
        guard case .mapping(let mapping) = section else { return nil }
        for (key, value) in mapping {
            if case .scalar(let scalar) = key, scalar.string == "listen", case .scalar(let text) = value, parseListen(text.string) != nil { return value }
        }
        return nil
    }

    /// Whether two listen addresses are the same socket address however they are spelt
    /// (`::1` and `0:0:0:0:0:0:0:1`).
    private static func sameAddress(_ leftHost: String, _ leftPort: Int, _ rightHost: String, _ rightPort: Int) -> Bool {
        leftPort == rightPort && IPAddress(parsing: leftHost) == IPAddress(parsing: rightHost)
    }
}
