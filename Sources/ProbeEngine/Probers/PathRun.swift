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
    /// What the probes of one TTL of one flow saw from routers (time exceeded); answers
    /// that end the path (the destination's, unreachables) are `EndAnswer`s.
    struct Tally {
        var sent = 0
        var received = 0
        /// Probes whose timeout passed without an answer.
        var expired = 0
        var rtts: [(order: Int, milliseconds: Double)] = []
        var addresses: [IPAddress: Int] = [:]
        var kernelTimestamps = 0
        var userTimestamps = 0
        var labelStacks = LabelStackTally()
    }

    /// The MPLS label stacks (RFC 4950) each address's answers carried.
    struct LabelStackTally {
        /// Per address and stack: how many answers carried it, and the send order of the latest.
        var seen: [IPAddress: [[MPLSLabelStackEntry]: (count: Int, latest: Int)]] = [:]

        mutating func add(_ stack: [MPLSLabelStackEntry], from address: IPAddress, order: Int) {
            guard !stack.isEmpty else { return }
            let current = seen[address]?[stack]
            seen[address, default: [:]][stack] = ((current?.count ?? 0) + 1, max(current?.latest ?? order, order))
        }

        mutating func add(_ other: LabelStackTally) {
            for (address, stacks) in other.seen {
                for (stack, figures) in stacks {
                    let current = seen[address]?[stack]
                    seen[address, default: [:]][stack] = ((current?.count ?? 0) + figures.count, max(current?.latest ?? figures.latest, figures.latest))
                }
            }
        }

        /// Per address: its most common stack, the latest of equally common ones (a label
        /// that changed shows its new value once it is as common as the old one).
        var chosen: [IPAddress: [MPLSLabelStackEntry]] {
            seen.compactMapValues { stacks in stacks.max { ($0.value.count, $0.value.latest) < ($1.value.count, $1.value.latest) }?.key }
        }
    }

    /// An answer that ends a flow's path: the destination's reply, or an unreachable.
    struct EndAnswer {
        var round: Int
        var ttl: Int
        var order: Int
        var source: IPAddress
        /// nil for the destination's reply.
        var unreachable: UnreachableMark?
        /// The reply's RTT (an unreachable has none: it is not a reply).
        var milliseconds: Double?
        var kernelTimed: Bool
        /// The MPLS label stack an unreachable carried (empty: none).
        var labelStack: [MPLSLabelStackEntry] = []
    }

    /// A probe waiting for its send slot.
    struct Pending {
        var targetIndex: Int
        var flow: Int
        var ttl: Int
        var round: Int
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

    /// Consecutive TTLs after the last answering one that must stay silent over
    /// `silentRounds` rounds before probing past them stops (a destination that filters).
    static let silentWindow = 3
    static let silentRounds = 2

    let prober: PathProber
    let configuration: PathProbeConfiguration
    let targets: [ProbeTarget]
    let continuation: AsyncStream<PathTrace>.Continuation
    weak var loop: ProbeLoop?
    let startRealtime = Clock.realtimeNanoseconds()

    /// [target][flow][ttl - 1]
    var tallies: [[[Tally]]]
    /// [target][flow]: the answers that ended the flow's path, in arrival order.
    var endAnswers: [[[EndAnswer]]]
    /// Per target and flow: the smallest TTL the destination (or an unreachable) answered.
    var endTTL: [[Int?]]
    /// Per target and flow: the last TTL still probed when the hops after the last
    /// answering one stayed silent (filtered destination); nil probes up to `maxHops`.
    var silentLimit: [[Int?]]
    var roundsStarted: [Int]
    /// Probes of each target waiting for their slot: a round starts only once the target's
    /// last one is sent (more probes than the rate allows delay rounds, never pile them up).
    var queued: [Int]
    var sendOrder: [Int]
    var roundStarts = Heap<RoundStart>()
    /// Every probe's send slot, on the send schedule the other probers use: one probe per
    /// `spacing` at most, never a burst to catch up.
    var schedule: SendSchedule
    var pending: [Int: Pending] = [:]
    var nextPendingKey = 0
    /// CLOCK_MONOTONIC of the last send, for the late-unreachable wait.
    var lastSend: Int64 = 0
    /// The probes in flight and recently concluded, and the matching rules.
    var tracker: PathTracker
    var packet: [UInt8] = []
    /// Our IPv4 source address towards each TCP target.
    var sources: [Int: IPAddress] = [:]
    /// Each target's packet options as sends use them (read once, at attach); a target
    /// whose options cannot be used (an interface gone) is absent, and its probes fail.
    var sendOptions: [Int: SendOptions] = [:]
    var stopping = false
    var reported = false
    /// `discoversMTU`: the sizes echo probes leave at, and what they found.
    var mtuSearch: PathMTUSearch
    /// The MTU of the last local EMSGSIZE read from an error queue (`ee_info`).
    var localMTU: Int?

    init(prober: PathProber, targets: [ProbeTarget], continuation: AsyncStream<PathTrace>.Continuation) {
        self.prober = prober
        configuration = prober.configuration
        self.targets = targets
        self.continuation = continuation
        let hops = configuration.maxHops
        tallies = Array(repeating: Array(repeating: Array(repeating: Tally(), count: hops), count: configuration.flows), count: targets.count)
        endAnswers = Array(repeating: Array(repeating: [], count: configuration.flows), count: targets.count)
        endTTL = Array(repeating: Array(repeating: nil, count: configuration.flows), count: targets.count)
        silentLimit = endTTL
        roundsStarted = Array(repeating: 0, count: targets.count)
        queued = Array(repeating: 0, count: targets.count)
        sendOrder = Array(repeating: 0, count: targets.count)
        mtuSearch = PathMTUSearch(targets: targets, configuration: configuration)
        schedule = SendSchedule(targets: [], interval: configuration.intervalNanoseconds, packetsPerSecond: configuration.packetsPerSecond, start: 0)
        tracker = PathTracker(cookie: prober.cookie, payloadLength: configuration.payloadLength, timeoutNanoseconds: configuration.timeoutNanoseconds,
                              destinations: targets.map { PathTracker.Destination(address: $0.address, port: $0.port, chosenSource: $0.options.source) })
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
        for (index, target) in targets.enumerated() {
            guard let address = target.address else { continue }
            if target.options.isDefault {
                sendOptions[index] = SendOptions.none
            } else if let options = try? SendOptions(target.options, family: address.family, interfaceIndex: SendOptions.systemInterfaceIndex) {
                sendOptions[index] = options
            }
            // The IPv4 TCP checksum covers our source address: the chosen one, else ask
            // the routing table (through the chosen interface, when there is one).
            if target.port != nil, address.family == .ipv4 {
                sources[index] = target.options.source ?? PathTCPSockets.sourceAddress(towards: address, interface: target.options.interface)
            }
        }
        let traced = targets.indices.filter { targets[$0].address != nil }
        let phase = traced.isEmpty ? 0 : configuration.intervalNanoseconds / Int64(traced.count)
        for (position, index) in traced.enumerated() {
            roundStarts.insert(RoundStart(instant: now + Int64(position) * phase, targetIndex: index))
        }
    }

    func service(now: Int64) throws {
        if !stopping && prober.gate.isStopRequested {
            stopping = true
            roundStarts = Heap()
            schedule.removeAll()
            pending.removeAll()
            queued = Array(repeating: 0, count: targets.count)
        }
        while let first = roundStarts.min, first.instant <= now {
            _ = roundStarts.removeMin()
            startRound(first.targetIndex, plannedAt: first.instant)
        }
        try sendDue(now: now)
        for probe in tracker.expire(nowMonotonic: now) {
            tallies[probe.targetIndex][probe.flow][probe.ttl - 1].expired += 1
        }
        if isFinished(now: now) && !reported { reportAll() }
    }

    var nextWake: Int64? {
        earliest(earliest(roundStarts.min?.instant, schedule.nextWake), earliest(tracker.nextDeadline, allSent ? lateUnreachableWait : nil))
    }

    /// Every round started and every probe sent and concluded: only late unreachables may
    /// still come.
    var allSent: Bool { roundStarts.isEmpty && pending.isEmpty && !tracker.hasProbesInFlight }

    var isFinished: Bool { isFinished(now: Clock.monotonicNanoseconds()) }

    /// Every probe sent and concluded, and no late unreachable to wait for.
    func isFinished(now: Int64) -> Bool {
        guard allSent else { return false }
        return lateUnreachableWait.map { now >= $0 } ?? true
    }

    /// Until when to wait for a late unreachable after the last send: while a traced
    /// target's flow has not ended and its farthest probes went unanswered (a router may
    /// still be resolving its neighbour), or a flow ended by unreachables still misses a
    /// round's (they come late, one per round); nil when no flow can be waiting for one.
    var lateUnreachableWait: Int64? {
        for index in targets.indices where targets[index].address != nil && roundsStarted[index] > 0 {
            for flow in 0..<configuration.flows {
                if endTTL[index][flow] == nil {
                    let perTTL = tallies[index][flow]
                    if let farthest = perTTL.lastIndex(where: { $0.sent > 0 }), perTTL[farthest].received == 0 {
                        return lastSend + PathTracker.unreachableWindowNanoseconds
                    }
                } else if endAnswers[index][flow].contains(where: { $0.unreachable != nil }),
                          Set(endAnswers[index][flow].map(\.round)).count < roundsStarted[index] {
                    return lastSend + PathTracker.unreachableWindowNanoseconds
                }
            }
        }
        return nil
    }

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
            roundStarts.insert(RoundStart(instant: instant + configuration.intervalNanoseconds / 4, targetIndex: index))
            return
        }
        roundsStarted[index] += 1
        let round = roundsStarted[index]
        var probes: [Pending] = []
        for flow in 0..<configuration.flows {
            if round > Self.silentRounds { silentLimit[index][flow] = silentWindowEnd(index, flow: flow) }
            let last = min(configuration.maxHops, endTTL[index][flow] ?? silentLimit[index][flow] ?? configuration.maxHops)
            guard last >= configuration.firstHop else { continue }
            for ttl in configuration.firstHop...last { probes.append(Pending(targetIndex: index, flow: flow, ttl: ttl, round: round)) }
        }
        for (position, instant) in Self.sendInstants(count: probes.count, start: instant, interval: configuration.intervalNanoseconds, spacing: schedule.spacing).enumerated() {
            pending[nextPendingKey] = probes[position]
            schedule.add(nextPendingKey, at: instant)
            nextPendingKey += 1
        }
        queued[index] += probes.count
        if configuration.rounds == 0 || roundsStarted[index] < configuration.rounds {
            roundStarts.insert(RoundStart(instant: instant + configuration.intervalNanoseconds, targetIndex: index))
        }
    }

    /// When a round's probes are due: spread evenly over half the interval (at least the
    /// rate's spacing apart), so no hop's probe waits behind a burst of the others. The
    /// send schedule then keeps every prober's sends `spacing` apart.
    static func sendInstants(count: Int, start: Int64, interval: Int64, spacing: Int64) -> [Int64] {
        guard count > 0 else { return [] }
        let step = max(spacing, interval / 2 / Int64(count))
        return (0..<count).map { start + Int64($0) * step }
    }

    /// The last TTL to probe for a flow whose destination has not answered: when the
    /// `silentWindow` TTLs after the last one that answered each had `silentRounds` probes
    /// expire without an answer, the end of that window; nil otherwise (probe on).
    func silentWindowEnd(_ index: Int, flow: Int) -> Int? {
        guard endTTL[index][flow] == nil else { return nil }
        let perTTL = tallies[index][flow]
        let answered = (configuration.firstHop...configuration.maxHops).last { perTTL[$0 - 1].received > 0 } ?? (configuration.firstHop - 1)
        guard answered < configuration.maxHops else { return nil }
        let window = (answered + 1)...min(configuration.maxHops, answered + Self.silentWindow)
        let silent = window.allSatisfy { perTTL[$0 - 1].received == 0 && perTTL[$0 - 1].expired >= Self.silentRounds }
        return silent ? window.upperBound : nil
    }

    func sendDue(now: Int64) throws {
        var clock = now
        while let due = schedule.popDue(now: clock) {
            guard let probe = pending[due.targetIndex] else { continue }
            // A probe beyond where its flow is now known to end is not sent (nor counted).
            if let end = endTTL[probe.targetIndex][probe.flow], probe.ttl > end {
                pending[due.targetIndex] = nil
                queued[probe.targetIndex] -= 1
                continue
            }
            guard try send(probe) else {
                // The socket buffer is full: try again shortly.
                schedule.add(due.targetIndex, at: clock + 1_000_000)
                return
            }
            pending[due.targetIndex] = nil
            queued[probe.targetIndex] -= 1
            lastSend = clock
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
        guard let options = sendOptions[pending.targetIndex] else {
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            tracker.count(.sendError)
            return true
        }
        let probeNumber = prober.takeProbeNumber()
        let size = mtuSearch.size(of: pending.targetIndex, ttl: pending.ttl)
        var segment: [UInt8] = []  // the SYN; echo requests reuse `packet`
        switch transport {
        case .icmp(let socket):
            let payloadLength = size.map { PathMTUSearch.payloadLength(size: $0, family: address.family) } ?? configuration.payloadLength
            PathPacket.encodeRequest(family: address.family, identifier: socket.identifier, probeNumber: probeNumber, cookie: prober.cookie,
                                     flow: pending.flow, payloadLength: payloadLength, into: &packet)
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
                if case .processed = try socket.send(packet, to: address, probeNumber: probeNumber, hopLimit: pending.ttl, options: options) { left = true } else { left = false }
            case .tcp(let socket, _):
                left = try socket.send(segment, to: address, probeNumber: probeNumber, hopLimit: pending.ttl, options: options)
            }
        } catch {
            if error.errno == EMSGSIZE, let size, case .icmp(let socket) = transport {
                // Larger than the outgoing interface carries: the error queue names its MTU.
                localMTU = nil
                try? drainErrorQueue(socket, limit: 64)
                if mtuSearch.refused(pending.targetIndex, size: size, interfaceMTU: localMTU) {
                    sendAgain(pending, at: Clock.monotonicNanoseconds())
                    return true
                }
            }
            tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
            tracker.count(error.errno == ENETUNREACH || error.errno == EHOSTUNREACH ? .sendUnreachable : .sendError)
            prober.logger.debug("trace send failed", metadata: ["target": "\(target.name)", "error": "\(error)"])
            return true
        }
        guard left else { return false }
        let order = sendOrder[pending.targetIndex]
        sendOrder[pending.targetIndex] += 1
        tracker.register(probeNumber: probeNumber, PathTracker.Probe(
            targetIndex: pending.targetIndex, flow: pending.flow, ttl: pending.ttl, round: pending.round, transport: transport.kind, order: order,
            userSentRealtime: sentAt, kernelSentRealtime: nil, deadline: deadline, size: size))
        tallies[pending.targetIndex][pending.flow][pending.ttl - 1].sent += 1
        // Loopback and TUN stamp inside sendmsg: take the stamp while it is there.
        switch transport {
        case .icmp(let socket): try drainErrorQueue(socket, limit: 1)
        case .tcp(let socket, _): try drainErrorQueue(socket, limit: 1)
        }
        return true
    }

    /// A probe "too big" for the path (or this host) leaves again, smaller, in the next
    /// send slot; it was not counted sent.
    func sendAgain(_ probe: Pending, at instant: Int64) {
        guard !stopping else { return }
        pending[nextPendingKey] = probe
        schedule.add(nextPendingKey, at: instant)
        nextPendingKey += 1
        queued[probe.targetIndex] += 1
    }

    // MARK: receiving

    func drainErrorQueue(_ socket: ICMPSocket, limit: Int) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            switch message {
            case .transmitStamp(let probeNumber, let realtime):
                tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
            case .localError(let code, let info, _, _) where code == EMSGSIZE:
                localMTU = info > 0 ? Int(info) : nil
            default:
                // IP_RECVERR's copies of ICMP errors (`discoversMTU`): the raw read has them.
                continue
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
            guard let received = try receiveSkippingPendingError(socket) else { return }
            guard let source = received.source else { continue }
            let match: PathTracker.Match
            var labelStack: [MPLSLabelStackEntry] = []
            if case .success(.reply(let reply)) = ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                match = tracker.match(echoReply: reply, from: source, to: received.destination, identifier: socket.identifier)
            } else {
                switch PathPacket.decodeError(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
                case .failure(let rejection):
                    if rejection != .otherType { tracker.countRejected(rejection.rawValue) }
                    continue
                case .success(let report):
                    match = tracker.match(error: report, from: source, to: received.destination, identifier: socket.identifier, tcpPorts: prober.tcpSockets[socket.family]?.ports)
                    labelStack = report.labelStack
                    // A bad extension is counted, but the answer still counts (its RTT is good).
                    if let rejection = report.extensionRejection, match != .notOurs { tracker.countRejected("extension_\(rejection.rawValue)") }
                    if report.kind == .tooBig, configuration.discoversMTU, case .probe(let probeNumber, let source, _, _) = match {
                        tooBig(probeNumber, report: report, from: source)
                        continue
                    }
                }
            }
            try answer(match, kernelRealtime: received.kernelRealtime, userRealtime: received.userRealtime, labelStack: labelStack)
        }
    }

    /// One packet, or nil when none is queued. IP_RECVERR (`discoversMTU`) also leaves each
    /// ICMP error's errno pending on the socket, and a read returns it once (clearing it)
    /// before the queued packets: read again.
    func receiveSkippingPendingError(_ socket: ICMPSocket) throws -> ICMPSocket.Received? {
        for _ in 0..<2 {
            do {
                return try socket.receive()
            } catch {
                guard configuration.discoversMTU, Self.icmpErrorNumbers.contains(error.errno) else { throw error }
            }
        }
        return try socket.receive()
    }

    /// The errnos an ICMP error leaves pending on a socket with IP_RECVERR (icmp_err_convert,
    /// raw_err, rawv6_err).
    static let icmpErrorNumbers: Set<Int32> = [ENETUNREACH, EHOSTUNREACH, ENOPROTOOPT, ECONNREFUSED, EMSGSIZE, EOPNOTSUPP, EACCES, EPROTO, EHOSTDOWN, ENONET]

    /// A router's "too big" for a don't-fragment probe: the probe ends without counting
    /// (neither sent nor lost), the target's probes go on smaller, and this one is sent again.
    func tooBig(_ probeNumber: UInt32, report: PathPacket.ErrorReport, from source: IPAddress) {
        let verdict = tracker.conclude(probeNumber, from: source, isDestination: false, unreachable: nil, kernelReceivedRealtime: nil,
                                       userReceivedRealtime: Clock.realtimeNanoseconds(), nowMonotonic: Clock.monotonicNanoseconds())
        guard case .answered(let probe, _, _, _, _, _) = verdict else {
            if case .ignored(let reason) = verdict { tracker.count(reason) }
            return
        }
        guard let size = probe.size else { return }
        tallies[probe.targetIndex][probe.flow][probe.ttl - 1].sent -= 1
        let answeredAt = tallies[probe.targetIndex][probe.flow].firstIndex { $0.addresses[source] != nil }.map { $0 + 1 }
        let again = mtuSearch.tooBig(probe.targetIndex, ttl: probe.ttl, size: size, quotedTTL: Int(report.quotedTTL), from: source, named: report.mtu,
                                     sourceHop: answeredAt)
        if again { sendAgain(Pending(targetIndex: probe.targetIndex, flow: probe.flow, ttl: probe.ttl, round: probe.round), at: Clock.monotonicNanoseconds()) }
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
    ///   - labelStack: the MPLS label stack an ICMP error carried.
    func answer(_ match: PathTracker.Match, kernelRealtime: Int64?, userRealtime: Int64, labelStack: [MPLSLabelStackEntry] = []) throws {
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
                count(probe, rttNanoseconds: rtt, from: source, isDestination: isDestination, unreachable: unreachable, kernelTimed: kernelTimed, labelStack: labelStack)
            case .lateUnreachable(let probe, let source, let mark):
                count(probe, rttNanoseconds: nil, from: source, isDestination: false, unreachable: mark, kernelTimed: false, labelStack: labelStack)
            }
        }
    }

    /// Counts an answer: a router's time exceeded at the probe's TTL; the destination's
    /// reply or an unreachable as the end of the flow's path.
    /// - Parameter rtt: nil for a late unreachable (no reply, no time).
    func count(_ probe: PathTracker.Probe, rttNanoseconds rtt: Int64?, from source: IPAddress, isDestination: Bool, unreachable: UnreachableMark?, kernelTimed: Bool,
               labelStack: [MPLSLabelStackEntry] = []) {
        if let size = probe.size, unreachable == nil, rtt != nil { mtuSearch.passed(probe.targetIndex, ttl: probe.ttl, size: size) }
        if isDestination || unreachable != nil {
            let milliseconds = unreachable == nil ? rtt.map { Double($0) / 1_000_000 } : nil
            endAnswers[probe.targetIndex][probe.flow].append(EndAnswer(round: probe.round, ttl: probe.ttl, order: probe.order, source: source,
                                                                       unreachable: unreachable, milliseconds: milliseconds, kernelTimed: kernelTimed,
                                                                       labelStack: labelStack))
            let current = endTTL[probe.targetIndex][probe.flow]
            endTTL[probe.targetIndex][probe.flow] = min(current ?? probe.ttl, probe.ttl)
            return
        }
        guard let rtt else { return }
        var tally = tallies[probe.targetIndex][probe.flow][probe.ttl - 1]
        tally.received += 1
        tally.rtts.append((probe.order, Double(rtt) / 1_000_000))
        tally.addresses[source, default: 0] += 1
        tally.labelStacks.add(labelStack, from: source, order: probe.order)
        if kernelTimed { tally.kernelTimestamps += 1 } else { tally.userTimestamps += 1 }
        tallies[probe.targetIndex][probe.flow][probe.ttl - 1] = tally
    }

    // MARK: reporting

    func reportAll() {
        reported = true
        for index in targets.indices { continuation.yield(trace(index)) }
    }

    /// What one flow shows at one hop, before flows are merged.
    struct HopView {
        var sent = 0
        var received = 0
        var unreachable = 0
        var marks: [String: Int] = [:]
        var rtts: [(order: Int, milliseconds: Double)] = []
        var addresses: [IPAddress: Int] = [:]
        var kernelTimestamps = 0
        var userTimestamps = 0
        var reachedDestination = false
        var labelStacks = LabelStackTally()

        mutating func add(_ other: HopView) {
            sent += other.sent
            received += other.received
            unreachable += other.unreachable
            for (mark, count) in other.marks { marks[mark, default: 0] += count }
            rtts += other.rtts
            for (address, count) in other.addresses { addresses[address, default: 0] += count }
            kernelTimestamps += other.kernelTimestamps
            userTimestamps += other.userTimestamps
            reachedDestination = reachedDestination || other.reachedDestination
            labelStacks.add(other.labelStacks)
        }
    }

    /// The hop list of one target: TTL t's probes; at the TTL where a flow's path ends, one
    /// probe per round (the lowest-TTL probe of the round that reached the end).
    func trace(_ index: Int) -> PathTrace {
        let flows = 0..<configuration.flows
        let last = flows.map { lastHopShown(index, flow: $0) }.max() ?? 0
        var hops: [HopReport] = []
        var flowPaths = flows.map { FlowPath(flow: $0, hops: [], reached: false) }
        if last >= configuration.firstHop {
            for ttl in configuration.firstHop...last {
                var merged = HopView()
                var perFlow: [FlowHop] = []
                for flow in flows {
                    guard let view = view(index, flow: flow, atHop: ttl) else {
                        flowPaths[flow].hops.append(Optional<IPAddress>.none)  // this flow ended before
                        continue
                    }
                    merged.add(view)
                    let ranked = Self.ranked(view.addresses)
                    flowPaths[flow].hops.append(ranked.first?.address)
                    if view.reachedDestination { flowPaths[flow].reached = true }
                    let flowStacks = view.labelStacks.chosen
                    perFlow.append(FlowHop(flow: flow, addresses: ranked.map { AddressCount(address: $0.address, answers: $0.answers, labelStack: flowStacks[$0.address] ?? []) },
                                           sent: view.sent,
                                           received: view.received, unreachable: view.unreachable,
                                           rttsMilliseconds: view.rtts.sorted { $0.order < $1.order }.map(\.milliseconds)))
                }
                hops.append(HopReport(hop: ttl, addresses: Self.ranked(merged.addresses), sent: merged.sent, received: merged.received,
                                      rttsMilliseconds: merged.rtts.sorted { $0.order < $1.order }.map(\.milliseconds),
                                      isDestination: merged.reachedDestination, unreachable: merged.unreachable, unreachableMarks: merged.marks,
                                      kernelTimestamps: merged.kernelTimestamps, userTimestamps: merged.userTimestamps,
                                      flows: configuration.flows > 1 ? perFlow : [], labelStacks: merged.labelStacks.chosen))
            }
        }
        let reached = flowPaths.contains(where: \.reached)
        let analysis = PathAnalysis(hops: hops, reached: reached)
        for position in hops.indices where analysis.rateLimitingHops.contains(hops[position].hop) { hops[position].ratesLimited = true }
        let mtu = mtuSearch.report(index, hops: &hops, endTTL: flows.compactMap { endTTL[index][$0] }.min())
        var trace = PathTrace(targetIndex: index, target: targets[index], startNanoseconds: startRealtime, rounds: roundsStarted[index], flows: configuration.flows,
                         hops: hops, flowPaths: flowPaths, reached: reached, ending: ending(index, hops: hops, reached: reached),
                         ignored: tracker.ignored, analysis: analysis)
        trace.mtu = mtu
        return trace
    }

    /// The last hop a flow shows: where its path ended (destination or unreachable); for a
    /// flow that never ended, the silent hops after the last one that answered too (up to
    /// `silentWindow` of them, as far as they were probed); 0 when nothing was probed.
    func lastHopShown(_ index: Int, flow: Int) -> Int {
        if let end = endTTL[index][flow] { return end }
        let perTTL = tallies[index][flow]
        guard let probed = perTTL.lastIndex(where: { $0.sent > 0 }).map({ $0 + 1 }) else { return 0 }
        let answered = (configuration.firstHop...configuration.maxHops).last { perTTL[$0 - 1].received > 0 } ?? (configuration.firstHop - 1)
        return min(probed, answered + Self.silentWindow)
    }

    /// One flow at one TTL; nil past the TTL where its path ended.
    func view(_ index: Int, flow: Int, atHop ttl: Int) -> HopView? {
        let tally = tallies[index][flow][ttl - 1]
        var view = HopView(sent: tally.sent, received: tally.received, rtts: tally.rtts, addresses: tally.addresses,
                           kernelTimestamps: tally.kernelTimestamps, userTimestamps: tally.userTimestamps, labelStacks: tally.labelStacks)
        guard let end = endTTL[index][flow] else { return view }
        if ttl > end { return nil }
        guard ttl == end else { return view }
        // The end: per round, the answer of the lowest TTL that reached it.
        var firstOfRound: [Int: EndAnswer] = [:]
        for answer in endAnswers[index][flow] where firstOfRound[answer.round].map({ answer.ttl < $0.ttl }) ?? true {
            firstOfRound[answer.round] = answer
        }
        for answer in firstOfRound.values where view.received + view.unreachable < view.sent {
            view.addresses[answer.source, default: 0] += 1
            view.labelStacks.add(answer.labelStack, from: answer.source, order: answer.order)
            if let mark = answer.unreachable {
                view.unreachable += 1
                view.marks[mark.mark, default: 0] += 1
            } else if let milliseconds = answer.milliseconds {
                view.received += 1
                view.reachedDestination = true
                view.rtts.append((answer.order, milliseconds))
                if answer.kernelTimed { view.kernelTimestamps += 1 } else { view.userTimestamps += 1 }
            }
        }
        return view
    }

    /// How the target's path ended.
    func ending(_ index: Int, hops: [HopReport], reached: Bool) -> PathEnding {
        if reached { return .reached }
        let unreachables = (0..<configuration.flows).flatMap { endAnswers[index][$0] }.filter { $0.unreachable != nil }
        if let hop = hops.first(where: { $0.unreachable > 0 }), let address = hop.address {
            var marks: [UnreachableMark: Int] = [:]
            for answer in unreachables where answer.source == address { marks[answer.unreachable!, default: 0] += 1 }
            if let mark = marks.max(by: { ($0.value, $1.key.code) < ($1.value, $0.key.code) })?.key {
                return .unreachable(hop: hop.hop, address: address, mark: mark)
            }
        }
        if let loop = Self.loop(in: hops) { return .loop(addresses: loop.addresses, fromHop: loop.fromHop) }
        if let farthest = hops.last, farthest.hop == configuration.maxHops, farthest.received > 0 { return .maxHops(configuration.maxHops) }
        let lastResponding = hops.last { !$0.isSilent }?.hop
        let limited = (0..<configuration.flows).filter { endTTL[index][$0] == nil }
        if !limited.isEmpty, limited.allSatisfy({ silentLimit[index][$0] != nil }) {
            return .filtered(lastRespondingHop: lastResponding, silentHops: hops.filter { $0.hop > (lastResponding ?? 0) }.map(\.hop))
        }
        return .noAnswer(lastRespondingHop: lastResponding)
    }

    /// A routing loop: an address that answers again at a later TTL with another address
    /// in between (A B A, A B C A); the addresses of the cycle and where it starts.
    static func loop(in hops: [HopReport]) -> (addresses: [IPAddress], fromHop: Int)? {
        var seen: [IPAddress: Int] = [:]
        for (position, hop) in hops.enumerated() {
            guard let address = hop.address else { continue }
            if let first = seen[address], position > 0, hops[position - 1].address != address {
                var cycle: [IPAddress] = []
                for earlier in hops[first..<position] {
                    if let other = earlier.address, !cycle.contains(other) { cycle.append(other) }
                }
                if cycle.count >= 2 { return (cycle, hops[first].hop) }
            }
            if seen[address] == nil { seen[address] = position }
        }
        return nil
    }

    static func ranked(_ addresses: [IPAddress: Int]) -> [(address: IPAddress, answers: Int)] {
        addresses.map { ($0.key, $0.value) }.sorted { ($0.1, $1.0.description) > ($1.1, $0.0.description) }
    }
}
