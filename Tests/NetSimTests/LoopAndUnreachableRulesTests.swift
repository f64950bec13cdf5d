@testable import NetSim
import XCTest

/// The rule keys for routing loops (`loop`) and refusals (`unreachable` with a code, a hop
/// and a delay): how they are spelt, what a wrong spelling is told, and what the path walk
/// makes of them, on packets built here (no TUN device).
final class LoopAndUnreachableRulesTests: XCTestCase {
    let client4 = SimulatedAddress("198.18.0.1")!
    let host4 = SimulatedAddress("198.18.60.9")!
    let client6 = SimulatedAddress("2001:db8::1")!
    let host6 = SimulatedAddress("2001:db8:60::9")!

    func address(_ text: String) -> SimulatedAddress { SimulatedAddress(text)! }

    // MARK: parsing

    func testLoopFollowsThePathInTheFlagSyntaxAndAsAYAMLListOrCommaList() throws {
        let flag = try HostRule(parsing: "198.18.60.0/24 path=198.18.160.1,198.18.160.2 loop=198.18.160.3,198.18.160.4")
        XCTAssertEqual(flag.path, [[address("198.18.160.1")], [address("198.18.160.2")]])
        XCTAssertEqual(flag.loop, [address("198.18.160.3"), address("198.18.160.4")])
        let yaml = try RuleSet.rules(yaml: """
            rules:
              - prefix: 198.18.60.0/24
                path: [198.18.160.1, 198.18.160.2]
                loop: [198.18.160.3, 198.18.160.4]
              - prefix: 2001:db8:60::/48
                path: 2001:db8:160::1,2001:db8:160::2|2001:db8:161::2
                loop: 2001:db8:160::3,2001:db8:160::4,2001:db8:160::5
              - prefix: 198.18.61.0/24
                path: [198.18.161.1, [198.18.161.2, 198.18.162.2]]
            """, file: "rules.yaml")
        XCTAssertEqual(yaml[0], flag, "a YAML list is the flag's comma list")
        XCTAssertEqual(yaml[1].loop.map(\.description), ["2001:db8:160::3", "2001:db8:160::4", "2001:db8:160::5"])
        XCTAssertEqual(yaml[1].path.last?.count, 2)
        XCTAssertEqual(yaml[2].path, [[address("198.18.161.1")], [address("198.18.161.2"), address("198.18.162.2")]], "a list in a path list: equal-cost branches")
        XCTAssertTrue(yaml[2].loop.isEmpty)
    }

    func testUnreachableTakesACodeAHopAndADelayAndTrueStillMeansTheHostSaysHostUnreachable() throws {
        let path = "path=198.18.160.1,198.18.160.2,198.18.160.3"
        for (text, expected) in [
            ("198.18.60.0/24 unreachable", UnreachableAnswer(code: .host, place: .host, delay: 0)),
            ("198.18.60.0/24 unreachable=true", UnreachableAnswer(code: .host, place: .host, delay: 0)),
            ("198.18.60.0/24 unreachable=prohibited", UnreachableAnswer(code: .prohibited, place: .host, delay: 0)),
            ("198.18.60.0/24 \(path) unreachable=code:net,at-hop:2", UnreachableAnswer(code: .net, place: .atHop(2), delay: 0)),
            ("198.18.60.0/24 \(path) unreachable=host,after-hop:3,delay:3s", UnreachableAnswer(code: .host, place: .afterHop(3), delay: 3_000_000_000)),
            ("198.18.60.0/24 unreachable=delay:250ms,protocol", UnreachableAnswer(code: .protocol, place: .host, delay: 250_000_000)),
            ("198.18.60.0/24 unreachable=13", UnreachableAnswer(code: .prohibited, place: .host, delay: 0)),
            ("198.18.60.0/24 unreachable=9", UnreachableAnswer(code: .code(9), place: .host, delay: 0)),
            ("2001:db8:60::/48 unreachable=1", UnreachableAnswer(code: .prohibited, place: .host, delay: 0)),
            ("2001:db8:60::/48 unreachable=3", UnreachableAnswer(code: .host, place: .host, delay: 0)),
            ("2001:db8:60::/48 unreachable=port", UnreachableAnswer(code: .port, place: .host, delay: 0)),
        ] {
            XCTAssertEqual(try HostRule(parsing: text).unreachable, expected, text)
        }
        XCTAssertNil(try HostRule(parsing: "198.18.60.0/24").unreachable)

        let yaml = try RuleSet.rules(yaml: """
            rules:
              - prefix: 198.18.60.0/24
                path: [198.18.160.1, 198.18.160.2, 198.18.160.3, 198.18.160.4, 198.18.160.5]
                unreachable: {code: host, after-hop: 5, delay: 3s}
              - prefix: 198.18.62.0/24
                path: [198.18.162.1, 198.18.162.2]
                unreachable:
                  code: prohibited
                  at-hop: 2
              - prefix: 198.18.63.0/24
                unreachable: true
              - prefix: 198.18.64.0/24
                unreachable: false
              - prefix: 2001:db8:65::/48
                unreachable: net
            """, file: "rules.yaml")
        XCTAssertEqual(yaml.map(\.unreachable), [
            UnreachableAnswer(code: .host, place: .afterHop(5), delay: 3_000_000_000),
            UnreachableAnswer(code: .prohibited, place: .atHop(2), delay: 0),
            UnreachableAnswer(code: .host, place: .host, delay: 0),
            nil,
            UnreachableAnswer(code: .net, place: .host, delay: 0),
        ])
    }

    func testBadLoopAndUnreachableFlagsSayWhatToChange() {
        let path = "path=198.18.160.1,198.18.160.2"
        for (text, fragment) in [
            ("198.18.60.0/24 loop=198.18.160.3", "loop='198.18.160.3': a loop goes round 2 to 16 routers"),
            ("198.18.60.0/24 loop=198.18.160.3,198.18.160.3", "198.18.160.3 appears twice: a router is in a loop once"),
            ("198.18.60.0/24 loop=198.18.160.3,10.0.0.1", "router 10.0.0.1 is outside 198.18.0.0/15 and 2001:db8::/32"),
            ("198.18.60.0/24 loop=198.18.160.3,2001:db8::5", "router 2001:db8::5 is not of the prefix's address family"),
            ("198.18.60.0/24 loop=198.18.160.3|198.18.161.3,198.18.160.4", "'198.18.160.3|198.18.161.3' is not an address: write R1,R2"),
            ("198.18.60.0/24 unreachable=sideways", "unreachable='sideways': 'sideways' is not a code: write net, host, protocol, port, prohibited or a number 0 to 255"),
            ("198.18.60.0/24 unreachable=300", "'300' is not a code"),
            ("2001:db8:60::/48 unreachable=protocol", "ICMPv6 has no protocol unreachable (IPv4 code 2): use port, prohibited, net, host or a number for 2001:db8:60::/48"),
            ("198.18.60.0/24 \(path) unreachable=host,after-hop:3", "unreachable: after-hop:3, but the path has 2 routers: name a hop of the path (1 to 2), or none for the hosts themselves"),
            ("198.18.60.0/24 unreachable=host,at-hop:1", "unreachable: at-hop:1 names a router, but the rule has no path: give it one (path=R1,R2), or name no hop for the hosts themselves"),
            ("198.18.60.0/24 \(path) unreachable=host,at-hop:0", "at-hop '0': write the hop of a router of the path, 1 to 64"),
            ("198.18.60.0/24 \(path) unreachable=host,at-hop:1,after-hop:2", "at-hop or after-hop given twice"),
            ("198.18.60.0/24 unreachable=host,net", "code given twice"),
            ("198.18.60.0/24 unreachable=host,delay:soon", "delay 'soon': write a duration up to 60s with a unit, e.g. delay:3s"),
            ("198.18.60.0/24 unreachable=host,delay:2min", "delay '2min'"),
            ("198.18.60.0/24 unreachable=colour:red", "unknown key 'colour': use code, at-hop or after-hop, and delay, e.g. unreachable=host,after-hop:5,delay:3s"),
            ("198.18.60.0/24 \(path) loop=198.18.160.3,198.18.160.4 unreachable", "loop and unreachable exclude each other"),
            ("198.18.60.0/24 lop=198.18.160.3,198.18.160.4", "unknown key 'lop': use delay, jitter, loss, drop, ttl, tcp, tcp-default, icmp, unreachable, path, loop, icmp-rate, mtu, quote, mpls or mpls-placement"),
        ] {
            XCTAssertThrowsError(try HostRule(parsing: text), text) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(text): \(error)")
            }
        }
    }

    func testBadYAMLRulesNameTheFileTheLineAndTheRule() {
        for (yaml, expected) in [
            ("""
            rules:
              - prefix: 198.18.60.0/24
                delay: 1ms
              - prefix: 198.18.61.0/24
                path: [198.18.161.1, 198.18.161.2]
                unreachable: {code: sideways, after-hop: 2}
            """, "rules.yaml:6: rule 2: unreachable='code:sideways,after-hop:2': 'sideways' is not a code"),
            ("""
            rules:
              - prefix: 198.18.61.0/24
                path: [198.18.161.1]
                loop:
                  - 198.18.161.2
            """, "rules.yaml:4: rule 1: loop='198.18.161.2': a loop goes round 2 to 16 routers"),
            ("""
            rules:
              - prefix: 198.18.61.0/24

                unreachable: {code: host, at-hop: 3}
            """, "rules.yaml:2: rule 1: unreachable: at-hop:3 names a router, but the rule has no path"),
            ("""
            rules:
              - prefix: 198.18.61.0/24
                loop: [[198.18.161.2, [198.18.161.3]]]
            """, "rules.yaml:3: rule 1: loop must be a value, a list or a mapping of values"),
            ("""
            rules:
              - prefix: 198.18.61.0/24
              - 198.18.62.0/24
            """, "rules.yaml:3: rule 2 is not a mapping"),
            ("""
            rules:
              - delay: 10ms
            """, "rules.yaml:2: rule 1: a rule needs 'prefix: ADDRESS/LENGTH'"),
            ("hosts: []\n", "rules.yaml:1: expected a mapping with a 'rules:' list"),
        ] {
            XCTAssertThrowsError(try RuleSet.rules(yaml: yaml, file: "rules.yaml"), expected) { error in
                XCTAssertTrue("\(error)".hasPrefix(expected), "expected '\(expected)', got '\(error)'")
            }
        }
    }

    // MARK: the path walk

    func walker(_ rules: [String], seed: UInt64 = 1) throws -> PathWalker {
        PathWalker(rules: RuleSet(try rules.map { try HostRule(parsing: $0) }), seed: seed)
    }

    func echoRequest(_ source: SimulatedAddress, _ destination: SimulatedAddress, ttl: UInt8, sequence: UInt16 = 7, payload: Int = 32) -> [UInt8] {
        let message: [UInt8] = [source.isIPv6 ? 128 : 8, 0, 0, 0, 0x12, 0x34, UInt8(sequence >> 8), UInt8(sequence & 0xff)] + (0..<payload).map { UInt8(truncatingIfNeeded: $0) }
        return SimulatedPacket.ipPacket(source: source, destination: destination, transport: source.isIPv6 ? 58 : 1, ttl: ttl, transportMessage: message, checksumOffset: 2)
    }

    func walk(_ walker: inout PathWalker, _ packet: [UInt8], rule: HostRule, now: Int64 = 0) throws -> PathWalker.Outcome {
        var delays = Xoshiro256(seed: 9)
        return try packet.withUnsafeBytes { raw in
            walker.walk(raw, header: try SimulatedPacket.header(raw), path: rule.path, loop: rule.loop,
                        refusal: rule.routerRefusal, now: now, delayGenerator: &delays)
        }
    }

    func testALoopAnswersEachTTLPastThePathFromItsRoutersInTurnAndNeverDeliversEvenAtTTL255() throws {
        for v6 in [false, true] {
            let (client, host) = v6 ? (client6, host6) : (client4, host4)
            let router = { (n: Int) in v6 ? "2001:db8:160::\(n)" : "198.18.160.\(n)" }
            let rule = try HostRule(parsing: "\(v6 ? "2001:db8:60::/48" : "198.18.60.0/24") path=\(router(1)),\(router(2)) loop=\(router(3)),\(router(4))")
            var paths = try walker(["\(v6 ? "2001:db8:160::/48" : "198.18.160.0/24") delay=1ms ttl=255"])
            var answering: [String] = []
            var returnTTLs: [String: Set<UInt8>] = [:]
            for ttl in UInt8(1)...8 {
                let request = echoRequest(client, host, ttl: ttl)
                guard case .icmpError(let from, let hop, let bytes, let delay, false) = try walk(&paths, request, rule: rule) else {
                    return XCTFail("TTL \(ttl): every TTL past the path expires in the loop")
                }
                answering.append(from.description)
                XCTAssertEqual(hop, Int(ttl))
                XCTAssertEqual(delay, Int64(ttl) * 1_000_000, "each turn of the loop is a hop with its delay")
                XCTAssertEqual(Array(bytes[(v6 ? 40 : 20)...].prefix(2)), v6 ? [3, 0] : [11, 0], "time exceeded in transit")
                XCTAssertEqual(Array(bytes.suffix(request.count)), request, "the request is quoted as sent")
                returnTTLs[from.description, default: []].insert(bytes[v6 ? 7 : 8])
            }
            XCTAssertEqual(answering, [1, 2, 3, 4, 3, 4, 3, 4].map(router))
            XCTAssertEqual(returnTTLs[router(3)], [253], "an error from the loop comes back from the router's first place (hop 3), whichever turn")
            XCTAssertEqual(returnTTLs[router(4)], [252])
            guard case .icmpError(let last, 255, _, _, _) = try walk(&paths, echoRequest(client, host, ttl: 255), rule: rule) else {
                return XCTFail("TTL 255 still expires in the loop")
            }
            XCTAssertEqual(last.description, router(3), "hop 255 is the loop's first router: 255 - 3 is even")
            let third = try XCTUnwrap(paths.summaries[router(3)]), fourth = try XCTUnwrap(paths.summaries[router(4)])
            XCTAssertEqual(third.expired, 4, "TTLs 3, 5, 7 and 255")
            XCTAssertEqual(fourth.expired, 3, "TTLs 4, 6 and 8")
            XCTAssertEqual(third.looped, third.packetsIn, "the loop's routers see only looping packets")
            // TTLs 3 to 8 visit router 3 (ttl - 1) / 2 times and 255 does 127 times.
            XCTAssertEqual(third.packetsIn, [3, 4, 5, 6, 7, 8].map { ($0 - 1) / 2 }.reduce(0, +) + 127)
            XCTAssertEqual(third.forwarded + third.expired, third.packetsIn)
            XCTAssertEqual(paths.summaries[router(2)]?.looped, 0)
        }
    }

    func testAtHopRefusesEveryPacketReachingItWithTheCodeOfEachFamilyQuotingIt() throws {
        // code, (v4 type, code), (v6 type, code)
        let codes: [(String, [UInt8], [UInt8])] = [
            ("net", [3, 0], [1, 0]), ("host", [3, 1], [1, 3]), ("port", [3, 3], [1, 4]), ("prohibited", [3, 13], [1, 1]), ("9", [3, 9], [1, 9]),
        ] + [("protocol", [3, 2], [])]
        for (code, typeCode4, typeCode6) in codes {
            for v6 in [false, true] where !(v6 && typeCode6.isEmpty) {
                let (client, host) = v6 ? (client6, host6) : (client4, host4)
                let router = { (n: Int) in v6 ? "2001:db8:160::\(n)" : "198.18.160.\(n)" }
                let rule = try HostRule(parsing: "\(v6 ? "2001:db8:60::/48" : "198.18.60.0/24") path=\(router(1)),\(router(2)),\(router(3)) unreachable=\(code),at-hop:2")
                var paths = try walker([])
                let early = try walk(&paths, echoRequest(client, host, ttl: 1), rule: rule)
                guard case .icmpError(_, 1, _, _, false) = early else { return XCTFail("\(code): TTL 1 expires before the refusing router: \(early)") }
                for ttl: UInt8 in [2, 3, 64] {
                    let request = echoRequest(client, host, ttl: ttl)
                    guard case .unreachable(let from, 2, let bytes, _, let parsed) = try walk(&paths, request, rule: rule) else {
                        return XCTFail("\(code) TTL \(ttl): hop 2 refuses every packet reaching it, TTL-limited ones included")
                    }
                    XCTAssertEqual(from.description, router(2))
                    XCTAssertEqual(parsed.name, code)
                    let offset = v6 ? 40 : 20
                    XCTAssertEqual(Array(bytes[offset..<offset + 2]), v6 ? typeCode6 : typeCode4, "\(code) v\(v6 ? 6 : 4)")
                    XCTAssertEqual(Array(bytes[(offset + 8)...]), request, "the request is quoted, IP header first")
                    let header = try bytes.withUnsafeBytes { try SimulatedPacket.header($0) }
                    XCTAssertEqual(header.source, from)
                    XCTAssertEqual(header.destination, client)
                    XCTAssertEqual(header.ttl, 63, "the error crosses hop 1 on its way back")
                    let pseudo = v6 ? SimulatedPacket.pseudoHeader(source: from.bytes, destination: client.bytes, transport: 58, length: bytes.count - 40) : []
                    XCTAssertEqual(SimulatedPacket.checksum(Array(bytes[offset...]), pseudoHeader: pseudo), 0)
                }
                let refusing = try XCTUnwrap(paths.summaries[router(2)])
                XCTAssertEqual(refusing.unreachable, 3)
                XCTAssertEqual(refusing.expired, 0, "the route lookup failed before the TTL was looked at")
                XCTAssertEqual(refusing.timeExceeded, 0)
                XCTAssertNil(paths.summaries[router(3)], "nothing passes the refusing router")
            }
        }
    }

    func testAfterHopLetsTTLLimitedPacketsExpireAndRefusesWhatItWouldForwardAfterItsDelay() throws {
        let rule = try HostRule(parsing: "198.18.60.0/24 path=198.18.160.1,198.18.160.2,198.18.160.3 unreachable=host,after-hop:2,delay:3s")
        var paths = try walker(["198.18.160.0/24 delay=1ms", "198.18.160.2/32 delay=1ms icmp-rate=1"])
        guard case .icmpError(let expiring, 2, _, let expiryDelay, false) = try walk(&paths, echoRequest(client4, host4, ttl: 2), rule: rule) else {
            return XCTFail("TTL 2 expires at hop 2, which forwards nothing it could refuse")
        }
        XCTAssertEqual(expiring.description, "198.18.160.2")
        XCTAssertEqual(expiryDelay, 2_000_000)
        // The rate limit's one token went to the time exceeded; a second later there is one more.
        let request = echoRequest(client4, host4, ttl: 3)
        guard case .unreachable(let refusing, 2, let bytes, let delay, .host) = try walk(&paths, request, rule: rule, now: 1_000_000_000) else {
            return XCTFail("TTL 3 would be forwarded by hop 2: refused")
        }
        XCTAssertEqual(refusing.description, "198.18.160.2")
        XCTAssertEqual(delay, 3_002_000_000, "the path's 2 ms and the refusal's 3 s")
        XCTAssertEqual(Array(bytes[20..<22]), [3, 1])
        XCTAssertEqual(Array(bytes[28...]), request)
        guard case .rateLimited(_, 2) = try walk(&paths, echoRequest(client4, host4, ttl: 64), rule: rule, now: 1_000_000_000) else {
            return XCTFail("the router's ICMP rate limit holds back its unreachables too")
        }
        let summary = try XCTUnwrap(paths.summaries["198.18.160.2"])
        XCTAssertEqual(summary.packetsIn, 3)
        XCTAssertEqual(summary.expired, 1)
        XCTAssertEqual(summary.timeExceeded, 1)
        XCTAssertEqual(summary.unreachable, 1)
        XCTAssertEqual(summary.rateLimited, 1)
        XCTAssertEqual(summary.forwarded, 0)
    }
}
