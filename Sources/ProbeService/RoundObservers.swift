import ProbeEngine
import ProbeResults

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

    /// Hands a whole trace to every observer.
    func observeTrace(_ trace: PathTrace, env: String) {
        for observer in observers { observer.observeTrace(trace, env: env, probe: probe) }
    }

    /// Tells every observer where the writer's sink counters are.
    func attach(_ writer: RoundWriter) {
        let source = SelfMonitoringSource(servers: { writer.sink?.statistics() ?? [] },
                                          suppressedLogLines: { writer.logLimiter?.suppressedTotal ?? 0 },
                                          resolveFailures: { writer.resolveFailures.withLock { $0 } })
        for observer in observers { observer.attach(source) }
    }
}
