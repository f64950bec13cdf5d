import Foundation
import ProbeEngine
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
        XCTAssertEqual(settings.port, 9156)
        XCTAssertEqual(settings.probe.allowedNames, [])
        XCTAssertEqual(settings.probe.allowedPrefixes, [])
        XCTAssertEqual(Set(settings.probe.modules.keys), ["icmp", "tcp"])
    }

    func testEveryKeyIsRead() throws {
        let settings = try XCTUnwrap(try ConfigurationLoader.load(path: fixture("valid-prometheus.yaml"), environment: [:]).prometheus)
        XCTAssertEqual(settings.host, "::1")
        XCTAssertEqual(settings.port, 9200)
        XCTAssertEqual(settings.probe.allowedNames, ["db1.example.com"])
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
            Expected(3, 11, "listen must be ADDRESS:PORT with a numeric address, e.g. '127.0.0.1:9156' or '[::1]:9156', got 'localhost:9156'"),
            Expected(5, 13, "allow entry '0.0.0.0/0' allows every address, so anyone who can reach the port could make netprobe probe anything; list the prefixes you mean"),
            Expected(5, 26, "allow entry '10.0.0.0/33' is not an address prefix; write ADDRESS/LENGTH, e.g. 10.0.0.0/8 or 2001:db8::/32"),
            Expected(5, 60, "allow entry 'bad name!' is neither a host name nor an address prefix"),
            Expected(6, 21, "max_concurrent must be between 1 and 1024, got 0"),
            Expected(8, 7, "module slow: (count - 1) × spacing + timeout is more than 30s; a scrape would time out first"),
            Expected(9, 23, "prober must be icmp or tcp, got 'udp'"),
            Expected(10, 35, "'mode' applies to tcp modules only; remove it from moded"),
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
