import FoundationEssentials
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ProbeConfig
import ProbeResults
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The `prometheus:` endpoint of `netprobe run`: `/metrics` (every target's rounds, from the
/// run's writer) and `/probe` (blackbox_exporter's multi-target pattern, on netprobe's
/// engine). The HTTP server is Hummingbird on swift-nio, on an event-loop thread of its own;
/// handlers run on the Swift concurrency pool. Neither is ever the probe loop's thread.
public final class PrometheusExporter: Sendable {
    /// What `run`'s writer feeds (pass it to `ProbeService` as an observer).
    public let metrics: RoundMetrics
    public let blackbox: BlackboxProber
    let settings: PrometheusSettings
    let logger: Logger
    private let server: Locked<(task: Task<Void, any Error>, group: ServiceGroup)?> = Locked(nil)
    /// The port actually bound (the configured one, or the system's choice for port 0).
    public let boundPort: Locked<Int?> = Locked(nil)

    /// What the server keeps open and for how long (see `ConnectionLimits`).
    let connections: ConnectionRegistry

    /// Header sizes the HTTP parser accepts; a longer request line or header is answered
    /// 400 with the reason (`ConnectionGuard`).
    static let maximumHeaderFieldSize = 8192
    static let maximumHeaderListSize = 16384

    /// What a page server mounted beside `/metrics` and `/probe` answers (the live view).
    public struct PageAnswer: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        public var headers: [(name: String, value: String)]

        public init(status: Int, contentType: String, body: String, headers: [(name: String, value: String)] = []) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }
    }

    /// Answers a GET of any path but `/metrics` and `/probe` (`/` included), from its path
    /// and raw query. The exporter knows nothing of what it serves (the CLI wires the view).
    public typealias Pages = @Sendable (_ path: String, _ query: String?) async -> PageAnswer

    /// The mounted pages, nil for the plain index page.
    let pages: Pages?

    /// - Parameters:
    ///   - settings: the `prometheus:` section.
    ///   - prober: runs `/probe`'s probes (the engine's `OnDemandEngine`).
    ///   - pages: every other path's answers (the live view), nil for none.
    ///   - logger: where it reports.
    public convenience init(settings: PrometheusSettings, prober: any OnDemandProber, pages: Pages? = nil, logger: Logger) {
        self.init(settings: settings, connectionLimits: ConnectionLimits(), blackbox: BlackboxProber(settings: settings.probe, prober: prober, logger: logger),
                  pages: pages, logger: logger)
    }

    /// - Parameter blackbox: `/probe`'s answers (tests give one with a resolver of their own).
    init(settings: PrometheusSettings, connectionLimits: ConnectionLimits, blackbox: BlackboxProber, pages: Pages? = nil, logger: Logger) {
        self.settings = settings
        self.logger = logger
        self.pages = pages
        connections = ConnectionRegistry(limits: connectionLimits)
        metrics = RoundMetrics(connections: connections)
        self.blackbox = blackbox
    }

    /// The methods each path answers; others get 405 with `Allow`.
    static let allowedMethods: [String: [HTTPRequest.Method]] = ["/metrics": [.get, .head], "/probe": [.get], "/": [.get, .head]]

    /// The address as a URL authority writes it: `[::1]:19156`.
    static func authority(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Starts listening; returns once the port is bound.
    /// - Returns: the bound port.
    /// - Throws: `PrometheusExporterError.cannotListen` with the reason in words (in use,
    ///   not an address of this host, privileged port).
    @discardableResult
    public func start() async throws -> Int {
        let router = makeRouter()
        let (bound, reportBound) = AsyncStream<Int>.makeStream()
        var serverLogger = logger
        serverLogger.logLevel = max(logger.logLevel, .notice)
        // Deadlines and slots are the connection guard's (no idle timeout of Hummingbird's,
        // no pause in accepting): see ConnectionLimits.
        let registry = connections
        let http = HTTP1Channel.Configuration(
            additionalChannelHandlers: [ConnectionGuard(registry: registry)], idleTimeout: nil,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: Self.maximumHeaderFieldSize, maxHeaderListSize: Self.maximumHeaderListSize, maxHeaderFieldCount: 100))
        let application = Application(
            router: router,
            server: .http1(configuration: http),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: nil, backlog: 256),
            onServerRunning: { channel in
                reportBound.yield(channel.localAddress?.port ?? 0)
                reportBound.finish()
            },
            // swift-nio's shared event-loop threads (one per core): threads of NIO's own.
            eventLoopGroupProvider: .singleton,
            logger: serverLogger)
        let group = ServiceGroup(configuration: .init(services: [application], gracefulShutdownSignals: [], logger: serverLogger))
        let task = Task {
            defer { reportBound.finish() }
            try await group.run()
        }
        server.withLock { $0 = (task, group) }
        var iterator = bound.makeAsyncIterator()
        let address = Self.authority(host: settings.host, port: settings.port)
        guard let port = await iterator.next() else {
            // The server ended before it was running: its error says why.
            do {
                try await task.value
            } catch {
                throw PrometheusExporterError.cannotListen(address, Self.reason(error, port: settings.port))
            }
            throw PrometheusExporterError.cannotListen(address, "the server stopped before it listened")
        }
        boundPort.withLock { $0 = port }
        logger.info("prometheus endpoint listening", metadata: ["address": "\(Self.authority(host: settings.host, port: port))", "paths": "/metrics /probe"])
        return port
    }

    /// The paths: `/metrics` (streamed), `/probe`, and the index page; wrong methods get 405.
    func makeRouter() -> Router<ExporterRequestContext> {
        let router = Router(context: ExporterRequestContext.self)
        router.add(middleware: MethodCheck(allowed: Self.allowedMethods))
        let metrics = self.metrics, blackbox = self.blackbox
        router.get("metrics") { request, context -> Response in
            let format = ExpositionFormat.negotiate(accept: request.headers[.accept])
            let eventLoop = context.channel.eventLoop
            // Streamed in chunks as they are written (chunked transfer): a scrape never
            // holds its whole answer.
            return Response(status: .ok, headers: [.contentType: format.contentType], body: ResponseBody { writer in
                var unconfirmed = 0
                try await metrics.write(format) { chunk in
                    try await writer.write(chunk)
                    // A write is only queued for the channel's event loop, which a busy
                    // machine may not run for a while: every few chunks, wait until the loop
                    // has handed them on, so they do not pile up faster than the connection
                    // takes them (its own back-pressure then holds the next one). At most
                    // `pacedChunks` chunks (320 KiB) wait at once.
                    unconfirmed += 1
                    if unconfirmed == Self.pacedChunks {
                        unconfirmed = 0
                        try await eventLoop.submit {}.get()
                    }
                }
                try await writer.finish(nil)
            })
        }
        router.head("metrics") { request, _ -> Response in
            // The headers GET would send (a streamed body: no length), without the work.
            let format = ExpositionFormat.negotiate(accept: request.headers[.accept])
            return Response(status: .ok, headers: [.contentType: format.contentType], body: ResponseBody { writer in try await writer.finish(nil) })
        }
        router.get("probe") { request, _ -> Response in
            let answer = await blackbox.answer(query: request.uri.query, scrapeTimeout: request.headers[Self.scrapeTimeoutHeader],
                                               format: ExpositionFormat.negotiate(accept: request.headers[.accept]))
            metrics.countProbeRequest(status: answer.status)
            var response = Self.response(status: HTTPResponse.Status(code: answer.status), contentType: answer.contentType, body: answer.body)
            if let retry = answer.retryAfterSeconds { response.headers[.retryAfter] = String(retry) }
            return response
        }
        if let pages {
            let answer: @Sendable (Request) async -> Response = { request in
                let page = await pages(request.uri.path, request.uri.query)
                var response = Self.response(status: HTTPResponse.Status(code: page.status), contentType: page.contentType, body: page.body)
                for (name, value) in page.headers {
                    if let field = HTTPField.Name(name) { response.headers[field] = value }
                }
                return response
            }
            router.get("/") { request, _ in await answer(request) }
            router.get("**") { request, _ in await answer(request) }
            router.head("/") { request, _ -> Response in
                let page = await answer(request)
                return Response(status: page.status, headers: page.headers)
            }
        } else {
            router.get("/") { _, _ -> Response in
                Self.response(status: .ok, contentType: "text/html; charset=utf-8", body: Self.indexPage)
            }
            router.head("/") { _, _ -> Response in
                Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"])
            }
        }
        return router
    }

    /// How many `/metrics` chunks may be queued for the event loop before the writer waits
    /// for it (each hop costs a thread switch; one per chunk was 40 % more CPU a scrape).
    static let pacedChunks = 4

    /// The header Prometheus sends with each scrape: how long it waits for the answer.
    static let scrapeTimeoutHeader = HTTPField.Name("X-Prometheus-Scrape-Timeout-Seconds")!

    static let indexPage = "<html><head><title>netprobe</title></head><body><h1>netprobe</h1><p><a href=\"metrics\">/metrics</a> &middot; /probe?module=icmp&amp;target=HOST</p></body></html>\n"

    /// Why the listener could not bind, in words that say what to change.
    static func reason(_ error: any Error, port: Int) -> String {
        guard let error = error as? IOError else { return "\(error)" }
        switch error.errnoCode {
        case EADDRINUSE:
            return "the port is already in use: another program listens there (`ss -ltnp 'sport = :\(port)'` names it); stop it, or give prometheus: listen another port"
        case EADDRNOTAVAIL:
            return "that is not an address of this host; listen on 127.0.0.1, ::1 or one of the host's own addresses"
        case EACCES:
            return "ports below 1024 need a privilege netprobe does not keep; choose a port above 1023"
        default:
            return "\(error)"
        }
    }

    /// Stops the server and `/probe`'s prober.
    public func stop() async {
        guard let (task, group) = server.withLock({ $0 }) else { return blackbox.close() }
        // Graceful: requests in flight are answered, then the listener closes.
        // A scraper's keep-alive connection or a long /probe gets 2 s, so that `run` still
        // stops within its 5 s.
        await group.triggerGracefulShutdown()
        let deadline = Task {
            try await Task.sleep(nanoseconds: 2_000_000_000)
            task.cancel()
        }
        _ = try? await task.value
        deadline.cancel()
        blackbox.close()
    }

    static func response(status: HTTPResponse.Status, contentType: String, body: String) -> Response {
        Response(status: status, headers: [.contentType: contentType], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}

public enum PrometheusExporterError: Error, CustomStringConvertible {
    /// The address (`127.0.0.1:19156`, `[::1]:19156`) and why.
    case cannotListen(String, String)

    public var description: String {
        switch self {
        case .cannotListen(let address, let reason): return "cannot listen on \(address): \(reason)"
        }
    }
}

/// Hummingbird's basic context plus the connection's channel (its event loop paces
/// `/metrics`' chunks).
struct ExporterRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        channel = source.channel
    }
}

/// 405 with `Allow` for a known path asked with a method it does not answer (a router
/// alone says 404, as if the path did not exist).
struct MethodCheck<Context: RequestContext>: RouterMiddleware {
    let allowed: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let methods = allowed[request.uri.path], !methods.contains(request.method) {
            let list = methods.map(\.rawValue).joined(separator: ", ")
            return Response(status: .methodNotAllowed, headers: [.allow: list, .contentType: "text/plain; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: "\(request.uri.path) answers \(list) only\n")))
        }
        return try await next(request, context)
    }
}
