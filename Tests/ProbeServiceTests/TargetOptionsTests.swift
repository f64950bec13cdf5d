import Foundation
@testable import InfluxSink
import ProbeConfig
@testable import ProbeEngine
import ProbeResults
import XCTest
@testable import ProbeService

/// Issue 28's wiring: the targets files' options and labels reach each engine target, a
/// reload moves only the target whose options or labels changed, and the tags they make.
final class TargetOptionsTests: XCTestCase {
    private let ef: UInt8 = 0xb8
    private let af41: UInt8 = 34 << 2

    private func configuration(_ pingYAML: String) throws -> NetprobeConfiguration {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("target-options-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        try "targets: {ping: ping.yaml, tcp: null}\n".write(toFile: directory + "/netprobe.yaml", atomically: true, encoding: .utf8)
        try pingYAML.write(toFile: directory + "/ping.yaml", atomically: true, encoding: .utf8)
        return try ConfigurationLoader.load(path: directory + "/netprobe.yaml", environment: [:])
    }

    func testATOSListOfZeroAndEFBecomesTwoProbeTargetsWithTheirOwnClass() async throws {
        let configuration = try configuration("""
            qos:
              - host: 127.0.0.1
                tos: [0, ef]
                source: 127.0.0.1
                interface: lo
                labels: {site: lab}
            """)
        let planned = Fleet.ping(configuration, identity: LocalIdentity.current(probeName: configuration.probeName))
        let resolved = await PlanResolver.resolve(planned, preference: .any)
        let loopback = try XCTUnwrap(IPAddress(parsing: "127.0.0.1"))
        XCTAssertEqual(resolved.map(\.target), [
            ProbeTarget(name: "127.0.0.1", address: loopback, options: PacketOptions(tos: 0, source: loopback, interface: "lo"), labels: ["site": "lab"]),
            ProbeTarget(name: "127.0.0.1", address: loopback, options: PacketOptions(tos: ef, source: loopback, interface: "lo"), labels: ["site": "lab"]),
        ])
        XCTAssertEqual(Set(resolved.map(\.planned)).count, 2, "two identities: each class is a series of its own")
        XCTAssertEqual(ProbePlan(resolved).targets.map(\.options.tos), [0, ef])
    }

    private func entry(_ host: String, tos: UInt8 = 0, interface: String? = nil, labels: [String: String] = [:]) -> (planned: PlannedTarget, target: ProbeTarget) {
        let planned = PlannedTarget(env: "prod", host: host, options: PacketOptions(tos: tos, interface: interface), labels: labels)
        return (planned, planned.applied(to: ProbeTarget(name: host, address: IPAddress(parsing: "192.0.2.1"))))
    }

    func testAReloadThatChangesOneTargetsLabelsOrInterfaceMovesThatTargetAlone() {
        var plan = ProbePlan([entry("a", labels: ["site": "fra1"]), entry("b"), entry("c", interface: "eth1")])
        let update = plan.update(to: [entry("a", labels: ["site": "ams1"]), entry("b"), entry("c", interface: "eth2")])
        XCTAssertEqual(update.changed.map(\.index), [0, 2])
        XCTAssertEqual(update.changed.map(\.target.labels), [["site": "ams1"], [:]])
        XCTAssertEqual(update.changed.map(\.target.options.interface), [nil, "eth2"])
        XCTAssertTrue(update.added.isEmpty && update.removed.isEmpty)
        XCTAssertEqual(plan.planned(at: 0)?.labels, ["site": "ams1"], "the plan keeps the new labels")
        XCTAssertTrue(plan.update(to: [entry("a", labels: ["site": "ams1"]), entry("b"), entry("c", interface: "eth2")]).isEmpty)
    }

    func testAChangedClassListRemovesAndAddsOnlyTheClassesThatChanged() {
        var plan = ProbePlan([entry("a", tos: 0), entry("a", tos: ef), entry("b")])
        let update = plan.update(to: [entry("a", tos: 0), entry("a", tos: af41), entry("b")])
        XCTAssertEqual(update.removed, [1])
        XCTAssertEqual(update.added.map(\.options.tos), [af41])
        XCTAssertTrue(update.changed.isEmpty)
    }

    func testANameTheResolverDidNotAnswerKeepsItsAddressButTakesItsNewLabels() {
        var plan = ProbePlan([entry("a", labels: ["site": "fra1"])])
        var silent = entry("a", labels: ["site": "ams1"])
        silent.target.address = nil
        silent.target.resolutionFailureIsTemporary = true
        let update = plan.update(to: plan.keepingKnownAddresses([silent]))
        XCTAssertEqual(update.changed.map(\.target.address?.description), ["192.0.2.1"])
        XCTAssertEqual(update.changed.map(\.target.labels), [["site": "ams1"]])
    }

    private func round(_ target: ProbeTarget, kind: ProbeKind = .icmp, index: Int = 0) -> RoundResult {
        var tally = RoundTally()
        tally.sent = 2
        tally.concluded = 2
        return tally.result(kind: kind, targetIndex: index, target: target, tcpMode: kind == .tcp ? .halfOpen : nil)
    }

    func testTagsCarryTheClassByDSCPNameSourceInterfaceAndLabelsAndNothingForClassZero() throws {
        let source = try XCTUnwrap(IPAddress(parsing: "192.0.2.10"))
        let address = IPAddress(parsing: "192.0.2.1")
        let marked = ProbeTarget(name: "db", address: address, options: PacketOptions(tos: ef, source: source, interface: "eth1"),
                                 labels: ["site": "fra1", "circuit": "c-1234"])
        XCTAssertEqual(Schema.tags(for: round(marked), env: "prod", probe: "p"), [
            "probe": "p", "env": "prod", "target": "db", "address": "192.0.2.1", "family": "ipv4",
            "tos": "ef", "source": "192.0.2.10", "interface": "eth1", "site": "fra1", "circuit": "c-1234",
        ])
        let plain = ProbeTarget(name: "db", address: address)
        XCTAssertEqual(Schema.tags(for: round(plain), env: "prod", probe: "p"),
                       ["probe": "p", "env": "prod", "target": "db", "address": "192.0.2.1", "family": "ipv4"], "class 0 and no options: the tags of before")
        XCTAssertEqual(Schema.tosTagValue(af41), "af41")
        XCTAssertEqual(Schema.tosTagValue(48 << 2), "cs6")
        XCTAssertEqual(Schema.tosTagValue(4), "4", "a code point without a DSCP name: the byte in decimal")
        XCTAssertNil(Schema.tosTagValue(0))
    }

    func testTheLineEncoderFollowsATargetsChangedLabelsAndOptionsAtTheSameIndex() {
        var encoder = RoundLineEncoder(probe: "p")
        let address = IPAddress(parsing: "192.0.2.1")
        let versions = [
            ProbeTarget(name: "db", address: address, port: 5432),
            ProbeTarget(name: "db", address: address, port: 5432, labels: ["site": "fra1"]),
            ProbeTarget(name: "db", address: address, port: 5432, options: PacketOptions(tos: ef), labels: ["site": "fra1"]),
            ProbeTarget(name: "db", address: address, port: 5432, options: PacketOptions(tos: ef, interface: "eth1"), labels: ["site": "ams1"]),
        ]
        for target in versions {
            let tcpRound = round(target, kind: .tcp, index: 3)
            XCTAssertEqual(encoder.line(for: tcpRound, env: "prod"), LineProtocol.encode(Schema.point(for: tcpRound, env: "prod", probe: "p")))
        }
        let last = encoder.line(for: round(versions[3], kind: .tcp, index: 3), env: "prod") ?? ""
        XCTAssertTrue(last.hasPrefix("tcp,address=192.0.2.1,env=prod,family=ipv4,interface=eth1,mode=half-open,port=5432,probe=p,site=ams1,target=db,tos=ef "), last)
    }
}
