import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The process's descriptor limit.
public enum ResourceLimits {
    /// Raises the soft RLIMIT_NOFILE to the hard limit (no privilege needed).
    /// - Returns: the soft limit in force afterwards.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur == rlim_t.max ? Int.max : Int(clamping: limit.rlim_cur)
    }
}
