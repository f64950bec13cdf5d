extension Schema {
    /// The Prometheus names of the schema (README "Prometheus"): `netprobe_<kind>_<field>`
    /// made from the field keys above, with milliseconds turned into seconds and percent
    /// into a ratio (Prometheus' base units) and `_total` on counters. Labels are the tag
    /// keys. The exporter and the PromQL dashboards both take their names from here.
    public enum Prometheus {
        public static func name(_ kind: ProbeKind, _ suffix: String) -> String { "netprobe_\(kind.rawValue)_\(suffix)" }

        /// `rtt_min_ms` -> `netprobe_icmp_rtt_min_seconds`; `loss_percent` -> `..._loss_ratio`.
        public static func gauge(_ kind: ProbeKind, _ field: String) -> String {
            if field.hasSuffix("_ms") { return name(kind, field.dropLast(3) + "_seconds") }
            if field.hasSuffix("_percent") { return name(kind, field.dropLast(8) + "_ratio") }
            return name(kind, field)
        }

        /// `sent` -> `netprobe_icmp_sent_total`.
        public static func counter(_ kind: ProbeKind, _ field: String) -> String { name(kind, field + "_total") }

        /// Every RTT sample, a histogram in seconds.
        public static func rttHistogram(_ kind: ProbeKind) -> String { name(kind, "rtt_seconds") }
        /// Rounds by `result` (a counter).
        public static func rounds(_ kind: ProbeKind) -> String { name(kind, "rounds_total") }
        /// Attempts by `result` (a counter).
        public static func outcomes(_ kind: ProbeKind) -> String { name(kind, "outcomes_total") }
        /// The last round's start, seconds since the epoch.
        public static func lastRoundTimestamp(_ kind: ProbeKind) -> String { name(kind, "last_round_timestamp_seconds") }
    }
}
