import FoundationEssentials
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ProbeConfig
import ProbeEngine
import ProbeService
import ServiceLifecycle

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

    /// Most connections open at once; more wait in the kernel's accept queue (bounded by
    /// the backlog) instead of costing memory here.
    static let maximumConnections = 256

    /// - Parameters:
    ///   - settings: the `prometheus:` section.
    ///   - icmpSockets: sockets for `/probe`'s icmp modules (opened with privileges).
    ///   - logger: where it reports.
    public init(settings: PrometheusSettings, icmpSockets: ICMPSocketSet?, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        metrics = RoundMetrics()
        blackbox = try BlackboxProber(settings: settings.probe, icmpSockets: icmpSockets, logger: logger)
    }

    /// Starts listening; returns once the port is bound.
    /// - Returns: the bound port.
    /// - Throws: when the address cannot be bound (in use, not local).
    @discardableResult
    public func start() async throws -> Int {
        let router = Router()
        let metrics = self.metrics, blackbox = self.blackbox
        router.get("metrics") { request, _ -> Response in
            let format = ExpositionFormat.negotiate(accept: request.headers[.accept])
            return Self.response(status: .ok, contentType: format.contentType, body: metrics.render(format))
        }
        router.get("probe") { request, _ -> Response in
            let answer = await blackbox.answer(query: request.uri.query, format: ExpositionFormat.negotiate(accept: request.headers[.accept]))
            metrics.countProbeRequest(status: answer.status)
            var response = Self.response(status: HTTPResponse.Status(code: answer.status), contentType: answer.contentType, body: answer.body)
            if let retry = answer.retryAfterSeconds { response.headers[.retryAfter] = String(retry) }
            return response
        }
        router.get("/") { _, _ -> Response in
            Self.response(status: .ok, contentType: "text/html; charset=utf-8",
                          body: "<html><head><title>netprobe</title></head><body><h1>netprobe</h1><p><a href=\"metrics\">/metrics</a> &middot; /probe?module=icmp&amp;target=HOST</p></body></html>\n")
        }
        let (bound, reportBound) = AsyncStream<Int>.makeStream()
        var serverLogger = logger
        serverLogger.logLevel = max(logger.logLevel, .notice)
        // An idle connection (a client that never closes, a scraper between scrapes) goes
        // after 10 s, and headers are small: a connection slot and its memory are bounded.
        let http = HTTP1Channel.Configuration(idleTimeout: .seconds(10), httpDecoderConfiguration: .init(maxHeaderFieldSize: 8192, maxHeaderListSize: 16384, maxHeaderFieldCount: 100))
        let application = Application(
            router: router,
            server: .http1(configuration: http),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: nil, backlog: 256,
                                 availableConnectionsDelegate: MaximumAvailableConnections(Self.maximumConnections)),
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
        guard let port = await iterator.next() else {
            // The server ended before it was running: its error says why.
            try await task.value
            throw PrometheusExporterError.notListening("\(settings.host):\(settings.port)")
        }
        boundPort.withLock { $0 = port }
        logger.info("prometheus endpoint listening", metadata: ["address": "\(settings.host):\(port)", "paths": "/metrics /probe"])
        return port
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
    case notListening(String)

    public var description: String {
        switch self {
        case .notListening(let address): return "the prometheus endpoint could not listen on \(address)"
        }
    }
}
