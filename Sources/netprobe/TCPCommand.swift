import ArgumentParser
import Logging
import ProbeEngine

struct TCPCommand: AsyncParsableCommand, PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcp",
        abstract: "Measure TCP handshake times (SYN to SYN-ACK) to many host:port targets.",
        discussion: """
            Opens non-blocking connections from one event-loop thread, thousands in flight at \
            once. The handshake time is the kernel's own first RTT sample of the connection \
            (TCP_INFO tcpi_rtt, microseconds) when the SYN was not retransmitted, else the \
            monotonic time from connect() to writable; --json's timestamp_source says which.

            Outcome per attempt: ok, refused (RST or ICMP port unreachable), timeout (no \
            answer before --timeout: filtered), unreachable (host or network unreachable), \
            error. The deadline is netprobe's own, not the kernel's SYN retries.

            Half-open by default: the kernel holds the final ACK back (TCP_QUICKACK off) and \
            netprobe closes with an RST as soon as the SYN-ACK is in, so the server never \
            completes the connection: nothing reaches its application or its logs, and no \
            TIME_WAIT socket is left on either side. A handshake whose ACK did leave (netprobe \
            was later than the kernel's 200 ms delayed-ACK timer) is still measured and \
            counted as "completed" (--json key). --tcp-mode connect makes full connections, \
            closed with a FIN. The open-file limit is raised to its hard limit; in-flight \
            handshakes are held below it.

            Needs no privilege. Targets: HOST:PORT, HOST:PORT,PORT, [IPv6]:PORT.

            Exit status: 0 every target connected, 1 some did not, 2 a name did not \
            resolve, 3 bad arguments, 4 system error.
            """
    )

    @OptionGroup var options: ProbeOptions

    @OptionGroup var tcp: TCPModeOption

    @Argument(help: ArgumentHelp("HOST:PORT targets, e.g. db.example.com:5432, [::1]:80, 127.0.0.1:80,443.", valueName: "host:port"))
    var targets: [String] = []

    func validate() throws {
        for target in targets { _ = try Endpoint.parse(target, requirePort: true) }
    }

    /// No privilege to take, but drop whatever this process holds (run as root, say)
    /// before any thread exists, and raise the open-file limit while we are at it.
    func acquirePrivilegedResources() throws {
        try dropPrivileges()
    }

    func run() async throws {
        let logger = options.makeLogger()
        let endpoints = try options.collectTargets(targets).map { try Endpoint.parse($0, requirePort: true) }
        let resolved = await resolveEndpoints(endpoints, preference: options.addressPreference)
        let prober = try TCPProber(configuration: tcpConfiguration(
            count: options.count, interval: options.interval, timeout: options.timeout, rate: options.rate, targetCount: resolved.count, mode: tcp.mode, logger: logger), logger: logger)
        let interrupts = InterruptHandler { prober.stop() }
        defer { interrupts.cancel() }
        let printer = ResultPrinter(json: options.json, quiet: options.quiet)
        let status = await consume(prober.probe(resolved, reportingAttempts: !(options.quiet || options.json)), printer: printer)
        if status != ExitStatus.allAnswered { throw ExitCode(status) }
    }
}

/// The TCP prober's settings from the shared options, with the in-flight bound taken from
/// the open-file limit (and a warning when that limit is what holds probing back).
func tcpConfiguration(count: Int, interval: DurationArgument, timeout: DurationArgument, rate: Double, targetCount: Int, mode: TCPProbeMode,
                      logger: Logger) -> TCPProbeConfiguration {
    let limit = ResourceLimits.raiseOpenFileLimit()
    let reserve = 64
    let maximumInFlight = max(1, min(limit - reserve, 65_536))
    let wanted = min(targetCount, Int(rate * timeout.seconds) + 1)
    if wanted > maximumInFlight {
        logger.warning("open-file limit is low for this many targets: handshakes will be held back to fit; raise it with ulimit -n",
                       metadata: ["limit": "\(limit)", "wanted_in_flight": "\(wanted)"])
    }
    // Sends are spread over the interval: each target once per interval, at most `rate`.
    let needed = min(rate, Double(targetCount) * 1e9 / Double(interval.nanoseconds))
    if mode == .connect && needed > TCPProbeMode.connectAttemptsPerSecondLimit {
        logger.warning("connect mode is held to \(Int(TCPProbeMode.connectAttemptsPerSecondLimit)) handshakes a second (each leaves a TIME_WAIT socket here for 60 s); rounds will take longer than asked, or use half-open mode",
                       metadata: ["needed_per_second": "\(Int(needed))"])
    }
    return TCPProbeConfiguration(count: count, intervalNanoseconds: interval.nanoseconds, timeoutNanoseconds: timeout.nanoseconds,
                                 attemptsPerSecond: rate, maximumInFlight: maximumInFlight, mode: mode)
}
