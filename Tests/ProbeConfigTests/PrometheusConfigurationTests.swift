import Foundation
import ProbeResults
import XCTest
@testable import ProbeConfig

/// The `prometheus:` section: off when absent, defaults that are safe (loopback, nothing
/// allowed for /probe), every mistake named with file:line:column.
final class PrometheusConfigurationTests: XCTestCase {
    func testWithoutTheSectionTheExporterIsOff() throws {
        let configuration = try ConfigurationLoader.load(path: fixture("valid-minimal.yaml"), environment: [:])
        XCTAssertNil(configuration.prometheus)
    }

    func testAnEmptySectionListensOnLoopbackAndAllowsNoProbeTarget() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\nprometheus:\n", to: path, mode: 0o644)
        let settings = try XCTUnwrap(try ConfigurationLoader.load(path: path, environment: [:]).prometheus)
        XCTAssertEqual(settings.host, "127.0.0.1")
        XCTAssertEqual(settings.port, 19156)
        XCTAssertEqual(settings.probe.allowedNames, [])
        XCTAssertEqual(settings.probe.allowedPrefixes, [])
        XCTAssertEqual(Set(settings.probe.modules.keys), ["icmp", "tcp", "tcp_connect"])
        XCTAssertEqual(settings.probe.modules["tcp_connect"], settings.probe.modules["tcp"], "blackbox's example name for its TCP module is the half-open tcp module")
    }

    func testEveryKeyIsRead() throws {
        let settings = try XCTUnwrap(try ConfigurationLoader.load(path: fixture("valid-prometheus.yaml"), environment: [:]).prometheus)
        XCTAssertEqual(settings.host, "::1")
        XCTAssertEqual(settings.port, 9200)
        XCTAssertEqual(settings.probe.allowedNames, [AllowedName("db1.example.com")])
        XCTAssertEqual(settings.probe.allowedPrefixes.map(\.description), ["127.0.0.0/8", "::1/128"])
        XCTAssertEqual(settings.probe.maximumConcurrent, 4)
        XCTAssertEqual(settings.probe.maximumPerSecond, 20)
        XCTAssertEqual(settings.probe.modules["icmp_5"], BlackboxModule(kind: .icmp, count: 5, spacingNanoseconds: 20_000_000, timeoutNanoseconds: 500_000_000, family: .ipv4Only))
        XCTAssertEqual(settings.probe.modules["tcp_connect"], BlackboxModule(kind: .tcp, tcpMode: .connect))
        XCTAssertNotNil(settings.probe.modules["icmp"], "the default modules stay unless redefined")
    }

    func testMistakesAreNamedWithTheirPosition() {
        let path = fixture("invalid-prometheus.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 11, "listen must be ADDRESS:PORT with a numeric address, e.g. '127.0.0.1:19156' or '[::1]:19156', got 'localhost:9156'"),
            // Both prefixes are refused, so the name is left without one.
            Expected(5, 12, "allow names 'db1.example.com' but no address prefix: a name only permits its lookup, and each address it resolves to must lie inside an allowed prefix, so none could be probed; add the prefixes its addresses lie in (e.g. \"192.0.2.0/24\"), or write {name: db1.example.com, any_address: true} to probe whatever its DNS answers"),
            Expected(5, 13, "allow entry '0.0.0.0/0' allows every address, so anyone who can reach the port could make netprobe probe anything; list the prefixes you mean"),
            Expected(5, 26, "allow entry '10.0.0.0/33' is not an address prefix; write ADDRESS/LENGTH, e.g. 10.0.0.0/8 or 2001:db8::/32"),
            Expected(5, 60, "allow entry 'bad name!' is neither a host name nor an address prefix"),
            Expected(6, 21, "max_concurrent must be between 1 and 1024, got 0"),
            Expected(8, 7, "module slow: (count - 1) × spacing + timeout is more than 30s; a scrape would time out first"),
            Expected(9, 23, "prober must be icmp or tcp, got 'udp'"),
            Expected(10, 35, "'mode' applies to tcp modules only; remove it from moded"),
            Expected(11, 32, "module ecn: tos: 0xb9 sets ECN bits; did you mean 0xb8 (ef)?"),
            Expected(12, 36, "module classes: tos must be one class, a TOS byte or a DSCP name (e.g. 'tos: ef'; a module probes one class), got a list"),
            Expected(13, 47, "module named: source_ip_address must be an IP address of this host, got 'db1.example.com'; write an address such as 192.0.2.10 or 2001:db8::10 (a name is not looked up)"),
            Expected(14, 64, "module crossed: source_ip_address 192.0.2.10 is not of the module's family ipv6; give an address of that family or change 'family'"),
            Expected(15, 42, "module slashed: interface 'eth0/1' is not an interface name: at most 15 characters, no '/', ':' or spaces, as 'ip link' shows it (e.g. eth1)"),
        ])
    }

    func testModulesTakeAClassASourceAddressAndAnInterface() throws {
        let configuration = try load("""
              probe:
                modules:
                  icmp_voice: {prober: icmp, tos: ef, source_ip_address: "::1", interface: lo}
                  tcp_af41: {prober: tcp, tos: 0x88}
            """)
        let modules = try XCTUnwrap(configuration.prometheus?.probe.modules)
        XCTAssertEqual(modules["icmp_voice"]?.options, PacketOptions(tos: 0xb8, source: IPAddress(parsing: "::1"), interface: "lo"))
        XCTAssertEqual(modules["tcp_af41"]?.options, PacketOptions(tos: 0x88))
        XCTAssertEqual(modules["icmp"]?.options, PacketOptions.none, "the default modules send class 0 from the route's source")
    }

    func load(_ prometheus: String) throws -> NetprobeConfiguration {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\nprometheus:\n" + prometheus, to: path, mode: 0o644)
        return try ConfigurationLoader.load(path: path, environment: [:])
    }

    func testANameOnlyPermitsItsLookupAndItsAddressesMustLieInAPrefix() throws {
        let configuration = try load("""
              probe:
                allow: ["192.0.2.0/24", "db1.example.com", {name: DB2.example.com., any_address: true}, {name: db3.example.com}]
            """)
        let probe = try XCTUnwrap(configuration.prometheus?.probe)
        XCTAssertEqual(probe.allowedNames, [AllowedName("db1.example.com"), AllowedName("db2.example.com", anyAddress: true), AllowedName("db3.example.com")])
        XCTAssertEqual(probe.allowedName("DB1.Example.com."), AllowedName("db1.example.com"))
        XCTAssertNil(probe.allowedName("db4.example.com"))
        XCTAssertTrue(probe.allows(try XCTUnwrap(IPAddress(parsing: "192.0.2.200"))))
        XCTAssertFalse(probe.allows(try XCTUnwrap(IPAddress(parsing: "192.0.3.1"))))
    }

    func testNamesWithoutAnyPrefixAreAnErrorThatNamesTheFix() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("""
            targets: {ping: null, tcp: null}
            prometheus:
              probe:
                allow: [db1.example.com, {name: db2.example.com, any_address: true}, {name: 192.0.2.1}, {any_address: true}, {name: x, any_address: maybe, port: 1}]
            """, to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(4, 12, "allow names 'db1.example.com', 'x' but no address prefix: a name only permits its lookup, and each address it resolves to must lie inside an allowed prefix, so none could be probed; add the prefixes its addresses lie in (e.g. \"192.0.2.0/24\"), or write {name: db1.example.com, any_address: true} to probe whatever its DNS answers"),
            Expected(4, 81, "name '192.0.2.1' is not a host name; list addresses and prefixes as plain entries, e.g. \"192.0.2.0/24\""),
            Expected(4, 93, "an allow entry written as a mapping needs 'name: HOST', e.g. {name: db1.example.com, any_address: true}"),
            Expected(4, 137, "any_address must be true or false, got 'maybe'"),
            Expected(4, 144, "unknown key 'port' in an allow entry; known keys are 'name', 'any_address'"),
        ])
        // Names whose DNS is trusted need no prefix.
        let trusted = try load("  probe:\n    allow: [{name: db2.example.com, any_address: true}]\n")
        XCTAssertEqual(trusted.prometheus?.probe.allowedNames, [AllowedName("db2.example.com", anyAddress: true)])
    }

    func testListeningOnEveryAddressWithProbeOnIsWarnedAndLoopbackIsNot() throws {
        let open = try load("  listen: 0.0.0.0:19156\n  probe: {allow: [\"198.51.100.0/24\"]}\n")
        XCTAssertEqual(open.warnings.map(\.message), [
            "listen 0.0.0.0 takes connections on every address of this host, and /probe is on: anyone who can reach port 19156 can make netprobe send probes to the allowed targets; listen on 127.0.0.1 (Prometheus on this host) or one internal address, or firewall the port",
        ])
        XCTAssertEqual(try load("  listen: \"[::]:19156\"\n  probe: {allow: [\"198.51.100.0/24\"]}\n").warnings.count, 1)
        XCTAssertEqual(try load("  listen: 0.0.0.0:19156\n").warnings, [], "without an allow-list /probe refuses everything")
        XCTAssertEqual(try load("  listen: \"[::1]:19156\"\n  probe: {allow: [\"198.51.100.0/24\"]}\n").warnings, [])
        XCTAssertEqual(try load("  listen: \"[::1]:19156\"\n").prometheus?.host, "::1")
    }

    func testAnUnquotedIPv6ListenAddressSaysToQuoteIt() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\nprometheus:\n  listen: [::1]:19156\n", to: path, mode: 0o644)
        let errors = configErrors(path)
        XCTAssertEqual(errors.count, 1)
        XCTAssertEqual(errors.first?.line, 3)
        XCTAssertTrue(errors.first?.message.hasSuffix("a bracketed IPv6 address with a port must be quoted: write \"[::1]:19156\"") == true, "\(errors)")
    }

    func testTheTimeoutOffsetIsReadAndModulesLongerThanTheDefaultScrapeTimeoutAreWarned() throws {
        let configuration = try load("""
              probe:
                timeout_offset: 1s
                modules:
                  slow: {prober: icmp, count: 3, spacing: 2s, timeout: 6s}
                  long: {prober: tcp, timeout: 12s}
                  quick: {prober: icmp, timeout: 9s}
            """)
        let probe = try XCTUnwrap(configuration.prometheus?.probe)
        XCTAssertEqual(probe.timeoutOffsetNanoseconds, 1_000_000_000)
        XCTAssertEqual(probe.modules["slow"]?.worstCaseNanoseconds, 10_000_000_000)
        XCTAssertEqual(probe.modules["quick"]?.worstCaseNanoseconds, 9_000_000_000, "answers by 10s - 1s: no warning")
        XCTAssertEqual(configuration.warnings.map(\.message), [
            "module slow: (count - 1) × spacing + timeout = 10s; under Prometheus' default scrape_timeout of 10s, /probe answers after 9s (the scrape timeout minus timeout_offset) with 2 of its 3 packets; give the scrape job a scrape_timeout of at least 11s, or lower count, spacing or timeout",
            "module long: (count - 1) × spacing + timeout = 12s; under Prometheus' default scrape_timeout of 10s, /probe answers after 9s (the scrape timeout minus timeout_offset) with a shorter timeout; give the scrape job a scrape_timeout of at least 13s, or lower count, spacing or timeout",
        ])
    }

    func testPrefixesMatchTheirLeadingBitsOnlyAndNeverAcrossFamilies() throws {
        let prefix = try XCTUnwrap(AddressPrefix(parsing: "10.1.128.0/17"))
        XCTAssertTrue(prefix.contains(try XCTUnwrap(IPAddress(parsing: "10.1.200.7"))))
        XCTAssertFalse(prefix.contains(try XCTUnwrap(IPAddress(parsing: "10.1.127.255"))))
        let loopback = try XCTUnwrap(AddressPrefix(parsing: "127.0.0.0/8"))
        XCTAssertFalse(loopback.contains(try XCTUnwrap(IPAddress(parsing: "::ffff:127.0.0.1"))), "an IPv4-mapped IPv6 address is not inside an IPv4 prefix")
        let documentation = try XCTUnwrap(AddressPrefix(parsing: "2001:db8::/32"))
        XCTAssertTrue(documentation.contains(try XCTUnwrap(IPAddress(parsing: "2001:db8:ffff::1"))))
        XCTAssertFalse(documentation.contains(try XCTUnwrap(IPAddress(parsing: "2001:db9::1"))))
        XCTAssertNil(AddressPrefix(parsing: "10.0.0.0/"))
        XCTAssertNil(AddressPrefix(parsing: "10.0.0/8"))
    }
}
