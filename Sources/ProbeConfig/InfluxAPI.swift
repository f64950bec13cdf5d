/// How the server is written to and authenticated against.
public enum InfluxAPI: Sendable, Equatable {
    /// InfluxDB 1.x (and InfluxDB 3, VictoriaMetrics): POST /write, Basic auth when a username is given.
    case v1(database: String, retentionPolicy: String?, username: String?, password: Secret?)
    /// InfluxDB 2.x (and InfluxDB 3, VictoriaMetrics): POST /api/v2/write with `Authorization: Token`.
    case v2(org: String, bucket: String, token: Secret)
}

extension InfluxAPI: CustomStringConvertible {
    /// Safe to log: passwords and tokens are redacted.
    public var description: String {
        switch self {
        case .v1(let database, let retentionPolicy, let username, let password):
            return "v1(database: \(database), retentionPolicy: \(retentionPolicy ?? "nil"), username: \(username ?? "nil"), password: \(password == nil ? "nil" : "<redacted>"))"
        case .v2(let org, let bucket, _):
            return "v2(org: \(org), bucket: \(bucket), token: <redacted>)"
        }
    }
}
