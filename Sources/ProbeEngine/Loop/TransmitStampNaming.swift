import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// How the kernel's transmit stamps of one socket name the probe they belong to.
///
/// Each send names its own stamp id with an SCM_TS_OPT_ID control message (Linux 6.13+):
/// the probe number, so a stamp names its probe whatever else the socket sent and in
/// whatever order the stamps come back. A kernel that refuses the message (EINVAL) leaves
/// the socket's own OPT_ID counter (0, 1, 2, ... one per packet sent), mapped back to
/// probe numbers here. Every socket with SOF_TIMESTAMPING_OPT_ID has one (the ICMP sockets,
/// the raw TCP sockets of path probes); owned by the loop thread with its socket.
struct TransmitStampNaming {
    /// Whether sends carry SCM_TS_OPT_ID; false once the kernel refused it.
    private(set) var usesPerSendID = true
    private var nextKernelCounter: UInt32 = 0
    private var probeNumberByCounter = [UInt32](repeating: 0, count: 1 << 16)

    /// Sends one packet whose transmit stamp will name `probeNumber`.
    /// - Parameters:
    ///   - probeNumber: the probe the packet is.
    ///   - attempt: sends the packet; with an SCM_TS_OPT_ID control message of
    ///     `probeNumber` when its argument is true. Called again without it when the
    ///     kernel refuses the message.
    /// - Returns: what `attempt` returned.
    /// - Throws: what `attempt` threw, but the one EINVAL that switches to the counter.
    mutating func send(probeNumber: UInt32, _ attempt: (_ perSendID: Bool) throws(SystemCallError) -> IOResult<Int>) throws(SystemCallError) -> IOResult<Int> {
        let result: IOResult<Int>
        do {
            result = try attempt(usesPerSendID)
        } catch where error.errno == EINVAL && usesPerSendID {
            usesPerSendID = false
            result = try attempt(false)
        }
        if case .processed = result, !usesPerSendID {
            probeNumberByCounter[Int(nextKernelCounter & 0xffff)] = probeNumber
            nextKernelCounter &+= 1
        }
        return result
    }

    /// The transmit stamp one error-queue message carries.
    /// - Parameter control: the message's control messages.
    /// - Returns: the probe the stamp names and the software stamp (CLOCK_REALTIME ns); nil
    ///   when the message is anything else (an ICMP or local error, another kind of stamp).
    func transmitStamp(in control: ReceivedControlMessages) -> (probeNumber: UInt32, realtime: Int64)? {
        guard let extended = control.extendedError, extended.origin == .timestamping,
              Int32(extended.info) == CSystemShims_SCM_TSTAMP_SND, let realtime = control.softwareRealtime else { return nil }
        return (usesPerSendID ? extended.data : probeNumberByCounter[Int(extended.data & 0xffff)], realtime)
    }
}
