import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor with exactly one owner, which closes it with `close()`.
///
/// DESIGN.md asks for a small struct; this is a final class because descriptors live in
/// dictionaries (thousands of TCP handshakes in flight) and collections cannot hold
/// non-copyable values. Forgetting to close is still caught: `deinit` asserts in debug
/// builds and closes anyway in release builds so a bug never leaks a descriptor.
final class Descriptor {
    /// The kernel's descriptor number; -1 once closed.
    private(set) var rawValue: Int32

    init(taking rawValue: Int32) {
        self.rawValue = rawValue
    }

    var isOpen: Bool { rawValue >= 0 }

    /// Closes the descriptor. Closing twice is a bug.
    func close() throws(SystemCallError) {
        precondition(rawValue >= 0, "descriptor closed twice")
        let fd = rawValue
        rawValue = -1
        try Posix.close(fd)
    }

    deinit {
        assert(rawValue < 0, "descriptor \(rawValue) dropped without close()")
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
    }
}
