import Foundation
import InfluxSink
import Logging
@testable import NetSim
import ProbeConfig
import ProbeEngine
import ProbeResults
import ProbeService
import TestSupport
import XCTest

/// Issue 30, MPLS (acceptance 3): simulated label switch routers put label stacks of one and
/// two entries into their time exceeded messages, in the RFC 4884 and the older fixed
/// 128-byte placements, IPv4 and IPv6; `netprobe trace` shows them exactly (text as mtr
/// --mpls, `--json`), and `run`'s traces write them as the `mpls` field of `hop` points to a
/// real influxd. Real processes, real packets, in a namespace of the test's own.
final class MPLSLabelTests: XCTestCase {
    // MARK: rules

    func testMPLSKeysParseInTheFlagSyntaxAndYAML() throws {
        let flag = try HostRule(parsing: "198.18.191.2/32 mpls=16005/0/1,24001/5/0,3 mpls-placement=fixed128")
        XCTAssertEqual(flag.mpls, SimulatedLabelStack(entries: [.init(label: 16005, trafficClass: 0, ttl: 1), .init(label: 24001, trafficClass: 5, ttl: 0),
                                                                .init(label: 3, trafficClass: 0, ttl: 1)], placement: .fixed128))
        XCTAssertEqual(try HostRule(parsing: "198.18.191.2/32 mpls=16005").mpls, SimulatedLabelStack(entries: [.init(label: 16005)], placement: .rfc4884),
                       "TC 0, TTL 1 and the RFC 4884 placement unless given")
        let yaml = try RuleSet.rules(yaml: """
            rules:
              - prefix: 2001:db8:191::2/128
                mpls-placement: fixed128
                mpls: [16005/0/1, 24001]
            """)
        XCTAssertEqual(yaml.first?.mpls, SimulatedLabelStack(entries: [.init(label: 16005), .init(label: 24001)], placement: .fixed128),
                       "the placement may come first")
    }

    func testBadMPLSKeysSayWhatToChange() {
        let cases: [(String, String)] = [
            ("198.18.191.2/32 mpls=1048576", "label '1048576': write 0 to 1048575 (20 bits)"),
            ("198.18.191.2/32 mpls=16005/8", "traffic class '8' in '16005/8': write 0 to 7"),
            ("198.18.191.2/32 mpls=16005/0/256", "TTL '256' in '16005/0/256': write 0 to 255"),
            ("198.18.191.2/32 mpls=16005/0/1/1", "'16005/0/1/1' is not LABEL[/TC[/TTL]]"),
            ("198.18.191.2/32 mpls=", "label '': write 0 to 1048575"),
            ("198.18.191.2/32 mpls=" + (1...17).map(String.init).joined(separator: ","), "17 entries: give 1 to 16"),
            ("198.18.191.2/32 mpls=16005 mpls-placement=rfc4950", "mpls-placement='rfc4950': write rfc4884 (the length field) or fixed128"),
            ("198.18.191.2/32 mpls-placement=fixed128", "mpls-placement=fixed128 without mpls: give the label stack too"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try HostRule(parsing: text), text) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(text): \(error)")
            }
        }
        XCTAssertThrowsError(try RuleSet.rules(yaml: "rules:\n  - prefix: 198.18.191.2/32\n    mpls: [16005/9]\n", file: "rules.yaml")) { error in
            XCTAssertTrue("\(error)".hasPrefix("rules.yaml:3: rule 1: mpls='16005/9': traffic class '9'"), "\(error)")
        }
    }

    // MARK: packets

    /// A TTL-limited echo request of ours (payload `payload` bytes) as netsim receives it.
    func probe(_ source: SimulatedAddress, _ destination: SimulatedAddress, payload: Int) -> [UInt8] {
        var message: [UInt8] = []
        PathPacket.encodeRequest(family: source.isIPv6 ? .ipv6 : .ipv4, identifier: 0xbeef, probeNumber: 5, cookie: 42, flow: 0, payloadLength: payload, into: &message)
        return SimulatedPacket.ipPacket(source: source, destination: destination, transport: source.isIPv6 ? 58 : 1, ttl: 1, transportMessage: message, checksumOffset: 2)
    }

    func testTimeExceededCarriesTheStackInEitherPlacementAndFamilyAndTheQuoteStillMatches() throws {
        let stack = SimulatedLabelStack(entries: [.init(label: 16005, trafficClass: 0, ttl: 1), .init(label: 24001, trafficClass: 5, ttl: 254)])
        let expected = [MPLSLabelStackEntry(label: 16005, trafficClass: 0, bottomOfStack: false, ttl: 1), MPLSLabelStackEntry(label: 24001, trafficClass: 5, bottomOfStack: true, ttl: 254)]
        let pairs = [(SimulatedAddress("198.18.0.1")!, SimulatedAddress("198.18.91.9")!, SimulatedAddress("198.18.191.2")!),
                     (SimulatedAddress("2001:db8::1")!, SimulatedAddress("2001:db8:91::9")!, SimulatedAddress("2001:db8:191::2")!)]
        for (client, target, router) in pairs {
            let family: AddressFamily = client.isIPv6 ? .ipv6 : .ipv4
            let ipHeader = client.isIPv6 ? 40 : 20
            // (payload, placement) -> the original datagram field's length.
            let cases: [(Int, SimulatedLabelStack.Placement, Int)] = [
                (24, .rfc4884, 128),                               // short probe: padded to 128
                (101, .rfc4884, client.isIPv6 ? 152 : 132),        // 40/20 + 8 + 101 = 149/129, up to a whole word (8 / 4 bytes)
                (2000, .rfc4884, client.isIPv6 ? 1280 - 40 - 8 - 16 : 576 - 20 - 8 - 16),  // cut so quote and extension fit 576 / 1280
                (24, .fixed128, 128), (2000, .fixed128, 128),
            ]
            for (payload, placement, datagramLength) in cases {
                var labelled = stack
                labelled.placement = placement
                let request = probe(client, target, payload: payload)
                let error = try request.withUnsafeBytes { raw in
                    SimulatedPacket.timeExceeded(from: router, quoting: raw, header: try SimulatedPacket.header(raw), ttl: 250, labelStack: labelled)
                }
                let what = "\(family) payload \(payload) \(placement)"
                let header = try error.withUnsafeBytes { try SimulatedPacket.header($0) }
                let message = Array(error[header.transportOffset...])
                let pseudo = client.isIPv6 ? SimulatedPacket.pseudoHeader(source: router.bytes, destination: client.bytes, transport: 58, length: message.count) : []
                XCTAssertEqual(SimulatedPacket.checksum(message, pseudoHeader: pseudo), 0, "\(what): the ICMP checksum covers the extension")
                XCTAssertEqual(message.count, 8 + datagramLength + 16, what)
                let lengthField = Int(message[client.isIPv6 ? 4 : 5]) * (client.isIPv6 ? 8 : 4)
                XCTAssertEqual(lengthField, placement == .rfc4884 ? datagramLength : 0, what)
                XCTAssertEqual(Array(message[8..<(8 + min(datagramLength, request.count))]), Array(request.prefix(datagramLength)), "\(what): the quote is the probe")
                let extensionBytes = Array(message[(8 + datagramLength)...])
                XCTAssertEqual(extensionBytes, [0x20, 0x00] + Array(extensionBytes[2...3]) + [0x00, 0x0c, 0x01, 0x01, 0x03, 0xe8, 0x50, 0x01, 0x05, 0xdc, 0x1b, 0xfe], what)
                XCTAssertEqual(SimulatedPacket.checksum(extensionBytes), 0, "\(what): the extension's own checksum")
                // netprobe's decoder reads what the simulator wrote.
                let report = try message.withUnsafeBytes { PathPacket.decodeError($0, family: family, includesIPHeader: false) }.get()
                XCTAssertEqual(report.labelStack, expected, what)
                XCTAssertNil(report.extensionRejection, what)
                XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 5, cookie: 42, probeNumber: 5), what)
                XCTAssertEqual(ipHeader + message.count, error.count)
            }
        }
    }

    // MARK: netprobe trace

    /// Runs `netprobe trace` with and without `--json` inside the namespace.
    func trace(_ namespace: String, _ arguments: [String]) throws -> (json: [String: [String: Any]], text: String, standardError: String) {
        let netprobe = try SimulatorHarness.binary("netprobe")
        let json = try SimulatedNetwork.execute([netprobe, "trace", "--json"] + arguments, inNamespace: namespace)
        var traces: [String: [String: Any]] = [:]
        for line in json.standardOutput.split(separator: "\n") {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
            traces[try XCTUnwrap(object["target"] as? String)] = object
        }
        let text = try SimulatedNetwork.execute([netprobe, "trace"] + arguments, inNamespace: namespace)
        XCTAssertEqual(json.status, 0, json.standardError)
        XCTAssertEqual(text.status, 0, text.standardError)
        return (traces, text.standardOutput, json.standardError + text.standardError)
    }

    /// The routers of the test paths: hop 1 plain, hop 2 and hop 3 label switch routers.
    /// IPv4: one entry in the RFC 4884 placement, then two in the fixed one; IPv6 the other
    /// way round, so each count meets each placement in one family or the other.
    static let rules = [
        "198.18.91.9/32 path=198.18.191.1,198.18.191.2,198.18.191.3",
        "198.18.191.2/32 mpls=16005/0/1",
        "198.18.191.3/32 mpls=24001/0/1,16/5/254 mpls-placement=fixed128",
        "2001:db8:91::9/128 path=2001:db8:191::1,2001:db8:191::2,2001:db8:191::3",
        "2001:db8:191::2/128 mpls=300000/7/1,17 mpls-placement=rfc4884",
        "2001:db8:191::3/128 mpls=3/0/0 mpls-placement=fixed128",
    ]

    /// Per target, per hop (1 to 4): the label stack as (label, tc, s, ttl).
    static let expected: [String: [[(Int, Int, Int, Int)]]] = [
        "198.18.91.9": [[], [(16005, 0, 1, 1)], [(24001, 0, 0, 1), (16, 5, 1, 254)], []],
        "2001:db8:91::9": [[], [(300000, 7, 0, 1), (17, 0, 1, 1)], [(3, 0, 1, 0)], []],
    ]

    func testTraceShowsEachHopsLabelStackAsMtrDoesAndInJSON() throws {
        try SimulatorHarness.requirePrivileges()
        let targets = ["198.18.91.9", "2001:db8:91::9"]
        let (traced, summary) = try SimulatedNetwork.run(rules: Self.rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "30"]) { namespace in
            try trace(namespace, ["-c", "3", "-i", "0.05", "-W", "1", "--max-hops", "8"] + targets)
        }
        for target in targets {
            let report = try XCTUnwrap(traced.json[target], "no trace of \(target): \(traced.standardError)")
            let hops = try XCTUnwrap(report["hops"] as? [[String: Any]])
            XCTAssertEqual(hops.count, 4, "\(target): three routers and the target")
            for (position, hop) in hops.enumerated() {
                let stack = try XCTUnwrap(hop["mpls"] as? [[String: Int]], "\(target) hop \(position + 1): \(hop)")
                let wanted = Self.expected[target]![position]
                XCTAssertEqual(stack, wanted.map { ["label": $0.0, "tc": $0.1, "s": $0.2, "ttl": $0.3] }, "\(target) hop \(position + 1)")
                let addresses = try XCTUnwrap(hop["addresses"] as? [[String: Any]])
                XCTAssertEqual(addresses.count, 1)
                XCTAssertEqual(addresses.first?["mpls"] as? [[String: Int]], stack, "the address carries its own stack")
                XCTAssertEqual(hop["received"] as? Int, 3, "\(target) hop \(position + 1): every answer counts, labels or not")
            }
            let ignored = try XCTUnwrap(report["ignored"] as? [String: Int])
            XCTAssertTrue(ignored.keys.allSatisfy { !$0.hasPrefix("rejected_extension") }, "\(target): no extension was rejected: \(ignored)")

            // Text: the hop's line, then one line per entry, as mtr --mpls prints them.
            let lines = traced.text.split(separator: "\n").map(String.init)
            // The headline names the target (an IPv6 literal in brackets).
            let first = try XCTUnwrap(lines.firstIndex { $0.hasPrefix(target + ":") || $0.hasPrefix("[\(target)]:") }, traced.text)
            let routers = (1...3).map { target.hasPrefix("2001") ? "2001:db8:191::\($0)" : "198.18.191.\($0)" }
            var shown: [[String]] = []
            var index = first + 2
            for hop in 1...4 {
                let address = hop == 4 ? target : routers[hop - 1]
                XCTAssertTrue(lines[index].hasPrefix(String(repeating: " ", count: 3) + "\(hop)  \(address) "), "\(target): hop \(hop) line: '\(lines[index])'")
                index += 1
                var labels: [String] = []
                while index < lines.count, lines[index].hasPrefix("      [MPLS:") {
                    labels.append(lines[index])
                    index += 1
                }
                shown.append(labels)
            }
            XCTAssertEqual(shown, Self.expected[target]!.map { stack in stack.map { "      [MPLS: Lbl \($0.0) TC \($0.1) S \($0.2) TTL \($0.3)]" } }, traced.text)
        }
        XCTAssertGreaterThan(summary.router("198.18.191.3").timeExceeded, 0)
        XCTAssertGreaterThan(summary.router("2001:db8:191::2").timeExceeded, 0)
    }

    func testAnUnreachableFromALabelSwitchRouterShowsItsStackWhereThePathEnds() throws {
        try SimulatorHarness.requirePrivileges()
        let rules = [
            "198.18.92.9/32 path=198.18.192.1,198.18.192.2 unreachable=net,at-hop:2",
            "198.18.192.2/32 mpls=16005/0/1,24001/0/1 mpls-placement=fixed128",
            "2001:db8:92::9/128 path=2001:db8:192::1,2001:db8:192::2 unreachable=net,at-hop:2",
            "2001:db8:192::2/128 mpls=16005/0/1",
        ]
        let targets = ["198.18.92.9", "2001:db8:92::9"]
        let (output, _) = try SimulatedNetwork.run(rules: rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "30"]) { namespace in
            try SimulatedNetwork.execute([SimulatorHarness.binary("netprobe"), "trace", "--json", "-c", "2", "-i", "0.05", "-W", "1", "--max-hops", "6"] + targets, inNamespace: namespace)
        }
        XCTAssertEqual(output.status, 1, "the targets are not reached: \(output.standardError)")
        let wanted: [String: [[String: Int]]] = [
            "198.18.92.9": [["label": 16005, "tc": 0, "s": 0, "ttl": 1], ["label": 24001, "tc": 0, "s": 1, "ttl": 1]],
            "2001:db8:92::9": [["label": 16005, "tc": 0, "s": 1, "ttl": 1]],
        ]
        var seen: Set<String> = []
        for line in output.standardOutput.split(separator: "\n") {
            let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let target = try XCTUnwrap(report["target"] as? String)
            seen.insert(target)
            XCTAssertEqual(report["ending"] as? String, "unreachable", "\(target): \(report)")
            let hops = try XCTUnwrap(report["hops"] as? [[String: Any]])
            XCTAssertEqual(hops.count, 2, target)
            XCTAssertEqual(hops.last?["unreachable"] as? Int, 2, "\(target): one unreachable per round")
            XCTAssertEqual(hops.last?["mpls"] as? [[String: Int]], wanted[target], "\(target): the unreachable's stack")
            XCTAssertEqual(hops.first?["mpls"] as? [[String: Int]], [], target)
        }
        XCTAssertEqual(seen, Set(targets))
    }

    // MARK: run

    func testRunWritesTheLabelStackAsTheMplsFieldOfHopPointsNeverATag() throws {
        try SimulatorHarness.requirePrivileges()
        let directory = try TestEnvironment.temporaryDirectory("mpls-run")
        let server = try TestEnvironment.blocking { try await InfluxDBTestServer.start() }
        defer { server.stop() }
        try TestEnvironment.blocking { try await server.createDatabase("netprobe") }
        let configPath = try TestEnvironment.writeRunConfig(in: directory, probe: "mpls", pingTargets: "sim: [198.18.91.9, 2001:db8:91::9]\n", sections: [
            "icmp: {interval: 1s, count: 2, spacing: 100ms, timeout: 300ms}",
            "trace: {icmp: 2s, rounds: 2, spacing: 100ms, timeout: 300ms, max_hops: 8}",
        ], influxPort: server.port)
        let configuration = try ConfigurationLoader.load(path: configPath)

        _ = try SimulatedNetwork.run(rules: Self.rules, netsimPath: SimulatorHarness.binary("netsim"), extraArguments: ["--seed", "30"]) { namespace, _ in
            let logger = Logger(label: "mpls-run")
            let (icmp, path) = try NetworkNamespace.perform(inNamespace: namespace) {
                (try ICMPSocketSet.open(families: [.ipv4, .ipv6], ttl: nil, logger: logger), try ICMPSocketSet.open(families: [.ipv4, .ipv6], ttl: nil, logger: logger))
            }
            let service = ProbeService(configuration: configuration, icmpSockets: icmp, sinks: { try InfluxSink.make(for: $0, logger: $1) }, logger: logger, pathSockets: path)
            let (control, send) = AsyncStream<ServiceControl>.makeStream()
            let running = Task.detached { try await service.run(control: control) }
            defer {
                send.yield(.stop)
                send.finish()
                _ = try? TestEnvironment.blocking { try await running.value }
            }

            /// target -> hop -> the `mpls` values written ("" where a point has none).
            func written() throws -> [String: [String: Set<String>]] {
                try TestEnvironment.blocking {
                    let series = try await server.series("SELECT \"sent\", \"mpls\" FROM \"hop\" GROUP BY \"target\", \"hop\"", database: "netprobe")
                    var values: [String: [String: Set<String>]] = [:]
                    for entry in series {
                        let tags = entry["tags"] as? [String: String] ?? [:]
                        for row in (entry["values"] as? [[Any]]) ?? [] {
                            values[tags["target"] ?? "?", default: [:]][tags["hop"] ?? "?", default: []].insert(row[2] as? String ?? "")
                        }
                    }
                    return values
                }
            }
            let wanted: [String: [String: Set<String>]] = Self.expected.mapValues { hops in
                Dictionary(uniqueKeysWithValues: hops.enumerated().map { position, stack in
                    (String(position + 1), [stack.map { "\($0.0)/\($0.1)/\($0.2)/\($0.3)" }.joined(separator: " ")])
                })
            }
            guard try TestEnvironment.eventually(within: 60, every: 0.1, { try written().count == 2 && written().values.allSatisfy { $0.count == 4 } }) else {
                return XCTFail("no hop points of both traces: \(try written())")
            }
            XCTAssertEqual(try written(), wanted, "every hop point has its hop's stack, exactly; hops without labels have no mpls field")
            let tagKeys = try TestEnvironment.blocking { try await server.series("SHOW TAG KEYS FROM \"hop\"", database: "netprobe") }
            let tags = Set(tagKeys.flatMap { (($0["values"] as? [[Any]]) ?? []).compactMap { $0.first as? String } })
            XCTAssertFalse(tags.contains("mpls"), "labels change: never a tag (\(tags))")
            let fieldKeys = try TestEnvironment.blocking { try await server.series("SHOW FIELD KEYS FROM \"hop\"", database: "netprobe") }
            let fields = fieldKeys.flatMap { ($0["values"] as? [[Any]]) ?? [] }.compactMap { row -> String? in
                guard row.count == 2, let key = row[0] as? String, let type = row[1] as? String else { return nil }
                return "\(key):\(type)"
            }
            XCTAssertTrue(fields.contains("mpls:string"), "\(fields)")
        }
    }
}
