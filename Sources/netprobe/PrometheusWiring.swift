import ArgumentParser
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import PrometheusExporter
import WebView

/// `run`'s `prometheus:` section: the exporter's ICMP sockets (opened with privileges) and
/// its server (started before the first round, so no round is missed).
enum PrometheusWiring {
    /// Sockets for `/probe`'s icmp modules, when the section is on and has one; nil (with a
    /// warning) when ICMP is not allowed: those modules then answer 503.
    static func openICMPSockets(for configuration: NetprobeConfiguration, logger: Logger) -> ICMPSocketSet? {
        guard let settings = configuration.prometheus, settings.probe.modules.values.contains(where: { $0.kind == .icmp }) else { return nil }
        do {
            // Both don't-fragment kinds: a reloaded module may ask for either (dont_fragment).
            return try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv4, .ipv6], ttl: nil, fragmentation: Set(Fragmentation.allCases), logger: logger)
        } catch {
            logger.warning("prometheus /probe: ICMP is not available, icmp modules will answer 503", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The one HTTP server of `run` and what feeds it: the exporter (`/metrics`, `/probe`)
    /// when `prometheus:` is on, the live view (`/`, `/target`) when `web:` is on, both on
    /// one listener (the config settles one address for the two).
    struct HTTPFront {
        /// The server, nil when neither section is on.
        var exporter: PrometheusExporter?
        /// The round observers to give the service: the exporter's metrics, the view's memory.
        var observers: [any RoundObserver]
    }

    /// Starts the server when `prometheus:` or `web:` is on.
    /// - Throws: `ExitCode` 4 (system error) when the address cannot be bound.
    static func start(for configuration: NetprobeConfiguration, icmpSockets: ICMPSocketSet?, logger: Logger) async throws -> HTTPFront {
        let web = configuration.web
        // With `web:` alone the server is the exporter's with nothing allowed to /probe.
        guard let settings = configuration.prometheus ?? web.map({ PrometheusSettings(host: $0.host, port: $0.port) }) else {
            return HTTPFront(exporter: nil, observers: [])
        }
        var observers: [any RoundObserver] = []
        var pages: PrometheusExporter.Pages?
        if web != nil {
            let history = RecentHistory(roundIntervals: [.icmp: configuration.icmp.intervalNanoseconds, .tcp: configuration.tcp.intervalNanoseconds])
            let influx = InfluxHistory(servers: configuration.influxServers, probe: configuration.probeName, logger: logger)
            let view = influx.unsupportedReason.map { WebView(history: history, longRange: nil, longRangeUnavailable: "Only the last hour is available: \($0).") }
                ?? WebView(history: history, longRange: influx)
            pages = { path, query in await view.respond(path: path, query: query) }
            observers.append(history)
        }
        do {
            let exporter = PrometheusExporter(settings: settings, prober: try OnDemandEngine(icmpSockets: icmpSockets, logger: logger), pages: pages, logger: logger)
            let port = try await exporter.start()
            if let web { logger.info("web view listening", metadata: ["url": "\(WebSettings(host: web.host, port: port).url)"]) }
            return HTTPFront(exporter: exporter, observers: [exporter.metrics] + observers)
        } catch let error as PrometheusExporterError {
            Terminal.printError("netprobe: \(configuration.prometheus == nil ? "web" : "prometheus"): \(error)")
            throw ExitCode(ExitStatus.systemError)
        } catch {
            Terminal.printError("netprobe: \(configuration.prometheus == nil ? "web" : "prometheus"): cannot start the endpoint: \(error)")
            throw ExitCode(ExitStatus.systemError)
        }
    }
}
