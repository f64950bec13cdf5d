import NetSim
import XCTest

/// The reply builders, checked byte by byte: checksums, addresses, TCP fields, quotes.
final class PacketBuilderTests: XCTestCase {
    let client4 = SimulatedAddress("198.18.0.1")!
    let host4 = SimulatedAddress("198.18.1.5")!
    let client6 = SimulatedAddress("2001:db8::1")!
    let host6 = SimulatedAddress("2001:db8:1::5")!

    func echoRequest(_ source: SimulatedAddress, _ destination: SimulatedAddress, payload: Int = 56) -> [UInt8] {
        var message: [UInt8] = [source.isIPv6 ? 128 : 8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07]
        message += (0..<payload).map { UInt8(truncatingIfNeeded: $0) }
        return SimulatedPacket.ipPacket(source: source, destination: destination, transport: source.isIPv6 ? 58 : 1, ttl: 64,
                                        transportMessage: message, checksumOffset: 2)
    }

    func syn(_ source: SimulatedAddress, _ destination: SimulatedAddress, port: UInt16) -> [UInt8] {
        var segment = [UInt8](repeating: 0, count: 20)
        segment[0] = 0xc3; segment[1] = 0x50                     // source port 50000
        segment[2] = UInt8(port >> 8); segment[3] = UInt8(port & 0xff)
        segment[4] = 0x11; segment[5] = 0x22; segment[6] = 0x33; segment[7] = 0x44   // sequence
        segment[12] = 5 << 4
        segment[13] = 0x02                                       // SYN
        segment[14] = 0xff; segment[15] = 0xff
        return SimulatedPacket.ipPacket(source: source, destination: destination, transport: 6, ttl: 64, transportMessage: segment, checksumOffset: 16)
    }

    /// Verifies the IPv4 header checksum (if any) and the transport checksum of `packet`.
    func assertChecksumsValid(_ packet: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws {
        let header = try packet.withUnsafeBytes { try SimulatedPacket.header($0) }
        if !header.isIPv6 {
            XCTAssertEqual(SimulatedPacket.checksum(Array(packet[0..<20])), 0, "IPv4 header checksum", file: file, line: line)
        }
        let transport = Array(packet[header.transportOffset..<header.end])
        let pseudo = header.transport == 1 ? [] : SimulatedPacket.pseudoHeader(source: header.source.bytes, destination: header.destination.bytes,
                                                                               transport: header.transport, length: transport.count)
        XCTAssertEqual(SimulatedPacket.checksum(transport, pseudoHeader: pseudo), 0, "transport checksum", file: file, line: line)
    }

    func testChecksumMatchesRFC1071Example() {
        // RFC 1071 section 3: the words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0xddf2.
        XCTAssertEqual(SimulatedPacket.checksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), ~UInt16(0xddf2))
        XCTAssertEqual(SimulatedPacket.checksum([0x01]), ~UInt16(0x0100), "an odd last byte is padded with zero")
    }

    func testEchoReplySwapsAddressesKeepsIdentifierAndDataAndUsesRuleTTL() throws {
        for (client, host, type) in [(client4, host4, UInt8(0)), (client6, host6, UInt8(129))] {
            let request = echoRequest(client, host)
            let reply = request.withUnsafeBytes { raw in
                SimulatedPacket.echoReply(to: raw, header: try! SimulatedPacket.header(raw), ttl: 60)
            }
            try assertChecksumsValid(reply)
            let header = try reply.withUnsafeBytes { try SimulatedPacket.header($0) }
            XCTAssertEqual(header.source, host)
            XCTAssertEqual(header.destination, client)
            XCTAssertEqual(header.ttl, 60)
            XCTAssertEqual(reply[header.transportOffset], type)
            XCTAssertEqual(Array(reply[(header.transportOffset + 4)...]), Array(request[(header.transportOffset + 4)...]), "identifier, sequence and data echoed")
            XCTAssertEqual(reply.count, request.count)
        }
    }

    func testSynAckAcknowledgesTheSynAndCarriesAnMSSOption() throws {
        for (client, host) in [(client4, host4), (client6, host6)] {
            let request = syn(client, host, port: 80)
            let reply = request.withUnsafeBytes { raw in
                SimulatedPacket.tcpSynAck(to: raw, header: try! SimulatedPacket.header(raw), ttl: 64, initialSequence: 0xdead_beef, maximumSegmentSize: 1460)
            }
            try assertChecksumsValid(reply)
            let header = try reply.withUnsafeBytes { try SimulatedPacket.header($0) }
            let tcp = Array(reply[header.transportOffset...])
            XCTAssertEqual(header.source, host)
            XCTAssertEqual(header.destination, client)
            XCTAssertEqual(tcp.count, 24)
            XCTAssertEqual(tcp[0..<4], [0x00, 80, 0xc3, 0x50], "ports swapped")
            XCTAssertEqual(tcp[4..<8], [0xde, 0xad, 0xbe, 0xef], "our initial sequence number")
            XCTAssertEqual(tcp[8..<12], [0x11, 0x22, 0x33, 0x45], "acknowledges the SYN: their sequence + 1")
            XCTAssertEqual(tcp[12] >> 4, 6, "data offset covers the option")
            XCTAssertEqual(tcp[13], 0x12, "SYN and ACK, nothing else")
            XCTAssertEqual(tcp[20..<24], [2, 4, 0x05, 0xb4], "MSS option, 1460")
        }
    }

    func testResetAcknowledgesTheSynWithSequenceZero() throws {
        for (client, host) in [(client4, host4), (client6, host6)] {
            let request = syn(client, host, port: 81)
            let reply = request.withUnsafeBytes { raw in
                SimulatedPacket.tcpResetAck(to: raw, header: try! SimulatedPacket.header(raw), ttl: 64)
            }
            try assertChecksumsValid(reply)
            let header = try reply.withUnsafeBytes { try SimulatedPacket.header($0) }
            let tcp = Array(reply[header.transportOffset...])
            XCTAssertEqual(tcp[0..<4], [0x00, 81, 0xc3, 0x50])
            XCTAssertEqual(tcp[4..<8], [0, 0, 0, 0])
            XCTAssertEqual(tcp[8..<12], [0x11, 0x22, 0x33, 0x45])
            XCTAssertEqual(tcp[13], 0x14, "RST and ACK")
        }
    }

    func testUnreachableQuotesTheOriginalPacket() throws {
        let cases: [(SimulatedAddress, SimulatedAddress, SimulatedPacket.Unreachable, UInt8, UInt8)] = [
            (client4, host4, .host, 3, 1), (client4, host4, .port, 3, 3),
            (client6, host6, .host, 1, 3), (client6, host6, .port, 1, 4),
        ]
        for (client, host, kind, type, code) in cases {
            let request = syn(client, host, port: 83)
            let reply = request.withUnsafeBytes { raw in
                SimulatedPacket.unreachable(kind, quoting: raw, header: try! SimulatedPacket.header(raw), ttl: 64)
            }
            try assertChecksumsValid(reply)
            let header = try reply.withUnsafeBytes { try SimulatedPacket.header($0) }
            XCTAssertEqual(header.transport, client.isIPv6 ? 58 : 1)
            XCTAssertEqual(reply[header.transportOffset], type)
            XCTAssertEqual(reply[header.transportOffset + 1], code)
            XCTAssertEqual(Array(reply[(header.transportOffset + 8)...]), request, "the whole (small) original packet is quoted")
        }
    }

    func testUnreachableQuotesAsMuchAsFitsTheMinimumMTU() throws {
        for (client, host, limit) in [(client4, host4, 576), (client6, host6, 1280)] {
            let request = echoRequest(client, host, payload: 1400)
            let reply = request.withUnsafeBytes { raw in
                SimulatedPacket.unreachable(.host, quoting: raw, header: try! SimulatedPacket.header(raw), ttl: 64)
            }
            try assertChecksumsValid(reply)
            XCTAssertEqual(reply.count, limit)
            let header = try reply.withUnsafeBytes { try SimulatedPacket.header($0) }
            let quoted = Array(reply[(header.transportOffset + 8)...])
            XCTAssertEqual(quoted, Array(request.prefix(quoted.count)), "a prefix of the original, IP header first")
            XCTAssertGreaterThanOrEqual(quoted.count, (client.isIPv6 ? 40 : 20) + 8)
        }
    }

    func testRequestsAreClassified() throws {
        let echo = echoRequest(client6, host6)
        let synPacket = syn(client4, host4, port: 443)
        XCTAssertEqual(try echo.withUnsafeBytes { try SimulatedPacket.request($0, header: try SimulatedPacket.header($0)) }, .echoRequest(identifier: 0x1234, sequence: 7))
        XCTAssertEqual(try synPacket.withUnsafeBytes { try SimulatedPacket.request($0, header: try SimulatedPacket.header($0)) },
                       .tcpSyn(sourcePort: 50000, destinationPort: 443, sequence: 0x1122_3344))
        var ack = synPacket
        ack[20 + 13] = 0x10
        XCTAssertEqual(try ack.withUnsafeBytes { try SimulatedPacket.request($0, header: try SimulatedPacket.header($0)) }, .tcpOther(sourcePort: 50000, destinationPort: 443))
        XCTAssertThrowsError(try [UInt8](repeating: 0x45, count: 10).withUnsafeBytes { try SimulatedPacket.header($0) })
    }
}

/// Rule syntax and longest-prefix matching.
final class RuleTests: XCTestCase {
    func testFlagSyntaxParsesEveryKey() throws {
        let rule = try HostRule(parsing: "198.18.1.0/24 delay=10ms jitter=normal:1ms loss=0.2 ttl=60 tcp=80:open,81:closed,82:filtered,83:rejected,1000-1010:open tcp-default=filtered")
        XCTAssertEqual(rule.prefix, AddressPrefix("198.18.1.0/24"))
        XCTAssertEqual(rule.delay, .normal(mean: 10_000_000, standardDeviation: 1_000_000))
        XCTAssertEqual(rule.loss, 0.2)
        XCTAssertEqual(rule.ttl, 60)
        XCTAssertEqual(rule.behaviour(port: 80), .open)
        XCTAssertEqual(rule.behaviour(port: 81), .closed)
        XCTAssertEqual(rule.behaviour(port: 82), .filtered)
        XCTAssertEqual(rule.behaviour(port: 83), .rejected)
        XCTAssertEqual(rule.behaviour(port: 1005), .open)
        XCTAssertEqual(rule.behaviour(port: 9), .filtered)
        XCTAssertEqual(try HostRule(parsing: "2001:db8:9::/48 unreachable").unreachable, UnreachableAnswer(code: .host, place: .host))
        XCTAssertEqual(try HostRule(parsing: "198.18.2.0/24 delay=5ms..15ms").delay, .uniform(minimum: 5_000_000, maximum: 15_000_000))
    }

    func testBadRulesSayWhatToChange() {
        for bad in ["", "198.18.1.0/33", "198.18.1.0/24 delay=fast", "198.18.1.0/24 loss=2", "198.18.1.0/24 tcp=80:maybe", "198.18.1.0/24 colour=red"] {
            XCTAssertThrowsError(try HostRule(parsing: bad), bad)
        }
    }

    func testLongestPrefixWins() throws {
        let rules = RuleSet([try HostRule(parsing: "198.18.0.0/15 ttl=10"), try HostRule(parsing: "198.18.1.0/24 ttl=20"), try HostRule(parsing: "198.18.1.7/32 ttl=30")])
        XCTAssertEqual(rules.rule(for: SimulatedAddress("198.18.1.7")!).ttl, 30)
        XCTAssertEqual(rules.rule(for: SimulatedAddress("198.18.1.8")!).ttl, 20)
        XCTAssertEqual(rules.rule(for: SimulatedAddress("198.19.0.1")!).ttl, 10)
        XCTAssertEqual(rules.rule(for: SimulatedAddress("2001:db8::5")!).ttl, 64, "no rule: the default")
    }

    func testYAMLRulesUseTheFlagKeys() throws {
        let rules = try RuleSet.rules(yaml: """
            rules:
              - prefix: 198.18.1.0/24
                delay: 10ms
                loss: 0.2
                ttl: 60
                tcp: 80:open,81:closed
              - prefix: 2001:db8:9::/48
                unreachable: true
            """)
        XCTAssertEqual(rules.count, 2)
        XCTAssertEqual(rules[0].delay, .fixed(10_000_000))
        XCTAssertEqual(rules[0].loss, 0.2)
        XCTAssertEqual(rules[0].ttl, 60)
        XCTAssertEqual(rules[0].behaviour(port: 80), .open)
        XCTAssertEqual(rules[1].unreachable, UnreachableAnswer(code: .host, place: .host), "unreachable: true is the host answering host unreachable")
        XCTAssertThrowsError(try RuleSet.rules(yaml: "rules:\n  - delay: 10ms\n"))
    }

    func testBinomialIntervalMatchesTheNormalApproximation() {
        let interval = SimulatorHarness.binomialInterval(trials: 1000, probability: 0.2, confidence: 0.99)
        XCTAssertEqual(Double(interval.lowerBound), 167.4, accuracy: 2)
        XCTAssertEqual(Double(interval.upperBound), 232.6, accuracy: 2)
    }
}
