import Logging
import ProbeResults

/// A prober of rounds (ICMP echo, TCP handshake): what `run`'s supervisor and the commands
/// drive, whatever the kind.
public protocol RoundProber: AnyObject, Sendable {
    /// The kind's settings (count, spacing, timeout, rate...).
    associatedtype Configuration: Sendable

    /// Starts probing `targets` on the loop thread.
    /// - Parameters:
    ///   - configuration: settings for this run only (e.g. after a reload); nil keeps the
    ///     prober's own.
    ///   - reportingAttempts: false leaves out the per-attempt events.
    /// - Returns: attempts as they complete and one round per target; it finishes when
    ///   every round is complete (or after `stop()`).
    func probe(_ targets: [ProbeTarget], configuration: Configuration?, reportingAttempts: Bool) -> AsyncStream<ProbeEvent>
    /// Changes the targets of a running repeating probe without touching any other
    /// target's schedule. - Returns: the added targets' indices; nil when none runs.
    @discardableResult
    func update(_ update: TargetUpdate) -> Range<Int>?
    /// Stops sending; the probes in flight get their timeout, then the stream finishes.
    func stop()
}

extension ICMPProber: RoundProber {}
extension TCPProber: RoundProber {}

/// The sockets a process opened with privileges (before capabilities were dropped), for
/// the probers that need them. Any may be absent: ICMP not allowed, no traces wanted.
public struct ProbeSockets: Sendable {
    /// Echo sockets of ICMP probes.
    public var icmp: ICMPSocketSet?
    /// Raw ICMP sockets of traces (path probes need their own: TTLs and a wider filter).
    public var path: ICMPSocketSet?
    /// Raw TCP sockets of TCP traces.
    public var pathTCP: PathTCPSockets?

    public init(icmp: ICMPSocketSet? = nil, path: ICMPSocketSet? = nil, pathTCP: PathTCPSockets? = nil) {
        self.icmp = icmp
        self.path = path
        self.pathTCP = pathTCP
    }
}

/// The one place probers are built: over a process's sockets, on one probe loop. The
/// commands, `run`'s supervisor and `/probe` (OnDemandEngine) each make one.
public final class Probers: Sendable {
    /// The loop every prober made here runs on.
    public let loop: ProbeLoop
    public let sockets: ProbeSockets
    let logger: Logger

    /// - Parameters:
    ///   - timerSlackNanoseconds: how late the loop's timed waits may end
    ///     (`ProbeLoop.batchingTimerSlack`); nil: the kernel's default.
    /// - Throws: when the loop cannot start.
    public init(sockets: ProbeSockets, timerSlackNanoseconds: Int? = nil, logger: Logger) throws {
        self.sockets = sockets
        self.logger = logger
        loop = try ProbeLoop(logger: logger, timerSlackNanoseconds: timerSlackNanoseconds)
    }

    /// An ICMP prober on the echo sockets; nil when there are none.
    public func icmp(_ configuration: ICMPProbeConfiguration) throws -> ICMPProber? {
        try sockets.icmp.map { try ICMPProber(sockets: $0, configuration: configuration, loop: loop, logger: logger) }
    }

    /// A TCP prober (it opens a socket per handshake: no privilege).
    public func tcp(_ configuration: TCPProbeConfiguration) throws -> TCPProber {
        try TCPProber(configuration: configuration, loop: loop, logger: logger)
    }

    /// A path prober on the trace sockets; nil when there are none.
    public func path(_ configuration: PathProbeConfiguration) throws -> PathProber? {
        try sockets.path.map { try PathProber(sockets: $0, tcpSockets: sockets.pathTCP, configuration: configuration, loop: loop, logger: logger) }
    }
}
