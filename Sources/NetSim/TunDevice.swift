import CSystemShims
import ProbeEngine
import Foundation
import Logging
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// A TUN device (layer 3, no packet-information header) in the current network namespace,
/// with the simulator's own addresses and the routes of the simulated prefixes.
///
/// Link, address and route set-up runs `ip` (iproute2): it is done once, and netlink
/// code of our own would add nothing a test could notice. The data path (read/write of
/// packets) is all the simulator's own.
public final class TunDevice {
    /// The interface name, e.g. "netsim0".
    public let name: String
    /// Non-blocking descriptor that reads and writes one IP packet per call. -1 once closed.
    public private(set) var descriptor: Int32

    /// Opens /dev/net/tun and attaches it to a new interface `name`.
    /// - Throws: `SystemCallError` when the device cannot be opened or attached
    ///   (ENOENT: no /dev/net/tun; EPERM: not root / no CAP_NET_ADMIN).
    public init(name: String) throws {
        precondition(name.utf8.count < Int(IFNAMSIZ), "interface names are shorter than \(IFNAMSIZ) bytes")
        let fd = try Posix.open("/dev/net/tun", O_RDWR | O_NONBLOCK)
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { raw in
            for (index, byte) in name.utf8.enumerated() { raw[index] = byte }
        }
        request.ifr_ifru.ifru_flags = Int16(CSystemShims_IFF_TUN | CSystemShims_IFF_NO_PI)
        do {
            try Posix.ioctl(fd, CSystemShims_TUNSETIFF, &request)
        } catch {
            Posix.closeQuietly(fd)
            throw error
        }
        self.name = withUnsafeBytes(of: request.ifr_ifrn.ifrn_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        descriptor = fd
    }

    deinit {
        if descriptor >= 0 { Posix.closeQuietly(descriptor) }
    }

    /// Closes the device; the kernel removes the interface with its addresses and routes.
    public func close() {
        if descriptor >= 0 { Posix.closeQuietly(descriptor) }
        descriptor = -1
    }

    /// Brings the interface up, gives it the simulator's own addresses (198.18.0.1/32,
    /// 2001:db8::1/128 without duplicate address detection) and routes the simulated
    /// prefixes into it. Enables IPv6 in the namespace first when it is disabled.
    /// - Throws: `SetupError` naming the `ip` command that failed and what it printed.
    public func configure(logger: Logger) throws {
        for path in ["/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6"] {
            if (try? String(contentsOfFile: path, encoding: .utf8))?.hasPrefix("1") == true {
                do {
                    try "0\n".write(toFile: path, atomically: false, encoding: .utf8)
                    logger.info("enabled IPv6: \(path) = 0")
                } catch {
                    logger.warning("cannot enable IPv6 (\(path)): \(error)")
                }
            }
        }
        // A long transmit queue (default 500) absorbs the moments the simulator is late.
        try Self.ip(["link", "set", "dev", name, "txqueuelen", "10000", "up"])
        try Self.ip(["-4", "addr", "add", "198.18.0.1/32", "dev", name])
        try Self.ip(["-6", "addr", "add", "2001:db8::1/128", "dev", name, "nodad"])
        try Self.ip(["-4", "route", "add", "198.18.0.0/15", "dev", name, "src", "198.18.0.1"])
        try Self.ip(["-6", "route", "add", "2001:db8::/32", "dev", name, "src", "2001:db8::1"])
    }

    /// A set-up command that failed.
    public struct SetupError: Error, CustomStringConvertible {
        public var command: String
        public var output: String
        public var description: String { "\(command) failed: \(output)" }
    }

    static func ip(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/ip")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw SetupError(command: "ip " + arguments.joined(separator: " "), output: "\(error)")
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SetupError(command: "ip " + arguments.joined(separator: " "), output: text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}

/// Real-time scheduling for the packet thread.
public enum RealTimePriority {
    /// Puts the calling thread in SCHED_FIFO at `priority` (default: half the maximum).
    /// - Returns: nil on success, else the errno (EPERM without CAP_SYS_NICE / RLIMIT_RTPRIO).
    public static func enableForCurrentThread(priority: Int32? = nil) -> Int32? {
        var parameters = sched_param()
        parameters.sched_priority = priority ?? max(1, sched_get_priority_max(SCHED_FIFO) / 2)
        let result = pthread_setschedparam(pthread_self(), SCHED_FIFO, &parameters)
        return result == 0 ? nil : result
    }
}

/// Enters and leaves network namespaces (for benchmarks and tests that open sockets
/// inside a simulator's namespace from their own process).
public enum NetworkNamespace {
    /// Opens a socket inside the named namespace (`ip netns add NAME`), from a thread of
    /// this process, and returns it; the socket stays in that namespace for its lifetime.
    /// - Throws: `SystemCallError` naming the call that failed.
    /// Runs `body` on a thread of this process inside the named namespace: sockets it opens
    /// (e.g. `ICMPSocketSet.open`) stay in that namespace, used from any thread after.
    public static func perform<Value>(inNamespace name: String, _ body: @escaping () throws -> Value) throws -> Value {
        nonisolated(unsafe) var outcome: Result<Value, Error> = .failure(SystemCallError(call: "thread", errno: EAGAIN))
        nonisolated(unsafe) let work = body
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            outcome = Result {
                let namespace = try Posix.open("/run/netns/\(name)", O_RDONLY)
                defer { Posix.closeQuietly(namespace) }
                try Posix.setns(namespace, CSystemShims_CLONE_NEWNET)
                return try work()
            }
            done.signal()
        }
        thread.start()
        done.wait()
        return try outcome.get()
    }

    public static func socket(inNamespace name: String, domain: Int32, type: Int32, protocol: Int32) throws -> Int32 {
        // setns changes only the calling thread, so do it on a thread of its own.
        nonisolated(unsafe) var outcome: Result<Int32, SystemCallError> = .failure(SystemCallError(call: "thread", errno: EAGAIN))
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            outcome = Result { () throws(SystemCallError) -> Int32 in
                let namespace = try Posix.open("/run/netns/\(name)", O_RDONLY)
                defer { Posix.closeQuietly(namespace) }
                try Posix.setns(namespace, CSystemShims_CLONE_NEWNET)
                return try Posix.retryingEINTR("socket") { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), `protocol`) }
            }
            // The thread ends inside the namespace; the process's other threads never entered it.
            done.signal()
        }
        thread.start()
        done.wait()
        return try outcome.get()
    }
}
