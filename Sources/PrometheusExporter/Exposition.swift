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
        sample(Array(name.utf8), LabelSet(labels).bytes, value)
    }

    /// One sample line with a rendered label set and, optionally, one more label.
    public mutating func sample(_ name: String, _ labels: LabelSet, extra: (name: String, value: String)? = nil, _ value: Double) {
        sample(Array(name.utf8), labels.bytes, extra: extra.map { (Array($0.name.utf8), Array(LabelSet.escape($0.value).utf8)) }, value)
    }

    /// One sample line from bytes: the metric name, the rendered labels (`LabelSet.bytes`)
    /// and an extra label whose value is already escaped. The line is written in one step
    /// (one capacity check): at ten thousand targets a scrape writes 400,000 of them.
    mutating func sample(_ name: [UInt8], _ labels: [UInt8], extra: (name: [UInt8], value: [UInt8])? = nil, _ value: Double) {
        let needed = name.count + labels.count + (extra.map { $0.name.count + $0.value.count } ?? 0) + Self.longestNumber + 8
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: needed) { out in
            var at = 0
            func put(_ bytes: [UInt8]) {
                bytes.withUnsafeBytes { source in
                    guard let base = source.baseAddress else { return }
                    out.baseAddress!.advanced(by: at).copyMemory(from: base, byteCount: source.count)
                }
                at += bytes.count
            }
            func put(_ byte: UInt8) {
                out[at] = byte
                at += 1
            }
            put(name)
            if !labels.isEmpty || extra != nil {
                put(UInt8(ascii: "{"))
                put(labels)
                if let extra {
                    if !labels.isEmpty { put(UInt8(ascii: ",")) }
                    put(extra.name)
                    put(UInt8(ascii: "="))
                    put(UInt8(ascii: "\""))
                    put(extra.value)
                    put(UInt8(ascii: "\""))
                }
                put(UInt8(ascii: "}"))
            }
            put(UInt8(ascii: " "))
            at += Self.writeNumber(value, to: out.baseAddress!.advanced(by: at))
            put(UInt8(ascii: "\n"))
            return at
        }
    }

    /// The samples of one histogram series: cumulative buckets, +Inf, `_sum`, `_count`.
    public mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: Histogram) {
        self.histogram(name, LabelSet(labels), histogram)
    }

    public mutating func histogram(_ name: String, _ labels: LabelSet, _ histogram: Histogram) {
        let names = HistogramNames(name)
        writeHistogram(names, labels.bytes, bounds: histogram.boundTexts.map { Array($0.utf8) }, count: histogram.counts.count,
                       bucket: { histogram.counts[$0] }, total: histogram.count, sum: histogram.sum)
    }

    /// A histogram's three sample names as bytes.
    struct HistogramNames: Sendable {
        let bucket: [UInt8]
        let sum: [UInt8]
        let count: [UInt8]

        init(_ name: String) {
            bucket = Array((name + "_bucket").utf8)
            sum = Array((name + "_sum").utf8)
            count = Array((name + "_count").utf8)
        }
    }

    static let le = Array("le".utf8)
    static let infinity = Array("+Inf".utf8)

    /// Cumulative buckets (`bucket(i)` is the count in bucket i alone), +Inf, `_sum`, `_count`.
    mutating func writeHistogram(_ names: HistogramNames, _ labels: [UInt8], bounds: [[UInt8]], count: Int, bucket: (Int) -> Int, total: Int, sum: Double) {
        var cumulative = 0
        for index in 0..<count {
            cumulative += bucket(index)
            sample(names.bucket, labels, extra: (Self.le, bounds[index]), Double(cumulative))
        }
        sample(names.bucket, labels, extra: (Self.le, Self.infinity), Double(total))
        sample(names.sum, labels, sum)
        sample(names.count, labels, Double(total))
    }

    /// The most bytes `writeNumber` writes ("-1.7976931348623157e+308" is 24).
    static let longestNumber = 32

    /// Writes `value` as `number` would, returning how many bytes: integers digit by digit,
    /// other values through their shortest round-trip text.
    static func writeNumber(_ value: Double, to out: UnsafeMutableRawPointer) -> Int {
        if value == value.rounded(), abs(value) < 1e15 {
            var integer = Int64(value)
            var at = 0
            if integer < 0 {
                out.storeBytes(of: UInt8(ascii: "-"), toByteOffset: 0, as: UInt8.self)
                at = 1
                integer = -integer
            }
            var digits: (UInt64, UInt64) = (0, 0)  // 16 bytes, enough for 15 digits
            var count = 0
            withUnsafeMutableBytes(of: &digits) { scratch in
                repeat {
                    scratch[count] = UInt8(ascii: "0") + UInt8(integer % 10)
                    integer /= 10
                    count += 1
                } while integer > 0
                for index in 0..<count { out.storeBytes(of: scratch[count - 1 - index], toByteOffset: at + index, as: UInt8.self) }
            }
            return at + count
        }
        var at = 0
        for byte in number(value).utf8 {
            out.storeBytes(of: byte, toByteOffset: at, as: UInt8.self)
            at += 1
        }
        return at
    }

    /// Bytes written elsewhere (another writer's chunk).
    mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
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
