import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

extension PacketOptions {
    /// Checks the options against this host, before anything is sent: the source address
    /// must be one of its addresses (a datagram socket of its family binds to it) and the
    /// interface must exist (if_nametoindex).
    /// - Returns: what is wrong, one sentence each; empty when the options can be used.
    public func problemsOnThisHost() -> [String] {
        var problems: [String] = []
        if let source {
            do throws(SystemCallError) {
                let fd = try Posix.socket(source.family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0)
                defer { try? Posix.close(fd) }
                // IP_FREEBIND / IPV6_FREEBIND are off: bind fails unless the address is ours.
                try source.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(fd, address, length) }
            } catch {
                if error.errno == EADDRNOTAVAIL {
                    problems.append("source address \(source) is not an address of this host")
                } else {
                    problems.append("cannot use source address \(source): \(error)")
                }
            }
        }
        if let interface, SendOptions.systemInterfaceIndex(interface) == 0 {
            problems.append("interface \(interface) does not exist")
        }
        return problems
    }
}

extension PacketOptions {
    /// The MTU of the interface the route from this host to `destination` leaves by (the
    /// options' interface when set), not the host's path-MTU cache: that holds what earlier
    /// packets were told, and would make the answer depend on them. Found with a UDP
    /// socket connected there (nothing is sent): its source address names the interface
    /// (getifaddrs), whose MTU /sys/class/net says. nil when there is no route.
    public func interfaceMTU(to destination: IPAddress) -> Int? {
        var name = interface
        if name == nil {
            guard let local = localAddress(to: destination) else { return nil }
            name = Self.interfaceName(of: local)
        }
        guard let name, !name.contains("/"), name != ".", name != ".." else { return nil }
        let fd = open("/sys/class/net/\(name)/mtu", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return Int(String(decoding: buffer[..<count].filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    /// The source address this host would send from to `destination`.
    private func localAddress(to destination: IPAddress) -> IPAddress? {
        do throws(SystemCallError) {
            let fd = try Posix.socket(destination.family.posixDomain, Int32(SOCK_DGRAM.rawValue), 0)
            defer { try? Posix.close(fd) }
            if let source, source.family == destination.family {
                try source.withSocketAddress { (address, length) throws(SystemCallError) in try Posix.bind(fd, address, length) }
            }
            _ = try destination.withSocketAddress(port: 9) { (address, length) throws(SystemCallError) -> Bool in try Posix.connect(fd, address, length) }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            try withUnsafeMutablePointer(to: &storage) { (pointer) throws(SystemCallError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(SystemCallError) in try Posix.getsockname(fd, address, &length) }
            }
            return withUnsafeBytes(of: &storage) { IPAddress(socketAddress: $0.baseAddress!, length: Int(length)) }
        } catch {
            return nil
        }
    }

    /// The interface that holds `address` (getifaddrs).
    private static func interfaceName(of address: IPAddress) -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let socketAddress = entry.pointee.ifa_addr, let name = entry.pointee.ifa_name else { continue }
            let family = Int32(socketAddress.pointee.sa_family)
            let length = family == AF_INET ? MemoryLayout<sockaddr_in>.size : family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : 0
            guard length > 0, IPAddress(socketAddress: UnsafeRawPointer(socketAddress), length: length) == address else { continue }
            return String(cString: name)
        }
        return nil
    }
}
