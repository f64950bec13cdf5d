import ProbeEngine
import ProbeResults
import XCTest
@testable import ProbeService

/// Plan diffing: what a reload or a re-resolution asks of a running prober.
final class ProbePlanTests: XCTestCase {
    func entry(_ env: String, _ host: String, _ address: String?, port: UInt16? = nil) -> (planned: PlannedTarget, target: ProbeTarget) {
        (PlannedTarget(env: env, host: host, port: port),
         ProbeTarget(name: host, address: address.flatMap(IPAddress.init(parsing:)), port: port, resolutionError: address == nil ? "no such host" : nil))
    }

    func testAnUnchangedPlanChangesNothing() {
        let targets = [entry("prod", "db", "192.0.2.1", port: 5432), entry("prod", "web", "192.0.2.2", port: 443)]
        var plan = ProbePlan(targets)
        let update = plan.update(to: targets)
        XCTAssertTrue(update.isEmpty)
        XCTAssertEqual(plan.targets, targets.map(\.target))
    }

    func testAddedTargetsTakeTheNextIndicesAndRemovedOnesKeepTheirsForever() {
        var plan = ProbePlan([entry("prod", "a", "192.0.2.1"), entry("prod", "b", "192.0.2.2")])
        let first = plan.update(to: [entry("prod", "b", "192.0.2.2"), entry("prod", "c", "192.0.2.3")])
        XCTAssertEqual(first.removed, [0])
        XCTAssertEqual(first.added.map(\.name), ["c"])
        XCTAssertTrue(first.changed.isEmpty)
        XCTAssertEqual(plan.planned(at: 2)?.host, "c", "the added target's index is the next one")
        XCTAssertEqual(plan.planned(at: 0)?.host, "a", "a removed target keeps its index, so late results still map")
        XCTAssertEqual(plan.activeCount, 2)
        // Back again: a new index, never the old one.
        let second = plan.update(to: [entry("prod", "a", "192.0.2.1"), entry("prod", "b", "192.0.2.2"), entry("prod", "c", "192.0.2.3")])
        XCTAssertEqual(second.added.map(\.name), ["a"])
        XCTAssertEqual(second.removed, [])
        XCTAssertEqual(plan.planned(at: 3)?.host, "a")
    }

    func testAMovedNameIsChangedAloneAndAResolvedOneToo() {
        var plan = ProbePlan([entry("prod", "db", "192.0.2.1"), entry("prod", "web", "192.0.2.2"), entry("prod", "new", nil)])
        let update = plan.update(to: [entry("prod", "db", "192.0.2.9"), entry("prod", "web", "192.0.2.2"), entry("prod", "new", "192.0.2.3")])
        XCTAssertEqual(update.changed.map(\.index), [0, 2])
        XCTAssertEqual(update.changed.map { $0.target.address?.description }, ["192.0.2.9", "192.0.2.3"])
        XCTAssertTrue(update.added.isEmpty && update.removed.isEmpty)
    }

    func testANameTheResolverDidNotAnswerKeepsItsAddressAndOneThatIsGoneDoesNot() {
        var plan = ProbePlan([entry("prod", "db", "192.0.2.1"), entry("prod", "old", "192.0.2.2")])
        var silent = entry("prod", "db", nil)
        silent.target.resolutionFailureIsTemporary = true
        let gone = entry("prod", "old", nil)
        let update = plan.update(to: plan.keepingKnownAddresses([silent, gone]))
        XCTAssertEqual(update.changed.map(\.index), [1], "only the name that does not exist any more changes")
        XCTAssertNil(update.changed.first?.target.address)
        XCTAssertEqual(plan.entries[0].target.address?.description, "192.0.2.1", "probed at its last address")
    }

    func testTheSameHostInTwoEnvsAndOnTwoPortsIsFourTargets() {
        let targets = [entry("prod", "db", "192.0.2.1", port: 5432), entry("prod", "db", "192.0.2.1", port: 6432),
                       entry("staging", "db", "192.0.2.1", port: 5432), entry("staging", "db", "192.0.2.1", port: 6432)]
        var plan = ProbePlan(targets)
        let update = plan.update(to: Array(targets.dropFirst()))
        XCTAssertEqual(update.removed, [0], "only prod's db:5432 went")
        XCTAssertEqual(plan.planned(at: 2), PlannedTarget(env: "staging", host: "db", port: 5432))
    }
}
