import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import ProbeResults

/// How long an HTTP connection may take over each step, and how many are kept: what keeps
/// the listener answering Prometheus when other clients are idle, slow or hostile.
///
/// A connection costs a slot of one of two kinds. Waiting for a request header (a new
/// connection, or a kept-alive one between requests) costs only a small buffer: such
/// connections are many (`maximumWaiting`) and short-lived (`headerTimeout`, a deadline
/// from the moment they start waiting, so a client trickling bytes cannot stretch it);
/// beyond the maximum the one waiting longest is closed. A request being answered costs a
/// handler, a probe or an exposition: those are bounded by `maximumServing` (more get 503)
/// and `responseTimeout`. Accepting never pauses, so a scrape is never queued behind
/// connections that sent nothing.
struct ConnectionLimits: Sendable {
    /// A new connection must have sent a whole request header within this.
    var headerTimeout: TimeAmount = .seconds(5)
    /// After an answer, a kept-alive connection may wait this long for its next request
    /// (less than Prometheus' usual 15 s scrape interval: scrapes reconnect).
    var idleTimeout: TimeAmount = .seconds(10)
    /// A request must be answered, its last byte handed to the kernel, within this: longer
    /// than any `/probe` module (at most 30 s), and the end for a client that stops reading.
    var responseTimeout: TimeAmount = .seconds(60)
    /// Connections waiting for a request header, at most.
    var maximumWaiting = 1024
    /// Requests being answered at once, at most.
    var maximumServing = 256
}

/// Why the server closed a connection itself (label values of
/// `netprobe_http_connections_closed_total`).
enum ConnectionClosure: String, CaseIterable, Sendable {
    /// No whole request header within `headerTimeout`.
    case headerTimeout = "header_timeout"
    /// Kept alive after an answer, no next request within `idleTimeout`.
    case idle
    /// Closed to make room: the connection waiting longest for its header, when
    /// `maximumWaiting` were waiting.
    case evicted
    /// Answered 503: `maximumServing` requests were being answered.
    case busy
    /// Its answer was not written within `responseTimeout`.
    case responseTimeout = "response_timeout"
    /// Not HTTP, or a request line or header over the size limits: answered 400.
    case malformed
}

/// Every open connection of the server and what it is doing, across NIO's event loops.
final class ConnectionRegistry: Sendable {
    private enum Phase {
        case waiting(since: Int64)
        case serving
        /// Being closed by us (evicted or refused): counts in no limit any more.
        case leaving
    }

    private struct Entry {
        let channel: any Channel
        var phase: Phase
    }

    private struct State {
        var entries: [Int: Entry] = [:]
        var nextID = 0
        var waiting = 0
        var serving = 0
        var closed: [ConnectionClosure: Int] = [:]
    }

    let limits: ConnectionLimits
    private let state = Locked(State())

    init(limits: ConnectionLimits = ConnectionLimits()) {
        self.limits = limits
    }

    /// A new connection, waiting for its header.
    /// - Returns: its id, and the connection to close to make room, if any.
    func register(_ channel: any Channel, now: Int64 = Clock.monotonicNanoseconds()) -> (id: Int, evict: (any Channel)?) {
        state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.entries[id] = Entry(channel: channel, phase: .waiting(since: now))
            state.waiting += 1
            guard state.waiting > limits.maximumWaiting else { return (id, nil) }
            var oldest: (id: Int, since: Int64)?
            for (candidate, entry) in state.entries where candidate != id {
                if case .waiting(let since) = entry.phase, since < oldest?.since ?? .max { oldest = (candidate, since) }
            }
            guard let victim = oldest else { return (id, nil) }
            state.entries[victim.id]?.phase = .leaving
            state.waiting -= 1
            state.closed[.evicted, default: 0] += 1
            return (id, state.entries[victim.id]?.channel)
        }
    }

    /// A request header arrived. False when too many requests are being answered: the
    /// connection is then refused (503) and leaves.
    func startServing(_ id: Int) -> Bool {
        state.withLock { state in
            guard case .waiting = state.entries[id]?.phase else { return false }
            state.waiting -= 1
            guard state.serving < limits.maximumServing else {
                state.entries[id]?.phase = .leaving
                state.closed[.busy, default: 0] += 1
                return false
            }
            state.serving += 1
            state.entries[id]?.phase = .serving
            return true
        }
    }

    /// The answer was written; the connection waits for its next request.
    func startWaiting(_ id: Int, now: Int64 = Clock.monotonicNanoseconds()) {
        state.withLock { state in
            guard case .serving = state.entries[id]?.phase else { return }
            state.serving -= 1
            state.waiting += 1
            state.entries[id]?.phase = .waiting(since: now)
        }
    }

    /// The connection is closed (by either side).
    func remove(_ id: Int) {
        state.withLock { state in
            guard let entry = state.entries.removeValue(forKey: id) else { return }
            switch entry.phase {
            case .waiting: state.waiting -= 1
            case .serving: state.serving -= 1
            case .leaving: break
            }
        }
    }

    func count(_ closure: ConnectionClosure) {
        state.withLock { $0.closed[closure, default: 0] += 1 }
    }

    /// Connections closed by the server, by reason, since the start.
    var closures: [ConnectionClosure: Int] { state.withLock { $0.closed } }

    /// Connections open now: waiting for a header, and being answered.
    var open: (waiting: Int, serving: Int) { state.withLock { ($0.waiting, $0.serving) } }
}

/// One connection's deadlines and slot, in its pipeline after the HTTP codec: it sees each
/// request head arrive and each answer's end leave, and closes the connection when a
/// deadline passes. It answers what must not reach the router itself: 503 when too many
/// requests are being answered, 400 with the reason for what the HTTP parser rejects.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let registry: ConnectionRegistry
    private var id: Int?
    /// Requests whose head arrived and whose answer has not ended (pipelining: several).
    private var inFlight = 0
    /// This handler answered and is closing: nothing more goes through.
    private var refusing = false
    private var deadline: Scheduled<Void>?

    init(registry: ConnectionRegistry) {
        self.registry = registry
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { activate(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        if let id { registry.remove(id) }
        context.fireChannelInactive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        guard id == nil else { return }
        let (id, evicted) = registry.register(context.channel)
        self.id = id
        evicted?.close(promise: nil)
        arm(context, after: registry.limits.headerTimeout, .headerTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }
        if case .head = unwrapInboundIn(data) {
            inFlight += 1
            if inFlight == 1 {
                guard let id, registry.startServing(id) else {
                    refuse(context, .serviceUnavailable, "\(registry.limits.maximumServing) requests are being answered; try again shortly", retryAfter: true)
                    return
                }
                arm(context, after: registry.limits.responseTimeout, .responseTimeout)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data), inFlight > 0 else {
            context.write(data, promise: promise)
            return
        }
        inFlight -= 1
        guard inFlight == 0 else {
            context.write(data, promise: promise)
            return
        }
        // The connection waits for its next request once the answer has been handed to
        // the kernel: a client that does not read stays on the response deadline.
        let written = promise ?? context.eventLoop.makePromise()
        context.write(data, promise: written)
        written.futureResult.assumeIsolated().whenSuccess { [self] in
            guard context.channel.isActive, !refusing, inFlight == 0, let id else { return }
            registry.startWaiting(id)
            arm(context, after: registry.limits.idleTimeout, .idle)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A parser error while a request is being answered is the router's to handle.
        guard let parserError = error as? HTTPParserError, inFlight == 0, !refusing else {
            context.fireErrorCaught(error)
            return
        }
        registry.count(.malformed)
        if case .headerOverflow = parserError {
            refuse(context, .badRequest, "the request line or a header is too long (at most 8192 bytes each, 16384 in all); a /probe query is at most \(BlackboxRequest.maximumQueryLength) bytes")
        } else {
            refuse(context, .badRequest, "malformed HTTP request: \(parserError)")
        }
    }

    /// Answers with `status` and the reason, then closes; the request goes no further.
    private func refuse(_ context: ChannelHandlerContext, _ status: HTTPResponse.Status, _ reason: String, retryAfter: Bool = false) {
        refusing = true
        disarm()
        var body = context.channel.allocator.buffer(capacity: reason.utf8.count + 1)
        body.writeString(reason + "\n")
        var head = HTTPResponse(status: status)
        head.headerFields[.contentType] = "text/plain; charset=utf-8"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        if retryAfter { head.headerFields[.retryAfter] = "1" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Closes the connection after `delay` unless its phase changes first.
    private func arm(_ context: ChannelHandlerContext, after delay: TimeAmount, _ closure: ConnectionClosure) {
        disarm()
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            deadline = nil
            registry.count(closure)
            context.close(promise: nil)
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}
