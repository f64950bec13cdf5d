import ArgumentParser
import Glibc
import Logging
import ProbeEngine
import ProbeResults

struct TraceCommand: PrivilegedCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Trace the path to many hosts at once, hop by hop (ICMP, or TCP SYN to HOST:PORT), and say where loss starts.",
        discussion: """
            An mtr-like report: every round sends one TTL-limited ICMP echo request per hop \
            (and flow); routers answer with time exceeded, the destination with an echo \
            reply. Answers are matched by the header the router quotes (identifier, \
            sequence, destination; cookie and probe number when quoted), times come from \
            the kernel's timestamps. A round's probes are spread over half the interval \
            (at least 1/--rate apart), never sent as a burst. Once the destination answers, \
            hops beyond it are no longer probed, and at the destination one probe per round \
            and flow counts (the lowest-TTL one that reached it): its `sent` is rounds x flows.

            HOST:PORT traces with TCP SYNs to the port instead (for hosts that filter ICMP \
            echo): half-open, as `netprobe tcp`: the destination's SYN-ACK is answered by \
            this host's kernel with a RST, so its application never sees a connection. All \
            SYNs of a flow share one 5-tuple (source port reserved by a bound socket); the \
            probe's number is the sequence number, which routers quote and the SYN-ACK or \
            RST acknowledges. TCP times come from the kernel's timestamps too (the SYN's \
            send stamp on the raw TCP socket, the answer's receive stamp); --json names the \
            clock of each hop (timestamp_source).

            One flow identifier per trace (Paris traceroute): the ICMP checksum stays the \
            same for every probe, so a per-flow load balancer sends all of them down one \
            branch and the hop list is one path. --flows N probes N flow identifiers: the \
            equal-cost branches show as several addresses at a hop (each with its answers), \
            and each flow's path is printed with its own loss and median at every hop \
            (--json: "flows" in each hop), so a lossy branch shows in the flows that take it.

            Reading the report (the rules):
              1. A hop rate-limits (its ICMP, or answers slowly) when it loses more than
                 the later hops together (the destination included), by more than 5
                 standard deviations (two-proportion test) and 2 probes: shown as
                 "rate-limits (not loss)", never as loss.
              2. Forwarded loss ("fwd loss") is the loss of the traffic through a hop: what
                 a router drops every later hop misses, so it never falls along the path
                 (the best non-decreasing fit of the hops that do not rate-limit).
              3. When the destination loses 1% or more (2 probes at least), loss starts at
                 the hop that best splits the path into "before" and "from here on" loss
                 rates (maximum likelihood, significant at 99%; else at hop 1).
              4. Latency is added at the hop whose forwarded median RTT rises most over the
                 hop before it, when the rise is 1 ms or more and half the destination's.

            How the path ends, in the headline and --json's "ending":
              reached       the destination answered
              unreachable   a router or the host answered destination unreachable, with
                            mtr's marks: !N net, !H host, !P protocol/port, !X prohibited,
                            !F fragmentation needed, !<code> otherwise. An unreachable is
                            never a reply: it is counted apart ("unreachable"), not in
                            "recv". A router that must first resolve its next hop answers
                            only when its neighbour lookup gives up (about 3 s on Linux),
                            so an unreachable still counts up to 4 s after the send (after
                            -W), and a trace whose target did not answer waits up to 4 s
                            after its last probe for one.
              routing_loop  the same addresses answer again at later TTLs
              max_hops      the largest TTL probed (-m) was answered by a router
              filtered      the target never answered and the 3 hops after the last one
                            that did stayed silent over 2 rounds: probing past them stops
                            (they show as ???)
              no_answer     the target did not answer (too few rounds to say filtered)

            --mtu finds where the path MTU drops, as tracepath does: the echo probes leave \
            with don't-fragment set (IP_PMTUDISC_PROBE: the host's path-MTU cache is \
            ignored, so every trace asks the path again), at the outgoing interface's MTU \
            (this host refuses larger ones and names it) or at -s bytes of payload. A router \
            that cannot forward a probe onto its next link answers "fragmentation needed" / \
            "packet too big" with that link's MTU: the probes go on at that size and the \
            probe is sent again at once (it counts neither as sent nor as lost). The report \
            names each hop where the MTU drops and the MTU after it ("path MTU 1500 -> 1400 \
            at hop 2 (ADDRESS)"); each hop's "mtu" is the largest packet (IP header \
            included) it answered. One flow and ICMP only: --mtu with --flows above 1 or \
            with HOST:PORT is refused.

            Needs raw ICMP sockets (CAP_NET_RAW: root, or setcap cap_net_raw+ep netprobe), \
            dropped as soon as they are open.

            Exit status: 0 every target was reached, 1 some was not, 2 a name did not \
            resolve, 3 bad arguments, 4 system error (e.g. no privilege).
            """
    )

    @Option(name: .shortAndLong, help: "Rounds per target; 0 traces until interrupted (Ctrl-C).")
    var count: Int = 10

    @Option(name: .shortAndLong, help: ArgumentHelp("Time between two rounds to the same target (seconds, or with a unit: 200ms).", valueName: "interval"))
    var interval = DurationArgument(nanoseconds: 1_000_000_000)

    @Option(name: [.customShort("W"), .long], help: ArgumentHelp("How long to wait for each answer; later answers count as lost.", valueName: "timeout"))
    var timeout = DurationArgument(nanoseconds: 1_000_000_000)

    @Option(name: [.customShort("m"), .long], help: "The largest TTL / hop limit probed (1 to 255).")
    var maxHops: Int = 30

    @Option(name: .long, help: "The first TTL probed (hops before it are skipped).")
    var firstHop: Int = 1

    @Option(name: .long, help: "Flow identifiers per target: 1 is one consistent path; more show equal-cost branches (1 to 16).")
    var flows: Int = 1

    @Option(help: ArgumentHelp("Most probes per second over all targets.", valueName: "per-second"))
    var rate: Double = 1000

    @Flag(help: "Find where the path MTU drops: don't-fragment probes, lowered to each 'too big' answer's MTU (ICMP, one flow).")
    var mtu = false

    @Option(name: [.customShort("s"), .long], help: ArgumentHelp("With --mtu: ICMP payload bytes of the first probes, as ping -s (1472: 1500-byte IPv4 packets); default: the outgoing interface's MTU.", valueName: "bytes"))
    var size: Int?

    @OptionGroup var family: AddressFamilyOption

    @OptionGroup(title: "Packet options") var packet: PacketOptionsOption

    @Flag(help: "Print one JSON object per target (JSON Lines) instead of the text report.")
    var json = false

    @Flag(name: .shortAndLong, help: "Log what netprobe does to standard error.")
    var verbose = false

    @Argument(help: ArgumentHelp("HOST (ICMP) or HOST:PORT (TCP SYN), [IPv6]:PORT.", valueName: "host[:port]"))
    var targets: [String]

    func validate() throws {
        guard count >= 0 else { throw ValidationError("--count must be 0 (until interrupted) or more, got \(count).") }
        guard interval.nanoseconds >= 1_000_000 else { throw ValidationError("--interval must be at least 1ms, got \(interval).") }
        guard timeout.nanoseconds >= 1_000_000 else { throw ValidationError("--timeout must be at least 1ms, got \(timeout).") }
        guard (1...255).contains(maxHops) else { throw ValidationError("--max-hops must be between 1 and 255, got \(maxHops).") }
        guard (1...maxHops).contains(firstHop) else { throw ValidationError("--first-hop must be between 1 and --max-hops (\(maxHops)), got \(firstHop).") }
        guard (1...16).contains(flows) else { throw ValidationError("--flows must be between 1 and 16, got \(flows).") }
        guard rate > 0, rate <= 100_000 else { throw ValidationError("--rate must be between 1 and 100000 probes per second, got \(rate).") }
        for target in targets { _ = try Endpoint.parse(target, requirePort: false) }
        _ = try packet.preference(family.preference)
        try validateMTU()
    }

    /// --mtu and -s: DF probes need one flow and ICMP echo (a payload to size).
    func validateMTU() throws {
        if let size {
            guard mtu else { throw ValidationError("-s/--size sets the first probe size of --mtu; add --mtu (trace probes are small otherwise).") }
            let largest = 65_535 - 20 - 8  // the largest IPv4 packet, less its IP and ICMP headers
            guard (PathPacket.minimumPayloadLength...largest).contains(size) else {
                throw ValidationError("-s/--size must be between \(PathPacket.minimumPayloadLength) and \(largest) bytes of ICMP payload, got \(size).")
            }
        }
        guard mtu else { return }
        guard flows == 1 else {
            throw ValidationError("--mtu probes one flow per target (the MTU of one path); drop --flows \(flows), or trace the branches without --mtu.")
        }
        if let target = try targets.first(where: { !(try Endpoint.parse($0, requirePort: false).ports.isEmpty) }) {
            throw ValidationError("--mtu sizes ICMP echo probes; \(target) is a TCP SYN trace (a SYN carries no payload to size): give the host without a port.")
        }
    }

    /// -4 / -6, narrowed to the family of --source when one is given.
    var preference: AddressPreference { (try? packet.preference(family.preference)) ?? family.preference }

    func makeLogger() -> Logger { CommandLogger.make(verbose: verbose) }

    func acquirePrivilegedResources() throws -> PrivilegedResources {
        let logger = makeLogger()
        let (families, optional) = preference.socketFamilies
        let sockets: ICMPSocketSet
        do {
            sockets = try ICMPSocketSet.open(families: families, optional: optional, ttl: nil, logger: logger)
        } catch {
            writeError(PingCommand.explain(error))
            throw ExitCode(ExitStatus.systemError)
        }
        try packet.checkSockets(sockets)
        var resources = PrivilegedResources(icmpSockets: sockets)
        if Endpoint.anyHasPort(targets) {
            do {
                resources.pathTCPSockets = try PathTCPSockets.open(families: families, flows: flows, optional: optional)
            } catch {
                writeError("netprobe: cannot open a raw TCP socket for TCP traces: \(error) (needs CAP_NET_RAW, as ICMP traces)")
                throw ExitCode(ExitStatus.systemError)
            }
        }
        try dropPrivileges()
        return resources
    }

    func run(with resources: PrivilegedResources) async throws {
        let logger = makeLogger()
        guard let sockets = resources.icmpSockets else {
            writeError("netprobe: internal error: ICMP sockets were not opened before tracing")
            throw ExitCode(ExitStatus.systemError)
        }
        // HOST traces with ICMP, HOST:PORT (one trace per port) with TCP SYNs.
        let endpoints = try targets.map { try Endpoint.parse($0, requirePort: false) }
        try packet.checkFamilies(of: endpoints.map(\.host))
        let packetOptions = try packet.packetOptions()
        let hostTargets = PacketOptionsOption.apply(packetOptions, to: await Resolver.resolve(endpoints.map(\.host), preference: preference))
        var resolved: [ProbeTarget] = []
        for (endpoint, target) in zip(endpoints, hostTargets) {
            if endpoint.ports.isEmpty { resolved.append(target) }
            for port in endpoint.ports {
                var withPort = target
                withPort.port = port
                resolved.append(withPort)
            }
        }
        let prober: PathProber
        do {
            // The sockets are there (opened above), so there is a prober.
            prober = try Probers(sockets: ProbeSockets(path: sockets, pathTCP: resources.pathTCPSockets), logger: logger).path(pathConfiguration)
                ?? { preconditionFailure("Probers made no path prober over open sockets") }()
        } catch {
            writeError("netprobe: cannot trace: \(error)")
            throw ExitCode(ExitStatus.systemError)
        }
        let interrupts = SignalWatcher.onInterrupt { prober.stop() }
        defer { interrupts.cancel() }
        var traces: [PathTrace] = []
        for await trace in prober.trace(resolved) { traces.append(trace) }
        prober.close()
        var statuses: [Int32] = []
        for trace in traces.sorted(by: { $0.targetIndex < $1.targetIndex }) {
            print(json ? TracePrinter.json(trace) : TracePrinter.text(trace))
            if !json { print("") }
            statuses.append(trace.target.address == nil ? ExitStatus.unresolved : trace.reached ? ExitStatus.allAnswered : ExitStatus.someUnanswered)
        }
        let status = statuses.contains(ExitStatus.unresolved) ? ExitStatus.unresolved : (statuses.max() ?? 0)
        if status != ExitStatus.allAnswered { throw ExitCode(status) }
    }

    var pathConfiguration: PathProbeConfiguration {
        PathProbeConfiguration(rounds: count, intervalNanoseconds: interval.nanoseconds, timeoutNanoseconds: timeout.nanoseconds,
                               maxHops: maxHops, firstHop: firstHop, flows: flows, packetsPerSecond: rate,
                               discoversMTU: mtu, mtuStartPayloadLength: size)
    }
}
