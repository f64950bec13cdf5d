import Foundation

extension TestEnvironment {
    /// Runs async work from a synchronous test body (a simulated network's or a namespace's
    /// body is synchronous). The test servers and their JSON values are not Sendable; one
    /// task at a time touches them.
    public static func blocking<Value>(_ work: @escaping () async throws -> Value) throws -> Value {
        nonisolated(unsafe) var outcome: Result<Value, Error>?
        nonisolated(unsafe) let job = work
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do { outcome = .success(try await job()) } catch { outcome = .failure(error) }
            done.signal()
        }
        done.wait()
        return try outcome!.get()
    }

    /// Writes the config of a `run` that probes one ping targets file and writes to one
    /// InfluxDB 1.x server on this namespace's loopback (database `netprobe`), with a short
    /// flush so points arrive at once: `ping.yaml` and `netprobe.yaml` in `directory`.
    /// - Parameters:
    ///   - probe: the `probe` tag.
    ///   - pingTargets: the ping targets file's text.
    ///   - sections: the config's own lines (`icmp:`, `trace:`, ...), one per line.
    ///   - influxPort: the server's port.
    /// - Returns: the config file's path.
    public static func writeRunConfig(in directory: URL, probe: String, pingTargets: String, sections: [String], influxPort: Int) throws -> String {
        try pingTargets.write(to: directory.appendingPathComponent("ping.yaml"), atomically: true, encoding: .utf8)
        let lines = ["probe: \(probe)", "targets: {ping: ping.yaml, tcp: null}"] + sections + [
            "resolve_interval: 1h",
            "spool: {directory: spool, max_size: 16MB}",
            "batch: {size: 100, flush_interval: 100ms}",
            "influxdb:",
            "  - url: http://127.0.0.1:\(influxPort)",
            "    database: netprobe",
        ]
        let path = directory.appendingPathComponent("netprobe.yaml")
        try (lines.joined(separator: "\n") + "\n").write(to: path, atomically: true, encoding: .utf8)
        return path.path
    }
}
