import Foundation
@testable import NetSim
import ProbeEngine
import ProbeResults
import XCTest

/// `netprobe trace` and `check` against multi-hop simulated paths (issue 14's acceptance):
/// real processes, real packets in a namespace of the test's own; the simulator's
/// per-router summary is the ground truth.
///
/// No count here depends on timing: each router draws its losses from a generator of its
/// own (seeded), and with `--max-hops` at the path's length every round sends the same
/// probes in the same order, so the drops a trace meets are the same on every run.
final class TraceAccuracyTests: XCTestCase {
    func simulate<Value>(_ rules: [String], seed: Int = 14, _ body: (String) throws -> Value) throws -> (value: Value, summary: SimulationSummary) {
        try SimulatorHarness.requirePrivileges()
        return try SimulatedNetwork.run(rules: rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "\(seed)"], body)
    }

    /// Runs `netprobe trace --json`; one object per target.
    struct Traced {
        var status: Int32
        var traces: [String: [String: Any]]
        var standardOutput: String
        var standardError: String

        func standardOutputLines() throws -> [[String: Any]] {
            try standardOutput.split(separator: "\n").map { line in
                try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            }
        }
    }

    /// Runs `netprobe trace --json`; one object per target (by name; see `standardOutputLines` for ports).
    func trace(_ namespace: String, _ arguments: [String]) throws -> Traced {
        let output = try SimulatedNetwork.execute([try SimulatorHarness.binary("netprobe"), "trace", "--json"] + arguments, inNamespace: namespace)
        var traced = Traced(status: output.status, traces: [:], standardOutput: output.standardOutput, standardError: output.standardError)
        for object in try traced.standardOutputLines() { traced.traces[try XCTUnwrap(object["target"] as? String)] = object }
        return traced
    }

    /// Runs `netprobe check --json`; one object per host.
    func check(_ namespace: String, _ arguments: [String]) throws -> [String: [String: Any]] {
        let output = try SimulatedNetwork.execute([try SimulatorHarness.binary("netprobe"), "check", "--json"] + arguments, inNamespace: namespace)
        var verdicts: [String: [String: Any]] = [:]
        for line in output.standardOutput.split(separator: "\n") {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line) (\(output.standardError))")
            verdicts[try XCTUnwrap(object["target"] as? String)] = object
        }
        return verdicts
    }

    func hops(_ trace: [String: Any]?) throws -> [[String: Any]] {
        try XCTUnwrap(trace?["hops"] as? [[String: Any]], "no hops in \(String(describing: trace))")
    }

    func lost(_ hop: [String: Any]) -> Int { (hop["sent"] as? Int ?? 0) - (hop["received"] as? Int ?? 0) }

    /// A chain of `count` routers: 198.18.<net>.1... or 2001:db8:<net>::1...
    func chain(_ v6: Bool, net: Int, count: Int) -> [String] {
        (1...count).map { v6 ? "2001:db8:\(net)::\($0)" : "198.18.\(net).\($0)" }
    }

    // Acceptance 1: 10 % loss from hop 4 of a 6-hop path.
    func testLossIntroducedAtHopFourIsReportedFromHopFourOnAndCheckNamesHopFour() throws {
        let routers4 = chain(false, net: 100, count: 5), routers6 = chain(true, net: 100, count: 5)
        let rules = ["198.18.50.0/24 path=\(routers4.joined(separator: ","))", "\(routers4[3])/32 loss=0.1",
                     "2001:db8:50::/48 path=\(routers6.joined(separator: ","))", "\(routers6[3])/128 loss=0.1"]
        let targets = ["198.18.50.9", "2001:db8:50::9"]
        let rounds = 300
        // The drops a trace meets are fixed by the seed (see the class comment). The band is
        // 99 % per hop and six hops are checked, so about one seed in 17 puts a hop outside
        // it: seed 14 did (15 of 300 at the IPv4 destination); seeds 2 to 5 do not. The
        // exact check is the next one: every probe the trace calls lost was dropped by hop 4.
        let (traced, summary) = try simulate(rules, seed: 3) { namespace in
            try trace(namespace, ["-c", "\(rounds)", "-i", "0.02", "-W", "0.5", "--max-hops", "6"] + targets)
        }
        // check in a simulation of its own: its pings cross hop 4 too, and this one's
        // drops are timing-dependent (pings and trace probes interleave), so check gets
        // 1,000 pings per host: fewer than 5 % lost of a 10 % loss is then a 5-sigma event.
        let (checked, _) = try simulate(rules) { namespace in
            try check(namespace, ["-i", "0.01", "--duration", "10", "-W", "0.5"] + targets)
        }
        XCTAssertEqual(traced.status, 0, traced.standardError)
        let band = SimulatorHarness.binomialInterval(trials: rounds, probability: 0.1, confidence: 0.99)
        for (target, routers) in zip(targets, [routers4, routers6]) {
            let report = try XCTUnwrap(traced.traces[target], "no trace of \(target)")
            let list = try hops(report)
            XCTAssertEqual(list.count, 6, "\(target): five routers and the destination")
            XCTAssertEqual(list.map { $0["address"] as? String }, (routers + [target]).map { Optional($0) })
            XCTAssertEqual(list.map { $0["sent"] as? Int }, Array(repeating: rounds, count: 6))
            for hop in list.prefix(3) { XCTAssertEqual(lost(hop), 0, "\(target) hop \(hop["hop"]!): nothing is lost before hop 4") }
            for hop in list.dropFirst(3) {
                XCTAssertTrue(band.contains(lost(hop)), "\(target) hop \(hop["hop"]!): \(lost(hop)) of \(rounds) lost, 99 % band \(band)")
            }
            XCTAssertEqual(list.dropFirst(3).map(lost).reduce(0, +), summary.router(routers[3]).dropped, "\(target): every loss is a drop at hop 4")
            XCTAssertEqual(summary.router(routers[2]).dropped, 0)
            XCTAssertEqual(report["loss_start_hop"] as? Int, 4)
            XCTAssertEqual(report["rate_limiting_hops"] as? [Int], [])
            XCTAssertEqual(list.last?["destination"] as? Bool, true)

            let verdict = try XCTUnwrap(checked[target], "no verdict for \(target)")
            XCTAssertEqual(verdict["verdict"] as? String, "network")
            let text = try XCTUnwrap(verdict["summary"] as? String)
            XCTAssertTrue(text.contains("loss starts at hop 4, \(routers[3]):"), "\(target): \(text)")
        }
    }

    // Acceptance 2: hop 3 rate-limits its time exceeded to 1/s and loses nothing.
    func testARateLimitingHopIsShownAsSuchWithNoLossAndCheckCallsThePathClean() throws {
        let routers4 = chain(false, net: 110, count: 5), routers6 = chain(true, net: 110, count: 5)
        let rules = ["198.18.51.0/24 path=\(routers4.joined(separator: ","))", "\(routers4[2])/32 icmp-rate=1",
                     "2001:db8:51::/48 path=\(routers6.joined(separator: ","))", "\(routers6[2])/128 icmp-rate=1"]
        let targets = ["198.18.51.9", "2001:db8:51::9"]
        let ((traced, checked), summary) = try simulate(rules) { namespace in
            (try trace(namespace, ["-c", "100", "-i", "0.05", "-W", "0.5", "--max-hops", "6"] + targets),
             try check(namespace, ["-i", "0.05", "--duration", "4", "-W", "0.5"] + targets))
        }
        XCTAssertEqual(traced.status, 0, traced.standardError)
        for (target, routers) in zip(targets, [routers4, routers6]) {
            let report = try XCTUnwrap(traced.traces[target], "no trace of \(target)")
            let list = try hops(report)
            XCTAssertEqual(list.count, 6)
            let third = list[2]
            XCTAssertEqual(third["address"] as? String, routers[2])
            XCTAssertEqual(third["rate_limited"] as? Bool, true, "\(target): hop 3 answers 1 probe a second of 20")
            XCTAssertEqual(third["forwarded_loss_percent"] as? Double, 0, "no loss attributed to hop 3")
            // How many of the 100 the 1/s limit held back depends on how long the trace took
            // (about 94 in 5 s; fewer on a loaded machine): printed, asserted only to be some.
            print("\(target): hop 3 lost \(lost(third)) of 100 to its rate limit")
            XCTAssertGreaterThan(lost(third), 0)
            for (position, hop) in list.enumerated() where position != 2 {
                XCTAssertEqual(lost(hop), 0, "\(target) hop \(position + 1)")
                XCTAssertEqual(hop["rate_limited"] as? Bool, false)
            }
            XCTAssertEqual(report["rate_limiting_hops"] as? [Int], [3])
            XCTAssertTrue(report["loss_start_hop"] is NSNull, "\(target): no loss to locate")
            XCTAssertEqual(report["destination_loss_percent"] as? Double, 0)
            XCTAssertEqual(summary.router(routers[2]).dropped, 0)
            XCTAssertGreaterThanOrEqual(summary.router(routers[2]).rateLimited, lost(third), "every unanswered probe at hop 3 was held back by its rate limit")

            let verdict = try XCTUnwrap(checked[target], "no verdict for \(target)")
            XCTAssertEqual(verdict["verdict"] as? String, "neither")
            let text = try XCTUnwrap(verdict["summary"] as? String)
            XCTAssertTrue(text.contains("path clean"), "\(target): \(text)")
            XCTAssertTrue(text.contains("hop 3 \(routers[2]) rate-limits its ICMP"), "\(target): \(text)")
        }
    }

    /// The branch the simulator's load balancer gives flow `flow` of a trace to `target`
    /// from the simulator's own address: its hash of the probe as the kernel sends it.
    func branch(of flow: Int, to target: String) throws -> UInt64 {
        let destination = try XCTUnwrap(SimulatedAddress(target))
        let source = SimulatedAddress(destination.isIPv6 ? "2001:db8::1" : "198.18.0.1")!
        var message: [UInt8] = []
        PathPacket.encodeRequest(family: destination.isIPv6 ? .ipv6 : .ipv4, identifier: 1, probeNumber: 77, cookie: 5, flow: flow, payloadLength: 24, into: &message)
        let packet = SimulatedPacket.ipPacket(source: source, destination: destination, transport: destination.isIPv6 ? 58 : 1, ttl: 2,
                                              transportMessage: message, checksumOffset: 2)
        return try packet.withUnsafeBytes { PathWalker.flowHash($0, header: try SimulatedPacket.header($0)) % 2 }
    }

    // Acceptance 3: two equal-cost branches.
    func testOneFlowTakesOneBranchAndTwoFlowsShowBoth() throws {
        // A load balancer splits flows by hash: for some destinations flows 0 and 1 share a
        // branch. Take the first destination where they do not (the hash is fixed).
        let v4 = try XCTUnwrap((2...60).map { "198.18.60.\($0)" }.first { try branch(of: 0, to: $0) != branch(of: 1, to: $0) })
        let v6 = try XCTUnwrap((2...60).map { "2001:db8:60::\($0)" }.first { try branch(of: 0, to: $0) != branch(of: 1, to: $0) })
        let rules = ["198.18.60.0/24 path=198.18.120.1,198.18.120.2|198.18.121.2,198.18.120.3|198.18.121.3,198.18.120.4",
                     "2001:db8:60::/48 path=2001:db8:120::1,2001:db8:120::2|2001:db8:121::2,2001:db8:120::3|2001:db8:121::3,2001:db8:120::4"]
        let ((one, two, text), _) = try simulate(rules) { namespace in
            (try trace(namespace, ["-c", "20", "-i", "0.05", "-W", "0.5", v4, v6]),
             try trace(namespace, ["-c", "20", "-i", "0.05", "-W", "0.5", "--flows", "2", v4, v6]),
             try SimulatedNetwork.execute([try SimulatorHarness.binary("netprobe"), "trace", "-c", "20", "-i", "0.05", "-W", "0.5", "--flows", "2", v4, v6],
                                          inNamespace: namespace).standardOutput)
        }
        // The text report names every address of an equal-cost hop with its answers (the
        // first one too), and each flow's path with its own loss.
        for branch in ["198.18.120.2", "198.18.121.2", "2001:db8:120::2", "2001:db8:121::2"] {
            let line = text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(branch + " (") }
            XCTAssertNotNil(line, "\(branch) listed with its answer count:\n\(text)")
            XCTAssertTrue(line?.hasSuffix(" answers)") == true, "\(line ?? "")")
        }
        XCTAssertEqual(text.split(separator: "\n").filter { $0.hasPrefix("  flow ") }.count, 4, "two flows per target:\n\(text)")
        XCTAssertEqual(one.status, 0, one.standardError)
        XCTAssertEqual(two.status, 0, two.standardError)
        for (target, a, b) in [(v4, "198.18.120.", "198.18.121."), (v6, "2001:db8:120::", "2001:db8:121::")] {
            let single = try hops(one.traces[target])
            XCTAssertEqual(single.count, 5)
            for hop in single {
                XCTAssertEqual((hop["addresses"] as? [[String: Any]])?.count, 1, "\(target) hop \(hop["hop"]!): one flow, one address: \(hop)")
                XCTAssertEqual(hop["sent"] as? Int, hop["received"] as? Int)
            }
            let path = single.compactMap { $0["address"] as? String }
            let branchTaken = path[1].hasPrefix(b) ? b : a
            XCTAssertEqual([path[1], path[2]], [branchTaken + "2", branchTaken + "3"], "\(target): hops 2 and 3 are one branch: \(path)")

            let double = try hops(two.traces[target])
            XCTAssertEqual(double.count, 5)
            for position in [1, 2] {
                let seen = Set(((double[position]["addresses"] as? [[String: Any]]) ?? []).compactMap { $0["address"] as? String })
                XCTAssertEqual(seen, [a + "\(position + 1)", b + "\(position + 1)"], "\(target) hop \(position + 1): both branches")
            }
            let flows = try XCTUnwrap(two.traces[target]?["flow_paths"] as? [[String: Any]])
            let paths = flows.map { ($0["hops"] as? [String?]) ?? [] }
            XCTAssertEqual(paths.count, 2)
            XCTAssertNotEqual(paths[0], paths[1], "\(target): the flows took different branches")
            for flowPath in paths {
                let prefix = flowPath[1]?.hasPrefix(b) == true ? b : a
                XCTAssertEqual([flowPath[1], flowPath[2]], [prefix + "2", prefix + "3"], "\(target): each flow keeps its branch at every hop")
            }
        }
    }

    // Acceptance 4: TCP traces reach a destination that drops ICMP echo; IPv6 as IPv4.
    func testTCPTracesReachAHostThatDropsICMPEchoOnIPv4AndIPv6() throws {
        let rules = ["198.18.70.0/24 path=198.18.130.1,198.18.130.2,198.18.130.3 icmp=filtered tcp=443:open,80:closed",
                     "2001:db8:70::/48 path=2001:db8:130::1,2001:db8:130::2,2001:db8:130::3 icmp=filtered tcp=443:open,80:closed"]
        let ((traced, checked), summary) = try simulate(rules) { namespace in
            (try trace(namespace, ["-c", "10", "-i", "0.05", "-W", "0.5", "--max-hops", "8",
                                   "198.18.70.9", "198.18.70.9:443,80", "2001:db8:70::9", "[2001:db8:70::9]:443,80"]),
             try check(namespace, ["-i", "0.05", "--duration", "2", "-W", "0.5", "198.18.70.9:443", "[2001:db8:70::9]:443"]))
        }
        for host in ["198.18.70.9", "2001:db8:70::9"] {
            // check traces a host given with a port by TCP: the path shows though ICMP is filtered.
            let text = try XCTUnwrap(checked[host]?["summary"] as? String, "no verdict for \(host): \(checked.keys)")
            XCTAssertTrue(text.contains("ICMP filtered") && text.contains("path clean: 4 hops"), "\(host): \(text)")
        }
        XCTAssertEqual(traced.status, 1, "the ICMP traces do not reach the hosts: exit status 1")
        let byKey = Dictionary(uniqueKeysWithValues: try traced.standardOutputLines().map { object in
            ("\(object["target"] as? String ?? "?"):\((object["port"] as? Int).map { "\($0)" } ?? "icmp")", object)
        })
        for (host, routers) in [("198.18.70.9", ["198.18.130.1", "198.18.130.2", "198.18.130.3"]),
                                ("2001:db8:70::9", ["2001:db8:130::1", "2001:db8:130::2", "2001:db8:130::3"])] {
            let icmp = try XCTUnwrap(byKey["\(host):icmp"], "no ICMP trace of \(host): \(byKey.keys)")
            XCTAssertEqual(icmp["reached"] as? Bool, false, "\(host) drops echo requests")
            XCTAssertEqual(try hops(icmp).compactMap { $0["address"] as? String }, routers, "the routers still answer TTL-limited echo")
            for port in ["443", "80"] {
                let tcp = try XCTUnwrap(byKey["\(host):\(port)"], "no TCP trace of \(host):\(port)")
                XCTAssertEqual(tcp["reached"] as? Bool, true, "\(host):\(port): a SYN-ACK (443) or RST (80) is the destination answering")
                let list = try hops(tcp)
                XCTAssertEqual(list.compactMap { $0["address"] as? String }, routers + [host])
                for hop in list { XCTAssertEqual(lost(hop), 0, "\(host):\(port) hop \(hop["hop"]!)") }
                // Kernel stamps at both ends of every SYN. "mixed" is allowed: the first
                // answers after this process's sockets switch receive stamps on may come
                // before the kernel's deferred work has (FIELD-NOTES "Timestamps").
                for hop in list {
                    XCTAssertTrue(["kernel", "mixed"].contains(hop["timestamp_source"] as? String), "\(host):\(port) hop \(hop["hop"]!): \(hop["timestamp_source"] ?? "none")")
                }
                XCTAssertEqual(list.last?["destination"] as? Bool, true)
            }
        }
        XCTAssertEqual(summary.kinds["echo_reply"], 0)
        XCTAssertGreaterThan(summary.kinds["syn_ack"] ?? 0, 0)
        XCTAssertGreaterThan(summary.kinds["rst"] ?? 0, 0)
    }
}
