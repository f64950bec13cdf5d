/// The value of one field of a point.
public enum FieldValue: Sendable, Equatable {
    /// A signed 64-bit integer, written with the `i` suffix.
    case integer(Int64)
    /// A float; NaN and the infinities cannot be stored, so such fields are left out.
    case float(Double)
    /// A string, written in double quotes.
    case string(String)
    /// A boolean, written as `true` or `false`.
    case boolean(Bool)
}

/// One point of a time series, as every sink takes it: a measurement, tags, fields and a
/// time (InfluxDB writes it as one line; the command line prints it).
public struct DataPoint: Sendable, Equatable {
    /// The measurement (the series' name).
    public var measurement: String
    /// Tags by key; written sorted by key, as InfluxDB recommends. Empty values are left out.
    public var tags: [String: String]
    /// Fields in the order they are written; a repeated key keeps its last value.
    public var fields: [(key: String, value: FieldValue)]
    /// Nanoseconds since the Unix epoch (the sink writes with precision=ns).
    public var timestampNanoseconds: Int64

    public init(measurement: String, tags: [String: String] = [:], fields: [(key: String, value: FieldValue)], timestampNanoseconds: Int64) {
        self.measurement = measurement
        self.tags = tags
        self.fields = fields
        self.timestampNanoseconds = timestampNanoseconds
    }

    public static func == (left: DataPoint, right: DataPoint) -> Bool {
        left.measurement == right.measurement && left.tags == right.tags
            && left.timestampNanoseconds == right.timestampNanoseconds
            && left.fields.count == right.fields.count
            && zip(left.fields, right.fields).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

