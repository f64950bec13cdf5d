import Foundation
import TestSupport
import XCTest

/// `netprobe trace` and `netprobe check` on real Linux routers (RouterChain: namespaces with
/// forwarding, veth links, nftables drops and rejects), held against the kernels' own
/// counters. Issue 27's acceptance, the kernel side: exact counts (3), named endings (4),
/// per-flow figures on two branches (5) and check's verdict on a lossy and on a
/// rate-limiting path (1). Counts and names only: no test asserts a time or a rate, and
/// nothing waits by sleeping (netprobe's own run is the only clock).
final class TraceRouterTests: XCTestCase {
    /// Small runs: 10 rounds 100 ms apart, unless a case needs the silent window's timing.
    static let quick = ["-c", "10", "-i", "100ms"]

    /// One `netprobe trace --json` run inside the prober: one object per target, in order.
    func trace(_ chain: RouterChain, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        let run = try chain.netprobe(["trace", "--json"] + arguments)
        XCTAssertTrue([0, 1].contains(run.status), "netprobe trace \(arguments): status \(run.status)\n\(run.standardError)", file: file, line: line)
        let objects = try run.jsonLines()
        XCTAssertEqual(objects.count, arguments.filter { $0.hasPrefix("198.18.") || $0.hasPrefix("2001:db8:") || $0.hasPrefix("[2001:db8:") }.count,
                       "one JSON object per target:\n\(run.standardOutput)", file: file, line: line)
        return objects
    }

    static func hops(_ trace: [String: Any]) -> [[String: Any]] { trace["hops"] as? [[String: Any]] ?? [] }
    static func hop(_ trace: [String: Any], _ number: Int) -> [String: Any]? { hops(trace).first { $0["hop"] as? Int == number } }
    static func int(_ object: [String: Any]?, _ key: String) -> Int? { object?[key] as? Int }

    // MARK: acceptance 3: exact counts

    /// Destination `sent` is rounds x flows, and every router's sent and received are what
    /// the prober's kernel sent with that TTL and got back from that router.
    func checkCountsMatchTheKernel(protocol tcp: Bool, family: RouterChain.Family, flows: Int) throws {
        let chain = try RouterChain.make(RouterChain.Options(routers: 3))
        let address = chain.destination(family)
        let target = tcp ? (family == .ipv4 ? "\(address):\(chain.tcpPort)" : "[\(address)]:\(chain.tcpPort)") : address
        let rounds = 10
        guard let result = try trace(chain, Self.quick + ["--flows", String(flows), target]).first else { return }
        let label = "\(tcp ? "tcp" : "icmp") \(family) flows \(flows)"
        XCTAssertEqual(result["reached"] as? Bool, true, label)
        let destination = Self.hop(result, chain.destinationHop)
        XCTAssertEqual(destination?["destination"] as? Bool, true, "\(label): the destination is hop \(chain.destinationHop)")
        // Contract 27: one probe per round and flow counts at the destination.
        XCTAssertEqual(Self.int(destination, "sent"), rounds * flows, "\(label): destination sent == rounds x flows")
        XCTAssertEqual(Self.int(destination, "received"), rounds * flows, "\(label): a clean path answers every probe at the destination")
        XCTAssertEqual(try chain.probesSent(ttl: chain.destinationHop), rounds * flows, "\(label): the kernel sent rounds x flows at the destination's TTL")
        XCTAssertGreaterThanOrEqual(try chain.replies(from: address), rounds * flows, "\(label): the destination's answers reached the prober")
        for number in 1...3 {
            let hop = Self.hop(result, number)
            XCTAssertEqual(hop?["address"] as? String, chain.routerAddress(hop: number, family), "\(label) hop \(number)")
            XCTAssertEqual(Self.int(hop, "sent"), try chain.probesSent(ttl: number), "\(label) hop \(number): sent == probes the kernel sent with TTL \(number)")
            XCTAssertEqual(Self.int(hop, "sent"), rounds * flows, "\(label) hop \(number): one probe per round and flow")
            XCTAssertEqual(Self.int(hop, "received"), try chain.timeExceeded(from: chain.routerAddress(hop: number, family)),
                           "\(label) hop \(number): received == time exceeded the kernel got from router \(number)")
        }
    }

    func testICMPCountsEqualTheKernelsOneFlow() throws {
        try checkCountsMatchTheKernel(protocol: false, family: .ipv4, flows: 1)
    }

    func testICMPCountsEqualTheKernelsFourFlows() throws {
        try checkCountsMatchTheKernel(protocol: false, family: .ipv4, flows: 4)
        try checkCountsMatchTheKernel(protocol: false, family: .ipv6, flows: 4)
    }

    func testTCPCountsEqualTheKernelsOneFlow() throws {
        try checkCountsMatchTheKernel(protocol: true, family: .ipv4, flows: 1)
    }

    func testTCPCountsEqualTheKernelsFourFlows() throws {
        try checkCountsMatchTheKernel(protocol: true, family: .ipv4, flows: 4)
        try checkCountsMatchTheKernel(protocol: true, family: .ipv6, flows: 4)
    }

    // MARK: acceptance 4: named endings

    /// The marks of contract 27 (as mtr / traceroute show them).
    static func mark(code: Int, _ family: RouterChain.Family) -> String {
        switch (family, code) {
        case (.ipv4, 0), (.ipv4, 6), (.ipv4, 11), (.ipv6, 0), (.ipv6, 2): return "!N"
        case (.ipv4, 1), (.ipv4, 7), (.ipv4, 12), (.ipv6, 3): return "!H"
        case (.ipv4, 2), (.ipv4, 3), (.ipv6, 4): return "!P"
        case (.ipv4, 9), (.ipv4, 10), (.ipv4, 13), (.ipv6, 1), (.ipv6, 5), (.ipv6, 6): return "!X"
        case (.ipv4, 4): return "!F"
        default: return "!\(code)"
        }
    }

    /// The nftables rejects, all at hop 3: the kernel sends each without a limit (icmp_ratelimit 0).
    static let rejects: [RouterChain.Unreachable] = [
        .init(hop: 3, kind: .rejectNet), .init(hop: 3, kind: .rejectHost), .init(hop: 3, kind: .rejectProtocol),
        .init(hop: 3, kind: .rejectPort), .init(hop: 3, kind: .rejectAdminProhibited),
    ]

    /// The route types, at hops of their own: an IPv4 router answers route errors from a
    /// bucket of 5 per source (RouterChain.UnreachableKind.unreachableRoute).
    static let routes: [RouterChain.Unreachable] = [.init(hop: 2, kind: .unreachableRoute), .init(hop: 3, kind: .prohibitRoute)]

    /// Ending `index` of the chain's options is named "unreachable" at its hop, with the code
    /// the kernel sent and its mark, and the hop's unreachables are not replies.
    func checkUnreachableEnding(_ result: [String: Any], chain: RouterChain, index: Int, family: RouterChain.Family, rounds: Int,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let ending = chain.options.unreachables[index]
        let source = chain.unreachableSource(family, unreachable: index)
        let code = ending.kind.icmpCode(family)
        let mark = Self.mark(code: code, family)
        let label = "\(family) \(ending.kind) at hop \(ending.hop)"
        let kernel = try chain.unreachables()
        XCTAssertTrue(kernel.contains { $0.address == source && $0.code == code && $0.count > 0 },
                      "\(label): the kernel got code \(code) from \(source): \(kernel)", file: file, line: line)
        XCTAssertEqual(result["reached"] as? Bool, false, label, file: file, line: line)
        XCTAssertEqual(result["ending"] as? String, "unreachable", label, file: file, line: line)
        let detail = result["ending_detail"] as? [String: Any]
        XCTAssertEqual(detail?["hop"] as? Int, ending.hop, label, file: file, line: line)
        XCTAssertEqual(detail?["address"] as? String, source, label, file: file, line: line)
        XCTAssertEqual(detail?["icmp_code"] as? Int, code, label, file: file, line: line)
        XCTAssertEqual(detail?["mark"] as? String, mark, label, file: file, line: line)
        let hop = Self.hop(result, ending.hop)
        XCTAssertEqual(Self.int(hop, "received"), 0, "\(label): an unreachable is not a reply", file: file, line: line)
        XCTAssertEqual(Self.int(hop, "sent"), rounds, "\(label): one probe per round counts at the ending hop", file: file, line: line)
        XCTAssertEqual(Self.int(hop, "unreachable"), rounds, "\(label): every probe of the hop was answered unreachable", file: file, line: line)
        XCTAssertEqual((hop?["unreachable_marks"] as? [String: Any])?[mark] as? Int, rounds, label, file: file, line: line)
        XCTAssertEqual(hop?["silent"] as? Bool, false, label, file: file, line: line)
    }

    /// Every nftables reject code ends its trace as "unreachable" at hop 3 (one trace run,
    /// a destination address each).
    func checkRejectCodesAreNamed(_ family: RouterChain.Family) throws {
        var options = RouterChain.Options(routers: 4)
        options.unreachables = Self.rejects
        let chain = try RouterChain.make(options)
        let rounds = 5
        let targets = options.unreachables.indices.map { chain.destination(family, unreachable: $0) }
        let results = try trace(chain, ["-c", String(rounds), "-i", "100ms"] + targets)
        for (index, result) in results.enumerated() {
            try checkUnreachableEnding(result, chain: chain, index: index, family: family, rounds: rounds)
        }
    }

    func testEachIPv4RejectCodeIsNamed() throws {
        try checkRejectCodesAreNamed(.ipv4)
    }

    func testEachIPv6RejectCodeIsNamed() throws {
        try checkRejectCodesAreNamed(.ipv6)
    }

    /// `unreachable` and `prohibit` routes (!H and !X; IPv6 !N and !X). Each trace stops at
    /// the hop after the ending (-m) for 2 rounds: 4 probes reach the route, within an IPv4
    /// router's burst of 5 route errors.
    func testRouteUnreachablesAreNamed() throws {
        var options = RouterChain.Options(routers: 4)
        options.unreachables = Self.routes
        let chain = try RouterChain.make(options)
        for family in RouterChain.Family.allCases {
            for (index, ending) in options.unreachables.enumerated() {
                let rounds = 2
                guard let result = try trace(chain, ["-c", String(rounds), "-i", "100ms", "-m", String(ending.hop + 1),
                                                     chain.destination(family, unreachable: index)]).first else { continue }
                try checkUnreachableEnding(result, chain: chain, index: index, family: family, rounds: rounds)
            }
        }
    }

    /// The text report's headline names the ending too (contract 27's wording).
    func testTheHeadlineNamesTheUnreachable() throws {
        var options = RouterChain.Options(routers: 4)
        options.unreachables = [.init(hop: 2, kind: .rejectHost)]
        let chain = try RouterChain.make(options)
        let address = chain.destination(.ipv4, unreachable: 0)
        let run = try chain.netprobe(["trace", "-c", "3", "-i", "100ms", address])
        let headline = run.standardOutput.split(separator: "\n").first.map(String.init) ?? ""
        XCTAssertTrue(headline.contains("unreachable at hop 2, \(chain.routerAddress(hop: 2, .ipv4)) (!H"), headline)
    }

    /// A router that must resolve a neighbour first answers unreachable ~3 s after the probe:
    /// with the default -W 1s the trace still ends "unreachable" there.
    func testLateUnreachableAfterAFailedNeighbourLookupIsNamed() throws {
        var options = RouterChain.Options(routers: 3)
        options.unreachables = [.init(hop: 3, kind: .neighbourLookupFails)]
        let chain = try RouterChain.make(options)
        let targets = RouterChain.Family.allCases.map { chain.destination($0, unreachable: 0) }
        let results = try trace(chain, ["-c", "3", "-i", "100ms"] + targets)
        for (family, result) in zip(RouterChain.Family.allCases, results) {
            let source = chain.unreachableSource(family, unreachable: 0)
            let code = RouterChain.UnreachableKind.neighbourLookupFails.icmpCode(family)
            // The kernel's count, polled: the unreachable comes ~3 s after its probe and may
            // arrive after netprobe has ended.
            let sent = TestEnvironment.eventually(within: 30, every: 0.1) {
                ((try? chain.unreachables()) ?? []).contains { $0.address == source && $0.code == code && $0.count > 0 }
            }
            XCTAssertTrue(sent, "\(family): router 2 sent host unreachable after its neighbour lookup: \((try? chain.unreachables()) ?? [])")
            XCTAssertEqual(result["ending"] as? String, "unreachable", "\(family)")
            let detail = result["ending_detail"] as? [String: Any]
            XCTAssertEqual(detail?["hop"] as? Int, 3, "\(family)")
            XCTAssertEqual(detail?["address"] as? String, source, "\(family)")
            XCTAssertEqual(detail?["mark"] as? String, "!H", "\(family)")
            XCTAssertEqual(detail?["icmp_code"] as? Int, code, "\(family)")
            XCTAssertEqual(Self.int(Self.hop(result, 3), "received"), 0, "\(family): a late unreachable is not a reply")
        }
    }

    /// Two routers that route the destination to each other: "routing_loop" with both.
    func testRoutingLoopIsNamedWithBothAddresses() throws {
        var options = RouterChain.Options(routers: 4)
        options.loopAtHop = 2
        let chain = try RouterChain.make(options)
        let results = try trace(chain, ["-c", "3", "-i", "100ms", "-m", "12"] + RouterChain.Family.allCases.map { chain.destination($0) })
        for (family, result) in zip(RouterChain.Family.allCases, results) {
            XCTAssertEqual(result["reached"] as? Bool, false, "\(family)")
            XCTAssertEqual(result["ending"] as? String, "routing_loop", "\(family)")
            let detail = result["ending_detail"] as? [String: Any]
            XCTAssertEqual(Set(detail?["addresses"] as? [String] ?? []), Set(chain.loopAddresses(family)), "\(family)")
            // From the first hop that shows one of the looping addresses.
            let first = Self.hops(result).first { chain.loopAddresses(family).contains($0["address"] as? String ?? "") }
            XCTAssertEqual(detail?["from_hop"] as? Int, first?["hop"] as? Int, "\(family)")
        }
    }

    /// -m 3 on a path of 6 hops: "max_hops", and nothing was sent past TTL 3.
    func testMaxHopsShortOfTheTargetIsNamed() throws {
        let chain = try RouterChain.make(RouterChain.Options(routers: 5))
        guard let result = try trace(chain, ["-c", "3", "-i", "100ms", "-m", "3", chain.destination(.ipv4)]).first else { return }
        XCTAssertEqual(try chain.probesSentPerTTL().keys.max(), 3, "the kernel sent nothing past TTL 3")
        XCTAssertEqual(result["reached"] as? Bool, false)
        XCTAssertEqual(Self.hops(result).count, 3)
        XCTAssertEqual(result["ending"] as? String, "max_hops")
        XCTAssertEqual((result["ending_detail"] as? [String: Any])?["max_hops"] as? Int, 3)
    }

    /// A destination that drops echo requests: "filtered", its silent hops listed, and the
    /// TTLs past the silent window probed in the first two rounds at most (the destination's
    /// own counter agrees with what left the prober).
    func testFilteredDestinationIsNamedAndProbingPastTheSilentWindowStops() throws {
        var options = RouterChain.Options(routers: 3)
        options.destinationDropsEcho = true
        let chain = try RouterChain.make(options)
        let rounds = 5
        // Rounds 1 s apart and a 300 ms timeout: rounds 1 and 2 have expired before round 3.
        guard let result = try trace(chain, ["-c", String(rounds), "-i", "1s", "-W", "300ms", chain.destination(.ipv4)]).first else { return }
        let sent = try chain.probesSentPerTTL()
        let lastResponding = 3, maxHops = 30
        XCTAssertEqual(try chain.destinationEchoRequests(), sent.filter { $0.key > lastResponding }.values.reduce(0, +),
                       "every probe past hop 3 reached the destination (and was dropped there)")
        XCTAssertGreaterThan(try chain.counter("dropped", in: chain.destinationNamespace, table: RouterChain.faultTable), 0)
        let beyondWindow = sent.filter { $0.key > lastResponding + 3 }.values.reduce(0, +)
        XCTAssertGreaterThan(beyondWindow, 0, "the first round probes every TTL")
        XCTAssertLessThanOrEqual(beyondWindow, 2 * (maxHops - lastResponding - 3), "TTLs past hop \(lastResponding + 3) in the first 2 rounds at most: \(sent.sorted { $0.key < $1.key })")
        for ttl in (lastResponding + 1)...(lastResponding + 3) {
            XCTAssertEqual(sent[ttl], rounds, "the silent window (TTL \(ttl)) is probed every round")
        }
        XCTAssertEqual(result["reached"] as? Bool, false)
        XCTAssertEqual(result["ending"] as? String, "filtered")
        let detail = result["ending_detail"] as? [String: Any]
        XCTAssertEqual(detail?["last_responding_hop"] as? Int, lastResponding)
        XCTAssertEqual(detail?["silent_hops"] as? [Int], [4, 5, 6])
        for number in 4...6 {
            let hop = Self.hop(result, number)
            XCTAssertNotNil(hop, "silent hop \(number) is listed")
            XCTAssertEqual(hop?["silent"] as? Bool, true, "hop \(number)")
            XCTAssertEqual(Self.int(hop, "received"), 0, "hop \(number)")
        }
    }

    // MARK: acceptance 5: per-flow figures on two branches

    /// `--flows 8` TCP over two branches after hop 2, the second dropping every 5th probe
    /// (before its TTL check): the flows that lose are exactly those through the second
    /// branch, each losing what the kernel dropped of it, and all of them together what the
    /// drop rule counted. nftables gives new flows the branches alternately (4 each).
    func testPerFlowLossFollowsTheLossyBranch() throws {
        try checkPerFlowLossFollowsTheLossyBranch(.alternatingFlows)
    }

    /// The same through the kernel's own ECMP (a multipath route, L4 hash): the split
    /// follows the flows' random source ports, so only the figures are held to the kernel's
    /// counters, not the 4 and 4.
    func testPerFlowLossFollowsTheLossyBranchUnderKernelECMP() throws {
        try checkPerFlowLossFollowsTheLossyBranch(.kernelHash)
    }

    func checkPerFlowLossFollowsTheLossyBranch(_ balancing: RouterChain.Balancing) throws {
        var options = RouterChain.Options(routers: 4)
        options.branches = .init(afterHop: 2, balancing: balancing, secondBranchLoss: .everyNth(5))
        let chain = try RouterChain.make(options)
        let destinationHop = chain.destinationHop  // 5: r1, r2, r3 or its twin, r4
        // -m at the destination's hop: no probe goes past it, so every drop is a counted probe.
        guard let result = try trace(chain, Self.quick + ["--flows", "8", "-m", String(destinationHop), "\(chain.destination(.ipv4)):\(chain.tcpPort)"]).first else { return }
        let kernel = try chain.branchFlows()
        XCTAssertEqual(kernel.first.count + kernel.second.count, 8, "every flow took one branch: \(kernel)")
        if balancing == .alternatingFlows {
            XCTAssertEqual(kernel.first.count, 4, "the first branch carried 4 flows: \(kernel.first)")
            XCTAssertEqual(kernel.second.count, 4, "the second branch carried 4 flows: \(kernel.second)")
        }
        let dropped = try chain.droppedOnSecondBranch()
        XCTAssertEqual(dropped, kernel.droppedOnSecond.values.reduce(0, +), "the per-flow drop counts add up")
        if !kernel.second.isEmpty { XCTAssertGreaterThan(dropped, 0) }
        XCTAssertEqual(result["reached"] as? Bool, true)

        // Which branch each flow took: its path's hop 3. A flow with no answer at hop 3 lost
        // every probe there, which only the second branch does (the first drops nothing:
        // the kernel's counters, above): with the kernel's hash, 5 flows on the second
        // branch send in the same order every round, so "every 5th probe" is always the same
        // flow's.
        let first = chain.routerAddress(hop: 3, .ipv4), second = chain.twinAddress(.ipv4)
        let paths = result["flow_paths"] as? [[String: Any]] ?? []
        XCTAssertEqual(paths.count, 8)
        var branchOfFlow: [Int: String] = [:]
        for path in paths {
            guard let flow = path["flow"] as? Int, let hops = path["hops"] as? [Any], hops.count >= 3 else { continue }
            branchOfFlow[flow] = hops[2] as? String ?? second
        }
        XCTAssertEqual(branchOfFlow.values.filter { $0 == first }.count, kernel.first.count, "\(branchOfFlow)")
        XCTAssertEqual(branchOfFlow.values.filter { $0 == second }.count, kernel.second.count, "\(branchOfFlow)")

        // Each flow's probes lost from hop 3 on (the per-flow figures of contract 27).
        var lostOfFlow: [Int: Int] = [:]
        for number in 3...destinationHop {
            let entries = Self.hop(result, number)?["flows"] as? [[String: Any]] ?? []
            XCTAssertFalse(entries.isEmpty, "hop \(number) has per-flow figures")
            for entry in entries {
                guard let flow = entry["flow"] as? Int, let sent = entry["sent"] as? Int, let received = entry["received"] as? Int else { continue }
                lostOfFlow[flow, default: 0] += sent - received - (entry["unreachable"] as? Int ?? 0)
                if branchOfFlow[flow] == first {
                    XCTAssertEqual(entry["loss_percent"] as? Double, 0, "flow \(flow) at hop \(number) goes through the clean branch")
                }
            }
        }
        guard !lostOfFlow.isEmpty else { return }
        for (flow, branch) in branchOfFlow where branch == first {
            XCTAssertEqual(lostOfFlow[flow], 0, "flow \(flow) (first branch) loses nothing")
        }
        let secondLosses = branchOfFlow.filter { $0.value == second }.map { lostOfFlow[$0.key] ?? 0 }.sorted()
        let kernelLosses = (kernel.second.keys.map { kernel.droppedOnSecond[$0] ?? 0 }).sorted()
        XCTAssertEqual(secondLosses, kernelLosses, "the second branch's flows lose what the kernel dropped of each")
        XCTAssertEqual(lostOfFlow.values.reduce(0, +), dropped, "all probes lost past the branch point are the drop rule's count")
    }

    // MARK: acceptance 1: check's verdict

    /// 10 % loss from hop 4 (every 10th probe, nftables): a default check names hop 4 and
    /// never says it is not the network.
    func testCheckNamesTheHopWhereLossStarts() throws {
        var options = RouterChain.Options(routers: 5)
        options.loss = .init(fromHop: 4, pattern: .everyNth(10))
        let chain = try RouterChain.make(options)
        let run = try chain.netprobe(["check", "--json", chain.destination(.ipv4)])
        let objects = try run.jsonLines()
        XCTAssertEqual(objects.count, 1, run.standardOutput + run.standardError)
        guard let verdict = objects.first else { return }
        XCTAssertGreaterThan(try chain.droppedByLoss(), 0, "hop 4 dropped probes")
        let summary = verdict["summary"] as? String ?? ""
        XCTAssertNotEqual(verdict["verdict"] as? String, "neither", summary)
        XCTAssertFalse(summary.contains("not the network"), summary)
        XCTAssertTrue(summary.contains("hop 4"), summary)
        XCTAssertEqual((verdict["path"] as? [String: Any])?["loss_start_hop"] as? Int, 4, summary)
    }

    /// A clean path whose hop 2 keeps the kernel's ICMP rate limit: check does not blame the
    /// network (the hop really did answer fewer probes than it was sent).
    func testCheckDoesNotBlameTheNetworkForARateLimitingHop() throws {
        var options = RouterChain.Options(routers: 5)
        options.rateLimitingHops = [2]
        let chain = try RouterChain.make(options)
        let run = try chain.netprobe(["check", "--json", chain.destination(.ipv4)])
        let objects = try run.jsonLines()
        XCTAssertEqual(objects.count, 1, run.standardOutput + run.standardError)
        guard let verdict = objects.first else { return }
        XCTAssertLessThan(try chain.timeExceeded(from: chain.routerAddress(hop: 2, .ipv4)), try chain.probesSent(ttl: 2), "hop 2 rate-limited its time exceeded")
        XCTAssertNotEqual(verdict["verdict"] as? String, "network", verdict["summary"] as? String ?? "")
    }
}
