import Glibc
import ProbeEngine
import ProbeResults

/// The write end of the self-pipe the signal handler writes to (set once, before the
/// handlers are installed).
nonisolated(unsafe) private var signalPipeWriter: Int32 = -1

/// The signal handler: only write(2), which is async-signal-safe.
private func forwardSignal(_ signal: Int32) {
    var byte = UInt8(truncatingIfNeeded: signal)
    _ = Glibc.write(signalPipeWriter, &byte, 1)
}

/// The process's one signal watcher, shared by every command: SIGTERM, SIGINT and SIGHUP
/// through the self-pipe trick, read on a thread of its own and handed out as a stream.
///
/// Neither Dispatch signal sources (they raced with our dispositions: a SIGTERM sometimes
/// still killed the process) nor a blocked mask with sigwait (Dispatch's main loop leaves
/// the main thread unblocked) held up here; a handler that writes to a pipe always does.
/// It starts on first use, in a command's run, after the privileges were dropped.
enum SignalWatcher {
    /// Every SIGTERM, SIGINT and SIGHUP from now on, for one consumer.
    static let signals: AsyncStream<Int32> = {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            continuation.finish()
            return stream
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        signalPipeWriter = fds[1]
        let reader = fds[0]
        NativeThread.spawn(name: "netprobe-signals") {
            var byte: UInt8 = 0
            while true {
                let count = Glibc.read(reader, &byte, 1)
                if count < 0 && errno == EINTR { continue }
                guard count == 1 else { return }
                continuation.yield(Int32(byte))
            }
        }
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            _ = signal(signalNumber, forwardSignal)
        }
        return stream
    }()

    /// ping, tcp, check: the first signal asks for a graceful stop (`stop`: replies in
    /// flight get their timeout, summaries are printed); a second one exits at once.
    static func onInterrupt(_ stop: @escaping @Sendable () -> Void) -> Task<Void, Never> {
        Task {
            var received = 0
            for await _ in signals {
                received += 1
                if received == 1 { stop() } else { exit(130) }
            }
        }
    }
}
