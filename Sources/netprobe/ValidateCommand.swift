import ArgumentParser
import ProbeConfig

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a config file and the targets files it names, without probing.",
        discussion: """
            Prints every problem as FILE:LINE:COLUMN: error: MESSAGE, with what to change: \
            unknown keys, wrong types, bad durations, ports out of range, duplicate targets, \
            empty groups, missing or exposed secrets. `run` refuses an invalid config with \
            the same messages.

            Exit status: 0 valid, 2 invalid.
            """
    )

    @Option(help: ArgumentHelp("The config file.", valueName: "file"))
    var config: String

    func run() throws {
        do {
            let loaded = try ConfigurationLoader.load(path: config)
            for warning in loaded.warnings { Terminal.printError(warning.description) }
            Terminal.printLine("\(config): valid: probe \"\(loaded.probeName)\", \(loaded.pingTargets.count) ping target(s), "
                + "\(loaded.tcpTargets.count) tcp target(s), \(loaded.influxServers.count) InfluxDB server(s)")
            if let prometheus = loaded.prometheus {
                Terminal.printLine("\(config): \(prometheus.probe.moduleSummary)")
            }
            if let web = loaded.web {
                Terminal.printLine("\(config): web view at \(web.url) (loopback; from another machine: \(web.sshTunnel), then open http://127.0.0.1:\(web.port)/)")
            }
        } catch {
            Terminal.printError(error.description)
            throw ExitCode(2)
        }
    }
}
