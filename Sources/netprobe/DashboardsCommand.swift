import ArgumentParser
import Dashboards
import Foundation
import ProbeConfig

struct DashboardsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboards",
        abstract: "Generate Grafana dashboards and provisioning from the targets files.",
        discussion: """
            Reads ping.yaml and tcp.yaml of the targets folder and writes, below the output \
            folder:
              dashboards/netprobe-icmp.json, dashboards/netprobe-tcp.json
              provisioning/datasources/netprobe.yaml (InfluxDB; settings from Grafana's \
            environment: NETPROBE_INFLUXDB_URL, NETPROBE_INFLUXDB_DATABASE, \
            NETPROBE_INFLUXDB_READ_USER, NETPROBE_INFLUXDB_READ_PASSWORD)
              provisioning/dashboards/netprobe.yaml (loads the dashboards folder)

            With --datasource prometheus (or both), the same dashboards for a Prometheus \
            datasource scraping `run`'s /metrics (PromQL): \
            dashboards/netprobe-icmp-prometheus.json, dashboards/netprobe-tcp-prometheus.json \
            and provisioning/datasources/netprobe-prometheus.yaml (NETPROBE_PROMETHEUS_URL).

            Unchanged targets give byte-identical files, and a file whose content is \
            unchanged is not rewritten. Point Grafana's provisioning path at the \
            provisioning folder (compose and deployment.sh do).

            Exit status: 0 written, 2 invalid targets files, 4 a file could not be written.
            """
    )

    @Option(help: ArgumentHelp("The folder holding ping.yaml and tcp.yaml.", valueName: "dir"))
    var targets: String

    @Option(help: ArgumentHelp("Where to write dashboards/ and provisioning/.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("The dashboards folder as Grafana sees it (default: OUT/dashboards, absolute).", valueName: "path"))
    var dashboardsPath: String?

    @Flag(help: "Add a path panel per target: the path changes that `netprobe run` records with a trace: section.")
    var paths = false

    @Option(help: ArgumentHelp("Which datasource the dashboards query: influxdb, prometheus or both.", valueName: "kind"))
    var datasource: DashboardDatasource = .influxdb

    func run() throws {
        let loaded: (ping: [PingTarget], tcp: [TCPTarget])
        do {
            loaded = try DashboardFiles.loadTargets(directory: targets)
        } catch {
            Terminal.printError(error.description)
            throw ExitCode(2)
        }
        let absoluteOut = URL(fileURLWithPath: out).standardizedFileURL.path
        let providerPath = dashboardsPath ?? (absoluteOut as NSString).appendingPathComponent("dashboards")
        let files = DashboardFiles.files(ping: loaded.ping, tcp: loaded.tcp, dashboardsPath: providerPath, paths: paths, languages: datasource.languages)
        do {
            let written = try DashboardFiles.write(files, to: out)
            Terminal.printLine("\(out): \(loaded.ping.count) ping target(s), \(loaded.tcp.count) tcp target(s); "
                + (written.isEmpty ? "every file was already up to date" : "wrote \(written.joined(separator: ", "))"))
        } catch {
            Terminal.printError(error.description)
            throw ExitCode(ExitStatus.systemError)
        }
    }
}

/// `dashboards --datasource`.
enum DashboardDatasource: String, ExpressibleByArgument, CaseIterable {
    case influxdb, prometheus, both

    var languages: [QueryLanguage] {
        switch self {
        case .influxdb: return [.influxQL]
        case .prometheus: return [.promQL]
        case .both: return [.influxQL, .promQL]
        }
    }
}
