import Foundation
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import TestSupport
import XCTest

/// Issue 30, the path MTU part, on real Linux routers (RouterChain with links of MTU 1500,
/// 1400 and 1280: the kernels answer "fragmentation needed" / "packet too big" themselves).
/// `trace --mtu` names the hops where the MTU drops (acceptance 1), `ping -M do -s 1472`
/// answers too_big with MTU 1400 on every packet (acceptance 1), `run` with
/// `trace: {mtu: true}` writes `path_mtu` to a real influxd and a link MTU changed at run
/// time shows as a new `path` point (acceptance 2), and --mtu's bad combinations exit 3
/// (acceptance 4). Sizes and hops only: no test asserts a time, nothing waits by sleeping.
final class PathMTURouterTests: XCTestCase {
    /// prober -1- r1 -2- r2 -3(1400)- r3 -4(1280)- r4 -5- destination: router 2 cannot put
    /// 1500 bytes on link 3 (it names 1400), router 3 cannot put 1400 on link 4 (1280).
    static func dropsAtHopsTwoAndThree() -> RouterChain.Options {
        var options = RouterChain.Options(routers: 4)
        options.linkMTUs = [3: 1400, 4: 1280]
        return options
    }

    static func hops(_ trace: [String: Any]) -> [[String: Any]] { trace["hops"] as? [[String: Any]] ?? [] }

    // MARK: trace --mtu

    func testTraceMTUNamesTheHopsWhereTheMTUDropsTo1400And1280() throws {
        let chain = try RouterChain.make(Self.dropsAtHopsTwoAndThree())
        for family in RouterChain.Family.allCases {
            let label = "\(family)"
            let run = try chain.netprobe(["trace", "--mtu", "--json", "-c", "3", "-i", "100ms", chain.destination(family)])
            XCTAssertEqual(run.status, 0, "\(label): reached\n\(run.standardError)")
            let trace = try XCTUnwrap(try run.jsonLines().first, "\(label): one JSON object\n\(run.standardOutput)")
            XCTAssertEqual(trace["reached"] as? Bool, true, label)
            XCTAssertEqual(trace["path_mtu"] as? Int, 1280, "\(label): the path carries 1280 bytes end to end")
            XCTAssertEqual(trace["mtu_first_size"] as? Int, 1500, "\(label): the first probes left at the interface's MTU")
            XCTAssertEqual(trace["mtu_interface"] as? Int, 1500, "\(label): the host refused the 65535-byte start and named its interface's MTU")
            let drops = (trace["mtu_drops"] as? [[String: Any]]) ?? []
            XCTAssertEqual(drops.map { $0["hop"] as? Int }, [2, 3], "\(label): drops at hops 2 and 3\n\(run.standardOutput)")
            XCTAssertEqual(drops.map { $0["mtu"] as? Int }, [1400, 1280], label)
            XCTAssertEqual(drops.map { $0["address"] as? String }, [chain.routerAddress(hop: 2, family), chain.routerAddress(hop: 3, family)], label)
            // Each hop: the largest packet it answered; every hop answered every round.
            let expected = [1: 1500, 2: 1500, 3: 1400, 4: 1280, 5: 1280]
            for hop in Self.hops(trace) {
                guard let number = hop["hop"] as? Int else { continue }
                XCTAssertEqual(hop["mtu"] as? Int, expected[number], "\(label) hop \(number): mtu")
                XCTAssertEqual(hop["sent"] as? Int, 3, "\(label) hop \(number): a probe sent again smaller counts once")
                XCTAssertEqual(hop["received"] as? Int, 3, "\(label) hop \(number): no loss from the too-big answers")
            }
            XCTAssertEqual(Self.hops(trace).compactMap { $0["hop"] as? Int }, [1, 2, 3, 4, 5], label)
            XCTAssertGreaterThan(Self.hops(trace).compactMap { $0["too_big"] as? Int }.reduce(0, +), 0, "\(label): routers answered too big")
            XCTAssertEqual(trace["mtu_summary"] as? String,
                           "path MTU 1500 -> 1400 at hop 2 (\(chain.routerAddress(hop: 2, family))), -> 1280 at hop 3 (\(chain.routerAddress(hop: 3, family)))", label)

            // The text report says the same in its line, and shows the mtu column.
            let text = try chain.netprobe(["trace", "--mtu", "-c", "2", "-i", "100ms", chain.destination(family)])
            XCTAssertEqual(text.status, 0, "\(label) text\n\(text.standardError)")
            XCTAssertTrue(text.standardOutput.contains(
                "path MTU 1500 -> 1400 at hop 2 (\(chain.routerAddress(hop: 2, family))), -> 1280 at hop 3 (\(chain.routerAddress(hop: 3, family)))"),
                          "\(label):\n\(text.standardOutput)")
            let lines = text.standardOutput.split(separator: "\n").map(String.init)
            XCTAssertTrue(lines.contains { $0.hasSuffix("    mtu") }, "\(label): the mtu column\n\(text.standardOutput)")
            let hopThree = try XCTUnwrap(lines.first { $0.hasPrefix("   3  \(chain.routerAddress(hop: 3, family)) ") }, text.standardOutput)
            XCTAssertTrue(hopThree.hasSuffix("  1400"), "\(label): hop 3 answered 1400 bytes: \(hopThree)")
        }
    }

    /// -s starts below the interface's MTU: no local refusal, the drops are the same, and
    /// a start already at or below 1280 finds no drop.
    func testTraceMTUStartsAtTheSizeAskedFor() throws {
        let chain = try RouterChain.make(Self.dropsAtHopsTwoAndThree())
        let run = try chain.netprobe(["trace", "--mtu", "-s", "1422", "--json", "-c", "2", "-i", "100ms", chain.destination(.ipv4)])
        XCTAssertEqual(run.status, 0, run.standardError)
        let trace = try XCTUnwrap(try run.jsonLines().first)
        XCTAssertEqual(trace["mtu_first_size"] as? Int, 1450, "1422 bytes of payload and 28 of headers")
        XCTAssertTrue(trace["mtu_interface"] is NSNull, "nothing was refused locally")
        XCTAssertEqual((trace["mtu_drops"] as? [[String: Any]])?.map { $0["mtu"] as? Int }, [1400, 1280])
        XCTAssertEqual(trace["path_mtu"] as? Int, 1280)

        let small = try chain.netprobe(["trace", "--mtu", "-s", "1000", "--json", "-c", "2", "-i", "100ms", chain.destination(.ipv6)])
        let smallTrace = try XCTUnwrap(try small.jsonLines().first, small.standardError)
        XCTAssertEqual((smallTrace["mtu_drops"] as? [[String: Any]])?.count, 0)
        XCTAssertEqual(smallTrace["path_mtu"] as? Int, 1048, "1000 bytes of payload and 48 of headers passed every hop")
        XCTAssertEqual(smallTrace["mtu_summary"] as? String, "path MTU 1048 (no drop)")
    }

    func testTraceMTUBadCombinationsExitThree() throws {
        let chain = try RouterChain.make(RouterChain.Options(routers: 1))
        let destination = chain.destination(.ipv4)
        for (arguments, says) in [
            (["--mtu", "--flows", "2", destination], "--flows"),
            (["--mtu", "\(destination):\(chain.tcpPort)"], "TCP SYN"),
            (["-s", "1400", destination], "--mtu"),
            (["--mtu", "-s", "5", destination], "between"),
        ] {
            let run = try chain.netprobe(["trace"] + arguments)
            XCTAssertEqual(run.status, 3, "\(arguments): exit 3\n\(run.standardError)")
            XCTAssertTrue(run.standardError.contains(says), "\(arguments): \(run.standardError)")
        }
    }

    // MARK: ping -M do (the CLI of issue 30's main part)

    /// Every packet of `ping -M do -s 1472` (1500 bytes) towards the destination beyond the
    /// 1400 link is too big with MTU 1400, twice in the same namespace (the host's path-MTU
    /// cache, filled by the first answer, must not change the second run's). A first link
    /// of 1400 refuses the packet on this host (EMSGSIZE), with the same MTU. IPv6 sends
    /// 1500-byte packets with -s 1452 (its headers are 20 bytes longer: -s 1472 would be
    /// refused by this host's 1500 interface, a local too_big with MTU 1500). Router 2
    /// keeps the kernel's ICMP rate limits (1000 ms, a burst of 6): 10 packets in half a
    /// second all get their answer, since the kernels never limit these.
    func testPingDontFragmentIsTooBigWithMTU1400OnEveryPacketTwice() throws {
        var options = RouterChain.Options(routers: 3)
        options.linkMTUs = [3: 1400]
        options.rateLimitingHops = [2]
        let chain = try RouterChain.make(options)
        func check(_ family: RouterChain.Family, _ label: String) throws {
            let size = family == .ipv4 ? "1472" : "1452"
            let run = try chain.netprobe(["ping", "-M", "do", "-s", size, "--json", "-c", "10", "-i", "50ms", chain.destination(family)])
            XCTAssertNotEqual(run.status, 0, "\(label): nothing answered\n\(run.standardError)")
            let line = try XCTUnwrap(try run.jsonLines().first, "\(label)\n\(run.standardOutput)\n\(run.standardError)")
            XCTAssertEqual((line["outcome"] ?? line["result"]) as? String, "too_big", "\(label): \(line)")
            XCTAssertEqual(line["sent"] as? Int, 10, label)
            XCTAssertEqual(line["too_big"] as? Int, 10, "\(label): every packet, not only the first: \(line)")
            XCTAssertEqual(line["path_mtu"] as? Int, 1400, "\(label): \(line)")
        }
        for family in RouterChain.Family.allCases {
            try check(family, "\(family) beyond the 1400 link, first run")
            try check(family, "\(family) beyond the 1400 link, second run")
        }
        try chain.setLinkMTU(1, 1400)
        for family in RouterChain.Family.allCases {
            try check(family, "\(family) on a 1400 first link (local EMSGSIZE)")
        }
    }

    // MARK: run with trace: {mtu: true}

    func testRunWritesPathMTUAndALinkMTUChangedAtRunTimeMakesANewPathPoint() throws {
        var options = RouterChain.Options(routers: 3)
        options.linkMTUs = [3: 1400]
        let chain = try RouterChain.make(options)
        let target = chain.destination(.ipv4)
        let directory = try TestEnvironment.temporaryDirectory("mtu-run")
        let server = try TestEnvironment.blocking { try await InfluxDBTestServer.start() }
        defer { server.stop() }
        try TestEnvironment.blocking { try await server.createDatabase("netprobe") }
        let configPath = try TestEnvironment.writeRunConfig(in: directory, probe: "mtu", pingTargets: "chain: [\(target)]\n", sections: [
            "icmp: {interval: 1s, count: 2, spacing: 100ms, timeout: 300ms}",
            "trace: {icmp: 1s, rounds: 2, spacing: 100ms, timeout: 300ms, max_hops: 6, mtu: true}",
        ], influxPort: server.port)
        let configuration = try ConfigurationLoader.load(path: configPath)
        XCTAssertTrue(configuration.trace.mtu)

        let logger = Logger(label: "mtu-run")
        // Sockets inside the chain's prober; the sink (this process's namespace) reaches influxd.
        let (icmp, path) = try NetworkNamespace.inside(chain.prober) {
            (try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger), try ICMPSocketSet.open(families: [.ipv4], ttl: nil, logger: logger))
        }
        let service = ProbeService(configuration: configuration, icmpSockets: icmp, sinks: { try InfluxSink.make(for: $0, logger: $1) }, logger: logger, pathSockets: path)
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        let running = Task.detached { try await service.run(control: control) }
        defer {
            send.yield(.stop)
            send.finish()
            _ = try? TestEnvironment.blocking { try await running.value }
        }

        /// The `path` points so far: (time, hash, path_mtu).
        func paths() throws -> [(time: Int64, hash: String, pathMTU: Int?)] {
            try TestEnvironment.blocking {
                let series = try await server.series("SELECT \"hash\", \"path_mtu\" FROM \"path\" WHERE \"target\" = '\(target)'", database: "netprobe")
                return ((series.first?["values"] as? [[Any]]) ?? []).map { row in
                    ((row[0] as? NSNumber)?.int64Value ?? 0, row[1] as? String ?? "", (row[2] as? NSNumber)?.intValue)
                }
            }
        }
        func traceTimes() throws -> [Int64] { try server.traceStartTimes(target: target) }
        func eventually(_ what: String, _ condition: () throws -> Bool) throws {
            guard try TestEnvironment.eventually(within: 60, every: 0.1, condition) else { return XCTFail("gave up waiting: \(what)") }
        }

        try eventually("the first path point") { try !paths().isEmpty }
        let first = try XCTUnwrap(try paths().first)
        XCTAssertEqual(first.pathMTU, 1400, "router 2's next link carries 1400 bytes")
        try eventually("two more traces") { try traceTimes().count >= 3 }
        XCTAssertEqual(try paths().count, 1, "an unchanged path and MTU write no new path point")

        // Link 4 (router 3 to the destination) shrinks to 1280: same hops, smaller MTU.
        try chain.setLinkMTU(4, 1280)
        let changedAt = Int64(Date().timeIntervalSince1970 * 1e9)
        try eventually("a path point with the new MTU") { try paths().contains { $0.pathMTU == 1280 } }
        let points = try paths()
        let second = try XCTUnwrap(points.first { $0.pathMTU == 1280 })
        XCTAssertEqual(second.hash, first.hash, "the hops did not change, only the MTU")
        XCTAssertGreaterThan(second.time, first.time)
        for point in points where point.time < changedAt - 1_000_000_000 { XCTAssertEqual(point.pathMTU, 1400, "before the change, 1400") }
        try eventually("two traces after the change") { try traceTimes().filter { $0 > second.time }.count >= 2 }
        XCTAssertEqual(try paths().filter { $0.time > second.time }.count, 0, "the new MTU, unchanged, writes no more path points")
    }
}
