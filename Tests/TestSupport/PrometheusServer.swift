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
    public static func start(scrapeConfigs: String) async throws -> PrometheusTestServer {
        let executable = try TestEnvironment.requireBinary("prometheus", package: "prometheus")
        let directory = try TestEnvironment.temporaryDirectory("prometheus")
        let config = """
            global:
              scrape_interval: 1s
              scrape_timeout: 900ms
              evaluation_interval: 1s
            scrape_configs:
            \(scrapeConfigs)
            """
        try config.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
        let server = PrometheusTestServer(executable: executable, directory: directory, port: TestEnvironment.freePort())
        try await server.launch()
        return server
    }

    override public var arguments: [String] {
        ["--config.file=\(directory.path)/prometheus.yml", "--storage.tsdb.path=\(directory.path)/data",
         "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
    }

    override public func isReady() async -> Bool {
        (try? await TestEnvironment.http("GET", url.appendingPathComponent("-/ready"), timeoutSeconds: 1).status) == 200
    }

    /// An instant query's result vector: each element's labels and value.
    public func query(_ promql: String, at time: Double? = nil) async throws -> [(labels: [String: String], value: Double)] {
        var components = URLComponents(url: url.appendingPathComponent("api/v1/query"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "query", value: promql)] + (time.map { [URLQueryItem(name: "time", value: String($0))] } ?? [])
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        let (status, body) = try await TestEnvironment.http("GET", components.url!)
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
    public func samples(_ selector: String) async throws -> [(labels: [String: String], values: [(time: Double, value: Double)])] {
        var components = URLComponents(url: url.appendingPathComponent("api/v1/query"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "query", value: selector)]
        let (status, body) = try await TestEnvironment.http("GET", components.url!)
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

