import ProbeConfig
import ProbeEngine
import ProbeResults

/// What the config asks to probe, one entry per target of one kind: the identity a target
/// keeps through reloads and re-resolution (group, host, port and TOS class: a series),
/// and what it is probed and tagged with (source, interface, labels).
///
/// Equality and hashing are the identity alone: a reload that changes a target's source,
/// interface or labels finds the same planned target and moves it in place
/// (`ProbePlan.update`), as a moved address is, instead of removing and adding it.
public struct PlannedTarget: Hashable, Sendable {
    /// The targets file's group: the `env` tag.
    public var env: String
    /// The host as written in the targets file.
    public var host: String
    /// TCP port; nil for ICMP.
    public var port: UInt16?
    /// The options of its packets; `options.tos` is part of the identity (each class of a
    /// `tos` list is a target and a series of its own), source and interface are not.
    public var options: PacketOptions
    /// Its labels (tags); not part of the identity.
    public var labels: [String: String]

    public init(env: String, host: String, port: UInt16? = nil, options: PacketOptions = .none, labels: [String: String] = [:]) {
        self.env = env
        self.host = host
        self.port = port
        self.options = options
        self.labels = labels
    }

    public static func == (left: PlannedTarget, right: PlannedTarget) -> Bool {
        left.env == right.env && left.host == right.host && left.port == right.port && left.options.tos == right.options.tos
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(env)
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(options.tos)
    }

    /// `target` (what a lookup made of the host) with this target's options and labels.
    public func applied(to target: ProbeTarget) -> ProbeTarget {
        var target = target
        target.options = options
        target.labels = labels
        return target
    }

    /// The ping targets of a configuration, in file order.
    public static func ping(_ configuration: NetprobeConfiguration) -> [PlannedTarget] {
        configuration.pingTargets.map { PlannedTarget(env: $0.env, host: $0.host, options: $0.options, labels: $0.labels) }
    }

    /// The TCP targets of a configuration, in file order.
    public static func tcp(_ configuration: NetprobeConfiguration) -> [PlannedTarget] {
        configuration.tcpTargets.map { PlannedTarget(env: $0.env, host: $0.host, port: $0.port, options: $0.options, labels: $0.labels) }
    }
}

/// The targets of one prober as the engine knows them: by engine index, each with the
/// planned target it stands for and the address it is probed at. Indices never change:
/// a removed target keeps its index (inactive), an added one takes the next.
public struct ProbePlan: Sendable {
    public struct Entry: Sendable {
        public var planned: PlannedTarget
        public var target: ProbeTarget
        /// False once removed.
        public var isActive: Bool
    }

    public private(set) var entries: [Entry] = []
    private var indexByTarget: [PlannedTarget: Int] = [:]

    /// The first plan of a run: the engine is given `targets` in this order.
    public init(_ resolved: [(planned: PlannedTarget, target: ProbeTarget)]) {
        // Sized once: growing by doubling held the old and the new storage at once, 0.7 MB
        // more at the peak with 10,000 targets.
        entries.reserveCapacity(resolved.count)
        indexByTarget.reserveCapacity(resolved.count)
        for (planned, target) in resolved { append(planned, target) }
    }

    /// The targets to start the engine with, in index order.
    public var targets: [ProbeTarget] { entries.map(\.target) }

    /// The planned target behind an engine index (results carry the index).
    public func planned(at index: Int) -> PlannedTarget? {
        entries.indices.contains(index) ? entries[index].planned : nil
    }

    public var activeCount: Int { entries.lazy.filter(\.isActive).count }

    /// What the engine must change to probe `wanted` instead: targets no longer wanted
    /// are removed, new ones added (taking the next indices, in `wanted`'s order), and
    /// those whose address, resolution, source, interface or labels changed are moved;
    /// every other target is left alone. The plan becomes `wanted`.
    /// - Returns: the update for the prober (empty when nothing changed).
    public mutating func update(to wanted: [(planned: PlannedTarget, target: ProbeTarget)]) -> TargetUpdate {
        var update = TargetUpdate()
        let wantedTargets = Set(wanted.map(\.planned))
        for (index, entry) in entries.enumerated() where entry.isActive && !wantedTargets.contains(entry.planned) {
            update.removed.append(index)
            entries[index].isActive = false
            indexByTarget[entry.planned] = nil
        }
        for (planned, target) in wanted {
            if let index = indexByTarget[planned] {
                let current = entries[index].target
                if current.address != target.address || current.resolutionError != target.resolutionError
                    || current.options != target.options || current.labels != target.labels {
                    update.changed.append((index: index, target: target))
                    entries[index].target = target
                }
                entries[index].planned = planned
            } else {
                update.added.append(target)
                append(planned, target)
            }
        }
        return update
    }

    /// `wanted`, except that a name whose lookup failed only for now (the resolver did not
    /// answer) keeps the address it is probed at: a dead resolver must not stop the probing
    /// of targets that were resolved. A name that does not exist is unresolved at once.
    public func keepingKnownAddresses(_ wanted: [(planned: PlannedTarget, target: ProbeTarget)]) -> [(planned: PlannedTarget, target: ProbeTarget)] {
        wanted.map { planned, target in
            guard target.address == nil, target.resolutionFailureIsTemporary, let index = indexByTarget[planned],
                  entries[index].target.address != nil else { return (planned, target) }
            // The address is kept; the options and labels are the new configuration's.
            return (planned, planned.applied(to: entries[index].target))
        }
    }

    private mutating func append(_ planned: PlannedTarget, _ target: ProbeTarget) {
        indexByTarget[planned] = entries.count
        entries.append(Entry(planned: planned, target: target, isActive: true))
    }
}
