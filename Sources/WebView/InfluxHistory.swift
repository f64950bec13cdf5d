import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOSSL
import ProbeConfig
import ProbeResults

/// The view's long ranges (beyond the last hour in memory): one `HistoryBucket` per pixel
/// column, read by InfluxQL from the first configured InfluxDB 1.x server, over the
/// schema `run` writes (`Schema`).
///
/// The columns: every column is a whole number of seconds wide, and the columns are the
/// server's own `GROUP BY time(<width>)` buckets, which start at multiples of the width
/// since 1970 (InfluxQL's default, no offset). The width is the smallest whole number of
/// seconds for which `columns` such buckets cover the range asked for, ending with the
/// bucket that holds its last instant: the newest data is always in the last column, and
/// the first column starts at `from` aligned down to the grid (at most a column or so
/// before it; more only when a range is shorter than one second per column). A bucket is
/// therefore exactly what `SELECT ... GROUP BY time(<width>s)` over
/// [first column's start, last column's end) answers (`Grid`).
///
/// A series is one `WebSeriesKey` exactly: `probe`, `env`, `target`, `port`, `tos`,
/// `source`, `interface` and the labels are compared with `=`, and every tag the key does
/// not have (class 0 has no `tos` tag, a target without labels has no label tags) must be
/// absent (`= ''`), so a target probed in two classes, or with a label, stays apart. The
/// address is not part of the key: a name that resolves to a new address stays one line.
///
/// Other servers answer `InfluxHistoryError.unsupported` with the text the page shows:
/// InfluxDB 2.x configured with `api: v2` (no InfluxQL without a DBRP mapping and v1
/// credentials), VictoriaMetrics (its /query answers every statement with its list of
/// databases), and no InfluxDB at all.
public struct InfluxHistory: Sendable {
    /// The server's name (`influxdb:` entry), nil when there is none to read from.
    public let serverName: String?
    /// Why graphs beyond the last hour cannot come from InfluxDB, for the page; nil when they can.
    public let unsupportedReason: String?
    /// True when `buckets` can ask a server (it may still find it unsupported when it answers).
    public var isSupported: Bool { unsupportedReason == nil }

    private let connection: Connection?
    private let probe: String
    private let timeoutSeconds: Int
    private let logger: Logger

    /// The most columns one graph may ask for: a screen's width, with room to spare.
    public static let maximumColumns = 20_000

    /// - Parameters:
    ///   - servers: the config's `influxdb:` list; the first 1.x (`api: v1`) server is read,
    ///     with its database, retention policy, credentials and CA.
    ///   - probe: this probe's name (the `probe` tag): a database shared by several probes
    ///     holds each one's series apart.
    ///   - timeoutSeconds: per request: connecting, sending and the server's answer.
    ///   - logger: where the queries are logged (debug level; never a credential).
    public init(servers: [InfluxServerSettings], probe: String, timeoutSeconds: Int = 10, logger: Logger) {
        self.probe = probe
        self.timeoutSeconds = max(1, timeoutSeconds)
        self.logger = logger
        guard let server = servers.first(where: { if case .v1 = $0.api { return true } else { return false } }) else {
            serverName = nil
            connection = nil
            unsupportedReason = servers.isEmpty
                ? "no InfluxDB server is configured: graphs show the last hour, from memory"
                : "the InfluxDB servers are configured with the v2 API (org, bucket, token), which has no InfluxQL without a DBRP mapping: graphs show the last hour, from memory (configure an InfluxDB 1.x server, or the server's 1.x API, for longer ranges)"
            return
        }
        serverName = server.name
        do {
            connection = try Connection(server: server, timeoutSeconds: self.timeoutSeconds)
            unsupportedReason = nil
        } catch {
            connection = nil
            unsupportedReason = "InfluxDB server \(server.name): \(error): graphs show the last hour, from memory"
        }
    }

    /// The buckets of one series over a range, one per column, oldest first; a column
    /// without data is a bucket of 0 rounds (a gap).
    /// - Parameters:
    ///   - key: the series.
    ///   - from: start of the range, nanoseconds since 1970.
    ///   - to: end of the range (excluded), nanoseconds since 1970.
    ///   - columns: pixel columns of the graph, at least 2.
    /// - Returns: `columns` buckets on the grid `grid(from:to:columns:)` gives.
    /// - Throws: `InfluxHistoryError`: an invalid range, an unsupported server, or what
    ///   went wrong with the request, readable as it is.
    public func buckets(for key: WebSeriesKey, from: Int64, to: Int64, columns: Int) async throws -> [HistoryBucket] {
        let grid = try Self.grid(from: from, to: to, columns: columns)
        guard let connection, let serverName else {
            throw InfluxHistoryError.unsupported(reason: unsupportedReason ?? "no InfluxDB 1.x server")
        }
        let measurement = key.kind.rawValue
        // The tag keys this target's series have: those the key does not name (a label of
        // a sibling series) must be absent from the series read.
        let keysStatement = "SHOW TAG KEYS FROM \(connection.from(measurement)) WHERE \(Self.identityCondition(key, probe: probe))"
        let keysAnswer = try await connection.query(keysStatement, timeoutSeconds: timeoutSeconds, logger: logger)
        var tagKeys: [String] = []
        for series in keysAnswer {
            guard series.name == measurement, series.columns == ["tagKey"] else {
                throw InfluxHistoryError.unsupported(reason: "InfluxDB server \(serverName) answered SHOW TAG KEYS with a series '\(series.name ?? "")' of columns \(series.columns): it does not run InfluxQL (VictoriaMetrics answers every /query with its list of databases); graphs show the last hour, from memory")
            }
            for row in series.values ?? [] {
                if case .string(let tagKey)? = row.first { tagKeys.append(tagKey) }
            }
        }
        let statement = Self.selectStatement(key, probe: probe, otherTagKeys: tagKeys, from: connection.from(measurement), grid: grid)
        let answer = try await connection.query(statement, timeoutSeconds: timeoutSeconds, logger: logger)
        return try Self.buckets(from: answer, measurement: measurement, grid: grid, server: serverName)
    }

    // MARK: - The grid

    /// The columns of a graph: `count` buckets of `widthSeconds`, the first at
    /// `startNanoseconds` (a multiple of the width since 1970).
    public struct Grid: Sendable, Equatable {
        public var startNanoseconds: Int64
        public var widthSeconds: Int64
        public var count: Int

        public var widthNanoseconds: Int64 { widthSeconds * 1_000_000_000 }
        /// End of the last column (excluded).
        public var endNanoseconds: Int64 { startNanoseconds + Int64(count) * widthNanoseconds }
    }

    /// The smallest whole-second width whose `columns` epoch-aligned buckets, the last one
    /// holding `to - 1`, reach back to `from`.
    /// - Throws: `InfluxHistoryError.invalidRequest` for an empty or negative range, or a
    ///   number of columns outside 2...`maximumColumns`.
    public static func grid(from: Int64, to: Int64, columns: Int) throws -> Grid {
        guard columns >= 2, columns <= maximumColumns else {
            throw InfluxHistoryError.invalidRequest("a graph needs 2 to \(maximumColumns) columns, got \(columns)")
        }
        // Until 2100, at most 100 years long: no grid arithmetic can overflow.
        guard from >= 0, to > from, to <= 4_102_444_800 * 1_000_000_000, to - from <= 100 * 366 * 86_400 * 1_000_000_000 else {
            throw InfluxHistoryError.invalidRequest("the range [\(from), \(to)) ns is not a range of at most 100 years between 1970 and 2100")
        }
        let second: Int64 = 1_000_000_000
        let span = to - from
        let count = Int64(columns)
        // `count - 1` widths of at least the span always fit (the last column starts at or
        // before `to - 1`), so the search is short: a few steps for a screen of columns.
        let narrowest = max(1, (span + count * second - 1) / (count * second))
        let widest = max(1, (span + (count - 1) * second - 1) / ((count - 1) * second))
        for width in narrowest...widest {
            let widthNanoseconds = width * second
            let last = (to - 1) / widthNanoseconds * widthNanoseconds
            let first = last - (count - 1) * widthNanoseconds
            if first <= from { return Grid(startNanoseconds: first, widthSeconds: width, count: columns) }
        }
        let width = widest * second
        return Grid(startNanoseconds: (to - 1) / width * width - (count - 1) * width, widthSeconds: widest, count: columns)
    }

    // MARK: - InfluxQL

    /// The tags that name the target: `probe`, `env`, `target`.
    static func identityCondition(_ key: WebSeriesKey, probe: String) -> String {
        [tagEquals(Schema.Tag.probe, probe), tagEquals(Schema.Tag.env, key.env), tagEquals(Schema.Tag.target, key.target)]
            .joined(separator: " AND ")
    }

    /// Exactly the key's series: every tag of the key equal, every other tag absent.
    /// - Parameter otherTagKeys: the tag keys the server knows for this target.
    static func seriesCondition(_ key: WebSeriesKey, probe: String, otherTagKeys: [String]) -> String {
        var conditions = [identityCondition(key, probe: probe)]
        // Tags that are part of the series when set, and absent (= '') when not: how
        // Schema.tags writes them.
        var optional: [(String, String?)] = [
            (Schema.Tag.tos, Schema.tosTagValue(key.options.tos)),
            (Schema.Tag.source, key.options.source?.description),
            (Schema.Tag.interface, key.options.interface),
        ]
        if key.kind == .tcp { optional.insert((Schema.Tag.port, key.port.map { String($0) }), at: 0) }
        for (tag, value) in optional {
            conditions.append(tagEquals(tag, value ?? ""))
        }
        for (label, value) in key.labels.sorted(by: { $0.key < $1.key }) where !Schema.Tag.all.contains(label) {
            conditions.append(tagEquals(label, value))
        }
        // Not part of the key, whatever their value: the address a name resolved to (and
        // its family), the TCP mode.
        let free: Set<String> = [Schema.Tag.address, Schema.Tag.family, Schema.Tag.mode]
        let named = Set(Schema.Tag.all).union(key.labels.keys)
        for tagKey in Set(otherTagKeys).subtracting(named).subtracting(free).sorted() {
            conditions.append(tagEquals(tagKey, ""))
        }
        return conditions.joined(separator: " AND ")
    }

    /// The bucket query: rounds, probes sent and received, the smallest minimum, the
    /// median of the medians, the largest maximum, per `GROUP BY time` bucket of the grid.
    static func selectStatement(_ key: WebSeriesKey, probe: String, otherTagKeys: [String], from: String, grid: Grid) -> String {
        let field = Schema.Field.self
        return "SELECT count(\(identifier(field.sent))) AS \"rounds\", sum(\(identifier(field.sent))) AS \"sent\", "
            + "sum(\(identifier(field.received))) AS \"received\", min(\(identifier(field.rttMinimum))) AS \"minimum\", "
            + "median(\(identifier(field.rttMedian))) AS \"median\", max(\(identifier(field.rttMaximum))) AS \"maximum\" "
            + "FROM \(from) WHERE \(seriesCondition(key, probe: probe, otherTagKeys: otherTagKeys)) "
            + "AND time >= \(grid.startNanoseconds) AND time < \(grid.endNanoseconds) "
            + "GROUP BY time(\(grid.widthSeconds)s) fill(none)"
    }

    /// `"tag" = 'value'` with the value as the sink stores it.
    static func tagEquals(_ tag: String, _ value: String) -> String {
        "\(identifier(tag)) = \(string(storedForm(value)))"
    }

    // WebView's own InfluxQL quoting: the same rules as Dashboards' InfluxQL helpers (which
    // WebView must not depend on); both could move to ProbeResults beside the schema.

    /// A double-quoted identifier, `"rtt_min_ms"`; InfluxQL's scanner reads `\\`, `\"`
    /// and `\n` in it.
    static func identifier(_ name: String) -> String {
        "\"" + escaped(name, quote: "\"") + "\""
    }

    /// A single-quoted string literal, `'it\'s'`.
    static func string(_ value: String) -> String {
        "'" + escaped(value, quote: "'") + "'"
    }

    private static func escaped(_ text: String, quote: Unicode.Scalar) -> String {
        var output = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\", quote:
                output.append("\\")
                output.append(scalar)
            // A raw line break ends a literal with an error; `\n` is InfluxQL's spelling.
            case "\n":
                output.append(contentsOf: "\\n".unicodeScalars)
            default:
                output.append(scalar)
            }
        }
        return String(output)
    }

    /// A tag value as the sink's line protocol stores it (InfluxSink LineProtocol
    /// `identifier`, which WebView must not depend on): line breaks become spaces, and
    /// backslashes at the end or before `,`, `=`, space or `"` are dropped (1.x has no
    /// spelling that keeps them). Any other text is stored as it is.
    static func storedForm(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0 == "\\" || $0 == "\n" || $0 == "\r" }) else { return text }
        let sensitive: Set<Unicode.Scalar> = [",", "=", " ", "\""]
        var kept: [Unicode.Scalar] = []
        var beforeSensitive = true
        for scalar in text.unicodeScalars.map({ $0 == "\n" || $0 == "\r" ? " " : $0 }).reversed() {
            if scalar == "\\" && beforeSensitive { continue }
            beforeSensitive = sensitive.contains(scalar)
            kept.append(scalar)
        }
        return String(String.UnicodeScalarView(kept.reversed()))
    }

    // MARK: - The answer

    static func buckets(from answer: [QuerySeries], measurement: String, grid: Grid, server: String) throws -> [HistoryBucket] {
        var buckets = (0..<grid.count).map { column in
            HistoryBucket(startNanoseconds: grid.startNanoseconds + Int64(column) * grid.widthNanoseconds, durationNanoseconds: grid.widthNanoseconds,
                          rounds: 0, sent: 0, received: 0, minimumMilliseconds: nil, medianMilliseconds: nil, maximumMilliseconds: nil)
        }
        for series in answer {
            guard series.name == measurement else {
                throw InfluxHistoryError.unsupported(reason: "InfluxDB server \(server) answered a SELECT from '\(measurement)' with a series '\(series.name ?? "")': it does not run InfluxQL; graphs show the last hour, from memory")
            }
            func column(_ name: String) throws -> Int {
                guard let index = series.columns.firstIndex(of: name) else {
                    throw InfluxHistoryError.unexpectedAnswer(server: server, detail: "no column '\(name)' in \(series.columns)")
                }
                return index
            }
            let (time, rounds, sent, received) = (try column("time"), try column("rounds"), try column("sent"), try column("received"))
            let (minimum, median, maximum) = (try column("minimum"), try column("median"), try column("maximum"))
            for row in series.values ?? [] {
                guard row.count == series.columns.count, let start = row[time].integer,
                      start >= grid.startNanoseconds, start < grid.endNanoseconds,
                      (start - grid.startNanoseconds) % grid.widthNanoseconds == 0 else {
                    throw InfluxHistoryError.unexpectedAnswer(server: server, detail: "a row off the grid of \(grid.widthSeconds) s columns from \(grid.startNanoseconds) ns: \(row)")
                }
                let index = Int((start - grid.startNanoseconds) / grid.widthNanoseconds)
                buckets[index].rounds = Int(row[rounds].integer ?? 0)
                buckets[index].sent = Int(row[sent].integer ?? 0)
                buckets[index].received = Int(row[received].integer ?? 0)
                buckets[index].minimumMilliseconds = row[minimum].number
                buckets[index].medianMilliseconds = row[median].number
                buckets[index].maximumMilliseconds = row[maximum].number
            }
        }
        return buckets
    }
}

/// Why `InfluxHistory` has no buckets; every case reads as a sentence for the page or the log.
public enum InfluxHistoryError: Error, Equatable, CustomStringConvertible {
    /// The range or the number of columns cannot be drawn.
    case invalidRequest(String)
    /// The server cannot answer InfluxQL (v2 API, VictoriaMetrics, none configured).
    case unsupported(reason: String)
    /// No connection, or it broke.
    case unreachable(server: String, reason: String)
    /// No answer within the timeout.
    case timedOut(server: String, seconds: Int)
    /// The server refused the credentials.
    case authenticationFailed(server: String, status: Int)
    /// An HTTP error status, with the server's message.
    case httpStatus(server: String, status: Int, message: String)
    /// The server ran the query and reported an error (e.g. "database not found").
    case queryFailed(server: String, message: String)
    /// An answer that is not what InfluxDB 1.x sends.
    case unexpectedAnswer(server: String, detail: String)

    public var description: String {
        switch self {
        case .invalidRequest(let text): return "invalid history request: \(text)"
        case .unsupported(let reason): return reason
        case .unreachable(let server, let reason): return "InfluxDB server \(server) cannot be reached: \(reason)"
        case .timedOut(let server, let seconds): return "InfluxDB server \(server) did not answer within \(seconds) s"
        case .authenticationFailed(let server, let status):
            return "InfluxDB server \(server) refused the credentials (HTTP \(status)): check username and password_env/password_file, and that the user may read the database"
        case .httpStatus(let server, let status, let message): return "InfluxDB server \(server) answered HTTP \(status): \(message)"
        case .queryFailed(let server, let message): return "InfluxDB server \(server) could not run the query: \(message)"
        case .unexpectedAnswer(let server, let detail): return "InfluxDB server \(server) answered something InfluxDB 1.x does not: \(detail)"
        }
    }
}

/// One series of a /query answer.
struct QuerySeries: Decodable {
    var name: String?
    var columns: [String]
    var values: [[QueryValue]]?
}

/// A cell of a /query answer: InfluxDB 1.x's JSON numbers, strings, booleans and nulls.
enum QueryValue: Decodable, CustomStringConvertible {
    case integer(Int64)
    case number(Double)
    case string(String)
    case boolean(Bool)
    case null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Int64.self) {
            // First: nanosecond times and counts stay exact (a Double holds 2^53).
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(Bool.self) {
            self = .boolean(value)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .number(let value) where value == value.rounded() && abs(value) < 9e15: return Int64(value)
        default: return nil
        }
    }

    var number: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .integer(let value): return String(value)
        case .number(let value): return String(value)
        case .string(let value): return "'\(value)'"
        case .boolean(let value): return String(value)
        case .null: return "null"
        }
    }
}

/// The HTTP side: one client per server, its /query URL and credentials.
private final class Connection: Sendable {
    let name: String
    let queryURL: String
    let database: String
    let retentionPolicy: String?
    /// The `Authorization` header: credentials travel only there, never in a URL or a log.
    private let authorization: String?
    private let client: HTTPClient

    init(server: InfluxServerSettings, timeoutSeconds: Int) throws {
        guard case .v1(let database, let retentionPolicy, let username, let password) = server.api else {
            throw InfluxHistoryError.unsupported(reason: "InfluxDB server \(server.name) is not a 1.x server")
        }
        name = server.name
        self.database = database
        self.retentionPolicy = retentionPolicy
        authorization = username.map { "Basic " + Data("\($0):\(password?.value ?? "")".utf8).base64EncodedString() }
        guard var components = URLComponents(string: server.url), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https" else {
            throw InfluxHistoryError.invalidRequest("the URL of InfluxDB server \(server.name) is not http:// or https://")
        }
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        components.percentEncodedPath = path + "/query"
        components.user = nil
        components.password = nil
        components.query = nil
        guard let url = components.string else {
            throw InfluxHistoryError.invalidRequest("cannot build the /query URL of InfluxDB server \(server.name)")
        }
        queryURL = url

        var configuration = HTTPClient.Configuration()
        // Never redirected (the credentials would follow); answers are a graph's worth.
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // A refused connection is retried until the connect timeout: not beyond the request's.
        configuration.timeout = .init(connect: .seconds(Int64(min(5, timeoutSeconds))))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 4)
        if let caFile = server.caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            do {
                // The system's roots and the configured CA, as the sink trusts them.
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
            } catch {
                throw InfluxHistoryError.invalidRequest("cannot read CA file \(caFile) as PEM certificates (\(error))")
            }
            configuration.tlsConfiguration = tls
        }
        // The shared event loops of AsyncHTTPClient: never the probe loop's thread.
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    deinit {
        // Closes idle connections; nothing waits (a last release may happen on its event loop).
        client.shutdown { _ in }
    }

    /// `"measurement"`, or `"rp"."measurement"` when the config names a retention policy.
    func from(_ measurement: String) -> String {
        (retentionPolicy.map { InfluxHistory.identifier($0) + "." } ?? "") + InfluxHistory.identifier(measurement)
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    private static func formEncoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    private struct Answer: Decodable {
        struct Statement: Decodable {
            var series: [QuerySeries]?
            var error: String?
        }
        var results: [Statement]?
        var error: String?
    }

    /// Runs one statement by POST /query (form body: the statement stays out of URLs and
    /// access logs); returns the series of its result.
    func query(_ statement: String, timeoutSeconds: Int, logger: Logger) async throws -> [QuerySeries] {
        logger.debug("InfluxQL to \(name): \(statement)")
        var request = HTTPClientRequest(url: queryURL)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        let form = [("db", database), ("epoch", "ns"), ("q", statement)].map { "\($0)=\(Self.formEncoded($1))" }.joined(separator: "&")
        request.body = .bytes(ByteBuffer(string: form))
        let status: Int
        let body: ByteBuffer
        do {
            let response = try await client.execute(request, timeout: .seconds(Int64(timeoutSeconds)))
            status = Int(response.status.code)
            body = try await response.body.collect(upTo: 64 << 20)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw InfluxHistoryError.timedOut(server: name, seconds: timeoutSeconds)
        } catch {
            // NIO's connection errors say which address refused ("Connection errors: ...").
            throw InfluxHistoryError.unreachable(server: name, reason: "\(error)")
        }
        let data = Data(body.readableBytesView)
        let answer = try? JSONDecoder().decode(Answer.self, from: data)
        switch status {
        case 200:
            guard let answer else {
                throw InfluxHistoryError.unexpectedAnswer(server: name, detail: "not InfluxDB's JSON: \(Self.shortened(data))")
            }
            if let message = answer.error ?? answer.results?.first?.error {
                throw InfluxHistoryError.queryFailed(server: name, message: message)
            }
            return answer.results?.first?.series ?? []
        case 401, 403:
            throw InfluxHistoryError.authenticationFailed(server: name, status: status)
        case 404:
            throw InfluxHistoryError.unsupported(reason: "InfluxDB server \(name) has no /query (HTTP 404): it does not run InfluxQL; graphs show the last hour, from memory")
        default:
            throw InfluxHistoryError.httpStatus(server: name, status: status, message: answer?.error ?? Self.shortened(data))
        }
    }

    private static func shortened(_ data: Data) -> String {
        let text = String(decoding: data.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "(empty body)" : text
    }
}
