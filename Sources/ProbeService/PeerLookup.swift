import Foundation
import ProbeConfig
import ProbeEngine
import ProbeResults

/// The peers of `peers_dns` mesh groups: every address a name has (a headless Service's
/// name has one A or AAAA record per pod). getaddrinfo blocks, so it runs on a thread of
/// its own, and a lookup that takes longer than `timeoutNanoseconds` counts as failed.
public enum PeerLookup {
    /// The outcome of one name.
    public enum Outcome: Sendable, Equatable {
        /// Its addresses, as text, sorted and without repeats.
        case addresses([String])
        /// No answer or an error; `temporary` when the resolver may answer next time.
        case failed(reason: String, temporary: Bool)
    }

    /// Looks up every name at once.
    public static func resolve(_ names: [String], preference: AddressPreference, timeoutNanoseconds: Int64 = PlanResolver.timeoutNanoseconds) async -> [String: Outcome] {
        await withTaskGroup(of: (String, Outcome).self) { group in
            for name in Set(names) {
                group.addTask { (name, await lookUp(name, preference: preference, timeoutNanoseconds: timeoutNanoseconds)) }
            }
            var outcomes: [String: Outcome] = [:]
            for await (name, outcome) in group { outcomes[name] = outcome }
            return outcomes
        }
    }

    static func lookUp(_ name: String, preference: AddressPreference, timeoutNanoseconds: Int64) async -> Outcome {
        let answered = Locked(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            let finish: @Sendable (Outcome) -> Void = { outcome in
                let first = answered.withLock { done in defer { done = true }; return !done }
                if first { continuation.resume(returning: outcome) }
            }
            NativeThread.spawn(name: "netprobe-peers") { finish(allAddresses(of: name, preference: preference)) }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(timeoutNanoseconds))
                finish(.failed(reason: "\(name): no answer from the resolver", temporary: true))
            }
        }
    }

    /// Every address of `name` of the wanted families, as text, sorted.
    static func allAddresses(of name: String, preference: AddressPreference) -> Outcome {
        switch Resolver.addresses(of: name, preference: preference) {
        case .success(let addresses): return .addresses(Set(addresses.map(\.description)).sorted())
        case .failure(let failure): return .failed(reason: failure.reason, temporary: failure.temporary)
        }
    }
}
