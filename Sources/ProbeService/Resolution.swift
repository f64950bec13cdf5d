import ProbeEngine
import ProbeResults

/// Names of a plan to addresses.
public enum PlanResolver {
    /// How long one round of lookups may take: a resolver that never answers must not hold
    /// up the start, a reload or a stop; the names it did not answer are tried again later.
    public static let timeoutNanoseconds: Int64 = 5_000_000_000

    /// Resolves every distinct host once.
    /// - Returns: each planned target with the engine target it stands for, in order.
    public static func resolve(_ planned: [PlannedTarget], preference: AddressPreference) async -> [(planned: PlannedTarget, target: ProbeTarget)] {
        var hosts: [String] = []
        var position: [String: Int] = [:]
        for target in planned where position[target.host] == nil {
            position[target.host] = hosts.count
            hosts.append(target.host)
        }
        let resolved = await Resolver.resolve(hosts, preference: preference, timeoutNanoseconds: timeoutNanoseconds)
        return planned.map { target in
            var probe = target.applied(to: resolved[position[target.host]!])
            probe.port = target.port
            return (target, probe)
        }
    }
}
