import Foundation
import ProbeResults
import XCTest
@testable import ProbeConfig

/// Issue 30's config keys: `icmp:`'s `dont_fragment`, and the /probe modules'
/// `dont_fragment`, `size` and blackbox's `payload_size`; ICMP only, every mistake named
/// with file:line:column.
final class DontFragmentConfigurationTests: XCTestCase {
    /// A config with `icmp` and `tcp` sections as given, over a ping and a tcp targets file.
    func load(icmp: String, tcp: String = "{}", ping: String = "local: [192.0.2.1, {host: 192.0.2.2, tos: [0, ef]}]\n") throws -> NetprobeConfiguration {
        let directory = try temporaryDirectory(self)
        try write(ping, to: directory + "/ping.yaml", mode: 0o644)
        try write("local:\n  192.0.2.3: [5432]\n", to: directory + "/tcp.yaml", mode: 0o644)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: ping.yaml, tcp: tcp.yaml}\nicmp: \(icmp)\ntcp: \(tcp)\n", to: path, mode: 0o644)
        return try ConfigurationLoader.load(path: path, environment: [:])
    }

    func testDontFragmentTrueProbesEveryEchoRequestWithDFAndEveryClassOfATargetInheritsIt() throws {
        let configuration = try load(icmp: "{dont_fragment: true, size: 1472}")
        XCTAssertEqual(configuration.icmp.packetDefaults.fragmentation, .probe, "DF on every request whatever the path-MTU cache holds, as ping -M probe")
        XCTAssertEqual(configuration.icmp.payloadSize, 1472)
        XCTAssertEqual(configuration.pingTargets.map(\.host), ["192.0.2.1", "192.0.2.2", "192.0.2.2"])
        XCTAssertEqual(configuration.pingTargets.map(\.options.fragmentation), [.probe, .probe, .probe])
        XCTAssertEqual(configuration.pingTargets.map(\.options.tos), [0, 0, 0xb8], "an entry's own tos keeps the section's dont_fragment")
        XCTAssertEqual(configuration.tcpTargets.map(\.options.fragmentation), [nil], "TCP targets never take it")
    }

    func testDontFragmentFalseNeverSetsDF() throws {
        let configuration = try load(icmp: "{dont_fragment: false}")
        XCTAssertEqual(configuration.icmp.packetDefaults.fragmentation, .dont)
        XCTAssertEqual(configuration.pingTargets.map(\.options.fragmentation), [.dont, .dont, .dont])
    }

    func testWithoutTheKeyTheKernelDecides() throws {
        let configuration = try load(icmp: "{count: 2}")
        XCTAssertNil(configuration.icmp.packetDefaults.fragmentation)
        XCTAssertEqual(configuration.pingTargets.map(\.options.fragmentation), [nil, nil, nil])
        XCTAssertEqual(configuration.pingTargets.map(\.options.isDefault), [true, true, false])
    }

    func testModulesTakeDontFragmentAndASizeUnderEitherName() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("""
            targets: {ping: null, tcp: null}
            prometheus:
              probe:
                modules:
                  icmp_mtu: {prober: icmp, dont_fragment: true, size: 1472}
                  icmp_blackbox: {prober: icmp, dont_fragment: false, payload_size: 1300}
                  icmp_small: {prober: icmp, size: 12}
                  icmp_largest: {prober: icmp, payload_size: 65507}
            """, to: path, mode: 0o644)
        let modules = try XCTUnwrap(try ConfigurationLoader.load(path: path, environment: [:]).prometheus?.probe.modules)
        XCTAssertEqual(modules["icmp_mtu"], BlackboxModule(kind: .icmp, options: PacketOptions(fragmentation: .probe), payloadSize: 1472))
        XCTAssertEqual(modules["icmp_blackbox"], BlackboxModule(kind: .icmp, options: PacketOptions(fragmentation: .dont), payloadSize: 1300))
        XCTAssertEqual(modules["icmp_small"], BlackboxModule(kind: .icmp, payloadSize: 12))
        XCTAssertEqual(modules["icmp_largest"]?.payloadSize, 65507)
        XCTAssertEqual(modules["icmp"], BlackboxModule(kind: .icmp, payloadSize: 56), "the default module: 56 bytes as ping, the kernel's fragmentation")
        XCTAssertNil(modules["icmp"]?.options.fragmentation)
    }

    func testMistakesAreNamedWithTheirPosition() {
        let path = fixture("invalid-dont-fragment.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(2, 23, "dont_fragment must be true or false, got 'maybe'"),
            Expected(3, 7, "'dont_fragment' applies to icmp only (TCP segments are sized by the kernel); remove it from tcp"),
            Expected(7, 44, "module tcp_df: 'dont_fragment' applies to icmp modules only (TCP segments are sized by the kernel); remove it"),
            Expected(8, 46, "module tcp_sized: 'payload_size' applies to icmp modules only (TCP segments are sized by the kernel); remove it"),
            Expected(9, 34, "size must be between 12 and 65507, got 70000"),
            Expected(10, 42, "payload_size must be between 12 and 65507, got 4"),
            Expected(11, 54, "module both: give 'size' or blackbox's 'payload_size', not both"),
            Expected(12, 45, "dont_fragment must be true or false, got 'sometimes'"),
        ])
    }
}
