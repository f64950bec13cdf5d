import Foundation
import InfluxSink
import Logging
import ProbeConfig
import ProbeEngine
import ProbeResults
import TestSupport
import XCTest
@testable import ProbeService
#if canImport(Glibc)
import Glibc
#endif

/// The run supervisor without a process: real loopback sockets, a config in a temporary
/// directory, reloads and re-resolution sent as control events, rounds collected as they
/// are written. Every step waits on rounds arriving, never on time.
final class ProbeServiceTests: XCTestCase {
    /// Rounds as the service writes them, as a stream the test walks through.
    final class Collector: RoundOutput {
        struct Record: Sendable {
            var round: RoundResult
            var env: String
            var point: DataPoint
        }
        let records: AsyncStream<Record>
        private let continuation: AsyncStream<Record>.Continuation

        init() { (records, continuation) = AsyncStream<Record>.makeStream() }

        func write(_ round: RoundResult, env: String, point: DataPoint) {
            continuation.yield(Record(round: round, env: env, point: point))
        }

        func finish() { continuation.finish() }
    }

    typealias Listener = AnyAddressListener

    static let interval = 0.2

    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("probe-service-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Writes the config and its tcp targets file; returns the config's path.
    @discardableResult
    func writeConfig(tcpTargets: [(env: String, host: String, port: UInt16)], count: Int = 2) throws -> String {
        var targets = ""
        for env in Set(tcpTargets.map(\.env)).sorted() {
            targets += "\(env):\n"
            for target in tcpTargets where target.env == env { targets += "  \(target.host): \(target.port)\n" }
        }
        try targets.write(to: directory.appendingPathComponent("tcp.yaml"), atomically: true, encoding: .utf8)
        let config = """
            probe: service-test
            targets: {ping: null, tcp: tcp.yaml}
            tcp: {interval: 200ms, count: \(count), spacing: 10ms, timeout: 150ms}
            resolve_interval: 10m
            """
        let path = directory.appendingPathComponent("netprobe.yaml").path
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testInfluxDBServersWithoutASinkFactoryAreAClearErrorAndNothingIsProbed() async throws {
        try writeConfig(tcpTargets: [("production", "127.0.0.1", 9)])
        var configuration = try ConfigurationLoader.load(path: directory.appendingPathComponent("netprobe.yaml").path)
        configuration.influxServers = [InfluxServerSettings(name: "db", url: "http://127.0.0.1:8086", api: .v1(database: "netprobe", retentionPolicy: nil, username: nil, password: nil))]
        let collector = Collector()
        let service = ProbeService(configuration: configuration, icmpSockets: nil, output: collector, logger: Logger(label: "service-test"))
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        defer { send.finish() }
        do {
            try await service.run(control: control)
            XCTFail("a service with servers and no way to write to them must not start")
        } catch let error as ProbeServiceError {
            XCTAssertEqual(error.description, "\(configuration.file): influxdb servers are configured but this service was started without a sink for them")
        }
        collector.finish()
        var written = 0
        for await _ in collector.records { written += 1 }
        XCTAssertEqual(written, 0)
    }

    /// Whether each reload's config loaded, in order.
    var reloads: AsyncStream<Bool>!
    private var reloadOutcome: AsyncStream<Bool>.Continuation!

    func startService(lookUp: ProbeService.Lookup? = nil) throws -> (collector: Collector, control: AsyncStream<ServiceControl>.Continuation, done: Task<Void, Error>) {
        let configuration = try ConfigurationLoader.load(path: directory.appendingPathComponent("netprobe.yaml").path)
        let collector = Collector()
        let (control, send) = AsyncStream<ServiceControl>.makeStream()
        (reloads, reloadOutcome) = AsyncStream<Bool>.makeStream()
        let outcome = reloadOutcome!
        let load: @Sendable (String) throws -> NetprobeConfiguration = { path in
            do {
                let loaded = try ConfigurationLoader.load(path: path)
                outcome.yield(true)
                return loaded
            } catch {
                outcome.yield(false)
                throw error
            }
        }
        var logger = Logger(label: "service-test")
        logger.logLevel = .critical
        let service = lookUp.map { ProbeService(configuration: configuration, icmpSockets: nil, output: collector, logger: logger, loadConfiguration: load, lookUp: $0) }
            ?? ProbeService(configuration: configuration, icmpSockets: nil, output: collector, logger: logger, loadConfiguration: load)
        let done = Task {
            defer { collector.finish() }
            try await service.run(control: control)
        }
        return (collector, send, done)
    }

    func assertOneIntervalApart(_ records: [Collector.Record], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let starts = records.map(\.point.timestampNanoseconds)
        for (earlier, later) in zip(starts, starts.dropFirst()) {
            XCTAssertEqual(later - earlier, 200_000_000, "\(what): consecutive points exactly one interval apart", file: file, line: line)
        }
    }

    func testReloadsChangeOnlyWhatChangedAndEveryRoundIsWrittenWhole() async throws {
        let listener = Listener()
        try writeConfig(tcpTargets: [("a", "127.0.0.1", listener.port), ("b", "127.0.0.2", listener.port)])
        let (collector, control, done) = try startService()
        var records: [Collector.Record] = []
        var phase = 0
        var recordsAtSecondReload = 0
        for await record in collector.records {
            records.append(record)
            let count = { (host: String) in records.filter { $0.round.target.name == host }.count }
            switch phase {
            case 0 where count("127.0.0.1") >= 3 && count("127.0.0.2") >= 3:
                // Ten reloads of an unchanged config: nothing may move.
                for _ in 0..<10 { control.yield(.reload) }
                phase = 1
            case 1 where count("127.0.0.1") >= 6:
                try writeConfig(tcpTargets: [("a", "127.0.0.1", listener.port), ("c", "127.0.0.3", listener.port)])
                recordsAtSecondReload = records.count
                control.yield(.reload)
                phase = 2
            case 2 where count("127.0.0.3") >= 3:
                control.yield(.stop)
                phase = 3
            default:
                break
            }
        }
        try await done.value
        XCTAssertEqual(phase, 3)
        XCTAssertTrue(records.allSatisfy { $0.round.sent == 2 && $0.round.received == 2 }, "whole rounds: \(records.map { ($0.round.target.name, $0.round.sent) })")
        let a = records.filter { $0.round.target.name == "127.0.0.1" }
        assertOneIntervalApart(a, "a, through ten unchanged reloads and one that changed other targets")
        XCTAssertTrue(a.allSatisfy { $0.env == "a" && $0.point.tags["env"] == "a" })
        let b = records.filter { $0.round.target.name == "127.0.0.2" }
        assertOneIntervalApart(b, "b until it was removed")
        XCTAssertLessThanOrEqual(records.dropFirst(recordsAtSecondReload).filter { $0.round.target.name == "127.0.0.2" }.count, 1,
                                 "b stops after the round in flight")
        let c = records.filter { $0.round.target.name == "127.0.0.3" }
        XCTAssertGreaterThanOrEqual(c.count, 3)
        XCTAssertTrue(c.allSatisfy { $0.env == "c" }, "the added target's env")
        assertOneIntervalApart(c, "c")
    }

    func testAMovedNameMovesOnlyItsTarget() async throws {
        let listener = Listener()
        try writeConfig(tcpTargets: [("prod", "db.test", listener.port), ("prod", "web.test", listener.port)])
        let addresses = Locked(["db.test": "127.0.0.1", "web.test": "127.0.0.2"])
        let lookUp: ProbeService.Lookup = { planned, _ in
            let table = addresses.withLock { $0 }
            return planned.map { ($0, ProbeTarget(name: $0.host, address: table[$0.host].flatMap(IPAddress.init(parsing:)), port: $0.port)) }
        }
        let (collector, control, done) = try startService(lookUp: lookUp)
        var records: [Collector.Record] = []
        var moved = false
        for await record in collector.records {
            records.append(record)
            let db = records.filter { $0.round.target.name == "db.test" }
            if !moved && db.count >= 3 {
                moved = true
                addresses.withLock { $0["db.test"] = "127.0.0.3" }
                control.yield(.reresolve)
            }
            if db.filter({ $0.point.tags["address"] == "127.0.0.3" }).count >= 3 { control.yield(.stop) }
        }
        try await done.value
        let db = records.filter { $0.round.target.name == "db.test" }
        let web = records.filter { $0.round.target.name == "web.test" }
        let dbAddresses = db.map { $0.point.tags["address"] ?? "" }
        let firstMoved = dbAddresses.firstIndex(of: "127.0.0.3") ?? dbAddresses.count
        XCTAssertEqual(Set(dbAddresses[..<firstMoved]), ["127.0.0.1"])
        XCTAssertEqual(Set(dbAddresses[firstMoved...]), ["127.0.0.3"], "once moved, every round on the new address: \(dbAddresses)")
        assertOneIntervalApart(db, "the moved target keeps its own schedule")
        assertOneIntervalApart(web, "the other target is untouched")
        XCTAssertTrue(web.allSatisfy { $0.point.tags["address"] == "127.0.0.2" })
    }

    func testAnInvalidReloadKeepsTheOldConfigAndAChangedSectionRestartsWithWholeRounds() async throws {
        let listener = Listener()
        let path = try writeConfig(tcpTargets: [("a", "127.0.0.1", listener.port)])
        let (collector, control, done) = try startService()
        var records: [Collector.Record] = []
        var phase = 0
        for await record in collector.records {
            records.append(record)
            switch phase {
            case 0 where records.count >= 2:
                try "tcp: {count: many}\n".write(toFile: path, atomically: true, encoding: .utf8)
                control.yield(.reload)
                var outcomes = reloads.makeAsyncIterator()
                let invalidLoaded = await outcomes.next()
                XCTAssertEqual(invalidLoaded, false, "the invalid config was read and refused")
                try writeConfig(tcpTargets: [("a", "127.0.0.1", listener.port)], count: 3)
                control.yield(.reload)
                phase = 1
            case 1 where records.filter({ $0.round.sent == 3 }).count >= 2:
                control.yield(.stop)
                phase = 2
            default:
                break
            }
        }
        try await done.value
        XCTAssertEqual(phase, 2)
        let sent = records.map(\.round.sent)
        let firstThree = sent.firstIndex(of: 3) ?? sent.count
        XCTAssertEqual(Set(sent[..<firstThree]), [2], "the old settings until the valid reload: \(sent)")
        XCTAssertEqual(Set(sent[firstThree...]), [3], "then the new ones, every round whole: \(sent)")
    }
}
