import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// epoll and one eventfd: the waiting half of an event-loop thread.
///
/// Timeouts go straight into epoll_pwait2, which takes nanoseconds: DESIGN.md names a
/// timerfd, but arming and reading one costs two more syscalls on every wake-up, and at
/// 10,000 probes a second that was a measurable share of netprobe's CPU time.
///
/// Only `wake()` may be called from other threads; everything else belongs to the
/// thread that runs the loop.
final class EventLoop: @unchecked Sendable {
    private let epoll: Descriptor
    private let wakeup: Descriptor
    private let events: UnsafeMutablePointer<epoll_event>
    private let capacity = 128
    /// epoll_pwait2 exists (Linux 5.11 and later); loop thread only.
    var hasNanosecondWait = true

    init() throws(SystemCallError) {
        let epoll = Descriptor(taking: try Posix.epoll_create1(Int32(EPOLL_CLOEXEC)))
        let wakeup: Descriptor
        do {
            wakeup = Descriptor(taking: try Posix.eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)))
        } catch {
            try? epoll.close()
            throw error
        }
        self.epoll = epoll
        self.wakeup = wakeup
        events = .allocate(capacity: capacity)
        do {
            try register(wakeup.rawValue, events: EPOLLIN.rawValue)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        events.deallocate()
    }

    /// Watches `fd` (level-triggered). EPOLLERR and EPOLLHUP are always reported.
    func register(_ fd: Int32, events: UInt32) throws(SystemCallError) {
        var event = epoll_event()
        event.events = events
        event.data.fd = fd
        try Posix.epoll_ctl(epoll.rawValue, EPOLL_CTL_ADD, fd, &event)
    }

    /// Changes the events watched on a registered `fd`.
    func modify(_ fd: Int32, events: UInt32) throws(SystemCallError) {
        var event = epoll_event()
        event.events = events
        event.data.fd = fd
        try Posix.epoll_ctl(epoll.rawValue, EPOLL_CTL_MOD, fd, &event)
    }

    func unregister(_ fd: Int32) throws(SystemCallError) {
        var event = epoll_event()
        try Posix.epoll_ctl(epoll.rawValue, EPOLL_CTL_DEL, fd, &event)
    }

    /// Blocks until a descriptor is ready, `deadline` (CLOCK_MONOTONIC) passes, or `wake()`
    /// is called, then hands each ready descriptor (readable or in error, with its epoll
    /// bits) to `ready`, straight from epoll's buffer: nothing is allocated per wake-up.
    /// A nil deadline waits for descriptors only.
    func wait(until deadline: Int64?, ready: (_ fd: Int32, _ events: UInt32) throws -> Void) throws {
        let count = try waitForEvents(until: deadline)
        for index in 0..<Int(count) {
            let event = events[index]
            let fd = event.data.fd
            if fd == wakeup.rawValue {
                _ = try Posix.readCounter(fd)
            } else {
                try ready(fd, event.events)
            }
        }
    }

    /// epoll_pwait2 until `deadline`; epoll_wait where it does not exist.
    private func waitForEvents(until deadline: Int64?) throws(SystemCallError) -> Int32 {
        let remaining = deadline.map { max(0, $0 - Clock.monotonicNanoseconds()) }
        if hasNanosecondWait {
            do {
                if let remaining {
                    var timeout = Clock.timespecFrom(nanoseconds: remaining)
                    return try Posix.epoll_pwait2(epoll.rawValue, events, Int32(capacity), &timeout)
                }
                return try Posix.epoll_pwait2(epoll.rawValue, events, Int32(capacity), nil)
            } catch where error.errno == ENOSYS {
                // Before Linux 5.11 (and under valgrind): epoll_wait, whose timeout is in
                // milliseconds, rounded up so that a deadline is never run early.
                hasNanosecondWait = false
            }
        }
        let milliseconds = remaining.map { Int32(clamping: ($0 + 999_999) / 1_000_000) } ?? -1
        return try Posix.epoll_wait(epoll.rawValue, events, Int32(capacity), milliseconds)
    }

    /// Wakes the loop from any thread.
    func wake() {
        try? Posix.signal(eventFD: wakeup.rawValue)
    }

    func close() {
        try? wakeup.close()
        try? epoll.close()
    }
}
