import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// The envs of a run's targets by engine index, read by its consumer while the control
/// loop appends the added ones (before the engine is told about them).
final class EnvTable: Sendable {
    private let envs: Locked<[String]>

    init(_ envs: [String]) { self.envs = Locked(envs) }

    func append(_ added: [String]) { envs.withLock { $0 += added } }

    func env(at index: Int) -> String { envs.withLock { index < $0.count ? $0[index] : "" } }
}

/// One prober's current run: its plan (control loop only), the envs its consumer reads,
/// and the consumer.
struct KindRun {
    var plan: ProbePlan
    let envs: EnvTable
    let consumer: Task<Void, Never>
    /// The section and the rate the run was started with.
    let settings: ProbeSettings
    let rate: Double

    static func start(icmp prober: ICMPProber, plan: ProbePlan, settings: ProbeSettings, writer: RoundWriter) -> KindRun {
        let engine = EngineSettings.icmp(settings, targetCount: plan.activeCount)
        return start(prober, configuration: engine, rate: engine.packetsPerSecond, plan: plan, settings: settings, writer: writer)
    }

    static func start(tcp prober: TCPProber, plan: ProbePlan, settings: ProbeSettings, writer: RoundWriter, logger: Logger) -> KindRun {
        let engine = EngineSettings.tcp(settings, targetCount: plan.activeCount, logger: logger)
        return start(prober, configuration: engine, rate: engine.attemptsPerSecond, plan: plan, settings: settings, writer: writer)
    }

    /// Starts `prober` on the plan's targets, its rounds consumed by `writer`.
    static func start<Prober: RoundProber>(_ prober: Prober, configuration: Prober.Configuration, rate: Double, plan: ProbePlan, settings: ProbeSettings,
                                           writer: RoundWriter) -> KindRun {
        let envs = EnvTable(plan.entries.map(\.planned.env))
        let stream = prober.probe(plan.targets, configuration: configuration, reportingAttempts: false)
        return KindRun(plan: plan, envs: envs, consumer: Task { await writer.consume(stream, envs: envs) }, settings: settings, rate: rate)
    }

    /// A changed section (count, spacing, interval, timeout, mode...) needs a new run; so
    /// does a target list grown past what the run's rate was sized for. Anything else is
    /// applied to the running one.
    /// The section's packet defaults are not the run's: they reach the targets, and a
    /// target whose options change is moved alone (`ProbePlan.update`).
    func needsRestart(for settings: ProbeSettings, targetCount: Int) -> Bool {
        var compared = settings
        compared.packetDefaults = self.settings.packetDefaults
        return compared != self.settings || EngineSettings.rate(targets: targetCount, settings: settings) > rate
    }

    /// Hands the prober what changed between the plan and `wanted`; nothing when nothing did.
    mutating func apply(_ wanted: [(planned: PlannedTarget, target: ProbeTarget)], prober: any RoundProber) {
        apply(wanted) { prober.update($0) }
    }

    private mutating func apply(_ wanted: [(planned: PlannedTarget, target: ProbeTarget)], submit: (TargetUpdate) -> Range<Int>?) {
        let before = plan.entries.count
        let update = plan.update(to: plan.keepingKnownAddresses(wanted))
        guard !update.isEmpty else { return }
        envs.append(plan.entries[before...].map(\.planned.env))
        let given = submit(update)
        assert(given == nil || given == before..<plan.entries.count, "the engine gave the added targets other indices than the plan")
    }

    /// Ends the run: rounds in flight finish and are written.
    func stop(_ prober: any RoundProber) async {
        prober.stop()
        await consumer.value
    }
}
