import ProbeResults

/// A field key made ready once: cleaned and escaped as `LineProtocol.line` does, with its
/// `=`, so that writing it costs one copy of its bytes.
public struct FieldKey: Sendable {
    /// The key as given.
    public let name: String
    /// The escaped key and `=`; empty when the key cannot be written (empty, or `time`).
    let prefix: [UInt8]

    public init(_ name: String) {
        self.name = name
        let key = LineProtocol.identifier(name)
        if key.isEmpty || key == "time" {
            prefix = []
        } else {
            var escaped = ""
            LineProtocol.appendEscaped(key, escaping: LineProtocol.fieldKeySpecials, to: &escaped)
            prefix = Array(escaped.utf8) + [UInt8(ascii: "=")]
        }
    }
}

/// Writes lines of line protocol into one reused byte buffer: a series key (made once by
/// `LineProtocol.seriesKey`), fields with keys made once (`FieldKey`), the timestamp.
/// The lines are byte for byte `LineProtocol.line`'s for the same series key, fields and
/// timestamp, provided the keys are distinct; per line it allocates only the line.
public struct LineWriter {
    private var bytes: [UInt8] = []
    private var fieldCount = 0

    public init() {
        bytes.reserveCapacity(512)
    }

    /// Starts a line (dropping any line not finished).
    public mutating func start(seriesKey: String) {
        bytes.removeAll(keepingCapacity: true)
        fieldCount = 0
        bytes.append(contentsOf: seriesKey.utf8)
    }

    /// Adds a field; a float that is NaN or infinite, and a key that cannot be written,
    /// are left out, as `LineProtocol.line` does.
    public mutating func field(_ key: FieldKey, _ value: FieldValue) {
        guard !key.prefix.isEmpty else { return }
        if case .float(let number) = value, !number.isFinite { return }
        bytes.append(fieldCount == 0 ? UInt8(ascii: " ") : UInt8(ascii: ","))
        fieldCount += 1
        bytes.append(contentsOf: key.prefix)
        switch value {
        case .integer(let number):
            appendDecimal(number)
            bytes.append(UInt8(ascii: "i"))
        case .float(let number):
            // Swift's shortest round-trip form, as in `LineProtocol.line`; short enough to
            // live inline in the String, so no allocation.
            bytes.append(contentsOf: number.description.utf8)
        case .boolean(let flag):
            bytes.append(contentsOf: (flag ? "true" : "false").utf8)
        case .string(let text):
            if LineProtocol.isPlain(text) {
                bytes.append(UInt8(ascii: "\""))
                bytes.append(contentsOf: text.utf8)
                bytes.append(UInt8(ascii: "\""))
            } else {
                bytes.append(contentsOf: LineProtocol.quoted(text).utf8)
            }
        }
    }

    /// Ends the line with its timestamp.
    /// - Returns: the line, or nil when no field was writable (such a point cannot be written).
    public mutating func finish(timestampNanoseconds: Int64) -> String? {
        guard fieldCount > 0 else { return nil }
        bytes.append(UInt8(ascii: " "))
        appendDecimal(timestampNanoseconds)
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func appendDecimal(_ number: Int64) {
        var magnitude = number.magnitude
        if number < 0 { bytes.append(UInt8(ascii: "-")) }
        // At most 20 digits; written backwards into a stack buffer, then copied.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = 20
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }
}
