import ArgumentParser

/// A command whose positional arguments are targets, possibly thousands of them.
protocol TargetListCommand: ParsableCommand {
    var targets: [String] { get set }
    /// Its options that take a value (`-c 5`, `--rate 100`), to tell a value from a target.
    static var optionsTakingValues: Set<String> { get }
}

extension PingCommand: TargetListCommand {
    static let optionsTakingValues = ProbeOptions.optionsTakingValues.union(["-s", "--size", "-t", "--ttl"]).union(PacketOptionsOption.optionsTakingValues)
        .union(FragmentationOption.optionsTakingValues)
}

extension TCPCommand: TargetListCommand {
    /// With -M (hidden: taken only to be refused with its reason), so that a long list
    /// gets that reason instead of "missing value".
    static let optionsTakingValues = ProbeOptions.optionsTakingValues.union(["--tcp-mode"]).union(PacketOptionsOption.optionsTakingValues)
        .union(FragmentationOption.optionsTakingValues)
}

extension CheckCommand: TargetListCommand {
    static let optionsTakingValues = Set(["--duration", "--max-duration", "-i", "--interval", "-W", "--timeout", "--tcp-mode", "-s", "--size"])
        .union(PacketOptionsOption.optionsTakingValues).union(FragmentationOption.optionsTakingValues)
}

extension FragmentationOption {
    /// -M takes a value: without it here, `-M do` in a long list would make "do" a target.
    static let optionsTakingValues: Set<String> = ["-M", "--pmtu-discovery"]
}

extension PacketOptionsOption {
    /// -Q, -S and -I take a value: without them here, `-Q ef` in a long list would make
    /// "ef" a target.
    static let optionsTakingValues: Set<String> = ["-Q", "--tos", "-S", "--source", "-I", "--interface"]
}

extension ProbeOptions {
    static let optionsTakingValues: Set<String> = ["-c", "--count", "-i", "--interval", "-W", "--timeout", "--rate", "-f", "--file"]
}

/// ArgumentParser spends quadratic time on a long positional list (each value merges the
/// input origins of every value before it): 5,000 targets cost half a second of CPU before
/// the first probe. Past a few dozen, the targets are taken out of the arguments it parses
/// (all but the first, so that a required list is still there) and handed to the command
/// afterwards, in order; then the command is validated again, with all of them.
enum LongTargetLists {
    /// Below this many positional arguments the parser's own handling is cheap enough.
    static let threshold = 64

    static func parse(_ arguments: [String]) throws -> ParsableCommand {
        guard let name = arguments.first, let type = commandType(named: name) else { return try Netprobe.parseAsRoot(arguments) }
        let (kept, extra) = split(Array(arguments.dropFirst()), optionsTakingValues: type.optionsTakingValues)
        guard !extra.isEmpty else { return try Netprobe.parseAsRoot(arguments) }
        guard var command = try Netprobe.parseAsRoot([name] + kept) as? TargetListCommand else { return try Netprobe.parseAsRoot(arguments) }
        command.targets += extra
        try command.validate()
        return command
    }

    static func commandType(named name: String) -> (any TargetListCommand.Type)? {
        switch name {
        case PingCommand.configuration.commandName: return PingCommand.self
        case TCPCommand.configuration.commandName: return TCPCommand.self
        case CheckCommand.configuration.commandName: return CheckCommand.self
        default: return nil
        }
    }

    /// The arguments without their positional ones past the first, and those, in order;
    /// nothing is taken out when there are fewer than `threshold` of them.
    static func split(_ arguments: [String], optionsTakingValues: Set<String>) -> (kept: [String], extra: [String]) {
        var kept: [String] = []
        var positional: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                positional += arguments[(index + 1)...]
                break
            }
            if argument.hasPrefix("-") && argument.count > 1 {
                kept.append(argument)
                if optionsTakingValues.contains(argument), index + 1 < arguments.count {
                    kept.append(arguments[index + 1])
                    index += 1
                }
            } else {
                positional.append(argument)
            }
            index += 1
        }
        guard positional.count >= threshold else { return (arguments, []) }
        // The first target goes after a "--" so that it can never be read as an option.
        return (kept + ["--", positional[0]], Array(positional.dropFirst()))
    }
}
