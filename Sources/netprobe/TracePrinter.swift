import FoundationEssentials
import ProbeEngine
import ProbeResults

/// A trace as an mtr-like report (text) or one JSON object per target.
enum TracePrinter {
    /// The text report: a headline with the analysis, then one line per hop (more
    /// addresses of a hop on lines of their own below it).
    static func text(_ trace: PathTrace) -> String {
        let who = ResultPrinter.label(trace.target)
        guard trace.target.address != nil else {
            return "\(who): unresolved (\(trace.target.resolutionError ?? "no address"))"
        }
        let flows = trace.flows == 1 ? "1 flow" : "\(trace.flows) flows"
        var lines = ["\(who): \(trace.hops.count == 1 ? "1 hop" : "\(trace.hops.count) hops"), \(trace.rounds == 1 ? "1 round" : "\(trace.rounds) rounds"), \(flows): \(trace.analysis.summary(hops: trace.hops))"]
        lines.append(" hop  address                                  sent  recv    loss  fwd loss     min     avg     max  median  stddev")
        for (position, hop) in trace.hops.enumerated() {
            let address = hop.address?.description ?? "???"
            let stats = hop.statistics
            let numbers = [stats?.minimum, stats?.average, stats?.maximum, stats?.median, stats?.standardDeviation]
                .map { $0.map { pad(ResultPrinter.milliseconds($0), 7) } ?? pad("-", 7) }.joined(separator: " ")
            var line = pad("\(hop.hop)", 4) + "  " + padRight(address, 39) + " " + pad("\(hop.sent)", 5) + " "
                + pad("\(hop.received)", 5) + " " + pad(DecimalText.fixed(hop.lossPercent, places: 1) + "%", 7) + " "
                + pad(DecimalText.fixed(trace.analysis.forwardedLossPercent[position], places: 1) + "%", 9) + " " + numbers
            if hop.ratesLimited { line += "  rate-limits (not loss)" }
            if hop.unreachable > 0 { line += "  \(hop.unreachable) unreachable" }
            if hop.isDestination { line += "  destination" }
            lines.append(line)
            for extra in hop.addresses.dropFirst() {
                lines.append("      " + "\(extra.address) (\(extra.answers) answers)")
            }
        }
        if trace.flows > 1 {
            for path in trace.flowPaths {
                lines.append("  flow \(path.flow): " + path.hops.map { $0?.description ?? "*" }.joined(separator: " > ") + (path.reached ? "" : " (target not reached)"))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// One JSON object with the documented keys (README, `netprobe trace`).
    static func json(_ trace: PathTrace) -> String {
        var object = JSONObject()
        let analysis = trace.analysis
        object.add("kind", .string("trace"))
        object.add("target", .string(trace.target.name))
        object.add("address", trace.target.address.map { .string($0.description) } ?? .null)
        object.add("protocol", .string(trace.target.port == nil ? "icmp" : "tcp"))
        object.add("port", trace.target.port.map { .integer(Int($0)) } ?? .null)
        object.add("rounds", .integer(trace.rounds))
        object.add("flows", .integer(trace.flows))
        object.add("reached", .raw(trace.reached ? "true" : "false"))
        object.add("hop_count", .integer(trace.hops.count))
        object.add("path_hash", .string(String(trace.pathHash, radix: 16)))
        object.add("summary", .string(analysis.summary(hops: trace.hops)))
        object.add("loss_start_hop", analysis.lossStartHop.map { .integer($0) } ?? .null)
        object.add("destination_loss_percent", analysis.destinationLossPercent.map { .number($0) } ?? .null)
        object.add("latency_start_hop", analysis.latencyStartHop.map { .integer($0) } ?? .null)
        object.add("added_latency_ms", analysis.addedLatencyMilliseconds.map { .number($0) } ?? .null)
        object.add("rate_limiting_hops", .array(analysis.rateLimitingHops.map { .integer($0) }))
        object.add("hops", .array(trace.hops.enumerated().map { position, hop in
            var entry = JSONObject()
            let stats = hop.statistics
            entry.add("hop", .integer(hop.hop))
            entry.add("address", hop.address.map { .string($0.description) } ?? .null)
            entry.add("addresses", .array(hop.addresses.map { address in
                var item = JSONObject()
                item.add("address", .string(address.address.description))
                item.add("answers", .integer(address.answers))
                return .raw(item.serialized)
            }))
            entry.add("sent", .integer(hop.sent))
            entry.add("received", .integer(hop.received))
            entry.add("loss_percent", .number(hop.lossPercent))
            entry.add("forwarded_loss_percent", .number(analysis.forwardedLossPercent[position]))
            entry.add("rate_limited", .raw(hop.ratesLimited ? "true" : "false"))
            entry.add("destination", .raw(hop.isDestination ? "true" : "false"))
            entry.add("unreachable", .integer(hop.unreachable))
            for (key, value) in [("rtt_min_ms", stats?.minimum), ("rtt_avg_ms", stats?.average), ("rtt_max_ms", stats?.maximum),
                                 ("rtt_median_ms", stats?.median), ("rtt_stddev_ms", stats?.standardDeviation)] {
                entry.add(key, value.map { .number($0) } ?? .null)
            }
            entry.add("rtts_ms", .array(hop.rttsMilliseconds.map { .number($0) }))
            entry.add("timestamp_source", hop.timestampSource.map { .string($0.rawValue) } ?? .null)
            return .raw(entry.serialized)
        }))
        object.add("flow_paths", .array(trace.flowPaths.map { path in
            var entry = JSONObject()
            entry.add("flow", .integer(path.flow))
            entry.add("reached", .raw(path.reached ? "true" : "false"))
            entry.add("hops", .array(path.hops.map { $0.map { .string($0.description) } ?? .null }))
            return .raw(entry.serialized)
        }))
        object.add("ignored", .raw("{" + trace.ignored.sorted { $0.key < $1.key }.map { "\(JSONObject.quote($0.key)):\($0.value)" }.joined(separator: ",") + "}"))
        object.add("time", .string(Date(timeIntervalSince1970: Double(trace.startNanoseconds) / 1e9).formatted(ResultPrinter.timeFormat)))
        return object.serialized
    }

    static func padRight(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
