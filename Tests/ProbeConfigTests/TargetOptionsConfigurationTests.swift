import Foundation
import ProbeResults
import XCTest
@testable import ProbeConfig

/// Issue 28's per-target form (`- host: ...` with labels, tos, source, interface) and the
/// `icmp:` / `tcp:` defaults: what loads, and every message for what does not.
final class TargetOptionsConfigurationTests: XCTestCase {
    private let ef: UInt8 = 0xb8

    func testPingMappingFormSitsBesideTheShortFormAndATOSListGivesOneTargetPerClass() throws {
        let path = fixture("valid-target-options-ping.yaml")
        let targets = try ConfigurationLoader.loadPingTargets(path: path)
        let source = try XCTUnwrap(IPAddress(parsing: "192.0.2.10"))
        let labels = ["site": "fra1", "circuit": "c-1234"]
        XCTAssertEqual(targets, [
            PingTarget(env: "production", host: "db1.example.com", file: path, line: 2),
            PingTarget(env: "production", host: "db2.example.com", file: path, line: 3,
                       options: PacketOptions(tos: 0, source: source, interface: "eth1"), labels: labels),
            PingTarget(env: "production", host: "db2.example.com", file: path, line: 3,
                       options: PacketOptions(tos: ef, source: source, interface: "eth1"), labels: labels),
            PingTarget(env: "production", host: "2001:db8::7", file: path, line: 8, options: PacketOptions(tos: 34 << 2)),
            PingTarget(env: "staging", host: "db3.example.com", file: path, line: 10),
        ])
    }

    func testTCPMappingFormTakesPortsAndExpandsPortsTimesClasses() throws {
        let path = fixture("valid-target-options-tcp.yaml")
        let targets = try ConfigurationLoader.loadTCPTargets(path: path)
        let labels = ["site": "fra1", "owner": "dba"]
        let cs6 = PacketOptions(tos: 48 << 2, interface: "eth1")
        let zero = PacketOptions(interface: "eth1")
        XCTAssertEqual(targets, [
            TCPTarget(env: "production", host: "db1.example.com", port: 5432, file: path, line: 2),
            TCPTarget(env: "production", host: "db2.example.com", port: 5432, file: path, line: 3, options: zero, labels: labels),
            TCPTarget(env: "production", host: "db2.example.com", port: 5432, file: path, line: 3, options: cs6, labels: labels),
            TCPTarget(env: "production", host: "db2.example.com", port: 6432, file: path, line: 3, options: zero, labels: labels),
            TCPTarget(env: "production", host: "db2.example.com", port: 6432, file: path, line: 3, options: cs6, labels: labels),
            TCPTarget(env: "production", host: "host", port: 22, file: path, line: 8,
                      options: PacketOptions(source: IPAddress(parsing: "2001:db8::10"))),
        ])
    }

    func testSectionKeysAreDefaultsThatAnEntryOverridesKeyByKey() throws {
        let configuration = try ConfigurationLoader.load(path: fixture("valid-target-section-defaults.yaml"), environment: [:])
        let cs1: UInt8 = 8 << 2
        XCTAssertEqual(configuration.icmp.packetDefaults, PacketDefaults(tos: [cs1], interface: "eth9"))
        XCTAssertEqual(configuration.pingTargets.map(\.options), [
            PacketOptions(tos: cs1, interface: "eth9"),
            PacketOptions(tos: 0, source: IPAddress(parsing: "192.0.2.10"), interface: "eth1"),
            PacketOptions(tos: ef, source: IPAddress(parsing: "192.0.2.10"), interface: "eth1"),
            PacketOptions(tos: 34 << 2, interface: "eth9"),
            PacketOptions(tos: cs1, interface: "eth9"),
        ])
        let sectionSource = IPAddress(parsing: "192.0.2.99")
        XCTAssertEqual(configuration.tcpTargets.map(\.options), [
            PacketOptions(source: sectionSource),
            PacketOptions(source: sectionSource, interface: "eth1"),
            PacketOptions(tos: 48 << 2, source: sectionSource, interface: "eth1"),
            PacketOptions(source: sectionSource, interface: "eth1"),
            PacketOptions(tos: 48 << 2, source: sectionSource, interface: "eth1"),
            PacketOptions(source: IPAddress(parsing: "2001:db8::10")),
        ])
    }

    func testUnknownKeyOfATargetSuggestsTheClosest() {
        let path = fixture("invalid-target-unknown-key.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 5, "unknown key 'lables' in a target of group 'production'; did you mean 'labels'?"),
        ])
    }

    func testMappingWithoutHostIsRejected() {
        let path = fixture("invalid-target-missing-host.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 5, "a target of group 'production' written as a mapping needs 'host: NAME', e.g. '- host: db2.example.com'"),
        ])
    }

    func testUnknownTOSNameGetsTheParsersMessage() {
        let path = fixture("invalid-target-tos-name.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 14, "tos: \"eff\" is not a TOS value: give the TOS byte (0-255, decimal or 0x hex, e.g. 0xb8) or a DSCP name (ef, af11..af43, cs0..cs7)"),
        ])
    }

    func testTOSWithECNBitsNamesTheNearestClass() {
        let path = fixture("invalid-target-tos-ecn.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 10, "tos: 0xb9 sets ECN bits; did you mean 0xb8 (ef)?"),
        ])
    }

    func testEmptyTOSListIsRejected() {
        let path = fixture("invalid-target-tos-empty.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 10, "tos is an empty list; give at least one class, e.g. 'tos: [0, ef]', or remove the key"),
        ])
    }

    func testTheSameClassTwiceInOneListIsRejectedHoweverSpelt() {
        let path = fixture("invalid-target-tos-repeated.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 15, "tos lists 0xb8 (ef) twice; list each class once"),
        ])
    }

    func testDuplicatePingTargetIsPerHostAndClass() {
        let path = fixture("invalid-target-duplicate-class.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(5, 11, "duplicate ping target 'DB1.example.com.' tos ef: already listed at line 2 (group 'production'); list each host and class once per file and remove this one"),
            Expected(7, 5, "duplicate ping target 'db1.example.com': already listed at line 2 (group 'production'); list each host once per file and remove this one"),
        ])
    }

    func testDuplicateTCPTargetIsPerHostPortAndClass() {
        let path = fixture("invalid-target-duplicate-tcp.yaml")
        assertErrors(tcpErrors(path), in: path, [
            Expected(6, 12, "duplicate tcp target 'db1.example.com' port 6432 tos af41: already listed at line 3 (group 'production'); list each host, port and class once per file and remove this one"),
        ])
    }

    func testSourceMustBeAnAddress() {
        let path = fixture("invalid-target-source.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 13, "source must be an IP address of this host, got 'gateway.example.com'; write an address such as 192.0.2.10 or 2001:db8::10 (a name is not looked up)"),
            Expected(5, 13, "source must be a string, got a list"),
        ])
    }

    func testSourceOfTheOtherFamilyThanAnAddressHostIsRejected() {
        let path = fixture("invalid-target-source-family.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 13, "source 192.0.2.10 is an IPv4 address but host '2001:db8::7' is IPv6; give a source of the host's family"),
            Expected(5, 13, "source 2001:db8::10 is an IPv6 address but host '192.0.2.7' is IPv4; give a source of the host's family"),
        ])
    }

    func testInterfaceMustBeAKernelInterfaceName() {
        let path = fixture("invalid-target-interface.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 16, "interface 'eth0/uplink' is not an interface name: at most 15 characters, no '/', ':' or spaces, as 'ip link' shows it (e.g. eth1)"),
            Expected(5, 16, "interface 'a-very-long-interface-name' is not an interface name: at most 15 characters, no '/', ':' or spaces, as 'ip link' shows it (e.g. eth1)"),
        ])
    }

    func testLabelsMayNotShadowTheSchemasTags() {
        let path = fixture("invalid-target-label-shadow.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 14, "label 'env' would replace netprobe's own 'env' tag; rename it (e.g. 'site_env')"),
            Expected(3, 25, "label 'target' would replace netprobe's own 'target' tag; rename it (e.g. 'site_target')"),
            Expected(3, 37, "label 'tos' would replace netprobe's own 'tos' tag; rename it (e.g. 'site_tos')"),
        ])
    }

    func testLabelNamesFollowPrometheusRules() {
        let path = fixture("invalid-target-label-name.yaml")
        let rule = "is not a valid label name: use letters, digits and '_', not starting with a digit ([a-zA-Z_][a-zA-Z0-9_]*, as Prometheus requires)"
        assertErrors(pingErrors(path), in: path, [
            Expected(4, 7, "label '1site' \(rule)"),
            Expected(5, 7, "label 'site-id' \(rule)"),
            Expected(6, 7, "label 'circuit.id' \(rule)"),
        ])
    }

    func testLabelNamesStartingWithTwoUnderscoresAreReserved() {
        let path = fixture("invalid-target-label-reserved.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 14, "label '__name__' starts with '__', which Prometheus reserves for itself; remove the leading underscores"),
            Expected(3, 28, "label '__meta_site' starts with '__', which Prometheus reserves for itself; remove the leading underscores"),
        ])
    }

    func testLabelValuesAreTextAndLabelsAMapping() {
        let path = fixture("invalid-target-label-value.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(4, 13, "label 'site' must have a text value, got a list"),
            Expected(5, 13, "label 'owner' must have a text value, got nothing"),
            Expected(6, 16, "label 'circuit' must have a text value, got a mapping"),
            Expected(8, 13, "labels must be a mapping of 'name: value', e.g. 'labels: {site: fra1, circuit: c-1234}', got a list"),
        ])
    }

    func testTCPMappingFormNeedsPorts() {
        let path = fixture("invalid-target-tcp-no-ports.yaml")
        assertErrors(tcpErrors(path), in: path, [
            Expected(2, 5, "tcp target 'db1.example.com' has no ports; add 'ports: 22' or 'ports: [80, 443]'"),
            Expected(4, 5, "tcp target 'db2.example.com' has no ports; add 'ports: 22' or 'ports: [80, 443]'"),
            Expected(5, 5, "unknown key 'port' in a target of group 'production'; did you mean 'ports'?"),
        ])
    }

    func testSectionPacketOptionsAreCheckedAsAnEntrysAre() {
        let path = fixture("invalid-target-section-options.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 8, "tos: 0x01 sets ECN bits; did you mean 0x00 (cs0)?"),
            Expected(4, 11, "source must be an IP address of this host, got 'localhost'; write an address such as 192.0.2.10 or 2001:db8::10 (a name is not looked up)"),
            Expected(6, 14, "interface is empty; write a name"),
            Expected(7, 14, "tos lists 0x20 (cs1) twice; list each class once"),
        ])
    }
}
