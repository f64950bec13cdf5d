import XCTest
@testable import Diagnosis

/// The loss estimate's 95 % interval (Wilson score) against published values, and how it
/// decides against a threshold.
final class LossEstimateTests: XCTestCase {
    func testWilsonIntervalsMatchPublishedValues() {
        // Newcombe, "Two-sided confidence intervals for the single proportion" (1998),
        // table I, method 3 (score interval without continuity correction).
        let known: [(lost: Int, probes: Int, low: Double, high: Double)] = [
            (81, 263, 25.53, 36.62), (15, 148, 6.24, 16.05), (0, 20, 0, 16.11), (1, 29, 0.61, 17.18),
            // and the values `check`'s help and README quote
            (5, 50, 4.35, 21.36), (2, 50, 1.10, 13.46), (0, 100, 0, 3.70), (10, 100, 5.52, 17.44),
        ]
        for (lost, probes, low, high) in known {
            let estimate = LossEstimate(lost: lost, probes: probes)
            XCTAssertEqual(estimate.lowPercent, low, accuracy: 0.005, "\(lost)/\(probes)")
            XCTAssertEqual(estimate.highPercent, high, accuracy: 0.005, "\(lost)/\(probes)")
            XCTAssertEqual(estimate.percent, Double(lost) / Double(probes) * 100, accuracy: 1e-9)
        }
        let allLost = LossEstimate(lost: 50, probes: 50)
        XCTAssertEqual(allLost.highPercent, 100)
        XCTAssertEqual(allLost.lowPercent, 50 / (50 + LossEstimate.z * LossEstimate.z) * 100, accuracy: 1e-9)
        let nothing = LossEstimate(lost: 0, probes: 0)
        XCTAssertEqual([nothing.lowPercent, nothing.highPercent], [0, 100], "no probes: nothing is known")
    }

    func testTheIntervalDecidesAgainstTheThresholdOnlyWhenItIsWhollyOnOneSide() {
        XCTAssertEqual(LossEstimate(lost: 10, probes: 100).decision(thresholdPercent: 5), .above)
        XCTAssertEqual(LossEstimate(lost: 0, probes: 100).decision(thresholdPercent: 5), .below)
        XCTAssertEqual(LossEstimate(lost: 0, probes: 50).decision(thresholdPercent: 5), .undecided, "0 of 50: up to 7.1 %")
        XCTAssertEqual(LossEstimate(lost: 0, probes: 73).decision(thresholdPercent: 5), .below, "0 of 73: up to 4.999 %")
        XCTAssertEqual(LossEstimate(lost: 5, probes: 50).decision(thresholdPercent: 5), .undecided)
    }
}
