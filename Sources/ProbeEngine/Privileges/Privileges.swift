import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Capabilities of the running process (libcap).
public enum Privileges {
    /// True when CAP_NET_RAW is in the effective set.
    public static var hasNetRaw: Bool { hasEffective(CAP_NET_RAW) }

    /// True when the effective, permitted and inheritable sets are all empty.
    public static var holdsNoCapabilities: Bool {
        guard let current = cap_get_proc(), let empty = cap_init() else { return false }
        defer {
            cap_free(UnsafeMutableRawPointer(current))
            cap_free(UnsafeMutableRawPointer(empty))
        }
        return cap_compare(current, empty) == 0
    }

    /// Gives up every capability for good, once the sockets that needed them are open.
    ///
    /// Empties the bounding set (when CAP_SETPCAP allows) and the ambient set, clears the
    /// effective, permitted and inheritable sets, and sets PR_SET_NO_NEW_PRIVS so nothing
    /// this process executes can gain privileges again. Sockets already open keep working.
    /// - Throws: `SystemCallError` when the sets cannot be cleared.
    public static func dropAll() throws(SystemCallError) {
        if hasEffective(CAP_SETPCAP) {
            var capability: cap_value_t = 0
            while capability <= cap_value_t(CAP_LAST_CAP) {
                _ = cap_drop_bound(capability) // best effort: the sets below are what matter
                capability += 1
            }
        }
        _ = cap_reset_ambient()
        guard let empty = cap_init() else { throw SystemCallError(call: "cap_init", errno: errno) }
        defer { cap_free(UnsafeMutableRawPointer(empty)) }
        if cap_set_proc(empty) != 0 { throw SystemCallError(call: "cap_set_proc", errno: errno) }
        if CSystemShims_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 { throw SystemCallError(call: "prctl(PR_SET_NO_NEW_PRIVS)", errno: errno) }
    }

    private static func hasEffective(_ capability: Int32) -> Bool {
        guard let capabilities = cap_get_proc() else { return false }
        defer { cap_free(UnsafeMutableRawPointer(capabilities)) }
        var value = CAP_CLEAR
        guard cap_get_flag(capabilities, cap_value_t(capability), CAP_EFFECTIVE, &value) == 0 else { return false }
        return value == CAP_SET
    }
}
