import ArgumentParser
import Logging
import ProbeEngine
import ProbeResults
import ProbeService

struct TCPCommand: PrivilegedCommand {
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

    @OptionGroup(title: "Packet options") var packet: PacketOptionsOption

    @Argument(help: ArgumentHelp("HOST:PORT targets, e.g. db.example.com:5432, [::1]:80, 127.0.0.1:80,443.", valueName: "host:port"))
    var targets: [String] = []

    /// Taken only to refuse it with a reason (ping's option, often tried here).
    @Option(name: [.customShort("M"), .customLong("pmtu-discovery")], help: .hidden)
    var pmtuDiscovery: String?

    func validate() throws {
        if pmtuDiscovery != nil {
            throw ValidationError("-M (don't-fragment) applies to ICMP echo only: TCP segments are sized by the kernel from the path MTU and the server's MSS, and a handshake's SYN is small. Use `netprobe ping -M do -s SIZE HOST` to test a path's MTU.")
        }
        for target in targets { _ = try Endpoint.parse(target, requirePort: true) }
        _ = try packet.preference(options.addressPreference)
    }

    /// No privilege to take, but drop whatever this process holds (run as root, say)
    /// before any thread exists, and raise the open-file limit while we are at it.
    func acquirePrivilegedResources() throws -> PrivilegedResources {
        try dropPrivileges()
        return PrivilegedResources()
    }

    func run(with resources: PrivilegedResources) async throws {
        let logger = options.makeLogger()
        let endpoints = try options.collectTargets(targets).map { try Endpoint.parse($0, requirePort: true) }
        try packet.checkFamilies(of: endpoints.map(\.host))
        let packetOptions = try packet.packetOptions()
        let resolved = PacketOptionsOption.apply(packetOptions, to: await resolveEndpoints(endpoints, preference: try packet.preference(options.addressPreference)))
        let prober = try Probers(sockets: ProbeSockets(), logger: logger).tcp(EngineSettings.tcp(
            count: options.count, intervalNanoseconds: options.interval.nanoseconds, timeoutNanoseconds: options.timeout.nanoseconds, rate: options.rate,
            targetCount: resolved.count, mode: tcp.mode, logger: logger))
        let interrupts = SignalWatcher.onInterrupt { prober.stop() }
        defer { interrupts.cancel() }
        let printer = ResultPrinter(json: options.json, quiet: options.quiet)
        let status = await consume(prober.probe(resolved, reportingAttempts: !(options.quiet || options.json)), printer: printer)
        if status != ExitStatus.allAnswered { throw ExitCode(status) }
    }
}
