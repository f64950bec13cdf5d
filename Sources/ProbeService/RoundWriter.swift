import Foundation
import Logging
import ProbeResults

/// Turns rounds into points for the sink (or the output), and writes the self-monitoring
/// points.
final class RoundWriter: Sendable {
    let probe: String
    let output: (any RoundOutput)?
    let logLimiter: RateLimitedLogHandler.Shared?
    let resolveFailures: Locked<Int>
    let logger: Logger
    let observers: RoundObservers
    private let state: Locked<(monitor: SelfMonitor, stopped: Bool, sink: (any PointSink)?)>
    private let wakeMonitor: AsyncStream<Void>.Continuation
    private let monitorWakes: AsyncStream<Void>

    init(probe: String, sink: (any PointSink)?, output: (any RoundOutput)?, logLimiter: RateLimitedLogHandler.Shared?, resolveFailures: Locked<Int>, logger: Logger,
         observers: RoundObservers = RoundObservers(observers: [], probe: "")) {
        self.observers = observers
        self.probe = probe
        self.output = output
        self.logLimiter = logLimiter
        self.resolveFailures = resolveFailures
        self.logger = logger
        state = Locked((SelfMonitor(), false, sink))
        (monitorWakes, wakeMonitor) = AsyncStream<Void>.makeStream()
    }

    var sink: (any PointSink)? { state.withLock { $0.sink } }

    func consume(_ events: AsyncStream<ProbeEvent>, envs: EnvTable) async {
        // One writer per stream and sink: it keeps per-target state (series keys).
        var current: (sink: any PointSink, writer: any RoundPointWriter)?
        for await event in events {
            observers.observe(event, envs: envs)
            switch event {
            case .round(let round):
                state.withLock { $0.monitor.count(round) }
                let env = envs.env(at: round.targetIndex)
                if let sink {
                    if current == nil || current?.sink !== sink { current = (sink, sink.roundWriter(probe: probe)) }
                    do {
                        try current?.writer.write(round, env: env)
                    } catch {
                        logger.error("cannot spool a round", metadata: ["error": "\(error)"])
                    }
                } else {
                    output?.write(round, env: env, point: Schema.point(for: round, env: env, probe: probe))
                }
            case .abandoned:
                state.withLock { $0.monitor.countAbandoned() }
            case .attempt:
                continue
            }
        }
    }

    /// Writes a `netprobe` self-monitoring point every `interval` until stopped.
    func monitor(every interval: Int64) async {
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval))
                wakeMonitor.yield()
            }
        }
        defer { ticker.cancel() }
        for await _ in monitorWakes {
            let (monitor, stopped) = state.withLock { state in
                defer { state.monitor = SelfMonitor() }
                return (state.monitor, state.stopped)
            }
            if stopped { break }
            write(monitor)
        }
    }

    private func write(_ monitor: SelfMonitor) {
        guard let sink else { return }
        do {
            try sink.write(monitor.points(probe: probe, servers: sink.statistics(), suppressedLogLines: logLimiter?.suppressedTotal ?? 0,
                                          resolveFailures: resolveFailures.withLock { $0 }, now: Date()))
        } catch {
            logger.error("cannot spool the self-monitoring point", metadata: ["error": "\(error)"])
        }
    }

    func stopMonitoring() {
        state.withLock { $0.stopped = true }
        wakeMonitor.finish()
    }

    /// The last self-monitoring point.
    func flushMonitor() async {
        let monitor = state.withLock { $0.monitor }
        if monitor.rounds > 0 || monitor.roundsAbandoned > 0 { write(monitor) }
    }

    /// A reload changed the servers: the old sink delivers or spools what it has, the new
    /// one takes every point from now on.
    func replaceSink(with sink: (any PointSink)?) async {
        let old = state.withLock { state in
            defer { state.sink = sink }
            return state.sink
        }
        await old?.shutdown(deadlineSeconds: 2)
    }

    func shutdown(deadlineSeconds: Double) async {
        await sink?.shutdown(deadlineSeconds: deadlineSeconds)
    }
}
