import ProbeResults

/// Round points as line protocol, the series key (measurement and escaped tags) of each
/// target made once and reused until its tags change: the same lines as
/// `LineProtocol.encode(Schema.point(...))`, for a fraction of the work per round.
struct RoundLineEncoder {
    /// The round fields' keys, escaped once, by `Schema.RoundField.rawValue`.
    static let fieldKeys = Schema.RoundField.allCases.map { FieldKey($0.key) }

    private struct Series: Equatable {
        var kind: ProbeKind
        var name: String
        var env: String
        var address: IPAddress?
        var port: UInt16?
        var mode: TCPProbeMode?
        /// A reload may change a target's options or labels in place (its index kept).
        var options: PacketOptions
        var labels: [String: String]
    }

    let probe: String
    /// Each target's series key, by target index (dense from 0), one array per kind: no
    /// hashing per round.
    private var icmpKeys: [(series: Series, key: String?)?] = []
    private var tcpKeys: [(series: Series, key: String?)?] = []
    private var writer = LineWriter()

    init(probe: String) {
        self.probe = probe
    }

    /// The round's line; nil when it cannot be written (no measurement).
    mutating func line(for round: RoundResult, env: String) -> String? {
        let series = Series(kind: round.kind, name: round.target.name, env: env, address: round.target.address, port: round.target.port,
                            mode: round.kind == .tcp ? round.tcpMode : nil, options: round.target.options, labels: round.target.labels)
        let key: String?
        let index = round.targetIndex
        let known = round.kind == .icmp ? icmpKeys : tcpKeys
        if known.indices.contains(index), let cached = known[index], cached.series == series {
            key = cached.key
        } else {
            key = LineProtocol.seriesKey(measurement: round.kind.rawValue, tags: Schema.tags(for: round, env: env, probe: probe))
            if index >= 0 {
                switch round.kind {
                case .icmp: Self.store((series, key), at: index, in: &icmpKeys)
                case .tcp: Self.store((series, key), at: index, in: &tcpKeys)
                }
            }
        }
        guard let key else { return nil }
        writer.start(seriesKey: key)
        Schema.writeFields(of: round, to: &writer)
        return writer.finish(timestampNanoseconds: Schema.timestamp(of: round))
    }

    private static func store(_ entry: (series: Series, key: String?), at index: Int, in keys: inout [(series: Series, key: String?)?]) {
        if index >= keys.count { keys.append(contentsOf: repeatElement(nil, count: index + 1 - keys.count)) }
        keys[index] = entry
    }
}

/// `Schema.writeFields` writes straight into the line, each key escaped once.
extension LineWriter: RoundFieldSink {
    public mutating func field(_ field: Schema.RoundField, _ value: FieldValue) {
        self.field(RoundLineEncoder.fieldKeys[field.rawValue], value)
    }
}
