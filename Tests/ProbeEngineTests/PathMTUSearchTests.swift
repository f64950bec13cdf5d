import ProbeResults
import XCTest
@testable import ProbeEngine

/// `trace --mtu`'s pure parts: the MTU a "too big" names (from the header, IPv4 and IPv6),
/// and the search's rules (which size next, which hop dropped, what each hop passed).
final class PathMTUSearchTests: XCTestCase {
    let router4 = IPAddress(parsing: "198.18.2.2")!
    let router6 = IPAddress(parsing: "2001:db8:2::2")!

    /// A raw IPv4 read of "fragmentation needed" naming `mtu`, quoting a 1500-byte probe's header and 28 bytes.
    func fragmentationNeeded(mtu: UInt16) -> [UInt8] {
        var probe: [UInt8] = []
        PathPacket.encodeRequest(family: .ipv4, identifier: 0xbeef, probeNumber: 7, cookie: 1, flow: 0, payloadLength: 1472, into: &probe)
        let quoted: [UInt8] = [0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 2, 1, 0, 0, 198, 18, 1, 1, 198, 18, 5, 2] + probe.prefix(28)
        var message: [UInt8] = [3, 4, 0, 0, 0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xff)] + quoted
        let sum = ICMPEcho.checksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return [0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 2, 2, 198, 18, 1, 1] + message
    }

    /// An ICMPv6 "packet too big" naming `mtu` (raw IPv6 reads start at the ICMPv6 header).
    func packetTooBig(mtu: UInt32) -> [UInt8] {
        var probe: [UInt8] = []
        PathPacket.encodeRequest(family: .ipv6, identifier: 0xbeef, probeNumber: 7, cookie: 1, flow: 0, payloadLength: 1452, into: &probe)
        let source: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1] + Array(repeating: 0, count: 9) + [1]
        let destination: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 5] + Array(repeating: 0, count: 9) + [2]
        let quoted: [UInt8] = [0x60, 0, 0, 0, 0x05, 0xb4, 58, 2] + source + destination + probe.prefix(64)
        return [2, 0, 0, 0] + withUnsafeBytes(of: mtu.bigEndian) { Array($0) } + quoted
    }

    func testFragmentationNeededNamesTheMTUOfBytesSixAndSeven() throws {
        let report = try fragmentationNeeded(mtu: 1400).withUnsafeBytes { PathPacket.decodeError($0, family: .ipv4, includesIPHeader: true) }.get()
        XCTAssertEqual(report.kind, .tooBig)
        XCTAssertEqual(report.mtu, 1400)
        XCTAssertEqual(report.quotedTTL, 2)
        XCTAssertEqual(report.probe, .echo(identifier: 0xbeef, sequence: 7, cookie: 1, probeNumber: 7))
        let old = try fragmentationNeeded(mtu: 0).withUnsafeBytes { PathPacket.decodeError($0, family: .ipv4, includesIPHeader: true) }.get()
        XCTAssertNil(old.mtu, "a router older than RFC 1191 names none")
    }

    func testPacketTooBigNamesTheMTUOfBytesFourToSeven() throws {
        let report = try packetTooBig(mtu: 1280).withUnsafeBytes { PathPacket.decodeError($0, family: .ipv6, includesIPHeader: false) }.get()
        XCTAssertEqual(report.kind, .tooBig)
        XCTAssertEqual(report.mtu, 1280)
        let huge = try packetTooBig(mtu: 0x0001_0000).withUnsafeBytes { PathPacket.decodeError($0, family: .ipv6, includesIPHeader: false) }.get()
        XCTAssertEqual(huge.mtu, 65_535, "capped at the largest packet")
        let timeExceeded = try ([3, 0, 0, 0, 0, 0, 5, 0x78] + packetTooBig(mtu: 1280).dropFirst(8)).withUnsafeBytes {
            PathPacket.decodeError($0, family: .ipv6, includesIPHeader: false)
        }.get()
        XCTAssertNil(timeExceeded.mtu, "only too big names an MTU")
    }

    func testTheNextSizeIsTheNamedMTUElseThePlateauBelow() {
        XCTAssertEqual(PathMTUSearch.lower(1500, named: 1400, family: .ipv4), 1400)
        XCTAssertEqual(PathMTUSearch.lower(1500, named: nil, family: .ipv4), 1492, "RFC 1191's plateau below 1500")
        XCTAssertEqual(PathMTUSearch.lower(1500, named: 1500, family: .ipv4), 1492, "an MTU no smaller than the probe is no answer")
        XCTAssertEqual(PathMTUSearch.lower(1500, named: 40, family: .ipv4), 1492, "an impossible MTU is no answer")
        XCTAssertEqual(PathMTUSearch.lower(1400, named: 1000, family: .ipv6), 1280, "IPv6 links carry 1280 at least: a smaller MTU is no answer")
        XCTAssertNil(PathMTUSearch.lower(1280, named: nil, family: .ipv6), "nothing smaller can be asked of IPv6")
        XCTAssertNil(PathMTUSearch.lower(68, named: nil, family: .ipv4), "IPv4 links carry 68 at least")
    }

    func testTooBigsNameTheReportingHopFromTheQuotedTTLAndEachHopKeepsItsLargestAnsweredSize() {
        let target = ProbeTarget(name: "d", address: IPAddress(parsing: "198.18.5.2"))
        var search = PathMTUSearch(targets: [target], configuration: PathProbeConfiguration(maxHops: 8, discoversMTU: true))
        XCTAssertEqual(search.size(of: 0, ttl: 1), 65_535, "without -s: the largest packet, for the interface to refuse")
        XCTAssertTrue(search.refused(0, size: 65_535, interfaceMTU: 1500))
        XCTAssertEqual(search.size(of: 0, ttl: 1), 1500)
        search.passed(0, ttl: 1, size: 1500)
        search.passed(0, ttl: 2, size: 1500)
        // TTL 4 reached router 2 with 3 left: router 2 (hop 4 - 3 + 1) named 1400.
        XCTAssertTrue(search.tooBig(0, ttl: 4, size: 1500, quotedTTL: 3, from: router4, named: 1400, sourceHop: nil))
        XCTAssertTrue(search.tooBig(0, ttl: 3, size: 1500, quotedTTL: 2, from: router4, named: 1400, sourceHop: nil))
        XCTAssertEqual((1...4).map { search.size(of: 0, ttl: $0) }, [1500, 1500, 1400, 1400], "beyond router 2 only")
        search.passed(0, ttl: 3, size: 1400)
        // A quote that names no plausible hop: the hop the address answered at.
        XCTAssertTrue(search.tooBig(0, ttl: 4, size: 1400, quotedTTL: 9, from: IPAddress(parsing: "198.18.3.2")!, named: 1280, sourceHop: 3))
        XCTAssertEqual(search.size(of: 0, ttl: 4), 1280)
        XCTAssertEqual(search.size(of: 0, ttl: 3), 1400, "router 3 lowers nothing up to itself")
        // Router 2 again, about a probe of TTL 5 sent at 1500 before its first answer came.
        XCTAssertTrue(search.tooBig(0, ttl: 5, size: 1500, quotedTTL: 4, from: router4, named: 1400, sourceHop: nil))
        XCTAssertEqual(search.size(of: 0, ttl: 5), 1280, "the drops stay where they are")
        search.passed(0, ttl: 4, size: 1280)
        search.passed(0, ttl: 5, size: 1280)
        var hops = (1...5).map { HopReport(hop: $0, addresses: [], sent: 1, received: 1, rttsMilliseconds: [1], isDestination: $0 == 5, unreachable: 0) }
        let report = search.report(0, hops: &hops, endTTL: 5)
        XCTAssertEqual(hops.map(\.mtu), [1500, 1500, 1400, 1280, 1280])
        XCTAssertEqual(hops.map(\.tooBig), [0, 0, 1, 2, 1])
        XCTAssertEqual(report?.drops, [PathMTUDrop(hop: 2, address: router4, mtu: 1400), PathMTUDrop(hop: 3, address: IPAddress(parsing: "198.18.3.2")!, mtu: 1280)])
        XCTAssertEqual(report?.pathMTU, 1280)
        XCTAssertEqual(report?.firstSize, 1500)
        XCTAssertEqual(report?.sentence, "path MTU 1500 -> 1400 at hop 2 (198.18.2.2), -> 1280 at hop 3 (198.18.3.2)")
    }

    func testTCPTargetsAndTracesWithoutMTUAreNotSearched() {
        let icmp = ProbeTarget(name: "a", address: router6)
        var tcp = ProbeTarget(name: "b", address: router6)
        tcp.port = 80
        let on = PathMTUSearch(targets: [icmp, tcp], configuration: PathProbeConfiguration(discoversMTU: true, mtuStartPayloadLength: 1452))
        XCTAssertEqual(on.size(of: 0, ttl: 1), 1500, "1452 bytes of payload and 48 of IPv6 and ICMPv6 headers")
        XCTAssertNil(on.size(of: 1, ttl: 1))
        let off = PathMTUSearch(targets: [icmp], configuration: PathProbeConfiguration())
        XCTAssertNil(off.size(of: 0, ttl: 1))
    }
}
