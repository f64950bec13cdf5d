import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the call's name and the errno it returned.
public struct NetSimSystemCallError: Error, CustomStringConvertible, Sendable {
    /// The system call, as named in its man page.
    public let call: String
    /// The errno value the call set.
    public let errno: Int32

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// What a non-blocking call did: it completed with a value, or would have blocked.
enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

/// The system calls the simulator makes, named as in the man pages.
///
/// Same rules as ProbeEngine's `Posix` (whose helpers are internal to that module): EINTR
/// is retried, EAGAIN becomes `.wouldBlock` where asked, anything else throws an error
/// naming the call, and EBADF/EFAULT are bugs that crash.
enum Posix {
    @inline(__always)
    static func retryingEINTR<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(NetSimSystemCallError) -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let error = Glibc.errno
            if error == EINTR { continue }
            precondition(error != EBADF && error != EFAULT, "\(name) failed with \(error == EBADF ? "EBADF" : "EFAULT"): a bug in netsim")
            throw NetSimSystemCallError(call: "\(name)", errno: error)
        }
    }

    @inline(__always)
    static func nonBlocking<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(NetSimSystemCallError) -> IOResult<T> {
        do {
            return .processed(try retryingEINTR(name, body))
        } catch where error.errno == EAGAIN || error.errno == EWOULDBLOCK {
            return .wouldBlock
        }
    }

    static func open(_ path: String, _ flags: Int32) throws(NetSimSystemCallError) -> Int32 {
        try retryingEINTR("open") { Glibc.open(path, flags | O_CLOEXEC) }
    }

    static func close(_ fd: Int32) {
        // Linux closes the descriptor even when close reports EINTR: never retry it.
        if Glibc.close(fd) == -1 {
            precondition(Glibc.errno != EBADF, "close failed with EBADF: a bug in netsim")
        }
    }

    static func ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer) throws(NetSimSystemCallError) {
        _ = try retryingEINTR("ioctl") { CSystemShims_ioctl_pointer(fd, request, argument) }
    }

    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(NetSimSystemCallError) -> IOResult<Int> {
        try nonBlocking("read") { Glibc.read(fd, buffer, count) }
    }

    static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(NetSimSystemCallError) -> IOResult<Int> {
        try nonBlocking("write") { Glibc.write(fd, buffer, count) }
    }

    static func epoll_create1(_ flags: Int32) throws(NetSimSystemCallError) -> Int32 {
        try retryingEINTR("epoll_create1") { CSystemShims.epoll_create1(flags) }
    }

    static func epoll_ctl(_ epollFD: Int32, _ operation: Int32, _ fd: Int32, _ event: inout epoll_event) throws(NetSimSystemCallError) {
        _ = try retryingEINTR("epoll_ctl") { CSystemShims.epoll_ctl(epollFD, operation, fd, &event) }
    }

    static func epoll_wait(_ epollFD: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ maximum: Int32, _ timeoutMilliseconds: Int32) throws(NetSimSystemCallError) -> Int32 {
        try retryingEINTR("epoll_wait") { CSystemShims.epoll_wait(epollFD, events, maximum, timeoutMilliseconds) }
    }

    static func timerfd_create(_ clock: Int32, _ flags: Int32) throws(NetSimSystemCallError) -> Int32 {
        try retryingEINTR("timerfd_create") { CSystemShims.timerfd_create(clock, flags) }
    }

    static func timerfd_settime(_ fd: Int32, _ flags: Int32, _ value: itimerspec) throws(NetSimSystemCallError) {
        var value = value
        _ = try retryingEINTR("timerfd_settime") { CSystemShims.timerfd_settime(fd, flags, &value, nil) }
    }

    static func signalfd(_ mask: sigset_t) throws(NetSimSystemCallError) -> Int32 {
        var mask = mask
        return try retryingEINTR("signalfd") { CSystemShims.signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
    }

    static func setns(_ fd: Int32, _ type: Int32) throws(NetSimSystemCallError) {
        _ = try retryingEINTR("setns") { CSystemShims_setns(fd, type) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: every hold time and release instant uses it.
@inline(__always)
func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// Signals delivered as readable data on a descriptor instead of handlers.
public enum SignalDescriptor {
    /// Blocks `signals` in the calling thread (threads created later inherit the mask) and
    /// returns a non-blocking signalfd that reads them. Call it before any thread starts.
    /// - Throws: `NetSimSystemCallError` when signalfd fails.
    public static func blockAndOpen(_ signals: [Int32]) throws -> Int32 {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals { sigaddset(&mask, signal) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        return try Posix.signalfd(mask)
    }
}
