import CSystemShims
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Turns target names into addresses with getaddrinfo, on threads of its own.
///
/// getaddrinfo blocks (DNS, /etc/hosts, nsswitch), so it never runs on the event loop
/// nor on the Swift concurrency pool: each call runs on a small set of dedicated threads.
public enum Resolver {
    /// Resolves every name; a name that fails yields a target with `address == nil` and the
    /// reason, never a missing entry. Numeric addresses are parsed without getaddrinfo.
    /// - Parameters:
    ///   - names: host names or numeric addresses; "[::1]" brackets are accepted.
    ///   - preference: which family to accept.
    ///   - threads: how many lookups run at once.
    ///   - timeoutNanoseconds: return by then at the latest: a name still being looked up
    ///     (a resolver that never answers) comes back unresolved, as a temporary failure,
    ///     and its lookup finishes on its thread in the background. Nil: wait for all.
    /// - Returns: one target per name, in the same order.
    public static func resolve(_ names: [String], preference: AddressPreference, threads: Int = 16, timeoutNanoseconds: Int64? = nil) async -> [ProbeTarget] {
        var results = [ProbeTarget?](repeating: nil, count: names.count)
        var pending: [Int] = []
        for (index, name) in names.enumerated() {
            let bare = IPAddress.bareName(name)
            if let address = IPAddress(parsing: bare) {
                results[index] = accepting(address, name: name, preference: preference)
            } else {
                pending.append(index)
            }
        }
        if !pending.isEmpty {
            let resolved = await lookUp(pending.map { IPAddress.bareName(names[$0]) }, preference: preference, threads: threads, timeoutNanoseconds: timeoutNanoseconds)
            for (slot, index) in pending.enumerated() {
                var target = resolved[slot]
                target.name = names[index]
                results[index] = target
            }
        }
        return results.map { $0! }
    }

    private static func accepting(_ address: IPAddress, name: String, preference: AddressPreference) -> ProbeTarget {
        switch (preference, address.family) {
        case (.ipv4Only, .ipv6):
            return ProbeTarget(name: name, address: nil, resolutionError: "\(name) is an IPv6 address but -4 was given")
        case (.ipv6Only, .ipv4):
            return ProbeTarget(name: name, address: nil, resolutionError: "\(name) is an IPv4 address but -6 was given")
        default:
            return ProbeTarget(name: name, address: address)
        }
    }

    private final class Work: Sendable {
        struct State {
            var results: [ProbeTarget]
            var next = 0
            var running: Int
            var continuation: CheckedContinuation<[ProbeTarget], Never>?
        }

        let names: [String]
        let preference: AddressPreference
        let state: Locked<State>

        init(names: [String], preference: AddressPreference, threads: Int) {
            self.names = names
            self.preference = preference
            state = Locked(State(results: names.map { ProbeTarget(name: $0, address: nil) }, running: threads))
        }

        /// One resolver thread: takes names until none is left (or the caller stopped
        /// waiting); the last one to finish hands the results over.
        func run() {
            while true {
                let index = state.withLock { state -> Int in
                    guard state.continuation != nil else { return names.count }
                    defer { state.next += 1 }
                    return state.next
                }
                guard index < names.count else { break }
                let target = Resolver.getaddrinfo(names[index], preference: preference)
                state.withLock { $0.results[index] = target }
            }
            let finished: (CheckedContinuation<[ProbeTarget], Never>, [ProbeTarget])? = state.withLock { state in
                state.running -= 1
                guard state.running == 0, let continuation = state.continuation else { return nil }
                state.continuation = nil
                return (continuation, state.results)
            }
            if let (continuation, results) = finished { continuation.resume(returning: results) }
        }

        /// The caller's time is up: hand over what is known; names still being looked up
        /// are reported as timed out.
        func timeOut(after nanoseconds: Int64) {
            let handOver: (CheckedContinuation<[ProbeTarget], Never>, [ProbeTarget])? = state.withLock { state in
                guard let continuation = state.continuation else { return nil }
                state.continuation = nil
                let results = state.results.map { target in
                    target.address != nil || target.resolutionError != nil ? target
                        : ProbeTarget(name: target.name, address: nil, resolutionError: "\(target.name): no answer from the resolver within \(nanoseconds / 1_000_000) ms",
                                      resolutionFailureIsTemporary: true)
                }
                return (continuation, results)
            }
            if let (continuation, results) = handOver { continuation.resume(returning: results) }
        }
    }

    private static func lookUp(_ names: [String], preference: AddressPreference, threads: Int, timeoutNanoseconds: Int64?) async -> [ProbeTarget] {
        let threadCount = max(1, min(threads, names.count))
        let work = Work(names: names, preference: preference, threads: threadCount)
        let timer = Locked<Task<Void, Never>?>(nil)
        defer { timer.withLock { $0?.cancel() } }
        return await withCheckedContinuation { continuation in
            work.state.withLock { $0.continuation = continuation }
            if let timeout = timeoutNanoseconds {
                timer.withLock {
                    $0 = Task {
                        try? await Task.sleep(nanoseconds: UInt64(max(0, timeout)))
                        if !Task.isCancelled { work.timeOut(after: timeout) }
                    }
                }
            }
            for _ in 0..<threadCount {
                NativeThread.spawn(name: "netprobe-resolve") { work.run() }
            }
        }
    }

    static func getaddrinfo(_ name: String, preference: AddressPreference) -> ProbeTarget {
        switch addresses(of: name, preference: preference, all: false) {
        case .success(let addresses):
            return ProbeTarget(name: name, address: addresses[0])
        case .failure(let failure):
            // Temporary (EAI_AGAIN): the resolver did not answer (or answered SERVFAIL); it may next time.
            return ProbeTarget(name: name, address: nil, resolutionError: failure.reason, resolutionFailureIsTemporary: failure.temporary)
        }
    }

    /// Why a name has no address.
    public typealias LookupFailure = ProbeResults.LookupFailure

    /// Every address of `name`, as `addresses(of:preference:all:)`, looked up on a thread
    /// of its own (never the concurrency pool's).
    /// - Parameter timeoutNanoseconds: return by then at the latest: a lookup still going
    ///   (a resolver that does not answer) is given up as a temporary failure and finishes
    ///   on its thread in the background.
    public static func addresses(of name: String, preference: AddressPreference, timeoutNanoseconds: Int64) async -> Result<[IPAddress], LookupFailure> {
        typealias Answer = Result<[IPAddress], LookupFailure>
        let waiting = Locked<CheckedContinuation<Answer, Never>?>(nil)
        let timer = Locked<Task<Void, Never>?>(nil)
        defer { timer.withLock { $0?.cancel() } }
        let finish: @Sendable (Answer) -> Void = { answer in
            waiting.withLock { continuation in
                defer { continuation = nil }
                return continuation
            }?.resume(returning: answer)
        }
        return await withCheckedContinuation { continuation in
            waiting.withLock { $0 = continuation }
            timer.withLock {
                $0 = Task {
                    try? await Task.sleep(nanoseconds: UInt64(max(0, timeoutNanoseconds)))
                    guard !Task.isCancelled else { return }
                    finish(.failure(LookupFailure(reason: "\(name): no answer from the resolver within \(timeoutNanoseconds / 1_000_000) ms", temporary: true)))
                }
            }
            NativeThread.spawn(name: "netprobe-resolve") { finish(addresses(of: name, preference: preference)) }
        }
    }

    /// The addresses getaddrinfo gives for `name`, of the wanted families, in its order
    /// and without repeats (it lists one per socket type otherwise). Blocks: call it on a
    /// thread of its own.
    /// - Parameters:
    ///   - all: every address (a headless Service's name: one per pod); false: the first.
    /// - Returns: at least one address, or why there is none.
    public static func addresses(of name: String, preference: AddressPreference, all: Bool = true) -> Result<[IPAddress], LookupFailure> {
        var hints = addrinfo()
        switch preference {
        case .any: hints.ai_family = AF_UNSPEC
        case .ipv4Only: hints.ai_family = AF_INET
        case .ipv6Only: hints.ai_family = AF_INET6
        }
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(name, nil, &hints, &list)
        guard status == 0, let first = list else {
            let reason = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            return .failure(LookupFailure(reason: "\(name): \(reason)", temporary: status == EAI_AGAIN))
        }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            entry = current.pointee.ai_next
            guard let socketAddress = current.pointee.ai_addr,
                  let address = IPAddress(socketAddress: socketAddress, length: Int(current.pointee.ai_addrlen)),
                  !addresses.contains(address) else { continue }
            addresses.append(address)
            if !all { break }
        }
        guard !addresses.isEmpty else { return .failure(LookupFailure(reason: "\(name): no address of the wanted family", temporary: false)) }
        return .success(addresses)
    }
}
