// A real Prometheus server for tests (Debian's `prometheus`), on 127.0.0.1 with its TSDB
// in a temporary directory: the Prometheus exporter's acceptance tests scrape netprobe
// with it and query its HTTP API.
//
//   let prometheus = try await PrometheusTestServer.start(scrapeConfigs: "  - job_name: ...")
//   try await prometheus.query("up")                      // instant vector: labels + value
//   try await prometheus.samples("metric[30s]")           // raw samples per series

import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real Prometheus (Debian's `prometheus`) on 127.0.0.1 with its TSDB in a temporary
/// directory, scraping what `scrapeConfigs` says every second.
public final class PrometheusTestServer: TestServerProcess {
    /// Where it runs: nil on the host's loopback, else inside that namespace (its API is
    /// then asked through curl inside the namespace too).
    public let network: SilentNetwork?

    private init(executable: String, directory: URL, port: Int, network: SilentNetwork?) {
        self.network = network
        super.init(executable: executable, directory: directory, port: port)
    }

    /// - Parameters:
    ///   - global: the `global:` section's lines (default: scrape every second).
    ///   - rules: a rule file's `groups:` (alerting rules), if any.
    ///   - network: run inside its prober namespace.
    public static func start(scrapeConfigs: String, global: String? = nil, rules: String? = nil, network: SilentNetwork? = nil) async throws -> PrometheusTestServer {
        let executable = try TestEnvironment.requireBinary("prometheus", package: "prometheus")
        let directory = try TestEnvironment.temporaryDirectory("prometheus")
        var config = """
            global:
            \(global ?? "  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s")

            """
        if let rules {
            try rules.write(to: directory.appendingPathComponent("rules.yml"), atomically: true, encoding: .utf8)
            config += "rule_files: [\"\(directory.path)/rules.yml\"]\n"
        }
        config += "scrape_configs:\n\(scrapeConfigs)"
        try config.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
        let server = PrometheusTestServer(executable: executable, directory: directory, port: network == nil ? TestEnvironment.freePort() : 9090, network: network)
        try await server.launch()
        return server
    }

    override public var launchExecutable: String { network == nil ? executable : "/usr/bin/env" }

    override public var arguments: [String] {
        let own = ["--config.file=\(directory.path)/prometheus.yml", "--storage.tsdb.path=\(directory.path)/data",
                   "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
        guard let network else { return own }
        return ["ip", "netns", "exec", network.prober, executable] + own
    }

    override public func isReady() async -> Bool {
        (try? await get(url.appendingPathComponent("-/ready")).status) == 200
    }

    /// A GET of the API, from wherever the server runs.
    func get(_ url: URL) async throws -> (status: Int, body: Data) {
        guard let network else { return try await TestEnvironment.http("GET", url, timeoutSeconds: 10) }
        let (status, body) = try network.http(url.absoluteString, maximumSeconds: 10)
        return (status, Data(body.utf8))
    }

    /// Alerts and their state (`pending`, `firing`), by alert name.
    public func alerts() async throws -> [(name: String, state: String)] {
        let (status, body) = try await get(url.appendingPathComponent("api/v1/alerts"))
        guard status == 200, let json = try JSONSerialization.jsonObject(with: body) as? [String: Any],
              let data = json["data"] as? [String: Any], let alerts = data["alerts"] as? [[String: Any]] else {
            throw NSError(domain: "Prometheus", code: status, userInfo: [NSLocalizedDescriptionKey: "alerts: HTTP \(status) \(String(decoding: body, as: UTF8.self))"])
        }
        return alerts.compactMap { alert in
            guard let labels = alert["labels"] as? [String: String], let name = labels["alertname"], let state = alert["state"] as? String else { return nil }
            return (name, state)
        }
    }

    /// An instant query's result vector: each element's labels and value.
    public func query(_ promql: String, at time: Double? = nil) async throws -> [(labels: [String: String], value: Double)] {
        var components = URLComponents(url: url.appendingPathComponent("api/v1/query"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "query", value: promql)] + (time.map { [URLQueryItem(name: "time", value: String($0))] } ?? [])
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        let (status, body) = try await get(components.url!)
        guard status == 200, let json = try JSONSerialization.jsonObject(with: body) as? [String: Any],
              let data = json["data"] as? [String: Any] else {
            throw NSError(domain: "Prometheus", code: status, userInfo: [NSLocalizedDescriptionKey: "\(promql): HTTP \(status) \(String(decoding: body, as: UTF8.self))"])
        }
        if data["resultType"] as? String == "scalar", let pair = data["result"] as? [Any], let text = pair.last as? String {
            return [([:], Double(text) ?? .nan)]
        }
        return (data["result"] as? [[String: Any]] ?? []).compactMap { element in
            guard let labels = element["metric"] as? [String: String], let pair = element["value"] as? [Any], let text = pair.last as? String else { return nil }
            return (labels, Double(text) ?? .nan)
        }
    }

    /// A range-vector selector's raw samples (`metric[60s]`), per series: (scrape time, value).
    /// - Parameter time: evaluate at this instant (seconds since the epoch) instead of now: a
    ///   scrape being committed right now may show some of its series and not yet others.
    public func samples(_ selector: String, at time: Double? = nil) async throws -> [(labels: [String: String], values: [(time: Double, value: Double)])] {
        var components = URLComponents(url: url.appendingPathComponent("api/v1/query"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "query", value: selector)] + (time.map { [URLQueryItem(name: "time", value: String($0))] } ?? [])
        let (status, body) = try await get(components.url!)
        guard status == 200, let json = try JSONSerialization.jsonObject(with: body) as? [String: Any],
              let data = json["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] else {
            throw NSError(domain: "Prometheus", code: status, userInfo: [NSLocalizedDescriptionKey: "\(selector): HTTP \(status) \(String(decoding: body, as: UTF8.self))"])
        }
        return result.compactMap { element in
            guard let labels = element["metric"] as? [String: String], let values = element["values"] as? [[Any]] else { return nil }
            return (labels, values.compactMap { pair in
                guard let time = pair.first as? Double ?? (pair.first as? NSNumber)?.doubleValue, let text = pair.last as? String, let value = Double(text) else { return nil }
                return (time, value)
            })
        }
    }

    /// Scrape health per job and instance (`up`).
    public func up(job: String) async throws -> [String: Double] {
        var result: [String: Double] = [:]
        for element in try await query("up{job=\"\(job)\"}") { result[element.labels["instance"] ?? ""] = element.value }
        return result
    }
}

