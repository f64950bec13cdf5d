import Foundation
import Logging
import ProbeConfig
import ProbeEngine
import TestSupport
import XCTest
@testable import PrometheusExporter

/// `/probe` without an HTTP server: the allow-list decides before any lookup, malformed
/// input gets a 400 that says what is wrong, the limits refuse at once.
final class BlackboxTests: XCTestCase {
    let logger = Logger(label: "test")

    /// Counts lookups and answers them with `address`; `gate`, when set, holds each lookup
    /// until it is opened.
    final class CountingResolver: @unchecked Sendable {
        let lock = NSLock()
        var names: [String] = []
        let address: IPAddress
        var held: [CheckedContinuation<Void, Never>] = []
        var holding = false

        init(address: String) { self.address = IPAddress(parsing: address)! }

        func lookUp(_ name: String, _ preference: AddressPreference) async -> ProbeTarget {
            await withCheckedContinuation { continuation in
                lock.lock()
                names.append(name)
                if holding { held.append(continuation); lock.unlock() } else { lock.unlock(); continuation.resume() }
            }
            return ProbeTarget(name: name, address: address)
        }

        var lookedUp: [String] { lock.withLock { names } }
        var heldCount: Int { lock.withLock { held.count } }

        func release() {
            let waiting = lock.withLock { defer { held = []; holding = false }; return held }
            waiting.forEach { $0.resume() }
        }
    }

    func makeProber(_ settings: BlackboxSettings, resolver: CountingResolver) throws -> BlackboxProber {
        try BlackboxProber(settings: settings, icmpSockets: nil, logger: logger, lookUp: { await resolver.lookUp($0, $1) })
    }

    func allowing(_ names: [String], _ prefixes: [String], concurrent: Int = 16, perSecond: Int = 1000) -> BlackboxSettings {
        BlackboxSettings(allowedNames: names, allowedPrefixes: prefixes.compactMap(AddressPrefix.init(parsing:)), maximumConcurrent: concurrent, maximumPerSecond: perSecond)
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
        let prober = try makeProber(allowing(["db1.example.com"], []), resolver: resolver)
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
        let prober = try makeProber(allowing(["db1.example.com"], [], concurrent: 3), resolver: resolver)
        let query = "module=tcp&target=db1.example.com:\(listener.port)"
        // Three requests take every slot and wait in their lookup.
        let inFlight = (0..<3).map { _ in Task { await prober.answer(query: query, format: .text) } }
        let holding = await TestEnvironment.eventually(within: 30) { resolver.heldCount == 3 }
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
        let prober = try BlackboxProber(settings: settings, icmpSockets: sockets, logger: logger)
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
}
