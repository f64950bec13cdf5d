import ProbeResults

/// InfluxDB line protocol, written so that what the server stores is what the caller gave.
///
/// Escaping: measurement `,` and space; tag keys and values `,` `=` and space; field keys
/// `,` `=` space and `"` (a bare quote there opens a string in 1.x); string values `"`
/// and `\`.
///
/// What cannot round-trip is changed in a fixed, documented way (all checked against
/// InfluxDB 1.6 by the tests):
/// - Carriage returns and newlines become spaces everywhere: a line is a point, and 1.x
///   has no escape for a newline in names or tag values (`\n` would be stored as the two
///   characters backslash and n).
/// - In measurements, tag keys, tag values and field keys, backslashes at the end or right
///   before `,`, `=`, space or `"` are removed: 1.x has no escape for a backslash outside
///   string fields, and its line splitter reads every backslash as escaping the next byte
///   (a trailing one would escape the separator). Any other backslash is stored as it is.
/// - A measurement beginning with `#` or a tab gets a `_` in front: the line would be a
///   comment, or the tab trimmed as leading whitespace.
/// - Empty tag values, empty keys and the key `time` are left out (the server rejects
///   them); so are float fields that are NaN or infinite.
/// - A point left with no field, or with an empty measurement, cannot be written.
public enum LineProtocol {
    /// Encodes one point as one line, without a trailing newline.
    /// - Parameter point: the point.
    /// - Returns: the line, or nil when the point has no writable field or measurement.
    public static func encode(_ point: DataPoint) -> String? {
        guard let key = seriesKey(measurement: point.measurement, tags: point.tags) else { return nil }
        return line(seriesKey: key, fields: point.fields, timestampNanoseconds: point.timestampNanoseconds)
    }

    /// The start of every line of one series: the measurement and its tags, escaped and
    /// sorted. Made once per series and reused, it saves a point most of its encoding.
    /// - Returns: nil when the measurement is empty (such a point cannot be written).
    public static func seriesKey(measurement: String, tags: [String: String]) -> String? {
        var measurement = identifier(measurement)
        guard !measurement.isEmpty else { return nil }
        if let first = measurement.unicodeScalars.first, first == "#" || first == "\t" { measurement = "_" + measurement }
        var line = ""
        line.reserveCapacity(64 + 16 * tags.count)
        appendEscaped(measurement, escaping: measurementSpecials, to: &line)
        var cleanedTags: [(key: String, value: String)] = []
        cleanedTags.reserveCapacity(tags.count)
        if tags.keys.allSatisfy(isPlain) {
            // Plain keys stay as they are, so they stay distinct: no dictionary needed.
            for (key, value) in tags {
                let value = identifier(value)
                guard !key.isEmpty, !value.isEmpty, key != "time" else { continue }
                cleanedTags.append((key, value))
            }
        } else {
            var cleaned: [String: String] = [:]
            for (key, value) in tags {
                let key = identifier(key)
                let value = identifier(value)
                guard !key.isEmpty, !value.isEmpty, key != "time" else { continue }
                cleaned[key] = value
            }
            cleanedTags = cleaned.map { ($0.key, $0.value) }
        }
        // Byte order, as the server sorts them (Swift's String order is not byte order).
        for (key, value) in cleanedTags.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            line.append(",")
            appendEscaped(key, escaping: keySpecials, to: &line)
            line.append("=")
            appendEscaped(value, escaping: keySpecials, to: &line)
        }
        // A copy of exactly its length: a key is kept for the run, one per series, and the
        // reserve above was twice what a key of run's needs (1.9 MB against 1.1 MB at
        // 10,000 targets).
        return String(decoding: Array(line.utf8), as: UTF8.self)
    }

    /// One line: a series key (`seriesKey`), the fields, the timestamp.
    /// - Returns: nil when no field is writable.
    public static func line(seriesKey: String, fields: [(key: String, value: FieldValue)], timestampNanoseconds: Int64) -> String? {
        var writer = LineWriter()
        writer.start(seriesKey: seriesKey)
        // The last of fields with the same key wins (a point has a dozen: a scan is cheaper
        // than hashing them).
        for (index, field) in fields.enumerated() where !fields[(index + 1)...].contains(where: { $0.key == field.key }) {
            writer.field(FieldKey(field.key), field.value)
        }
        return writer.finish(timestampNanoseconds: timestampNanoseconds)
    }

    static let measurementSpecials: Set<Unicode.Scalar> = [",", " "]
    private static let keySpecials: Set<Unicode.Scalar> = [",", "=", " "]
    /// A bare `"` in a field key would open a string that runs into the next lines.
    static let fieldKeySpecials: Set<Unicode.Scalar> = [",", "=", " ", "\""]

    // Everything below works on Unicode scalars, not Characters: a comma followed by a
    // combining mark is one Character but still a separator to the server.

    /// Newlines to spaces; backslashes removed at the end and right before `,`, `=`,
    /// space or `"`: 1.x's line splitter takes every backslash as escaping the next byte,
    /// so no spelling of such a backslash survives all of its parsers.
    /// Bytes that never need escaping or cleaning anywhere in a line: printable ASCII but
    /// the separators, the quote and the backslash.
    private static let plainBytes: [Bool] = (0..<256).map { byte in
        byte > 0x20 && byte < 0x7f && ![UInt8(ascii: ","), UInt8(ascii: "="), UInt8(ascii: "\""), UInt8(ascii: "\\")].contains(UInt8(byte))
    }

    /// The fast path: names and values made of plain ASCII (almost all of them) are
    /// written as they are, without looking at Unicode scalars.
    static func isPlain(_ text: String) -> Bool {
        // Over the contiguous bytes (native and small strings both have them), with the
        // table's storage borrowed once: the generic `allSatisfy` over the UTF-8 view cost
        // 4 % of `run`'s CPU at 10,000 targets.
        if let plain = text.utf8.withContiguousStorageIfAvailable({ bytes in
            plainBytes.withUnsafeBufferPointer { table in bytes.allSatisfy { table[Int($0)] } }
        }) {
            return plain
        }
        return text.utf8.allSatisfy { plainBytes[Int($0)] }
    }

    static func identifier(_ text: String) -> String {
        if isPlain(text) { return text }
        // Backwards, so that a whole run of backslashes before such a character goes;
        // the end of the text counts as such a character.
        var kept: [Unicode.Scalar] = []
        kept.reserveCapacity(text.unicodeScalars.count)
        var beforeSensitive = true
        for scalar in withoutNewlines(text).reversed() {
            if scalar == "\\" && beforeSensitive { continue }
            beforeSensitive = escapeSensitive.contains(scalar)
            kept.append(scalar)
        }
        return String(String.UnicodeScalarView(kept.reversed()))
    }

    private static let escapeSensitive: Set<Unicode.Scalar> = [",", "=", " ", "\""]

    private static func withoutNewlines(_ text: String) -> [Unicode.Scalar] {
        text.unicodeScalars.map { $0 == "\n" || $0 == "\r" ? " " : $0 }
    }

    static func appendEscaped(_ text: String, escaping specials: Set<Unicode.Scalar>, to line: inout String) {
        if isPlain(text) {
            line.append(text)
            return
        }
        for scalar in text.unicodeScalars {
            if specials.contains(scalar) { line.unicodeScalars.append("\\") }
            line.unicodeScalars.append(scalar)
        }
    }

    static func quoted(_ text: String) -> String {
        if isPlain(text) { return "\"" + text + "\"" }
        var result = "\""
        for scalar in withoutNewlines(text) {
            if scalar == "\"" || scalar == "\\" { result.unicodeScalars.append("\\") }
            result.unicodeScalars.append(scalar)
        }
        result.append("\"")
        return result
    }
}
