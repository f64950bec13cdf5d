import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the call's name and the errno it returned.
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    /// The system call, as named in its man page.
    public let call: String
    /// The errno value the call set.
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// What a non-blocking call did: it completed with a value, or would have blocked.
package enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

/// Every system call the engine makes, named as in the man pages.
///
/// Each goes through `retryingEINTR`, which retries EINTR, maps EAGAIN to `.wouldBlock`
/// where the caller asked for that, and throws `SystemCallError` otherwise. EBADF and
/// EFAULT mean the engine passed a closed descriptor or a bad pointer: a bug, so crash.
package enum Posix {
    @inline(__always)
    package static func retryingEINTR<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(SystemCallError) -> T {
        while true {
            let result = body()
            if result != -1 { return result }
            let error = Glibc.errno
            if error == EINTR { continue }
            precondition(error != EBADF && error != EFAULT, "\(name) failed with \(error == EBADF ? "EBADF" : "EFAULT"): a bug in netprobe")
            throw SystemCallError(call: "\(name)", errno: error)
        }
    }

    @inline(__always)
    package static func nonBlocking<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(SystemCallError) -> IOResult<T> {
        do {
            return .processed(try retryingEINTR(name, body))
        } catch where error.errno == EAGAIN || error.errno == EWOULDBLOCK {
            return .wouldBlock
        }
    }

    static func socket(_ domain: Int32, _ type: Int32, _ proto: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("socket") { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto) }
    }

    static func setsockopt<Value: BitwiseCopyable>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Value) throws(SystemCallError) {
        try withUnsafeBytes(of: value) { (bytes) throws(SystemCallError) in
            _ = try retryingEINTR("setsockopt") {
                Glibc.setsockopt(fd, level, name, bytes.baseAddress, socklen_t(bytes.count))
            }
        }
    }

    static func getsockopt<Value: BitwiseCopyable>(_ fd: Int32, _ level: Int32, _ name: Int32, initial: Value) throws(SystemCallError) -> Value {
        var value = initial
        var length = socklen_t(MemoryLayout<Value>.size)
        try withUnsafeMutableBytes(of: &value) { (bytes) throws(SystemCallError) in
            _ = try retryingEINTR("getsockopt") { Glibc.getsockopt(fd, level, name, bytes.baseAddress, &length) }
        }
        return value
    }

    static func bind(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws(SystemCallError) {
        _ = try retryingEINTR("bind") { Glibc.bind(fd, address, length) }
    }

    static func getsockname(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>, _ length: UnsafeMutablePointer<socklen_t>) throws(SystemCallError) {
        _ = try retryingEINTR("getsockname") { Glibc.getsockname(fd, address, length) }
    }

    // sendmsg and recvmsg are in ControlMessage.swift, beside the control-message codec:
    // the one file that builds a message header.

    static func recv(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ flags: Int32) throws(SystemCallError) -> IOResult<Int> {
        try nonBlocking("recv") { Glibc.recv(fd, buffer.baseAddress, buffer.count, flags | Int32(MSG_DONTWAIT)) }
    }

    static func shutdown(_ fd: Int32, _ how: Int32) throws(SystemCallError) {
        _ = try retryingEINTR("shutdown") { Glibc.shutdown(fd, how) }
    }

    package static func close(_ fd: Int32) throws(SystemCallError) {
        // Linux closes the descriptor even when close reports EINTR: never retry it.
        if Glibc.close(fd) == -1 {
            let error = Glibc.errno
            precondition(error != EBADF, "close failed with EBADF: a bug in netprobe")
            if error != EINTR { throw SystemCallError(call: "close", errno: error) }
        }
    }

    package static func epoll_create1(_ flags: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("epoll_create1") { CSystemShims.epoll_create1(flags) }
    }

    package static func epoll_ctl(_ epollFD: Int32, _ operation: Int32, _ fd: Int32, _ event: inout epoll_event) throws(SystemCallError) {
        _ = try retryingEINTR("epoll_ctl") { CSystemShims.epoll_ctl(epollFD, operation, fd, &event) }
    }

    static func epoll_pwait2(_ epollFD: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ maximum: Int32, _ timeout: UnsafePointer<timespec>?) throws(SystemCallError) -> Int32 {
        try retryingEINTR("epoll_pwait2") { CSystemShims.epoll_pwait2(epollFD, events, maximum, timeout, nil) }
    }

    /// The TTL (IPv4) or unicast hop limit (IPv6) of what `fd` sends.
    static func setHopLimit(_ fd: Int32, family: AddressFamily, _ limit: Int) throws(SystemCallError) {
        switch family {
        case .ipv4: try setsockopt(fd, Int32(IPPROTO_IP), IP_TTL, Int32(limit))
        case .ipv6: try setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, Int32(limit))
        }
    }

    static func epoll_wait(_ epollFD: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ maximum: Int32, _ timeoutMilliseconds: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("epoll_wait") { CSystemShims.epoll_wait(epollFD, events, maximum, timeoutMilliseconds) }
    }

    static func eventfd(_ initial: UInt32, _ flags: Int32) throws(SystemCallError) -> Int32 {
        try retryingEINTR("eventfd") { CSystemShims.eventfd(initial, flags) }
    }

    /// Reads the 8-byte counter of a timerfd or eventfd; `.wouldBlock` when it is zero.
    static func readCounter(_ fd: Int32) throws(SystemCallError) -> IOResult<UInt64> {
        var counter: UInt64 = 0
        let result = try nonBlocking("read") { Glibc.read(fd, &counter, 8) }
        switch result {
        case .processed: return .processed(counter)
        case .wouldBlock: return .wouldBlock
        }
    }

    /// Adds one to an eventfd's counter (wakes whoever polls it).
    static func signal(eventFD fd: Int32) throws(SystemCallError) {
        var one: UInt64 = 1
        _ = try nonBlocking("write") { Glibc.write(fd, &one, 8) }
    }
}

extension Posix {
    /// Starts a non-blocking connect.
    /// - Returns: true when already connected, false while the handshake is in progress.
    /// - Throws: `SystemCallError` for an immediate failure (ENETUNREACH, ECONNREFUSED, ...).
    static func connect(_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) throws(SystemCallError) -> Bool {
        if Glibc.connect(fd, address, length) == 0 { return true }
        let error = Glibc.errno
        // EINTR on a non-blocking connect: the handshake goes on in the background.
        if error == EINPROGRESS || error == EINTR { return false }
        precondition(error != EBADF && error != EFAULT, "connect failed with \(error): a bug in netprobe")
        throw SystemCallError(call: "connect", errno: error)
    }
}
