#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds on one of the kernel's clocks.
///
/// Timestamps from the kernel (SO_TIMESTAMPING software stamps) are CLOCK_REALTIME, so
/// round-trip times are differences of realtime instants; schedules and deadlines use
/// CLOCK_MONOTONIC, which never jumps.
public enum Clock {
    /// CLOCK_REALTIME now, in nanoseconds since the Unix epoch.
    @inline(__always)
    public static func realtimeNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return nanoseconds(now)
    }

    /// CLOCK_MONOTONIC now, in nanoseconds.
    @inline(__always)
    public static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return nanoseconds(now)
    }

    @inline(__always)
    package static func nanoseconds(_ value: timespec) -> Int64 {
        Int64(value.tv_sec) * 1_000_000_000 + Int64(value.tv_nsec)
    }

    package static func timespecFrom(nanoseconds: Int64) -> timespec {
        timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}
