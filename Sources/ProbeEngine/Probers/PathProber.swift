import CSystemShims
import DequeModule
import FoundationEssentials
import HeapModule
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// How a path prober (`netprobe trace`) sends.
public struct PathProbeConfiguration: Sendable {
    /// Rounds per target (each round sends one probe per hop and flow); 0 keeps tracing
    /// until `stop()`.
    public var rounds: Int
    /// Time between two rounds of one target, nanoseconds.
    public var intervalNanoseconds: Int64
    /// How long a probe waits for its answer, nanoseconds; later answers are late (lost).
    public var timeoutNanoseconds: Int64
    /// The largest TTL / hop limit probed.
    public var maxHops: Int
    /// The smallest TTL probed (hops before it are not probed nor shown).
    public var firstHop: Int
    /// Flow identifiers per target: 1 shows one path (Paris style); more show equal-cost branches.
    public var flows: Int
    /// ICMP payload bytes, at least `PathPacket.minimumPayloadLength`.
    public var payloadLength: Int
    /// Upper bound on probes per second over all targets.
    public var packetsPerSecond: Double
    /// `trace --mtu`: echo probes leave with don't-fragment set (IP_PMTUDISC_PROBE) at the
    /// largest size the path has let through so far, so each hop's report names the
    /// largest size that passed it and the trace names where the MTU drops. TCP traces
    /// are not affected.
    public var discoversMTU: Bool
    /// With `discoversMTU`: the ICMP payload bytes the probes start with (as `ping -s`;
    /// IPv4 adds 28 bytes of headers, IPv6 48); nil starts at the outgoing interface's MTU
    /// (the kernel names it: a larger probe is refused with EMSGSIZE and that MTU).
    public var mtuStartPayloadLength: Int?

    public init(rounds: Int = 10, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000, maxHops: Int = 30,
                firstHop: Int = 1, flows: Int = 1, payloadLength: Int = 24, packetsPerSecond: Double = 1000,
                discoversMTU: Bool = false, mtuStartPayloadLength: Int? = nil) {
        self.discoversMTU = discoversMTU
        self.mtuStartPayloadLength = mtuStartPayloadLength
        self.rounds = rounds
        self.intervalNanoseconds = intervalNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.maxHops = maxHops
        self.firstHop = firstHop
        self.flows = flows
        self.payloadLength = payloadLength
        self.packetsPerSecond = packetsPerSecond
    }
}

/// Why a path prober cannot run.
public enum PathProberError: Error, CustomStringConvertible, Sendable {
    /// Time-exceeded messages reach only raw ICMP sockets (CAP_NET_RAW).
    case needsRawSocket(AddressFamily)

    public var description: String {
        switch self {
        case .needsRawSocket(let family):
            return "trace needs a raw \(family == .ipv4 ? "ICMP" : "ICMPv6") socket to read the routers' time-exceeded messages: run as root or give netprobe cap_net_raw (sudo setcap cap_net_raw+ep netprobe)"
        }
    }
}

/// The path prober: TTL-limited ICMP echo requests, one flow identifier per trace (the ICMP
/// checksum is kept constant, Paris style), answers matched by the header the routers
/// quote, kernel timestamps as for echo. It runs as a task of a `ProbeLoop`, beside the
/// ICMP and TCP probers, on raw ICMP sockets of its own (opened with
/// `ICMPSocketSet.open` before privileges are dropped).
public final class PathProber: @unchecked Sendable {
    public let configuration: PathProbeConfiguration
    let logger: Logger
    let sockets: [AddressFamily: ICMPSocket]
    /// Raw TCP sockets for targets with a port (TCP SYN traces); empty without.
    let tcpSockets: [AddressFamily: PathTCPSockets.Socket]
    let loop: ProbeLoop
    let cookie: UInt64
    private var nextProbeNumber: UInt32
    /// One trace call at a time, and the stop flag its loop task polls.
    let gate = RunGate()
    private let isClosed = Locked(false)

    /// - Parameters:
    ///   - sockets: raw ICMP sockets; the prober owns them from now on and closes them.
    ///     They read the routers' errors for TCP traces too.
    ///   - tcpSockets: raw TCP sockets for targets with a port (SYN probes); owned from now on.
    ///   - loop: the event loop to run on (shared with other probers); nil makes one.
    /// - Throws: `PathProberError.needsRawSocket` for datagram sockets; `SystemCallError`
    ///   when a new loop cannot be created.
    public init(sockets: ICMPSocketSet, tcpSockets: PathTCPSockets? = nil, configuration: PathProbeConfiguration, loop: ProbeLoop? = nil, logger: Logger) throws {
        precondition(configuration.payloadLength >= PathPacket.minimumPayloadLength)
        precondition(configuration.flows >= 1 && configuration.maxHops >= configuration.firstHop && configuration.firstHop >= 1 && configuration.maxHops <= 255)
        let taken = sockets.take()
        let takenTCP = tcpSockets?.take() ?? [:]
        func closeAll() {
            for socket in taken.values { try? socket.close() }
            for socket in takenTCP.values { socket.close() }
        }
        if let datagram = taken.values.first(where: { $0.mode != .raw }) {
            closeAll()
            throw PathProberError.needsRawSocket(datagram.family)
        }
        if configuration.discoversMTU {
            // The path sockets read their own answers (time exceeded, too big), so no
            // reject-all filter: only DF, the cache ignored, and EMSGSIZE on the error queue.
            do {
                for socket in taken.values {
                    try ICMPSocket.setFragmentation(.probe, on: socket.descriptor.rawValue, family: socket.family, onlySends: false)
                }
            } catch {
                closeAll()
                throw error
            }
        }
        do {
            self.loop = try loop ?? ProbeLoop(logger: logger)
        } catch {
            closeAll()
            throw error
        }
        self.sockets = taken
        self.tcpSockets = takenTCP
        // Let the kernel drop what no trace can use (every other ICMP packet and TCP
        // segment of the host); without the filter tracing still works, at more wake-ups.
        for socket in taken.values {
            do { try SocketFilter.attach(SocketFilter.icmp(family: socket.family, identifier: socket.identifier), to: socket.descriptor.rawValue) } catch {
                logger.warning("cannot filter the trace's ICMP socket in the kernel; it reads every ICMP packet of the host", metadata: ["error": "\(error)"])
            }
        }
        for socket in takenTCP.values {
            do { try SocketFilter.attach(SocketFilter.tcp(family: socket.family, ports: socket.ports), to: socket.descriptor.rawValue) } catch {
                logger.warning("cannot filter the trace's TCP socket in the kernel; it reads every TCP segment of the host", metadata: ["error": "\(error)"])
            }
        }
        self.configuration = configuration
        self.logger = logger
        var generator = SystemRandomNumberGenerator()
        cookie = generator.next()
        nextProbeNumber = generator.next()
    }

    deinit {
        if !isClosed.withLock({ $0 }) {
            for socket in sockets.values { try? socket.close() }
            for socket in tcpSockets.values { socket.close() }
        }
    }

    /// Closes the sockets, after the last stream finished.
    public func close() {
        precondition(!gate.isRunning, "close() while tracing")
        let wasOpen = isClosed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        if wasOpen {
            for socket in sockets.values { try? socket.close() }
            for socket in tcpSockets.values { socket.close() }
        }
    }

    /// Traces `targets` (their addresses; targets without one are reported unreached at once):
    /// with ICMP echo requests, or with TCP SYNs to the target's port when it has one.
    /// - Returns: one `PathTrace` per target once its rounds are done (or after `stop()`);
    ///   the stream then finishes.
    public func trace(_ targets: [ProbeTarget]) -> AsyncStream<PathTrace> {
        precondition(!isClosed.withLock { $0 }, "trace() after close()")
        let (stream, continuation) = gate.begin("a PathProber", targetCount: targets.count, events: PathTrace.self) { [weak self] in self?.stop() }
        loop.add(PathRun(prober: self, targets: targets, continuation: continuation))
        return stream
    }

    /// Stops starting rounds: probes in flight get their timeout, then every trace is
    /// reported with what it has. Safe from any thread.
    public func stop() {
        gate.requestStop()
        loop.wake()
    }

    func takeProbeNumber() -> UInt32 {
        let number = nextProbeNumber
        nextProbeNumber &+= 1
        return number
    }
}
