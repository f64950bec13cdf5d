import CSystemShims
import DequeModule
import FoundationEssentials
import HeapModule
import Logging
#if canImport(Glibc)
import Glibc
import ProbeResults
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

    public init(rounds: Int = 10, intervalNanoseconds: Int64 = 1_000_000_000, timeoutNanoseconds: Int64 = 1_000_000_000, maxHops: Int = 30,
                firstHop: Int = 1, flows: Int = 1, payloadLength: Int = 24, packetsPerSecond: Double = 1000) {
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
    private let shared = Locked((running: false, stopRequested: false, closed: false))

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
        if !shared.withLock({ $0.closed }) {
            for socket in sockets.values { try? socket.close() }
            for socket in tcpSockets.values { socket.close() }
        }
    }

    /// Closes the sockets, after the last stream finished.
    public func close() {
        let wasOpen = shared.withLock { state in
            precondition(!state.running, "close() while tracing")
            defer { state.closed = true }
            return !state.closed
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
        shared.withLock { state in
            precondition(!state.running && !state.closed, "a PathProber runs one trace call at a time")
            state.running = true
            state.stopRequested = false
        }
        let (stream, continuation) = AsyncStream<PathTrace>.makeStream(bufferingPolicy: .unbounded)
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.stop() }
        }
        loop.add(PathRun(prober: self, targets: targets, continuation: continuation))
        return stream
    }

    /// Stops starting rounds: probes in flight get their timeout, then every trace is
    /// reported with what it has. Safe from any thread.
    public func stop() {
        shared.withLock { $0.stopRequested = true }
        loop.wake()
    }

    var isStopRequested: Bool { shared.withLock { $0.stopRequested } }

    func ended() { shared.withLock { $0.running = false } }

    func takeProbeNumber() -> UInt32 {
        let number = nextProbeNumber
        nextProbeNumber &+= 1
        return number
    }
}

/// One trace call's state, owned by the loop thread.
final class PathRun: LoopTask, DescriptorOwner {
    /// A probe we sent.
    struct Probe {
        var targetIndex: Int
        var flow: Int
        var ttl: Int
        /// Position in the target's send order, to keep RTTs in send order.
        var order: Int
        var userSentRealtime: Int64
        var kernelSentRealtime: Int64?
        var deadline: Int64
        var answered = false
    }

    /// What one TTL of one flow saw.
    struct Tally {
        var sent = 0
        var received = 0
        var unreachable = 0
        var destinationAnswers = 0
        var rtts: [(order: Int, milliseconds: Double)] = []
        var addresses: [IPAddress: Int] = [:]
    }

    struct Pending {
        var targetIndex: Int
        var flow: Int
        var ttl: Int
    }

    struct RoundStart: Comparable {
        var instant: Int64
        var targetIndex: Int
        static func < (lhs: RoundStart, rhs: RoundStart) -> Bool { (lhs.instant, lhs.targetIndex) < (rhs.instant, rhs.targetIndex) }
    }

    let prober: PathProber
    let configuration: PathProbeConfiguration
    let targets: [ProbeTarget]
    let continuation: AsyncStream<PathTrace>.Continuation
    weak var loop: ProbeLoop?
    let startRealtime = Clock.realtimeNanoseconds()

    /// [target][flow][ttl - 1]
    var tallies: [[[Tally]]]
    /// Per target and flow: the smallest TTL the destination (or an unreachable) answered.
    var endTTL: [[Int?]]
    var roundsStarted: [Int]
    /// Probes of each target waiting in `queue`: a round starts only once the target's
    /// last one is sent (more probes than the rate allows delay rounds, never pile them up).
    var queued: [Int]
    var sendOrder: [Int]
    var roundStarts = Heap<RoundStart>()
    var queue = Deque<Pending>()
    var nextSendAt: Int64 = 0
    let spacing: Int64
    var inFlight: [UInt32: Probe] = [:]
    var deadlines = Deque<(deadline: Int64, probeNumber: UInt32)>()
    /// Probe numbers recently concluded, to tell late answers from foreign ones.
    var recent: [UInt32: Probe] = [:]
    var recentOrder = Deque<(forgetAt: Int64, probeNumber: UInt32)>()
    var lastProbeNumber: UInt32 = 0
    var currentTTL: [AddressFamily: Int] = [:]
    var packet: [UInt8] = []
    var ignored: [String: Int] = [:]
    /// Our IPv4 source address towards each TCP target.
    var sources: [Int: IPAddress] = [:]
    var currentTCPTTL: [AddressFamily: Int] = [:]
    var stopping = false
    var reported = false

    init(prober: PathProber, targets: [ProbeTarget], continuation: AsyncStream<PathTrace>.Continuation) {
        self.prober = prober
        configuration = prober.configuration
        self.targets = targets
        self.continuation = continuation
        let hops = configuration.maxHops
        tallies = Array(repeating: Array(repeating: Array(repeating: Tally(), count: hops), count: configuration.flows), count: targets.count)
        endTTL = Array(repeating: Array(repeating: nil, count: configuration.flows), count: targets.count)
        roundsStarted = Array(repeating: 0, count: targets.count)
        queued = Array(repeating: 0, count: targets.count)
        sendOrder = Array(repeating: 0, count: targets.count)
        spacing = max(1, Int64(1_000_000_000 / configuration.packetsPerSecond))
    }

    // MARK: LoopTask

    func attach(to loop: ProbeLoop, now: Int64) throws {
        self.loop = loop
        for socket in prober.sockets.values {
            try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue, for: self)
        }
        for socket in prober.tcpSockets.values {
            try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue, for: self)
        }
        for (index, target) in targets.enumerated() where target.port != nil {
            // The IPv4 TCP checksum covers our source address: ask the routing table.
            if let address = target.address, address.family == .ipv4 { sources[index] = PathTCPSockets.sourceAddress(towards: address) }
        }
        let traced = targets.indices.filter { targets[$0].address != nil }
        let phase = traced.isEmpty ? 0 : configuration.intervalNanoseconds / Int64(traced.count)
        for (position, index) in traced.enumerated() {
            roundStarts.insert(RoundStart(instant: now + Int64(position) * phase, targetIndex: index))
        }
        nextSendAt = now
    }

    func service(now: Int64) throws {
        if !stopping && prober.isStopRequested {
            stopping = true
            roundStarts = Heap()
            queue.removeAll()
            queued = Array(repeating: 0, count: targets.count)
        }
        while let first = roundStarts.min, first.instant <= now {
            _ = roundStarts.removeMin()
            startRound(first.targetIndex, plannedAt: first.instant)
        }
        try sendDue(now: now)
        expire(now: now)
        if isFinished && !reported { reportAll() }
    }

    var nextWake: Int64? {
        earliest(earliest(roundStarts.min?.instant, queue.isEmpty ? nil : nextSendAt), deadlines.first?.deadline)
    }

    var isFinished: Bool { roundStarts.isEmpty && queue.isEmpty && inFlight.isEmpty }

    func handle(fd: Int32, events: UInt32) throws {
        if let tcp = prober.tcpSockets.values.first(where: { $0.descriptor.rawValue == fd }) {
            return try drainTCP(tcp, limit: 16)
        }
        guard let socket = prober.sockets.values.first(where: { $0.descriptor.rawValue == fd }) else { return }
        if events & EPOLLERR.rawValue != 0 { try drainErrorQueue(socket, limit: 4) }
        if events & EPOLLIN.rawValue != 0 { try drainReplies(socket, limit: 16) }
    }

    func detach(error: Error?) {
        if let error { prober.logger.error("tracing stopped", metadata: ["error": "\(error)"]) }
        for socket in prober.sockets.values { loop?.unwatch(socket.descriptor.rawValue) }
        for socket in prober.tcpSockets.values { loop?.unwatch(socket.descriptor.rawValue) }
        if !reported { reportAll() }
        prober.ended()
        continuation.finish()
    }

    // MARK: sending

    func startRound(_ index: Int, plannedAt instant: Int64) {
        if queued[index] > 0 {
            // The last round is still being sent: start this one once it is.
            roundStarts.insert(RoundStart(instant: max(instant, nextSendAt) + spacing * Int64(queued[index]), targetIndex: index))
            return
        }
        roundsStarted[index] += 1
        for flow in 0..<configuration.flows {
            let last = min(configuration.maxHops, endTTL[index][flow] ?? configuration.maxHops)
            guard last >= configuration.firstHop else { continue }
            for ttl in configuration.firstHop...last { queue.append(Pending(targetIndex: index, flow: flow, ttl: ttl)) }
            queued[index] += last - configuration.firstHop + 1
        }
        if configuration.rounds == 0 || roundsStarted[index] < configuration.rounds {
            roundStarts.insert(RoundStart(instant: instant + configuration.intervalNanoseconds, targetIndex: index))
        }
    }

    func sendDue(now: Int64) throws {
        var clock = now
        while let pending = queue.first, nextSendAt <= clock {
            guard try send(pending) else {
                // The socket buffer is full: try again shortly.
                nextSendAt = clock + 1_000_000
                return
            }
            queue.removeFirst()
            queued[pending.targetIndex] -= 1
            nextSendAt = max(nextSendAt + spacing, clock - 10 * spacing)
            clock = Clock.monotonicNanoseconds()
        }
    }

    /// Sends one probe; false when the socket would block.
    func send(_ pending: Pending) throws -> Bool {
        if targets[pending.targetIndex].port != nil { return try sendSYN(pending) }
        let target = targets[pending.targetIndex]
        guard let address = target.address, let socket = prober.sockets[address.family] else {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            return true
        }
        if currentTTL[address.family] != pending.ttl {
            // One socket, one TTL at a time: the loop thread sends, so set it per probe.
            try Posix.setHopLimit(socket.descriptor.rawValue, family: address.family, pending.ttl)
            currentTTL[address.family] = pending.ttl
        }
        let probeNumber = prober.takeProbeNumber()
        PathPacket.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber, cookie: prober.cookie,
                                 flow: pending.flow, payloadLength: configuration.payloadLength, into: &packet)
        let sentAt = Clock.realtimeNanoseconds()
        let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
        do {
            guard case .processed = try socket.send(packet, to: address, probeNumber: probeNumber) else { return false }
        } catch {
            // No route and the like: counted sent and unanswered; the trace shows it.
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            ignored["send_\(error.errno == ENETUNREACH || error.errno == EHOSTUNREACH ? "unreachable" : "error")", default: 0] += 1
            prober.logger.debug("trace send failed", metadata: ["target": "\(target.name)", "error": "\(error)"])
            return true
        }
        registerSent(pending, probeNumber: probeNumber, sentAt: sentAt, deadline: deadline)
        try drainErrorQueue(socket, limit: 1)
        return true
    }

    /// Records a probe that left: in flight until its deadline, counted sent, in send order.
    func registerSent(_ pending: Pending, probeNumber: UInt32, sentAt: Int64, deadline: Int64) {
        lastProbeNumber = probeNumber
        let order = sendOrder[pending.targetIndex]
        sendOrder[pending.targetIndex] += 1
        inFlight[probeNumber] = Probe(targetIndex: pending.targetIndex, flow: pending.flow, ttl: pending.ttl, order: order,
                                      userSentRealtime: sentAt, kernelSentRealtime: nil, deadline: deadline)
        deadlines.append((deadline, probeNumber))
        tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
    }

    /// Sends one TCP SYN probe; false when the socket would block.
    func sendSYN(_ pending: Pending) throws -> Bool {
        let target = targets[pending.targetIndex]
        guard let address = target.address, let port = target.port, let socket = prober.tcpSockets[address.family] else {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            ignore("no_tcp_socket")
            return true
        }
        if currentTCPTTL[address.family] != pending.ttl {
            try Posix.setHopLimit(socket.descriptor.rawValue, family: address.family, pending.ttl)
            currentTCPTTL[address.family] = pending.ttl
        }
        let probeNumber = prober.takeProbeNumber()
        let segment = PathTCPSegment.syn(sourcePort: socket.ports[pending.flow % socket.ports.count], destinationPort: port, sequence: probeNumber,
                                         source: sources[pending.targetIndex], destination: address)
        let sentAt = Clock.realtimeNanoseconds()
        let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
        do {
            guard try socket.send(segment, to: address) else { return false }
        } catch {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            ignore("send_\(error.errno == ENETUNREACH || error.errno == EHOSTUNREACH ? "unreachable" : "error")")
            return true
        }
        registerSent(pending, probeNumber: probeNumber, sentAt: sentAt, deadline: deadline)
        return true
    }

    func expire(now: Int64) {
        while let first = deadlines.first, first.deadline <= now {
            deadlines.removeFirst()
            if let probe = inFlight.removeValue(forKey: first.probeNumber) { remember(first.probeNumber, probe, now: now) }
        }
        while let first = recentOrder.first, first.forgetAt <= now {
            recentOrder.removeFirst()
            recent[first.probeNumber] = nil
        }
    }

    func remember(_ probeNumber: UInt32, _ probe: Probe, now: Int64) {
        recent[probeNumber] = probe
        recentOrder.append((now + configuration.timeoutNanoseconds + 1_000_000_000, probeNumber))
    }

    // MARK: receiving

    func drainErrorQueue(_ socket: ICMPSocket, limit: Int) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            if case .transmitStamp(let probeNumber, let realtime) = message {
                inFlight[probeNumber]?.kernelSentRealtime = realtime
            }
        }
    }

    func drainReplies(_ socket: ICMPSocket, limit: Int) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source else { continue }
            if case .success(.reply(let reply)) = ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                try handleEchoReply(reply, from: source, socket: socket, received: received)
                continue
            }
            switch PathPacket.decodeError(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
            case .failure(let rejection):
                if rejection != .otherType { ignored["rejected_\(rejection.rawValue)", default: 0] += 1 }
            case .success(let report):
                try handleError(report, from: source, socket: socket, received: received)
            }
        }
    }

    func handleEchoReply(_ reply: ICMPEcho.Reply, from source: IPAddress, socket: ICMPSocket, received: ICMPSocket.Received) throws {
        guard reply.identifier == socket.identifier else { return }  // another prober's, or ping's
        guard reply.cookie == prober.cookie else { return ignore("wrong_cookie") }
        guard reply.sequence == UInt16(truncatingIfNeeded: reply.probeNumber) else { return ignore("sequence_mismatch") }
        guard reply.payloadLength == configuration.payloadLength else { return ignore("wrong_length") }
        try conclude(probeNumber: reply.probeNumber, from: source, isDestination: true, unreachable: false, socket: socket,
                     kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime)
    }

    func handleError(_ report: PathPacket.ErrorReport, from source: IPAddress, socket: ICMPSocket, received: ICMPSocket.Received) throws {
        if case .tcp(let sourcePort, let destinationPort, let sequence) = report.probe {
            guard let tcp = prober.tcpSockets[socket.family], tcp.ports.contains(sourcePort) else { return }  // not our SYN
            guard let probe = inFlight[sequence] ?? recent[sequence], targets[probe.targetIndex].port == destinationPort,
                  tcp.ports[probe.flow % tcp.ports.count] == sourcePort else { return ignore("unknown_probe") }
            guard report.quotedDestination == targets[probe.targetIndex].address else { return ignore("wrong_destination") }
            let isDestination = source == targets[probe.targetIndex].address && report.kind != .timeExceeded
            return try conclude(probeNumber: sequence, from: source, isDestination: isDestination, unreachable: report.kind == .unreachable && !isDestination,
                                socket: socket, kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime)
        }
        guard case .echo(let identifier, let sequence, let cookie, let quotedNumber) = report.probe, identifier == socket.identifier else {
            return  // about someone else's packet
        }
        if let cookie, cookie != prober.cookie { return ignore("wrong_cookie") }
        // Without a quoted payload (8-byte quotes), the most recent probe with this sequence.
        let probeNumber = quotedNumber ?? (lastProbeNumber &- UInt32(UInt16(truncatingIfNeeded: lastProbeNumber) &- sequence))
        guard UInt16(truncatingIfNeeded: probeNumber) == sequence else { return ignore("sequence_mismatch") }
        let probe = inFlight[probeNumber] ?? recent[probeNumber]
        guard let probe else { return ignore("unknown_probe") }
        guard report.quotedDestination == targets[probe.targetIndex].address else { return ignore("wrong_destination") }
        let isDestination = source == targets[probe.targetIndex].address
        try conclude(probeNumber: probeNumber, from: source, isDestination: isDestination && report.kind != .timeExceeded,
                     unreachable: report.kind == .unreachable, socket: socket, kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime)
    }

    func ignore(_ reason: String) {
        ignored[reason, default: 0] += 1
    }

    /// A SYN-ACK or RST from a TCP target: the destination answered the probe whose
    /// sequence number it acknowledges.
    func drainTCP(_ socket: PathTCPSockets.Socket, limit: Int) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source, let answer = PathTCPSegment.decodeAnswer(received.packet, family: socket.family),
                  socket.ports.contains(answer.destinationPort) else { continue }  // every TCP segment of the host comes here
            let probeNumber = answer.acknowledgment &- 1
            guard let probe = inFlight[probeNumber] ?? recent[probeNumber] else { ignore("unknown_probe"); continue }
            guard targets[probe.targetIndex].address == source, targets[probe.targetIndex].port == answer.sourcePort,
                  socket.ports[probe.flow % socket.ports.count] == answer.destinationPort else { ignore("wrong_source"); continue }
            try conclude(probeNumber: probeNumber, from: source, isDestination: true, unreachable: false, socket: nil, kernelRealtime: nil, userRealtime: received.realtime)
        }
    }

    func conclude(probeNumber: UInt32, from source: IPAddress, isDestination: Bool, unreachable: Bool, socket: ICMPSocket?,
                  kernelRealtime: Int64?, userRealtime: Int64) throws {
        guard var probe = inFlight[probeNumber] else {
            ignore(recent[probeNumber] == nil ? "unknown_probe" : "late_or_duplicate")
            return
        }
        // An echo reply must come from the target itself.
        if isDestination && !unreachable && source != targets[probe.targetIndex].address { return ignore("wrong_source") }
        if probe.kernelSentRealtime == nil, let socket, targets[probe.targetIndex].port == nil {
            try drainErrorQueue(socket, limit: 64)
            probe.kernelSentRealtime = inFlight[probeNumber]?.kernelSentRealtime
        }
        // Kernel stamps at both ends, or user-space reads at both (TCP probes: their raw
        // socket is not stamped).
        let sent = probe.kernelSentRealtime ?? probe.userSentRealtime
        let arrived = (probe.kernelSentRealtime != nil ? kernelRealtime : nil) ?? userRealtime
        let rtt = max(0, arrived - sent)
        inFlight[probeNumber] = nil
        probe.answered = true
        remember(probeNumber, probe, now: Clock.monotonicNanoseconds())
        if rtt > configuration.timeoutNanoseconds { return ignore("late_or_duplicate") }
        var tally = tallies[probe.targetIndex][probe.flow][probe.ttl - 1]
        tally.received += 1
        tally.rtts.append((probe.order, Double(rtt) / 1_000_000))
        tally.addresses[source, default: 0] += 1
        if unreachable { tally.unreachable += 1 }
        if isDestination || unreachable {
            tally.destinationAnswers += isDestination ? 1 : 0
            let current = endTTL[probe.targetIndex][probe.flow]
            endTTL[probe.targetIndex][probe.flow] = min(current ?? probe.ttl, probe.ttl)
        }
        tallies[probe.targetIndex][probe.flow][probe.ttl - 1] = tally
    }

    // MARK: reporting

    func reportAll() {
        reported = true
        for index in targets.indices { continuation.yield(trace(index)) }
    }

    /// The hop list of one target: TTL t's probes, the destination's hop taking every
    /// probe of a flow at or beyond the TTL where that flow reached it.
    func trace(_ index: Int) -> PathTrace {
        let flows = configuration.flows
        let perFlow = tallies[index]
        let ends = endTTL[index]
        // The last hop shown: where each flow ended (destination or unreachable), or for a
        // flow that never ended, the last TTL anything answered.
        var last = 0
        for flow in 0..<flows {
            if let end = ends[flow] {
                last = max(last, end)
            } else if let answered = (configuration.firstHop...configuration.maxHops).last(where: { perFlow[flow][$0 - 1].received > 0 }) {
                last = max(last, answered)
            }
        }
        let reachedFlows = (0..<flows).filter { flow in
            guard let end = ends[flow] else { return false }
            return perFlow[flow][(end - 1)...].contains { $0.destinationAnswers > 0 }
        }
        var hops: [HopReport] = []
        var flowPaths = (0..<flows).map { FlowPath(flow: $0, hops: [], reached: reachedFlows.contains($0)) }
        if last >= configuration.firstHop {
            for ttl in configuration.firstHop...last {
                var merged = Tally()
                for flow in 0..<flows {
                    let parts: ArraySlice<Tally>
                    if let end = ends[flow] {
                        if ttl > end { flowPaths[flow].hops.append(Optional<IPAddress>.none); continue }
                        parts = ttl == end ? perFlow[flow][(ttl - 1)...] : perFlow[flow][(ttl - 1)...(ttl - 1)]
                    } else {
                        parts = perFlow[flow][(ttl - 1)...(ttl - 1)]
                    }
                    var flowAddresses: [IPAddress: Int] = [:]
                    for part in parts {
                        merged.sent += part.sent
                        merged.received += part.received
                        merged.unreachable += part.unreachable
                        merged.destinationAnswers += part.destinationAnswers
                        merged.rtts += part.rtts
                        for (address, count) in part.addresses {
                            merged.addresses[address, default: 0] += count
                            flowAddresses[address, default: 0] += count
                        }
                    }
                    flowPaths[flow].hops.append(Self.ranked(flowAddresses).first?.address)
                }
                hops.append(HopReport(hop: ttl, addresses: Self.ranked(merged.addresses), sent: merged.sent, received: merged.received,
                                      rttsMilliseconds: merged.rtts.sorted { $0.order < $1.order }.map(\.milliseconds),
                                      isDestination: ttl == last && !reachedFlows.isEmpty, unreachable: merged.unreachable))
            }
        }
        let reached = !reachedFlows.isEmpty
        let analysis = PathAnalysis(hops: hops, reached: reached)
        for position in hops.indices where analysis.rateLimitingHops.contains(hops[position].hop) { hops[position].ratesLimited = true }
        return PathTrace(targetIndex: index, target: targets[index], startNanoseconds: startRealtime, rounds: roundsStarted[index], flows: flows,
                         hops: hops, flowPaths: flowPaths, reached: reached, ignored: ignored, analysis: analysis)
    }

    static func ranked(_ addresses: [IPAddress: Int]) -> [(address: IPAddress, answers: Int)] {
        addresses.map { ($0.key, $0.value) }.sorted { ($0.1, $1.0.description) > ($1.1, $0.0.description) }
    }
}
