import FoundationEssentials
import ProbeResults

/// A loss rate (or a failure rate) measured on a number of probes, with how sure it is:
/// its 95 % confidence interval, by the Wilson score interval.
///
/// Why Wilson: a default `check` sends about 50 probes, and the threshold is 5 %, where the
/// normal approximation ("p ± 1.96 standard errors") is poor: at 0 losses it gives the
/// interval 0-0 %, as sure of "no loss" after 5 probes as after 5,000. The Wilson interval
/// stays inside 0-100 %, is not degenerate at 0 or all lost, and covers the true rate about
/// 95 % of the time down to a handful of probes (Brown, Cai and DasGupta, "Interval
/// Estimation for a Binomial Proportion", 2001).
public struct LossEstimate: Sendable, Equatable {
    /// Probes without a timely answer.
    public var lost: Int
    /// Probes counted, the trace's included when they were pooled (`traceProbes`).
    public var probes: Int
    /// How many of `probes` were the trace's (its probes that reached the target), 0 when
    /// the trace was not pooled.
    public var traceProbes: Int
    /// `lost` in percent of `probes`; 0 when nothing was counted.
    public var percent: Double
    /// The 95 % interval's bounds, in percent.
    public var lowPercent: Double
    public var highPercent: Double

    /// The normal quantile of a two-sided 95 % interval.
    public static let z = 1.959_963_984_540_054

    /// - Parameters:
    ///   - lost: probes without a timely answer (clamped to 0...`probes`).
    ///   - probes: probes counted; with none, the interval is 0-100 %: nothing is known.
    ///   - traceProbes: how many of `probes` the trace contributed.
    public init(lost: Int, probes: Int, traceProbes: Int = 0) {
        let probes = max(0, probes)
        let lost = min(max(0, lost), probes)
        self.lost = lost
        self.probes = probes
        self.traceProbes = traceProbes
        guard probes > 0 else {
            (percent, lowPercent, highPercent) = (0, 0, 100)
            return
        }
        let n = Double(probes)
        let share = Double(lost) / n
        let zz = Self.z * Self.z
        let center = (share + zz / (2 * n)) / (1 + zz / n)
        let halfWidth = Self.z / (1 + zz / n) * (share * (1 - share) / n + zz / (4 * n * n)).squareRoot()
        percent = share * 100
        // (At 0 or all lost one bound is exactly 0 or 1; rounding may miss it by 1e-17.)
        lowPercent = lost == 0 ? 0 : max(0, center - halfWidth) * 100
        highPercent = lost == probes ? 100 : min(1, center + halfWidth) * 100
    }

    /// What the estimate says against a threshold.
    public enum Decision: String, Sendable {
        /// The whole interval is at or above the threshold: the rate is a problem.
        case above
        /// The whole interval is below it: the rate is not a problem.
        case below
        /// The interval straddles it: more probes are needed to tell.
        case undecided
    }

    /// `above` when the interval's lower bound is at or above `thresholdPercent`, `below`
    /// when its upper bound is below it, otherwise `undecided`.
    public func decision(thresholdPercent: Double) -> Decision {
        if lowPercent >= thresholdPercent { return .above }
        if highPercent < thresholdPercent { return .below }
        return .undecided
    }

    /// "4.0 % (95 % interval 1.1-13.5 %, 50 probes)": the rate once, with how sure it is.
    /// - Parameter unit: what was counted ("probes", "handshakes").
    func text(unit: String) -> String {
        var count = "\(probes) \(unit)"
        if traceProbes > 0 { count += ": \(probes - traceProbes) pings, \(traceProbes) traced" }
        return "\(Self.percent(percent)) (95 % interval \(Self.number(lowPercent))-\(Self.percent(highPercent)), \(count))"
    }

    /// One decimal and a space before the sign: "4.0 %".
    static func percent(_ value: Double) -> String { number(value) + " %" }

    static func number(_ value: Double) -> String { DecimalText.fixed(value, places: 1) }
}
