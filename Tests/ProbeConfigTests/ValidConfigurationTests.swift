import Foundation
import InfluxSink
import XCTest
@testable import ProbeConfig

final class ValidConfigurationTests: XCTestCase {
    func testEmptyConfigGetsEveryDefaultAndTheTargetsFilesNextToIt() throws {
        let configuration = try ConfigurationLoader.load(path: fixture("valid-minimal.yaml"), environment: [:])

        XCTAssertEqual(configuration.probeName, ConfigurationLoader.localHostName())
        XCTAssertFalse(configuration.probeName.isEmpty)
        XCTAssertEqual(configuration.icmp, ProbeSettings(
            intervalNanoseconds: 10_000_000_000, count: 5, spacingNanoseconds: 200_000_000,
            timeoutNanoseconds: 1_000_000_000, payloadSize: 56, ttl: nil, family: .any))
        XCTAssertEqual(configuration.tcp, configuration.icmp)
        XCTAssertEqual(configuration.tcp.tcpMode, .halfOpen, "probes leave no trace on servers unless asked to")
        XCTAssertEqual(configuration.pingTargetsPath, fixture("targets/ping.yaml"))
        XCTAssertEqual(configuration.tcpTargetsPath, fixture("targets/tcp.yaml"))
        XCTAssertEqual(configuration.influxServers, [])
        XCTAssertEqual(configuration.spoolDirectory, "/var/lib/netprobe/spool")
        XCTAssertEqual(configuration.spoolMaximumBytes, 256_000_000)
        XCTAssertEqual(configuration.batchSize, 5000)
        XCTAssertEqual(configuration.flushIntervalNanoseconds, 1_000_000_000)
        XCTAssertEqual(configuration.resolveIntervalNanoseconds, 300_000_000_000)
        XCTAssertEqual(configuration.warnings, [])
        XCTAssertEqual(configuration.pingTargets.map(\.host), ["localhost", "127.0.0.1"])
        XCTAssertEqual(configuration.tcpTargets.map { "\($0.host):\($0.port)" }, ["localhost:22", "127.0.0.1:22", "127.0.0.1:8086"])
    }

    func testFullConfigOverridesEveryDefault() throws {
        let environment = ["TEST_INFLUX_PASSWORD": "pw-from-env", "TEST_INFLUX_TOKEN": "token-from-env"]
        let configuration = try ConfigurationLoader.load(path: fixture("valid-full.yaml"), environment: environment)

        XCTAssertEqual(configuration.file, fixture("valid-full.yaml"))
        XCTAssertEqual(configuration.probeName, "probe, eu=1 \"α\"")
        XCTAssertEqual(configuration.pingTargetsPath, fixture("valid-ping.yaml"))
        XCTAssertEqual(configuration.tcpTargetsPath, fixture("valid-tcp-mapping.yaml"))
        XCTAssertEqual(configuration.icmp, ProbeSettings(
            intervalNanoseconds: 30_000_000_000, count: 3, spacingNanoseconds: 500_000,
            timeoutNanoseconds: 1_500_000_000, payloadSize: 1400, ttl: 64, family: .ipv6Only))
        XCTAssertEqual(configuration.tcp, ProbeSettings(
            intervalNanoseconds: 120_000_000_000, count: 1, spacingNanoseconds: 1_000_000_000,
            timeoutNanoseconds: 250_000_000, payloadSize: 56, ttl: nil, family: .ipv4Only, tcpMode: .connect))
        XCTAssertEqual(configuration.influxServers, [
            InfluxServerSettings(
                name: "127.0.0.1:8086", url: "http://127.0.0.1:8086",
                api: .v1(database: "netprobe", retentionPolicy: "two_weeks", username: "writer", password: Secret("pw-from-env")),
                caFile: nil, gzip: false),
            InfluxServerSettings(
                name: "central", url: "https://influx.example.com:8086/",
                api: .v2(org: "example-org", bucket: "probes", token: Secret("token-from-env")),
                caFile: nil, gzip: true),
            InfluxServerSettings(
                name: "localhost:8087", url: "http://localhost:8087",
                api: .v1(database: "other", retentionPolicy: nil, username: nil, password: nil),
                caFile: nil, gzip: true),
        ])
        XCTAssertEqual(configuration.spoolDirectory, fixture("spool"))
        XCTAssertEqual(configuration.spoolMaximumBytes, 1_610_612_736)
        XCTAssertEqual(configuration.batchSize, 100)
        XCTAssertEqual(configuration.flushIntervalNanoseconds, 250_000_000)
        XCTAssertEqual(configuration.resolveIntervalNanoseconds, 90_000_000_000)
        XCTAssertEqual(configuration.pingTargets.count, 4)
        XCTAssertEqual(configuration.tcpTargets.count, 4)
        XCTAssertEqual(configuration.warnings, [])
    }

    func testPingTargetsKeepGroupFileOrderAndLines() throws {
        let path = fixture("valid-ping.yaml")
        XCTAssertEqual(try ConfigurationLoader.loadPingTargets(path: path), [
            PingTarget(env: "local", host: "localhost", file: path, line: 2),
            PingTarget(env: "local", host: "127.0.0.1", file: path, line: 2),
            PingTarget(env: "loopback", host: "::1", file: path, line: 4),
            PingTarget(env: "loopback", host: "127.0.0.2", file: path, line: 5),
        ])
    }

    func testTCPMappingFormGivesOneTargetPerPort() throws {
        let path = fixture("valid-tcp-mapping.yaml")
        XCTAssertEqual(try ConfigurationLoader.loadTCPTargets(path: path), [
            TCPTarget(env: "local", host: "localhost", port: 22, file: path, line: 2),
            TCPTarget(env: "local", host: "127.0.0.1", port: 80, file: path, line: 3),
            TCPTarget(env: "local", host: "127.0.0.1", port: 443, file: path, line: 3),
            TCPTarget(env: "other", host: "::1", port: 8086, file: path, line: 5),
        ])
    }

    func testTCPListFormReadsTheSameAsMappingForm() throws {
        let path = fixture("valid-tcp-list.yaml")
        XCTAssertEqual(try ConfigurationLoader.loadTCPTargets(path: path), [
            TCPTarget(env: "local", host: "localhost", port: 22, file: path, line: 2),
            TCPTarget(env: "local", host: "127.0.0.1", port: 80, file: path, line: 3),
            TCPTarget(env: "local", host: "127.0.0.1", port: 443, file: path, line: 3),
            TCPTarget(env: "other", host: "::1", port: 8086, file: path, line: 5),
        ])
    }

    func testHostileGroupAndHostNamesArePreservedExactly() throws {
        let ping = try ConfigurationLoader.loadPingTargets(path: fixture("valid-hostile-names-ping.yaml"))
        XCTAssertEqual(ping.map(\.env), Array(repeating: "prod, eu=1 \"a\" \\ x", count: 4) + Array(repeating: "ünïcødé 環境", count: 3))
        XCTAssertEqual(ping.map(\.host), ["host with space", "a,b=c", "quote\"d", "back\\slash", "ñame.example.com", "1.5", "yes"])

        let tcp = try ConfigurationLoader.loadTCPTargets(path: fixture("valid-hostile-names-tcp.yaml"))
        XCTAssertEqual(tcp.map { "\($0.env)|\($0.host)|\($0.port)" }, [
            "prod, eu=1 \"a\" \\ x|host with space|22",
            "prod, eu=1 \"a\" \\ x|a,b=c|1",
            "prod, eu=1 \"a\" \\ x|a,b=c|2",
            "ünïcødé 環境|quote\"d|443",
        ])
    }

    func testRoundsLongerThanTheIntervalLoadWithAWarning() throws {
        let path = fixture("valid-overlap.yaml")
        let configuration = try ConfigurationLoader.load(path: path, environment: [:])
        XCTAssertNil(configuration.pingTargetsPath)
        XCTAssertNil(configuration.tcpTargetsPath)
        XCTAssertEqual(configuration.pingTargets, [])
        XCTAssertEqual(configuration.warnings.map(\.description), [
            "\(path):2:1: warning: icmp: a round lasts (count - 1) × spacing + timeout = 2.2s, longer than interval 2s, so the next round starts while replies are still awaited; results stay correct (each reply is matched to its own packet), but raise interval or lower count, spacing or timeout to keep rounds apart",
        ])
    }

    func testSecretFilesAreReadWithoutTheTrailingNewline() throws {
        let directory = try temporaryDirectory(self)
        try write("tok-from-file\n", to: directory + "/secrets/token", mode: 0o600)
        try write("pw-from-file\r\n", to: directory + "/password", mode: 0o400)
        try write("""
            targets: {ping: null, tcp: null}
            influxdb:
              - url: http://127.0.0.1:8086
                token_file: secrets/token
                org: o
                bucket: b
              - url: http://127.0.0.1:8087
                database: d
                username: u
                password_file: \(directory)/password
            """, to: directory + "/netprobe.yaml", mode: 0o644)

        let configuration = try ConfigurationLoader.load(path: directory + "/netprobe.yaml", environment: [:])
        XCTAssertEqual(configuration.influxServers.map(\.api), [
            .v2(org: "o", bucket: "b", token: Secret("tok-from-file")),
            .v1(database: "d", retentionPolicy: nil, username: "u", password: Secret("pw-from-file")),
        ])
    }

    func testSecretsNeverAppearInDescriptionsOrDumps() throws {
        let secret = "s3cr3t-VALUE"
        let configuration = try ConfigurationLoader.load(
            path: fixture("valid-full.yaml"),
            environment: ["TEST_INFLUX_PASSWORD": secret, "TEST_INFLUX_TOKEN": secret])
        var dumped = ""
        dump(configuration, to: &dumped)
        for text in [String(describing: configuration), String(reflecting: configuration), dumped,
                     "\(configuration.influxServers[0].api)", String(reflecting: Secret(secret))] {
            XCTAssertFalse(text.contains(secret), text)
            XCTAssertTrue(text.contains("<redacted>"), text)
        }
        XCTAssertEqual(Secret(secret).value, secret)
    }

    func testShippedConfigAndTargetsLoadAndProbeOnlyThisMachine() throws {
        let configuration = try ConfigurationLoader.load(path: repositoryRoot + "/deploy/netprobe.yaml", environment: [:])
        XCTAssertEqual(configuration.pingTargetsPath, repositoryRoot + "/targets/ping.yaml")
        XCTAssertEqual(configuration.tcpTargetsPath, repositoryRoot + "/targets/tcp.yaml")
        XCTAssertEqual(configuration.warnings, [])
        let hosts = configuration.pingTargets.map(\.host) + configuration.tcpTargets.map(\.host)
        XCTAssertFalse(hosts.isEmpty)
        for host in hosts {
            XCTAssertTrue(host == "localhost" || host == "::1" || host.hasPrefix("127."), "shipped target \(host) is not loopback")
        }
        for server in configuration.influxServers {
            let host = URLComponents(string: server.url)?.host ?? ""
            XCTAssertTrue(["localhost", "127.0.0.1", "::1"].contains(host), "shipped server \(server.url) is not loopback")
        }
    }

    func testDurationsAcceptUnitsCompoundsAndBareSeconds() {
        let cases: [(String, Int64?)] = [
            ("200ms", 200_000_000), ("1s", 1_000_000_000), ("1.5s", 1_500_000_000), ("2m", 120_000_000_000),
            ("500us", 500_000), ("500µs", 500_000), ("10ns", 10), ("1h", 3_600_000_000_000),
            ("1m30s", 90_000_000_000), ("10", 10_000_000_000), ("0.2", 200_000_000), (" 1s ", 1_000_000_000),
            ("fast", nil), ("1 s", nil), ("-1s", nil), ("1x", nil), ("s", nil), ("", nil), ("1:30", nil),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(Units.nanoseconds(text), expected, text)
        }
    }

    func testSizesAcceptSIAndIECUnitsAndBareBytes() {
        let cases: [(String, Int64?)] = [
            ("512MB", 512_000_000), ("256MB", 256_000_000), ("1KB", 1000), ("1KiB", 1024),
            ("2MiB", 2_097_152), ("1GB", 1_000_000_000), ("1GiB", 1_073_741_824), ("1.5 GiB", 1_610_612_736),
            ("4096", 4096), ("10B", 10), ("big", nil), ("1XB", nil), ("-1MB", nil),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(Units.bytes(text), expected, text)
        }
    }
}
