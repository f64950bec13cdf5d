import CSystemShims
import ProbeEngine
import Foundation
import HeapModule
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The simulator's packet loop: reads requests from a packet descriptor (the TUN
/// device), decides per host what to answer, holds each reply for its delay and writes
/// it back at the release instant.
///
/// Holding: releases wait in a heap; a CLOCK_MONOTONIC timerfd is armed `spinNanoseconds`
/// before the earliest one (more when the timer has been waking the thread late, as idle
/// virtual CPUs do: twice the recent lateness), and the last stretch is spun (reading new
/// requests meanwhile) so a reply leaves within a microsecond or two of its release instant. Every reply's
/// real hold (read() returned -> write() called) is recorded as ground truth.
///
/// One thread runs `run`; only `stop()` may be called from others.
public final class Simulator: @unchecked Sendable {
    /// How the simulator behaves.
    public struct Options: Sendable {
        /// Behaviour per prefix.
        public var rules: RuleSet
        /// Write one JSON line per answered, filtered or dropped packet here.
        public var recordPath: String?
        /// Seed of the loss / delay / sequence-number generator; random when nil.
        public var seed: UInt64?
        /// How long before a release the loop stops sleeping and spins, at least; the loop
        /// spins longer when timer wake-ups come late.
        public var spinNanoseconds: Int64 = 50_000
        /// Only destinations inside these prefixes are simulated hosts.
        public var simulatedPrefixes: [AddressPrefix] = [AddressPrefix("198.18.0.0/15")!, AddressPrefix("2001:db8::/32")!]
        /// Addresses that belong to the simulator's own side (never answered).
        public var ownAddresses: Set<SimulatedAddress> = [SimulatedAddress("198.18.0.1")!, SimulatedAddress("2001:db8::1")!]
        /// The TUN device's name, to report what the kernel dropped before the simulator
        /// could read it (its transmit queue overflowed); nil in tests without a device.
        public var deviceName: String?

        public init(rules: RuleSet, recordPath: String? = nil, seed: UInt64? = nil) {
            self.rules = rules
            self.recordPath = recordPath
            self.seed = seed
        }
    }

    enum Verdict: String, CaseIterable {
        case echoReply = "echo_reply"
        case synAck = "syn_ack"
        case reset = "rst"
        case portUnreachable = "port_unreachable"
        case hostUnreachable = "host_unreachable"
        case netUnreachable = "net_unreachable"
        case protocolUnreachable = "protocol_unreachable"
        /// Communication administratively prohibited.
        case prohibited
        /// A destination unreachable with a code given as a number.
        case otherUnreachable = "unreachable_other"
        /// A router on the path: TTL ran out there.
        case timeExceeded = "time_exceeded"
        /// A router on the path: bigger than its next link's MTU.
        case tooBig = "too_big"
        /// A router on the path let the TTL run out but its ICMP rate limit held the error back.
        case rateLimited = "rate_limited"
        case filtered
        case dropped
        case ignored

        /// The verdicts that are a packet written back.
        static let answers: [Verdict] = [.echoReply, .synAck, .reset, .timeExceeded, .tooBig] + unreachables
        static let unreachables: [Verdict] = [.portUnreachable, .hostUnreachable, .netUnreachable, .protocolUnreachable, .prohibited, .otherUnreachable]

        /// The verdict of a destination unreachable with `code`.
        init(_ code: SimulatedPacket.Unreachable) {
            switch code {
            case .net: self = .netUnreachable
            case .host: self = .hostUnreachable
            case .protocol: self = .protocolUnreachable
            case .port: self = .portUnreachable
            case .prohibited: self = .prohibited
            case .code: self = .otherUnreachable
            }
        }
    }

    /// What a record line says about the request.
    enum RequestDetails {
        case icmp(identifier: UInt16, sequence: UInt16)
        case tcp(sourcePort: UInt16, destinationPort: UInt16)
        case other(transport: UInt8)
    }

    struct PendingReply: Comparable {
        var release: Int64
        var order: UInt64
        var readAt: Int64
        var bytes: [UInt8]
        var verdict: Verdict
        var source: SimulatedAddress
        var destination: SimulatedAddress
        var details: RequestDetails
        /// The router that sends this reply (an ICMP error from the path), nil for the host.
        var router: SimulatedAddress? = nil

        static func < (lhs: PendingReply, rhs: PendingReply) -> Bool { (lhs.release, lhs.order) < (rhs.release, rhs.order) }
        static func == (lhs: PendingReply, rhs: PendingReply) -> Bool { lhs.release == rhs.release && lhs.order == rhs.order }
    }

    struct HostState {
        var rule: HostRule
        var packetsIn = 0
        var answered = 0
        var dropped = 0
        var ignored = 0
        var holds: [Int64] = []
        /// Echo requests and TCP SYNs seen, for the rule's `dropSchedule`.
        var echoRequests = 0
        var syns = 0
    }

    public let options: Options
    /// The rules in force: `options.rules` until a reload (SIGHUP) replaces them.
    private var rules: RuleSet
    private let logger: Logger
    private let packetDescriptor: Int32
    private let epoll: Int32
    private let timer: Int32
    private let wakeup: Int32
    private var armedAt: Int64?
    /// How late timerfd wake-ups have been lately (a decaying maximum, nanoseconds).
    private var wakeLateness: Int64 = 0
    /// How long before a release the loop starts spinning: at least `spinNanoseconds`,
    /// more where the CPU wakes slowly from idle (virtual machines: 30-100 us).
    private var spinLead: Int64 { min(1_000_000, max(options.spinNanoseconds, 2 * wakeLateness + 10_000)) }

    // Counters, owned by the loop thread.
    private var packetsIn = 0
    private var writeErrors = 0
    private var kinds: [Verdict: Int] = [:]
    private var holds: [Int64] = []
    /// Sized up front for a whole benchmark's worth of hosts: growing a dictionary this big
    /// rehashes every entry at once, which stalled the loop for tens of milliseconds.
    private var hosts: [SimulatedAddress: HostState] = Dictionary(minimumCapacity: 1 << 17)
    private var pending = Heap<PendingReply>()
    private var order: UInt64 = 0
    private var generator: Xoshiro256
    /// The routers of multi-hop paths, with their ground truth.
    private var paths: PathWalker
    private var record: RecordWriter?
    private let startedAt = monotonicNanoseconds()
    /// True when the caller put the loop thread at real-time priority.
    public var realtimePriority = false

    /// - Parameters:
    ///   - packetDescriptor: a non-blocking descriptor that reads and writes whole IP
    ///     packets (the TUN device; a SOCK_SEQPACKET socket pair in tests). Not owned.
    ///   - options: rules and outputs.
    ///   - logger: where the simulator reports what it does.
    /// - Throws: `SystemCallError` when epoll, timerfd or eventfd fail, or the record file cannot be created.
    public init(packetDescriptor: Int32, options: Options, logger: Logger) throws {
        self.packetDescriptor = packetDescriptor
        self.options = options
        self.logger = logger
        let seed = options.seed ?? UInt64.random(in: 0...UInt64.max)
        generator = Xoshiro256(seed: seed)
        paths = PathWalker(rules: options.rules, seed: seed)
        rules = options.rules
        epoll = try Posix.epoll_create1(Int32(EPOLL_CLOEXEC))
        timer = try Posix.timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        wakeup = try Posix.retryingEINTR("eventfd") { CSystemShims.eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        for fd in [packetDescriptor, timer, wakeup] { try register(fd) }
        if let path = options.recordPath { record = try RecordWriter(path: path) }
    }

    deinit {
        for fd in [epoll, timer, wakeup] { Posix.closeQuietly(fd) }
    }

    private func register(_ fd: Int32) throws(SystemCallError) {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = fd
        try Posix.epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
    }

    /// Ends `run` from any thread: held replies are still sent at their release instants.
    public func stop() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeup, &one, 8)
    }

    /// Puts new rules in force (loop thread): every host and router takes its rule from
    /// them from the next packet on (a path that changed at run time); the counters stay.
    public func replaceRules(_ rules: RuleSet) {
        self.rules = rules
        for address in hosts.keys { hosts[address]!.rule = rules.rule(for: address) }
        paths.replaceRules(rules)
    }

    /// Runs the loop until `stop()` or SIGTERM/SIGINT on `signalDescriptor`.
    /// - Parameters:
    ///   - signalDescriptor: a signalfd for SIGTERM, SIGINT, SIGUSR1 and SIGHUP, or nil.
    ///   - summaryRequested: called on the loop thread for each SIGUSR1.
    ///   - reloadRequested: called on the loop thread for each SIGHUP: the new rules, or
    ///     nil to keep the old ones.
    /// - Returns: the final summary, after every held reply was sent (or 10 s passed).
    /// - Throws: `SystemCallError` when reading or waiting fails.
    public func run(signalDescriptor: Int32? = nil, summaryRequested: (SimulationSummary) -> Void = { _ in },
                    reloadRequested: () -> RuleSet? = { nil }) throws -> SimulationSummary {
        if let signalDescriptor { try register(signalDescriptor) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
        defer { buffer.deallocate() }
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 16)
        defer { events.deallocate() }
        var stopping = false
        var drainDeadline = Int64.max

        while true {
            var now = monotonicNanoseconds()
            now = releaseDue(now: now)
            if stopping && (pending.isEmpty || now >= drainDeadline) { break }
            if let next = pending.min?.release {
                let lead = spinLead
                if next - now <= lead {
                    // The last stretch: spin, reading requests while there is time to handle
                    // one (a request then waits at most ~20 us), then only watch the clock.
                    if !stopping && next - now > 20_000 { try readPackets(buffer, limit: 1) }
                    continue
                }
                try armTimer(next - lead)
            } else {
                try armTimer(nil)
            }
            let count = try Posix.epoll_wait(epoll, events, 16, stopping ? 10 : -1)
            for index in 0..<Int(count) {
                let fd = events[index].data.fd
                if fd == packetDescriptor {
                    if !stopping { try readPackets(buffer, limit: 64) }
                } else if fd == timer {
                    var expirations: UInt64 = 0
                    _ = try Posix.read(timer, &expirations, 8)
                    if let armedAt {
                        let lateness = max(0, monotonicNanoseconds() - armedAt)
                        wakeLateness = max(lateness, wakeLateness - wakeLateness / 64)
                    }
                    armedAt = nil
                } else if fd == wakeup {
                    var counter: UInt64 = 0
                    _ = try Posix.read(wakeup, &counter, 8)
                    stopping = true
                } else if fd == signalDescriptor {
                    var information = signalfd_siginfo()
                    while case .processed = try Posix.read(fd, &information, MemoryLayout<signalfd_siginfo>.size) {
                        if information.ssi_signo == UInt32(SIGUSR1) {
                            summaryRequested(summary())
                        } else if information.ssi_signo == UInt32(SIGHUP) {
                            if let reloaded = reloadRequested() { replaceRules(reloaded) }
                        } else {
                            logger.info("stopping on signal \(information.ssi_signo); sending held replies first")
                            stopping = true
                        }
                    }
                }
            }
            if stopping && drainDeadline == .max {
                drainDeadline = monotonicNanoseconds() + 10_000_000_000
                try? epollRemove(packetDescriptor)
            }
        }
        record?.flush()
        return summary()
    }

    private func epollRemove(_ fd: Int32) throws(SystemCallError) {
        var event = epoll_event()
        try Posix.epoll_ctl(epoll, EPOLL_CTL_DEL, fd, &event)
    }

    private func armTimer(_ instant: Int64?) throws(SystemCallError) {
        guard instant != armedAt else { return }
        armedAt = instant
        var value = itimerspec()
        if let instant {
            let clamped = max(1, instant)
            value.it_value = timespec(tv_sec: Int(clamped / 1_000_000_000), tv_nsec: Int(clamped % 1_000_000_000))
        }
        try Posix.timerfd_settime(timer, Int32(TFD_TIMER_ABSTIME), value)
    }

    // MARK: releasing

    /// Writes every reply whose release instant has come; returns the current time.
    private func releaseDue(now: Int64) -> Int64 {
        var now = now
        while let first = pending.min, first.release <= now {
            let reply = pending.removeMin()
            let writeAt = monotonicNanoseconds()
            let result: IOResult<Int>?
            do {
                result = try reply.bytes.withUnsafeBytes { (bytes) throws(SystemCallError) in try Posix.write(packetDescriptor, bytes.baseAddress!, bytes.count) }
            } catch {
                logger.debug("write failed: \(error)")
                result = nil
            }
            let hold = writeAt - reply.readAt
            switch result {
            case .processed:
                kinds[reply.verdict, default: 0] += 1
                holds.append(hold)
                if reply.router == nil {
                    hosts[reply.destination]?.answered += 1
                    hosts[reply.destination]?.holds.append(hold)
                }
                record?.write(reply.verdict, source: reply.source, destination: reply.destination, details: reply.details, holdNanoseconds: hold, router: reply.router)
            case .wouldBlock, nil:
                writeErrors += 1
                if writeErrors <= 10 { logger.warning("write of a \(reply.verdict.rawValue) to \(reply.source) failed") }
            }
            now = monotonicNanoseconds()
        }
        return now
    }

    // MARK: receiving

    private func readPackets(_ buffer: UnsafeMutableRawBufferPointer, limit: Int) throws(SystemCallError) {
        for _ in 0..<limit {
            guard case .processed(let length) = try Posix.read(packetDescriptor, buffer.baseAddress!, buffer.count) else { return }
            let readAt = monotonicNanoseconds()
            packetsIn += 1
            handle(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), readAt: readAt)
        }
    }

    private func handle(_ packet: UnsafeRawBufferPointer, readAt: Int64) {
        guard let header = try? SimulatedPacket.header(packet),
              options.simulatedPrefixes.contains(where: { $0.contains(header.destination) }),
              !options.ownAddresses.contains(header.destination) else {
            kinds[.ignored, default: 0] += 1
            return
        }
        if hosts[header.destination] == nil {
            hosts[header.destination] = HostState(rule: rules.rule(for: header.destination))
        }
        let rule = hosts[header.destination]!.rule
        let parsed = try? SimulatedPacket.request(packet, header: header)
        var pathDelay: Int64 = 0
        var replyTTL = rule.ttl
        if !rule.path.isEmpty || !rule.loop.isEmpty, let parsed, !parsed.isICMPOther {
            // Routers first: the host sees only what the path lets through.
            switch paths.walk(packet, header: header, path: rule.path, loop: rule.loop, refusal: rule.routerRefusal, now: readAt, delayGenerator: &generator) {
            case .delivered(let delay, let hops):
                pathDelay = delay
                replyTTL = UInt8(max(1, Int(rule.ttl) - hops))
            case .dropped(let router, _):
                kinds[.dropped, default: 0] += 1
                record?.write(.dropped, source: header.source, destination: header.destination, details: Self.details(parsed), holdNanoseconds: nil, router: router)
                return
            case .rateLimited(let router, _):
                kinds[.rateLimited, default: 0] += 1
                record?.write(.rateLimited, source: header.source, destination: header.destination, details: Self.details(parsed), holdNanoseconds: nil, router: router)
                return
            case .icmpError(let router, _, let bytes, let delay, let tooBig):
                order &+= 1
                pending.insert(PendingReply(release: readAt + delay, order: order, readAt: readAt, bytes: bytes, verdict: tooBig ? .tooBig : .timeExceeded,
                                            source: header.source, destination: header.destination, details: Self.details(parsed), router: router))
                return
            case .unreachable(let router, _, let bytes, let delay, let code):
                order &+= 1
                pending.insert(PendingReply(release: readAt + delay, order: order, readAt: readAt, bytes: bytes, verdict: Verdict(code),
                                            source: header.source, destination: header.destination, details: Self.details(parsed), router: router))
                return
            }
        }
        hosts[header.destination]!.packetsIn += 1
        guard let request = parsed else {
            ignore(header)
            return
        }

        let details = Self.details(request)

        if case .icmpOther = request {
            // Never answer an ICMP error, neighbour discovery or MLD, not even from an unreachable host.
            ignore(header)
            return
        }
        let verdict: Verdict
        // (A refusing router never lets a packet through to here.)
        let refusal = rule.hostRefusal
        if let refusal {
            verdict = Verdict(refusal.code)
        } else {
            switch request {
            case .echoRequest where rule.icmpFiltered:
                hosts[header.destination]!.ignored += 1
                kinds[.filtered, default: 0] += 1
                record?.write(.filtered, source: header.source, destination: header.destination, details: details, holdNanoseconds: nil)
                return
            case .echoRequest:
                verdict = .echoReply
            case .tcpSyn(_, let port, _):
                switch rule.behaviour(port: port) {
                case .open: verdict = .synAck
                case .closed: verdict = .reset
                case .rejected: verdict = .portUnreachable
                case .filtered:
                    hosts[header.destination]!.ignored += 1
                    kinds[.filtered, default: 0] += 1
                    record?.write(.filtered, source: header.source, destination: header.destination, details: details, holdNanoseconds: nil)
                    return
                }
            case .tcpOther, .icmpOther, .other:
                // The client kernel's ACK/RST/FIN, and protocols a host here does not speak.
                ignore(header)
                return
            }
        }

        var scheduledDrop = false
        if let schedule = rule.dropSchedule {
            switch request {
            case .echoRequest:
                hosts[header.destination]!.echoRequests += 1
                scheduledDrop = schedule.drops(requestNumber: hosts[header.destination]!.echoRequests)
            case .tcpSyn:
                hosts[header.destination]!.syns += 1
                scheduledDrop = schedule.drops(requestNumber: hosts[header.destination]!.syns)
            default:
                break
            }
        }
        if scheduledDrop || (rule.loss > 0 && Double.random(in: 0..<1, using: &generator) < rule.loss) {
            hosts[header.destination]!.dropped += 1
            kinds[.dropped, default: 0] += 1
            record?.write(.dropped, source: header.source, destination: header.destination, details: details, holdNanoseconds: nil)
            return
        }

        let bytes: [UInt8]
        switch verdict {
        case .echoReply:
            bytes = SimulatedPacket.echoReply(to: packet, header: header, ttl: replyTTL)
        case .synAck:
            bytes = SimulatedPacket.tcpSynAck(to: packet, header: header, ttl: replyTTL, initialSequence: UInt32(truncatingIfNeeded: generator.next()),
                                              maximumSegmentSize: header.isIPv6 ? 1440 : 1460)
        case .reset:
            bytes = SimulatedPacket.tcpResetAck(to: packet, header: header, ttl: replyTTL)
        case .portUnreachable:
            bytes = SimulatedPacket.unreachable(.port, quoting: packet, header: header, ttl: replyTTL)
        default:
            bytes = SimulatedPacket.unreachable(refusal?.code ?? .host, quoting: packet, header: header, ttl: replyTTL)
        }
        let delay = rule.delay.sample(using: &generator) + pathDelay + (refusal?.delay ?? 0)
        order &+= 1
        pending.insert(PendingReply(release: readAt + delay, order: order, readAt: readAt, bytes: bytes, verdict: verdict,
                                    source: header.source, destination: header.destination, details: details))
    }

    static func details(_ request: SimulatedPacket.Request) -> RequestDetails {
        switch request {
        case .echoRequest(let identifier, let sequence): return .icmp(identifier: identifier, sequence: sequence)
        case .tcpSyn(let sourcePort, let destinationPort, _), .tcpOther(let sourcePort, let destinationPort): return .tcp(sourcePort: sourcePort, destinationPort: destinationPort)
        case .icmpOther(let type): return .icmp(identifier: UInt16(type), sequence: 0)
        case .other(let transport): return .other(transport: transport)
        }
    }

    private func ignore(_ header: SimulatedPacket.Header) {
        hosts[header.destination]?.ignored += 1
        kinds[.ignored, default: 0] += 1
    }

    // MARK: summary

    /// The counters so far.
    public func summary() -> SimulationSummary {
        var kindCounts: [String: Int] = [:]
        for verdict in Verdict.allCases { kindCounts[verdict.rawValue] = kinds[verdict] ?? 0 }
        let answered = Verdict.answers.reduce(0) { $0 + (kinds[$1] ?? 0) }
        var hostSummaries: [String: HostSummary] = [:]
        for (address, state) in hosts {
            hostSummaries[address.description] = HostSummary(packetsIn: state.packetsIn, answered: state.answered, dropped: state.dropped,
                                                             ignored: state.ignored, holdMicroseconds: HoldTimeSummary(nanoseconds: state.holds))
        }
        var queueDropped = 0
        if let name = options.deviceName,
           let text = try? String(contentsOfFile: "/sys/class/net/\(name)/statistics/tx_dropped", encoding: .utf8) {
            queueDropped = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        return SimulationSummary(packetsIn: packetsIn, answered: answered, dropped: kinds[.dropped] ?? 0, queueDropped: queueDropped,
                                 ignored: (kinds[.ignored] ?? 0) + (kinds[.filtered] ?? 0) + (kinds[.rateLimited] ?? 0), pending: pending.count, writeErrors: writeErrors,
                                 kinds: kindCounts, holdMicroseconds: HoldTimeSummary(nanoseconds: holds), hosts: hostSummaries,
                                 realtimePriority: realtimePriority, durationSeconds: Double(monotonicNanoseconds() - startedAt) / 1e9,
                                 routers: paths.summaries)
    }
}

/// Buffered JSON Lines of ground truth, one line per answered, filtered or dropped packet.
final class RecordWriter {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws(SystemCallError) {
        fd = try Posix.open(path, O_WRONLY | O_CREAT | O_TRUNC)
        fchmod(fd, 0o644)
        buffer.reserveCapacity(70_000)
    }

    deinit {
        flush()
        Posix.closeQuietly(fd)
    }

    func write(_ verdict: Simulator.Verdict, source: SimulatedAddress, destination: SimulatedAddress, details: Simulator.RequestDetails, holdNanoseconds: Int64?,
               router: SimulatedAddress? = nil) {
        var line = "{\"protocol\":"
        switch details {
        case .icmp(let identifier, let sequence):
            line += "\"\(source.isIPv6 ? "icmpv6" : "icmp")\",\"id\":\(identifier),\"seq\":\(sequence)"
        case .tcp(let sourcePort, let destinationPort):
            line += "\"tcp\",\"source_port\":\(sourcePort),\"destination_port\":\(destinationPort)"
        case .other(let transport):
            line += "\"\(transport)\""
        }
        line += ",\"source\":\"\(source)\",\"destination\":\"\(destination)\",\"verdict\":\"\(verdict.rawValue)\",\"hold_ns\":"
        line += holdNanoseconds.map { "\($0)" } ?? "null"
        if let router { line += ",\"router\":\"\(router)\"" }
        line += "}\n"
        buffer.append(contentsOf: line.utf8)
        if buffer.count >= 65_536 { flush() }
    }

    func flush() {
        var offset = 0
        while offset < buffer.count {
            let written = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 { if written < 0 && errno == EINTR { continue }; break }
            offset += written
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// xoshiro256** (Blackman and Vigna): fast, seedable, good enough for loss and jitter.
struct Xoshiro256: RandomNumberGenerator {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        // SplitMix64 spreads one seed over the four words.
        var mix = seed
        func next() -> UInt64 {
            mix &+= 0x9e37_79b9_7f4a_7c15
            var z = mix
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        state = (next(), next(), next(), next())
    }

    mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }
}
