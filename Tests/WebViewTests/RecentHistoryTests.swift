import ProbeResults
@testable import WebView
import XCTest

final class RecentHistoryTests: XCTestCase {
    typealias F = WebCoreFixture

    func testUnbucketedSeriesKeepsOneExactBucketPerRound() {
        // 60 s rounds: wider than the narrowest bucket (30 s), so each round is a bucket.
        let history = RecentHistory(roundIntervals: [.icmp: 60 * F.second])
        let rounds = [
            F.round(.icmp, "a.example", start: F.start + 1_250_000_000, rtts: [1.5, 2.5, 2.0, 1.75, 3.0]),
            F.round(.icmp, "a.example", start: F.start + 61_250_000_000, rtts: [4.0, 0.5]),
            F.round(.icmp, "a.example", start: F.start + 121_250_000_000, rtts: []),
        ]
        for round in rounds { history.observe(round, env: "lab", probe: "p") }
        let key = WebSeriesKey(round: rounds[0], env: "lab")
        var expected = [
            HistoryBucket(startNanoseconds: F.start + 1_250_000_000, durationNanoseconds: 60 * F.second, rounds: 1, sent: 5, received: 5,
                          minimumMilliseconds: 1.5, medianMilliseconds: 2.0, maximumMilliseconds: 3.0),
            HistoryBucket(startNanoseconds: F.start + 61_250_000_000, durationNanoseconds: 60 * F.second, rounds: 1, sent: 5, received: 2,
                          minimumMilliseconds: 0.5, medianMilliseconds: 2.25, maximumMilliseconds: 4.0),
            HistoryBucket(startNanoseconds: F.start + 121_250_000_000, durationNanoseconds: 60 * F.second, rounds: 1, sent: 5, received: 0,
                          minimumMilliseconds: nil, medianMilliseconds: nil, maximumMilliseconds: nil),
        ]
        expected[0].outcomes = [.ok]
        expected[1].outcomes = [.ok]
        expected[2].outcomes = [.timeout]
        XCTAssertEqual(history.buckets(for: key, from: 0, to: .max), expected)
        // The range is by start: [from, to).
        XCTAssertEqual(history.buckets(for: key, from: F.start + 61_250_000_000, to: F.start + 121_250_000_000), [expected[1]])

        let summary = try! XCTUnwrap(history.series().first)
        XCTAssertEqual(summary.key, key)
        XCTAssertEqual(summary.id, SeriesID.of(key))
        XCTAssertEqual(summary.rounds, 3)
        XCTAssertEqual(summary.lastOutcome, .timeout)
        XCTAssertNil(summary.lastMedianMilliseconds)
        XCTAssertEqual(summary.lastLossPercent, 100)
        XCTAssertEqual(summary.lastStartNanoseconds, F.start + 121_250_000_000)
        XCTAssertEqual(history.key(forID: summary.id), key)
    }

    func testShortIntervalPutsSeveralRoundsInABucketWithExactSums() {
        // 1 s rounds: 30 per 30 s bucket, aligned to multiples of 30 s since 1970.
        XCTAssertEqual(RecentHistory.bucketWidth(intervalNanoseconds: F.second).nanoseconds, 30 * F.second)
        XCTAssertEqual(RecentHistory.bucketWidth(intervalNanoseconds: F.second).roundsPerBucket, 30)
        XCTAssertEqual(RecentHistory.bucketWidth(intervalNanoseconds: 10 * F.second).roundsPerBucket, 3)
        XCTAssertEqual(RecentHistory.bucketWidth(intervalNanoseconds: 7 * F.second).nanoseconds, 35 * F.second)
        let history = RecentHistory(roundIntervals: [.tcp: F.second])
        var rounds: [RoundResult] = []
        for index in 0..<90 {
            // Received 5, 4, 3, 5, 4, 3...; medians of 1 to 7 ms; the slip of a real schedule.
            let received = 5 - index % 3
            let median = Double(index % 7 + 1)
            let rtts = Array(repeating: median, count: received - 2) + [median - 0.25, median + 0.5]
            rounds.append(F.round(.tcp, "b.example", port: 443, start: F.start + Int64(index) * F.second + 3_000_000, rtts: rtts))
        }
        for round in rounds { history.observe(round, env: "lab", probe: "p") }
        let key = WebSeriesKey(round: rounds[0], env: "lab")
        let buckets = history.buckets(for: key, from: 0, to: .max)
        XCTAssertEqual(buckets.count, 3)
        for (number, bucket) in buckets.enumerated() {
            let mine = rounds[(number * 30)..<(number * 30 + 30)]
            let medians = mine.map { $0.statistics!.median }.sorted()
            XCTAssertEqual(bucket.startNanoseconds, F.start + Int64(number) * 30 * F.second)
            XCTAssertEqual(bucket.durationNanoseconds, 30 * F.second)
            XCTAssertEqual(bucket.rounds, 30)
            XCTAssertEqual(bucket.sent, 150)
            XCTAssertEqual(bucket.received, mine.reduce(0) { $0 + $1.received })
            XCTAssertEqual(bucket.received, 120)
            XCTAssertEqual(bucket.minimumMilliseconds, 0.75)
            XCTAssertEqual(bucket.maximumMilliseconds, 7.5)
            XCTAssertEqual(bucket.medianMilliseconds, (medians[14] + medians[15]) / 2)
            XCTAssertEqual(bucket.outcomes, [.ok])
        }
    }

    func testABucketOfMoreRoundsThanTheSampleTakesEverySixteenthMedian() {
        // 100 ms rounds: 300 per bucket; the 32 slots keep every 16th of them by the end.
        let history = RecentHistory(roundIntervals: [.icmp: F.second / 10])
        for index in 0..<300 {
            history.observe(F.round(.icmp, "c.example", start: F.start + Int64(index) * F.second / 10, sent: 1, rtts: [Double(index)]), env: "lab", probe: "p")
        }
        // The next bucket's first round closes the first one.
        history.observe(F.round(.icmp, "c.example", start: F.start + 30 * F.second, sent: 1, rtts: [1]), env: "lab", probe: "p")
        let key = WebSeriesKey(round: F.round(.icmp, "c.example", start: 0, rtts: []), env: "lab")
        let buckets = history.buckets(for: key, from: 0, to: .max)
        XCTAssertEqual(buckets.count, 2)
        XCTAssertEqual(buckets[0].rounds, 300)
        XCTAssertEqual(buckets[0].sent, 300)
        XCTAssertEqual(buckets[0].received, 300)
        XCTAssertEqual(buckets[0].minimumMilliseconds, 0)
        XCTAssertEqual(buckets[0].maximumMilliseconds, 299)
        // Rounds 0, 16, ..., 288 (19 medians): the middle one is round 144's.
        XCTAssertEqual(buckets[0].medianMilliseconds, 144)
        XCTAssertEqual(buckets[1].medianMilliseconds, 1)
    }

    func testTheRingKeepsTheLastHourAndDropsWhatIsOlder() {
        let history = RecentHistory(roundIntervals: [.icmp: 60 * F.second, .tcp: F.second])
        for index in 0..<120 {
            history.observe(F.round(.icmp, "d.example", start: F.start + Int64(index) * 60 * F.second, rtts: [Double(index)]), env: "lab", probe: "p")
        }
        for index in 0..<7200 {
            history.observe(F.round(.tcp, "d.example", port: 22, start: F.start + Int64(index) * F.second, rtts: [Double(index / 30)]), env: "lab", probe: "p")
        }
        let icmp = WebSeriesKey(round: F.round(.icmp, "d.example", start: 0, rtts: []), env: "lab")
        let tcp = WebSeriesKey(round: F.round(.tcp, "d.example", port: 22, start: 0, rtts: []), env: "lab")
        // ICMP: the newest round and the 60 before it, an hour earlier (rounds 59-119).
        let icmpBuckets = history.buckets(for: icmp, from: 0, to: .max)
        XCTAssertEqual(icmpBuckets.count, 61)
        XCTAssertEqual(icmpBuckets.first?.startNanoseconds, F.start + 59 * 60 * F.second)
        XCTAssertEqual(icmpBuckets.first?.medianMilliseconds, 59)
        XCTAssertEqual(icmpBuckets.last?.medianMilliseconds, 119)
        // TCP: 240 buckets of 30 rounds were filled; the ring holds the newest 121.
        let tcpBuckets = history.buckets(for: tcp, from: 0, to: .max)
        XCTAssertEqual(tcpBuckets.count, 121)
        XCTAssertEqual(tcpBuckets.first?.startNanoseconds, F.start + 119 * 30 * F.second)
        XCTAssertEqual(tcpBuckets.first?.medianMilliseconds, 119)
        XCTAssertEqual(tcpBuckets.last?.startNanoseconds, F.start + 239 * 30 * F.second)
        XCTAssertEqual(tcpBuckets.map(\.rounds), Array(repeating: 30, count: 121))
        // Consecutive, no duplicates.
        XCTAssertEqual(Set(tcpBuckets.map(\.startNanoseconds)).count, 121)
    }

    func testASeriesStaysUnderFourKilobytesAndTenThousandUnderFortyMegabytes() {
        XCTAssertEqual(MemoryLayout<BucketRecord>.stride, 16)
        XCTAssertEqual(MemoryLayout<VerdictRecord>.stride, 12)
        let history = RecentHistory(roundIntervals: [.icmp: F.second, .tcp: 90 * F.second])
        let labels = ["site": "frankfurt-dc-2", "circuit": "customer-circuit-0001"]
        let name = String(repeating: "n", count: 60) + ".example"
        // Two hours of 1 s rounds: the ring wrapped, the sample filled, the window full.
        for index in 0..<7200 {
            history.observe(F.round(.icmp, name, start: F.start + Int64(index) * F.second, rtts: [1], labels: labels), env: "production", probe: "p")
        }
        let key = WebSeriesKey(round: F.round(.icmp, name, start: 0, rtts: [], labels: labels), env: "production")
        let bytes = try! XCTUnwrap(history.bytesUsed(by: key))
        // Records 121 x 16, sample 32 x 2, verdict window 20 x 12: the rest is state and text.
        XCTAssertGreaterThanOrEqual(bytes, 121 * 16 + 32 * 2 + 20 * 12)
        XCTAssertLessThanOrEqual(bytes, RecentHistory.bytesPerSeriesLimit)
        // A slow series allocates only its hour: 41 records of 90 s rounds, no sample (the
        // sample's capacity may be rounded up to the allocator's size: at most, not equal).
        history.observe(F.round(.tcp, name, port: 80, start: F.start, rtts: [1], labels: labels), env: "production", probe: "p")
        let slow = WebSeriesKey(round: F.round(.tcp, name, port: 80, start: 0, rtts: [], labels: labels), env: "production")
        XCTAssertLessThanOrEqual(try! XCTUnwrap(history.bytesUsed(by: slow)), bytes - (121 - 41) * 16 - 32 * 2)

        // 10,000 series of 1 s rounds (each allocates its whole ring at its first round).
        let many = RecentHistory(roundIntervals: [.icmp: F.second])
        for index in 0..<10_000 {
            many.observe(F.round(.icmp, "host-\(index).example.net", start: F.start, rtts: [1], labels: labels), env: "production", probe: "p")
        }
        XCTAssertEqual(many.series().count, 10_000)
        XCTAssertLessThanOrEqual(many.memoryUsedBytes, 40_000_000)
        XCTAssertGreaterThanOrEqual(many.memoryUsedBytes, 10_000 * (121 * 16 + 32 * 2 + 20 * 12))
    }

    func testSeriesIDsAreStableHexAndDifferPerSeries() {
        let a = WebSeriesKey(kind: .tcp, env: "lab", target: "a", port: 80)
        let b = WebSeriesKey(kind: .tcp, env: "lab", target: "a", port: 81)
        let c = WebSeriesKey(kind: .tcp, env: "lab", target: "a", port: 80, labels: ["x": "1"])
        XCTAssertEqual(SeriesID.of(a), SeriesID.of(WebSeriesKey(kind: .tcp, env: "lab", target: "a", port: 80)))
        XCTAssertEqual(Set([SeriesID.of(a), SeriesID.of(b), SeriesID.of(c)]).count, 3)
        XCTAssertTrue(SeriesID.isWellFormed(SeriesID.of(a)[...]))
        XCTAssertFalse(SeriesID.isWellFormed("0123456789ABCDEF"))
        XCTAssertFalse(SeriesID.isWellFormed("0123456789abcde"))
        // FNV-1a 64 of the parts (kind, group, name, port, tos, source, interface), each
        // ended by 0xff: a fixed value, the same in every process (computed apart in Python).
        XCTAssertEqual(SeriesID.of(a), "174dec9d563e691d")
    }
}

extension RecentHistoryTests {
    func testRoundsFiftyDaysApartKeepTheirStartsAndAnOlderRoundIsLeftOut() {
        // Offsets are UInt32 milliseconds (49.7 days): the base moves before they overflow.
        let history = RecentHistory(roundIntervals: [.icmp: 60 * F.second])
        let later = F.start + 50 * 86_400 * F.second
        for start in [F.start, later, later + 60 * F.second, later + 30 * F.second, later + 120 * F.second] {
            history.observe(F.round(.icmp, "e", start: start, rtts: [1]), env: "lab", probe: "p")
        }
        let key = WebSeriesKey(round: F.round(.icmp, "e", start: 0, rtts: []), env: "lab")
        // The round of 50 days ago is out of the hour; the one that went back in time
        // (later + 30 s, after later + 60 s) has no place in the ring.
        XCTAssertEqual(history.buckets(for: key, from: 0, to: .max).map(\.startNanoseconds), [later, later + 60 * F.second, later + 120 * F.second])
        XCTAssertEqual(history.series().first?.rounds, 5)
        XCTAssertNil(history.key(forID: "+0000000000000001"))
        XCTAssertNil(history.key(forID: SeriesID.of(key).uppercased()))
    }
}

extension RecentHistoryTests {
    func testRoundsObservedFromManyThreadsWhilePagesReadAreAllCounted() async {
        // The writer's task observes while the HTTP server's threads read: every round counts.
        let history = RecentHistory(roundIntervals: [.icmp: F.second])
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for index in 0..<900 {
                        history.observe(F.round(.icmp, "w\(writer)", start: F.start + Int64(index) * F.second, rtts: [1, 2]), env: "lab", probe: "p")
                    }
                }
            }
            group.addTask {
                for _ in 0..<200 {
                    _ = history.series()
                    _ = ContinuousVerdict.verdicts(history)
                    _ = history.memoryUsedBytes
                }
            }
        }
        let summaries = history.series()
        XCTAssertEqual(summaries.count, 4)
        for summary in summaries {
            XCTAssertEqual(summary.rounds, 900)
            let buckets = history.buckets(for: summary.key, from: 0, to: .max)
            XCTAssertEqual(buckets.map(\.rounds), Array(repeating: 30, count: 30))
            XCTAssertEqual(buckets.reduce(0) { $0 + $1.received }, 1800)
        }
    }
}
