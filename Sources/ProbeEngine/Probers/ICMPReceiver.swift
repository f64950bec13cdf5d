import CSystemShims
import DequeModule
import FoundationEssentials
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The receiving side of a prober's sockets, which its runs share (loop thread only): the
/// sockets are watched while any run is on the loop, and each message goes to the run that
/// sent the request it answers (found by the probe number; with one run, that run).
final class ICMPReceiver: DescriptorOwner {
    private var runs: [ICMPRun] = []

    func join(_ run: ICMPRun, loop: ProbeLoop) throws {
        if runs.isEmpty {
            for socket in run.prober.allSockets {
                try loop.watch(socket.descriptor.rawValue, events: EPOLLIN.rawValue, for: self)
            }
        }
        runs.append(run)
    }

    func leave(_ run: ICMPRun, loop: ProbeLoop?) {
        guard let position = runs.firstIndex(where: { $0 === run }) else { return }
        runs.remove(at: position)
        if runs.isEmpty {
            for socket in run.prober.allSockets { loop?.unwatch(socket.descriptor.rawValue) }
        }
    }

    /// The run whose request carried `probeNumber`; nil when none of several remembers it.
    /// A lone run (`run`, `ping`) gets everything, as before runs could share the sockets:
    /// its tracker sorts out what is not its own, with no lookup here first.
    private func run(holding probeNumber: UInt32) -> ICMPRun? {
        if runs.count == 1 { return runs[0] }
        return runs.first { $0.tracker.record(probeNumber) != nil }
    }

    func handle(fd: Int32, events: UInt32) throws {
        guard let socket = runs.first?.prober.allSockets.first(where: { $0.descriptor.rawValue == fd }) else { return }
        // One message per queue and wake-up: epoll is level-triggered, so more queued
        // messages wake the loop again at once, and a lone message (the common case) costs
        // no extra recvmsg that ends in EAGAIN.
        if events & EPOLLERR.rawValue != 0 { try drainErrorQueue(socket, limit: 1) }
        if events & EPOLLIN.rawValue != 0 { try drainReplies(socket, limit: 1) }
    }

    /// The MTU of the last local EMSGSIZE read from an error queue (its queued copy quotes
    /// no request: the send that failed takes it, `takeLocalMTU`).
    private var localMTU: Int?

    func drainErrorQueue(_ socket: ICMPSocket, limit: Int = 4096) throws {
        for _ in 0..<limit {
            guard let message = try socket.receiveError() else { return }
            switch message {
            case .transmitStamp(let probeNumber, let realtime):
                run(holding: probeNumber)?.tracker.recordTransmitStamp(probeNumber: probeNumber, realtime: realtime)
            case .icmpError(let type, let code, let info, let destination, let quoted):
                // A raw socket's copy: the family's main socket reads the message itself.
                guard socket.mode == .datagram, let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                let tooBig = socket.family == .ipv4 ? (type == ICMPEcho.destinationUnreachableV4 && code == 4) : type == ICMPEcho.packetTooBigV6
                failProbe(sequence: request.sequence, probeNumber: request.cookie == runs.first?.prober.cookie ? request.probeNumber : nil,
                          destination: destination, failure: tooBig ? .tooBig(mtu: info > 0 ? Int(info) : nil, reportedBy: nil) : .unreachable)
            case .localError(let code, let info, let destination, let quoted):
                if code == EMSGSIZE {
                    localMTU = info > 0 ? Int(info) : nil
                    continue
                }
                guard let request = ICMPEcho.decodeQuotedRequest(quoted, family: socket.family) else { continue }
                failProbe(sequence: request.sequence, probeNumber: request.cookie == runs.first?.prober.cookie ? request.probeNumber : nil,
                          destination: destination, failure: [ENETUNREACH, EHOSTUNREACH].contains(code) ? .unreachable : .error)
            case .other:
                continue
            }
        }
    }

    /// The MTU of the EMSGSIZE a send just got, from the socket's error queue (ee_info).
    func takeLocalMTU(_ socket: ICMPSocket) -> Int? {
        localMTU = nil
        try? drainErrorQueue(socket, limit: 64)
        defer { localMTU = nil }
        return localMTU
    }

    func drainReplies(_ socket: ICMPSocket, limit: Int = 4096) throws {
        for _ in 0..<limit {
            guard let received = try socket.receive() else { return }
            guard let source = received.source, let first = runs.first else { continue }
            switch ICMPEcho.decode(received.packet, family: socket.family, includesIPHeader: socket.includesIPHeader) {
            case .failure(let rejection):
                first.diagnostics.rejectedPackets[rejection.rawValue, default: 0] += 1
            case .success(.error(let report)):
                if socket.mode == .raw && report.identifier != socket.identifier { continue }
                let failure: ICMPRun.Failure = report.kind == .tooBig ? .tooBig(mtu: report.mtu, reportedBy: source) : .unreachable
                failProbe(sequence: report.sequence, probeNumber: report.cookie == first.prober.cookie ? report.probeNumber : nil,
                          destination: report.originalDestination, failure: failure)
            case .success(.reply(let reply)):
                // A reply no run remembers is classified by the first (unknown, foreign).
                let run = run(holding: reply.probeNumber) ?? first
                if run.tracker.needsTransmitStamp(probeNumber: reply.probeNumber) {
                    // The transmit stamp may still sit on the error queue (of the socket
                    // that sent: a don't-fragment choice's, for a raw socket): read it first.
                    try drainErrorQueue(socket)
                    for other in first.prober.allSockets where other.onlySends && other.family == socket.family {
                        try drainErrorQueue(other)
                    }
                }
                run.receive(reply, from: source, on: socket, received: received)
            }
        }
    }

    /// Ends a probe that an ICMP error or a local error answered.
    private func failProbe(sequence: UInt16, probeNumber: UInt32?, destination: IPAddress?, failure: ICMPRun.Failure) {
        guard let first = runs.first else { return }
        // Without a quoted payload, take the most recent probe with this sequence.
        let last = first.prober.lastProbeNumber
        let candidate = probeNumber ?? (last &- UInt32(UInt16(truncatingIfNeeded: last) &- sequence))
        guard let run = run(holding: candidate), run.failProbe(candidate, destination: destination, failure: failure) else {
            first.diagnostics.ignoredReplies["unmatched_icmp_error", default: 0] += 1
            return
        }
    }
}
