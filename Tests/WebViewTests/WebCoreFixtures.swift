import ProbeResults
@testable import WebView

/// Synthetic rounds for the view's unit tests: what `run` would hand its observers.
enum WebCoreFixture {
    /// A whole-second instant well after 1970, a multiple of 30 s and of 60 s (bucket
    /// boundaries line up with it).
    static let start: Int64 = 1_800_000_000 * 1_000_000_000
    static let second: Int64 = 1_000_000_000

    /// A round of `kind` to `name` starting at `start`.
    /// - Parameters:
    ///   - rtts: the replies' RTTs; `sent - rtts.count` probes are lost (timeouts).
    ///   - refused: TCP attempts refused (counted apart from the lost ones).
    static func round(_ kind: ProbeKind, _ name: String, port: UInt16? = nil, start: Int64, sent: Int = 5, rtts: [Double],
                      refused: Int = 0, outcome: ProbeOutcome? = nil, options: PacketOptions = .none, labels: [String: String] = [:]) -> RoundResult {
        let received = rtts.count
        let target = ProbeTarget(name: name, address: IPAddress(parsing: "127.0.0.1"), port: kind == .tcp ? (port ?? 80) : nil, options: options, labels: labels)
        let resolved = outcome ?? (received > 0 ? .ok : (refused > 0 ? .refused : .timeout))
        return RoundResult(kind: kind, targetIndex: 0, target: target, startNanoseconds: start, sent: sent, received: received, duplicates: 0, late: 0,
                           unreachable: 0, refused: refused, errors: 0,
                           lossPercent: sent == 0 ? 100 : Double(sent - received) / Double(sent) * 100,
                           statistics: RTTStatistics(samples: rtts), rttsMilliseconds: rtts,
                           kernelTimestamps: received, userTimestamps: 0, outcome: resolved)
    }
}
