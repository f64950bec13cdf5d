import Logging
import ProbeService
import ProbeResults
import Synchronization
import XCTest

/// The daemon's log rules: one cause writes its first line at once and then at most one a
/// minute, saying how many were held back. The clock is the test's: nothing waits.
final class RateLimitedLogTests: XCTestCase {
    let second: Int64 = 1_000_000_000

    func testFirstOccurrenceIsWrittenAtOnceAndRepeatsWithinTheIntervalAreHeldBack() {
        var limiter = LogRateLimiter(intervalNanoseconds: 60 * second)
        XCTAssertEqual(limiter.occurrence(of: "spool", nowNanoseconds: 0), .write(suppressedBefore: 0))
        for tick in 1..<60 {
            XCTAssertEqual(limiter.occurrence(of: "spool", nowNanoseconds: Int64(tick) * second), .suppress, "at \(tick) s")
        }
        XCTAssertEqual(limiter.occurrence(of: "spool", nowNanoseconds: 60 * second), .write(suppressedBefore: 59), "a minute later, with the count")
        XCTAssertEqual(limiter.occurrence(of: "spool", nowNanoseconds: 61 * second), .suppress)
        XCTAssertEqual(limiter.occurrence(of: "spool", nowNanoseconds: 500 * second), .write(suppressedBefore: 1))
        XCTAssertEqual(limiter.suppressedTotal, 60)
    }

    func testCausesAreLimitedIndependently() {
        var limiter = LogRateLimiter(intervalNanoseconds: 60 * second)
        XCTAssertEqual(limiter.occurrence(of: "send a", nowNanoseconds: 0), .write(suppressedBefore: 0))
        XCTAssertEqual(limiter.occurrence(of: "send b", nowNanoseconds: 1), .write(suppressedBefore: 0), "another cause is not held back")
        XCTAssertEqual(limiter.occurrence(of: "send a", nowNanoseconds: 2), .suppress)
        XCTAssertEqual(limiter.occurrence(of: "send b", nowNanoseconds: 3), .suppress)
    }

    func testRememberedCausesAreBoundedAndTheLeastRecentIsForgottenFirst() {
        var limiter = LogRateLimiter(intervalNanoseconds: 60 * second, maximumCauses: 2)
        _ = limiter.occurrence(of: "a", nowNanoseconds: 0)
        _ = limiter.occurrence(of: "b", nowNanoseconds: 1)
        _ = limiter.occurrence(of: "c", nowNanoseconds: 2)  // forgets a
        XCTAssertEqual(limiter.occurrence(of: "b", nowNanoseconds: 3), .suppress)
        XCTAssertEqual(limiter.occurrence(of: "a", nowNanoseconds: 4), .write(suppressedBefore: 0), "a was forgotten, so it is new again")
    }

    /// Collects what passes the limiter.
    final class Capture: Sendable {
        let lines = Mutex<[(level: Logger.Level, message: String)]>([])
    }

    struct CaptureHandler: LogHandler {
        let capture: Capture
        var logLevel: Logger.Level = .debug
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.lines.withLock { $0.append((event.level, event.message.description)) }
        }
    }

    final class FakeClock: Sendable {
        let nanoseconds = Mutex<Int64>(0)
        func advance(seconds: Int64) { nanoseconds.withLock { $0 += seconds * 1_000_000_000 } }
    }

    func testHandlerLimitsEachCallSiteAndServerAndPassesInfoUnchanged() {
        let capture = Capture()
        let clock = FakeClock()
        let shared = RateLimitedLogHandler.Shared(now: { clock.nanoseconds.withLock { $0 } })
        var logger = Logger(label: "test") { _ in RateLimitedLogHandler(wrapping: CaptureHandler(capture: capture), shared: shared) }
        logger.logLevel = .info
        func spoolFailure(_ detail: String, server: String) {
            logger.error("cannot spool: \(detail)", metadata: ["influxServer": "\(server)"])
        }
        for round in 0..<500 {
            spoolFailure("No space left on device (\(round))", server: "a")
            spoolFailure("No space left on device (\(round))", server: "b")
            logger.info("round \(round)")
            if round % 10 == 9 { clock.advance(seconds: 1) }
        }
        // 500 rounds over 50 s: one line per server, the rest held back.
        let warnings = capture.lines.withLock { $0.filter { $0.level >= .warning } }
        XCTAssertEqual(warnings.map(\.message), ["cannot spool: No space left on device (0)", "cannot spool: No space left on device (0)"])
        XCTAssertEqual(capture.lines.withLock { $0.filter { $0.level == .info }.count }, 500, "info is never limited")
        XCTAssertEqual(shared.suppressedTotal, 998)

        clock.advance(seconds: 10)
        spoolFailure("Input/output error", server: "a")
        let last = capture.lines.withLock { $0.last }
        XCTAssertEqual(last?.message, "cannot spool: Input/output error (499 more since the last such line)", "the latest detail and the count")

        // A logger copy with the server in its own metadata is a cause of its own too.
        var sender = logger
        sender[metadataKey: "influxServer"] = "c"
        func writeFailed(_ logger: Logger) { logger.warning("write failed") }
        writeFailed(sender)
        writeFailed(sender)
        writeFailed(logger)
        writeFailed(logger)
        XCTAssertEqual(capture.lines.withLock { $0.filter { $0.message == "write failed" }.count }, 2,
                       "one call site: once for server c (from the logger's metadata), once without a server")
    }
}
