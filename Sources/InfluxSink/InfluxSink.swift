import ProbeResults
import Foundation
import Logging
import Synchronization

/// Writes points to every configured InfluxDB server, each through its own durable spool
/// and sender, so a slow or dead server never holds up another, and nothing acknowledged
/// by `write` is lost to an outage or a restart (spool limits aside).
public final class InfluxSink: Sendable {
    private let senders: [ServerSender]
    private let accepting = Mutex(true)
    private let logger: Logger

    /// Opens (and replays) each server's spool; starts one sender per server.
    /// - Parameters:
    ///   - servers: the servers; every point goes to each. Names must be unique.
    ///   - spoolDirectory: holds one directory per server (its name, made filesystem-safe).
    ///   - spoolLimitBytes: per server; beyond it the oldest points are dropped.
    ///   - memoryLimitBytes: per server, for points the spool cannot write (a full or
    ///     failing disk); beyond it the oldest are dropped. Default: a sixteenth of the
    ///     spool limit, between 64 KiB and 8 MiB.
    ///   - batchSize: points per request at most; a full batch is sent at once.
    ///   - flushIntervalNanoseconds: a partial batch waits at most this long.
    ///   - logger: where the sink reports.
    ///   - deliveryPolicy: backoff and timeouts; the default suits production.
    /// - Throws: `InfluxSinkError` for duplicate names, an unusable URL, a spool in use by
    ///   another process or that cannot be created.
    public init(servers: [InfluxServer], spoolDirectory: String, spoolLimitBytes: Int64, memoryLimitBytes: Int? = nil, batchSize: Int,
                flushIntervalNanoseconds: Int64, logger: Logger, deliveryPolicy: DeliveryPolicy = DeliveryPolicy()) throws {
        let memoryLimit = memoryLimitBytes ?? Int(max(64 << 10, min(8 << 20, spoolLimitBytes / 16)))
        self.logger = logger
        var seenDirectories: [String: String] = [:]
        var senders: [ServerSender] = []
        for server in servers {
            let directoryName = Self.directoryName(for: server.name)
            if let other = seenDirectories[directoryName] {
                throw other == server.name ? InfluxSinkError.duplicateServerName(server.name)
                    : InfluxSinkError.invalidConfiguration("InfluxDB servers \"\(other)\" and \"\(server.name)\" would share spool directory \(directoryName): rename one")
            }
            seenDirectories[directoryName] = server.name
            var serverLogger = logger
            serverLogger[metadataKey: "influxServer"] = "\(server.name)"
            let spool = try Spool(directory: spoolDirectory + "/" + directoryName, limitBytes: spoolLimitBytes, serverName: server.name, logger: serverLogger)
            senders.append(try ServerSender(server: server, spool: spool, batchSize: batchSize,
                                            flushInterval: .nanoseconds(max(1_000_000, flushIntervalNanoseconds)), policy: deliveryPolicy,
                                            memoryLimitBytes: memoryLimit, logger: logger))
            logger.info("InfluxDB server \(server)", metadata: ["spool": "\(spoolDirectory)/\(directoryName)"])
        }
        self.senders = senders
        for sender in senders { sender.start() }
    }

    deinit {
        // Dropped without shutdown(): let the senders end after their request in flight;
        // the spools keep everything unsent.
        for sender in senders { sender.abandon() }
    }

    /// Hands the points to every server's spool and returns; never blocks on the network.
    /// They are on disk (one write and one fsync for all points of a server's group
    /// commit) within `ServerSender.commitInterval` (100 ms), or at once when a batch's worth
    /// waits: a crash loses at most that window. Points that cannot be encoded (no writable field) are
    /// counted as dropped. While a spool cannot write (full disk), its server's points wait
    /// in memory, within `memoryLimitBytes`; the statistics count every point either way.
    /// - Throws: `InfluxSinkError.shutDown` after `shutdown`.
    public func write(_ points: [DataPoint]) throws {
        guard accepting.withLock({ $0 }) else { throw InfluxSinkError.shutDown }
        let lines = points.compactMap(LineProtocol.encode)
        let invalid = points.count - lines.count
        if invalid > 0 {
            logger.warning("dropped \(invalid) points that have no measurement or no writable field (NaN and infinity are not writable)")
        }
        for sender in senders {
            sender.append(lines, produced: points.count)
        }
    }

    /// `write(_:)` for lines already encoded by `LineProtocol` (`seriesKey` then `line`):
    /// the cheap path for a producer that makes each series key once and reuses it.
    /// - Parameters:
    ///   - lines: one point each, without newlines.
    ///   - unwritable: points the producer could not encode (no writable field), counted
    ///     as produced and dropped.
    /// - Throws: `InfluxSinkError.shutDown` after `shutdown`.
    public func write(encoded lines: [String], unwritable: Int = 0) throws {
        guard accepting.withLock({ $0 }) else { throw InfluxSinkError.shutDown }
        for sender in senders {
            sender.append(lines, produced: lines.count + unwritable)
        }
    }

    /// Counters per server, in configuration order.
    public func statistics() -> [ServerStatistics] {
        senders.map(\.statistics)
    }

    /// Stops accepting points, sends what it can until the deadline, leaves the rest
    /// spooled, and returns once no request is in flight.
    /// - Parameter deadlineSeconds: from now; a request in flight at the deadline is
    ///   waited for (its timeout is cut to the time left, at least 1 s).
    public func shutdown(deadlineSeconds: Double) async {
        accepting.withLock { $0 = false }
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, deadlineSeconds) * 1000))
        await withTaskGroup(of: Void.self) { group in
            for sender in senders {
                group.addTask { await sender.stop(deadline: deadline) }
            }
        }
        for statistics in statistics() {
            if statistics.spooled > 0 {
                logger.notice("InfluxDB server \(statistics.name): \(statistics.spooled) points stay spooled for the next start")
            }
            logger.info("InfluxDB server \(statistics.name) since the start", metadata: [
                "produced": "\(statistics.produced)", "written": "\(statistics.written)", "dropped": "\(statistics.dropped)",
                "spooled": "\(statistics.spooled)", "permanentErrors": "\(statistics.permanentErrors)",
                "spoolErrors": "\(statistics.spoolErrors)", "sendErrors": "\(statistics.sendErrors)",
            ])
        }
    }

    /// A server name as a directory name: letters, digits, "-", "_" and "." are kept,
    /// anything else becomes "_"; when anything changed, a hash of the name is appended so
    /// that different names stay different directories.
    public static func directoryName(for serverName: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.".unicodeScalars)
        var name = String(String.UnicodeScalarView(serverName.unicodeScalars.prefix(64).map { allowed.contains($0) ? $0 : "_" }))
        if name != serverName || name.hasPrefix(".") || name.isEmpty {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
            for byte in serverName.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            name = (name.hasPrefix(".") ? "_" + name.dropFirst() : name) + "-" + String(hash, radix: 16)
        }
        return name
    }
}
