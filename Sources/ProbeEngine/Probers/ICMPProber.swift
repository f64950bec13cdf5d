import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

extension ICMPProbeConfiguration {
    /// About how many probes the tracker holds at once: those sent over one timeout and
    /// retention, at the rate the targets, spacing, rounds and rate limit allow, plus a
    /// quarter; a single round holds at most all of its probes.
    func recordsKept(targets: Int, retention: Int64) -> Int {
        let window = Double(timeoutNanoseconds + retention) / 1e9
        var perTarget = 1e9 / Double(max(1, intervalNanoseconds))
        if let roundInterval = roundIntervalNanoseconds, count > 0 {
            perTarget = min(perTarget, Double(count) * 1e9 / Double(max(1, roundInterval)))
        }
        var kept = min(Double(targets) * perTarget, packetsPerSecond) * window * 1.25
        if roundIntervalNanoseconds == nil, count > 0 { kept = min(kept, Double(targets * count)) }
        return kept.isFinite ? Int(min(kept, 1_048_576).rounded(.up)) : 0
    }
}

/// How an ICMP prober sends.
public struct ICMPProbeConfiguration: Sendable {
    /// Echo requests per target; 0 keeps probing until `stop()`.
    public var count: Int
    /// Time between two requests to the same target, in nanoseconds.
    public var intervalNanoseconds: Int64
    /// How long to wait for a reply before the probe is lost, in nanoseconds.
    public var timeoutNanoseconds: Int64
    /// ICMP payload bytes (ping's -s), at least `ICMPEcho.minimumPayloadLength`.
    public var payloadLength: Int
    /// IP TTL / IPv6 hop limit of requests; nil keeps the system default.
    public var ttl: Int?
    /// Upper bound on requests per second over all targets.
    public var packetsPerSecond: Double
    /// Repeat each target's round of `count` probes every this many nanoseconds until
    /// `stop()` (`netprobe run`); nil for a single round.
    public var roundIntervalNanoseconds: Int64? = nil
    /// How long a round with lost probes waits for their replies to come late (they are
    /// then counted as `late`, not missed); nil: one more timeout. 0 ends the round at its
    /// last deadline: on-demand probes (`/probe`) whose answer is due by then.
    public var lateWindowNanoseconds: Int64? = nil

    public init(count: Int = 5, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000,
                payloadLength: Int = 56, ttl: Int? = nil, packetsPerSecond: Double = 1000) {
        self.count = count
        self.intervalNanoseconds = intervalNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.payloadLength = payloadLength
        self.ttl = ttl
        self.packetsPerSecond = packetsPerSecond
    }
}

/// Counters of what the prober saw but did not count as replies.
public struct ICMPProberDiagnostics: Sendable {
    /// Packets that did not decode (truncated, bad checksum, other types), by reason.
    public var rejectedPackets: [String: Int] = [:]
    /// Well-formed replies that were not ours or did not match a probe, by reason.
    public var ignoredReplies: [String: Int] = [:]
    /// Replies whose RTT was taken from kernel stamps at both ends, and the others.
    public var kernelSamples = 0
    public var userSamples = 0
}

/// The ICMP echo prober: one socket per address family shared by every target, sends
/// spread evenly, kernel timestamps, strict reply matching. It runs as a task of a
/// `ProbeLoop`, the one event-loop thread that owns every probe socket.
///
/// Use: open the sockets with `ICMPSocketSet.open` (the only step that needs CAP_NET_RAW,
/// so privileges can be dropped right after), create the prober, call `probe(_:)` once for
/// the stream of events, and `stop()` to end early.
public final class ICMPProber: @unchecked Sendable {
    public let configuration: ICMPProbeConfiguration
    let logger: Logger
    let sockets: [AddressFamily: ICMPSocket]
    /// The sockets of don't-fragment choices (`ping -M`), when any was opened.
    let fragmentationSockets: [FragmentationSocketKey: ICMPSocket]
    /// Every socket, main ones first.
    let allSockets: [ICMPSocket]
    let loop: ProbeLoop
    let cookie: UInt64
    private var nextProbeNumber: UInt32

    /// The gate of `probe(_:)`'s run; runs of `probeAlongside` have one each.
    let gate = RunGate()
    /// Reads the sockets for every run of this prober (loop thread).
    let receiver = ICMPReceiver()
    private let shared = Locked(SharedState())

    private struct SharedState {
        var closed = false
        /// `shutDown()` was called: the sockets close when the last run has ended.
        var closingWhenIdle = false
        /// The gates of `probeAlongside` runs on the loop.
        var alongside: [RunGate] = []
        var diagnostics = ICMPProberDiagnostics()
    }

    /// The mode each socket is in (raw with CAP_NET_RAW, else datagram).
    public var socketModes: [AddressFamily: ICMPSocketMode] { sockets.mapValues(\.mode) }

    /// What the prober rejected or ignored so far.
    public var diagnostics: ICMPProberDiagnostics {
        shared.withLock { $0.diagnostics }
    }

    /// Prepares a prober on sockets opened earlier.
    /// - Parameters:
    ///   - sockets: the ICMP sockets; the prober owns them from now on and closes them.
    ///   - configuration: counts, timing, sizes.
    ///   - loop: the event loop to run on (shared with other probers); nil makes one.
    ///   - logger: where the prober reports what it does.
    /// - Throws: `SystemCallError` when a new event loop cannot be created.
    public init(sockets: ICMPSocketSet, configuration: ICMPProbeConfiguration, loop: ProbeLoop? = nil, logger: Logger) throws {
        precondition(configuration.payloadLength >= ICMPEcho.minimumPayloadLength)
        self.configuration = configuration
        self.logger = logger
        let taken = sockets.take()
        let extra = sockets.takeFragmentationSockets()
        do {
            self.loop = try loop ?? ProbeLoop(logger: logger)
        } catch {
            for socket in taken.values { try? socket.close() }
            for socket in extra.values { try? socket.close() }
            throw error
        }
        self.sockets = taken
        self.fragmentationSockets = extra
        allSockets = taken.sorted { $0.key.rawValue < $1.key.rawValue }.map(\.value)
            + extra.sorted { ($0.key.family.rawValue, $0.key.dontFragment ? 1 : 0) < ($1.key.family.rawValue, $1.key.dontFragment ? 1 : 0) }.map(\.value)
        var generator = SystemRandomNumberGenerator()
        cookie = generator.next()
        nextProbeNumber = generator.next()
    }

    /// Closes the sockets. Call after the last stream finished (or never started).
    public func close() {
        precondition(!gate.isRunning && shared.withLock({ $0.alongside.isEmpty }), "close() while probing")
        let wasOpen = shared.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        if wasOpen { closeSockets() }
    }

    /// Stops every run and closes the sockets once the last one has ended (at once when
    /// none runs); later probe calls get nothing. Safe from any thread, with runs in flight.
    public func shutDown() {
        let (running, closeNow) = shared.withLock { state in
            state.closingWhenIdle = true
            let idle = !state.closed && state.alongside.isEmpty && !gate.isRunning
            if idle { state.closed = true }
            return (state.alongside, idle)
        }
        gate.requestStop()
        for run in running { run.requestStop() }
        loop.wake()
        if closeNow { closeSockets() }
    }

    private func closeSockets() {
        for socket in allSockets { try? socket.close() }
    }

    /// The socket a probe of `family` with `fragmentation` leaves by; nil when none was
    /// opened for it.
    func socket(for family: AddressFamily, fragmentation: Fragmentation?) -> ICMPSocket? {
        guard let fragmentation else { return sockets[family] }
        return fragmentationSockets[FragmentationSocketKey(family: family, fragmentation)]
    }

    /// A run has left the loop: the last one closes the sockets after `shutDown()`.
    func runEnded(_ runGate: RunGate) {
        let closeNow = shared.withLock { state in
            state.alongside.removeAll { $0 === runGate }
            guard state.closingWhenIdle, !state.closed, state.alongside.isEmpty, !gate.isRunning else { return false }
            state.closed = true
            return true
        }
        if closeNow { closeSockets() }
    }

    deinit {
        if !shared.withLock({ $0.closed }) { for socket in allSockets { try? socket.close() } }
    }

    /// Starts probing `targets` on the loop thread. Call again for new targets once the
    /// previous stream has finished; the sockets stay open in between.
    /// - Returns: replies as they arrive and one round result per target; the stream
    ///   finishes when every target's round is complete (or after `stop()`).
    /// - Parameters:
    ///   - targets: what to probe.
    ///   - configuration: settings for this run only (e.g. after a reload); nil keeps the
    ///     prober's own. Socket options (TTL) stay as the sockets were opened.
    ///   - reportingAttempts: false leaves out the per-attempt events (cheaper when only
    ///     the rounds are wanted).
    public func probe(_ targets: [ProbeTarget], configuration override: ICMPProbeConfiguration? = nil, reportingAttempts: Bool = true) -> AsyncStream<ProbeEvent> {
        precondition(!shared.withLock { $0.closed }, "probe() after close()")
        let (stream, continuation) = gate.begin("an ICMPProber", targetCount: targets.count) { [weak self] in self?.stop() }
        loop.add(ICMPRun(prober: self, gate: gate, configuration: override ?? configuration, targets: targets, reportingAttempts: reportingAttempts, continuation: continuation))
        return stream
    }

    /// How many `probeAlongside` calls are probing now.
    public var runningAlongside: Int { shared.withLock { $0.alongside.count } }

    /// Probes one target once, beside any other call of this method and beside
    /// `probe(_:)`: the runs share the sockets, and each reply goes to the run that sent
    /// its request. For on-demand probes (`/probe`), where a silent target must not hold up
    /// the requests that come after it. Cancelling the calling task stops sending; the
    /// probes in flight still get their timeout.
    /// - Returns: the target's round; nil once the prober is shut down or closed.
    public func probeAlongside(_ target: ProbeTarget, configuration: ICMPProbeConfiguration) async -> RoundResult? {
        let runGate = RunGate()
        let accepted = shared.withLock { state in
            guard !state.closed && !state.closingWhenIdle else { return false }
            state.alongside.append(runGate)
            return true
        }
        guard accepted else { return nil }
        let (stream, continuation) = runGate.begin("an ICMP run", targetCount: 1) { [weak runGate, weak self] in
            runGate?.requestStop()
            self?.loop.wake()
        }
        loop.add(ICMPRun(prober: self, gate: runGate, configuration: configuration, targets: [target], reportingAttempts: false, continuation: continuation))
        var round: RoundResult?
        for await event in stream {
            if case .round(let result) = event { round = result }
        }
        return round
    }

    /// Changes the targets of the running repeating probe (`netprobe run`) without
    /// touching the schedule of any other target. Safe from any thread.
    /// - Returns: the target indices of `update.added`, as their results will carry them;
    ///   nil when no probe is running (or it is stopping): the update was dropped.
    @discardableResult
    public func update(_ update: TargetUpdate) -> Range<Int>? {
        defer { loop.wake() }
        return gate.submit(update)
    }

    /// Stops sending. Probes in flight still get their timeout to answer, then every
    /// unfinished round is reported and the stream finishes. Safe from any thread.
    public func stop() {
        gate.requestStop()
        loop.wake()
    }

    /// Adds what a run saw to the prober's counts.
    func publish(_ diagnostics: ICMPProberDiagnostics) {
        shared.withLock { state in
            state.diagnostics.rejectedPackets.merge(diagnostics.rejectedPackets, uniquingKeysWith: +)
            state.diagnostics.ignoredReplies.merge(diagnostics.ignoredReplies, uniquingKeysWith: +)
            state.diagnostics.kernelSamples += diagnostics.kernelSamples
            state.diagnostics.userSamples += diagnostics.userSamples
        }
    }

    /// The next probe number, for every run of the prober (loop thread).
    func takeProbeNumber() -> UInt32 {
        let number = nextProbeNumber
        nextProbeNumber &+= 1
        return number
    }

    /// The number the last request carried (loop thread).
    var lastProbeNumber: UInt32 { nextProbeNumber &- 1 }
}
