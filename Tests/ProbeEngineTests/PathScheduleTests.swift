import ProbeResults
import XCTest
@testable import ProbeEngine

/// How path probes are paced (the plan, not the clock) and how a path's ending is read
/// from its hops.
final class PathScheduleTests: XCTestCase {
    let millisecond: Int64 = 1_000_000

    func testARoundsProbesAreSpreadOverHalfTheIntervalAtLeastTheRatesSpacingApart() {
        let instants = PathRun.sendInstants(count: 30, start: 5_000, interval: 1_000 * millisecond, spacing: millisecond)
        XCTAssertEqual(instants.count, 30)
        XCTAssertEqual(instants.first, 5_000)
        let gaps = zip(instants.dropFirst(), instants).map { $0 - $1 }
        XCTAssertEqual(Set(gaps), [16_666_666], "evenly: 500 ms over 30 probes")
        XCTAssertLessThan(instants.last!, 5_000 + 500 * millisecond, "all within the first half of the interval")
        // More probes than half the interval holds at the rate: the rate's spacing wins.
        let dense = PathRun.sendInstants(count: 300, start: 0, interval: 200 * millisecond, spacing: millisecond)
        XCTAssertEqual(Set(zip(dense.dropFirst(), dense).map { $0 - $1 }), [millisecond])
        XCTAssertEqual(PathRun.sendInstants(count: 0, start: 0, interval: 1, spacing: 1), [])
    }

    func testARoundGoesThroughTheSendScheduleOneProbePerPlannedInstant() {
        // A round of 30 probes planned as PathRun plans them, on the schedule every prober
        // uses; a loop that wakes when the schedule says: each wake sends exactly one probe,
        // the next planned one (the old path sender let 10 go back to back after an idle spell).
        var schedule = SendSchedule(targets: [], interval: 1_000 * millisecond, packetsPerSecond: 1000, start: 0)
        let planned = PathRun.sendInstants(count: 30, start: 7 * millisecond, interval: 1_000 * millisecond, spacing: schedule.spacing)
        for (key, instant) in planned.enumerated() { schedule.add(key, at: instant) }
        var taken: [Int] = []
        while let wake = schedule.nextWake {
            guard let due = schedule.popDue(now: wake) else { return XCTFail("nothing due at the wake the schedule asked for") }
            XCTAssertEqual(due.instant, planned[due.targetIndex])
            XCTAssertEqual(wake, planned[due.targetIndex], "sent at its own instant")
            XCTAssertNil(schedule.popDue(now: wake), "a second probe in the same wake would be a burst")
            taken.append(due.targetIndex)
        }
        XCTAssertEqual(taken, Array(0..<30), "in the order they were planned")
        // Probes planned closer than the rate allows leave one spacing apart.
        var dense = SendSchedule(targets: [], interval: 1_000 * millisecond, packetsPerSecond: 1000, start: 0)
        for key in 0..<3 { dense.add(key, at: 0) }
        var wakes: [Int64] = []
        while let wake = dense.nextWake, dense.popDue(now: wake) != nil { wakes.append(wake) }
        XCTAssertEqual(wakes, [0, millisecond, 2 * millisecond])
    }

    func hop(_ number: Int, _ address: String?) -> HopReport {
        HopReport(hop: number, addresses: address.map { [(IPAddress(parsing: $0)!, 5)] } ?? [], sent: 5, received: address == nil ? 0 : 5,
                  rttsMilliseconds: [], isDestination: false, unreachable: 0)
    }

    func testARoutingLoopIsAnAddressAnsweringAgainWithAnotherBetween() {
        let looping = [hop(1, "198.18.1.1"), hop(2, "198.18.6.2"), hop(3, "198.18.6.1"), hop(4, "198.18.6.2"), hop(5, "198.18.6.1")]
        let loop = PathRun.loop(in: looping)
        XCTAssertEqual(loop?.addresses, [IPAddress(parsing: "198.18.6.2")!, IPAddress(parsing: "198.18.6.1")!])
        XCTAssertEqual(loop?.fromHop, 2)
        let withSilence = [hop(1, "198.18.1.1"), hop(2, "198.18.6.2"), hop(3, nil), hop(4, "198.18.6.1"), hop(5, "198.18.6.2")]
        XCTAssertEqual(PathRun.loop(in: withSilence)?.fromHop, 2, "a silent hop inside the cycle does not hide it")
        XCTAssertNil(PathRun.loop(in: [hop(1, "198.18.1.1"), hop(2, "198.18.2.1"), hop(3, "198.18.3.1")]))
        XCTAssertNil(PathRun.loop(in: [hop(1, "198.18.1.1"), hop(2, "198.18.2.1"), hop(3, "198.18.2.1")]),
                     "one router answering two TTLs in a row is not a loop")
    }
}
