import NIOCore

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

/// Writes an exposition into bytes. Families are written whole, in the order they are
/// begun; label values are escaped; counters carry `_total` in both formats (OpenMetrics'
/// family name leaves it out, as the format requires).
///
/// `/metrics` hands the bytes on in chunks as they fill (`takeChunk`), so a scrape of
/// thousands of targets never holds its whole answer; per-target label sets are rendered
/// once (`LabelSet`) and copied in as bytes.
public struct ExpositionWriter {
    public let format: ExpositionFormat
    public private(set) var buffer: ByteBuffer

    public init(format: ExpositionFormat, capacity: Int = 4096) {
        self.format = format
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Starts a family. For a counter, `name` ends in `_total`.
    public mutating func family(_ name: String, _ type: MetricType, help: String) {
        var familyName = Substring(name)
        if format == .openMetrics, type == .counter, name.hasSuffix("_total") { familyName = familyName.dropLast(6) }
        buffer.writeStaticString("# HELP ")
        buffer.writeSubstring(familyName)
        buffer.writeStaticString(" ")
        buffer.writeString(Self.escapeHelp(help))
        buffer.writeStaticString("\n# TYPE ")
        buffer.writeSubstring(familyName)
        buffer.writeStaticString(" ")
        buffer.writeString(type.rawValue)
        buffer.writeStaticString("\n")
    }

    /// One sample line.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        sample(name, LabelSet(labels), value)
    }

    /// One sample line with a rendered label set and, optionally, one more label.
    public mutating func sample(_ name: String, _ labels: LabelSet, extra: (name: String, value: String)? = nil, _ value: Double) {
        buffer.writeString(name)
        if !labels.bytes.isEmpty || extra != nil {
            buffer.writeStaticString("{")
            buffer.writeBytes(labels.bytes)
            if let extra {
                if !labels.bytes.isEmpty { buffer.writeStaticString(",") }
                LabelSet.write(extra.name, extra.value, into: &buffer)
            }
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString(" ")
        buffer.writeString(Self.number(value))
        buffer.writeStaticString("\n")
    }

    /// The samples of one histogram series: cumulative buckets, +Inf, `_sum`, `_count`.
    public mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: Histogram) {
        self.histogram(name, LabelSet(labels), histogram)
    }

    public mutating func histogram(_ name: String, _ labels: LabelSet, _ histogram: Histogram) {
        let bucket = name + "_bucket"
        var cumulative = 0
        for (index, count) in histogram.counts.enumerated() {
            cumulative += count
            sample(bucket, labels, extra: ("le", histogram.boundTexts[index]), Double(cumulative))
        }
        sample(bucket, labels, extra: ("le", "+Inf"), Double(histogram.count))
        sample(name + "_sum", labels, histogram.sum)
        sample(name + "_count", labels, Double(histogram.count))
    }

    /// The bytes written since the last call, leaving the writer empty.
    public mutating func takeChunk() -> ByteBuffer {
        defer { buffer = ByteBufferAllocator().buffer(capacity: buffer.capacity) }
        return buffer
    }

    /// Ends the exposition (OpenMetrics: `# EOF`).
    public mutating func finish() {
        if format == .openMetrics { buffer.writeStaticString("# EOF\n") }
    }

    /// The finished exposition as text (small expositions: `/probe`, tests).
    public func finished() -> String {
        var copy = self
        copy.finish()
        return String(buffer: copy.buffer)
    }

    static func escapeHelp(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\n" }) else { return value }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Go-compatible float text: integers without a fraction, NaN, +Inf, -Inf.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// A series' labels, rendered once as `name="value",...` (escaped): what every sample line
/// of the series repeats.
public struct LabelSet: Sendable, Equatable {
    public let bytes: [UInt8]

    public init(_ labels: [(String, String)]) {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        for (index, label) in labels.enumerated() {
            if index > 0 { buffer.writeStaticString(",") }
            Self.write(label.0, label.1, into: &buffer)
        }
        bytes = Array(buffer.readableBytesView)
    }

    static func write(_ name: String, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString("=\"")
        buffer.writeString(escape(value))
        buffer.writeStaticString("\"")
    }

    static func escape(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else { return value }
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
}

/// A cumulative histogram with fixed upper bounds (plus +Inf).
public struct Histogram: Sendable {
    public let bounds: [Double]
    /// The bounds as `le` label values, made once.
    let boundTexts: [String]
    /// Per bound, observations in (previous bound, bound]; the +Inf bucket is `count`.
    public private(set) var counts: [Int]
    public private(set) var count = 0
    public private(set) var sum = 0.0

    public init(bounds: [Double]) {
        self.bounds = bounds
        // The usual bounds share one array of texts (ten thousand targets, one copy).
        boundTexts = bounds == Self.rttBounds ? Self.rttBoundTexts : bounds == Self.slipBounds ? Self.slipBoundTexts : bounds.map(ExpositionWriter.number)
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

    static let rttBoundTexts = rttBounds.map(ExpositionWriter.number)
    static let slipBoundTexts = slipBounds.map(ExpositionWriter.number)
}
