import Foundation
import Logging
import ProbeConfig
import ProbeResults

extension InfluxSink: PointSink {
    /// Rounds encoded as they come, each target's series key made once.
    public func roundWriter(probe: String) -> any RoundPointWriter {
        RoundLines(sink: self, encoder: RoundLineEncoder(probe: probe))
    }

    /// The sink of a configuration's `influxdb:` servers; nil when it names none.
    /// - Throws: `InfluxSinkError` when a URL is not one, or the spool cannot be opened.
    public static func make(for configuration: NetprobeConfiguration, logger: Logger) throws -> InfluxSink? {
        guard !configuration.influxServers.isEmpty else { return nil }
        let servers = try configuration.influxServers.map { settings -> InfluxServer in
            guard let url = URL(string: settings.url) else {
                throw InfluxSinkError.invalidConfiguration("\(configuration.file): influxdb url '\(settings.url)' is not a URL")
            }
            return InfluxServer(name: settings.name, url: url, api: settings.api, caFile: settings.caFile, gzip: settings.gzip)
        }
        return try InfluxSink(servers: servers, spoolDirectory: configuration.spoolDirectory, spoolLimitBytes: configuration.spoolMaximumBytes,
                              batchSize: configuration.batchSize, flushIntervalNanoseconds: configuration.flushIntervalNanoseconds, logger: logger)
    }
}

/// One stream's rounds as line protocol: the sink takes each line as it is.
struct RoundLines: RoundPointWriter {
    let sink: InfluxSink
    var encoder: RoundLineEncoder

    mutating func write(_ round: RoundResult, env: String) throws {
        let line = encoder.line(for: round, env: env)
        try sink.write(encoded: line.map { [$0] } ?? [], unwritable: line == nil ? 1 : 0)
    }
}
