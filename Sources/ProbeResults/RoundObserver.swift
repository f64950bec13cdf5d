/// Where rounds go when the configuration names no InfluxDB server: the command line's
/// quick look, or a test's collector.
public protocol RoundOutput: Sendable {
    /// One whole round, with its env and the point a sink would get for it.
    func write(_ round: RoundResult, env: String, point: DataPoint)
}

/// Something beside the sinks that wants every whole round of `run` as it is written
/// (the Prometheus exporter). Called on the writer's task, once per round, whether an
/// InfluxDB sink is configured or not: keep it short and never block (take a lock, update
/// counters, return).
public protocol RoundObserver: Sendable {
    /// One whole round, with its env (the targets file's group) and the run's probe name.
    func observe(_ round: RoundResult, env: String, probe: String)
    /// A round cut short by a stop (not a measurement: counted only).
    func observeAbandoned(_ target: ProbeTarget)
    /// Called once when the run starts, with where the self-monitoring counters that the
    /// writer does not see round by round can be read at any time (thread-safe).
    func attach(_ source: SelfMonitoringSource)
    /// One whole trace of `run`'s `trace:` section (every target's, each time it is traced),
    /// with its env: what the live view shows as the path.
    func observeTrace(_ trace: PathTrace, env: String, probe: String)
}

extension RoundObserver {
    public func observeTrace(_ trace: PathTrace, env: String, probe: String) {}
    public func observeAbandoned(_ target: ProbeTarget) {}
    public func attach(_ source: SelfMonitoringSource) {}
}

/// Where an observer reads what the writer's sink and the service count.
public struct SelfMonitoringSource: Sendable {
    /// Per InfluxDB server: produced, written, spooled, dropped... (empty without a sink).
    public let servers: @Sendable () -> [ServerStatistics]
    /// Warnings the log's rate limit held back, over the run.
    public let suppressedLogLines: @Sendable () -> Int
    /// Name lookups that failed, over the run.
    public let resolveFailures: @Sendable () -> Int

    public init(servers: @escaping @Sendable () -> [ServerStatistics], suppressedLogLines: @escaping @Sendable () -> Int,
                resolveFailures: @escaping @Sendable () -> Int) {
        self.servers = servers
        self.suppressedLogLines = suppressedLogLines
        self.resolveFailures = resolveFailures
    }
}

