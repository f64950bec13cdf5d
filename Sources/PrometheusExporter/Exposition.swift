/// The two formats a scraper may ask for: Prometheus text 0.0.4 (what promtool and most
/// scrapers read) and OpenMetrics 1.0 (what Prometheus asks for first in its Accept header).
public enum ExpositionFormat: Sendable {
    case text
    case openMetrics

    public var contentType: String {
        switch self {
        case .text: return "text/plain; version=0.0.4; charset=utf-8"
        case .openMetrics: return "application/openmetrics-text; version=1.0.0; charset=utf-8"
        }
    }

    /// OpenMetrics when the Accept header names it (Prometheus lists it first), text otherwise.
    public static func negotiate(accept: String?) -> ExpositionFormat {
        guard let accept else { return .text }
        return accept.lowercased().contains("application/openmetrics-text") ? .openMetrics : .text
    }
}

/// One metric family being written: `# HELP`, `# TYPE`, then its samples.
public enum MetricType: String, Sendable {
    case gauge, counter, histogram
}

/// Writes an exposition. Families are written whole, in the order they are begun; label
/// values are escaped; counters carry `_total` in both formats (OpenMetrics' family name
/// leaves it out, as the format requires).
public struct ExpositionWriter {
    public let format: ExpositionFormat
    public private(set) var text = ""

    public init(format: ExpositionFormat) {
        self.format = format
        text.reserveCapacity(4096)
    }

    /// Starts a family. For a counter, `name` ends in `_total`.
    public mutating func family(_ name: String, _ type: MetricType, help: String) {
        var familyName = name
        if format == .openMetrics, type == .counter, name.hasSuffix("_total") { familyName = String(name.dropLast(6)) }
        text += "# HELP \(familyName) \(Self.escapeHelp(help))\n# TYPE \(familyName) \(type.rawValue)\n"
    }

    /// One sample line.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (index, label) in labels.enumerated() {
                if index > 0 { text += "," }
                text += label.0 + "=\"" + Self.escapeLabel(label.1) + "\""
            }
            text += "}"
        }
        text += " " + Self.number(value) + "\n"
    }

    /// The samples of one histogram series: cumulative buckets, +Inf, `_sum`, `_count`.
    public mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: Histogram) {
        var cumulative = 0
        for (bound, count) in zip(histogram.bounds, histogram.counts) {
            cumulative += count
            sample(name + "_bucket", labels + [("le", Self.number(bound))], Double(cumulative))
        }
        sample(name + "_bucket", labels + [("le", "+Inf")], Double(histogram.count))
        sample(name + "_sum", labels, histogram.sum)
        sample(name + "_count", labels, Double(histogram.count))
    }

    /// The finished exposition (OpenMetrics ends with `# EOF`).
    public func finished() -> String {
        format == .openMetrics ? text + "# EOF\n" : text
    }

    static func escapeLabel(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static func escapeHelp(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Go-compatible float text: integers without a fraction, NaN, +Inf, -Inf.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// A cumulative histogram with fixed upper bounds (plus +Inf).
public struct Histogram: Sendable {
    public let bounds: [Double]
    /// Per bound, observations in (previous bound, bound]; the +Inf bucket is `count`.
    public private(set) var counts: [Int]
    public private(set) var count = 0
    public private(set) var sum = 0.0

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    public mutating func observe(_ value: Double) {
        count += 1
        sum += value
        // Bounds are few (20): a linear scan is as fast as a search.
        if let index = bounds.firstIndex(where: { value <= $0 }) { counts[index] += 1 }
    }

    /// smokeping_prober's buckets (its users' dashboards and histogram_quantile across
    /// probes expect the same `le` values): 50 µs doubling 20 times, up to 26.2144 s.
    public static let rttBounds: [Double] = (0..<20).map { 0.00005 * Double(1 << $0) }

    /// Schedule slip: 10 µs × 4^k up to 2.6 s (a late loop shows as milliseconds).
    public static let slipBounds: [Double] = (0..<10).map { 0.00001 * Double(1 << (2 * $0)) }
}
