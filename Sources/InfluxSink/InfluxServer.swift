import Foundation
import ProbeConfig

/// One server every point is written to (servers are replicas, not fail-overs).
public struct InfluxServer: Sendable, CustomStringConvertible {
    /// How the server is written to and authenticated against (the config's `influxdb:` entry).
    public typealias API = InfluxAPI

    /// The name in logs and statistics, and (sanitized) the server's spool directory.
    public var name: String
    /// The base URL, e.g. http://127.0.0.1:8086 (a path prefix is kept).
    public var url: URL
    /// The write API and its credentials.
    public var api: API
    /// A PEM file of the CA (or CAs) that signed the server's certificate, trusted beside
    /// the system's roots for this server only.
    public var caFile: String?
    /// Compress request bodies with gzip (`Content-Encoding: gzip`).
    public var gzip: Bool

    public init(name: String, url: URL, api: API, caFile: String? = nil, gzip: Bool = false) {
        self.name = name
        self.url = url
        self.api = api
        self.caFile = caFile
        self.gzip = gzip
    }

    /// Safe to log: passwords and tokens are redacted.
    public var description: String {
        let apiText: String
        switch api {
        case .v1(let database, let retentionPolicy, let username, let password):
            apiText = "v1 database=\(database)" + (retentionPolicy.map { " rp=\($0)" } ?? "")
                + (username.map { " username=\($0)" } ?? "") + (password == nil ? "" : " password=<redacted>")
        case .v2(let org, let bucket, _):
            apiText = "v2 org=\(org) bucket=\(bucket) token=<redacted>"
        }
        return "\(name) (\(Self.redacted(url)) \(apiText)\(gzip ? " gzip" : "")\(caFile.map { " ca=\($0)" } ?? ""))"
    }

    /// The URL without any user:password part.
    static func redacted(_ url: URL) -> String {
        guard var components = URLComponents(url: url, resolvingAgainstBaseURL: false), components.password != nil || components.user != nil else {
            return url.absoluteString
        }
        components.user = nil
        components.password = nil
        return components.string ?? "<url>"
    }
}

/// How senders pace their requests. The defaults suit production; tests shorten them.
public struct DeliveryPolicy: Sendable {
    /// The first retry waits about this long; each further one twice as long.
    public var initialBackoffSeconds: Double
    /// The longest wait between retries (before jitter).
    public var maximumBackoffSeconds: Double
    /// A Retry-After longer than this is cut to it.
    public var maximumRetryAfterSeconds: Double
    /// Per request: connecting, sending and the server's answer, in whole seconds.
    public var requestTimeoutSeconds: Int
    /// While the spool refuses writes (full disk), it is tried again at most this often.
    public var diskRetrySeconds: Double

    public init(initialBackoffSeconds: Double = 0.5, maximumBackoffSeconds: Double = 30, maximumRetryAfterSeconds: Double = 300, requestTimeoutSeconds: Int = 10,
                diskRetrySeconds: Double = 1) {
        self.initialBackoffSeconds = initialBackoffSeconds
        self.maximumBackoffSeconds = maximumBackoffSeconds
        self.maximumRetryAfterSeconds = maximumRetryAfterSeconds
        self.requestTimeoutSeconds = max(1, requestTimeoutSeconds)
        self.diskRetrySeconds = max(0, diskRetrySeconds)
    }

    /// The wait before retry number `attempt` (1-based): exponential, with jitter in
    /// [50 %, 100 %] so that senders restarted together do not retry together.
    func backoffSeconds(attempt: Int) -> Double {
        let exponential = initialBackoffSeconds * pow(2, Double(min(attempt - 1, 30)))
        return min(maximumBackoffSeconds, exponential) * Double.random(in: 0.5...1.0)
    }
}

/// Why the sink could not start or accept points.
public enum InfluxSinkError: Error, CustomStringConvertible {
    /// Two servers have the same name (their spools would collide).
    case duplicateServerName(String)
    /// write() after shutdown().
    case shutDown
    /// Another process holds the server's spool.
    case spoolLocked(path: String)
    /// A file operation on the spool failed.
    case spool(operation: String, path: String, errno: Int32)
    /// The configuration is unusable.
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .duplicateServerName(let name): return "two InfluxDB servers are named \"\(name)\": give each a unique name"
        case .shutDown: return "the InfluxDB sink is shut down"
        case .spoolLocked(let path): return "spool \(path) is in use by another process (lock held)"
        case .spool(let operation, let path, let code): return "spool: \(operation) \(path): \(String(cString: strerror(code)))"
        case .invalidConfiguration(let text): return text
        }
    }
}
