import Foundation
import XCTest
@testable import ProbeConfig

/// The `trace:` section: off by default, its keys, and a trace that does not fit its interval.
final class TraceConfigurationTests: XCTestCase {
    func testTracesAreOffUnlessConfiguredAndEveryKeyIsRead() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\n", to: path, mode: 0o644)
        XCTAssertEqual(try ConfigurationLoader.load(path: path).trace, .off)
        XCTAssertFalse(TraceSettings.off.isEnabled)
        try write("targets: {ping: null, tcp: null}\ntrace: {icmp: 5m, tcp: 10m, rounds: 20, spacing: 500ms, timeout: 2s, max_hops: 16}\n", to: path, mode: 0o644)
        let trace = try ConfigurationLoader.load(path: path).trace
        XCTAssertEqual(trace, TraceSettings(icmpIntervalNanoseconds: 300_000_000_000, tcpIntervalNanoseconds: 600_000_000_000, rounds: 20,
                                            spacingNanoseconds: 500_000_000, timeoutNanoseconds: 2_000_000_000, maxHops: 16))
        XCTAssertEqual(trace.traceNanoseconds, 19 * 500_000_000 + 2_000_000_000)
    }

    func testATraceLongerThanItsIntervalAndUnknownKeysAreErrorsWithTheArithmetic() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\ntrace:\n  icmp: 5s\n  rounds: 10\n  spacing: 1s\n  max_hop: 8\n", to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(3, 3, "trace icmp: a trace lasts (rounds - 1) × spacing + timeout = 10s, longer than its interval 5s; raise the interval or lower rounds or spacing"),
            Expected(6, 3, "unknown key 'max_hop' in trace; did you mean 'max_hops'?"),
        ])
    }
}

/// `trace: mtu:` (issue 30): don't-fragment ICMP traces, read as a boolean, only with `icmp:`.
final class TraceMTUConfigurationTests: XCTestCase {
    func testMTUIsOffByDefaultAndReadAsABoolean() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\ntrace: {icmp: 5m}\n", to: path, mode: 0o644)
        XCTAssertFalse(try ConfigurationLoader.load(path: path).trace.mtu)
        try write("targets: {ping: null, tcp: null}\ntrace: {icmp: 5m, mtu: true}\n", to: path, mode: 0o644)
        XCTAssertTrue(try ConfigurationLoader.load(path: path).trace.mtu)
    }

    func testMTUThatIsNoBooleanOrWithoutICMPTracesIsAnErrorAtItsKey() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/netprobe.yaml"
        try write("targets: {ping: null, tcp: null}\ntrace:\n  icmp: 5m\n  mtu: 1500\n", to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(4, 8, "mtu must be true or false, got '1500'"),
        ])
        try write("targets: {ping: null, tcp: null}\ntrace:\n  tcp: 5m\n  mtu: true\n", to: path, mode: 0o644)
        assertErrors(configErrors(path), in: path, [
            Expected(4, 3, "trace mtu: true finds the path MTU of ICMP traces, and no ping target is traced: add `icmp: INTERVAL` (TCP SYN traces carry no payload to size)"),
        ])
    }
}
