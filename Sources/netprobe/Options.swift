import ArgumentParser
import Glibc
import Logging
import ProbeEngine
import ProbeResults

/// A duration on the command line: plain seconds ("0.2", as ping takes them) or with a
/// unit ("200ms", "1.5s", "2m", "500us").
struct DurationArgument: ExpressibleByArgument, Sendable, CustomStringConvertible {
    var nanoseconds: Int64

    init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9)]
        var text = argument.trimmed
        var scale = 1e9
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            text.removeLast(suffix.count)
            scale = factor
            break
        }
        guard let value = Double(text), value.isFinite, value >= 0 else { return nil }
        nanoseconds = Int64(value * scale)
    }

    var seconds: Double { Double(nanoseconds) / 1e9 }
    var description: String { "\(seconds)s" }
    var defaultValueDescription: String { description }
}

/// Options every probing command shares.
struct ProbeOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Probes per target; 0 probes until interrupted (Ctrl-C).")
    var count: Int = 5

    @Option(name: .shortAndLong, help: ArgumentHelp("Time between two probes to the same target (seconds, or with a unit: 200ms).", valueName: "interval"))
    var interval = DurationArgument(nanoseconds: 1_000_000_000)

    @Option(name: [.customShort("W"), .long], help: ArgumentHelp("How long to wait for each reply (TCP: each handshake). An ICMP reply later than this, but within one more timeout, is reported as late and counted lost.", valueName: "timeout"))
    var timeout = DurationArgument(nanoseconds: 1_000_000_000)

    @Option(help: ArgumentHelp("""
        Most probes per second over all targets. The default, 1000/s, is gentle on any \
        network (about 100 kB/s of ICMP) yet covers 1000 targets a second; raise it for \
        larger lists.
        """, valueName: "per-second"))
    var rate: Double = 1000

    @OptionGroup var family: AddressFamilyOption

    @Option(name: [.customShort("f"), .customLong("file")], help: ArgumentHelp("Read targets from a file, one per line ('#' starts a comment); '-' reads standard input.", valueName: "file"))
    var file: String?

    @Flag(help: "Print one JSON object per target per round (JSON Lines) instead of text.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print only the summary per target, not a line per reply.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Log what netprobe does to standard error.")
    var verbose = false

    func validate() throws {
        guard count >= 0 else { throw ValidationError("--count must be 0 (until interrupted) or more, got \(count).") }
        guard interval.nanoseconds >= 1_000_000 else { throw ValidationError("--interval must be at least 1ms, got \(interval).") }
        guard timeout.nanoseconds >= 1_000_000 else { throw ValidationError("--timeout must be at least 1ms, got \(timeout).") }
        guard rate > 0, rate <= 1_000_000 else { throw ValidationError("--rate must be between 1 and 1000000 probes per second, got \(rate).") }
    }

    var addressPreference: AddressPreference { family.preference }

    /// The targets from the arguments, the -f file, or standard input when it is not a
    /// terminal and nothing else was given.
    func collectTargets(_ arguments: [String]) throws -> [String] {
        var targets = arguments
        if let file {
            targets += try readTargets(from: file)
        } else if arguments.isEmpty && isatty(STDIN_FILENO) == 0 {
            targets += try readTargets(from: "-")
        }
        guard !targets.isEmpty else {
            throw ValidationError("No targets: name at least one host, or give a list with -f FILE (or on standard input).")
        }
        return targets
    }

    private func readTargets(from path: String) throws -> [String] {
        guard let contents = Terminal.readAll(path: path) else {
            throw ValidationError("Cannot read the targets file \(path): check that it exists and is readable.")
        }
        return contents
            .split(whereSeparator: \.isNewline)
            .map { line in String(line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "").trimmed }
            .filter { !$0.isEmpty }
    }

    func makeLogger() -> Logger { CommandLogger.make(verbose: verbose) }
}

extension TCPProbeMode: ExpressibleByArgument {}

/// How `tcp` and `check` end their handshakes.
/// -4 and -6, which every probing command has.
struct AddressFamilyOption: ParsableArguments {
    @Flag(name: .customShort("4"), help: "Use IPv4 only.")
    var ipv4Only = false

    @Flag(name: .customShort("6"), help: "Use IPv6 only.")
    var ipv6Only = false

    func validate() throws {
        guard !(ipv4Only && ipv6Only) else { throw ValidationError("-4 and -6 exclude each other: give at most one.") }
    }

    var preference: AddressPreference { ipv4Only ? .ipv4Only : ipv6Only ? .ipv6Only : .any }
}

/// The standard-error logger of the one-off commands: warnings, or everything with -v.
enum CommandLogger {
    static func make(verbose: Bool) -> Logger {
        var logger = Logger(label: "netprobe") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }
}

struct TCPModeOption: ParsableArguments {
    @Option(name: .customLong("tcp-mode"), help: ArgumentHelp("""
        half-open (default): SYN, SYN-ACK, then RST instead of the final ACK; the server's \
        application never sees a connection, so nothing appears in its logs (PostgreSQL, \
        MariaDB, MySQL's max_connect_errors) and no TIME_WAIT socket is left anywhere. \
        connect: the full handshake, closed with a FIN; the server's application accepts \
        each probe and may log it (PostgreSQL with log_connections, MariaDB counts \
        Aborted_connects), and each leaves a TIME_WAIT socket on this host for 60 s \
        (connect mode is held to 200 handshakes/s, at most 12,000 of them).
        """, valueName: "mode"))
    var mode: TCPProbeMode = .halfOpen
}

/// -Q/--tos, -S/--source, -I/--interface: the options of the packets a probing command
/// sends, as ping, mtr and fping take them.
struct PacketOptionsOption: ParsableArguments {
    @Option(name: [.customShort("Q"), .long], help: ArgumentHelp("""
        The TOS byte (IPv6: traffic class) of every probe, as ping -Q and mtr -Q take it: \
        the whole byte in decimal or hex (184, 0xb8) or a DSCP name (ef, af11..af43, \
        cs0..cs7, meaning DSCP<<2). The ECN bits (the lowest two) must be 0. Default 0: \
        a class other than 0 is only sent when asked for (a probe marked CS6 by default \
        can make a lossy path look clean). TCP's SYN-ACKs come back as class 0; echo \
        replies copy the request's class.
        """, valueName: "tos"))
    var tos: String?

    @Option(name: [.customShort("S"), .long], help: ArgumentHelp("""
        Send from this address (one of this host's). Targets are then probed over its \
        family only; replies must come back to it (an answer to another of this host's \
        addresses is not counted).
        """, valueName: "address"))
    var source: String?

    @Option(name: [.customShort("I"), .long], help: ArgumentHelp("""
        Send through this interface, as ping -I NAME (SO_BINDTODEVICE): probes leave by it \
        even where the routing table would choose another, so it needs a route (or an \
        on-link target) through that interface.
        """, valueName: "name"))
    var interface: String?

    func validate() throws {
        _ = try packetOptions()
    }

    /// The options as given, checked against this host.
    /// - Throws: `ValidationError` (exit 3) for a TOS with ECN bits or no TOS at all, a
    ///   source that is not an address or not one of this host's, an interface that does
    ///   not exist.
    func packetOptions() throws -> PacketOptions {
        var options = PacketOptions()
        if let tos {
            do {
                options.tos = try TrafficClass.parse(tos)
            } catch {
                throw ValidationError("--tos: \(error)")
            }
        }
        if let source {
            guard let address = IPAddress(parsing: IPAddress.bareName(source)) else {
                throw ValidationError("--source: '\(source)' is not an IP address; give one of this host's addresses, e.g. 192.0.2.10 or 2001:db8::10.")
            }
            options.source = address
        }
        options.interface = interface
        let problems = options.problemsOnThisHost()
        if !problems.isEmpty {
            throw ValidationError(problems.map { "--\($0.hasPrefix("interface") ? "interface" : "source"): \($0)." }.joined(separator: "\n"))
        }
        return options
    }

    /// The families to probe: a source address allows its own only.
    /// - Throws: `ValidationError` when -4 / -6 names the other family.
    func preference(_ family: AddressPreference) throws -> AddressPreference {
        guard let source, let address = IPAddress(parsing: IPAddress.bareName(source)) else { return family }
        switch (family, address.family) {
        case (.ipv4Only, .ipv6), (.ipv6Only, .ipv4):
            throw ValidationError("--source \(address) is an \(address.family == .ipv4 ? "IPv4" : "IPv6") address, but \(family == .ipv4Only ? "-4" : "-6") asks for the other family.")
        default:
            return address.family == .ipv4 ? .ipv4Only : .ipv6Only
        }
    }

    /// Refuses target addresses written out in the other family than the source's (names
    /// are resolved in the source's family only).
    /// - Parameter hosts: the hosts as given (names or addresses, IPv6 with or without brackets).
    /// - Throws: `ValidationError` naming the first such target.
    func checkFamilies(of hosts: [String]) throws {
        guard let source, let address = IPAddress(parsing: IPAddress.bareName(source)) else { return }
        for host in hosts {
            if let literal = IPAddress(parsing: IPAddress.bareName(host)), literal.family != address.family {
                throw ValidationError("--source \(address) is an \(address.family == .ipv4 ? "IPv4" : "IPv6") address and cannot send to \(literal) (\(literal.family == .ipv4 ? "IPv4" : "IPv6")): give a source of each target's family, or probe them separately.")
            }
        }
    }

    /// Refuses a chosen IPv6 source on a datagram ICMPv6 socket, which would send from
    /// another address (the kernel ignores IPV6_PKTINFO's source there).
    /// - Throws: `ExitCode` 4 (a privilege is missing, not an argument wrong).
    func checkSockets(_ sockets: ICMPSocketSet) throws {
        guard let source, let address = IPAddress(parsing: IPAddress.bareName(source)), address.family == .ipv6,
              sockets.modes[.ipv6] == .datagram else { return }
        writeError("netprobe: --source with IPv6 needs a raw ICMPv6 socket (CAP_NET_RAW): an unprivileged ICMPv6 socket cannot choose its source address per packet.")
        throw ExitCode(ExitStatus.systemError)
    }

    /// Applies the options to every target.
    static func apply(_ options: PacketOptions, to targets: [ProbeTarget]) -> [ProbeTarget] {
        guard !options.isDefault else { return targets }
        return targets.map { target in
            var target = target
            target.options = options
            return target
        }
    }
}

/// `-M do|dont|probe` (ping's path-MTU discovery choice) for ICMP echo probes.
struct FragmentationOption: ParsableArguments {
    @Option(name: [.customShort("M"), .customLong("pmtu-discovery")], help: ArgumentHelp("""
        Don't-fragment for the echo requests, as ping -M: do or probe set DF (IPv6: no \
        fragmentation by this host either) on every request, whatever this host's \
        path-MTU cache holds, so each one asks the path; a router's "fragmentation \
        needed" / "packet too big", or this host's own interface MTU, ends it as too_big \
        with the MTU (do and probe are the same here). dont never sets DF: routers \
        fragment IPv4. Without -M the kernel's default: DF while the packet fits the \
        cached path MTU, fragmented by this host after.
        """, valueName: "do|dont|probe"))
    var pmtuDiscovery: String?

    /// The choice, checked.
    /// - Throws: `ValidationError` (exit 3) for anything but do, dont, probe.
    func fragmentation() throws -> Fragmentation? {
        guard let pmtuDiscovery else { return nil }
        guard let value = Fragmentation(rawValue: pmtuDiscovery.lowercased()) else {
            throw ValidationError("-M: '\(pmtuDiscovery)' is not a choice; give do, dont or probe (as ping -M).")
        }
        return value
    }

    /// The sockets to open besides the main ones.
    func socketKinds() throws -> Set<Fragmentation> {
        try fragmentation().map { [$0] } ?? []
    }

    /// `targets` with the choice set (ICMP echo targets only).
    func apply(to targets: [ProbeTarget]) throws -> [ProbeTarget] {
        guard let fragmentation = try fragmentation() else { return targets }
        return targets.map { target in
            var target = target
            target.options.fragmentation = fragmentation
            return target
        }
    }
}

extension FragmentationOption {
    /// Without `-M`, refuses a size whose packets exceed the route's MTU to some target:
    /// this host would fragment them, and the probe would measure reassembly rather than
    /// the path (the user most likely wanted `-M do`). With `-M` anything goes: `do`
    /// reports too_big, `dont` sends fragments on purpose.
    /// - Throws: `ValidationError` (exit 3) naming the first such target.
    func checkSize(_ size: Int, targets: [ProbeTarget]) throws {
        guard try fragmentation() == nil, size + 28 > 576 else { return }
        for target in targets {
            guard let address = target.address else { continue }
            let total = size + (address.family == .ipv4 ? 28 : 48)
            if let mtu = target.options.interfaceMTU(to: address), total > mtu {
                throw ValidationError("""
                    -s \(size) makes \(total)-byte \(address.family == .ipv4 ? "IPv4" : "IPv6") packets, more than the MTU of the interface the route to \(target.name) leaves by (\(mtu)): \
                    without -M this host would fragment them, and the probe would measure fragment reassembly, not the path. \
                    Give -M do to test whether the path carries them (too_big with the MTU where it does not), -M dont to send fragments on purpose, \
                    or -s \(mtu - (address.family == .ipv4 ? 28 : 48)) or less.
                    """)
            }
        }
    }
}
