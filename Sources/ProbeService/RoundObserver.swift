import InfluxSink
import ProbeEngine
import ProbeResults

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
}

extension RoundObserver {
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

/// The observers of a run, as the writer calls them: one line at its call site.
struct RoundObservers: Sendable {
    let observers: [any RoundObserver]
    let probe: String

    /// Hands a prober event to every observer (rounds and abandoned rounds; attempts are
    /// not observed).
    func observe(_ event: ProbeEvent, envs: EnvTable) {
        guard !observers.isEmpty else { return }
        switch event {
        case .round(let round):
            let env = envs.env(at: round.targetIndex)
            for observer in observers { observer.observe(round, env: env, probe: probe) }
        case .abandoned(_, let target):
            for observer in observers { observer.observeAbandoned(target) }
        case .attempt:
            break
        }
    }

    /// Tells every observer where the writer's sink counters are.
    func attach(_ writer: RoundWriter) {
        let source = SelfMonitoringSource(servers: { writer.sink?.statistics() ?? [] },
                                          suppressedLogLines: { writer.logLimiter?.suppressedTotal ?? 0 },
                                          resolveFailures: { writer.resolveFailures.withLock { $0 } })
        for observer in observers { observer.attach(source) }
    }
}
