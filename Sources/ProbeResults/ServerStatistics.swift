/// What happened to the points of one server since the sink started. The point counts
/// add up: produced = written + permanentErrors + dropped + spooled.
public struct ServerStatistics: Sendable, Equatable {
    /// The server's name.
    public var name: String
    /// Points handed to this server's queue (`InfluxSink.write`), unencodable ones included.
    public var produced = 0
    /// Points the server acknowledged.
    public var written = 0
    /// Points not yet acknowledged: on disk (in flight included) or in memory (`buffered`).
    public var spooled = 0
    /// Of `spooled`, the points held in memory because the spool could not write them.
    public var buffered = 0
    /// Points thrown away: the oldest, when the spool was over its size limit or the memory
    /// queue full, points still in memory at exit, and points that could not be encoded.
    public var dropped = 0
    /// Requests repeated after a retryable failure (5xx, 429, network error).
    public var retried = 0
    /// Failed requests of any kind.
    public var sendErrors = 0
    /// Points the server refused for good (4xx other than 429); they are in the dead-letter file.
    public var permanentErrors = 0
    /// Writes to the spool that failed (ENOSPC, EDQUOT, EIO...), retries included.
    public var spoolErrors = 0
    /// The last failure, e.g. "HTTP 503: ..." or "network: ..."; nil until one happens.
    public var lastError: String?

    public init(name: String) {
        self.name = name
    }
}
