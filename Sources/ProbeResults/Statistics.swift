/// Summary statistics of one round's round-trip times, in milliseconds.
public struct RTTStatistics: Equatable, Sendable {
    public var minimum: Double
    public var average: Double
    public var maximum: Double
    /// The middle value; the mean of the two middle values for an even count.
    public var median: Double
    /// Population standard deviation (as ping's mdev): sqrt(mean((x - mean)^2)).
    public var standardDeviation: Double
    /// Mean absolute difference of consecutive RTTs, in the order the probes were sent
    /// (RFC 3550's idea of jitter, without its smoothing); 0 for a single sample.
    public var jitter: Double

    /// - Parameter samples: RTTs in milliseconds, in send order.
    /// - Returns: nil when there are no samples.
    public init?(samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let count = Double(samples.count)
        let sorted = samples.sorted()
        minimum = sorted.first!
        maximum = sorted.last!
        average = samples.reduce(0, +) / count
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        let mean = average
        standardDeviation = (samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / count).squareRoot()
        if samples.count > 1 {
            var total = 0.0
            for index in 1..<samples.count { total += abs(samples[index] - samples[index - 1]) }
            jitter = total / Double(samples.count - 1)
        } else {
            jitter = 0
        }
    }
}
