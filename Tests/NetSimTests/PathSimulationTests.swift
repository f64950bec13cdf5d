@testable import NetSim
import XCTest

/// Multi-hop paths, without a TUN device: the path walk of the simulator on packets built
/// here, checked against what a real router does.
final class PathSimulationTests: XCTestCase {
    let client4 = SimulatedAddress("198.18.0.1")!
    let host4 = SimulatedAddress("198.18.50.9")!
    let client6 = SimulatedAddress("2001:db8::1")!
    let host6 = SimulatedAddress("2001:db8:50::9")!

    func echoRequest(_ source: SimulatedAddress, _ destination: SimulatedAddress, ttl: UInt8, checksumSeed: UInt16 = 0, sequence: UInt16 = 7,
                     payload: Int = 56, dontFragment: Bool = false) -> [UInt8] {
        var message: [UInt8] = [source.isIPv6 ? 128 : 8, 0, 0, 0, 0x12, 0x34, UInt8(sequence >> 8), UInt8(sequence & 0xff)]
        message += (0..<payload).map { UInt8(truncatingIfNeeded: $0) }
        message[8] = UInt8(checksumSeed >> 8)
        message[9] = UInt8(checksumSeed & 0xff)
        var packet = SimulatedPacket.ipPacket(source: source, destination: destination, transport: source.isIPv6 ? 58 : 1, ttl: ttl,
                                              transportMessage: message, checksumOffset: 2)
        if dontFragment && !source.isIPv6 {
            packet[6] |= 0x40
            packet[10] = 0; packet[11] = 0
            let sum = SimulatedPacket.checksum(Array(packet[0..<20]))
            packet[10] = UInt8(sum >> 8); packet[11] = UInt8(sum & 0xff)
        }
        return packet
    }

    func walker(_ rules: [String], seed: UInt64 = 1) throws -> PathWalker {
        PathWalker(rules: RuleSet(try rules.map { try HostRule(parsing: $0) }), seed: seed)
    }

    func walk(_ walker: inout PathWalker, _ packet: [UInt8], path: [[SimulatedAddress]], now: Int64 = 0) throws -> PathWalker.Outcome {
        var delays = Xoshiro256(seed: 9)
        return try packet.withUnsafeBytes { raw in
            walker.walk(raw, header: try SimulatedPacket.header(raw), path: path, now: now, delayGenerator: &delays)
        }
    }

    func path(_ text: String) throws -> [[SimulatedAddress]] {
        try HostRule(parsing: "198.18.50.0/24 path=\(text)").path
    }

    func testEachTTLExpiresAtItsRouterWhichQuotesTheOriginalHeader() throws {
        let route = try path("198.18.100.1,198.18.100.2,198.18.100.3")
        var paths = try walker(["198.18.100.0/24 delay=2ms ttl=250", "198.18.50.0/24 path=198.18.100.1,198.18.100.2,198.18.100.3"])
        for ttl in UInt8(1)...3 {
            let request = echoRequest(client4, host4, ttl: ttl)
            guard case .icmpError(let router, let hop, let bytes, let delay, let tooBig) = try walk(&paths, request, path: route) else {
                return XCTFail("TTL \(ttl) did not expire on the path")
            }
            XCTAssertEqual(router, SimulatedAddress("198.18.100.\(ttl)"))
            XCTAssertEqual(hop, Int(ttl))
            XCTAssertFalse(tooBig)
            XCTAssertEqual(delay, Int64(ttl) * 2_000_000, "the round trip to hop \(ttl) crosses \(ttl) routers' delay")
            let header = try bytes.withUnsafeBytes { try SimulatedPacket.header($0) }
            XCTAssertEqual(header.source, router)
            XCTAssertEqual(header.destination, client4)
            XCTAssertEqual(header.ttl, 250 - (ttl - 1), "the error crosses the routers before it")
            XCTAssertEqual(Array(bytes[20..<22]), [11, 0], "time exceeded in transit")
            XCTAssertEqual(SimulatedPacket.checksum(Array(bytes[20...])), 0)
            XCTAssertEqual(Array(bytes[28...]), request, "the whole small request is quoted, IP header first (its TTL as sent)")
        }
        let delivered = try walk(&paths, echoRequest(client4, host4, ttl: 4), path: route)
        XCTAssertEqual(delivered, .delivered(delay: 6_000_000, hops: 3))
        XCTAssertEqual(paths.summaries["198.18.100.3"]?.expired, 1)
        XCTAssertEqual(paths.summaries["198.18.100.3"]?.forwarded, 1)
        XCTAssertEqual(paths.summaries["198.18.100.1"]?.forwarded, 3)
    }

    func testIPv6HopLimitExpiresWithICMPv6TimeExceededAndQuoteLimitIsKept() throws {
        let route = try HostRule(parsing: "2001:db8:50::/48 path=2001:db8:100::1,2001:db8:100::2").path
        var paths = try walker(["2001:db8:100::2/128 quote=8"])
        let request = echoRequest(client6, host6, ttl: 2, payload: 200)
        guard case .icmpError(let router, _, let bytes, _, _) = try walk(&paths, request, path: route) else { return XCTFail("no error") }
        XCTAssertEqual(router, SimulatedAddress("2001:db8:100::2"))
        XCTAssertEqual(Array(bytes[40..<42]), [3, 0], "ICMPv6 time exceeded, hop limit exceeded in transit")
        XCTAssertEqual(Array(bytes[48...]), Array(request.prefix(48)), "quote=8: the IPv6 header and 8 bytes of the request")
        let pseudo = SimulatedPacket.pseudoHeader(source: router.bytes, destination: client6.bytes, transport: 58, length: bytes.count - 40)
        XCTAssertEqual(SimulatedPacket.checksum(Array(bytes[40...]), pseudoHeader: pseudo), 0)
    }

    func testLossAtARouterHidesThePacketFromEveryLaterHopAndIsTheSameForTheSameSeed() throws {
        let rules = ["198.18.100.4/32 loss=0.1"]
        let route = try path("198.18.100.1,198.18.100.2,198.18.100.3,198.18.100.4,198.18.100.5")
        func run(seed: UInt64) throws -> (outcomes: [Bool], paths: PathWalker) {
            var paths = try walker(rules, seed: seed)
            var outcomes: [Bool] = []
            for _ in 0..<5000 {
                if case .delivered = try walk(&paths, echoRequest(client4, host4, ttl: 64), path: route) { outcomes.append(true) } else { outcomes.append(false) }
            }
            return (outcomes, paths)
        }
        let (first, paths) = try run(seed: 42)
        let hop4 = try XCTUnwrap(paths.summaries["198.18.100.4"])
        let hop5 = try XCTUnwrap(paths.summaries["198.18.100.5"])
        XCTAssertEqual(paths.summaries["198.18.100.3"]?.dropped, 0)
        XCTAssertEqual(hop4.packetsIn, 5000)
        XCTAssertEqual(hop4.dropped + hop4.forwarded, 5000)
        XCTAssertEqual(hop5.packetsIn, hop4.forwarded, "hop 5 sees only what hop 4 let through")
        XCTAssertEqual(first.filter { !$0 }.count, hop4.dropped)
        // With this seed the count is fixed; the band only shows it is a 10 % loss.
        let band = SimulatorHarness.binomialInterval(trials: 5000, probability: 0.1, confidence: 0.99)
        XCTAssertTrue(band.contains(hop4.dropped), "\(hop4.dropped) drops of 5000, 99 % band \(band)")
        XCTAssertEqual(try run(seed: 42).outcomes, first, "the same seed drops the same packets")
        XCTAssertNotEqual(try run(seed: 43).outcomes, first, "another seed drops others")
    }

    func testICMPRateLimitHoldsBackTimeExceededButForwardsEverything() throws {
        let route = try path("198.18.100.1,198.18.100.2,198.18.100.3,198.18.100.4")
        var paths = try walker(["198.18.100.3/32 icmp-rate=1"])
        var sent = 0
        var limited = 0
        var delivered = 0
        // 10 probes a second for 3 s at TTL 3, and as many through the router.
        for tenth in 0..<30 {
            let now = Int64(tenth) * 100_000_000
            switch try walk(&paths, echoRequest(client4, host4, ttl: 3), path: route, now: now) {
            case .icmpError: sent += 1
            case .rateLimited: limited += 1
            default: XCTFail("TTL 3 must expire at hop 3")
            }
            if case .delivered = try walk(&paths, echoRequest(client4, host4, ttl: 64), path: route, now: now) { delivered += 1 }
        }
        XCTAssertEqual(sent, 3, "one time exceeded a second: at 0 s, 1 s and 2 s")
        XCTAssertEqual(limited, 27)
        XCTAssertEqual(delivered, 30, "rate limiting its own ICMP loses no forwarded packet")
        XCTAssertEqual(paths.summaries["198.18.100.3"], {
            var summary = RouterSummary()
            summary.packetsIn = 60; summary.forwarded = 30; summary.expired = 30; summary.timeExceeded = 3; summary.rateLimited = 27
            return summary
        }())
    }

    func testEqualCostBranchesFollowTheFlowHashConsistentlyAtEveryHop() throws {
        let route = try path("198.18.100.1,198.18.100.2|198.18.101.2,198.18.100.3|198.18.101.3,198.18.100.4")
        var paths = try walker([])
        var branchOfFlow: [UInt16: Set<String>] = [:]
        for flow in UInt16(0)..<64 {
            for ttl in UInt8(2)...3 {
                // Same flow (same first 4 ICMP bytes: the checksum is kept by the payload), other sequences.
                for sequence in UInt16(1)...3 {
                    var request = echoRequest(client4, host4, ttl: ttl, checksumSeed: flow, sequence: sequence)
                    // Make the checksum the flow's: adjust the payload word after the sequence.
                    request = withFlowChecksum(request, flow: flow)
                    guard case .icmpError(let router, _, _, _, _) = try walk(&paths, request, path: route) else { return XCTFail("no error") }
                    branchOfFlow[flow, default: []].insert(router.description.hasPrefix("198.18.101.") ? "b" : "a")
                }
            }
        }
        for (flow, branches) in branchOfFlow { XCTAssertEqual(branches.count, 1, "flow \(flow) took one branch at every hop") }
        let used = branchOfFlow.values.reduce(into: Set<String>()) { $0.formUnion($1) }
        XCTAssertEqual(used, ["a", "b"], "different flows spread over both branches")
        XCTAssertEqual(paths.summaries["198.18.100.1"]?.forwarded, 64 * 6)
    }

    /// Rewrites bytes 8-9 of the ICMP message so its checksum is `0x1000 + flow`, as a Paris
    /// traceroute does, whatever the sequence.
    func withFlowChecksum(_ packet: [UInt8], flow: UInt16) -> [UInt8] {
        var packet = packet
        var message = Array(packet[20...])
        message[2] = 0; message[3] = 0; message[8] = 0; message[9] = 0
        let target = 0x1000 &+ flow
        // ~sum(message) must become target: add the word that moves the one's-complement sum.
        let current = ~SimulatedPacket.checksum(message)   // one's-complement sum of the message
        let wanted = ~target
        var word = UInt32(wanted) &+ UInt32(~current)
        while word >> 16 != 0 { word = (word & 0xffff) + (word >> 16) }
        message[8] = UInt8(word >> 8); message[9] = UInt8(word & 0xff)
        message[2] = UInt8(target >> 8); message[3] = UInt8(target & 0xff)
        XCTAssertEqual(SimulatedPacket.checksum(message), 0)
        packet.replaceSubrange(20..., with: message)
        return packet
    }

    func testPacketsBiggerThanTheMTUGetTooBigWithTheNextHopMTU() throws {
        let route = try path("198.18.100.1,198.18.100.2")
        var paths = try walker(["198.18.100.2/32 mtu=1280"])
        guard case .icmpError(let router, let hop, let bytes, _, let tooBig) = try walk(&paths, echoRequest(client4, host4, ttl: 64, payload: 1300, dontFragment: true), path: route) else {
            return XCTFail("a 1328-byte DF packet must not pass a 1280 link")
        }
        XCTAssertEqual(router, SimulatedAddress("198.18.100.2"))
        XCTAssertEqual(hop, 2)
        XCTAssertTrue(tooBig)
        XCTAssertEqual(Array(bytes[20..<22]), [3, 4], "fragmentation needed and DF set")
        XCTAssertEqual(Array(bytes[26..<28]), [0x05, 0x00], "next-hop MTU 1280")
        XCTAssertEqual(bytes.count, 576, "quotes as much as fits 576 bytes")
        if case .icmpError = try walk(&paths, echoRequest(client4, host4, ttl: 64, payload: 1300), path: route) { XCTFail("without DF the router fragments") }
        if case .icmpError = try walk(&paths, echoRequest(client4, host4, ttl: 64, payload: 1000, dontFragment: true), path: route) { XCTFail("small enough to pass") }

        let route6 = try HostRule(parsing: "2001:db8:50::/48 path=2001:db8:100::1").path
        var paths6 = try walker(["2001:db8:100::1/128 mtu=1280"])
        guard case .icmpError(_, _, let bytes6, _, true) = try walk(&paths6, echoRequest(client6, host6, ttl: 64, payload: 1300), path: route6) else {
            return XCTFail("IPv6 never fragments on the way")
        }
        XCTAssertEqual(Array(bytes6[40..<42]), [2, 0], "ICMPv6 packet too big")
        XCTAssertEqual(Array(bytes6[44..<48]), [0, 0, 0x05, 0x00])
        XCTAssertEqual(bytes6.count, 1280)
    }

    func testPathRulesParseAndBadOnesSayWhatToChange() throws {
        let rule = try HostRule(parsing: "198.18.50.0/24 path=198.18.100.1,198.18.100.2|198.18.101.2 delay=1ms")
        XCTAssertEqual(rule.path, [[SimulatedAddress("198.18.100.1")!], [SimulatedAddress("198.18.100.2")!, SimulatedAddress("198.18.101.2")!]])
        let router = try HostRule(parsing: "198.18.100.3/32 icmp-rate=0.5/s mtu=1400 quote=8 ttl=255")
        XCTAssertEqual(router.icmpRatePerSecond, 0.5)
        XCTAssertEqual(router.mtu, 1400)
        XCTAssertEqual(router.quoteBytes, 8)
        let yaml = try RuleSet.rules(yaml: "rules:\n  - prefix: 198.18.50.0/24\n    path: 198.18.100.1,198.18.100.2\n")
        XCTAssertEqual(yaml.first?.path.count, 2)
        for (text, fragment) in [
            ("198.18.50.0/24 path=10.0.0.1", "outside 198.18.0.0/15"),
            ("198.18.50.0/24 path=2001:db8::5", "address family"),
            ("198.18.50.0/24 path=198.18.100.1,,198.18.100.3", "is not an address"),
            ("198.18.100.3/32 icmp-rate=0", "per second"),
            ("198.18.100.3/32 mtu=20", "68 to 65535"),
        ] {
            XCTAssertThrowsError(try HostRule(parsing: text), text) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(text): \(error)")
            }
        }
    }
}
