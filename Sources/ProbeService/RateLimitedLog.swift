import Logging
import ProbeResults
import Synchronization

/// Decides, per cause, whether a repeated warning is written: the first occurrence at
/// once, then at most one line per `interval`, which says how many occurrences were held
/// back since the last line written (the line itself carries the latest detail).
///
/// A value type with an explicit clock argument, so that its rules can be tested without
/// waiting.
public struct LogRateLimiter: Sendable {
    /// What to do with one occurrence.
    public enum Verdict: Equatable, Sendable {
        /// Write it; `suppressedBefore` occurrences of the cause were held back since the
        /// previous line of that cause (0 for the first).
        case write(suppressedBefore: Int)
        /// Hold it back (it is counted).
        case suppress
    }

    private struct CauseState {
        var lastWrittenNanoseconds: Int64
        var suppressed: Int
    }

    /// The shortest time between two lines of one cause.
    public let intervalNanoseconds: Int64
    /// At most this many causes are remembered; beyond it the least recently written is
    /// forgotten (its next occurrence is written at once), so memory stays bounded.
    public let maximumCauses: Int
    private var causes: [String: CauseState] = [:]
    /// Occurrences held back since the start, over all causes.
    public private(set) var suppressedTotal = 0

    public init(intervalNanoseconds: Int64 = 60_000_000_000, maximumCauses: Int = 1024) {
        self.intervalNanoseconds = intervalNanoseconds
        self.maximumCauses = max(1, maximumCauses)
    }

    /// The verdict for one occurrence of `cause` at `nowNanoseconds` (a monotonic clock).
    public mutating func occurrence(of cause: String, nowNanoseconds: Int64) -> Verdict {
        if var state = causes[cause] {
            if nowNanoseconds - state.lastWrittenNanoseconds < intervalNanoseconds {
                state.suppressed += 1
                causes[cause] = state
                suppressedTotal += 1
                return .suppress
            }
            causes[cause] = CauseState(lastWrittenNanoseconds: nowNanoseconds, suppressed: 0)
            return .write(suppressedBefore: state.suppressed)
        }
        if causes.count >= maximumCauses,
           let oldest = causes.min(by: { $0.value.lastWrittenNanoseconds < $1.value.lastWrittenNanoseconds })?.key {
            causes.removeValue(forKey: oldest)
        }
        causes[cause] = CauseState(lastWrittenNanoseconds: nowNanoseconds, suppressed: 0)
        return .write(suppressedBefore: 0)
    }
}

/// A LogHandler for daemons: warnings and errors pass through `LogRateLimiter`, one cause
/// per call site (file and line) and per value of the `causeMetadataKeys` (e.g. the
/// InfluxDB server), so a fault that repeats every round writes one line a minute, not
/// one per occurrence. A line written after others were held back ends in "(N more since
/// the last such line)" and carries its own, latest, detail. Levels below warning pass
/// unchanged.
public struct RateLimitedLogHandler: LogHandler {
    /// The limiter state shared by every copy of the handler (a Logger copies its handler
    /// whenever metadata is set).
    public final class Shared: Sendable {
        let limiter: Mutex<LogRateLimiter>
        let now: @Sendable () -> Int64

        /// - Parameters:
        ///   - intervalNanoseconds: the shortest time between two lines of one cause.
        ///   - now: a monotonic clock in nanoseconds; tests pass their own.
        public init(intervalNanoseconds: Int64 = 60_000_000_000, now: @escaping @Sendable () -> Int64 = { Clock.monotonicNanoseconds() }) {
            limiter = Mutex(LogRateLimiter(intervalNanoseconds: intervalNanoseconds))
            self.now = now
        }

        /// Warnings and errors held back since the start (the exact numbers of each fault
        /// are in the self-monitoring counters).
        public var suppressedTotal: Int { limiter.withLock { $0.suppressedTotal } }
    }

    private var wrapped: any LogHandler
    private let shared: Shared
    private let causeMetadataKeys: [String]

    /// - Parameters:
    ///   - wrapped: where the lines that pass go.
    ///   - shared: the limiter state; share one between every logger of the process.
    ///   - causeMetadataKeys: metadata whose values tell causes of one call site apart.
    public init(wrapping wrapped: any LogHandler, shared: Shared, causeMetadataKeys: [String] = ["influxServer"]) {
        self.wrapped = wrapped
        self.shared = shared
        self.causeMetadataKeys = causeMetadataKeys
    }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        guard event.level >= .warning else {
            wrapped.log(event: event)
            return
        }
        var cause = "\(event.file):\(event.line)"
        for key in causeMetadataKeys {
            if let value = event.metadata?[key] ?? wrapped[metadataKey: key] { cause += " \(key)=\(value)" }
        }
        let now = shared.now()
        let verdict = shared.limiter.withLock { $0.occurrence(of: cause, nowNanoseconds: now) }
        guard case .write(let suppressed) = verdict else { return }
        var event = event
        if suppressed > 0 {
            event.message = "\(event.message) (\(suppressed) more since the last such line)"
        }
        wrapped.log(event: event)
    }
}
