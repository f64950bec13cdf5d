/// An answer of a page route, independent of the server that sends it: the live view
/// (WebView) writes them, the exporter's HTTP server (PrometheusExporter.Pages) sends them,
/// and neither module knows the other (the CLI mounts one on the other).
public struct WebResponse: Sendable {
    /// HTTP status code.
    public var status: Int
    /// Content-Type header, e.g. "text/html; charset=utf-8" or "image/svg+xml".
    public var contentType: String
    /// The body, UTF-8.
    public var body: String
    /// Extra headers (Cache-Control...).
    public var headers: [(name: String, value: String)]

    public init(status: Int, contentType: String, body: String, headers: [(name: String, value: String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}
