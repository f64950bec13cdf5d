import Foundation
import ProbeConfig
import ProbeEngine
import ProbeResults
#if canImport(Glibc)
import Glibc
#endif

/// Notices that the config, targets or peers files changed, by a cheap poll of stat(2):
/// a file's device, inode, size, modification and change times. stat follows symbolic
/// links, so a Kubernetes ConfigMap update (the kubelet writes a new folder and swaps the
/// `..data` link the files point through) shows as a new inode, as does an editor's
/// write-and-rename; a file that appears or disappears is a change too.
final class FileWatch: Sendable {
    struct State: Equatable {
        var device: UInt64, inode: UInt64, size: Int64
        var modified: timespec, changed: timespec

        static func == (left: State, right: State) -> Bool {
            left.device == right.device && left.inode == right.inode && left.size == right.size
                && left.modified.tv_sec == right.modified.tv_sec && left.modified.tv_nsec == right.modified.tv_nsec
                && left.changed.tv_sec == right.changed.tv_sec && left.changed.tv_nsec == right.changed.tv_nsec
        }
    }

    /// The files and their last seen states (nil: absent).
    private let watched: Locked<[String: State?]>
    private let task: Locked<Task<Void, Never>?> = Locked(nil)

    init(files: [String]) {
        watched = Locked(Dictionary(files.map { ($0, Self.state(of: $0)) }, uniquingKeysWith: { first, _ in first }))
    }

    static func state(of path: String) -> State? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return State(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size), modified: info.st_mtim, changed: info.st_ctim)
    }

    /// Watches `files` from now on: new ones start from their current state, files no
    /// longer listed are dropped, the others keep theirs (a change not yet seen is not lost).
    func watch(_ files: [String]) {
        watched.withLock { watched in
            var next: [String: State?] = [:]
            for file in files { next[file] = watched[file] ?? Self.state(of: file) }
            watched = next
        }
    }

    /// The files that changed since the last call (and takes their new states).
    func changes() -> [String] {
        watched.withLock { watched in
            var changed: [String] = []
            for (file, last) in watched {
                let now = Self.state(of: file)
                if now != last { changed.append(file); watched[file] = now }
            }
            return changed.sorted()
        }
    }

    /// Polls every `intervalNanoseconds` and calls `onChange` with the changed files.
    func start(intervalNanoseconds: Int64, onChange: @escaping @Sendable ([String]) -> Void) {
        let poller = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(intervalNanoseconds))
                if Task.isCancelled { return }
                let changed = changes()
                if !changed.isEmpty { onChange(changed) }
            }
        }
        task.withLock { $0?.cancel(); $0 = poller }
    }

    func stop() {
        task.withLock { $0?.cancel(); $0 = nil }
    }
}
