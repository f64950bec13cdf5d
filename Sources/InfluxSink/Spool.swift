import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A place in the spool: a segment file and a byte offset in it.
struct SpoolPosition: Comparable, Sendable {
    var segment: UInt64
    var offset: Int64

    static func < (left: SpoolPosition, right: SpoolPosition) -> Bool {
        (left.segment, left.offset) < (right.segment, right.offset)
    }
}

/// Lines taken from the spool for one request; acknowledged or dead-lettered as a whole.
struct SpoolBatch: Sendable {
    var lines: [String]
    var bytes: Int64
    var end: SpoolPosition
}

/// One server's durable queue of line-protocol lines.
///
/// Layout of the directory:
/// - `NNNNNNNNNNNNNNNNNNNN.lp`: segments, numbered in order, each line one point ending
///   in "\n", append-only; a new segment starts at every open and when the current one
///   reaches `segmentLimitBytes`.
/// - `cursor`: "SEGMENT OFFSET\n", where replay starts: everything before it was
///   acknowledged or dropped. Replaced atomically (write, fsync, rename, fsync directory).
/// - `dead-letter.lp`: batches the server refused for good, each after a `#` comment line
///   with the time and the server's answer (line protocol ignores `#` lines, so the file
///   can be written back with `influx -import` or curl once fixed).
/// - `lock`: flock'ed while a process uses the spool.
///
/// Segments wholly before the cursor are deleted. A crash can leave a last line without
/// its newline: opening cuts it off. Acknowledging a batch and moving the cursor are not
/// atomic, so a crash in between sends that batch again after restart; InfluxDB stores
/// a point with the same series and timestamp once, so the repeat is harmless.
final class Spool: Sendable {
    private struct Segment {
        var number: UInt64
        /// Bytes of complete lines.
        var size: Int64
    }

    private struct State {
        var segments: [Segment] = []
        /// Append descriptor of the last segment, or -1 until the first append.
        var appendDescriptor: Int32 = -1
        /// Where the sender reads next.
        var readCursor: SpoolPosition
        /// Persisted cursor: the start of the batch in flight, or readCursor.
        var durableCursor: SpoolPosition
        var inFlight: (points: Int, bytes: Int64)?
        var unsentPoints = 0
        var unsentBytes: Int64 = 0
        /// When the oldest unsent point was appended (for the flush interval).
        var oldestUnsentSince: ContinuousClock.Instant?
    }

    let directory: String
    let limitBytes: Int64
    let segmentLimitBytes: Int64
    private let logger: Logger
    private let serverName: String
    private let lockDescriptor: Int32
    private let state: Mutex<State>

    /// Opens (creating if needed) and locks the spool, measures the backlog, and drops
    /// the oldest points if it is over the limit.
    init(directory: String, limitBytes: Int64, serverName: String, logger: Logger) throws {
        self.directory = directory
        self.limitBytes = limitBytes
        self.segmentLimitBytes = max(64 << 10, min(64 << 20, limitBytes / 8))
        self.logger = logger
        self.serverName = serverName
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let lockPath = directory + "/lock"
        let lock = try SpoolIO.call("open", lockPath) { open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        if flock(lock, LOCK_EX | LOCK_NB) != 0 {
            close(lock)
            throw InfluxSinkError.spoolLocked(path: directory)
        }
        lockDescriptor = lock

        var segments: [Segment] = []
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasSuffix(".lp") && name != "dead-letter.lp" {
            guard let number = UInt64(name.dropLast(3)) else { continue }
            segments.append(Segment(number: number, size: 0))
        }
        segments.sort { $0.number < $1.number }
        var cursor = Self.readCursorFile(directory + "/cursor") ?? SpoolPosition(segment: segments.first?.number ?? 1, offset: 0)
        var kept: [Segment] = []
        for var segment in segments {
            let path = Self.segmentPath(directory, segment.number)
            if segment.number < cursor.segment {
                unlink(path)
                continue
            }
            segment.size = try Self.completeLinesSize(path: path, logger: logger, serverName: serverName)
            kept.append(segment)
        }
        if let first = kept.first, first.number > cursor.segment { cursor = SpoolPosition(segment: first.number, offset: 0) }
        var initial = State(readCursor: cursor, durableCursor: cursor)
        initial.segments = kept
        state = Mutex(initial)
        let backlog = try state.withLock { state -> (Int, Int64) in
            let scanned = try scan(&state, from: state.readCursor, maximumLines: .max, maximumBytes: .max, collect: false)
            state.unsentPoints = scanned.count
            state.unsentBytes = scanned.bytes
            if scanned.count > 0 { state.oldestUnsentSince = .now - .seconds(86_400) }
            return (scanned.count, scanned.bytes)
        }
        if backlog.0 > 0 {
            logger.info("replaying spool of InfluxDB server \(serverName)", metadata: ["points": "\(backlog.0)", "bytes": "\(backlog.1)", "directory": "\(directory)"])
        }
        _ = enforceLimit()
    }

    deinit {
        state.withLock { state in
            if state.appendDescriptor >= 0 { close(state.appendDescriptor) }
        }
        close(lockDescriptor)
    }

    /// Points on disk not yet acknowledged, in flight included.
    var spooledPoints: Int {
        state.withLock { $0.unsentPoints + ($0.inFlight?.points ?? 0) }
    }

    /// Points not yet taken by the sender, and since when the oldest waits.
    var unsent: (points: Int, oldestSince: ContinuousClock.Instant?) {
        state.withLock { ($0.unsentPoints, $0.oldestUnsentSince) }
    }

    /// Appends lines (each without newline) and fsyncs.
    /// - Returns: the number of oldest points dropped to stay under the size limit.
    func append(_ lines: [String]) throws -> Int {
        guard !lines.isEmpty else { return 0 }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 1 })
        for line in lines {
            buffer.append(contentsOf: line.utf8)
            buffer.append(UInt8(ascii: "\n"))
        }
        try state.withLock { state in
            if state.appendDescriptor < 0 || state.segments.last.map({ $0.size >= segmentLimitBytes }) ?? true {
                try startSegment(&state)
            }
            let path = Self.segmentPath(directory, state.segments[state.segments.count - 1].number)
            do {
                var written = 0
                while written < buffer.count {
                    written += try buffer.withUnsafeBytes { bytes in
                        try SpoolIO.call("write", path) { write(state.appendDescriptor, bytes.baseAddress! + written, bytes.count - written) }
                    }
                }
                _ = try SpoolIO.call("fsync", path) { fsync(state.appendDescriptor) }
            } catch {
                abandonFailedAppend(&state, path: path)
                throw error
            }
            state.segments[state.segments.count - 1].size += Int64(buffer.count)
            if state.unsentPoints == 0 { state.oldestUnsentSince = .now }
            state.unsentPoints += lines.count
            state.unsentBytes += Int64(buffer.count)
        }
        return enforceLimit()
    }

    /// Takes up to `maximumPoints` of the oldest unsent lines for one request. Only one
    /// batch is in flight at a time.
    func takeBatch(maximumPoints: Int) throws -> SpoolBatch? {
        try state.withLock { state in
            precondition(state.inFlight == nil, "one batch in flight per spool")
            guard state.unsentPoints > 0 else { return nil }
            let scanned = try scan(&state, from: state.readCursor, maximumLines: maximumPoints, maximumBytes: .max, collect: true)
            guard scanned.count > 0 else { return nil }
            state.readCursor = scanned.end
            state.inFlight = (scanned.count, scanned.bytes)
            state.unsentPoints -= scanned.count
            state.unsentBytes -= scanned.bytes
            // The rest of a backlog is overdue already: send it right away.
            state.oldestUnsentSince = state.unsentPoints > 0 ? .now - .seconds(86_400) : nil
            return SpoolBatch(lines: scanned.lines, bytes: scanned.bytes, end: scanned.end)
        }
    }

    /// The batch in flight is done with (stored, or dead-lettered): move the cursor past it.
    func acknowledge(_ batch: SpoolBatch) throws {
        try state.withLock { state in
            state.inFlight = nil
            try advanceDurableCursor(&state)
        }
    }

    /// Appends a refused batch to dead-letter.lp behind a comment with the reason.
    func deadLetter(_ lines: [String], reason: String) throws {
        let path = directory + "/dead-letter.lp"
        let stamp = ISO8601DateFormatter().string(from: Date())
        let header = "# \(stamp) \(serverName): \(reason.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " "))\n"
        let text = header + lines.map { $0 + "\n" }.joined()
        let descriptor = try SpoolIO.call("open", path) { open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644) }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            written += try bytes.withUnsafeBytes { buffer in
                try SpoolIO.call("write", path) { write(descriptor, buffer.baseAddress! + written, buffer.count - written) }
            }
        }
        _ = try SpoolIO.call("fsync", path) { fsync(descriptor) }
    }

    // MARK: - Internals (called with the lock held)

    /// Drops the oldest unsent points while the spool is over its limit.
    /// Never throws: the lines appended before it are on disk already, and a caller that
    /// saw an error would keep them a second time. A cursor that cannot be saved now is
    /// saved with the next acknowledgement.
    private func enforceLimit() -> Int {
        let dropped = state.withLock { state -> Int in
            let total = state.unsentBytes + (state.inFlight?.bytes ?? 0)
            guard total > limitBytes, state.unsentPoints > 0 else { return 0 }
            let scanned: (lines: [String], count: Int, bytes: Int64, end: SpoolPosition)
            do {
                scanned = try scan(&state, from: state.readCursor, maximumLines: .max, maximumBytes: total - limitBytes, collect: false)
            } catch {
                logger.error("spool of InfluxDB server \(serverName) is over its limit but cannot be read to drop the oldest points: \(error)")
                return 0
            }
            state.readCursor = scanned.end
            state.unsentPoints -= scanned.count
            state.unsentBytes -= scanned.bytes
            if state.unsentPoints == 0 { state.oldestUnsentSince = nil }
            if state.inFlight == nil {
                do {
                    try advanceDurableCursor(&state)
                } catch {
                    logger.error("cannot save the spool cursor of InfluxDB server \(serverName) (dropped points may be sent after a restart): \(error)")
                }
            }
            return scanned.count
        }
        if dropped > 0 {
            logger.error("spool of InfluxDB server \(serverName) is full: dropped the \(dropped) oldest points", metadata: ["limitBytes": "\(limitBytes)", "directory": "\(directory)"])
        }
        return dropped
    }

    /// After a failed write (ENOSPC, EDQUOT, EIO): cut off what part of the lines made it,
    /// so the segment still ends in a whole line, and start the next append in a new
    /// segment: a full disk may be full of this spool, and only a segment that is no longer
    /// appended to can be deleted once the server has acknowledged it.
    private func abandonFailedAppend(_ state: inout State, path: String) {
        let size = state.segments[state.segments.count - 1].size
        _ = ftruncate(state.appendDescriptor, off_t(size))
        if size > 0 {
            close(state.appendDescriptor)
            state.appendDescriptor = -1
        }
    }

    private func startSegment(_ state: inout State) throws {
        if state.appendDescriptor >= 0 {
            close(state.appendDescriptor)
            state.appendDescriptor = -1
        }
        let number = (state.segments.last?.number ?? max(state.readCursor.segment, 1) - 1) + 1
        let path = Self.segmentPath(directory, number)
        state.appendDescriptor = try SpoolIO.call("open", path) { open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        // Listed even if the directory sync fails, so that it is reused, not leaked.
        state.segments.append(Segment(number: number, size: 0))
        try syncDirectory()
        if state.unsentPoints == 0 && state.inFlight == nil {
            // Nothing pending: both cursors may jump to the new segment.
            let start = SpoolPosition(segment: number, offset: 0)
            if state.readCursor < start { state.readCursor = start }
        }
    }

    /// Persists the cursor and deletes segments the cursor has passed.
    private func advanceDurableCursor(_ state: inout State) throws {
        var cursor = state.readCursor
        // A fully read segment that is not the one being appended to is finished.
        while let index = state.segments.firstIndex(where: { $0.number == cursor.segment }),
              index + 1 < state.segments.count, cursor.offset >= state.segments[index].size {
            cursor = SpoolPosition(segment: state.segments[index + 1].number, offset: 0)
        }
        state.readCursor = max(state.readCursor, cursor)
        // Segments first, then the cursor: on a full disk the new cursor file needs the space
        // they free. A crash in between leaves a cursor into a deleted segment, which opening
        // moves to the start of the first segment left (a repeat, not a loss).
        while let first = state.segments.first, first.number < cursor.segment {
            unlink(Self.segmentPath(directory, first.number))
            state.segments.removeFirst()
        }
        guard cursor != state.durableCursor else { return }
        let path = directory + "/cursor"
        let temporary = path + ".tmp"
        let text = Array("\(cursor.segment) \(cursor.offset)\n".utf8)
        let descriptor = try SpoolIO.call("open", temporary) { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(descriptor) }
        _ = try text.withUnsafeBytes { bytes in try SpoolIO.call("write", temporary) { write(descriptor, bytes.baseAddress!, bytes.count) } }
        _ = try SpoolIO.call("fsync", temporary) { fsync(descriptor) }
        _ = try SpoolIO.call("rename", path) { rename(temporary, path) }
        try syncDirectory()
        state.durableCursor = cursor
    }

    private func syncDirectory() throws {
        let descriptor = try SpoolIO.call("open", directory) { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(descriptor) }
        _ = try SpoolIO.call("fsync", directory) { fsync(descriptor) }
    }

    /// Reads whole lines from `start` on, across segments, until `maximumLines` lines or
    /// at least `maximumBytes` bytes.
    private func scan(_ state: inout State, from start: SpoolPosition, maximumLines: Int, maximumBytes: Int64, collect: Bool)
        throws -> (lines: [String], count: Int, bytes: Int64, end: SpoolPosition) {
        var lines: [String] = []
        var count = 0
        var bytes: Int64 = 0
        var position = start
        // 64 KiB, not zeroed: a bigger buffer bought no fewer system calls worth having,
        // and every byte of one is resident memory at the peak (a 1 MiB one was half the
        // page faults of a run with 5 targets).
        let chunkSize = 1 << 16
        var chunk = [UInt8](unsafeUninitializedCapacity: chunkSize) { _, initialized in initialized = chunkSize }
        for segment in state.segments where segment.number >= position.segment {
            if segment.number > position.segment { position = SpoolPosition(segment: segment.number, offset: 0) }
            guard position.offset < segment.size else { continue }
            let path = Self.segmentPath(directory, segment.number)
            let descriptor = try SpoolIO.call("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
            defer { close(descriptor) }
            var pending: [UInt8] = []
            var offset = position.offset
            while offset < segment.size, count < maximumLines, bytes < maximumBytes {
                let wanted = Int(min(Int64(chunkSize), segment.size - offset))
                let got = try chunk.withUnsafeMutableBytes { buffer in
                    try SpoolIO.call("pread", path) { pread(descriptor, buffer.baseAddress!, wanted, off_t(offset)) }
                }
                guard got > 0 else { break }
                offset += Int64(got)
                var lineStart = 0
                for index in 0..<got where chunk[index] == UInt8(ascii: "\n") {
                    let length = pending.count + index - lineStart
                    if collect {
                        pending.append(contentsOf: chunk[lineStart..<index])
                        lines.append(String(decoding: pending, as: UTF8.self))
                    }
                    pending.removeAll(keepingCapacity: true)
                    lineStart = index + 1
                    count += 1
                    bytes += Int64(length + 1)
                    position.offset += Int64(length + 1)
                    if count >= maximumLines || bytes >= maximumBytes { break }
                }
                if count >= maximumLines || bytes >= maximumBytes { break }
                pending.append(contentsOf: chunk[lineStart..<got])
            }
            if count >= maximumLines || bytes >= maximumBytes { break }
        }
        return (lines, count, bytes, position)
    }

    private static func segmentPath(_ directory: String, _ number: UInt64) -> String {
        let digits = String(number)
        return directory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".lp"
    }

    private static func readCursorFile(_ path: String) -> SpoolPosition? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let segment = UInt64(parts[0]), let offset = Int64(parts[1]) else { return nil }
        return SpoolPosition(segment: segment, offset: offset)
    }

    /// The size up to the last newline; a torn last line (crash mid-write) is cut off.
    private static func completeLinesSize(path: String, logger: Logger, serverName: String) throws -> Int64 {
        let descriptor = try SpoolIO.call("open", path) { open(path, O_RDWR | O_CLOEXEC) }
        defer { close(descriptor) }
        let size = Int64(try SpoolIO.call("lseek", path) { Int(lseek(descriptor, 0, SEEK_END)) })
        var end = size
        var byte: UInt8 = 0
        while end > 0 {
            _ = try SpoolIO.call("pread", path) { pread(descriptor, &byte, 1, off_t(end - 1)) }
            if byte == UInt8(ascii: "\n") { break }
            end -= 1
        }
        if end < size {
            logger.warning("spool of InfluxDB server \(serverName): ignoring a torn last line (\(size - end) bytes) in \(path)")
            _ = try SpoolIO.call("ftruncate", path) { Int(ftruncate(descriptor, off_t(end))) }
            _ = try SpoolIO.call("fsync", path) { fsync(descriptor) }
        }
        return end
    }
}

/// The one way the spool makes system calls: EINTR retried, failures thrown with the
/// call's name and path.
enum SpoolIO {
    @discardableResult
    static func call<Result: BinaryInteger>(_ name: String, _ path: String, _ body: () -> Result) throws -> Result {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            precondition(code != EBADF && code != EFAULT, "\(name) \(path): bad descriptor or address (a bug)")
            throw InfluxSinkError.spool(operation: name, path: path, errno: code)
        }
    }
}
