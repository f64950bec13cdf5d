import Foundation
@testable import InfluxSink
@testable import ProbeEngine
import ProbeResults
import XCTest
@testable import ProbeService

/// The `too_big` and `path_mtu` fields of icmp points: on the points of probes that asked for
/// don't-fragment (and of any round that was told "too big"), never on anyone else's, and
/// written the same by `run`'s fast encoder as by the general one.
final class TooBigSchemaTests: XCTestCase {
    func round(fragmentation: Fragmentation?, sent: Int = 3, tooBig: [Int?] = [], received: Int = 0) -> RoundResult {
        var tally = RoundTally()
        tally.sent = sent
        for mtu in tooBig { tally.recordTooBig(mtu: mtu) }
        for index in 0..<received { tally.recordSample(index: index, milliseconds: 0.5, source: .kernel) }
        let target = ProbeTarget(name: "db", address: IPAddress(parsing: "198.18.231.2"), options: PacketOptions(fragmentation: fragmentation))
        return tally.result(kind: .icmp, targetIndex: 0, target: target)
    }

    func fields(_ round: RoundResult) -> [String: FieldValue] {
        Dictionary(uniqueKeysWithValues: Schema.point(for: round, env: "prod", probe: "p").fields.map { ($0.key, $0.value) })
    }

    func testATooBigRoundCarriesItsCountThePathMTUAndTheResult() {
        let point = fields(round(fragmentation: .probe, tooBig: [1400, 1400, 1400]))
        XCTAssertEqual(point["too_big"], .integer(3))
        XCTAssertEqual(point["path_mtu"], .integer(1400))
        XCTAssertEqual(point["result"], .string("too_big"))
        XCTAssertEqual(point["result_code"], .integer(6))
        XCTAssertEqual(point["received"], .integer(0))
    }

    func testADontFragmentRoundThatPassedSaysZeroAndNamesNoMTU() {
        let point = fields(round(fragmentation: .do, received: 3))
        XCTAssertEqual(point["too_big"], .integer(0), "the probe asked: 0 is an answer")
        XCTAssertNil(point["path_mtu"])
        XCTAssertEqual(point["result"], .string("ok"))
    }

    func testOtherProbesPointsAreAsBefore() {
        for fragmentation in [nil, Fragmentation.dont] {
            let point = fields(round(fragmentation: fragmentation, received: 3))
            if fragmentation == nil {
                XCTAssertNil(point["too_big"], "no DF choice: no new field")
            } else {
                XCTAssertEqual(point["too_big"], .integer(0), "dont is a choice too")
            }
            XCTAssertNil(point["path_mtu"])
        }
    }

    func testEveryKeyIsTheSchemasAndTheFastEncoderWritesTheSameLine() {
        var encoder = RoundLineEncoder(probe: "p")
        for round in [round(fragmentation: .probe, tooBig: [1400, nil, 1280]), round(fragmentation: .probe, tooBig: [nil]),
                      round(fragmentation: .dont, received: 3), round(fragmentation: nil, received: 3)] {
            let point = Schema.point(for: round, env: "prod", probe: "p")
            let keys = Set(point.tags.keys).union(point.fields.map(\.key))
            XCTAssertTrue(keys.isSubset(of: Schema.keys(of: .icmp)), "\(keys.subtracting(Schema.keys(of: .icmp)))")
            XCTAssertEqual(encoder.line(for: round, env: "prod"), LineProtocol.encode(point))
        }
        XCTAssertEqual(fields(round(fragmentation: .probe, tooBig: [1400, nil, 1280]))["path_mtu"], .integer(1280), "the smallest MTU named")
        XCTAssertNil(fields(round(fragmentation: .probe, tooBig: [nil]))["path_mtu"], "no MTU named, none written")
    }
}
