import Logging
import ProbeResults
import TestSupport
import XCTest
@testable import ProbeEngine

/// ICMP runs side by side on one prober's sockets (what `/probe` uses): each reply goes to
/// the run that sent its request, and a silent target holds up no other run. The silent
/// host is a real one: routed into a namespace that drops it (SilentNetwork).
final class ProbeAlongsideTests: XCTestCase {
    let logger = Logger(label: "test")

    /// Records the order in which calls finished.
    actor Finishes {
        var order: [String] = []
        func add(_ name: String) { order.append(name) }
    }

    static func configuration(count: Int = 1, timeoutSeconds: Int64) -> ICMPProbeConfiguration {
        var configuration = ICMPProbeConfiguration(count: count, intervalNanoseconds: 10_000_000, timeoutNanoseconds: timeoutSeconds * 1_000_000_000)
        configuration.lateWindowNanoseconds = 0
        return configuration
    }

    func testASilentTargetInFlightHoldsUpNoOtherRunOnTheSameSockets() async throws {
        let network = try SilentNetwork.make()
        let sockets = try network.inProber { try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: self.logger) }
        let prober = try ICMPProber(sockets: sockets, configuration: ICMPProbeConfiguration(count: 1), logger: logger)
        let finishes = Finishes()
        let silentTarget = ProbeTarget(name: "silent", address: IPAddress(parsing: network.silentAddress))
        let silentConfiguration = Self.configuration(timeoutSeconds: 5)
        let silent = Task {
            let round = await prober.probeAlongside(silentTarget, configuration: silentConfiguration)
            await finishes.add("silent")
            return round
        }
        let started = TestEnvironment.eventually(within: 30) { prober.runningAlongside == 1 }
        XCTAssertTrue(started, "the silent target's run is on the loop")
        // The same settings, then other ones: neither waits for the silent target.
        for (name, count) in [("same module", 1), ("other module", 3)] {
            let round = await prober.probeAlongside(ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1")),
                                                    configuration: Self.configuration(count: count, timeoutSeconds: count == 1 ? 5 : 2))
            await finishes.add(name)
            XCTAssertEqual(round?.sent, count, name)
            XCTAssertEqual(round?.received, count, name)
            XCTAssertEqual(round?.outcome, .ok, name)
        }
        let silentRound = await silent.value
        let order = await finishes.order
        XCTAssertEqual(order, ["same module", "other module", "silent"])
        XCTAssertEqual(silentRound?.sent, 1)
        XCTAssertEqual(silentRound?.received, 0)
        XCTAssertEqual(silentRound?.outcome, .timeout)
        prober.close()
    }

    func testRunsSideBySideEachCountOnlyTheirOwnReplies() async throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for raw ICMP sockets; CI runs as root") }
        let sockets = try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv6], ttl: nil, logger: logger)
        let hasIPv6 = sockets.modes[.ipv6] != nil
        let prober = try ICMPProber(sockets: sockets, configuration: ICMPProbeConfiguration(count: 1), logger: logger)
        let targets = (0..<12).map { index in
            index % 2 == 1 && hasIPv6 ? ProbeTarget(name: "::1", address: IPAddress(parsing: "::1")) : ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1"))
        }
        let fourEchoes = Self.configuration(count: 4, timeoutSeconds: 2)
        let rounds = await withTaskGroup(of: RoundResult?.self) { group in
            for target in targets { group.addTask { await prober.probeAlongside(target, configuration: fourEchoes) } }
            var rounds: [RoundResult?] = []
            for await round in group { rounds.append(round) }
            return rounds
        }
        XCTAssertEqual(rounds.count, 12)
        for round in rounds {
            XCTAssertEqual(round?.sent, 4)
            XCTAssertEqual(round?.received, 4, "every run got each of its own replies")
            XCTAssertEqual(round?.duplicates, 0, "and none of another run's")
        }
        // A raw socket sees every echo reply of the host: another program's (its own
        // identifier) is not ours to count; any other reason would be a reply of ours that
        // did not find its run.
        XCTAssertEqual(prober.diagnostics.ignoredReplies.filter { $0.key != "wrong_identifier" }, [:], "every reply found the run that sent its request")
        XCTAssertEqual(prober.runningAlongside, 0)
        prober.close()
    }

    func testShutDownEndsTheRunsAndRefusesNewOnes() async throws {
        let network = try SilentNetwork.make()
        let sockets = try network.inProber { try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: self.logger) }
        let prober = try ICMPProber(sockets: sockets, configuration: ICMPProbeConfiguration(count: 1), logger: logger)
        let silentTarget = ProbeTarget(name: "silent", address: IPAddress(parsing: network.silentAddress))
        // Ten probes a second apart: a stop sends no more of them.
        let tenEchoes = ICMPProbeConfiguration(count: 10, intervalNanoseconds: 1_000_000_000, timeoutNanoseconds: 1_000_000_000)
        let silent = Task { await prober.probeAlongside(silentTarget, configuration: tenEchoes) }
        let started = TestEnvironment.eventually(within: 30) { prober.runningAlongside == 1 }
        XCTAssertTrue(started)
        prober.shutDown()
        let round = await silent.value
        XCTAssertLessThan(round?.sent ?? 10, 10, "sending stopped")
        XCTAssertEqual(round?.received, 0)
        let refused = await prober.probeAlongside(ProbeTarget(name: "127.0.0.1", address: IPAddress(parsing: "127.0.0.1")), configuration: Self.configuration(timeoutSeconds: 1))
        XCTAssertNil(refused, "a shut-down prober takes no new run")
        XCTAssertEqual(prober.runningAlongside, 0)
    }
}
