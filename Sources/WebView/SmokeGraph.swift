import ProbeResults

/// A SmokePing-style graph of one host, as plain SVG (no script, no external reference):
/// readable without JavaScript, cacheable, a few tens of KB for 720 columns.
///
/// One column per bucket requested, each `columnPixels` wide: ⌊720 / columns⌋ pixels, at
/// least 1, so the hour's 120 buckets of 30 s draw as wide as a month's 720 buckets.
///
/// Layout: one lane per series of the host (ICMP first, then each TCP port), stacked on
/// one time axis and one RTT scale, so a TCP median above the ICMP one reads at a glance
/// and neither hides the other's smoke. In each lane, per bucket (one pixel column per
/// bucket requested):
/// - the smoke: a grey bar from the bucket's smallest to its largest RTT;
/// - the median: a 2-pixel mark (`rect.median`), coloured by the bucket's loss on
///   SmokePing's scale (`lossColor`); the marks of consecutive buckets make the line;
/// - under the plot, the loss band (`rect.loss`, the same colour) and the outcome band
///   (`rect.outcome`, only where a round ended other than ok: the worst outcome).
/// A bucket without rounds draws nothing: a gap. A bucket whose rounds got no reply has
/// no median and no smoke, only its (red) loss band. Times are UTC.
public struct SmokeGraph: Sendable {
    /// One series of the graph.
    public struct Lane: Sendable {
        /// "ICMP", "TCP port 443": text, escaped when drawn.
        public var title: String
        public var buckets: [HistoryBucket]

        public init(title: String, buckets: [HistoryBucket]) {
            self.title = title
            self.buckets = buckets
        }
    }

    /// The graph's title (the host and its group): text, escaped when drawn.
    public var title: String
    /// The time range, nanoseconds since 1970, `to` excluded.
    public var from: Int64
    public var to: Int64
    /// Columns of the plot: the number of buckets requested for the range.
    public var columns: Int
    /// The plot's width that fewer columns are widened to fill.
    public static let plotPixels = 720
    /// Pixels per column.
    public var columnPixels: Int { max(1, Self.plotPixels / columns) }
    /// The plot's width in pixels.
    public var plotWidth: Int { columns * columnPixels }
    public var lanes: [Lane]
    /// When the host's traced path changed (nanoseconds since 1970): a dashed line across
    /// the lanes at each one inside the range.
    public var pathChanges: [Int64] = []

    public init(title: String, from: Int64, to: Int64, columns: Int, lanes: [Lane]) {
        self.title = title
        self.from = from
        self.to = max(from + 1, to)
        self.columns = max(1, columns)
        self.lanes = lanes
    }

    // Layout, in pixels.
    static let left = 64
    static let right = 40
    static let top = 24
    static let laneTitle = 18
    static let plotHeight = 120
    static let lossBand = 8
    static let outcomeBand = 6
    static let laneGap = 10
    static let bottom = 40

    /// SmokePing's default loss colours (Smokeping.pm, for its default 20 pings a round):
    /// the colour of `losses` lost of 20, the largest entry at or below the count.
    public static let lossScale: [(losses: Int, color: String)] = [
        (0, "#26ff00"), (1, "#00b8ff"), (2, "#0059ff"), (3, "#5e00ff"), (4, "#7e00ff"), (10, "#dd00ff"), (19, "#ff0000"),
    ]

    /// The colour of a loss: the percentage as losses of 20 pings, rounded up (any loss
    /// at all is not green), on `lossScale`.
    /// - Parameter percent: loss in percent, 0-100.
    /// - Returns: "#rrggbb".
    public static func lossColor(percent: Double) -> String {
        guard percent > 0 else { return lossScale[0].color }
        let losses = Int((min(100, percent) / 5).rounded(.up))
        return lossScale.last { $0.losses <= losses }?.color ?? lossScale[0].color
    }

    /// The outcome band's colour of a bucket's outcomes: the worst one other than ok;
    /// nil where every round was ok.
    static func outcomeColor(_ outcomes: Set<ProbeOutcome>) -> (ProbeOutcome, String)? {
        let order: [(ProbeOutcome, String)] = [(.unresolved, "#9467bd"), (.unreachable, "#d62728"), (.tooBig, "#e377c2"), (.error, "#8c564b"),
                                               (.refused, "#ff7f0e"), (.timeout, "#7f7f7f")]
        return order.first { outcomes.contains($0.0) }
    }

    /// Total width and height of the SVG.
    public var width: Int { Self.left + plotWidth + Self.right }
    public var height: Int { Self.top + lanes.count * laneHeight + Self.bottom }
    var laneHeight: Int { Self.laneTitle + Self.plotHeight + Self.lossBand + Self.outcomeBand + Self.laneGap }

    /// The top of the RTT scale: a round number above the medians (at least 1 ms), the
    /// maxima counted only up to twice the highest median so one spike does not flatten
    /// the rest (its smoke is cut at the top).
    var scaleTop: Double {
        let buckets = lanes.flatMap(\.buckets)
        let medians = buckets.compactMap(\.medianMilliseconds)
        guard let highestMedian = medians.max() else { return 1 }
        let highest = buckets.compactMap(\.maximumMilliseconds).max() ?? highestMedian
        return Self.roundUp(max(1, max(highestMedian * 1.1, min(highest, 2 * highestMedian))))
    }

    /// 1, 2 or 5 times a power of ten, at or above the value.
    static func roundUp(_ value: Double) -> Double {
        var power = 1.0
        while power * 10 <= value { power *= 10 }
        while power > value { power /= 10 }
        for step in [1.0, 2, 5, 10] where step * power >= value { return step * power }
        return 10 * power
    }

    /// The graph as an SVG document (no XML declaration: it may be inlined in HTML).
    public func svg() -> String {
        var out = ""
        out.reserveCapacity(4096 + columns * lanes.count * 200)
        out += "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"smoke-graph\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" role=\"img\">"
        out += "<title>\(Markup.escape(title))</title>"
        out += "<rect class=\"background\" x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>"
        out += "<text class=\"graph-title\" x=\"\(Self.left)\" y=\"16\" font-family=\"sans-serif\" font-size=\"13\" fill=\"#000000\">\(Markup.escape(title))</text>"
        let top = scaleTop
        for (index, lane) in lanes.enumerated() {
            drawLane(lane, index: index, scaleTop: top, into: &out)
        }
        drawTimeAxis(into: &out)
        out += "</svg>"
        return out
    }

    /// Pixel offset in the plot and pixel width of a bucket (its column, as many columns
    /// as it spans); nil when it starts outside the range.
    func placement(of bucket: HistoryBucket) -> (column: Int, width: Int)? {
        let span = Double(to - from)
        let column = Int((Double(bucket.startNanoseconds - from) / span * Double(columns)).rounded(.down))
        guard column >= 0, column < columns else { return nil }
        let width = max(1, Int((Double(bucket.durationNanoseconds) / span * Double(columns)).rounded()))
        return (column * columnPixels, min(width, columns - column) * columnPixels)
    }

    private func drawLane(_ lane: Lane, index: Int, scaleTop: Double, into out: inout String) {
        let laneTop = Self.top + index * laneHeight
        let plotTop = laneTop + Self.laneTitle
        let plotBottom = plotTop + Self.plotHeight
        let left = Self.left
        func y(_ milliseconds: Double) -> Double {
            Double(plotBottom) - min(1, max(0, milliseconds / scaleTop)) * Double(Self.plotHeight)
        }
        out += "<g class=\"lane\">"
        out += "<text class=\"lane-title\" x=\"\(left)\" y=\"\(laneTop + 13)\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#000000\">\(Markup.escape(lane.title))</text>"
        out += "<rect class=\"plot\" x=\"\(left)\" y=\"\(plotTop)\" width=\"\(plotWidth)\" height=\"\(Self.plotHeight)\" fill=\"#f7f7f7\" stroke=\"#cccccc\"/>"
        // RTT axis: 0, half and the top of the scale.
        for fraction in [0.0, 0.5, 1.0] {
            let value = scaleTop * fraction
            let at = Markup.number(y(value))
            out += "<line class=\"grid\" x1=\"\(left)\" y1=\"\(at)\" x2=\"\(left + plotWidth)\" y2=\"\(at)\" stroke=\"#dddddd\"/>"
            out += "<text class=\"rtt-label\" x=\"\(left - 4)\" y=\"\(Markup.number(y(value) + 4))\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#333333\">\(Self.milliseconds(value))</text>"
        }
        let lossTop = plotBottom + 1
        let outcomeTop = lossTop + Self.lossBand
        for bucket in lane.buckets where bucket.rounds > 0 {
            guard let (column, width) = placement(of: bucket) else { continue }
            let x = left + column
            let color = Self.lossColor(percent: bucket.lossPercent)
            if let minimum = bucket.minimumMilliseconds, let maximum = bucket.maximumMilliseconds {
                let high = y(maximum), low = y(minimum)
                out += "<rect class=\"smoke\" x=\"\(x)\" y=\"\(Markup.number(high))\" width=\"\(width)\" height=\"\(Markup.number(max(0.5, low - high)))\" fill=\"#b4b4b4\"/>"
            }
            if let median = bucket.medianMilliseconds {
                out += "<rect class=\"median\" x=\"\(x)\" y=\"\(Markup.number(y(median) - 1))\" width=\"\(width)\" height=\"2\" fill=\"\(color)\"/>"
            }
            out += "<rect class=\"loss\" x=\"\(x)\" y=\"\(lossTop)\" width=\"\(width)\" height=\"\(Self.lossBand - 1)\" fill=\"\(color)\"/>"
            if let (outcome, outcomeColor) = Self.outcomeColor(bucket.outcomes) {
                out += "<rect class=\"outcome outcome-\(outcome.rawValue)\" x=\"\(x)\" y=\"\(outcomeTop)\" width=\"\(width)\" height=\"\(Self.outcomeBand - 1)\" fill=\"\(outcomeColor)\"/>"
            }
        }
        out += "<text class=\"band-label\" x=\"\(left + plotWidth + 4)\" y=\"\(lossTop + 7)\" text-anchor=\"start\" font-family=\"sans-serif\" font-size=\"9\" fill=\"#333333\">loss</text>"
        out += "</g>"
    }

    /// Ticks at a round step that leaves about 90 pixels between labels, and the legend.
    private func drawTimeAxis(into out: inout String) {
        let axisY = Self.top + lanes.count * laneHeight
        let span = to - from
        let minute: Int64 = 60_000_000_000
        let steps: [Int64] = [1, 5, 10, 15, 30, 60, 180, 360, 720, 1440, 2880, 10080].map { $0 * minute }
        let wanted = Double(span) * 90 / Double(plotWidth)
        let step = steps.first { Double($0) >= wanted } ?? steps.last!
        let withDate = span > 86_400_000_000_000
        var tick = (from / step + (from % step == 0 ? 0 : 1)) * step
        while tick < to {
            let x = Self.left + Int(Double(tick - from) / Double(span) * Double(plotWidth))
            out += "<line class=\"tick\" x1=\"\(x)\" y1=\"\(Self.top)\" x2=\"\(x)\" y2=\"\(axisY)\" stroke=\"#e4e4e4\"/>"
            let label = withDate ? Markup.utc(tick, date: true, time: step < 1440 * minute) : Markup.utc(tick, date: false, time: true)
            out += "<text class=\"time-label\" x=\"\(x)\" y=\"\(axisY + 4)\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#333333\">\(label)</text>"
            tick += step
        }
        for change in pathChanges where change >= from && change < to {
            let x = Self.left + Int(Double(change - from) / Double(span) * Double(plotWidth))
            out += "<line class=\"path-change\" x1=\"\(x)\" y1=\"\(Self.top)\" x2=\"\(x)\" y2=\"\(axisY)\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"><title>path changed \(Markup.utc(change, year: true)) UTC</title></line>"
        }
        out += "<text class=\"axis-caption\" x=\"\(Self.left)\" y=\"\(axisY + 18)\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#333333\">UTC, \(Markup.utc(from, year: true)) to \(Markup.utc(to, year: true)); median coloured by loss:</text>"
        var x = Self.left + 400
        for (losses, color) in Self.lossScale {
            out += "<rect class=\"legend\" x=\"\(x)\" y=\"\(axisY + 10)\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            out += "<text class=\"legend-label\" x=\"\(x + 12)\" y=\"\(axisY + 18)\" font-family=\"sans-serif\" font-size=\"9\" fill=\"#333333\">\(losses)/20</text>"
            x += 44
        }
    }

    /// "12.5 ms", "0.25 ms", "150 ms".
    static func milliseconds(_ value: Double) -> String {
        let places = value == 0 || value >= 100 ? 0 : (value >= 1 ? 1 : 2)
        return Markup.number(value, places: places) + " ms"
    }

    /// A small line of the medians (`svg.sparkline`), for the overview: one point per
    /// bucket, broken at gaps (a point between two gaps shows as a dot: round caps draw a
    /// zero-length segment), marks in the loss colour where a bucket lost probes.
    /// - Parameters:
    ///   - buckets: the buckets, oldest first.
    ///   - from: start of the range, nanoseconds since 1970.
    ///   - to: its end.
    ///   - width: pixels.
    ///   - height: pixels.
    public static func sparkline(_ buckets: [HistoryBucket], from: Int64, to: Int64, width: Int = 120, height: Int = 24) -> String {
        let span = Double(max(1, to - from))
        let top = roundUp(max(1, buckets.compactMap(\.medianMilliseconds).max() ?? 1))
        var path = ""
        var losses = ""
        var previousEnd: Int64?
        for bucket in buckets where bucket.rounds > 0 {
            let x = Markup.number(Double(bucket.startNanoseconds - from) / span * Double(width))
            if let median = bucket.medianMilliseconds {
                let y = Markup.number(Double(height - 1) - min(1, median / top) * Double(height - 2))
                // A gap (a bucket without rounds, or without a reply) breaks the line.
                let joined = previousEnd.map { bucket.startNanoseconds <= $0 } ?? false
                path += (joined ? "L" : "M") + x + " " + y
                previousEnd = bucket.startNanoseconds + bucket.durationNanoseconds
            } else {
                previousEnd = nil
            }
            if bucket.lossPercent > 0 {
                losses += "<rect x=\"\(x)\" y=\"\(height - 3)\" width=\"2\" height=\"3\" fill=\"\(lossColor(percent: bucket.lossPercent))\"/>"
            }
        }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sparkline\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\">"
        if !path.isEmpty { out += "<path d=\"\(path)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" stroke-linecap=\"round\"/>" }
        out += losses + "</svg>"
        return out
    }
}
