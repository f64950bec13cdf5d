import Foundation
import ProbeEngine

/// Writes replies and round summaries as text (ping / fping style) or JSON Lines.
struct ResultPrinter {
    let json: Bool
    let quiet: Bool

    func printReply(_ reply: ICMPReplyEvent) {
        guard !json, !quiet else { return }
        let who = reply.target.address.map { $0.description == reply.target.name ? $0.description : "\(reply.target.name) (\($0))" } ?? reply.target.name
        var line = "\(reply.bytes + 8) bytes from \(who): icmp_seq=\(reply.sequence)"
        if let ttl = reply.ttl { line += " ttl=\(ttl)" }
        line += " time=\(Self.milliseconds(reply.rttMilliseconds)) ms"
        if reply.timestampSource == .user { line += " (user clock)" }
        if reply.isDuplicate { line += " (DUP!)" }
        write(line)
    }

    /// JSON lines go out as each round completes, so a harness can stream them.
    func printRoundAsItCompletes(_ round: ICMPRoundResult) {
        if json { write(Self.jsonLine(round)) }
    }

    /// Text summaries are printed together at the end, in the order targets were given.
    func printSummaries(_ rounds: [ICMPRoundResult]) {
        guard !json else { return }
        if !quiet && !rounds.isEmpty { write("") }
        for round in rounds { write(Self.summaryLine(round)) }
    }

    static func summaryLine(_ round: ICMPRoundResult) -> String {
        let who = round.target.address.map { $0.description == round.target.name ? $0.description : "\(round.target.name) (\($0))" } ?? round.target.name
        guard round.target.address != nil else {
            return "\(who) : unresolved (\(round.target.resolutionError ?? "no address"))"
        }
        var line = "\(who) : sent \(round.sent), received \(round.received), \(String(format: "%.1f", round.lossPercent))% loss"
        if round.duplicates > 0 { line += ", \(round.duplicates) duplicate\(round.duplicates == 1 ? "" : "s")" }
        if round.late > 0 { line += ", \(round.late) late" }
        if let stats = round.statistics {
            line += ", min/avg/max/median/stddev = " + [stats.minimum, stats.average, stats.maximum, stats.median, stats.standardDeviation].map(milliseconds).joined(separator: "/")
            line += " ms, jitter \(milliseconds(stats.jitter)) ms"
            if let source = round.timestampSource { line += ", \(source.rawValue) timestamps" }
        }
        if round.outcome != .ok { line += ", result \(round.outcome.rawValue)" }
        return line
    }

    static func milliseconds(_ value: Double) -> String {
        String(format: value < 10 ? "%.3f" : value < 100 ? "%.2f" : "%.1f", value)
    }

    static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// One round as a JSON object with exactly the documented keys; RTT keys are null when
    /// nothing was received.
    static func jsonLine(_ round: ICMPRoundResult) -> String {
        let stats = round.statistics
        var object = JSONObject()
        object.add("kind", .string("icmp"))
        object.add("target", .string(round.target.name))
        object.add("address", round.target.address.map { .string($0.description) } ?? .null)
        object.add("sent", .integer(round.sent))
        object.add("received", .integer(round.received))
        object.add("loss_percent", .number(round.lossPercent))
        object.add("duplicates", .integer(round.duplicates))
        object.add("late", .integer(round.late))
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

    private func write(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// A JSON object written with its keys in insertion order (stable, diff-friendly lines).
struct JSONObject {
    enum Value {
        case string(String)
        case integer(Int)
        case number(Double)
        case array([Value])
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
            var text = String(format: "%.6f", number)
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
            return text
        case .array(let values): return "[" + values.map(encode).joined(separator: ",") + "]"
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
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
