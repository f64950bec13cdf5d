import ProbeResults
import ProbeConfig
import Foundation
import Logging
import TestSupport
import NIOCore
import XCTest
@testable import InfluxSink

final class LineProtocolTests: XCTestCase {
    private func line(_ measurement: String, tags: [String: String] = [:], _ fields: [(key: String, value: FieldValue)], time: Int64 = 1) -> String? {
        LineProtocol.encode(DataPoint(measurement: measurement, tags: tags, fields: fields, timestampNanoseconds: time))
    }

    func testMeasurementEscapesCommaAndSpaceOnly() {
        XCTAssertEqual(line("a b,c=d\"e", [("v", .integer(1))]), #"a\ b\,c=d"e v=1i 1"#)
    }

    func testTagsAndFieldKeysEscapeCommaEqualsAndSpace() {
        XCTAssertEqual(line("m", tags: ["k ,=": "v ,=x"], [("f ,=", .boolean(true))]), #"m,k\ \,\==v\ \,\=x f\ \,\==true 1"#)
    }

    func testStringFieldsEscapeQuoteAndBackslash() {
        XCTAssertEqual(line("m", [("s", .string(#"say "hi" \ bye"#))]), #"m s="say \"hi\" \\ bye" 1"#)
    }

    func testValuesByType() {
        XCTAssertEqual(line("m", [("i", .integer(-42)), ("f", .float(1.0)), ("g", .float(1e-7)), ("b", .boolean(false)), ("s", .string(""))], time: -5),
                       #"m i=-42i,f=1.0,g=1e-07,b=false,s="" -5"#)
        XCTAssertEqual(line("m", [("max", .integer(.max)), ("big", .float(-1.5e300))]), "m max=9223372036854775807i,big=-1.5e+300 1")
    }

    func testNaNAndInfinityAreLeftOutAndAPointWithoutFieldsIsNotWritable() {
        XCTAssertEqual(line("m", [("a", .float(.nan)), ("b", .float(2.5)), ("c", .float(-.infinity))]), "m b=2.5 1")
        XCTAssertNil(line("m", [("a", .float(.nan))]))
        XCTAssertNil(line("m", []))
        XCTAssertNil(line("", [("a", .integer(1))]))
        XCTAssertNil(line("\\", [("a", .integer(1))]))
    }

    func testTagsAreSortedByKeyBytesAndEmptyValuesLeftOut() {
        XCTAssertEqual(line("m", tags: ["b": "2", "a": "1", "Z": "0", "é": "e", "empty": ""], [("v", .integer(1))]), "m,Z=0,a=1,b=2,é=e v=1i 1")
    }

    func testNewlinesBecomeSpacesEverywhere() throws {
        let encoded = try XCTUnwrap(line("m\nx", tags: ["t\r": "a\nb"], [("f\n", .string("x\r\ny"))]))
        XCTAssertFalse(encoded.contains("\n") || encoded.contains("\r"))
        XCTAssertEqual(encoded, #"m\ x,t\ =a\ b f\ ="x  y" 1"#)
    }

    func testTrailingBackslashIsRemovedBecauseItWouldEscapeTheSeparator() {
        XCTAssertEqual(line(#"m\"#, tags: [#"k\\"#: #"v\"#, "only": #"\"#], [(#"f\"#, .integer(1))]), #"m,k=v f=1i 1"#)
        // Inside, a backslash stays (1.x stores it as it is).
        XCTAssertEqual(line(#"m\x"#, tags: ["k": #"a\b"#], [("f", .integer(1))]), #"m\x,k=a\b f=1i 1"#)
    }

    func testMeasurementStartingWithHashIsNotAComment() {
        XCTAssertEqual(line("#m", [("f", .integer(1))]), "_#m f=1i 1")
    }

    func testTimeKeyAndRepeatedFieldKeys() {
        XCTAssertEqual(line("m", tags: ["time": "x"], [("time", .integer(1)), ("a", .integer(1)), ("a", .integer(2))]), "m a=2i 1")
    }

    func testCombiningMarkAfterCommaIsStillEscaped() {
        // "," + U+0301 is one Character but two scalars; the server sees a comma.
        XCTAssertEqual(line("a,\u{301}b", [("f", .integer(1))]), "a\\,\u{301}b f=1i 1")
    }

    func testServerDescriptionRedactsSecrets() {
        let v1 = InfluxServer(name: "a", url: URL(string: "http://user:pw@127.0.0.1:8086")!, api: .v1(database: "d", retentionPolicy: nil, username: "u", password: Secret("hunter2")))
        let v2 = InfluxServer(name: "b", url: URL(string: "http://127.0.0.1:8086")!, api: .v2(org: "o", bucket: "b", token: Secret("tok-secret")))
        for text in [v1.description, v2.description, "\(v1.api)", "\(v2.api)", String(describing: v1)] {
            XCTAssertFalse(text.contains("hunter2") || text.contains("tok-secret") || text.contains("pw@"), text)
        }
    }

    func testSpoolDirectoryNamesAreSafeAndDistinct() {
        XCTAssertEqual(InfluxSink.directoryName(for: "influx-1.local"), "influx-1.local")
        let odd = ["a/b", "a_b", "../x", "", "a b", "a\u{0}b", "ü"].map(InfluxSink.directoryName(for:))
        XCTAssertEqual(Set(odd).count, odd.count)
        for name in odd {
            XCTAssertFalse(name.contains("/") || name.hasPrefix(".") || name.isEmpty, name)
        }
    }

    func testRetryAfterInSecondsAndAsHTTPDate() throws {
        XCTAssertEqual(ServerWriter.parseRetryAfter("3"), 3)
        let inTenSeconds = Date().addingTimeInterval(10)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let parsed = try XCTUnwrap(ServerWriter.parseRetryAfter(formatter.string(from: inTenSeconds)))
        XCTAssertEqual(parsed, 10, accuracy: 1.5)
        XCTAssertNil(ServerWriter.parseRetryAfter("soon"))
    }

    func testStatusClassification() {
        XCTAssertEqual(ServerWriter.classify(status: 204, retryAfter: nil, body: Data()), .stored)
        XCTAssertEqual(ServerWriter.classify(status: 503, retryAfter: "2", body: Data()), .retry(retryAfter: 2, reason: "HTTP 503: (empty body)"))
        XCTAssertEqual(ServerWriter.classify(status: 401, retryAfter: nil, body: Data(#"{"error":"authorization failed"}"#.utf8)),
                       .refused(status: 401, reason: "HTTP 401: authorization failed", partial: false))
        XCTAssertEqual(ServerWriter.classify(status: 400, retryAfter: nil, body: Data(#"{"error":"partial write: x dropped=1"}"#.utf8)),
                       .refused(status: 400, reason: "HTTP 400: partial write: x dropped=1", partial: true))
    }

    func testPartialWriteNamesTheRejectedLines() {
        let lines = ["m a=1i 1", "m a=\"x\" 2", "m a=2i 3"]
        XCTAssertEqual(ServerSender.rejectedLines(of: lines, reason: "partial write: unable to parse 'm a=\"x\" 2': bad\nunable to parse 'zzz': bad dropped=1"), ["m a=\"x\" 2"])
        XCTAssertEqual(ServerSender.rejectedLines(of: lines, reason: "partial write: field type conflict dropped=1"), lines)
    }

    func testGzipIsAValidGzipStream() throws {
        let text = Array(String(repeating: "m,host=a value=1i 1\n", count: 100).utf8)
        let compressed = try Gzip.compress(text)
        XCTAssertEqual(Array(compressed.prefix(2)), [0x1f, 0x8b])
        XCTAssertLessThan(compressed.count, text.count / 4)
        let directory = try TestEnvironment.temporaryDirectory("gzip")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("x.gz").path
        _ = FileManager.default.createFile(atPath: path, contents: compressed)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "gzip -dc \(path) > \(path).out"]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual(FileManager.default.contents(atPath: path + ".out"), Data(text))
    }

    /// A batch compressed line by line, bigger than the output's first allocation and
    /// hard to compress (so the output grows many times), gunzips to exactly its lines.
    func testGzipOfManyLinesGrowsItsOutputAndDecompressesToTheLines() throws {
        var generator = SystemRandomNumberGenerator()
        let lines = (0..<20_000).map { index in
            "m,host=h\(index) value=\(UInt64.random(in: 0...UInt64.max, using: &generator))i,x=\(Double.random(in: 0..<1, using: &generator)) \(index)"
        }
        var compressed = try Gzip.compress(lines: lines)
        let bytes = compressed.readBytes(length: compressed.readableBytes) ?? []
        let directory = try TestEnvironment.temporaryDirectory("gzip-lines")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("x.gz").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "gzip -dc \(path) > \(path).out"]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let expected = lines.map { $0 + "\n" }.joined()
        XCTAssertGreaterThan(bytes.count, expected.utf8.count / 8, "incompressible enough to grow the output")
        XCTAssertEqual(FileManager.default.contents(atPath: path + ".out"), Data(expected.utf8))
    }
}

extension LineProtocolTests {
    func testBackslashBeforeASeparatorIsRemovedElsewhereKept() {
        XCTAssertEqual(line(#"m\,a\b"#, tags: [#"k\ x"#: #"v\=w\"q\\"#], [(#"f\"g"#, .string(#"s\"#))]), #"m\,a\b,k\ x=v\=w"q f\"g="s\\" 1"#)
    }
}
