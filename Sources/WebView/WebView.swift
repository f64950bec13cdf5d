import ProbeResults

/// Where graphs of more than the last hour come from: the first configured InfluxDB 1.x
/// server (`InfluxHistory`), or a test's fake.
public protocol LongRangeSource: Sendable {
    /// The buckets of a series over a range, one per pixel column.
    /// - Parameters:
    ///   - key: the series.
    ///   - from: start of the range, nanoseconds since 1970.
    ///   - to: its end (excluded).
    ///   - columns: buckets wanted, each (to - from) / columns wide.
    /// - Returns: the non-empty buckets, oldest first (an empty one may be left out: it is
    ///   a gap either way).
    /// - Throws: when the server cannot be asked; the page shows the error in place of
    ///   the graph.
    func buckets(for key: WebSeriesKey, from: Int64, to: Int64, columns: Int) async throws -> [HistoryBucket]
}

/// InfluxDB 1.x by InfluxQL (its grid: columns of whole seconds aligned to multiples of
/// their width since 1970, which the target page's ranges already are: 720 columns of
/// 30 s, 2 min, 14 min or 1 h ending after now). Pass it only where `isSupported`, with its
/// `unsupportedReason` as `longRangeUnavailable` otherwise.
extension InfluxHistory: LongRangeSource {}

/// The live view's pages, independent of the HTTP server that sends them (the CLI mounts
/// `respond` on the /metrics server's router, never on the probe loop).
///
/// Routes (GET):
/// - `/`: the overview, every series by group (`?page=N` past the first `pageSize`).
/// - `/target?id=ID&range=R`: a host's smoke graph; ID is a series' opaque id
///   (`SeriesID`), R one of 1h (the default), 6h, 1d, 7d, 30d.
/// - `/graph.svg?id=ID&range=R`: the same graph alone, as SVG.
/// Anything else is 404. Every page is self-contained (inline CSS and SVG, no script, no
/// external resource) under a Content-Security-Policy that forbids loading anything.
public final class WebView: Sendable {
    /// The ranges a target page offers, by their query value.
    public static let ranges: [(name: String, nanoseconds: Int64)] = [
        ("1h", 3_600_000_000_000), ("6h", 21_600_000_000_000), ("1d", 86_400_000_000_000),
        ("7d", 604_800_000_000_000), ("30d", 2_592_000_000_000_000),
    ]
    /// Pixel columns (buckets asked of the long-range source) of a graph beyond the hour.
    public static let longRangeColumns = 720
    /// Every page's headers: nothing may be loaded from anywhere (the icon is an empty
    /// data: URL so the browser does not ask for /favicon.ico), inline styles only.
    public static let securityHeaders: [(name: String, value: String)] = [
        ("Content-Security-Policy",
         "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    ]

    let history: RecentHistory
    let longRange: (any LongRangeSource)?
    let longRangeUnavailable: String
    let pageSize: Int
    let now: @Sendable () -> Int64

    /// - Parameters:
    ///   - history: the last hour, in memory.
    ///   - longRange: where ranges beyond the hour come from; nil when the first server is
    ///     not InfluxDB 1.x (or there is none): those pages then say only the last hour is
    ///     available.
    ///   - longRangeUnavailable: the sentence that says why, for this server kind.
    ///   - pageSize: series per overview page.
    ///   - now: the wall clock, nanoseconds since 1970 (a test's fixed instant).
    public init(history: RecentHistory, longRange: (any LongRangeSource)?,
                longRangeUnavailable: String = "Only the last hour is available for this server kind: longer ranges are read from an InfluxDB 1.x server (the first one configured).",
                pageSize: Int = 500, now: @escaping @Sendable () -> Int64 = { Clock.realtimeNanoseconds() }) {
        self.history = history
        self.longRange = longRange
        self.longRangeUnavailable = longRangeUnavailable
        self.pageSize = max(1, pageSize)
        self.now = now
    }

    /// The answer to a GET.
    /// - Parameters:
    ///   - path: the request's path, without the query.
    ///   - query: the text after "?", if any.
    /// - Returns: 200 with the page, 400 for a bad range, 404 for an unknown path or series.
    public func respond(path: String, query: String?) async -> WebResponse {
        let parameters = Self.parameters(query)
        switch path {
        case "/", "":
            let page = parameters["page"].flatMap { Int($0) } ?? 1
            return html(200, WebPages.overview(history: history, page: page, pageSize: pageSize, now: now()))
        case "/target", "/graph.svg":
            guard let id = parameters["id"], SeriesID.isWellFormed(id[...]), let key = history.key(forID: id) else {
                return html(404, WebPages.message(title: "No such series", text: "No series of this view has that id; the overview lists them."))
            }
            let rangeName = parameters["range"] ?? "1h"
            guard let range = Self.ranges.first(where: { $0.name == rangeName }) else {
                return html(400, WebPages.message(title: "Unknown range",
                                                  text: "The range must be one of " + Self.ranges.map(\.name).joined(separator: ", ") + "."))
            }
            let graph = await WebPages.graph(of: key, range: range, history: history, longRange: longRange, now: now())
            if path == "/graph.svg" {
                return WebResponse(status: 200, contentType: "image/svg+xml; charset=utf-8", body: graph.svg, headers: Self.securityHeaders)
            }
            return html(200, WebPages.target(key: key, range: range.name, graph: graph, history: history, longRangeUnavailable: longRangeUnavailable))
        default:
            return html(404, WebPages.message(title: "Not found", text: "This view has the overview (/) and target pages (/target)."))
        }
    }

    private func html(_ status: Int, _ body: String) -> WebResponse {
        WebResponse(status: status, contentType: "text/html; charset=utf-8", body: body, headers: Self.securityHeaders)
    }

    /// The query's name=value pairs (the first of a repeated name). Values are not
    /// percent-decoded: the view's own values (ids, ranges, page numbers) never need it,
    /// and anything else is refused by the routes.
    static func parameters(_ query: String?) -> [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            if result[name] == nil { result[name] = parts.count > 1 ? String(parts[1]) : "" }
        }
        return result
    }
}
