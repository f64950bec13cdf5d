import Foundation
import ProbeResults
import XCTest
@testable import ProbeService

/// The `mpls` field of `hop` points: a string field (labels change, so never a tag), only
/// where the hop's address sent a label stack, and named in the README's schema table.
final class MPLSHopFieldTests: XCTestCase {
    func trace(labelStacks: [IPAddress: [MPLSLabelStackEntry]]) -> PathTrace {
        let router = IPAddress(parsing: "198.18.191.2")!
        let hop = HopReport(hop: 2, addresses: [(router, 3)], sent: 3, received: 3, rttsMilliseconds: [1, 2, 3], isDestination: false, unreachable: 0,
                            labelStacks: labelStacks)
        return PathTrace(targetIndex: 0, target: ProbeTarget(name: "198.18.91.9", address: IPAddress(parsing: "198.18.91.9")), startNanoseconds: 1_000_000_000,
                         rounds: 3, flows: 1, hops: [hop], flowPaths: [], reached: false, ignored: [:], analysis: PathAnalysis(hops: [hop], reached: false))
    }

    func testAHopWithALabelStackHasTheMplsStringFieldAndNoTag() throws {
        let stack = [MPLSLabelStackEntry(label: 16005, trafficClass: 0, bottomOfStack: false, ttl: 1), MPLSLabelStackEntry(label: 24001, trafficClass: 0, bottomOfStack: true, ttl: 1)]
        let point = try XCTUnwrap(Schema.hopPoints(for: trace(labelStacks: [IPAddress(parsing: "198.18.191.2")!: stack]), env: "test", probe: "p1").first)
        XCTAssertEqual(point.fields.first { $0.key == "mpls" }?.value, .string("16005/0/0/1 24001/0/1/1"))
        XCTAssertNil(point.tags["mpls"])
        let plain = try XCTUnwrap(Schema.hopPoints(for: trace(labelStacks: [:]), env: "test", probe: "p1").first)
        XCTAssertNil(plain.fields.first { $0.key == "mpls" }, "no labels, no field")
    }

    func testTheReadmesHopRowNamesTheMplsField() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        let row = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("| `hop` ") }, "README has a hop row")
        let cells = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertEqual(cells.count, 3, "measurement, tags, fields")
        XCTAssertTrue(cells[2].contains("`\(Schema.PathField.mpls)`"), "the fields cell names mpls")
        XCTAssertFalse(cells[1].contains("`mpls`"), "not among the tags")
    }
}
