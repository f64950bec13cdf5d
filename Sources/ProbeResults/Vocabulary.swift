/// Words every side shares: how a TCP probe ends, which families a name may give, and
/// why a lookup failed.

/// How a TCP probe ends its handshake, and so what the server it measures sees of it.
/// The raw value is safe as a tag value.
public enum TCPProbeMode: String, Sendable, Codable, CaseIterable {
    /// SYN, SYN-ACK, then RST in place of the final ACK (the ACK is held back with
    /// TCP_QUICKACK off and the socket closed with SO_LINGER 0 as soon as the SYN-ACK is
    /// in). The server's kernel drops the embryonic connection; its application never
    /// accepts one, so nothing shows in its logs or counters. Needs no privilege.
    case halfOpen = "half-open"
    /// The full handshake: the server's application accepts a connection, then netprobe
    /// closes it with a FIN (never an RST) and reads until the server closes too. The
    /// server may log each one (PostgreSQL with log_connections, MariaDB's
    /// Aborted_connects); the prober's host keeps one TIME_WAIT socket per probe for 60 s.
    case connect

    /// Connect mode's cap on attempts per second over all targets: each probe leaves a
    /// TIME_WAIT socket on this host for 60 s, so this bounds them to 12,000.
    public static let connectAttemptsPerSecondLimit: Double = 200
}

/// Which address families a name may resolve to. The raw values are the config file's
/// words (`family: any | ipv4 | ipv6`).
public enum AddressPreference: String, Sendable, CaseIterable {
    /// The first address getaddrinfo returns, of either family.
    case any
    /// IPv4 addresses only; names without one are reported unresolved.
    case ipv4Only = "ipv4"
    /// IPv6 addresses only; names without one are reported unresolved.
    case ipv6Only = "ipv6"
}

/// Why a name lookup gave no address.
public struct LookupFailure: Error, Sendable, Equatable {
    /// "NAME: reason", for logs and `check`.
    public var reason: String
    /// The resolver did not answer (EAI_AGAIN); it may next time.
    public var temporary: Bool

    public init(reason: String, temporary: Bool) {
        self.reason = reason
        self.temporary = temporary
    }
}
