import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import TestSupport
import XCTest
@testable import PrometheusExporter

/// `/probe` without an HTTP server: the allow-list decides before any lookup, malformed
/// input gets a 400 that says what is wrong, the limits refuse at once.
final class BlackboxTests: XCTestCase {
    let logger = Logger(label: "test")

    /// Counts lookups and answers them with `addresses`; `holding`, when set, holds each
    /// lookup until `release()`.
    final class CountingResolver: @unchecked Sendable {
        let lock = NSLock()
        var names: [String] = []
        let addresses: [IPAddress]
        var held: [CheckedContinuation<Void, Never>] = []
        var holding = false

        init(address: String...) { addresses = address.map { IPAddress(parsing: $0)! } }

        func lookUp(_ name: String, _ preference: AddressPreference) async -> Result<[IPAddress], Resolver.LookupFailure> {
            await withCheckedContinuation { continuation in
                lock.lock()
                names.append(name)
                if holding { held.append(continuation); lock.unlock() } else { lock.unlock(); continuation.resume() }
            }
            return .success(addresses)
        }

        var lookedUp: [String] { lock.withLock { names } }
        var heldCount: Int { lock.withLock { held.count } }

        func release() {
            let waiting = lock.withLock { defer { held = []; holding = false }; return held }
            waiting.forEach { $0.resume() }
        }
    }

    func makeProber(_ settings: BlackboxSettings, resolver: CountingResolver) throws -> BlackboxProber {
        BlackboxProber(settings: settings, prober: try OnDemandEngine(icmpSockets: nil, logger: logger, lookUp: { name, preference, _ in await resolver.lookUp(name, preference) }), logger: logger)
    }

    func allowing(_ names: [String], _ prefixes: [String], concurrent: Int = 16, perSecond: Int = 1000) -> BlackboxSettings {
        BlackboxSettings(allowedNames: names.map { AllowedName($0) }, allowedPrefixes: prefixes.compactMap(AddressPrefix.init(parsing:)), maximumConcurrent: concurrent, maximumPerSecond: perSecond)
    }

    func testATargetOutsideTheAllowListIsRefusedBeforeAnyLookupOrPacket() async throws {
        let resolver = CountingResolver(address: "127.0.0.1")
        let prober = try makeProber(allowing(["db1.example.com"], ["127.0.0.1/32"]), resolver: resolver)
        for query in ["module=tcp&target=evil.example.com:5432", "module=tcp&target=db1.example.com.evil:5432", "module=tcp&target=127.0.0.2:22",
                      "module=tcp&target=[::ffff:127.0.0.1]:22", "module=tcp&target=10.0.0.1:80", "module=icmp&target=8.8.8.8"] {
            let answer = await prober.answer(query: query, format: .text)
            XCTAssertEqual(answer.status, 403, query)
            XCTAssertTrue(answer.body.contains("allow"), answer.body)
        }
        XCTAssertEqual(resolver.lookedUp, [], "a name that is not allowed must never reach the resolver")
        prober.close()
    }

    func testAnAllowedNameIsResolvedAndTheResolvedAddressIsProbed() async throws {
        let listener = try LoopbackListener()
        let closed = TestEnvironment.freePort()
        let resolver = CountingResolver(address: "127.0.0.1")
        let prober = try makeProber(allowing(["db1.example.com"], ["127.0.0.0/8"]), resolver: resolver)
        let open = await prober.answer(query: "module=tcp&target=DB1.example.com.:\(listener.port)", format: .text)
        XCTAssertEqual(open.status, 200, open.body)
        XCTAssertTrue(open.body.contains("\nprobe_success 1\n"), open.body)
        XCTAssertTrue(open.body.contains("\nprobe_ip_protocol 4\n"), open.body)
        XCTAssertTrue(open.body.contains("probe_tcp_duration_seconds{phase=\"connect\"}"), open.body)
        let refused = await prober.answer(query: "module=tcp&target=db1.example.com:\(closed)", format: .text)
        XCTAssertEqual(refused.status, 200, refused.body)
        XCTAssertTrue(refused.body.contains("\nprobe_success 0\n"), refused.body)
        XCTAssertEqual(resolver.lookedUp, ["db1.example.com", "db1.example.com"])
        prober.close()
    }

    func testMalformedQueriesGetA400ThatSaysWhatIsWrong() async throws {
        let resolver = CountingResolver(address: "127.0.0.1")
        let prober = try makeProber(allowing(["db1.example.com"], ["127.0.0.0/8"]), resolver: resolver)
        let cases: [(String?, String)] = [
            (nil, "missing 'module'"),
            ("target=127.0.0.1", "missing 'module'"),
            ("module=icmp", "missing 'target'"),
            ("module=icmp&target=", "missing 'target'"),
            ("module=udp&target=127.0.0.1", "unknown module 'udp'"),
            ("module=icmp&target=%ZZ", "malformed query string"),
            ("module=icmp&target=127.0.0.1%", "malformed query string"),
            ("module=icmp&target=%C3%28", "malformed query string"),
            ("module=icmp&target=127.0.0.1%0A", "only letters, digits"),
            ("module=icmp&target=127.0.0.1&target=127.0.0.2", "more than once"),
            ("module=icmp&target=" + String(repeating: "a", count: 300), "at most 261"),
            ("module=icmp&target=" + String(repeating: "a", count: 3000), "longer than 2048"),
            ("module=tcp&target=127.0.0.1", "needs target=HOST:PORT"),
            ("module=tcp&target=127.0.0.1:0", "port must be 1 to 65535"),
            ("module=tcp&target=127.0.0.1:70000", "port must be 1 to 65535"),
            ("module=tcp&target=[::1:22", "missing ']'"),
            ("module=tcp&target=::1:22", "needs target=HOST:PORT"),  // an IPv6 address, ::0.1.0.34
            ("module=tcp&target=db1:22:33", "in brackets"),
            ("module=icmp&target=127.0.0.1:22", "without a port"),
        ]
        for (query, expected) in cases {
            let answer = await prober.answer(query: query, format: .text)
            XCTAssertEqual(answer.status, 400, "\(query ?? "nil"): \(answer.body)")
            XCTAssertTrue(answer.body.contains(expected), "\(query ?? "nil"): \(answer.body)")
            XCTAssertLessThan(answer.body.utf8.count, 400, "the refusal never echoes a huge request back")
        }
        XCTAssertEqual(resolver.lookedUp, [])
        prober.close()
    }

    func testRequestsBeyondTheConcurrencyLimitGet503AtOnce() async throws {
        let listener = try LoopbackListener()
        let resolver = CountingResolver(address: "127.0.0.1")
        resolver.holding = true
        let prober = try makeProber(allowing(["db1.example.com"], ["127.0.0.0/8"], concurrent: 3), resolver: resolver)
        let query = "module=tcp&target=db1.example.com:\(listener.port)"
        // Three requests take every slot and wait in their lookup.
        let inFlight = (0..<3).map { _ in Task { await prober.answer(query: query, format: .text) } }
        let holding = TestEnvironment.eventually(within: 30) { resolver.heldCount == 3 }
        XCTAssertTrue(holding)
        let refused = await prober.answer(query: query, format: .text)
        XCTAssertEqual(refused.status, 503, refused.body)
        XCTAssertEqual(refused.retryAfterSeconds, 1)
        resolver.release()
        for task in inFlight {
            let answer = await task.value
            XCTAssertEqual(answer.status, 200)
            XCTAssertTrue(answer.body.contains("\nprobe_success 1\n"), answer.body)
        }
        let after = await prober.answer(query: query, format: .text)
        XCTAssertEqual(after.status, 200, "the slots are free again")
        prober.close()
    }

    func testTheRateLimitRefillsWithTimeAndRefusesWith429() {
        let limits = RequestLimits(concurrent: 2, perSecond: 3)
        let start: Int64 = Clock.monotonicNanoseconds() + 1_000_000_000
        XCTAssertEqual(limits.acquire(now: start), .granted)
        XCTAssertEqual(limits.acquire(now: start), .granted)
        XCTAssertEqual(limits.acquire(now: start), .busy, "two in flight")
        limits.release()
        XCTAssertEqual(limits.acquire(now: start), .granted, "the third token")
        limits.release()
        limits.release()
        XCTAssertEqual(limits.acquire(now: start), .rateExceeded, "three a second, burst included")
        XCTAssertEqual(limits.acquire(now: start + 340_000_000), .granted, "a third of a second later one token is back")
        XCTAssertEqual(limits.acquire(now: start + 340_000_000), .rateExceeded)
    }

    func testICMPModulesAnswer503WhenICMPIsNotAvailable() async throws {
        let prober = try makeProber(allowing([], ["127.0.0.0/8"]), resolver: CountingResolver(address: "127.0.0.1"))
        let answer = await prober.answer(query: "module=icmp&target=127.0.0.1", format: .text)
        XCTAssertEqual(answer.status, 503)
        XCTAssertTrue(answer.body.contains("ICMP is not available"), answer.body)
        prober.close()
    }

    func testICMPProbesOfSeveralPacketsUseTheEngineAndReportTheMedian() async throws {
        try Privilege.requireRoot()
        let sockets = try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv6], ttl: nil, logger: logger)
        var settings = allowing([], ["127.0.0.0/8", "::1/128"])
        settings.modules["icmp_3"] = BlackboxModule(kind: .icmp, count: 3, spacingNanoseconds: 10_000_000, timeoutNanoseconds: 1_000_000_000)
        let prober = BlackboxProber(settings: settings, prober: try OnDemandEngine(icmpSockets: sockets, logger: logger), logger: logger)
        // Several at once: they share the prober and go out together.
        let answers = await withTaskGroup(of: BlackboxProber.Answer.self) { group in
            for _ in 0..<5 { group.addTask { await prober.answer(query: "module=icmp_3&target=127.0.0.1", format: .text) } }
            var answers: [BlackboxProber.Answer] = []
            for await answer in group { answers.append(answer) }
            return answers
        }
        for answer in answers {
            XCTAssertEqual(answer.status, 200, answer.body)
            XCTAssertTrue(answer.body.contains("\nprobe_success 1\n"), answer.body)
            XCTAssertTrue(answer.body.contains("\nprobe_packets_sent 3\n"), answer.body)
            XCTAssertTrue(answer.body.contains("\nprobe_packets_received 3\n"), answer.body)
            XCTAssertTrue(answer.body.contains("probe_icmp_duration_seconds{phase=\"rtt\"}"), answer.body)
        }
        prober.close()
    }

    /// A module's `tos`, `source_ip_address` and `interface` reach the packets: what an
    /// AF_PACKET socket sees leave on loopback (a source of 127.0.0.2 is this host's: lo holds
    /// 127.0.0.0/8), and a target of the other family than the source is refused.
    func testAModulesClassSourceAndInterfaceAreWhatLeaves() async throws {
        try Privilege.requireRoot()
        let capture = try OutgoingCapture()
        let sockets = try ICMPSocketSet.open(families: [.ipv4, .ipv6], optional: [.ipv6], ttl: nil, logger: logger)
        var settings = allowing([], ["127.0.0.0/8", "::1/128"])
        settings.modules["icmp_ef"] = BlackboxModule(kind: .icmp, count: 2, spacingNanoseconds: 10_000_000,
                                                     options: PacketOptions(tos: 0xb8, source: IPAddress(parsing: "127.0.0.2"), interface: "lo"))
        settings.modules["icmp6_cs6"] = BlackboxModule(kind: .icmp, options: PacketOptions(tos: 0xc0))
        settings.modules["tcp_af41"] = BlackboxModule(kind: .tcp, options: PacketOptions(tos: 0x88, source: IPAddress(parsing: "127.0.0.3")))
        let prober = BlackboxProber(settings: settings, prober: try OnDemandEngine(icmpSockets: sockets, logger: logger), logger: logger)
        defer { prober.close() }
        let closed = TestEnvironment.freePort()
        _ = capture.outgoing()

        let echo = await prober.answer(query: "module=icmp_ef&target=127.0.0.1", format: .text)
        XCTAssertEqual(echo.status, 200, echo.body)
        XCTAssertTrue(echo.body.contains("\nprobe_packets_received 2\n"), echo.body)
        let syn = await prober.answer(query: "module=tcp_af41&target=127.0.0.1:\(closed)", format: .text)
        XCTAssertEqual(syn.status, 200, syn.body)
        let packets = capture.outgoing()
        let requests = packets.filter { $0.version == 4 && $0.proto == 1 && $0.type == 8 && $0.destination == "127.0.0.1" && $0.tos == 0xb8 }
        XCTAssertEqual(requests.count, 2, "two echo requests in class ef")
        XCTAssertEqual(Set(requests.map(\.source)), ["127.0.0.2"], "from the module's source_ip_address")
        let syns = packets.filter { $0.version == 4 && $0.proto == 6 && $0.tcpFlags & 0x12 == 0x02 && $0.destinationPort == closed }
        XCTAssertEqual(syns.map(\.tos), [0x88], "the SYN in class af41")
        XCTAssertEqual(syns.map(\.source), ["127.0.0.3"])

        if sockets.modes[.ipv6] != nil {
            let echo6 = await prober.answer(query: "module=icmp6_cs6&target=::1", format: .text)
            XCTAssertEqual(echo6.status, 200, echo6.body)
            let requests6 = capture.outgoing().filter { $0.version == 6 && $0.proto == 58 && $0.type == 128 && $0.destination == "::1" }
            XCTAssertEqual(requests6.map(\.tos), [0xc0], "the IPv6 echo request in class cs6")
        }
        // 127.0.0.2 can only send to IPv4.
        let crossed = await prober.answer(query: "module=icmp_ef&target=::1", format: .text)
        XCTAssertEqual(crossed.status, 400, crossed.body)
        XCTAssertTrue(crossed.body.contains("source_ip_address 127.0.0.2"), crossed.body)
    }

    func testANameIsProbedOnlyAtAnAddressInsideAnAllowedPrefixUnlessItsDNSIsTrusted() async throws {
        let listener = AnyAddressListener()
        let query = { (name: String) in "module=tcp&target=\(name):\(listener.port)" }
        // The first address is outside the prefix, the second inside: only the second is probed.
        let mixed = CountingResolver(address: "127.0.0.9", "127.0.0.1")
        let prober = try makeProber(allowing(["mixed.test"], ["127.0.0.1/32"]), resolver: mixed)
        let answer = await prober.answer(query: query("mixed.test"), format: .text)
        XCTAssertEqual(answer.status, 200, answer.body)
        XCTAssertTrue(answer.body.contains("\nprobe_success 1\n"), answer.body)
        XCTAssertTrue(answer.body.contains("\nprobe_ip_addr_hash 3668918509\n"), "127.0.0.1's hash, as blackbox_exporter gives it: \(answer.body)")
        prober.close()

        let outside = CountingResolver(address: "127.0.0.9", "127.0.0.10")
        let refusing = try makeProber(allowing(["outside.test"], ["127.0.0.1/32"]), resolver: outside)
        let refused = await refusing.answer(query: query("outside.test"), format: .text)
        XCTAssertEqual(refused.status, 403)
        XCTAssertEqual(refused.body, "target 'outside.test' resolves to 127.0.0.9, 127.0.0.10, none inside an allowed prefix (prometheus: probe: allow)\n")
        XCTAssertEqual(outside.lookedUp, ["outside.test"])
        refusing.close()

        var trusting = allowing([], ["127.0.0.1/32"])
        trusting.allowedNames = [AllowedName("outside.test", anyAddress: true)]
        let trusted = try makeProber(trusting, resolver: CountingResolver(address: "127.0.0.9"))
        let probed = await trusted.answer(query: query("outside.test"), format: .text)
        XCTAssertEqual(probed.status, 200, probed.body)
        XCTAssertTrue(probed.body.contains("\nprobe_success 1\n"), "any_address: the name's DNS decides: \(probed.body)")
        XCTAssertTrue(probed.body.contains("\nprobe_ip_addr_hash \(Int(BlackboxProber.addressHash(IPAddress(parsing: "127.0.0.9")!)))\n"), probed.body)
        trusted.close()
    }

    func testTheAddressHashIsBlackboxExportersFNV1aOfTheAddressBytes() throws {
        // Values computed with blackbox_exporter's ipHash (FNV-1a, 32 bits, over To4/To16).
        XCTAssertEqual(BlackboxProber.addressHash(try XCTUnwrap(IPAddress(parsing: "127.0.0.1"))), 3_668_918_509)
        XCTAssertEqual(BlackboxProber.addressHash(try XCTUnwrap(IPAddress(parsing: "192.0.2.1"))), Double(Self.fnv1a([192, 0, 2, 1])))
        XCTAssertEqual(BlackboxProber.addressHash(try XCTUnwrap(IPAddress(parsing: "2001:db8::1"))),
                       Double(Self.fnv1a([0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1])))
        XCTAssertEqual(ExpositionWriter.number(3_668_918_509), "3668918509", "Prometheus reads the integer form as the same float")
    }

    static func fnv1a(_ bytes: [UInt8]) -> UInt32 {
        bytes.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 }
    }

    func testTheScrapeTimeoutLessTheOffsetBoundsTheAnswer() throws {
        XCTAssertNil(try BlackboxProber.budget(scrapeTimeout: nil, offset: 500_000_000), "without the header: the module's own schedule")
        XCTAssertEqual(try BlackboxProber.budget(scrapeTimeout: "2", offset: 500_000_000), 1_500_000_000)
        XCTAssertEqual(try BlackboxProber.budget(scrapeTimeout: "9.75", offset: 500_000_000), 9_250_000_000)
        XCTAssertEqual(try BlackboxProber.budget(scrapeTimeout: "0.4", offset: 500_000_000), 200_000_000, "less than the offset: half of it")
        for bad in ["", "abc", "-1", "0", "nan", "inf"] {
            XCTAssertThrowsError(try BlackboxProber.budget(scrapeTimeout: bad, offset: 500_000_000), bad) { error in
                XCTAssertEqual((error as? BlackboxRefusal)?.status, 400)
            }
        }
        let module = BlackboxModule(kind: .icmp, count: 5, spacingNanoseconds: 1_000_000_000, timeoutNanoseconds: 3_000_000_000)
        XCTAssertEqual(module.worstCaseNanoseconds, 7_000_000_000)
        XCTAssertTrue(BlackboxProber.schedule(for: module, remaining: 7_000_000_000) == (5, 3_000_000_000), "the whole module fits")
        XCTAssertTrue(BlackboxProber.schedule(for: module, remaining: 5_500_000_000) == (3, 3_000_000_000), "two packets fewer")
        XCTAssertTrue(BlackboxProber.schedule(for: module, remaining: 1_500_000_000) == (1, 1_500_000_000), "one packet, waited for as long as there is")
        XCTAssertTrue(BlackboxProber.schedule(for: module, remaining: 0) == (0, 0), "no time: nothing is sent")
    }

    func testAShortScrapeTimeoutSendsFewerPacketsAndSaysSo() async throws {
        let listener = try LoopbackListener()
        var settings = allowing([], ["127.0.0.0/8"])
        settings.modules["tcp_5"] = BlackboxModule(kind: .tcp, count: 5, spacingNanoseconds: 400_000_000, timeoutNanoseconds: 1_000_000_000)
        let prober = try makeProber(settings, resolver: CountingResolver(address: "127.0.0.1"))
        let cut = await prober.answer(query: "module=tcp_5&target=127.0.0.1:\(listener.port)", scrapeTimeout: "1.5", format: .text)
        XCTAssertEqual(cut.status, 200, cut.body)
        XCTAssertTrue(cut.body.contains("\nprobe_packets_sent 1\n"), "1s left of the 1.5s: one handshake fits, not five: \(cut.body)")
        XCTAssertTrue(cut.body.contains("\nprobe_success 1\n"), cut.body)
        let whole = await prober.answer(query: "module=tcp_5&target=127.0.0.1:\(listener.port)", scrapeTimeout: "10", format: .text)
        XCTAssertTrue(whole.body.contains("\nprobe_packets_sent 5\n"), whole.body)
        XCTAssertTrue(whole.body.contains("probe_tcp_duration_seconds{phase=\"setup\"}"), whole.body)
        XCTAssertFalse(whole.body.contains("probe_tcp_duration_seconds{phase=\"setup\"} 0\n"), "setup is measured, not a placeholder 0")
        let bad = await prober.answer(query: "module=tcp_5&target=127.0.0.1:\(listener.port)", scrapeTimeout: "soon", format: .text)
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual(bad.body, "X-Prometheus-Scrape-Timeout-Seconds must be a positive number of seconds, got 'soon'\n")
        prober.close()
    }
}
