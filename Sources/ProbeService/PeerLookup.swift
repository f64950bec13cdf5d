import Foundation
import ProbeConfig
import ProbeEngine
#if canImport(Glibc)
import Glibc
#endif

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

    /// Every address of `name` of the wanted families.
    static func allAddresses(of name: String, preference: AddressPreference) -> Outcome {
        var hints = addrinfo()
        switch preference {
        case .any: hints.ai_family = AF_UNSPEC
        case .ipv4Only: hints.ai_family = AF_INET
        case .ipv6Only: hints.ai_family = AF_INET6
        }
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &list)
        guard status == 0, let first = list else {
            let reason = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            return .failed(reason: "\(name): \(reason)", temporary: status == EAI_AGAIN)
        }
        defer { freeaddrinfo(list) }
        var addresses = Set<String>()
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            defer { entry = current.pointee.ai_next }
            guard let socketAddress = current.pointee.ai_addr else { continue }
            let ok: Bool
            switch current.pointee.ai_family {
            case AF_INET:
                var address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                ok = inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil
            case AF_INET6:
                var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                ok = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil
            default:
                ok = false
            }
            if ok { addresses.insert(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        }
        return addresses.isEmpty ? .failed(reason: "\(name): no address of the wanted family", temporary: false) : .addresses(addresses.sorted())
    }
}
