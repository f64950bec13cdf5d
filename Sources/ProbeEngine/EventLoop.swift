import CSystemShims
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

    /// What one `wait` saw.
    struct Readiness {
        /// Descriptors that became readable or reported an error (with their epoll bits).
        var ready: [(fd: Int32, events: UInt32)] = []
        var woken = false
    }

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
    /// is called. A nil deadline waits for descriptors only.
    func wait(until deadline: Int64?) throws(SystemCallError) -> Readiness {
        let count: Int32
        if let deadline {
            var timeout = Clock.timespecFrom(nanoseconds: max(0, deadline - Clock.monotonicNanoseconds()))
            count = try Posix.epoll_pwait2(epoll.rawValue, events, Int32(capacity), &timeout)
        } else {
            count = try Posix.epoll_pwait2(epoll.rawValue, events, Int32(capacity), nil)
        }
        var readiness = Readiness()
        for index in 0..<Int(count) {
            let event = events[index]
            let fd = event.data.fd
            if fd == wakeup.rawValue {
                _ = try Posix.readCounter(fd)
                readiness.woken = true
            } else {
                readiness.ready.append((fd, event.events))
            }
        }
        return readiness
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
