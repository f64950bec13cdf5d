import CSystemShims
import DequeModule
import FoundationEssentials
import HeapModule
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// One trace call's state, owned by the loop thread.
final class PathRun: LoopTask, DescriptorOwner {
    /// What one TTL of one flow saw.
    struct Tally {
        var sent = 0
        var received = 0
        var unreachable = 0
        var destinationAnswers = 0
        var rtts: [(order: Int, milliseconds: Double)] = []
        var addresses: [IPAddress: Int] = [:]
        /// Answers timed by the kernel's stamps at both ends, and by user-space reads.
        var kernelTimestamps = 0
        var userTimestamps = 0

        mutating func add(_ other: Tally) {
            sent += other.sent
            received += other.received
            unreachable += other.unreachable
            destinationAnswers += other.destinationAnswers
            kernelTimestamps += other.kernelTimestamps
            userTimestamps += other.userTimestamps
            rtts += other.rtts
            for (address, count) in other.addresses { addresses[address, default: 0] += count }
        }
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

    /// The socket a probe leaves on: echo requests on the ICMP socket, SYNs on the TCP one.
    enum Transport {
        case icmp(ICMPSocket)
        case tcp(PathTCPSockets.Socket, port: UInt16)

        var kind: PathTracker.Transport {
            switch self {
            case .icmp: return .echo
            case .tcp: return .tcp
            }
        }
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
    /// The probes in flight and recently concluded, and the matching rules.
    var tracker: PathTracker
    var packet: [UInt8] = []
    /// Our IPv4 source address towards each TCP target.
    var sources: [Int: IPAddress] = [:]
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
        tracker = PathTracker(cookie: prober.cookie, payloadLength: configuration.payloadLength, timeoutNanoseconds: configuration.timeoutNanoseconds,
                              destinations: targets.map { PathTracker.Destination(address: $0.address, port: $0.port) })
    }

    // MARK: LoopTask

    func attach(to loop: ProbeLoop, now: Int64) throws {
        self.loop = loop
        for socket in prober.sockets.values {
            try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue, for: self)
        }
        for socket in prober.tcpSockets.values {
            // EPOLLERR: the SYNs' transmit stamps wait on the error queue.
            try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue | EPOLLERR.rawValue, for: self)
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
        if !stopping && prober.gate.isStopRequested {
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
        tracker.expire(nowMonotonic: now)
        if isFinished && !reported { reportAll() }
    }

    var nextWake: Int64? {
        earliest(earliest(roundStarts.min?.instant, queue.isEmpty ? nil : nextSendAt), tracker.nextDeadline)
    }

    var isFinished: Bool { roundStarts.isEmpty && queue.isEmpty && !tracker.hasProbesInFlight }

    func handle(fd: Int32, events: UInt32) throws {
        if let tcp = prober.tcpSockets.values.first(where: { $0.descriptor.rawValue == fd }) {
            if events & EPOLLERR.rawValue != 0 { try drainErrorQueue(tcp, limit: 4) }
            if events & EPOLLIN.rawValue != 0 { try drainTCP(tcp, limit: 16) }
            return
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
        prober.gate.end()
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

    /// The socket `target`'s probes leave on; nil when its family has none.
    func transport(for target: ProbeTarget, family: AddressFamily) -> Transport? {
        if let port = target.port {
            return prober.tcpSockets[family].map { .tcp($0, port: port) }
        }
        return prober.sockets[family].map { .icmp($0) }
    }

    /// Sends one probe, an echo request or a SYN, with the pending TTL as a control
    /// message; false when the socket would block. A probe that cannot leave is counted
    /// sent and unanswered (the trace shows it), with the reason.
    func send(_ pending: Pending) throws -> Bool {
        let target = targets[pending.targetIndex]
        guard let address = target.address, let transport = transport(for: target, family: address.family) else {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            if target.port != nil { tracker.count(.noTCPSocket) }
            return true
        }
        let probeNumber = prober.takeProbeNumber()
        var segment: [UInt8] = []  // the SYN; echo requests reuse `packet`
        switch transport {
        case .icmp(let socket):
            PathPacket.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber, cookie: prober.cookie,
                                     flow: pending.flow, payloadLength: configuration.payloadLength, into: &packet)
        case .tcp(let socket, let port):
            segment = PathTCPSegment.syn(sourcePort: socket.ports[pending.flow % socket.ports.count], destinationPort: port, sequence: probeNumber,
                                         source: sources[pending.targetIndex], destination: address)
        }
        let sentAt = Clock.realtimeNanoseconds()
        let deadline = Clock.monotonicNanoseconds() + configuration.timeoutNanoseconds
        let left: Bool
        do {
            switch transport {
            case .icmp(let socket):
                if case .processed = try socket.send(packet, to: address, probeNumber: probeNumber, hopLimit: pending.ttl) { left = true } else { left = false }
            case .tcp(let socket, _):
                left = try socket.send(segment, to: address, probeNumber: probeNumber, hopLimit: pending.ttl)
            }
        } catch {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            tracker.count(error.errno == ENETUNREACH || error.errno == EHOSTUNREACH ? .sendUnreachable : .sendError)
            prober.logger.debug("trace send failed", metadata: ["target": "\(target.name)", "error": "\(error)"])
            return true
        }
        guard left else { return false }
        let order = sendOrder[pending.targetIndex]
        sendOrder[pending.targetIndex] += 1
        tracker.register(probeNumber: probeNumber, PathTracker.Probe(
            targetIndex: pending.targetIndex, flow: pending.flow, ttl: pending.ttl, transport: transport.kind, order: order,
            userSentRealtime: sentAt, kernelSentRealtime: nil, deadline: deadline))
        tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
        // Loopback and TUN stamp inside sendmsg: take the stamp while it is there.
        switch transport {
        case .icmp(let socket): try drainErrorQueue(socket, limit: 1)
        case .tcp(let socket, _): try drainErrorQueue(socket, limit: 1)
        }
        return true
    }

    // MARK: receiving

    func drainErrorQueue(_ socket: ICMPSocket, limit: Int) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            if case .transmitStamp(let probeNumber, let realtime) = message {
                tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
            }
        }
    }

    /// The SYNs' transmit stamps; anything else on the raw TCP socket's error queue is dropped.
    func drainErrorQueue(_ socket: PathTCPSockets.Socket, limit: Int) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            if case .transmitStamp(let probeNumber, let realtime) = message {
                tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
            }
        }
    }

    /// Reads the error queue that holds a probe's transmit stamp, when the stamp has not
    /// been read yet: the SYN's is on the raw TCP socket even when the answer (an ICMP
    /// error) came in on the ICMP socket.
    func drainTransmitStamp(of probeNumber: UInt32) throws {
        guard tracker.needsTransmitStamp(probeNumber: probeNumber), let probe = tracker.inFlight[probeNumber],
              let family = targets[probe.targetIndex].address?.family else { return }
        switch probe.transport {
        case .echo: if let socket = prober.sockets[family] { try drainErrorQueue(socket, limit: 64) }
        case .tcp: if let socket = prober.tcpSockets[family] { try drainErrorQueue(socket, limit: 64) }
        }
    }

    func drainReplies(_ socket: ICMPSocket, limit: Int) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source else { continue }
            let match: PathTracker.Match
            if case .success(.reply(let reply)) = ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                match = tracker.match(echoReply: reply, from: source, identifier: socket.identifier)
            } else {
                switch PathPacket.decodeError(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                case .failure(let rejection):
                    if rejection != .otherType { tracker.countRejected(rejection.rawValue) }
                    continue
                case .success(let report):
                    match = tracker.match(error: report, from: source, identifier: socket.identifier, tcpPorts: prober.tcpSockets[socket.family]?.ports)
                }
            }
            try answer(match, kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime)
        }
    }

    /// A SYN-ACK or RST from a TCP target: the destination answered the probe whose
    /// sequence number it acknowledges.
    func drainTCP(_ socket: PathTCPSockets.Socket, limit: Int) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source, let answer = PathTCPSegment.decodeAnswer(received.packet, family: socket.family) else { continue }
            try self.answer(tracker.match(tcpAnswer: answer, from: source, ports: socket.ports),
                            kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime)
        }
    }

    /// Concludes the probe an answer matched and counts it at its TTL.
    /// - Parameters:
    ///   - kernelRealtime: the answer's receive stamp, when the kernel gave one.
    ///   - userRealtime: CLOCK_REALTIME read right after the answer was read.
    func answer(_ match: PathTracker.Match, kernelRealtime: Int64?, userRealtime: Int64) throws {
        switch match {
        case .notOurs:
            return
        case .ignored(let reason):
            tracker.count(reason)
        case .probe(let probeNumber, let source, let isDestination, let unreachable):
            try drainTransmitStamp(of: probeNumber)
            switch tracker.conclude(probeNumber, from: source, isDestination: isDestination, unreachable: unreachable,
                                    kernelReceivedRealtime: kernelRealtime, userReceivedRealtime: userRealtime, nowMonotonic: Clock.monotonicNanoseconds()) {
            case .ignored(let reason):
                tracker.count(reason)
            case .answered(let probe, let rtt, let source, let isDestination, let unreachable, let kernelTimed):
                count(probe, rttNanoseconds: rtt, from: source, isDestination: isDestination, unreachable: unreachable, kernelTimed: kernelTimed)
            }
        }
    }

    func count(_ probe: PathTracker.Probe, rttNanoseconds rtt: Int64, from source: IPAddress, isDestination: Bool, unreachable: Bool, kernelTimed: Bool) {
        var tally = tallies[probe.targetIndex][probe.flow][probe.ttl - 1]
        tally.received += 1
        if kernelTimed { tally.kernelTimestamps += 1 } else { tally.userTimestamps += 1 }
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
        let last = lastHopShown(index)
        let reachedFlows = flowsThatReachedTheDestination(index)
        var hops: [HopReport] = []
        var flowPaths = (0..<configuration.flows).map { FlowPath(flow: $0, hops: [], reached: reachedFlows.contains($0)) }
        if last >= configuration.firstHop {
            for ttl in configuration.firstHop...last {
                var merged = Tally()
                for flow in 0..<configuration.flows {
                    guard let parts = talliesShown(index, flow: flow, atHop: ttl) else {
                        flowPaths[flow].hops.append(Optional<IPAddress>.none)  // this flow ended before
                        continue
                    }
                    var flowTally = Tally()
                    for part in parts { flowTally.add(part) }
                    merged.add(flowTally)
                    flowPaths[flow].hops.append(Self.ranked(flowTally.addresses).first?.address)
                }
                hops.append(HopReport(hop: ttl, addresses: Self.ranked(merged.addresses), sent: merged.sent, received: merged.received,
                                      rttsMilliseconds: merged.rtts.sorted { $0.order < $1.order }.map(\.milliseconds),
                                      isDestination: ttl == last && !reachedFlows.isEmpty, unreachable: merged.unreachable,
                                      kernelTimestamps: merged.kernelTimestamps, userTimestamps: merged.userTimestamps))
            }
        }
        let reached = !reachedFlows.isEmpty
        let analysis = PathAnalysis(hops: hops, reached: reached)
        for position in hops.indices where analysis.rateLimitingHops.contains(hops[position].hop) { hops[position].ratesLimited = true }
        return PathTrace(targetIndex: index, target: targets[index], startNanoseconds: startRealtime, rounds: roundsStarted[index], flows: configuration.flows,
                         hops: hops, flowPaths: flowPaths, reached: reached, ignored: tracker.ignored, analysis: analysis)
    }

    /// The last hop shown: where each flow ended (destination or unreachable), or for a
    /// flow that never ended, the last TTL anything answered; 0 when nothing did.
    func lastHopShown(_ index: Int) -> Int {
        var last = 0
        for flow in 0..<configuration.flows {
            if let end = endTTL[index][flow] {
                last = max(last, end)
            } else if let answered = (configuration.firstHop...configuration.maxHops).last(where: { tallies[index][flow][$0 - 1].received > 0 }) {
                last = max(last, answered)
            }
        }
        return last
    }

    /// The flows whose end is the destination answering (not an unreachable).
    func flowsThatReachedTheDestination(_ index: Int) -> [Int] {
        (0..<configuration.flows).filter { flow in
            guard let end = endTTL[index][flow] else { return false }
            return tallies[index][flow][(end - 1)...].contains { $0.destinationAnswers > 0 }
        }
    }

    /// What one flow shows at hop `ttl`: that TTL's tally, or at the flow's end every TTL
    /// from there on (probes beyond the destination are answered by it); nil past the end.
    func talliesShown(_ index: Int, flow: Int, atHop ttl: Int) -> ArraySlice<Tally>? {
        let perTTL = tallies[index][flow]
        guard let end = endTTL[index][flow] else { return perTTL[(ttl - 1)...(ttl - 1)] }
        if ttl > end { return nil }
        return ttl == end ? perTTL[(ttl - 1)...] : perTTL[(ttl - 1)...(ttl - 1)]
    }

    static func ranked(_ addresses: [IPAddress: Int]) -> [(address: IPAddress, answers: Int)] {
        addresses.map { ($0.key, $0.value) }.sorted { ($0.1, $1.0.description) > ($1.1, $0.0.description) }
    }
}
