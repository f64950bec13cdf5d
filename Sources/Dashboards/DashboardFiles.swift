import Foundation
import ProbeConfig

/// One file `netprobe dashboards` writes, relative to the output folder.
public struct GeneratedFile: Equatable, Sendable {
    /// Path below the output folder, e.g. `dashboards/netprobe-icmp.json`.
    public var path: String
    /// The whole content.
    public var contents: String
}

/// Errors of reading targets or writing the generated files.
public enum DashboardFilesError: Error, CustomStringConvertible {
    case noTargetsFiles(directory: String)
    case invalidTargets(ConfigurationErrors)
    case write(path: String, reason: String)

    public var description: String {
        switch self {
        case .noTargetsFiles(let directory):
            return "\(directory): neither ping.yaml nor tcp.yaml is there; give the folder of the targets files (e.g. --targets targets)"
        case .invalidTargets(let errors):
            return errors.description
        case .write(let path, let reason):
            return "\(path): cannot write: \(reason)"
        }
    }
}

/// Reads the targets files and writes dashboards and provisioning.
public enum DashboardFiles {
    /// The files for a set of targets.
    /// - Parameters:
    ///   - ping: ping targets, in file order.
    ///   - tcp: tcp targets, in file order.
    ///   - dashboardsPath: where Grafana will find the `dashboards/` folder (written
    ///     into the provider file).
    /// - Returns: dashboards, datasource and provider files, in a fixed order.
    ///   - languages: which datasources to write dashboards for (InfluxDB, Prometheus, both).
    public static func files(ping: [PingTarget], tcp: [TCPTarget], dashboardsPath: String, paths: Bool = false, languages: [QueryLanguage] = [.influxQL]) -> [GeneratedFile] {
        var files: [GeneratedFile] = []
        if languages.contains(.influxQL) {
            files += [
                GeneratedFile(path: "dashboards/\(DashboardGenerator.icmpDashboardUID).json",
                              contents: DashboardGenerator.icmpDashboard(targets: ping, paths: paths).rendered),
                GeneratedFile(path: "dashboards/\(DashboardGenerator.tcpDashboardUID).json",
                              contents: DashboardGenerator.tcpDashboard(targets: tcp, paths: paths).rendered),
                GeneratedFile(path: "provisioning/datasources/netprobe.yaml", contents: Provisioning.datasource),
            ]
        }
        if languages.contains(.promQL) {
            files += [
                GeneratedFile(path: "dashboards/\(QueryLanguage.promQL.uid(DashboardGenerator.icmpDashboardUID)).json",
                              contents: DashboardGenerator.icmpDashboard(targets: ping, language: .promQL).rendered),
                GeneratedFile(path: "dashboards/\(QueryLanguage.promQL.uid(DashboardGenerator.tcpDashboardUID)).json",
                              contents: DashboardGenerator.tcpDashboard(targets: tcp, language: .promQL).rendered),
                GeneratedFile(path: "provisioning/datasources/netprobe-prometheus.yaml", contents: Provisioning.prometheusDatasource),
            ]
        }
        files.append(GeneratedFile(path: "provisioning/dashboards/netprobe.yaml", contents: Provisioning.dashboardProvider(path: dashboardsPath)))
        return files
    }

    /// Reads `ping.yaml` and `tcp.yaml` of a folder; a missing one means no targets of
    /// that kind (its dashboard has only the summary), both missing is an error.
    /// - Parameter directory: the targets folder.
    /// - Returns: the ping and tcp targets in file order.
    /// - Throws: `DashboardFilesError` with every problem of the files (file:line:column).
    public static func loadTargets(directory: String) throws(DashboardFilesError) -> (ping: [PingTarget], tcp: [TCPTarget]) {
        let pingPath = (directory as NSString).appendingPathComponent("ping.yaml")
        let tcpPath = (directory as NSString).appendingPathComponent("tcp.yaml")
        let manager = FileManager.default
        let hasPing = manager.fileExists(atPath: pingPath)
        let hasTCP = manager.fileExists(atPath: tcpPath)
        guard hasPing || hasTCP else { throw .noTargetsFiles(directory: directory) }
        var errors: [ConfigurationError] = []
        var ping: [PingTarget] = []
        var tcp: [TCPTarget] = []
        if hasPing {
            do { ping = try ConfigurationLoader.loadPingTargets(path: pingPath) } catch { errors += error.errors }
        }
        if hasTCP {
            do { tcp = try ConfigurationLoader.loadTCPTargets(path: tcpPath) } catch { errors += error.errors }
        }
        guard errors.isEmpty else { throw .invalidTargets(ConfigurationErrors(errors: errors)) }
        return (ping, tcp)
    }

    /// Writes the files below `directory`, each only when its content differs from what is
    /// there (an unchanged file keeps its bytes and its modification time), atomically.
    /// - Parameters:
    ///   - files: what to write.
    ///   - directory: the output folder, created if missing.
    /// - Returns: the paths (below `directory`) that were written.
    /// - Throws: `DashboardFilesError.write` naming the file.
    @discardableResult
    public static func write(_ files: [GeneratedFile], to directory: String) throws(DashboardFilesError) -> [String] {
        var written: [String] = []
        for file in files {
            let path = (directory as NSString).appendingPathComponent(file.path)
            let data = Data(file.contents.utf8)
            if FileManager.default.contents(atPath: path) == data { continue }
            do {
                try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                        withIntermediateDirectories: true)
                try data.write(to: URL(fileURLWithPath: path), options: .atomic)
                // Grafana may run as another user: the files hold no secret.
                try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
            } catch {
                throw .write(path: path, reason: error.localizedDescription)
            }
            written.append(file.path)
        }
        return written
    }
}
