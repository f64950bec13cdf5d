import ArgumentParser
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import PrometheusExporter

/// `run`'s `prometheus:` section: the exporter's ICMP sockets (opened with privileges) and
/// its server (started before the first round, so no round is missed).
enum PrometheusWiring {
    /// Sockets for `/probe`'s icmp modules, when the section is on and has one; nil (with a
    /// warning) when ICMP is not allowed: those modules then answer 503.
    static func openICMPSockets(for configuration: NetprobeConfiguration, logger: Logger) -> ICMPSocketSet? {
        guard let settings = configuration.prometheus, settings.probe.modules.values.contains(where: { $0.kind == .icmp }) else { return nil }
        do {
            return try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv4, .ipv6], ttl: nil, logger: logger)
        } catch {
            logger.warning("prometheus /probe: ICMP is not available, icmp modules will answer 503", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The running exporter, or nil when the section is absent.
    /// - Throws: `ExitCode` 4 (system error) when the address cannot be bound.
    static func start(for configuration: NetprobeConfiguration, icmpSockets: ICMPSocketSet?, logger: Logger) async throws -> PrometheusExporter? {
        guard let settings = configuration.prometheus else { return nil }
        do {
            let exporter = PrometheusExporter(settings: settings, prober: try OnDemandEngine(icmpSockets: icmpSockets, logger: logger), logger: logger)
            try await exporter.start()
            return exporter
        } catch let error as PrometheusExporterError {
            Terminal.printError("netprobe: prometheus: \(error)")
            throw ExitCode(ExitStatus.systemError)
        } catch {
            Terminal.printError("netprobe: prometheus: cannot start the endpoint: \(error)")
            throw ExitCode(ExitStatus.systemError)
        }
    }
}
