import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `netprobe ping` against real sockets on loopback and in namespaces of the test's own.
final class PingIntegrationTests: XCTestCase {
    static let jsonKeys: Set<String> = [
        "kind", "target", "address", "sent", "received", "loss_percent", "duplicates", "late",
        "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_median_ms", "rtt_stddev_ms", "jitter_ms", "ttl",
        "rtts_ms", "result", "timestamp_source", "time",
    ]

    var netprobe: String { Harness.netprobePath }

    func round(_ lines: [[String: Any]], target: String) throws -> [String: Any] {
        try XCTUnwrap(lines.first { $0["target"] as? String == target }, "no JSON line for \(target)")
    }

    func testRawSocketsOnLoopbackReceiveEveryReplyWithKernelTimestamps() throws {
        try Harness.requireRoot()
        let result = try Harness.run([netprobe, "ping", "-c", "20", "-i", "0.05", "127.0.0.1", "::1", "--json", "-v"])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardError.contains("ipv4=raw"), result.standardError)
        let lines = try result.jsonLines()
        XCTAssertEqual(lines.count, 2)
        for (target, family) in [("127.0.0.1", "ipv4"), ("::1", "ipv6")] {
            let line = try round(lines, target: target)
            XCTAssertEqual(Set(line.keys), Self.jsonKeys, "\(family): exactly the documented keys")
            XCTAssertEqual(line["kind"] as? String, "icmp")
            XCTAssertEqual(line["address"] as? String, target)
            XCTAssertEqual(line["sent"] as? Int, 20)
            XCTAssertEqual(line["received"] as? Int, 20)
            XCTAssertEqual(line["loss_percent"] as? Double, 0)
            XCTAssertEqual(line["duplicates"] as? Int, 0)
            XCTAssertEqual(line["late"] as? Int, 0)
            XCTAssertEqual(line["result"] as? String, "ok")
            XCTAssertEqual(line["timestamp_source"] as? String, "kernel", "\(family): every sample timed by the kernel")
            XCTAssertEqual(line["ttl"] as? Int, 64)
            let rtts = try XCTUnwrap(line["rtts_ms"] as? [Double])
            XCTAssertEqual(rtts.count, 20)
            let minimum = try XCTUnwrap(line["rtt_min_ms"] as? Double)
            let maximum = try XCTUnwrap(line["rtt_max_ms"] as? Double)
            XCTAssertEqual(minimum, rtts.min()!, accuracy: 1e-9)
            XCTAssertEqual(maximum, rtts.max()!, accuracy: 1e-9)
            // Positive, ordered and consistent; how small loopback RTTs are is a benchmark
            // figure (BENCHMARKS.md), not something a busy CI machine can promise.
            XCTAssertGreaterThan(minimum, 0)
            XCTAssertLessThanOrEqual(minimum, maximum)
            print("ping \(family): rtt min \(minimum) ms, max \(maximum) ms")
            let time = try XCTUnwrap(line["time"] as? String)
            XCTAssertNotNil(try? Date(time, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)), "RFC 3339 time: \(time)")
        }
    }

    func testHumanOutputHasALinePerReplyAndASummaryPerTarget() throws {
        try Harness.requireRoot()
        let result = try Harness.run([netprobe, "ping", "-c3", "-i0.02", "127.0.0.1", "127.0.0.2"])
        XCTAssertEqual(result.status, 0, result.standardError)
        let lines = result.standardOutput.split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.hasPrefix("64 bytes from 127.0.0.1: icmp_seq=") }.count, 3)
        XCTAssertEqual(lines.filter { $0.hasPrefix("64 bytes from 127.0.0.2: icmp_seq=") }.count, 3)
        XCTAssertEqual(lines.filter { $0.contains(" : sent 3, received 3, 0.0% loss, min/avg/max/median/stddev = ") }.count, 2)

        let quiet = try Harness.run([netprobe, "ping", "-q", "-c", "2", "-i", "0.02", "127.0.0.1"])
        XCTAssertEqual(quiet.standardOutput.split(separator: "\n").count, 1, quiet.standardOutput)
    }

    func testDatagramSocketsWorkWithoutTheCapabilityWhenPingGroupRangeAllows() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "setpriv"])
        try Harness.withNamespace(pingGroupRange: "0 2147483647") { namespace in
            let result = try Harness.run(["ip", "netns", "exec", namespace, "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--",
                                          netprobe, "ping", "-c", "5", "-i", "0.02", "127.0.0.1", "::1", "--json", "-v"])
            XCTAssertEqual(result.status, 0, result.standardError)
            XCTAssertTrue(result.standardError.contains("ipv4=datagram"), "expected datagram sockets: \(result.standardError)")
            XCTAssertTrue(result.standardError.contains("ipv6=datagram"), result.standardError)
            for target in ["127.0.0.1", "::1"] {
                let line = try round(try result.jsonLines(), target: target)
                XCTAssertEqual(line["received"] as? Int, 5)
                XCTAssertEqual(line["result"] as? String, "ok")
                XCTAssertNotNil(line["timestamp_source"] as? String)
            }
        }
    }

    func testWithNeitherRawNorDatagramSocketsItExitsFourNamingBothFixes() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "setpriv"])
        try Harness.withNamespace(pingGroupRange: "1 0") { namespace in
            let result = try Harness.run(["ip", "netns", "exec", namespace, "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--",
                                          netprobe, "ping", "-c", "1", "127.0.0.1"])
            XCTAssertEqual(result.status, 4)
            XCTAssertTrue(result.standardError.contains("sudo setcap cap_net_raw+ep /"), result.standardError)
            XCTAssertTrue(result.standardError.contains("sysctl -w net.ipv4.ping_group_range="), result.standardError)
            XCTAssertEqual(result.standardOutput, "")
        }
    }

    /// The capability sets of every thread of a process, from /proc.
    func capabilitySets(of pid: Int32) throws -> [String] {
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        return try tasks.map { task in
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
            return status.split(separator: "\n").filter { $0.hasPrefix("CapEff") || $0.hasPrefix("CapPrm") || $0.hasPrefix("NoNewPrivs") }.joined(separator: " ")
        }
    }

    func testNonRootUserHoldingOnlyNetRawProbesAndEndsWithNoCapabilities() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["setpriv"])
        let running = try Harness.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                         "--inh-caps=+net_raw", "--ambient-caps=+net_raw", "--",
                                         netprobe, "ping", "-c", "30", "-i", "0.05", "127.0.0.1"])
        // Waits for the first reply; the limit only keeps a broken run from hanging the suite.
        XCTAssertTrue(TestEnvironment.eventually(within: 60) { running.outputSoFar.contains("bytes from 127.0.0.1") }, "no reply")
        let sets = try capabilitySets(of: running.process.processIdentifier)
        XCTAssertFalse(sets.isEmpty)
        for threadSet in sets {
            XCTAssertTrue(threadSet.contains("CapEff:\t0000000000000000"), threadSet)
            XCTAssertTrue(threadSet.contains("CapPrm:\t0000000000000000"), threadSet)
            XCTAssertTrue(threadSet.contains("NoNewPrivs:\t1"), threadSet)
        }
        let result = try Harness.finish(running, timeout: 30)
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardOutput.contains("127.0.0.1 : sent 30, received 30"), result.standardOutput)
    }

    func testSetcapBinaryRunByAnOrdinaryUserUsesRawSockets() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["setcap", "setpriv"])
        let directory = "/tmp/netprobe-setcap-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let copy = "\(directory)/netprobe"
        try FileManager.default.copyItem(atPath: netprobe, toPath: copy)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy)
        XCTAssertEqual(try Harness.run(["setcap", "cap_net_raw+ep", copy]).status, 0)
        let result = try Harness.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                      copy, "ping", "-c", "3", "-i", "0.02", "127.0.0.1", "--json", "-v"])
        XCTAssertEqual(result.status, 0, result.standardError)
        XCTAssertTrue(result.standardError.contains("ipv4=raw"), result.standardError)
        XCTAssertEqual(try round(try result.jsonLines(), target: "127.0.0.1")["received"] as? Int, 3)
    }

    func testUnresolvableNameYieldsAnUnresolvedRoundAndExitTwo() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip"])
        // Inside an empty namespace a DNS lookup fails at once: no query leaves the machine.
        try Harness.withNamespace { namespace in
            let result = try Harness.run(["ip", "netns", "exec", namespace, netprobe, "ping", "-c", "2", "-i", "0.02",
                                          "127.0.0.1", "no-such-host.invalid", "--json"])
            XCTAssertEqual(result.status, 2, result.standardError)
            let lines = try result.jsonLines()
            XCTAssertEqual(lines.count, 2, "an unresolved name is reported, never dropped")
            let unresolved = try round(lines, target: "no-such-host.invalid")
            XCTAssertEqual(Set(unresolved.keys), Self.jsonKeys)
            XCTAssertEqual(unresolved["result"] as? String, "unresolved")
            XCTAssertTrue(unresolved["address"] is NSNull)
            XCTAssertTrue(unresolved["rtt_min_ms"] is NSNull)
            XCTAssertTrue(unresolved["jitter_ms"] is NSNull)
            XCTAssertEqual(unresolved["sent"] as? Int, 0)
            XCTAssertEqual(try round(lines, target: "127.0.0.1")["received"] as? Int, 2)
        }
    }

    func testAddressWithoutARouteIsUnreachableAndExitsOne() throws {
        try Harness.requireRoot()
        try Harness.requireTools(["ip"])
        // 198.18.0.1 is a benchmark address; the namespace has no route, so sendmsg fails with
        // ENETUNREACH and nothing is sent anywhere.
        try Harness.withNamespace { namespace in
            let result = try Harness.run(["ip", "netns", "exec", namespace, netprobe, "ping", "-c", "3", "-i", "0.02", "-W", "0.2",
                                          "198.18.0.1", "127.0.0.1", "--json"])
            XCTAssertEqual(result.status, 1, result.standardError)
            let line = try round(try result.jsonLines(), target: "198.18.0.1")
            XCTAssertEqual(line["result"] as? String, "unreachable")
            XCTAssertEqual(line["sent"] as? Int, 3)
            XCTAssertEqual(line["received"] as? Int, 0)
            XCTAssertEqual(line["loss_percent"] as? Double, 100)
            XCTAssertTrue(line["rtt_avg_ms"] is NSNull)
            XCTAssertTrue(line["timestamp_source"] is NSNull)
        }
    }

    func testAThousandTargetsInOneCallAllAnswer() throws {
        try Harness.requireRoot()
        // 127.0.0.0/8 all answers on loopback: 1000 distinct targets.
        let targets = (0..<1000).map { "127.0.\($0 / 250).\($0 % 250 + 1)" }
        let result = try Harness.run([netprobe, "ping", "-c", "1", "--rate", "5000", "-f", "-", "--json"], timeout: 60, input: targets.joined(separator: "\n") + "\n")
        XCTAssertEqual(result.status, 0, result.standardError)
        let lines = try result.jsonLines()
        XCTAssertEqual(lines.count, 1000)
        XCTAssertEqual(Set(lines.compactMap { $0["target"] as? String }), Set(targets))
        XCTAssertEqual(lines.filter { $0["received"] as? Int == 1 }.count, 1000)
    }

    func testForeignEchoRepliesOnTheWireAreNeverCounted() throws {
        try Harness.requireRoot()
        let running = try Harness.start([netprobe, "ping", "-c", "40", "-i", "0.025", "127.0.0.1", "--json"])
        // While it runs, flood loopback with echo replies that are not netprobe's: random
        // identifiers, sequences and payloads, some truncated.
        let sender = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMP))
        XCTAssertGreaterThanOrEqual(sender, 0)
        defer { close(sender) }
        var destination = sockaddr_in()
        destination.sin_family = sa_family_t(AF_INET)
        destination.sin_addr.s_addr = inet_addr("127.0.0.1")
        for index in 0..<2000 {
            var packet = (0..<(8 + Int.random(in: 0...64))).map { _ in UInt8.random(in: 0...255) }
            packet[0] = 0
            packet[1] = 0
            packet[2] = 0
            packet[3] = 0
            var sum: UInt32 = 0
            var position = 0
            while position + 1 < packet.count { sum += UInt32(packet[position]) << 8 | UInt32(packet[position + 1]); position += 2 }
            if position < packet.count { sum += UInt32(packet[position]) << 8 }
            while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
            let checksum = ~UInt16(sum)
            packet[2] = UInt8(checksum >> 8)
            packet[3] = UInt8(checksum & 0xff)
            _ = withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(sender, packet, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if index % 100 == 0 { usleep(50_000) }
        }
        let result = try Harness.finish(running, timeout: 30)
        XCTAssertEqual(result.status, 0, result.standardError)
        let line = try round(try result.jsonLines(), target: "127.0.0.1")
        XCTAssertEqual(line["sent"] as? Int, 40)
        XCTAssertEqual(line["received"] as? Int, 40)
        XCTAssertEqual(line["duplicates"] as? Int, 0)
        XCTAssertEqual(line["late"] as? Int, 0)
    }

    func testBadArgumentsExitThreeWithAMessage() throws {
        for arguments in [["ping", "-c", "-1", "127.0.0.1"], ["ping", "-s", "4", "127.0.0.1"], ["ping", "-4", "-6", "127.0.0.1"],
                          ["ping", "--rate", "0", "127.0.0.1"], ["ping", "-i", "soon", "127.0.0.1"], ["ping", "-f", "/nonexistent/targets"]] {
            let result = try Harness.run([netprobe] + arguments)
            XCTAssertEqual(result.status, 3, "\(arguments): \(result.standardError)")
            XCTAssertFalse(result.standardError.isEmpty, "\(arguments) needs a message")
        }
    }
}
