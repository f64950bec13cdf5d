import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// epoll, one timerfd and one eventfd: the waiting half of an event-loop thread.
///
/// Only `wake()` may be called from other threads; everything else belongs to the
/// thread that runs the loop.
final class EventLoop: @unchecked Sendable {
    private let epoll: Descriptor
    private let timer: Descriptor
    private let wakeup: Descriptor
    private var armedAt: Int64?
    private let events: UnsafeMutablePointer<epoll_event>
    private let capacity = 128

    /// What one `wait` saw.
    struct Readiness {
        /// Descriptors that became readable or reported an error (with their epoll bits).
        var ready: [(fd: Int32, events: UInt32)] = []
        var timerFired = false
        var woken = false
    }

    init() throws(SystemCallError) {
        let epoll = Descriptor(taking: try Posix.epoll_create1(Int32(EPOLL_CLOEXEC)))
        let timer: Descriptor
        let wakeup: Descriptor
        do {
            timer = Descriptor(taking: try Posix.timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC)))
        } catch {
            try? epoll.close()
            throw error
        }
        do {
            wakeup = Descriptor(taking: try Posix.eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)))
        } catch {
            try? epoll.close()
            try? timer.close()
            throw error
        }
        self.epoll = epoll
        self.timer = timer
        self.wakeup = wakeup
        events = .allocate(capacity: capacity)
        do {
            try register(timer.rawValue, events: EPOLLIN.rawValue)
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

    func unregister(_ fd: Int32) throws(SystemCallError) {
        var event = epoll_event()
        try Posix.epoll_ctl(epoll.rawValue, EPOLL_CTL_DEL, fd, &event)
    }

    /// Arms the timer for an absolute CLOCK_MONOTONIC instant, or disarms it with nil.
    func armTimer(atMonotonic instant: Int64?) throws(SystemCallError) {
        guard instant != armedAt else { return }
        armedAt = instant
        var value = itimerspec()
        if let instant {
            // A zero it_value disarms, so an instant already past becomes "1 ns after boot".
            value.it_value = Clock.timespecFrom(nanoseconds: max(1, instant))
        }
        try Posix.timerfd_settime(timer.rawValue, Int32(TFD_TIMER_ABSTIME), value)
    }

    /// Blocks until a descriptor is ready, the timer fires or `wake()` is called.
    func wait() throws(SystemCallError) -> Readiness {
        let count = try Posix.epoll_wait(epoll.rawValue, events, Int32(capacity), -1)
        var readiness = Readiness()
        for index in 0..<Int(count) {
            let event = events[index]
            let fd = event.data.fd
            if fd == timer.rawValue {
                _ = try Posix.readCounter(fd)
                armedAt = nil
                readiness.timerFired = true
            } else if fd == wakeup.rawValue {
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
        try? timer.close()
        try? wakeup.close()
        try? epoll.close()
    }
}
