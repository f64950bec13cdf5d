import ProbeResults
import Foundation
import Logging
import TestSupport
import XCTest
@testable import InfluxSink

/// SplitMix64: reproducible from the seed printed on failure.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["INFLUXSINK_TEST_LOG"] == nil ? .critical : .trace
    return logger
}

final class FuzzRoundTripTests: XCTestCase {
    /// Scalars the line protocol treats specially, plus whitespace, quotes and non-ASCII.
    private static let alphabet: [String] = [
        "a", "b", "Z", "0", "9", "_", "-", ".", " ", " ", ",", ",", "=", "=", "\"", "\"", "\\", "\\", "\\\\", "'", "#", "\t",
        "\n", "\r", "é", "e\u{301}", ",\u{301}", "日本", "🚀", "ß", "\u{2028}", "{", "}", "$", "/", "*", "(",
    ]

    private func randomText(_ generator: inout SeededGenerator, maximumLength: Int = 10) -> String {
        (0..<Int.random(in: 0...maximumLength, using: &generator)).map { _ in Self.alphabet.randomElement(using: &generator)! }.joined()
    }

    // What the encoder documents it changes; written here independently of the encoder.
    private func expectedIdentifier(_ text: String, isStringValue: Bool = false) -> String {
        var scalars = Array(text.unicodeScalars.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
        if !isStringValue {
            // Drop each backslash whose next non-backslash scalar is one of these.
            var result: [Unicode.Scalar] = []
            for (index, scalar) in scalars.enumerated() {
                if scalar == "\\", let next = scalars[(index + 1)...].first(where: { $0 != "\\" }), [",", "=", " ", "\""].contains(next) { continue }
                result.append(scalar)
            }
            scalars = result
        }
        while scalars.last == "\\" { scalars.removeLast() }
        return String(String.UnicodeScalarView(scalars))
    }

    private func sameScalars(_ left: String, _ right: String) -> Bool {
        Array(left.unicodeScalars) == Array(right.unicodeScalars)
    }

    func testRandomPointsRoundTripThroughInfluxDBExactly() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("fuzz")
        let seed = UInt64(ProcessInfo.processInfo.environment["FUZZ_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        var generator = SeededGenerator(state: seed)
        let count = 1500
        let now = Int64(Date().timeIntervalSince1970) * 1_000_000_000
        var points: [DataPoint] = []
        for index in 0..<count {
            // The index keeps measurements apart (no field type conflicts between points);
            // front or back, so that both ends of the random part get tested.
            let random = randomText(&generator)
            let measurement = index.isMultiple(of: 2) ? "i\(index)|\(random)" : "\(random)|\(index)i"
            var tags: [String: String] = [:]
            for tag in 0..<Int.random(in: 0...4, using: &generator) {
                tags["t\(tag)" + randomText(&generator, maximumLength: 6)] = randomText(&generator)
            }
            var fields: [(key: String, value: FieldValue)] = []
            for field in 0..<Int.random(in: 1...4, using: &generator) {
                let value: FieldValue
                switch Int.random(in: 0..<5, using: &generator) {
                case 0: value = .integer(Int64.random(in: .min ... .max, using: &generator))
                case 1: value = .float(Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &generator)))
                case 2: value = .float(Double.random(in: -1000...1000, using: &generator))
                case 3: value = .boolean(Bool.random(using: &generator))
                default: value = .string(randomText(&generator, maximumLength: 20))
                }
                if case .float(let number) = value, !number.isFinite { continue }
                fields.append(("f\(field)" + randomText(&generator, maximumLength: 6), value))
            }
            if fields.isEmpty { fields.append(("f", .boolean(true))) }
            let time = now - Int64.random(in: 0..<86_400_000_000_000, using: &generator)
            points.append(DataPoint(measurement: measurement, tags: tags, fields: fields, timestampNanoseconds: time))
        }

        let spool = try TestEnvironment.temporaryDirectory("spool")
        defer { try? FileManager.default.removeItem(at: spool) }
        let sink = try InfluxSink(servers: [InfluxServer(name: "fuzz", url: server.url, api: .v1(database: "fuzz", retentionPolicy: nil, username: nil, password: nil), gzip: true)],
                                  spoolDirectory: spool.path, spoolLimitBytes: 1 << 26, batchSize: 100, flushIntervalNanoseconds: 50_000_000, logger: testLogger("fuzz"))
        try sink.write(points)
        await sink.shutdown(deadlineSeconds: 30)
        let statistics = try XCTUnwrap(sink.statistics().first)
        XCTAssertEqual(statistics.written, count, "seed \(seed): \(statistics)")
        XCTAssertEqual(statistics.permanentErrors, 0, "seed \(seed): \(statistics.lastError ?? "")")

        let measurements = try await server.series("SHOW MEASUREMENTS", database: "fuzz").first?["values"] as? [[Any]] ?? []
        XCTAssertEqual(measurements.count, count, "seed \(seed)")
        var byIndex: [Int: [String: Any]] = [:]
        for index in 0..<count {
            // One measurement per query: SELECT * over several merges their columns and
            // casts conflicting types. The markers "i12|" and "|13i" are unique ("i" and
            // "|" are not in the alphabet). JSONDecoder, not JSONSerialization: the latter
            // rounds big integers through Double.
            let source = index.isMultiple(of: 2) ? "/^i\(index)\\|/" : "/\\|\(index)i$/"
            let (_, body) = try await TestEnvironment.http("POST", server.queryURL("SELECT * FROM \(source) GROUP BY *", database: "fuzz"))
            let series = try JSONDecoder().decode(QueryResponse.self, from: body).results.first?.series ?? []
            XCTAssertLessThanOrEqual(series.count, 1)
            byIndex[index] = series.first?.dictionary
        }
        var mismatches = 0
        for (index, point) in points.enumerated() {
            guard let item = byIndex[index] else {
                XCTFail("seed \(seed): point \(index) missing: \(LineProtocol.encode(point) ?? "-")")
                mismatches += 1
                continue
            }
            var expectedMeasurement = expectedIdentifier(point.measurement)
            if let first = expectedMeasurement.unicodeScalars.first, first == "#" || first == "\t" { expectedMeasurement = "_" + expectedMeasurement }
            var expectedTags: [String: String] = [:]
            for (key, value) in point.tags where !expectedIdentifier(value).isEmpty {
                expectedTags[expectedIdentifier(key)] = expectedIdentifier(value)
            }
            let tags = item["tags"] as? [String: String] ?? [:]
            let columns = item["columns"] as? [String] ?? []
            let row = (item["values"] as? [[Any]])?.first ?? []
            var problems: [String] = []
            if !sameScalars(item["name"] as? String ?? "", expectedMeasurement) { problems.append("measurement \(item["name"] ?? "")") }
            // Columns of tags that are empty here but set in another series of the same
            // query do not exist: GROUP BY * gives each series only its own tags.
            let nonEmptyTags = tags.filter { !$0.value.isEmpty }
            if nonEmptyTags.count != expectedTags.count || !expectedTags.allSatisfy({ key, value in nonEmptyTags.contains { sameScalars($0.key, key) && sameScalars($0.value, value) } }) {
                problems.append("tags \(tags) expected \(expectedTags)")
            }
            if (row.first as? JSONValue) != .integer(point.timestampNanoseconds) { problems.append("time \(row.first ?? "nil")") }
            for (key, value) in point.fields {
                guard let column = columns.firstIndex(where: { sameScalars($0, expectedIdentifier(key)) }), column < row.count else {
                    problems.append("field \(key.debugDescription) missing")
                    continue
                }
                let stored = row[column]
                let same: Bool
                switch value {
                case .integer(let number): same = (stored as? JSONValue) == .integer(number)
                case .float(let number): same = (stored as? JSONValue)?.double == number
                case .boolean(let flag): same = (stored as? JSONValue) == .boolean(flag)
                case .string(let text): same = (stored as? JSONValue)?.string.map { sameScalars($0, expectedIdentifier(text + "x", isStringValue: true).dropLastScalar()) } ?? false
                }
                if !same { problems.append("field \(key.debugDescription)=\(value) stored \(stored)") }
            }
            if !problems.isEmpty {
                mismatches += 1
                XCTFail("seed \(seed): point \(index) \(LineProtocol.encode(point) ?? "-"): \(problems.joined(separator: "; "))")
            }
            if mismatches > 10 { break }
        }
        print("fuzz: \(count) random points round-tripped through influxd (seed \(seed), \(mismatches) mismatches)")
    }
}

private extension String {
    /// Newlines in strings become spaces but backslashes stay: the test reuses the
    /// identifier rule with a sentinel so the trailing-backslash rule does not apply.
    func dropLastScalar() -> String {
        var scalars = Array(unicodeScalars)
        scalars.removeLast()
        return String(String.UnicodeScalarView(scalars))
    }
}

/// A JSON scalar decoded exactly (Int64 first, then Double).
enum JSONValue: Decodable, Equatable {
    case integer(Int64), double(Double), boolean(Bool), string(String), null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .boolean(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .double(value) }
        else { self = .string(try container.decode(String.self)) }
    }

    var double: Double? {
        switch self {
        case .integer(let value): return Double(exactly: value) ?? Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    var string: String? { if case .string(let value) = self { return value } else { return nil } }
}

struct QueryResponse: Decodable {
    struct Result: Decodable { var series: [Series]? }
    struct Series: Decodable {
        var name: String
        var tags: [String: String]?
        var columns: [String]
        var values: [[JSONValue]]
        var dictionary: [String: Any] { ["name": name, "tags": tags ?? [:], "columns": columns, "values": values.map { $0.map { $0 as Any } }] }
    }
    var results: [Result]
}
