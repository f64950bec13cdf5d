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
        var lines = ["\(who): \(trace.hops.count == 1 ? "1 hop" : "\(trace.hops.count) hops"), \(trace.rounds == 1 ? "1 round" : "\(trace.rounds) rounds"), \(flows): \(trace.summary)"]
        if let mtu = trace.mtu { lines.append(mtu.sentence) }
        lines.append(" hop  address                                  sent  recv    loss  fwd loss     min     avg     max  median  stddev" + (trace.mtu == nil ? "" : "    mtu"))
        for (position, hop) in trace.hops.enumerated() {
            let address = hop.address?.description ?? "???"
            let stats = hop.statistics
            let numbers = [stats?.minimum, stats?.average, stats?.maximum, stats?.median, stats?.standardDeviation]
                .map { $0.map { pad(ResultPrinter.milliseconds($0), 7) } ?? pad("-", 7) }.joined(separator: " ")
            // A hop that answered only "unreachable" shows the mark where the loss would be.
            let loss = hop.received == 0 && hop.unreachable > 0 ? (hop.unreachableMark ?? "!") : DecimalText.fixed(hop.lossPercent, places: 1) + "%"
            var line = pad("\(hop.hop)", 4) + "  " + padRight(address, 39) + " " + pad("\(hop.sent)", 5) + " "
                + pad("\(hop.received)", 5) + " " + pad(loss, 7) + " "
                + pad(DecimalText.fixed(trace.analysis.forwardedLossPercent[position], places: 1) + "%", 9) + " " + numbers
            if trace.mtu != nil { line += " " + pad(hop.mtu.map(String.init) ?? "-", 6) }
            if hop.ratesLimited { line += "  rate-limits (not loss)" }
            for (mark, count) in hop.unreachableMarks.sorted(by: { $0.key < $1.key }) { line += "  \(mark) \(count)" }
            if hop.isDestination { line += "  destination" }
            if hop.timestampSource == .user || hop.timestampSource == .mixed { line += "  (\(hop.timestampSource!.rawValue) clock)" }
            lines.append(line)
            if hop.addressCounts.count > 1 {
                // Every address of the hop with its answers, the first one included, each
                // with its MPLS labels below it.
                for entry in hop.addressCounts {
                    lines.append("      \(entry.address) (\(entry.answers) answers)")
                    lines += labelLines(entry.labelStack)
                }
            } else {
                // As mtr --mpls: one line per label stack entry, top first.
                lines += labelLines(hop.labelStack)
            }
        }
        if trace.flows > 1 {
            // Per flow: its own path, with its loss and median at each hop, so a lossy
            // equal-cost branch shows in the flows that take it.
            for path in trace.flowPaths {
                let steps = trace.hops.compactMap { hop -> String? in
                    guard let figures = hop.flows.first(where: { $0.flow == path.flow }) else { return nil }
                    let address = figures.address?.description ?? "???"
                    let loss = figures.received == 0 && figures.unreachable > 0 ? "unreachable" : DecimalText.fixed(figures.lossPercent, places: 0) + "%"
                    let median = figures.statistics.map { " " + ResultPrinter.milliseconds($0.median) } ?? ""
                    return "\(address) \(loss)\(median)"
                }
                lines.append("  flow \(path.flow): " + steps.joined(separator: " > ") + (path.reached ? "" : " (target not reached)"))
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
        ResultPrinter.addPacketOptions(trace.target.options, to: &object)
        object.add("protocol", .string(trace.target.port == nil ? "icmp" : "tcp"))
        object.add("port", trace.target.port.map { .integer(Int($0)) } ?? .null)
        object.add("rounds", .integer(trace.rounds))
        object.add("flows", .integer(trace.flows))
        object.add("reached", .raw(trace.reached ? "true" : "false"))
        object.add("ending", .string(trace.ending.name))
        object.add("ending_detail", endingDetail(trace.ending))
        object.add("hop_count", .integer(trace.hops.count))
        object.add("path_hash", .string(String(trace.pathHash, radix: 16)))
        object.add("summary", .string(trace.summary))
        object.add("loss_start_hop", analysis.lossStartHop.map { .integer($0) } ?? .null)
        object.add("destination_loss_percent", analysis.destinationLossPercent.map { .number($0) } ?? .null)
        object.add("latency_start_hop", analysis.latencyStartHop.map { .integer($0) } ?? .null)
        object.add("added_latency_ms", analysis.addedLatencyMilliseconds.map { .number($0) } ?? .null)
        object.add("rate_limiting_hops", .array(analysis.rateLimitingHops.map { .integer($0) }))
        if let mtu = trace.mtu {
            object.add("path_mtu", mtu.pathMTU.map { .integer($0) } ?? .null)
            object.add("mtu_first_size", .integer(mtu.firstSize))
            object.add("mtu_interface", mtu.interfaceMTU.map { .integer($0) } ?? .null)
            object.add("mtu_drops", .array(mtu.drops.map { drop in
                var entry = JSONObject()
                entry.add("hop", .integer(drop.hop))
                entry.add("address", .string(drop.address.description))
                entry.add("mtu", .integer(drop.mtu))
                return .raw(entry.serialized)
            }))
            object.add("mtu_summary", .string(mtu.sentence))
        }
        object.add("hops", .array(trace.hops.enumerated().map { position, hop in
            var entry = JSONObject()
            let stats = hop.statistics
            entry.add("hop", .integer(hop.hop))
            entry.add("address", hop.address.map { .string($0.description) } ?? .null)
            entry.add("addresses", addresses(hop.addressCounts))
            entry.add("sent", .integer(hop.sent))
            entry.add("received", .integer(hop.received))
            entry.add("loss_percent", .number(hop.lossPercent))
            entry.add("forwarded_loss_percent", .number(analysis.forwardedLossPercent[position]))
            entry.add("rate_limited", .raw(hop.ratesLimited ? "true" : "false"))
            entry.add("destination", .raw(hop.isDestination ? "true" : "false"))
            entry.add("unreachable", .integer(hop.unreachable))
            entry.add("unreachable_marks", .raw(counts(hop.unreachableMarks)))
            entry.add("silent", .raw(hop.isSilent ? "true" : "false"))
            entry.add("timestamp_source", hop.timestampSource.map { .string($0.rawValue) } ?? .null)
            entry.add("mpls", labelStack(hop.labelStack))
            if trace.mtu != nil {
                entry.add("mtu", hop.mtu.map { .integer($0) } ?? .null)
                entry.add("too_big", .integer(hop.tooBig))
            }
            for (key, value) in [("rtt_min_ms", stats?.minimum), ("rtt_avg_ms", stats?.average), ("rtt_max_ms", stats?.maximum),
                                 ("rtt_median_ms", stats?.median), ("rtt_stddev_ms", stats?.standardDeviation)] {
                entry.add(key, value.map { .number($0) } ?? .null)
            }
            entry.add("rtts_ms", .array(hop.rttsMilliseconds.map { .number($0) }))
            entry.add("flows", .array(hop.flows.map { flow in
                var item = JSONObject()
                item.add("flow", .integer(flow.flow))
                item.add("address", flow.address.map { .string($0.description) } ?? .null)
                item.add("addresses", addresses(flow.addresses))
                item.add("sent", .integer(flow.sent))
                item.add("received", .integer(flow.received))
                item.add("unreachable", .integer(flow.unreachable))
                item.add("loss_percent", .number(flow.lossPercent))
                item.add("rtt_median_ms", flow.statistics.map { .number($0.median) } ?? .null)
                return .raw(item.serialized)
            }))
            return .raw(entry.serialized)
        }))
        object.add("flow_paths", .array(trace.flowPaths.map { path in
            var entry = JSONObject()
            entry.add("flow", .integer(path.flow))
            entry.add("reached", .raw(path.reached ? "true" : "false"))
            entry.add("hops", .array(path.hops.map { $0.map { .string($0.description) } ?? .null }))
            return .raw(entry.serialized)
        }))
        object.add("ignored", .raw(counts(trace.ignored)))
        object.add("time", .string(Date(timeIntervalSince1970: Double(trace.startNanoseconds) / 1e9).formatted(ResultPrinter.timeFormat)))
        return object.serialized
    }

    /// One line per label stack entry, as mtr --mpls prints them, under the address.
    static func labelLines(_ stack: [MPLSLabelStackEntry]) -> [String] {
        stack.map { "      \($0.mtrText)" }
    }

    /// `[{"label": 16005, "tc": 0, "s": 1, "ttl": 1}, ...]`, top of stack first.
    static func labelStack(_ stack: [MPLSLabelStackEntry]) -> JSONObject.Value {
        .array(stack.map { entry in
            var item = JSONObject()
            item.add("label", .integer(Int(entry.label)))
            item.add("tc", .integer(Int(entry.trafficClass)))
            item.add("s", .integer(entry.bottomOfStack ? 1 : 0))
            item.add("ttl", .integer(Int(entry.ttl)))
            return .raw(item.serialized)
        })
    }

    /// `{"key": count, ...}` in key order.
    static func counts(_ values: [String: Int]) -> String {
        "{" + values.sorted { $0.key < $1.key }.map { "\(JSONObject.quote($0.key)):\($0.value)" }.joined(separator: ",") + "}"
    }

    static func addresses(_ entries: [AddressCount]) -> JSONObject.Value {
        .array(entries.map { entry in
            var item = JSONObject()
            item.add("address", .string(entry.address.description))
            item.add("answers", .integer(entry.answers))
            item.add("mpls", labelStack(entry.labelStack))
            return .raw(item.serialized)
        })
    }

    /// The ending's particulars (see the README's trace keys).
    static func endingDetail(_ ending: PathEnding) -> JSONObject.Value {
        var detail = JSONObject()
        switch ending {
        case .reached:
            return .null
        case .unreachable(let hop, let address, let mark):
            detail.add("hop", .integer(hop))
            detail.add("address", .string(address.description))
            detail.add("mark", .string(mark.mark))
            detail.add("icmp_code", .integer(Int(mark.code)))
            detail.add("meaning", .string(mark.meaning))
        case .loop(let addresses, let from):
            detail.add("addresses", .array(addresses.map { .string($0.description) }))
            detail.add("from_hop", .integer(from))
        case .maxHops(let maximum):
            detail.add("max_hops", .integer(maximum))
        case .filtered(let last, let silent):
            detail.add("last_responding_hop", last.map { .integer($0) } ?? .null)
            detail.add("silent_hops", .array(silent.map { .integer($0) }))
        case .noAnswer(let last):
            detail.add("last_responding_hop", last.map { .integer($0) } ?? .null)
        }
        return .raw(detail.serialized)
    }

    static func padRight(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
