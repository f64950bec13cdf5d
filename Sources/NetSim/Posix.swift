import CSystemShims
import ProbeEngine
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// The simulator's system calls beyond ProbeEngine's `Posix` (same rules: EINTR retried,
/// EAGAIN as `.wouldBlock` where asked, errors naming the call, EBADF/EFAULT crash).
extension Posix {
    static func open(_ path: String, _ flags: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("open") { Glibc.open(path, flags | O_CLOEXEC) }
    }

    /// Closes `fd`, ignoring errors other than EBADF (which is a bug, and crashes).
    static func closeQuietly(_ fd: Int32) {
        do { try close(fd) } catch {}
    }

    static func ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer) throws(SystemCallError) {
        _ = try retryingEINTR("ioctl") { CSystemShims_ioctl_pointer(fd, request, argument) }
    }

    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemCallError) -> IOResult<Int> {
        try nonBlocking("read") { Glibc.read(fd, buffer, count) }
    }

    static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(SystemCallError) -> IOResult<Int> {
        try nonBlocking("write") { Glibc.write(fd, buffer, count) }
    }



    static func epoll_wait(_ epollFD: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ maximum: Int32, _ timeoutMilliseconds: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("epoll_wait") { CSystemShims.epoll_wait(epollFD, events, maximum, timeoutMilliseconds) }
    }

    static func timerfd_create(_ clock: Int32, _ flags: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("timerfd_create") { CSystemShims.timerfd_create(clock, flags) }
    }

    static func timerfd_settime(_ fd: Int32, _ flags: Int32, _ value: itimerspec) throws(SystemCallError) {
        var value = value
        _ = try retryingEINTR("timerfd_settime") { CSystemShims.timerfd_settime(fd, flags, &value, nil) }
    }

    static func signalfd(_ mask: sigset_t) throws(SystemCallError) -> Int32 {
        var mask = mask
        return try retryingEINTR("signalfd") { CSystemShims.signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
    }

    static func setns(_ fd: Int32, _ type: Int32) throws(SystemCallError) {
        _ = try retryingEINTR("setns") { CSystemShims_setns(fd, type) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: every hold time and release instant uses it.
@inline(__always)
func monotonicNanoseconds() -> Int64 {
    Clock.monotonicNanoseconds()
}

/// Signals delivered as readable data on a descriptor instead of handlers.
public enum SignalDescriptor {
    /// Blocks `signals` in the calling thread (threads created later inherit the mask) and
    /// returns a non-blocking signalfd that reads them. Call it before any thread starts.
    /// - Throws: `SystemCallError` when signalfd fails.
    public static func blockAndOpen(_ signals: [Int32]) throws -> Int32 {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals { sigaddset(&mask, signal) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        return try Posix.signalfd(mask)
    }
}
