import Foundation
@testable import NetSim
import XCTest

/// `drop=every:N,after:K`: loss that starts at a known request, so a test knows its first
/// lossy round (LiveViewLossTests); the echo requests and SYNs of a host are counted apart.
final class DropScheduleTests: XCTestCase {
    func testTheFirstRequestPastAfterAndEveryNthFollowingOneAreDropped() {
        let half = DropSchedule(every: 2, after: 4)
        XCTAssertEqual((1...12).filter { half.drops(requestNumber: $0) }, [5, 7, 9, 11])
        let third = DropSchedule(every: 3, after: 0)
        XCTAssertEqual((1...9).filter { third.drops(requestNumber: $0) }, [1, 4, 7])
        XCTAssertEqual((1...5).filter { DropSchedule(every: 1, after: 3).drops(requestNumber: $0) }, [4, 5], "every:1 drops all past after")
    }

    func testDropParsesInTheFlagAndYAMLSyntaxAndBadValuesSayWhatToChange() throws {
        XCTAssertEqual(try HostRule(parsing: "198.18.1.0/24 drop=every:2,after:20").dropSchedule, DropSchedule(every: 2, after: 20))
        XCTAssertEqual(try HostRule(parsing: "198.18.1.0/24 drop=after:0,every:4").dropSchedule, DropSchedule(every: 4, after: 0))
        XCTAssertNil(try HostRule(parsing: "198.18.1.0/24 loss=0.5").dropSchedule)
        let rules = try RuleSet.rules(yaml: """
            rules:
              - prefix: 198.18.1.0/24
                drop: {every: 2, after: 150}
            """)
        XCTAssertEqual(rules.first?.dropSchedule, DropSchedule(every: 2, after: 150))
        let bad: [(String, String)] = [
            ("198.18.1.0/24 drop=every:2", "drop='every:2': give both every and after"),
            ("198.18.1.0/24 drop=every:0,after:3", "drop='every:0,after:3': every:0: write 1 (every request) to 1000000"),
            ("198.18.1.0/24 drop=every:2,after:-1", "drop='every:2,after:-1': after:-1: write 0 or more requests"),
            ("198.18.1.0/24 drop=every:2,after:3,every:3", "drop='every:2,after:3,every:3': every given twice"),
            ("198.18.1.0/24 drop=half", "drop='half': 'half' is not NAME:NUMBER"),
            ("198.18.1.0/24 drop=every:2,from:3", "drop='every:2,from:3': unknown item 'from': use every and after"),
        ]
        for (rule, message) in bad {
            XCTAssertThrowsError(try HostRule(parsing: rule), rule) { error in
                XCTAssertTrue((error as? RuleError)?.description.hasPrefix(message) ?? false, "\(rule): \(error)")
            }
        }
        XCTAssertThrowsError(try RuleSet.rules(yaml: "rules:\n  - prefix: 198.18.1.0/24\n    drop: {every: 2}\n", file: "sim.yaml")) { error in
            XCTAssertTrue("\(error)".hasPrefix("sim.yaml:3: rule 1: drop='every:2': give both every and after"), "\(error)")
        }
    }

    /// Pings and handshakes to one host: each kind's own count decides, whatever the other
    /// kind sent in between.
    func testPingsAndHandshakesAreDroppedByTheirOwnCountFromTheKnownRequestOn() throws {
        try SimulatorHarness.requirePrivileges()
        let (results, summary) = try SimulatedNetwork.run(rules: ["198.18.29.0/24 delay=1ms drop=every:2,after:4 tcp=80:open"],
                                                          netsimPath: try SimulatorHarness.binary("netsim")) { namespace in
            let ping = try SimulatorHarness.ping(namespace, ["-c", "10", "-i", "0.02", "-W", "0.3", "198.18.29.5"])
            let tcp = try SimulatedNetwork.execute([try SimulatorHarness.binary("netprobe"), "tcp", "--json", "-c", "10", "-i", "0.02", "-W", "0.3", "198.18.29.5:80"],
                                                   inNamespace: namespace)
            return (ping, tcp)
        }
        let ping = try XCTUnwrap(results.0.rounds["198.18.29.5"], results.0.standardError)
        XCTAssertEqual(ping["sent"] as? Int, 10)
        XCTAssertEqual(ping["received"] as? Int, 7, "requests 5, 7 and 9 dropped")
        let tcpLine = try XCTUnwrap(results.1.standardOutput.split(separator: "\n").first, results.1.standardError)
        let tcp = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(tcpLine.utf8)) as? [String: Any])
        XCTAssertEqual(tcp["sent"] as? Int, 10)
        XCTAssertEqual(tcp["received"] as? Int, 7, "SYNs 5, 7 and 9 dropped, counted apart from the pings")
        XCTAssertEqual(summary.host("198.18.29.5").dropped, 6)
    }
}
