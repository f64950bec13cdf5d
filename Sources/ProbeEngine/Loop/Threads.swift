import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Dedicated OS threads for work that blocks (the event loop, getaddrinfo), started with
/// pthreads directly so the engine needs no Foundation (its libraries cost megabytes of RSS).
public enum NativeThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts a detached thread running `body`.
    /// - Parameter name: shown by `top -H` and in /proc (at most 15 bytes are kept).
    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) {
        let threadName = String(name.prefix(15))
        let box = Unmanaged.passRetained(Box {
            // PR_SET_NAME names the calling thread (pthread_setname_np is not visible to Swift).
            threadName.withCString { _ = CSystemShims_prctl(PR_SET_NAME, UInt(bitPattern: $0), 0, 0, 0) }
            body()
        }).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(status == 0, "pthread_create failed: \(status)")
        pthread_detach(thread)
    }
}
