import Foundation
@testable import InfluxSink
@testable import ProbeEngine
import ProbeResults
import XCTest
@testable import ProbeService

/// The schema is defined once (Schema) and documented once (README's table): they agree.
final class SchemaTests: XCTestCase {
    /// The README's schema table rows, by measurement.
    func readmeRows() throws -> [String: String] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        var rows: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let measurement = cells.first, ["`icmp`", "`tcp`"].contains(measurement) else { continue }
            rows[measurement.trimmingCharacters(in: CharacterSet(charactersIn: "`")), default: ""] += line
        }
        return rows
    }

    func testEveryTagAndFieldOfARoundPointIsInTheReadmesTable() throws {
        let rows = try readmeRows()
        let icmp = try XCTUnwrap(rows["icmp"], "README has an icmp row")
        let tcp = try XCTUnwrap(rows["tcp"], "README has a tcp row")
        for key in Schema.keys(of: .icmp) {
            XCTAssertTrue(icmp.contains("`\(key)`"), "README's icmp row names \(key)")
        }
        // The tcp row says "the same plus ...".
        for key in Schema.keys(of: .tcp) {
            XCTAssertTrue(tcp.contains("`\(key)`") || icmp.contains("`\(key)`"), "README's tcp rows name \(key)")
        }
    }

    /// A trace's `hop` and `path` points are told apart as its rounds' are: the class, the
    /// source, the interface and the labels are tags, so a target traced in two classes
    /// writes two series instead of overwriting one.
    func testHopAndPathPointsCarryTheTargetsOptionsAndLabels() {
        func trace(_ options: PacketOptions) -> PathTrace {
            var target = ProbeTarget(name: "db2.example.com", address: IPAddress(parsing: "127.0.0.9"))
            target.options = options
            target.labels = ["site": "fra1"]
            let hop = HopReport(hop: 1, addresses: [(IPAddress(parsing: "127.0.0.9")!, 3)], sent: 3, received: 3, rttsMilliseconds: [1, 2, 3],
                                isDestination: true, unreachable: 0)
            return PathTrace(targetIndex: 0, target: target, startNanoseconds: 1_000_000_000, rounds: 3, flows: 1, hops: [hop], flowPaths: [],
                             reached: true, ignored: [:], analysis: PathAnalysis(hops: [hop], reached: true))
        }
        let voice = trace(PacketOptions(tos: 0xb8, source: IPAddress(parsing: "127.0.0.2"), interface: "lo"))
        for point in Schema.hopPoints(for: voice, env: "production", probe: "p1") + [Schema.pathPoint(for: voice, env: "production", probe: "p1")] {
            XCTAssertEqual(point.tags["tos"], "ef", point.measurement)
            XCTAssertEqual(point.tags["source"], "127.0.0.2", point.measurement)
            XCTAssertEqual(point.tags["interface"], "lo", point.measurement)
            XCTAssertEqual(point.tags["site"], "fra1", point.measurement)
            XCTAssertEqual(point.tags["target"], "db2.example.com", point.measurement)
        }
        let plain = trace(.none)
        for point in Schema.hopPoints(for: plain, env: "production", probe: "p1") + [Schema.pathPoint(for: plain, env: "production", probe: "p1")] {
            XCTAssertNil(point.tags["tos"], "class 0 has no tos tag")
            XCTAssertNil(point.tags["source"])
            XCTAssertEqual(point.tags["site"], "fra1")
        }
    }

    func testARoundPointCarriesOnlyTheSchemasKeys() {
        var tally = RoundTally()
        tally.sent = 2
        tally.concluded = 2
        tally.recordSample(index: 0, milliseconds: 0.25, source: .kernel)
        tally.recordSample(index: 1, milliseconds: 0.5, source: .kernel)
        let round = tally.result(kind: .tcp, targetIndex: 0, target: ProbeTarget(name: "db", address: IPAddress(parsing: "192.0.2.1"), port: 5432), tcpMode: .halfOpen)
        let point = Schema.point(for: round, env: "prod", probe: "p")
        let keys = Set(point.tags.keys).union(point.fields.map(\.key))
        XCTAssertTrue(keys.isSubset(of: Schema.keys(of: .tcp)), "\(keys.subtracting(Schema.keys(of: .tcp)))")
        XCTAssertEqual(point.tags[Schema.Tag.mode], "half-open")
    }

    /// `run` encodes rounds with each target's series key made once; its lines must be
    /// byte for byte those of the general encoder, also when a target's tags change.
    func testTheRoundLineEncoderWritesExactlyTheGeneralEncodersLines() throws {
        var encoder = RoundLineEncoder(probe: "edge probe,1")
        let names = ["db.example", "a b,c=d", "back\\slash\\", "#hash", "quo\"te", "ünï", ""]
        let addresses = ["192.0.2.1", "2001:db8::7", nil]
        var checked = 0
        for pass in 0..<3 {
            for (index, name) in names.enumerated() {
                for kind in [ProbeKind.icmp, .tcp] {
                    var tally = RoundTally()
                    tally.sent = 3
                    tally.concluded = 3
                    if (index + pass) % 3 != 0 {
                        tally.recordSample(index: 0, milliseconds: 0.125 * Double(index + 1), source: .kernel)
                        tally.recordSample(index: 1, milliseconds: 1e-7 + Double(pass), source: .user)
                    }
                    // The address and env change between passes for some targets: the cached
                    // series key must follow.
                    let address = addresses[(index + (index % 2 == 0 ? pass : 0)) % addresses.count].flatMap(IPAddress.init(parsing:))
                    let target = ProbeTarget(name: name, address: address, port: kind == .tcp ? UInt16(5432 + pass) : nil)
                    let round = tally.result(kind: kind, targetIndex: index, target: target, tcpMode: kind == .tcp ? (pass == 1 ? .connect : .halfOpen) : nil)
                    let env = index == 3 ? "env \(pass)" : "prod"
                    let expected = LineProtocol.encode(Schema.point(for: round, env: env, probe: "edge probe,1"))
                    XCTAssertEqual(encoder.line(for: round, env: env), expected, "pass \(pass), target \(name), \(kind)")
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 42)
    }
}
