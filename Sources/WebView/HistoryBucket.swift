import ProbeResults

/// One column of a graph: the rounds of one target that started in
/// [startNanoseconds, startNanoseconds + durationNanoseconds), summed. Both history sources
/// (memory for the last hour, InfluxDB for longer ranges) answer in these, so the pages
/// draw them the same way.
public struct HistoryBucket: Sendable, Equatable {
    /// Start of the bucket, nanoseconds since 1970 (UTC).
    public var startNanoseconds: Int64
    /// Width of the bucket.
    public var durationNanoseconds: Int64
    /// Rounds that started in the bucket (0: nothing was measured, a gap in the graph).
    public var rounds: Int
    /// Probes sent and replies received, over the bucket's rounds.
    public var sent: Int
    public var received: Int
    /// The smallest round minimum, the median of the rounds' medians and the largest round
    /// maximum, in milliseconds; nil where nothing was received.
    public var minimumMilliseconds: Double?
    public var medianMilliseconds: Double?
    public var maximumMilliseconds: Double?
    /// The outcomes of the bucket's rounds, for the outcome band; empty where the source
    /// does not keep them per bucket.
    public var outcomes: Set<ProbeOutcome> = []

    public init(startNanoseconds: Int64, durationNanoseconds: Int64, rounds: Int, sent: Int, received: Int,
                minimumMilliseconds: Double?, medianMilliseconds: Double?, maximumMilliseconds: Double?) {
        self.startNanoseconds = startNanoseconds
        self.durationNanoseconds = durationNanoseconds
        self.rounds = rounds
        self.sent = sent
        self.received = received
        self.minimumMilliseconds = minimumMilliseconds
        self.medianMilliseconds = medianMilliseconds
        self.maximumMilliseconds = maximumMilliseconds
    }

    /// Loss over the bucket in percent (0 where nothing was sent).
    public var lossPercent: Double { sent == 0 ? 0 : Double(max(0, sent - received)) / Double(sent) * 100 }
}

/// Where a graph's buckets came from (the page says so under each graph).
public enum HistorySource: String, Sendable {
    /// This process' memory: the last hour, since `run` started.
    case memory
    /// The first configured InfluxDB 1.x server, by InfluxQL.
    case influxDB = "influxdb"
}

/// One series of the view: what a round point's tags say (Schema.tags), without the
/// address (a target whose name resolves to a new address stays one line of the view).
public struct WebSeriesKey: Hashable, Sendable {
    /// icmp or tcp (the measurement).
    public var kind: ProbeKind
    /// The targets file's group.
    public var env: String
    /// The target as written in the targets file.
    public var target: String
    /// TCP only.
    public var port: UInt16?
    /// The packet options and the user's labels (part of the series, as in InfluxDB).
    public var options: PacketOptions
    public var labels: [String: String]

    public init(kind: ProbeKind, env: String, target: String, port: UInt16?, options: PacketOptions = .none, labels: [String: String] = [:]) {
        self.kind = kind
        self.env = env
        self.target = target
        self.port = port
        self.options = options
        self.labels = labels
    }

    /// The key of a round as `run` writes it.
    public init(round: RoundResult, env: String) {
        self.init(kind: round.kind, env: env, target: round.target.name, port: round.kind == .tcp ? round.target.port : nil,
                  options: round.target.options, labels: round.target.labels)
    }
}

/// An answer of the view's HTTP routes, independent of the server that sends it (the CLI
/// mounts the view on the same server as /metrics).
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
