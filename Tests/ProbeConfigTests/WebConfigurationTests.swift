import Foundation
import ProbeResults
import XCTest
@testable import ProbeConfig

/// The `web:` section: off when absent, on by its presence, one HTTP server with
/// `prometheus:` (one address), loopback only, every mistake named with file:line:column.
final class WebConfigurationTests: XCTestCase {
    func load(_ text: String) throws -> NetprobeConfiguration {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\n" + text, to: path, mode: 0o644)
        return try ConfigurationLoader.load(path: path, environment: [:])
    }

    func testWithoutTheSectionTheViewIsOff() throws {
        XCTAssertNil(try ConfigurationLoader.load(path: fixture("valid-minimal.yaml"), environment: [:]).web)
        XCTAssertNil(try load("prometheus:\n").web, "prometheus alone does not turn the view on")
    }

    func testThePresenceOfTheSectionTurnsTheViewOnOnLoopback() throws {
        for text in ["web:\n", "web: {}\n", "web: {enabled: true}\n", "web:\n  enabled: yes\n"] {
            let web = try XCTUnwrap(try load(text).web, text)
            XCTAssertEqual(web, WebSettings(host: "127.0.0.1", port: 19157), text)
            XCTAssertEqual(web.url, "http://127.0.0.1:19157/")
            XCTAssertEqual(web.sshTunnel, "ssh -L 19157:127.0.0.1:19157 HOST")
        }
        XCTAssertNotEqual(WebSettings.defaultPort, PrometheusSettings.defaultPort)
    }

    func testEnabledFalseTurnsTheViewOffWhateverItsAddress() throws {
        XCTAssertNil(try load("web: {enabled: false}\n").web)
        let off = try load("web: {enabled: false, listen: 0.0.0.0:19157}\nprometheus: {listen: 0.0.0.0:19156}\n")
        XCTAssertNil(off.web, "an address the view may not have is no error while it is off")
        XCTAssertEqual(off.prometheus?.host, "0.0.0.0", "and /metrics keeps its own")
    }

    func testEveryKeyIsReadAndIPv6LoopbackIsLoopback() throws {
        let web = try XCTUnwrap(try ConfigurationLoader.load(path: fixture("valid-web.yaml"), environment: [:]).web)
        XCTAssertEqual(web, WebSettings(host: "::1", port: 9200))
        XCTAssertEqual(web.url, "http://[::1]:9200/")
        XCTAssertEqual(web.sshTunnel, "ssh -L 9200:[::1]:9200 HOST")
        XCTAssertEqual(try load("web: {listen: 127.0.0.2:8080}\n").web, WebSettings(host: "127.0.0.2", port: 8080), "all of 127.0.0.0/8 is loopback")
    }

    func testAViewWithoutListenTakesPrometheusListen() throws {
        let configuration = try load("prometheus: {listen: 127.0.0.1:9300}\nweb:\n")
        XCTAssertEqual(configuration.web, WebSettings(host: "127.0.0.1", port: 9300))
        XCTAssertEqual(configuration.prometheus?.port, 9300)
    }

    func testPrometheusWithoutListenTakesTheViewsListen() throws {
        let configuration = try load("prometheus: {probe: {max_concurrent: 4}}\nweb: {listen: \"[::1]:9400\"}\n")
        XCTAssertEqual(configuration.web, WebSettings(host: "::1", port: 9400))
        XCTAssertEqual(configuration.prometheus?.host, "::1", "one server: /metrics is where the view is")
        XCTAssertEqual(configuration.prometheus?.port, 9400)
        XCTAssertEqual(configuration.prometheus?.probe.maximumConcurrent, 4)
    }

    func testNeitherWithListenIsPrometheusDefaultSoScrapeConfigsKeepWorking() throws {
        let configuration = try load("prometheus:\nweb:\n")
        XCTAssertEqual(configuration.web, WebSettings(host: "127.0.0.1", port: PrometheusSettings.defaultPort))
        XCTAssertEqual(configuration.prometheus?.port, PrometheusSettings.defaultPort)
    }

    func testBothWithTheSameAddressHoweverSpeltAreOneServer() throws {
        let configuration = try load("prometheus: {listen: \"[::1]:9500\"}\nweb: {listen: \"[0:0:0:0:0:0:0:1]:9500\"}\n")
        XCTAssertEqual(configuration.web?.port, 9500)
        XCTAssertEqual(configuration.prometheus?.port, 9500)
    }

    func testANonLoopbackListenIsAnErrorThatPointsToAnSSHTunnel() {
        let path = fixture("invalid-web.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 11, "web listen 0.0.0.0:19157 is not a loopback address: the view has no login and is served on loopback only; listen on 127.0.0.1:19157 (or [::1]) and reach it from your machine through an SSH tunnel, 'ssh -L 19157:127.0.0.1:19157 HOST', then open http://127.0.0.1:19157/"),
            Expected(4, 3, "unknown key 'enable' in web; did you mean 'enabled'?"),
        ])
    }

    func testMalformedValuesSayWhatToWrite() {
        let path = fixture("invalid-web-malformed.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 11, "listen must be ADDRESS:PORT with a numeric loopback address, e.g. '127.0.0.1:19157' or '[::1]:19157', got 'localhost:19157'"),
            Expected(4, 12, "enabled must be true or false, got 'maybe'"),
        ])
    }

    func testTwoDifferentListenAddressesAreAnErrorNamingBoth() {
        let path = fixture("invalid-web-listen-differs.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(5, 11, "web listen 127.0.0.1:19157 differs from prometheus listen 127.0.0.1:19156 (line 3): the view is served by the same HTTP server as /metrics, which listens on one address; give both the same listen, or remove this one to serve the view on prometheus' address"),
        ])
    }

    func testANonLoopbackPrometheusListenIsAnErrorWhileTheViewIsOn() {
        let path = fixture("invalid-web-prometheus-not-loopback.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(4, 11, "prometheus listen [::]:19156 is not a loopback address, and the web view (web:), served by the same HTTP server, is loopback only: listen on 127.0.0.1:19156 and reach the view and /metrics through an SSH tunnel, 'ssh -L 19156:127.0.0.1:19156 HOST', or turn the view off with 'web: {enabled: false}' to keep /metrics on this address"),
        ])
    }

    func testTheShippedConfigTurnsTheViewOnOnLoopback() throws {
        let configuration = try ConfigurationLoader.load(path: repositoryRoot + "/deploy/netprobe.yaml", environment: [:])
        let web = try XCTUnwrap(configuration.web, "the shipped config turns the view on (issue 29)")
        XCTAssertTrue(try XCTUnwrap(IPAddress(parsing: web.host)).isLoopback)
        XCTAssertEqual(web.port, WebSettings.defaultPort)
    }
}
