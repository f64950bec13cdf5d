import Foundation
import NetSim
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What the simulator tests need, found once.
enum SimulatorHarness {
    /// In CI (CI=true) a missing prerequisite is a failure, not a skip: CI runs as root
    /// with every tool installed, so a skip there would hide a broken install step.
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Skips (or, in CI, fails) unless the test can create namespaces and TUN devices.
    static func requirePrivileges() throws {
        guard SimulatedNetwork.isPrivileged else {
            if isCI { XCTFail("CI must run the simulator tests as root") }
            throw XCTSkip("needs root: the simulator creates a network namespace and a TUN device; CI runs as root")
        }
        guard SimulatedNetwork.ipPath != nil else {
            if isCI { XCTFail("ip (iproute2) is missing: .ci/run must install it") }
            throw XCTSkip("needs ip (iproute2) on this machine")
        }
        guard FileManager.default.fileExists(atPath: "/dev/net/tun") else {
            if isCI { XCTFail("/dev/net/tun is missing: the CI container needs --device /dev/net/tun") }
            throw XCTSkip("needs /dev/net/tun")
        }
    }

    static func binary(_ name: String) throws -> String {
        try XCTUnwrap(SimulatedNetwork.executable(named: name), "\(name) is not built next to the test bundle (swift build builds it)")
    }

    /// Runs `netprobe ping ... --json` inside the namespace; one JSON object per target.
    static func ping(_ namespace: String, _ arguments: [String], timeout: TimeInterval = 120) throws -> (status: Int32, rounds: [String: [String: Any]], standardError: String) {
        let output = try SimulatedNetwork.execute([try binary("netprobe"), "ping", "--json"] + arguments, inNamespace: namespace, timeout: timeout)
        var rounds: [String: [String: Any]] = [:]
        for line in output.standardOutput.split(separator: "\n") {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            rounds[try XCTUnwrap(object["target"] as? String)] = object
        }
        return (output.status, rounds, output.standardError)
    }

    /// The smallest and largest count of successes that lie inside the central
    /// `confidence` interval of Binomial(trials, probability), computed exactly.
    static func binomialInterval(trials: Int, probability: Double, confidence: Double) -> ClosedRange<Int> {
        let tail = (1 - confidence) / 2
        func logPMF(_ k: Int) -> Double {
            lgamma(Double(trials + 1)) - lgamma(Double(k + 1)) - lgamma(Double(trials - k + 1))
                + Double(k) * log(probability) + Double(trials - k) * log(1 - probability)
        }
        var cumulative = 0.0
        var lower = 0
        var upper = trials
        var lowerFound = false
        for k in 0...trials {
            cumulative += exp(logPMF(k))
            if !lowerFound && cumulative > tail { lower = k; lowerFound = true }
            if cumulative >= 1 - tail { upper = k; break }
        }
        return lower...upper
    }
}
