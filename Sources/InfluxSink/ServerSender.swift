import ProbeResults
import DequeModule
import Foundation
import Logging
import Synchronization

/// A wake-up call for one waiting task: a signal that arrives while nobody waits is kept
/// for the next wait.
final class WakeUp: Sendable {
    private struct State {
        var signalled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.signalled = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns on a signal or after `duration`, whichever comes first.
    func wait(for duration: Duration) async {
        guard duration > .zero else { return }
        let timer = Task { [self] in
            do {
                try await Task.sleep(for: duration)
                signal()
            } catch {}
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.signalled {
                    state.signalled = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        timer.cancel()
    }
}

/// One server's sender: takes batches from its spool, sends them, retries, dead-letters.
/// Servers never wait for each other: each has its own spool, task and pace.
///
/// When the spool cannot write (ENOSPC, EDQUOT, EIO), points wait in a bounded memory
/// queue in front of it, newest kept, oldest dropped and counted; the disk is tried again
/// at most once a second (`DeliveryPolicy.diskRetrySeconds`), and the queue goes to the
/// spool, in order, once it takes writes.
final class ServerSender: Sendable {
    private struct Control {
        var stopDeadline: ContinuousClock.Instant?
        var task: Task<Void, Never>?
    }

    /// Points on their way to the spool, oldest first: those of the last `commitInterval`
    /// (group commit: one write and one fsync for all of them), or, while the spool cannot
    /// write, everything it refused.
    private struct MemoryQueue {
        var lines = Deque<String>()
        var bytes = 0
        /// Lines taken out for the spool write under way (still counted as spooled).
        var inCommit = 0
        /// No disk attempt before this (a failing disk is not hammered every round).
        var nextDiskAttempt = ContinuousClock.now
        /// The last spool write failed.
        var diskFailing = false
    }

    /// How long an accepted point may wait in memory before it is on disk: the durability
    /// window (a crash loses at most this much), and the price of one fsync for many points.
    static let commitInterval: Duration = .milliseconds(100)

    let server: InfluxServer
    let spool: Spool
    private let writer: ServerWriter
    private let batchSize: Int
    private let flushInterval: Duration
    private let policy: DeliveryPolicy
    private let logger: Logger
    private let counters: Mutex<ServerStatistics>
    private let wakeUp = WakeUp()
    private let control = Mutex(Control())
    private let memory = Mutex(MemoryQueue())
    private let memoryLimitBytes: Int
    /// One spool write at a time, so lines reach the disk in the order they came.
    private let committing = Mutex(())
    private let committer = Mutex<Task<Void, Never>?>(nil)

    init(server: InfluxServer, spool: Spool, batchSize: Int, flushInterval: Duration, policy: DeliveryPolicy, memoryLimitBytes: Int,
         logger: Logger) throws {
        self.server = server
        self.spool = spool
        self.memoryLimitBytes = max(1, memoryLimitBytes)
        self.writer = try ServerWriter(server: server)
        self.batchSize = max(1, batchSize)
        self.flushInterval = flushInterval
        self.policy = policy
        var logger = logger
        logger[metadataKey: "influxServer"] = "\(server.name)"
        self.logger = logger
        counters = Mutex(ServerStatistics(name: server.name))
    }

    func start() {
        control.withLock { control in
            control.task = Task { [self] in await run() }
        }
        committer.withLock { committer in
            committer = Task { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.commitInterval)
                    commit(force: false)
                }
            }
        }
    }

    /// Queues lines for this server's spool; they are on disk within `commitInterval`, or
    /// at once when a batch's worth waits. Never blocks on the disk in the common case and
    /// never fails: what cannot be kept within the memory limit is counted as dropped.
    /// - Parameter produced: the points these lines came from, unencodable ones included.
    func append(_ lines: [String], produced: Int) {
        counters.withLock {
            $0.produced += produced
            $0.dropped += produced - lines.count
        }
        let full = memory.withLock { memory -> Bool in
            memory.lines.append(contentsOf: lines)
            memory.bytes += lines.reduce(0) { $0 + $1.utf8.count + 1 }
            return memory.lines.count >= batchSize || memory.bytes > memoryLimitBytes
        }
        guard full else { return }
        // The disk first: only what it refuses is dropped beyond the limit.
        commit(force: false)
        memory.withLock { dropOverLimit(&$0) }
    }

    /// Drops the oldest queued lines beyond the memory limit, counted.
    private func dropOverLimit(_ memory: inout MemoryQueue) {
        var dropped = 0
        while memory.bytes > memoryLimitBytes, let oldest = memory.lines.popFirst() {
            memory.bytes -= oldest.utf8.count + 1
            dropped += 1
        }
        if dropped > 0 { counters.withLock { $0.dropped += dropped } }
    }

    /// Writes what waits in memory to the spool, one write and one fsync for all of it, and
    /// wakes the sender. While the spool refuses writes, at most once per
    /// `diskRetrySeconds` (unless `force`); refused lines go back to the front of the queue.
    private func commit(force: Bool) {
        committing.withLock { _ in
            let taken = memory.withLock { memory -> [String]? in
                guard !memory.lines.isEmpty, force || ContinuousClock.now >= memory.nextDiskAttempt else { return nil }
                let lines = Array(memory.lines)
                memory.lines.removeAll()
                memory.bytes = 0
                memory.inCommit = lines.count
                return lines
            }
            guard let lines = taken else { return }
            do {
                let dropped = try spool.append(lines)
                let recovered = memory.withLock { memory -> Bool in
                    memory.inCommit = 0
                    defer { memory.diskFailing = false }
                    return memory.diskFailing
                }
                counters.withLock { $0.dropped += dropped }
                if recovered {
                    logger.notice("the spool of InfluxDB server \(server.name) takes writes again: \(lines.count) points moved from memory to disk")
                }
                wakeUp.signal()
            } catch {
                let waiting = memory.withLock { memory -> Int in
                    memory.inCommit = 0
                    memory.lines.prepend(contentsOf: lines)
                    memory.bytes += lines.reduce(0) { $0 + $1.utf8.count + 1 }
                    memory.nextDiskAttempt = .now + .milliseconds(Int64(policy.diskRetrySeconds * 1000))
                    memory.diskFailing = true
                    dropOverLimit(&memory)
                    return memory.lines.count
                }
                counters.withLock { $0.spoolErrors += 1 }
                logger.error("cannot spool points for InfluxDB server \(server.name), keeping the newest in memory (at most \(memoryLimitBytes) bytes) and retrying: \(error)",
                             metadata: ["pointsInMemory": "\(waiting)"])
            }
        }
    }

    /// Points still in the memory queue when the process stops: a last try at the disk,
    /// then what is left is counted as dropped (memory does not survive the exit).
    private func spoolOrDropMemory() {
        committer.withLock { $0?.cancel() }
        commit(force: true)
        memory.withLock { memory in
            guard !memory.lines.isEmpty else { return }
            let lost = memory.lines.count
            memory.lines.removeAll()
            memory.bytes = 0
            counters.withLock { $0.dropped += lost }
            logger.error("InfluxDB server \(server.name): the spool still refuses writes; \(lost) points held in memory are lost at exit (counted as dropped)")
        }
    }

    /// The counters; they add up exactly once no request is in flight (a batch being
    /// acknowledged is briefly both written and spooled).
    var statistics: ServerStatistics {
        memory.withLock { memory in
            var statistics = counters.withLock { $0 }
            statistics.buffered = memory.lines.count + memory.inCommit
            statistics.spooled = spool.spooledPoints + memory.lines.count + memory.inCommit
            return statistics
        }
    }

    /// Sends what it can until the deadline, then returns once the request in flight ended.
    func stop(deadline: ContinuousClock.Instant) async {
        let task = control.withLock { control -> Task<Void, Never>? in
            control.stopDeadline = control.stopDeadline.map { min($0, deadline) } ?? deadline
            return control.task
        }
        wakeUp.signal()
        await task?.value
        // The committer holds the sender (and its spool's lock) until it has ended.
        let committerTask = committer.withLock { $0 }
        committerTask?.cancel()
        await committerTask?.value
        spoolOrDropMemory()
    }

    /// Stops without waiting (the sink was dropped without shutdown).
    func abandon() {
        committer.withLock { $0?.cancel() }
        control.withLock { $0.stopDeadline = .now }
        wakeUp.signal()
    }

    private var stopDeadline: ContinuousClock.Instant? { control.withLock { $0.stopDeadline } }

    private func run() async {
        var batch: SpoolBatch?
        var failures = 0
        while true {
            let deadline = stopDeadline
            if let deadline, ContinuousClock.now >= deadline { return }
            if batch == nil {
                // At a stop, what waits in memory goes to the spool first, to be sent too.
                if deadline != nil { commit(force: false) }
                let unsent = spool.unsent
                if deadline != nil && unsent.points == 0 { return }
                let flushAt = unsent.oldestSince.map { $0 + flushInterval }
                let due = unsent.points >= batchSize || deadline != nil || (flushAt.map { $0 <= .now } ?? false)
                guard due else {
                    let idle = flushAt.map { $0 - .now } ?? .seconds(3600)
                    await wakeUp.wait(for: idle)
                    continue
                }
                do {
                    batch = try spool.takeBatch(maximumPoints: batchSize)
                } catch {
                    logger.error("cannot read the spool of InfluxDB server \(server.name): \(error)")
                    await pause(until: .now + .seconds(1), deadline: deadline)
                    continue
                }
                guard batch != nil else { continue }
            }
            guard let current = batch else { continue }
            var timeout = policy.requestTimeoutSeconds
            if let deadline {
                let remaining = deadline - .now
                timeout = min(timeout, max(1, Int(remaining.components.seconds) + 1))
            }
            let outcome = await writer.send(current.lines, timeoutSeconds: timeout)
            switch outcome {
            case .stored:
                if failures > 0 {
                    logger.notice("InfluxDB server \(server.name) accepts writes again after \(failures) failed attempts")
                }
                failures = 0
                counters.withLock { $0.written += current.lines.count }
                finish(current)
                batch = nil
            case .retry(let retryAfter, let reason):
                failures += 1
                counters.withLock {
                    $0.sendErrors += 1
                    $0.lastError = reason
                }
                let wait = retryAfter.map { min($0, policy.maximumRetryAfterSeconds) } ?? policy.backoffSeconds(attempt: failures)
                // Loud at first, then at 2, 4, 8... failures, so a long outage does not flood the log.
                if failures & (failures - 1) == 0 {
                    logger.warning("write to InfluxDB server \(server.name) failed, retrying in \(String(format: "%.1f", wait)) s (attempt \(failures)): \(reason)",
                                   metadata: ["spooledPoints": "\(spool.spooledPoints)"])
                }
                await pause(until: .now + .milliseconds(Int64(wait * 1000)), deadline: stopDeadline)
                if let deadline = stopDeadline, ContinuousClock.now >= deadline { return }
                counters.withLock { $0.retried += 1 }
            case .refused(let status, let reason, let partial):
                failures = 0
                refuse(current, status: status, reason: reason, partial: partial)
                batch = nil
            }
        }
    }

    /// Sleeps until `instant`, or the stop deadline if that comes first; new points do not
    /// cut a backoff short.
    private func pause(until instant: ContinuousClock.Instant, deadline: ContinuousClock.Instant?) async {
        while true {
            let end = stopDeadline.map { min($0, instant) } ?? instant
            if ContinuousClock.now >= end { return }
            await wakeUp.wait(for: end - .now)
        }
    }

    private func finish(_ batch: SpoolBatch) {
        do {
            try spool.acknowledge(batch)
        } catch {
            logger.error("cannot move the spool cursor of InfluxDB server \(server.name) (the batch may be sent again after a restart): \(error)")
        }
    }

    private func refuse(_ batch: SpoolBatch, status: Int, reason: String, partial: Bool) {
        let rejected = partial ? Self.rejectedLines(of: batch.lines, reason: reason) : batch.lines
        let deadLetterPath = spool.directory + "/dead-letter.lp"
        let advice: String
        switch (status, server.api) {
        case (401, .v1), (403, .v1): advice = "authentication failed for server \(server.name): check username/password"
        case (401, .v2), (403, .v2): advice = "authentication failed for server \(server.name): check the token"
        case (404, .v1(let database, _, _, _)): advice = "database \"\(database)\" not found on server \(server.name): create it (CREATE DATABASE) or fix the name"
        case (404, .v2(let org, let bucket, _)): advice = "org \"\(org)\" or bucket \"\(bucket)\" not found on server \(server.name) (or the server has no /api/v2/write)"
        case (413, _): advice = "server \(server.name) refused the request as too large: lower the batch size"
        case (400, _) where partial:
            let count = rejected.count < batch.lines.count ? rejected.count : Self.droppedCount(in: reason) ?? batch.lines.count
            advice = "partial write to server \(server.name): it stored the valid lines and rejected \(count) of \(batch.lines.count)"
        default: advice = "server \(server.name) refused the points"
        }
        // A partial write names its rejected lines only for parse errors; otherwise its
        // "dropped=N" still says how many (the dead-letter file then holds the whole batch).
        let refusedCount = !partial ? batch.lines.count
            : rejected.count < batch.lines.count ? rejected.count : min(batch.lines.count, Self.droppedCount(in: reason) ?? batch.lines.count)
        counters.withLock {
            $0.sendErrors += 1
            $0.permanentErrors += refusedCount
            $0.written += batch.lines.count - refusedCount
            $0.lastError = "\(advice) (\(reason))"
        }
        do {
            try spool.deadLetter(rejected, reason: reason)
        } catch {
            logger.error("cannot write the dead-letter file of InfluxDB server \(server.name): \(error)")
        }
        logger.error("\(advice); \(rejected.count) points moved to \(deadLetterPath), not retried: \(reason)")
        finish(batch)
    }

    /// N of a 1.x partial write's "dropped=N".
    static func droppedCount(in reason: String) -> Int? {
        guard let range = reason.range(of: "dropped=", options: .backwards) else { return nil }
        return Int(reason[range.upperBound...].prefix(while: \.isNumber))
    }

    /// The lines a 1.x partial write names ("unable to parse '<line>': why"); all of them
    /// when the answer names none we sent (e.g. a field type conflict).
    static func rejectedLines(of lines: [String], reason: String) -> [String] {
        var named: Set<String> = []
        var rest = Substring(reason)
        while let start = rest.range(of: "unable to parse '") {
            rest = rest[start.upperBound...]
            guard let end = rest.range(of: "': ") else { break }
            named.insert(String(rest[..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        let matched = lines.filter { named.contains($0) }
        return matched.isEmpty ? lines : matched
    }
}
