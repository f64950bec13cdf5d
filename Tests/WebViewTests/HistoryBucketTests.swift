import ProbeResults
import WebView
import XCTest

final class HistoryBucketTests: XCTestCase {
    func testLossIsWhatWasSentAndNotReceived() {
        let bucket = HistoryBucket(startNanoseconds: 0, durationNanoseconds: 60_000_000_000, rounds: 3, sent: 30, received: 21,
                                   minimumMilliseconds: 1, medianMilliseconds: 2, maximumMilliseconds: 3)
        XCTAssertEqual(bucket.lossPercent, 30, accuracy: 1e-9)
        let empty = HistoryBucket(startNanoseconds: 0, durationNanoseconds: 1, rounds: 0, sent: 0, received: 0,
                                  minimumMilliseconds: nil, medianMilliseconds: nil, maximumMilliseconds: nil)
        XCTAssertEqual(empty.lossPercent, 0)
    }
}
