/// One probe run on demand (a `/probe` request): what to send and how long to wait.
public struct OnDemandProbe: Sendable, Equatable {
    public var kind: ProbeKind
    /// Packets (ICMP) or handshakes (TCP).
    public var count: Int
    /// Between two sends.
    public var spacingNanoseconds: Int64
    /// Each send's wait for its answer. The round ends at the last one: no wait for late
    /// replies, so the answer is due at its deadline.
    public var timeoutNanoseconds: Int64
    /// TCP: how the handshake ends.
    public var tcpMode: TCPProbeMode
    /// ICMP: echo payload bytes (56, as ping, unless a module sets `size`).
    public var payloadLength: Int

    public init(kind: ProbeKind, count: Int, spacingNanoseconds: Int64, timeoutNanoseconds: Int64, tcpMode: TCPProbeMode = .halfOpen, payloadLength: Int = 56) {
        self.payloadLength = payloadLength
        self.kind = kind
        self.count = count
        self.spacingNanoseconds = spacingNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
        self.tcpMode = tcpMode
    }
}

/// What `/probe` needs of an engine, so that the exporter runs probes without depending
/// on one: the command line hands it the engine's `OnDemandEngine`.
public protocol OnDemandProber: Sendable {
    /// Whether probes of `kind` can run here (ICMP needs sockets opened with privileges).
    func canProbe(_ kind: ProbeKind) -> Bool
    /// One round of `probe` against `target`, beside any other in flight (none waits on
    /// another's target); nil when it could not run.
    func run(_ probe: OnDemandProbe, on target: ProbeTarget) async -> RoundResult?
    /// Every address of `name` of the wanted families, given up after the timeout.
    func addresses(of name: String, preference: AddressPreference, timeoutNanoseconds: Int64) async -> Result<[IPAddress], LookupFailure>
    /// Ends probing: the probes in flight end first, at their timeout.
    func shutDown()
}
