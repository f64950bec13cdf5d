/// Where `run` writes its points. InfluxSink implements it for InfluxDB servers; the
/// service knows only this protocol, and the command line hands it the sink.
public protocol PointSink: AnyObject, Sendable {
    /// A writer for one stream of rounds. It may keep state per target (InfluxSink: each
    /// target's series key, made once), so every consumer of rounds makes its own.
    func roundWriter(probe: String) -> any RoundPointWriter
    /// Points other than rounds: self-monitoring, traces.
    /// - Throws: when the points can be neither sent nor kept (the spool failed).
    func write(_ points: [DataPoint]) throws
    /// What happened to the points, per server.
    func statistics() -> [ServerStatistics]
    /// Delivers or keeps what is queued, returning by the deadline.
    func shutdown(deadlineSeconds: Double) async
}

/// Writes the rounds of one stream to its sink.
public protocol RoundPointWriter {
    /// - Throws: when the round can be neither sent nor kept.
    mutating func write(_ round: RoundResult, env: String) throws
}
