import FoundationEssentials
import Glibc
import ProbeEngine
import ProbeResults

/// Writes attempts and round summaries as text (ping / fping style) or JSON Lines.
struct ResultPrinter {
    let json: Bool
    let quiet: Bool

    /// "name (address)" or just the address, with ":port" for TCP.
    static func label(_ target: ProbeTarget) -> String {
        let host: String
        if let address = target.address {
            host = address.description == IPAddress.bareName(target.name) ? bracketed(address) : "\(target.name) (\(address))"
        } else {
            host = target.name
        }
        return target.port.map { "\(host):\($0)" } ?? host
    }

    static func bracketed(_ address: IPAddress) -> String {
        address.family == .ipv6 ? "[\(address)]" : address.description
    }

    func printAttempt(_ event: AttemptEvent) {
        guard !json, !quiet else { return }
        switch event.kind {
        case .icmp where event.outcome == .tooBig:
            // As ping: "From 10.0.0.2 icmp_seq=1 Frag needed and DF set (mtu = 1400)".
            let what = event.target.address?.family == .ipv6 ? "Packet too big" : "Frag needed and DF set"
            let mtu = event.mtu.map { " (mtu = \($0))" } ?? ""
            if let router = event.reportedBy {
                write("From \(router) icmp_seq=\(event.sequence) \(what)\(mtu)")
            } else {
                write("\(Self.label(event.target)): icmp_seq=\(event.sequence) local error: message too long\(mtu)")
            }
        case .icmp:
            let who = event.target.address.map { $0.description == event.target.name ? $0.description : "\(event.target.name) (\($0))" } ?? event.target.name
            var line = "\((event.bytes ?? 0) + 8) bytes from \(who): icmp_seq=\(event.sequence)"
            if let ttl = event.ttl { line += " ttl=\(ttl)" }
            if let rtt = event.rttMilliseconds { line += " time=\(Self.milliseconds(rtt)) ms" }
            if event.timestampSource == .user { line += " (user clock)" }
            if event.isDuplicate { line += " (DUP!)" }
            write(line)
        case .tcp:
            var line = "\(Self.label(event.target)): seq=\(event.sequence) \(event.outcome == .ok ? "connected" : event.outcome.rawValue)"
            if let rtt = event.rttMilliseconds { line += " time=\(Self.milliseconds(rtt)) ms" }
            if event.timestampSource == .user { line += " (user clock)" }
            write(line)
        }
    }

    /// JSON lines go out as each round completes, so a harness can stream them.
    func printRoundAsItCompletes(_ round: RoundResult) {
        if json { write(Self.jsonLine(round)) }
    }

    /// Text summaries are printed together at the end, in the order targets were given,
    /// written in chunks so a list of 100,000 targets never sits in memory twice.
    func printSummaries(_ lines: [(targetIndex: Int, line: String)]) {
        guard !json, !lines.isEmpty else { return }
        var chunk = quiet ? "" : "\n"
        for (_, line) in lines.sorted(by: { $0.targetIndex < $1.targetIndex }) {
            chunk += line
            chunk += "\n"
            if chunk.utf8.count >= 65_536 {
                Terminal.write(chunk, to: STDOUT_FILENO)
                chunk = ""
            }
        }
        Terminal.write(chunk, to: STDOUT_FILENO)
    }

    static func summaryLine(_ round: RoundResult) -> String {
        let who = label(round.target)
        guard round.target.address != nil else {
            return "\(who) : unresolved (\(round.target.resolutionError ?? "no address"))"
        }
        let success = round.kind == .icmp ? "received" : "connected"
        var line = "\(who) : sent \(round.sent), \(success) \(round.received), \(DecimalText.fixed(round.lossPercent, places: 1))% loss"
        if round.duplicates > 0 { line += ", \(round.duplicates) duplicate\(round.duplicates == 1 ? "" : "s")" }
        if round.late > 0 { line += ", \(round.late) late" }
        for (outcome, count) in [(ProbeOutcome.refused, round.refused), (.unreachable, round.unreachable), (.error, round.errors)] where count > 0 {
            line += ", \(count) \(outcome.rawValue)"
        }
        if round.tooBig > 0 { line += ", \(round.tooBig) too big" + (round.pathMTU.map { " (path MTU \($0))" } ?? "") }
        if round.kind == .tcp, round.timeouts > 0 { line += ", \(round.timeouts) timeout" }
        if round.kind == .tcp, round.tcpMode == .halfOpen, round.completed > 0 {
            line += ", \(round.completed) completed (the final ACK left: the server saw a connection)"
        }
        if let stats = round.statistics {
            line += ", min/avg/max/median/stddev = " + [stats.minimum, stats.average, stats.maximum, stats.median, stats.standardDeviation].map(milliseconds).joined(separator: "/")
            line += " ms, jitter \(milliseconds(stats.jitter)) ms"
            if let source = round.timestampSource { line += ", \(source.rawValue) timestamps" }
        }
        if round.outcome != .ok { line += ", result \(round.outcome.rawValue)" }
        return line
    }

    static func milliseconds(_ value: Double) -> String {
        DecimalText.fixed(value, places: value < 10 ? 3 : value < 100 ? 2 : 1)
    }

    static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// One round as a JSON object with exactly the documented keys (TCP adds "port"); RTT
    /// keys are null when nothing was received.
    static func jsonLine(_ round: RoundResult, env: String? = nil, probe: String? = nil) -> String {
        let stats = round.statistics
        var object = JSONObject()
        object.add("kind", .string(round.kind.rawValue))
        if let probe { object.add("probe", .string(probe)) }
        if let env { object.add("env", .string(env)) }
        object.add("target", .string(round.target.name))
        object.add("address", round.target.address.map { .string($0.description) } ?? .null)
        addPacketOptions(round.target.options, to: &object)
        if round.kind == .tcp {
            object.add("port", round.target.port.map { .integer(Int($0)) } ?? .null)
            object.add("mode", round.tcpMode.map { .string($0.rawValue) } ?? .null)
            object.add("completed", .integer(round.completed))
        }
        object.add("sent", .integer(round.sent))
        object.add("received", .integer(round.received))
        object.add("loss_percent", .number(round.lossPercent))
        object.add("duplicates", .integer(round.duplicates))
        object.add("late", .integer(round.late))
        if round.kind == .icmp, round.target.options.fragmentation != nil || round.tooBig > 0 {
            object.add("too_big", .integer(round.tooBig))
            object.add("path_mtu", round.pathMTU.map { .integer($0) } ?? .null)
        }
        object.add("rtt_min_ms", stats.map { .number($0.minimum) } ?? .null)
        object.add("rtt_avg_ms", stats.map { .number($0.average) } ?? .null)
        object.add("rtt_max_ms", stats.map { .number($0.maximum) } ?? .null)
        object.add("rtt_median_ms", stats.map { .number($0.median) } ?? .null)
        object.add("rtt_stddev_ms", stats.map { .number($0.standardDeviation) } ?? .null)
        object.add("jitter_ms", stats.map { .number($0.jitter) } ?? .null)
        object.add("ttl", round.ttl.map { .integer($0) } ?? .null)
        object.add("rtts_ms", .array(round.rttsMilliseconds.map { .number($0) }))
        object.add("result", .string(round.outcome.rawValue))
        object.add("timestamp_source", round.timestampSource.map { .string($0.rawValue) } ?? .null)
        object.add("time", .string(timeFormat.format(round.startTime)))
        return object.serialized
    }

    /// `tos` (the byte, when not 0), `source` and `interface` (when set): the keys of
    /// -Q, -S and -I, absent for a default probe so its JSON is what it always was.
    static func addPacketOptions(_ options: PacketOptions, to object: inout JSONObject) {
        if options.tos != 0 { object.add("tos", .integer(Int(options.tos))) }
        if let source = options.source { object.add("source", .string(source.description)) }
        if let interface = options.interface { object.add("interface", .string(interface)) }
        if let fragmentation = options.fragmentation { object.add("pmtu_discovery", .string(fragmentation.rawValue)) }
    }

    private func write(_ line: String) {
        Terminal.printLine(line)
    }
}

/// Prints a prober's events as they come (JSON lines as rounds complete; text summaries at
/// the end, in target order).
/// - Returns: the exit status, as fping's: 2 when a name did not resolve, 1 when any
///   round failed, else 0.
func consume(_ events: AsyncStream<ProbeEvent>, printer: ResultPrinter) async -> Int32 {
    var summaries: [(targetIndex: Int, line: String)] = []
    var unresolved = false
    var failed = false
    for await event in events {
        switch event {
        case .attempt(let attempt):
            printer.printAttempt(attempt)
        case .round(let round):
            unresolved = unresolved || round.outcome == .unresolved
            failed = failed || round.outcome != .ok
            if printer.json {
                printer.printRoundAsItCompletes(round)
            } else {
                summaries.append((round.targetIndex, ResultPrinter.summaryLine(round)))
            }
        case .abandoned:
            break  // repeating rounds only (run)
        }
    }
    printer.printSummaries(summaries)
    return unresolved ? ExitStatus.unresolved : failed ? ExitStatus.someUnanswered : ExitStatus.allAnswered
}

/// A JSON object written with its keys in insertion order (stable, diff-friendly lines).
struct JSONObject {
    enum Value {
        case string(String)
        case integer(Int)
        case number(Double)
        case array([Value])
        /// Already-serialized JSON, embedded as is.
        case raw(String)
        case null
    }

    private var fields: [(String, Value)] = []

    mutating func add(_ key: String, _ value: Value) {
        fields.append((key, value))
    }

    var serialized: String {
        "{" + fields.map { "\(Self.quote($0.0)):\(Self.encode($0.1))" }.joined(separator: ",") + "}"
    }

    static func encode(_ value: Value) -> String {
        switch value {
        case .string(let text): return quote(text)
        case .integer(let number): return String(number)
        case .number(let number):
            guard number.isFinite else { return "null" }
            // Nanosecond resolution in milliseconds; trailing zeros trimmed.
            var text = DecimalText.fixed(number, places: 6)
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
            return text
        case .array(let values): return "[" + values.map(encode).joined(separator: ",") + "]"
        case .raw(let text): return text
        case .null: return "null"
        }
    }

    static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
