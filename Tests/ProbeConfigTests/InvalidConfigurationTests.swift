import Foundation
import InfluxSink
import XCTest
@testable import ProbeConfig

/// One test per error class, each against its fixture, asserting every message exactly:
/// the messages are the user interface of `netprobe validate`.
final class InvalidConfigurationTests: XCTestCase {
    private let durationForms = "write a number with a unit (ns, us, ms, s, m, h), e.g. '500us', '200ms', '1.5s', '2m', '1m30s', or a bare number of seconds"

    func testUnknownKeysSuggestTheClosestKnownKey() {
        let path = fixture("invalid-unknown-key.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 3, "unknown key 'intervall' in icmp; did you mean 'interval'?"),
            Expected(7, 3, "unknown key 'maxsize' in spool; did you mean 'max_size'?"),
            Expected(8, 1, "unknown key 'influxdbs' at the top level; did you mean 'influxdb'?"),
        ])
    }

    func testUnknownKeyFarFromAnyKnownKeyListsTheKnownKeys() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\nbatch: {colour: blue}\n", to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(2, 9, "unknown key 'colour' in batch; known keys are 'size', 'flush_interval'"),
        ])
    }

    func testWrongTypesNameTheExpectedType() {
        let path = fixture("invalid-wrong-type.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 10, "count must be an integer, got 'five'; write a whole number from 1 to 1000"),
            Expected(4, 9, "size must be an integer, got a list; write a whole number from 12 to 65507"),
            Expected(5, 11, "family must be any, ipv4 or ipv6, got 'v4'"),
            Expected(7, 3, "'ttl' applies to icmp only; remove it from tcp"),
            Expected(9, 9, "size must be an integer, got '50.5'; write a whole number from 1 to 1000000"),
            Expected(13, 11, "gzip must be true or false, got 'maybe'"),
        ])
    }

    func testTCPModeIsHalfOpenOrConnectAndBelongsToTCPOnly() {
        let path = fixture("invalid-tcp-mode.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 3, "'mode' (half-open or connect) applies to tcp only; remove it from icmp"),
            Expected(5, 9, "mode must be half-open or connect, got 'syn' (half-open leaves nothing in the server's logs; connect makes full connections)"),
        ])
    }

    func testBadDurationsSayTheAcceptedForms() {
        let path = fixture("invalid-bad-duration.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 13, "interval must be a duration, got 'fast'; \(durationForms)"),
            Expected(4, 12, "spacing must be a duration, got '200 millis'; \(durationForms)"),
            Expected(5, 12, "timeout must be a duration, got '-1s'; \(durationForms)"),
            Expected(7, 12, "timeout must be at least 1ms, got '0s'"),
            Expected(8, 19, "resolve_interval must be a duration, got '1:30'; \(durationForms)"),
        ])
    }

    func testPortsOutsideOneTo65535AreRejected() {
        let path = fixture("invalid-port-out-of-range.yaml")
        assertErrors(tcpErrors(path), in: path, [
            Expected(2, 14, "port 0 of 'localhost' is out of range; use 1..65535"),
            Expected(3, 19, "port 65536 of '127.0.0.1' is out of range; use 1..65535"),
            Expected(4, 14, "port of '127.0.0.2' must be an integer 1..65535, got 'http'"),
        ])
    }

    func testDuplicateTCPTargetNamesBothLinesInOneGroupOrAcrossGroups() {
        let path = fixture("invalid-duplicate-target.yaml")
        assertErrors(tcpErrors(path), in: path, [
            Expected(4, 16, "duplicate tcp target 'LOCALHOST' port 22: already listed at line 2 (group 'local'); list each host and port once per file and remove this one"),
            Expected(6, 14, "duplicate tcp target '127.0.0.1' port 443: already listed at line 3 (group 'local'); list each host and port once per file and remove this one"),
        ])
    }

    func testDuplicatePingTargetIsFoundHoweverTheAddressIsSpelt() {
        let path = fixture("invalid-duplicate-ping-target.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(3, 5, "duplicate ping target '0:0:0:0:0:0:0:1': already listed at line 1 (group 'local'); list each host once per file and remove this one"),
        ])
    }

    func testHostRepeatedInOneMappingNamesBothLines() {
        let path = fixture("invalid-duplicate-key.yaml")
        assertErrors(tcpErrors(path), in: path, [
            Expected(4, 3, "duplicate key 'localhost' (first at line 2); a group may appear once per file and a host once per group: merge them, giving several ports as 'host: [80, 443]'"),
        ])
    }

    func testEmptyGroupsAreRejected() {
        let path = fixture("invalid-empty-group.yaml")
        assertErrors(pingErrors(path), in: path, [
            Expected(2, 1, "group 'staging' has no hosts; list at least one, as 'staging: [127.0.0.1]', or delete the group"),
            Expected(3, 1, "group 'production' has no hosts; list at least one, as 'production: [127.0.0.1]', or delete the group"),
        ])
    }

    func testMissingSecretsAreReportedWithoutRevealingAnySecret() throws {
        // Run from a copy so the secret file's mode is set here, not by git or the umask.
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try FileManager.default.copyItem(atPath: fixture("invalid-missing-secret.yaml"), toPath: path)
        try write("world-readable-SECRET\n", to: directory + "/secrets/world-readable-token", mode: 0o644)

        let errors = configErrors(path, environment: ["NETPROBE_TEST_UNSET": ""])
        assertErrors(errors, in: path, [
            Expected(7, 19, "missing secret: environment variable 'NETPROBE_TEST_UNSET' (password_env) is unset or empty; export it before starting netprobe, or use password_file"),
            Expected(11, 17, "missing secret: secret file '\(directory)/secrets/missing-token' (token_file) does not exist; create it holding only the secret, then run 'chmod 600 \(directory)/secrets/missing-token'"),
            Expected(12, 5, "missing secret: InfluxDB v2 server needs a token; add 'token_env: VARIABLE' or 'token_file: PATH' (chmod 600)"),
            Expected(15, 5, "inline 'token' is not allowed: secrets are read only from the environment or a file; use 'token_env: VARIABLE' or 'token_file: /path/to/file' (chmod 600)"),
            Expected(19, 17, "missing secret: secret file '\(directory)/secrets/world-readable-token' (token_file) is readable or writable by group or others (mode 0644); run 'chmod 600 \(directory)/secrets/world-readable-token'"),
        ])
        let text = ConfigurationErrors(errors: errors).description
        XCTAssertFalse(text.contains("hunter2"))
        XCTAssertFalse(text.contains("world-readable-SECRET"))
    }

    func testMalformedYAMLReportsTheParsersLineAndColumn() {
        let config = fixture("invalid-malformed.yaml")
        assertErrors(configErrors(config), in: config, [
            Expected(3, 9, "invalid YAML: mapping values are not allowed in this context; fix the YAML syntax here (check indentation, quotes, brackets and the space after ':')"),
        ])
        let ping = fixture("invalid-malformed-ping.yaml")
        assertErrors(pingErrors(ping), in: ping, [
            Expected(2, 1, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at line 1, column 8); fix the YAML syntax here (check indentation, quotes, brackets and the space after ':')"),
        ])
    }

    func testInfluxAPIIsDecidedByKeysOrApiAndMixturesAreRejected() {
        let path = fixture("invalid-influxdb.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(3, 5, "influxdb server mixes v1 keys (database) and v2 keys (org); keep one set, or set 'api: v1' or 'api: v2'"),
            Expected(6, 10, "url must be an http:// or https:// URL with a host, as 'https://influx.example.com:8086', got '127.0.0.1:8086'"),
            Expected(7, 10, "api must be 'v1' (InfluxDB 1.x: database) or 'v2' (InfluxDB 2.x/3.x: org, bucket, token), got 'v3'"),
            Expected(8, 5, "InfluxDB v2 server needs 'org'; add 'org: NAME'"),
            Expected(10, 16, "missing secret: environment variable 'TOKEN' (token_env) is unset or empty; export it before starting netprobe, or use token_file"),
        ])
    }

    func testMissingTargetsFileAndRoundsThatPileUpAreBothReported() {
        let path = fixture("invalid-targets-missing.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(2, 9, "ping targets file '\(fixture("no-such-dir/ping.yaml"))' does not exist; fix the path (relative paths start at the config file's directory), or set 'ping: null' to probe no ICMP targets"),
            Expected(3, 1, "icmp: sending one round takes (count - 1) × spacing = 1.8s, not less than interval 1s, so rounds would pile up; lower count or spacing, or raise interval"),
        ])
    }

    func testErrorsInConfigAndTargetsFilesComeInOneReportConfigFirst() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("local: [localhost, localhost]\n", to: directory + "/targets/ping.yaml", mode: 0o644)
        try write("local: {localhost: 70000}\n", to: directory + "/targets/tcp.yaml", mode: 0o644)
        try write("icmp:\n  count: 0\n", to: path, mode: 0o644)

        do throws(ConfigurationErrors) {
            _ = try ConfigurationLoader.load(path: path, environment: [:])
            XCTFail("loaded")
        } catch {
            XCTAssertEqual(error.description, """
                \(path):2:10: error: count must be between 1 and 1000, got 0
                \(directory)/targets/ping.yaml:1:20: error: duplicate ping target 'localhost': already listed at line 1 (group 'local'); list each host once per file and remove this one
                \(directory)/targets/tcp.yaml:1:20: error: port 70000 of 'localhost' is out of range; use 1..65535
                """)
        }
    }

    func testDefaultTargetsFileThatDoesNotExistSaysHowToTurnTheKindOff() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("local: [localhost]\n", to: directory + "/targets/ping.yaml", mode: 0o644)
        try write("probe: test\n", to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(1, 1, "tcp targets file '\(directory)/targets/tcp.yaml' (the default: targets/tcp.yaml next to the config file) does not exist; create it, set 'targets: {tcp: PATH}', or set 'targets: {tcp: null}' to probe no TCP targets"),
        ])
    }

    func testMissingConfigFileIsReportedAtItsFirstLine() {
        let path = fixture("no-such-config.yaml")
        assertErrors(configErrors(path), in: path, [
            Expected(1, 1, "config file '\(path)' does not exist; check the path"),
        ])
    }

    func testErrorDescriptionIsFileLineColumnErrorMessage() {
        let error = ConfigurationError(file: "deploy/netprobe.yaml", line: 12, column: 3, message: "count must be an integer, got 'five'")
        XCTAssertEqual(error.description, "deploy/netprobe.yaml:12:3: error: count must be an integer, got 'five'")
        let errors = ConfigurationErrors(errors: [error, ConfigurationError(file: "a.yaml", line: 1, column: 1, message: "m")])
        XCTAssertEqual(errors.description, "deploy/netprobe.yaml:12:3: error: count must be an integer, got 'five'\na.yaml:1:1: error: m")
    }
}
