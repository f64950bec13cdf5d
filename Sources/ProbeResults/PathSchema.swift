/// The `hop` and `path` measurements (README "Schema"): what `run`'s traces write.
extension Schema {
    /// Tag keys of `hop` and `path` points (besides probe, env, target, port).
    public enum PathTag {
        /// "icmp" or "tcp": how the path was traced.
        public static let traceProtocol = "protocol"
        /// The hop's number (TTL), and the address that answered it most.
        public static let hop = "hop", hopAddress = "hop_address"
    }

    /// Field keys of `path` points.
    public enum PathField {
        public static let hash = "hash", hopCount = "hop_count", hops = "hops", reached = "reached", lossStartHop = "loss_start_hop"
        /// How the path ended (`PathEnding.name`: reached, unreachable, routing_loop, ...).
        public static let ending = "ending"
        /// The path MTU (`trace: mtu: true`, ICMP traces): the largest IP packet that
        /// reached the farthest hop that answered.
        public static let pathMTU = "path_mtu"
        /// Field of `hop` points (despite the enum's name): the MPLS label stack of the
        /// hop's address, entries top first as label/TC/S/TTL separated by spaces
        /// ("16005/0/0/1 24001/0/1/1"); absent when it carried none.
        public static let mpls = "mpls"
    }

    /// One `hop` point per hop of `trace` (fields as for icmp, plus `forwarded_loss_percent`
    /// and `rate_limited`), at the trace's start.
    public static func hopPoints(for trace: PathTrace, env: String, probe: String) -> [DataPoint] {
        let time = trace.startNanoseconds / 1000 * 1000
        return trace.hops.enumerated().map { position, hop in
            var tags = pathTags(trace, env: env, probe: probe)
            tags[PathTag.hop] = String(hop.hop)
            tags[PathTag.hopAddress] = hop.address?.description ?? "*"
            var fields: [(key: String, value: FieldValue)] = [
                (Field.sent, .integer(Int64(hop.sent))), (Field.received, .integer(Int64(hop.received))), (Field.lossPercent, .float(hop.lossPercent)),
                ("forwarded_loss_percent", .float(trace.analysis.forwardedLossPercent[position])),
                ("rate_limited", .integer(hop.ratesLimited ? 1 : 0)),
            ]
            // Unreachables are answers but not replies: counted apart, where there were any.
            if hop.unreachable > 0 { fields.append(("unreachable", .integer(Int64(hop.unreachable)))) }
            // Labels change (LDP / segment routing reassign them): a field, never a tag.
            if !hop.labelStack.isEmpty { fields.append((PathField.mpls, .string(MPLSLabelStackEntry.compact(hop.labelStack)))) }
            if let stats = hop.statistics {
                fields += [
                    (Field.rttMinimum, .float(stats.minimum)), (Field.rttAverage, .float(stats.average)), (Field.rttMaximum, .float(stats.maximum)),
                    (Field.rttMedian, .float(stats.median)), (Field.rttStandardDeviation, .float(stats.standardDeviation)), (Field.jitter, .float(stats.jitter)),
                ]
            }
            return DataPoint(measurement: "hop", tags: tags, fields: fields, timestampNanoseconds: time)
        }
    }

    /// The `path` point of `trace`: the hash of its hop list, the hop count, the hops.
    public static func pathPoint(for trace: PathTrace, env: String, probe: String) -> DataPoint {
        var fields: [(key: String, value: FieldValue)] = [
            (PathField.hash, .string(String(trace.pathHash, radix: 16))),
            (PathField.hopCount, .integer(Int64(trace.hops.count))),
            (PathField.hops, .string(trace.hops.map { $0.address?.description ?? "*" }.joined(separator: ","))),
            (PathField.reached, .integer(trace.reached ? 1 : 0)),
            (PathField.ending, .string(trace.ending.name)),
        ]
        if let start = trace.analysis.lossStartHop { fields.append((PathField.lossStartHop, .integer(Int64(start)))) }
        if let mtu = trace.mtu?.pathMTU { fields.append((PathField.pathMTU, .integer(Int64(mtu)))) }
        return DataPoint(measurement: "path", tags: pathTags(trace, env: env, probe: probe), fields: fields, timestampNanoseconds: trace.startNanoseconds / 1000 * 1000)
    }

    /// As a round's series (`Schema.tags`): the labels, then the schema's own tags, the
    /// packet options included, so the traces of one target in two classes are two series.
    static func pathTags(_ trace: PathTrace, env: String, probe: String) -> [String: String] {
        var tags = trace.target.labels
        tags[Tag.probe] = probe
        tags[Tag.env] = env
        tags[Tag.target] = trace.target.name
        tags[PathTag.traceProtocol] = trace.target.port == nil ? "icmp" : "tcp"
        if let port = trace.target.port { tags[Tag.port] = String(port) }
        let options = trace.target.options
        if let tos = Schema.tosTagValue(options.tos) { tags[Tag.tos] = tos }
        if let source = options.source { tags[Tag.source] = source.description }
        if let interface = options.interface { tags[Tag.interface] = interface }
        return tags
    }
}
