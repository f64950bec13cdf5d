import ArgumentParser
import Glibc
import Logging
import ProbeEngine
import ProbeResults

struct PingCommand: PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Send ICMP echo requests to many targets at once and report round-trip times.",
        discussion: """
            Works like ping for one target and like fping for thousands: one socket per \
            address family serves every target, sends are spread evenly (never more than \
            --rate per second), and times come from the kernel's own send and receive \
            timestamps (SO_TIMESTAMPING), so a busy machine does not inflate them.

            Privileges: with CAP_NET_RAW (root, or `setcap cap_net_raw+ep netprobe`) raw \
            sockets are used; otherwise unprivileged ICMP sockets where \
            net.ipv4.ping_group_range allows. Every capability is dropped as soon as the \
            sockets are open.

            Exit status: 0 every target answered, 1 some did not, 2 a name did not \
            resolve, 3 bad arguments, 4 system error (e.g. no privilege).
            """
    )

    @OptionGroup var options: ProbeOptions

    @Option(name: .shortAndLong, help: ArgumentHelp("ICMP payload bytes (\(ICMPEcho.minimumPayloadLength) to \(ICMPEcho.maximumPayloadLength)); packets are 28 bytes more (IPv6: 48). Beyond the outgoing interface's MTU only with -M (do: test the path; dont: fragments on purpose).", valueName: "bytes"))
    var size: Int = 56

    @Option(name: .shortAndLong, help: "IP time to live (IPv6 hop limit) of the requests (1 to 255).")
    var ttl: Int?

    @OptionGroup(title: "Packet options") var packet: PacketOptionsOption

    @OptionGroup var fragmentation: FragmentationOption

    @Argument(help: ArgumentHelp("Host names or addresses.", valueName: "target"))
    var targets: [String] = []

    func validate() throws {
        guard size >= ICMPEcho.minimumPayloadLength, size <= ICMPEcho.maximumPayloadLength else {
            throw ValidationError("--size must be between \(ICMPEcho.minimumPayloadLength) and \(ICMPEcho.maximumPayloadLength) bytes (netprobe's payload carries a cookie and the probe number), got \(size).")
        }
        if let ttl, !(1...255).contains(ttl) { throw ValidationError("--ttl must be between 1 and 255, got \(ttl).") }
        _ = try packet.preference(options.addressPreference)
        _ = try fragmentation.fragmentation()
    }

    func run(with resources: PrivilegedResources) async throws {
        let logger = options.makeLogger()
        let names = try options.collectTargets(targets)
        try packet.checkFamilies(of: names)
        let packetOptions = try packet.packetOptions()
        let resolved = try fragmentation.apply(to: PacketOptionsOption.apply(packetOptions, to: await Resolver.resolve(names, preference: try packet.preference(options.addressPreference))))
        try fragmentation.checkSize(size, targets: resolved)
        for target in resolved where target.address == nil {
            logger.debug("cannot resolve target", metadata: ["target": "\(target.name)", "reason": "\(target.resolutionError ?? "unknown")"])
        }
        let configuration = ICMPProbeConfiguration(
            count: options.count, intervalNanoseconds: options.interval.nanoseconds, timeoutNanoseconds: options.timeout.nanoseconds,
            payloadLength: size, ttl: ttl, packetsPerSecond: options.rate)
        guard let sockets = resources.icmpSockets else {
            writeError("netprobe: internal error: ICMP sockets were not opened before probing")
            throw ExitCode(ExitStatus.systemError)
        }
        let prober: ICMPProber
        do {
            let probers = try Probers(sockets: ProbeSockets(icmp: sockets),
                                      timerSlackNanoseconds: ProbeLoop.batchingTimerSlack(shortestGapNanoseconds: options.interval.nanoseconds), logger: logger)
            // The sockets are there (checked above), so there is a prober.
            prober = try probers.icmp(configuration) ?? { preconditionFailure("Probers made no ICMP prober over open sockets") }()
        } catch {
            writeError("netprobe: cannot start: \(error)")
            throw ExitCode(ExitStatus.systemError)
        }

        let interrupts = SignalWatcher.onInterrupt { prober.stop() }
        defer { interrupts.cancel() }

        let status = await consume(prober.probe(resolved, reportingAttempts: !(options.quiet || options.json)),
                                   printer: ResultPrinter(json: options.json, quiet: options.quiet))
        let diagnostics = prober.diagnostics
        if !diagnostics.ignoredReplies.isEmpty || !diagnostics.rejectedPackets.isEmpty {
            logger.debug("packets not counted", metadata: ["ignored": "\(diagnostics.ignoredReplies)", "rejected": "\(diagnostics.rejectedPackets)"])
        }
        if status != ExitStatus.allAnswered { throw ExitCode(status) }
    }

    /// Opens the ICMP sockets and drops every capability, before any thread is started.
    func acquirePrivilegedResources() throws -> PrivilegedResources {
        let logger = options.makeLogger()
        // Without -4/-6 either family may be missing on this host; targets of a family
        // without a socket then report "error".
        let (families, optional) = try packet.preference(options.addressPreference).socketFamilies
        let sockets: ICMPSocketSet
        let kinds = try fragmentation.socketKinds()
        do {
            sockets = try ICMPSocketSet.open(families: families, optional: optional, ttl: ttl, fragmentation: kinds, logger: logger)
        } catch {
            writeError(Self.explain(error))
            throw ExitCode(ExitStatus.systemError)
        }
        try packet.checkSockets(sockets)
        try dropPrivileges()
        logger.debug("sockets open, capabilities dropped", metadata: [
            "modes": "\(sockets.modes.map { "\($0.key.rawValue)=\($0.value.rawValue)" }.sorted().joined(separator: ","))",
        ])
        return PrivilegedResources(icmpSockets: sockets)
    }

    /// The message for a socket that could not be opened, with both ways to fix it.
    static func explain(_ error: ICMPSocketError) -> String {
        switch error {
        case .notPermitted(_, let groupID):
            let executable = Terminal.executablePath
            let range = Terminal.readAll(path: "/proc/sys/net/ipv4/ping_group_range")?
                .split(whereSeparator: \.isWhitespace).joined(separator: " ") ?? "unknown"
            return """
                netprobe: not permitted to open an ICMP socket.
                  Raw ICMP sockets need CAP_NET_RAW, which this process does not have, and
                  unprivileged ICMP sockets are closed to group \(groupID) (net.ipv4.ping_group_range is "\(range)").
                Fix it either way:
                  sudo setcap cap_net_raw+ep \(executable)
                      (netprobe drops the capability as soon as its sockets are open)
                  sudo sysctl -w net.ipv4.ping_group_range="\(groupID) \(groupID)"
                      (or "0 2147483647" for every group; put the line in /etc/sysctl.d/ to keep it)
                """
        case .system:
            return "netprobe: \(error)"
        }
    }
}

/// Raises the open-file limit (TCP handshakes in flight each hold one) and gives up every
/// capability; called on the main thread before any other thread exists.
/// - Throws: `ExitCode` 4 when the capabilities cannot be dropped.
func dropPrivileges() throws {
    ResourceLimits.raiseOpenFileLimit()
    do {
        try Privileges.dropAll()
    } catch {
        writeError("netprobe: cannot drop capabilities: \(error)")
        throw ExitCode(ExitStatus.systemError)
    }
}

func writeError(_ text: String) {
    Terminal.printError(text)
}
