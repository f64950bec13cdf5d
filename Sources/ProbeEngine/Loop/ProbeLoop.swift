import CSystemShims
import FoundationEssentials
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// What the loop calls when a watched descriptor is ready (loop thread).
protocol DescriptorOwner: AnyObject {
    /// A descriptor it watches is ready.
    func handle(fd: Int32, events: UInt32) throws
}

/// Something the probe loop drives: an ICMP run, a TCP run. Every method is called on the
/// loop thread. (A task that watches descriptors of its own is also their `DescriptorOwner`.)
protocol LoopTask: AnyObject {
    /// Joins the loop: registers descriptors, plans the first sends.
    func attach(to loop: ProbeLoop, now: Int64) throws
    /// Sends what is due, expires deadlines, reports finished rounds.
    func service(now: Int64) throws
    /// The next CLOCK_MONOTONIC instant the task needs `service` called; nil for none.
    var nextWake: Int64? { get }
    /// True once every round is reported; the loop then detaches the task.
    var isFinished: Bool { get }
    /// Leaves the loop, with the error that stopped it, if any: reports what is left and
    /// finishes the task's stream.
    func detach(error: Error?)
}

/// The one event-loop thread that owns every probe socket (DESIGN.md: epoll with timeouts,
/// nothing slow on it). ICMP and TCP runs join it as tasks; the thread runs while any
/// task does and starts again when a new one is added.
public final class ProbeLoop: @unchecked Sendable {
    let events: EventLoop
    private let logger: Logger
    /// Tasks added but not yet attached, and whether the loop thread runs.
    private let shared = Locked((inbox: [LoopTask](), threadRunning: false))
    // Loop-thread state.
    private var tasks: [LoopTask] = []
    private var owners: [Int32: DescriptorOwner] = [:]
    /// The loop thread, while it runs (set and read on that thread only).
    private var loopThread: pthread_t?
    /// How late the loop thread's timed waits may end (PR_SET_TIMERSLACK); nil: the
    /// kernel's default (50 us).
    let timerSlackNanoseconds: Int?
    /// The slack `run` and `ping` give their loops (see `init`): 1 ms, or a hundredth of
    /// the shortest time between two probes of one target if that is less, so that no
    /// target's schedule moves by more than 1 %; never below the kernel's 50 us.
    /// - Parameter shortestGapNanoseconds: the interval, or the spacing of a round's probes.
    public static func batchingTimerSlack(shortestGapNanoseconds: Int64) -> Int {
        Int(max(50_000, min(1_000_000, shortestGapNanoseconds / 100)))
    }

    /// - Parameters:
    ///   - timerSlackNanoseconds: how late a timed wait may end, so that sends due within
    ///     that much of each other go out in one wake-up. A wake-up costs the loop thread a
    ///     context switch and the timer's programming; at 10,000 probes a second, one per
    ///     send was a large share of `run`'s CPU. RTTs are unaffected (the kernel stamps
    ///     each packet as it leaves); a send is up to this much later than planned, which
    ///     the schedule slip reports. Interactive commands keep the default.
    /// - Throws: `SystemCallError` when epoll or eventfd cannot be created.
    public init(logger: Logger, timerSlackNanoseconds: Int? = nil) throws {
        events = try EventLoop()
        self.logger = logger
        self.timerSlackNanoseconds = timerSlackNanoseconds
    }

    deinit {
        events.close()
    }

    /// Adds a task; starts the loop thread if it is not running. Any thread.
    func add(_ task: LoopTask) {
        let start = shared.withLock { state in
            state.inbox.append(task)
            defer { state.threadRunning = true }
            return !state.threadRunning
        }
        if start {
            NativeThread.spawn(name: "netprobe-loop") { [self] in run() }
        } else {
            events.wake()
        }
    }

    /// Wakes the loop so tasks look at their stop flags. Any thread.
    func wake() {
        events.wake()
    }

    /// Debug builds: traps unless called on the loop thread, which alone may touch the
    /// tasks, their sockets and their bookkeeping.
    func assertOnLoopThread(file: StaticString = #fileID, line: UInt = #line) {
        assert(loopThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false, "loop-thread state touched from another thread", file: file, line: line)
    }

    /// Watches `fd` for `owner`: a task, or what several tasks share (loop thread only).
    func watch(_ fd: Int32, events mask: UInt32, for owner: DescriptorOwner) throws {
        assertOnLoopThread()
        try events.register(fd, events: mask)
        owners[fd] = owner
    }

    /// Changes what is watched on `fd`, already watched by `watch` (loop thread only).
    func rewatch(_ fd: Int32, events mask: UInt32) throws {
        assertOnLoopThread()
        try events.modify(fd, events: mask)
    }

    /// Stops watching `fd`; call before closing it (loop thread only).
    func unwatch(_ fd: Int32) {
        assertOnLoopThread()
        owners[fd] = nil
        try? events.unregister(fd)
    }

    /// Forgets `fd` that is about to be closed (closing removes it from epoll).
    func forget(_ fd: Int32) {
        assertOnLoopThread()
        owners[fd] = nil
    }

    private func takeInbox() -> [LoopTask]? {
        let idle = tasks.isEmpty
        return shared.withLock { state in
            let added = state.inbox
            state.inbox = []
            if added.isEmpty && idle {
                state.threadRunning = false
                return nil
            }
            return added
        }
    }

    private func run() {
        // (A thread that ends leaves its value; the next one starts only after it has
        // given up the inbox, so this write never races with its last reads.)
        loopThread = pthread_self()
        if let slack = timerSlackNanoseconds, slack > 0 {
            // Per thread: only the loop's waits are affected.
            _ = CSystemShims_prctl(PR_SET_TIMERSLACK, UInt(slack), 0, 0, 0)
        }
        while true {
            guard let added = takeInbox() else { return }
            for task in added {
                do {
                    try task.attach(to: self, now: Clock.monotonicNanoseconds())
                    tasks.append(task)
                } catch {
                    logger.error("probe task could not start", metadata: ["error": "\(error)"])
                    task.detach(error: error)
                }
            }
            do {
                let now = Clock.monotonicNanoseconds()
                for task in tasks { try task.service(now: now) }
                detachFinished()
                if tasks.isEmpty { continue }
                var wake: Int64?
                for task in tasks { wake = earliest(wake, task.nextWake) }
                try events.wait(until: wake) { fd, mask in
                    try owners[fd]?.handle(fd: fd, events: mask)
                }
            } catch {
                logger.error("probe loop failed", metadata: ["error": "\(error)"])
                for task in tasks { task.detach(error: error) }
                tasks = []
                owners = [:]
            }
        }
    }

    private func detachFinished() {
        var remaining: [LoopTask] = []
        for task in tasks {
            if task.isFinished { task.detach(error: nil) } else { remaining.append(task) }
        }
        tasks = remaining
    }
}

/// A prober's run bookkeeping: one run at a time, the stop flag its loop task polls, and
/// the target updates handed in for it.
final class RunGate: Sendable {
    private struct State {
        var running = false
        var stopRequested = false
        var updates: [TargetUpdate] = []
        /// Target indices given out so far (the run's targets and every one added since).
        var targetCount = 0
    }
    private let state = Locked(State())

    /// Queues `update` for the running run and gives the added targets their indices.
    /// - Returns: the indices of `update.added`, in order; nil when no run is going (it has
    ///   finished or stopped), and the update is dropped.
    func submit(_ update: TargetUpdate) -> Range<Int>? {
        state.withLock { state in
            guard state.running && !state.stopRequested else { return nil }
            let first = state.targetCount
            state.targetCount += update.added.count
            state.updates.append(update)
            return first..<state.targetCount
        }
    }

    /// The updates queued since the last call (loop thread).
    func takeUpdates() -> [TargetUpdate] {
        state.withLock { state in
            defer { state.updates = [] }
            return state.updates
        }
    }

    /// Starts a run and makes its event stream; a consumer that cancels stops the run.
    /// - Parameters:
    ///   - owner: names the prober in the message when a second run is started too early.
    ///   - stop: what stopping the run means for the prober.
    func begin(_ owner: String, targetCount: Int, stop: @escaping @Sendable () -> Void) -> (AsyncStream<ProbeEvent>, AsyncStream<ProbeEvent>.Continuation) {
        begin(owner, targetCount: targetCount, events: ProbeEvent.self, stop: stop)
    }

    /// `begin` for a prober whose stream carries other values (the path prober's traces).
    func begin<Event>(_ owner: String, targetCount: Int, events: Event.Type, stop: @escaping @Sendable () -> Void) -> (AsyncStream<Event>, AsyncStream<Event>.Continuation) {
        state.withLock { state in
            precondition(!state.running, "\(owner) runs one probe call at a time")
            state = State(running: true, targetCount: targetCount)
        }
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .unbounded)
        continuation.onTermination = { termination in
            if case .cancelled = termination { stop() }
        }
        return (stream, continuation)
    }

    func requestStop() {
        state.withLock { $0.stopRequested = true }
    }

    var isStopRequested: Bool { state.withLock { $0.stopRequested } }

    var isRunning: Bool { state.withLock { $0.running } }

    /// The run's loop task has detached: the next run may start.
    func end() {
        state.withLock { $0.running = false }
    }
}

/// The earlier of two optional instants (nil: none). Tasks' `nextWake` chain it: it runs on
/// every loop iteration, where building an array to take its minimum allocated.
@inline(__always)
func earliest(_ a: Int64?, _ b: Int64?) -> Int64? {
    guard let a else { return b }
    guard let b else { return a }
    return min(a, b)
}
