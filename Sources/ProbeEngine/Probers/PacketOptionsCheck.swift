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
