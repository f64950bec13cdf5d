import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults

/// The engine's settings from the config's `icmp:` and `tcp:` sections.
public enum EngineSettings {
    /// Probes per second the engine may send: twice what the targets need on average, and
    /// at least 100, so phases stay spread but a late round can catch up.
    static func rate(targets: Int, settings: ProbeSettings) -> Double {
        let needed = Double(targets * max(1, settings.count)) / (Double(settings.intervalNanoseconds) / 1e9)
        return max(100, 2 * needed)
    }

    /// Repeating ICMP rounds for `run`.
    public static func icmp(_ settings: ProbeSettings, targetCount: Int) -> ICMPProbeConfiguration {
        var result = ICMPProbeConfiguration(count: settings.count, intervalNanoseconds: settings.spacingNanoseconds, timeoutNanoseconds: settings.timeoutNanoseconds,
                                            payloadLength: settings.payloadSize, ttl: settings.ttl,
                                            packetsPerSecond: rate(targets: targetCount, settings: settings))
        result.roundIntervalNanoseconds = settings.intervalNanoseconds
        return result
    }

    /// Repeating TCP rounds for `run`.
    public static func tcp(_ settings: ProbeSettings, targetCount: Int, logger: Logger) -> TCPProbeConfiguration {
        var result = tcp(count: settings.count, intervalNanoseconds: settings.spacingNanoseconds, timeoutNanoseconds: settings.timeoutNanoseconds,
                         rate: rate(targets: targetCount, settings: settings), targetCount: targetCount, mode: settings.tcpMode, logger: logger)
        result.roundIntervalNanoseconds = settings.intervalNanoseconds
        return result
    }

    /// TCP settings for any command, with the in-flight bound taken from the open-file limit
    /// (raised to its hard limit here) and a warning when that limit, or connect mode's
    /// rate cap, is what will hold probing back.
    public static func tcp(count: Int, intervalNanoseconds: Int64, timeoutNanoseconds: Int64, rate: Double, targetCount: Int, mode: TCPProbeMode,
                           logger: Logger) -> TCPProbeConfiguration {
        let limit = ResourceLimits.raiseOpenFileLimit()
        let reserve = 64
        let maximumInFlight = max(1, min(limit - reserve, 65_536))
        let wanted = min(targetCount, Int(rate * Double(timeoutNanoseconds) / 1e9) + 1)
        if wanted > maximumInFlight {
            logger.warning("open-file limit is low for this many targets: handshakes will be held back to fit; raise it with ulimit -n",
                           metadata: ["limit": "\(limit)", "wanted_in_flight": "\(wanted)"])
        }
        // Sends are spread over the interval: each target once per interval, at most `rate`.
        let needed = min(rate, Double(targetCount) * 1e9 / Double(intervalNanoseconds))
        if mode == .connect && needed > TCPProbeMode.connectAttemptsPerSecondLimit {
            logger.warning("connect mode is held to \(Int(TCPProbeMode.connectAttemptsPerSecondLimit)) handshakes a second (each leaves a TIME_WAIT socket here for 60 s); rounds will take longer than asked, or use half-open mode",
                           metadata: ["needed_per_second": "\(Int(needed))"])
        }
        return TCPProbeConfiguration(count: count, intervalNanoseconds: intervalNanoseconds, timeoutNanoseconds: timeoutNanoseconds,
                                     attemptsPerSecond: rate, maximumInFlight: maximumInFlight, mode: mode)
    }
}
