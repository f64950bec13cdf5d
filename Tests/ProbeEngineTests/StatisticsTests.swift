import ProbeResults
import XCTest
@testable import ProbeEngine

final class StatisticsTests: XCTestCase {
    func testNoSamplesGiveNoStatistics() {
        XCTAssertNil(RTTStatistics(samples: []))
    }

    func testEvenCountMedianIsTheMeanOfTheMiddleTwo() throws {
        let stats = try XCTUnwrap(RTTStatistics(samples: [4, 1, 3, 2]))
        XCTAssertEqual(stats.minimum, 1)
        XCTAssertEqual(stats.maximum, 4)
        XCTAssertEqual(stats.average, 2.5)
        XCTAssertEqual(stats.median, 2.5)
        XCTAssertEqual(stats.standardDeviation, 1.25.squareRoot(), accuracy: 1e-12, "population standard deviation")
        XCTAssertEqual(stats.jitter, (3.0 + 2.0 + 1.0) / 3.0, accuracy: 1e-12, "mean |difference| of consecutive samples, in send order")
    }

    func testOddCountMedianIsTheMiddleValue() throws {
        let stats = try XCTUnwrap(RTTStatistics(samples: [10, 12, 11]))
        XCTAssertEqual(stats.median, 11)
        XCTAssertEqual(stats.jitter, 1.5, accuracy: 1e-12)
        XCTAssertEqual(stats.standardDeviation, (2.0 / 3.0).squareRoot(), accuracy: 1e-12)
    }

    func testSingleSampleHasNoSpread() throws {
        let stats = try XCTUnwrap(RTTStatistics(samples: [0.25]))
        XCTAssertEqual(stats.minimum, 0.25)
        XCTAssertEqual(stats.median, 0.25)
        XCTAssertEqual(stats.standardDeviation, 0)
        XCTAssertEqual(stats.jitter, 0)
    }

    func testConstantSamplesHaveZeroDeviationAndJitter() throws {
        let stats = try XCTUnwrap(RTTStatistics(samples: Array(repeating: 10, count: 200)))
        XCTAssertEqual(stats.standardDeviation, 0)
        XCTAssertEqual(stats.jitter, 0)
        XCTAssertEqual(stats.average, 10)
    }
}

final class IPAddressTests: XCTestCase {
    func testNumericAddressesRoundTripThroughTheirText() {
        for text in ["127.0.0.1", "198.18.0.255", "::1", "2001:db8::5", "fe80::1:2"] {
            XCTAssertEqual(IPAddress(parsing: text)?.description, text)
        }
        XCTAssertNil(IPAddress(parsing: "localhost"))
        XCTAssertNil(IPAddress(parsing: "256.0.0.1"))
    }

    func testLoopbackIsRecognised() {
        XCTAssertEqual(IPAddress(parsing: "127.4.5.6")?.isLoopback, true)
        XCTAssertEqual(IPAddress(parsing: "::1")?.isLoopback, true)
        XCTAssertEqual(IPAddress(parsing: "198.18.0.1")?.isLoopback, false)
        XCTAssertEqual(IPAddress(parsing: "::2")?.isLoopback, false)
    }

    func testResolverParsesNumericAndBracketedAddressesAndHonoursTheFamily() async {
        let targets = await Resolver.resolve(["127.0.0.1", "[::1]", "::1"], preference: .ipv4Only)
        XCTAssertEqual(targets.map(\.address?.description), ["127.0.0.1", nil, nil])
        XCTAssertEqual(targets[1].name, "[::1]")
        XCTAssertTrue(targets[2].resolutionError?.contains("-4") == true)
    }
}
