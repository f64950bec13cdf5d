import Foundation
@testable import NetSim
import XCTest

/// `netprobe trace` names how a path ends (issue 27's acceptance 4): a routing loop with its
/// addresses, an unreachable with its mark and code (never counted as a reply), and an
/// unreachable that comes after a router's 3 s neighbour lookup, past the default 1 s
/// timeout. The JSON keys are the ones /tmp/contract-27.md lays down ("ending",
/// "ending_detail", "unreachable_marks"); the simulator's per-router summary is the ground
/// truth. Real processes, real packets, in a namespace of the test's own.
final class TraceEndingTests: XCTestCase {
    func simulate<Value>(_ rules: [String], _ body: (String) throws -> Value) throws -> (value: Value, summary: SimulationSummary) {
        try SimulatorHarness.requirePrivileges()
        return try SimulatedNetwork.run(rules: rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "27"], body)
    }

    struct Traced {
        var status: Int32
        /// `--json`: one object per target.
        var traces: [String: [String: Any]]
        /// Without `--json`: the report as printed.
        var text: String
        var standardError: String
    }

    /// Runs `netprobe trace` twice with the same arguments: with `--json` and as text.
    func trace(_ namespace: String, _ arguments: [String]) throws -> Traced {
        let netprobe = try SimulatorHarness.binary("netprobe")
        let json = try SimulatedNetwork.execute([netprobe, "trace", "--json"] + arguments, inNamespace: namespace)
        var traces: [String: [String: Any]] = [:]
        for line in json.standardOutput.split(separator: "\n") {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            traces[try XCTUnwrap(object["target"] as? String)] = object
        }
        let text = try SimulatedNetwork.execute([netprobe, "trace"] + arguments, inNamespace: namespace)
        return Traced(status: json.status, traces: traces, text: text.standardOutput, standardError: json.standardError + text.standardError)
    }

    func hops(_ trace: [String: Any]?) throws -> [[String: Any]] {
        try XCTUnwrap(trace?["hops"] as? [[String: Any]], "no hops in \(String(describing: trace))")
    }

    func detail(_ trace: [String: Any]?) throws -> [String: Any] {
        try XCTUnwrap(trace?["ending_detail"] as? [String: Any], "no ending_detail in \(String(describing: trace))")
    }

    /// The line of the text report that heads `target`'s trace.
    func headline(_ text: String, _ target: String) -> String {
        text.split(separator: "\n").first { $0.contains(target) }.map(String.init) ?? "(no line names \(target) in:\n\(text))"
    }

    /// `count` routers 198.18.<net>.1... or 2001:db8:<net>::1...
    func chain(_ v6: Bool, net: Int, count: Int) -> [String] {
        (1...count).map { v6 ? "2001:db8:\(net)::\($0)" : "198.18.\(net).\($0)" }
    }

    func testARoutingLoopIsNamedWithTheLoopingAddressesFromTheHopItStarts() throws {
        let targets = ["198.18.90.9", "2001:db8:90::9"]
        var rules: [String] = []
        for (v6, target) in zip([false, true], targets) {
            let routers = chain(v6, net: 190, count: 7)
            rules.append("\(target)/\(v6 ? 128 : 32) path=\(routers.prefix(5).joined(separator: ",")) loop=\(routers[5]),\(routers[6])")
        }
        let (traced, summary) = try simulate(rules) { namespace in
            try trace(namespace, ["-c", "5", "-i", "0.05", "-W", "0.5", "--max-hops", "12"] + targets)
        }
        XCTAssertEqual(traced.status, 1, "a loop never reaches the target: \(traced.standardError)")
        for (v6, target) in zip([false, true], targets) {
            let routers = chain(v6, net: 190, count: 7)
            let report = try XCTUnwrap(traced.traces[target], "no trace of \(target)")
            XCTAssertEqual(report["reached"] as? Bool, false)
            XCTAssertEqual(report["ending"] as? String, "routing_loop", "\(target): \(report)")
            let ending = try detail(report)
            XCTAssertEqual(ending["addresses"] as? [String], [routers[5], routers[6]], "\(target): the looping addresses in the order met")
            XCTAssertEqual(ending["from_hop"] as? Int, 6)
            let list = try hops(report)
            XCTAssertEqual(list.compactMap { $0["address"] as? String }, Array(routers.prefix(5)) + [routers[5], routers[6], routers[5], routers[6], routers[5], routers[6], routers[5]],
                           "\(target): the path, then the loop's routers in turn up to --max-hops")
            XCTAssertEqual(summary.host(target).packetsIn, 0, "\(target): the simulator let nothing reach the host")
            XCTAssertGreaterThan(summary.router(routers[5]).looped, 0)
            let line = headline(traced.text, target)
            XCTAssertTrue(line.contains("routing loop between \(routers[5]) and \(routers[6]) from hop 6"), line)
        }
    }

    func testEachUnreachableCodeEndsThePathWithItsMarkAndIsNeverCountedAsAReply() throws {
        // (code, net, v4 code, v4 mark, v6 code, v6 mark); ICMPv6 has no protocol unreachable.
        let codes: [(String, Int, Int, String, Int?, String)] = [
            ("net", 1, 0, "!N", 0, "!N"), ("host", 2, 1, "!H", 3, "!H"), ("protocol", 3, 2, "!P", nil, ""),
            ("port", 4, 3, "!P", 4, "!P"), ("prohibited", 5, 13, "!X", 1, "!X"),
        ]
        var rules: [String] = []
        var targets: [String] = []
        for (code, net, _, _, v6Code, _) in codes {
            for v6 in [false, true] where !(v6 && v6Code == nil) {
                let target = v6 ? "2001:db8:9\(net)::9" : "198.18.9\(net).9"
                targets.append(target)
                rules.append("\(target)/\(v6 ? 128 : 32) path=\(chain(v6, net: 190 + net, count: 4).joined(separator: ",")) unreachable=\(code),at-hop:3")
            }
        }
        let rounds = 5
        let (traced, summary) = try simulate(rules) { namespace in
            try trace(namespace, ["-c", "\(rounds)", "-i", "0.05", "-W", "0.5", "--max-hops", "8"] + targets)
        }
        XCTAssertEqual(traced.status, 1, traced.standardError)
        for (code, net, v4Code, v4Mark, v6Code, v6Mark) in codes {
            for v6 in [false, true] {
                guard let icmpCode = v6 ? v6Code : v4Code else { continue }
                let mark = v6 ? v6Mark : v4Mark
                let target = v6 ? "2001:db8:9\(net)::9" : "198.18.9\(net).9"
                let refusing = chain(v6, net: 190 + net, count: 4)[2]
                let report = try XCTUnwrap(traced.traces[target], "no trace of \(target)")
                XCTAssertEqual(report["ending"] as? String, "unreachable", "\(target) (\(code)): \(report)")
                let ending = try detail(report)
                XCTAssertEqual(ending["hop"] as? Int, 3, "\(target)")
                XCTAssertEqual(ending["address"] as? String, refusing, "\(target)")
                XCTAssertEqual(ending["mark"] as? String, mark, "\(target) (\(code))")
                XCTAssertEqual(ending["icmp_code"] as? Int, icmpCode, "\(target) (\(code))")
                let list = try hops(report)
                XCTAssertEqual(list.count, 3, "\(target): the path ends where it is refused")
                let last = try XCTUnwrap(list.last)
                XCTAssertEqual(last["address"] as? String, refusing)
                XCTAssertEqual(last["sent"] as? Int, rounds, "\(target): one probe per round counts at the refusing hop")
                XCTAssertEqual(last["received"] as? Int, 0, "\(target): an unreachable is not a reply")
                XCTAssertEqual(last["unreachable"] as? Int, rounds)
                XCTAssertEqual(last["unreachable_marks"] as? [String: Int], [mark: rounds], "\(target)")
                XCTAssertEqual(last["loss_percent"] as? Double, 0, "\(target): every probe was answered, none by a reply")
                XCTAssertGreaterThanOrEqual(summary.router(refusing).unreachable, rounds, "\(target): the simulator refused at least every counted probe")
                let line = headline(traced.text, target)
                XCTAssertTrue(line.contains("unreachable at hop 3, \(refusing) (\(mark)"), "\(target): \(line)")
            }
        }
    }

    /// A router whose next hop never answers ARP / ND sends host unreachable once its
    /// neighbour lookup gives up, about 3 s after the probe: later than the default 1 s
    /// timeout. The trace must still name it. (Its lateness on the wire is shown in
    /// LoopAndUnreachablePacketTests; here only that the trace waits for it.)
    func testALateUnreachableAfterANeighbourLookupEndsThePathWithTheDefaultTimeout() throws {
        let targets = ["198.18.97.9", "2001:db8:97::9"]
        let rules = zip([false, true], targets).map { v6, target in
            "\(target)/\(v6 ? 128 : 32) path=\(chain(v6, net: 197, count: 5).joined(separator: ",")) unreachable=host,after-hop:5,delay:3s"
        }
        let rounds = 3
        let (traced, summary) = try simulate(rules) { namespace in
            try trace(namespace, ["-c", "\(rounds)", "-i", "0.2", "--max-hops", "8"] + targets)
        }
        XCTAssertEqual(traced.status, 1, traced.standardError)
        for (v6, target) in zip([false, true], targets) {
            let routers = chain(v6, net: 197, count: 5)
            let report = try XCTUnwrap(traced.traces[target], "no trace of \(target)")
            XCTAssertEqual(report["ending"] as? String, "unreachable", "\(target): the late unreachable was waited for: \(report)")
            let ending = try detail(report)
            XCTAssertEqual(ending["hop"] as? Int, 6, "\(target): hop 5 forwards TTL 6 no further")
            XCTAssertEqual(ending["address"] as? String, routers[4])
            XCTAssertEqual(ending["mark"] as? String, "!H")
            XCTAssertEqual(ending["icmp_code"] as? Int, v6 ? 3 : 1)
            let list = try hops(report)
            XCTAssertEqual(list.compactMap { $0["address"] as? String }, routers + [routers[4]], "\(target): hop 5 answers its own TTL, then refuses hop 6's")
            XCTAssertEqual(list[4]["received"] as? Int, rounds, "\(target): TTL 5 still expires at hop 5, in time")
            let refused = list[5]
            XCTAssertEqual(refused["sent"] as? Int, rounds)
            XCTAssertEqual(refused["received"] as? Int, 0)
            XCTAssertEqual(refused["unreachable"] as? Int, rounds, "\(target): every round's unreachable, each 3 s late")
            XCTAssertEqual(refused["unreachable_marks"] as? [String: Int], ["!H": rounds])
            XCTAssertTrue(refused["timestamp_source"] is NSNull, "\(target): an unreachable has no RTT")
            XCTAssertEqual((refused["rtts_ms"] as? [Any])?.count, 0)
            XCTAssertGreaterThanOrEqual(summary.router(routers[4]).unreachable, rounds)
        }
        XCTAssertEqual(summary.pending, 0)
    }
}
