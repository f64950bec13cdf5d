import Foundation
import Logging
import ProbeConfig
import ProbeResults
import TestSupport
import XCTest
@testable import WebView

/// One round point as `run` writes it (Schema): tags, the fields the view reads, a time.
private struct InfluxHistoryFixturePoint {
    var measurement = "icmp"
    var tags: [String: String]
    var sent: Int
    var received: Int
    var minimum: Double?
    var median: Double?
    var maximum: Double?
    var time: Int64

    /// Plain line protocol: tag values escaped for `,`, `=` and space (netprobe's own
    /// escaping), so the server stores the names exactly (checked by SHOW TAG VALUES).
    var line: String {
        func escaped(_ text: String) -> String {
            var output = ""
            for character in text {
                if character == "," || character == "=" || character == " " { output.append("\\") }
                output.append(character)
            }
            return output
        }
        let tagText = tags.sorted { $0.key < $1.key }.map { ",\(escaped($0.key))=\(escaped($0.value))" }.joined()
        var fields = ["sent=\(sent)i", "received=\(received)i", "loss_percent=\(sent == 0 ? 0 : Double(sent - received) / Double(sent) * 100)"]
        if let minimum, let median, let maximum {
            fields += ["rtt_min_ms=\(minimum)", "rtt_median_ms=\(median)", "rtt_max_ms=\(maximum)", "rtt_avg_ms=\(median)"]
        }
        fields.append("result=\"\(received > 0 ? "ok" : "timeout")\"")
        return "\(measurement)\(tagText) \(fields.joined(separator: ",")) \(time)"
    }
}

final class InfluxHistoryTests: XCTestCase {
    private let second: Int64 = 1_000_000_000
    /// 2025-12-06 00:00:00 UTC, a multiple of a day since 1970.
    private let midnight: Int64 = 1_764_979_200 * 1_000_000_000
    private let logger = Logger(label: "influx-history-test")

    private func settings(_ server: TestServerProcess, database: String = "probes", username: String? = nil, password: String? = nil) -> InfluxServerSettings {
        InfluxServerSettings(name: "history", url: server.url.absoluteString,
                             api: .v1(database: database, retentionPolicy: nil, username: username, password: password.map(Secret.init)))
    }

    private func write(_ server: InfluxDBTestServer, _ points: [InfluxHistoryFixturePoint]) async throws {
        var components = URLComponents(url: server.url.appendingPathComponent("write"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "db", value: "probes"), URLQueryItem(name: "precision", value: "ns")]
        if let admin = server.admin {
            components.queryItems! += [URLQueryItem(name: "u", value: admin.username), URLQueryItem(name: "p", value: admin.password)]
        }
        let (status, body) = try await TestEnvironment.http("POST", components.url!, body: Data(points.map(\.line).joined(separator: "\n").utf8))
        XCTAssertEqual(status, 204, String(decoding: body, as: UTF8.self))
    }

    /// A round of a target: `base` sets its RTTs apart from every other series'; every
    /// seventh round lost everything (no RTT fields), others lost 0 to 3 of 10.
    private func round(_ round: Int, base: Double, tags: [String: String], time: Int64) -> InfluxHistoryFixturePoint {
        let index = round + 1000
        if index % 7 == 3 {
            return InfluxHistoryFixturePoint(tags: tags, sent: 10, received: 0, minimum: nil, median: nil, maximum: nil, time: time)
        }
        let minimum = base + Double(index % 13) * 0.25
        return InfluxHistoryFixturePoint(tags: tags, sent: 10, received: 10 - index % 4, minimum: minimum, median: minimum + 0.5 + Double(index % 5) * 0.125,
                                         maximum: minimum + 2 + Double(index % 3), time: time)
    }

    /// The buckets an InfluxQL query written here answers, on the given grid.
    private func independentBuckets(_ server: InfluxDBTestServer, where condition: String, start: Int64, width: Int64, count: Int) async throws -> [HistoryBucket] {
        let statement = "SELECT count(\"sent\"), sum(\"sent\"), sum(\"received\"), min(\"rtt_min_ms\"), median(\"rtt_median_ms\"), max(\"rtt_max_ms\") "
            + "FROM \"icmp\" WHERE \(condition) AND time >= \(start) AND time < \(start + Int64(count) * width * second) "
            + "GROUP BY time(\(width)s) fill(none)"
        var buckets = (0..<count).map {
            HistoryBucket(startNanoseconds: start + Int64($0) * width * second, durationNanoseconds: width * second, rounds: 0, sent: 0, received: 0,
                          minimumMilliseconds: nil, medianMilliseconds: nil, maximumMilliseconds: nil)
        }
        let series = try await server.series(statement, database: "probes")
        XCTAssertLessThanOrEqual(series.count, 1)
        for row in (series.first?["values"] as? [[Any]]) ?? [] {
            let time = (row[0] as! NSNumber).int64Value
            let index = Int((time - start) / (width * second))
            buckets[index].rounds = (row[1] as! NSNumber).intValue
            buckets[index].sent = (row[2] as! NSNumber).intValue
            buckets[index].received = (row[3] as! NSNumber).intValue
            buckets[index].minimumMilliseconds = (row[4] as? NSNumber)?.doubleValue
            buckets[index].medianMilliseconds = (row[5] as? NSNumber)?.doubleValue
            buckets[index].maximumMilliseconds = (row[6] as? NSNumber)?.doubleValue
        }
        return buckets
    }

    // MARK: - The grid

    func testAnAlignedDayOf1440ColumnsIsMinutesFromItsStart() throws {
        let grid = try InfluxHistory.grid(from: midnight, to: midnight + 86_400 * second, columns: 1440)
        XCTAssertEqual(grid, InfluxHistory.Grid(startNanoseconds: midnight, widthSeconds: 60, count: 1440))
    }

    func testColumnsAreWholeSecondsOnTheEpochGridAndCoverTheRangeWithTheNewestLast() throws {
        for (from, to, columns) in [(midnight + 17 * second + 5, midnight + 86_417 * second + 5, 800), (midnight + 123_456_789, midnight + 30 * 86_400 * second, 733),
                                    (midnight + 1, midnight + 3_600 * second, 2), (midnight, midnight + 600 * second, 1000)] {
            let grid = try InfluxHistory.grid(from: from, to: to, columns: columns)
            XCTAssertEqual(grid.count, columns)
            XCTAssertEqual(grid.startNanoseconds % grid.widthNanoseconds, 0, "\(grid)")
            XCTAssertLessThanOrEqual(grid.startNanoseconds, from, "\(grid)")
            XCTAssertGreaterThan(grid.endNanoseconds, to - 1, "the last column holds the range's last instant: \(grid)")
            XCTAssertLessThanOrEqual(grid.endNanoseconds - grid.widthNanoseconds, to - 1, "\(grid)")
            if grid.widthSeconds > 1 {
                // The smallest such width: one second less does not cover the range.
                let narrower = (grid.widthSeconds - 1) * second
                XCTAssertGreaterThan((to - 1) / narrower * narrower - Int64(columns - 1) * narrower, from, "\(grid)")
            }
        }
    }

    func testARangeThatCannotBeDrawnIsAClearError() {
        XCTAssertThrowsError(try InfluxHistory.grid(from: midnight, to: midnight + second, columns: 1)) {
            XCTAssertEqual("\($0)", "invalid history request: a graph needs 2 to 20000 columns, got 1")
        }
        XCTAssertThrowsError(try InfluxHistory.grid(from: midnight, to: midnight, columns: 100)) {
            XCTAssertTrue("\($0)".contains("is not a range"), "\($0)")
        }
    }

    // MARK: - Against a real influxd

    func testADayGraphsBucketsEqualAGroupByTimeQueryAndKeepClassesLabelsAndProbesApart() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("probes")
        let web = ["probe": "probe-1", "env": "prod", "target": "web", "family": "ipv4"]
        var points: [InfluxHistoryFixturePoint] = []
        var classZeroInDay = 0
        let from = midnight + 17 * second + 5
        let to = from + 86_400 * second
        // A round a minute (3 s after it) for a day and a bit, with an hour of gap; the
        // address changes at noon (still one series of the view).
        for index in -30..<1470 where !(600..<660).contains(index) {
            let time = midnight + Int64(index) * 60 * second + 3 * second
            var tags = web
            tags["address"] = index < 720 ? "192.0.2.1" : "192.0.2.2"
            points.append(round(index, base: 10, tags: tags, time: time))
            if time >= from && time < to { classZeroInDay += 1 }
            var ef = tags
            ef["tos"] = "ef"
            points.append(round(index, base: 50, tags: ef, time: time + 7 * second))
            var labelled = tags
            labelled["team"] = "blue"
            points.append(round(index, base: 80, tags: labelled, time: time + 11 * second))
            var otherProbe = tags
            otherProbe["probe"] = "probe-2"
            points.append(round(index, base: 120, tags: otherProbe, time: time))
        }
        for chunk in stride(from: 0, to: points.count, by: 2000) {
            try await write(server, Array(points[chunk..<min(points.count, chunk + 2000)]))
        }

        let history = InfluxHistory(servers: [settings(server)], probe: "probe-1", logger: logger)
        XCTAssertTrue(history.isSupported)
        XCTAssertEqual(history.serverName, "history")
        let key = WebSeriesKey(kind: .icmp, env: "prod", target: "web", port: nil)
        let buckets = try await history.buckets(for: key, from: from, to: to, columns: 800)
        XCTAssertEqual(buckets.count, 800)
        let grid = try InfluxHistory.grid(from: from, to: to, columns: 800)
        XCTAssertEqual(buckets.first?.startNanoseconds, grid.startNanoseconds)
        XCTAssertEqual(Set(buckets.map(\.durationNanoseconds)), [grid.widthNanoseconds])
        XCTAssertEqual(zip(buckets, buckets.dropFirst()).filter { $1.startNanoseconds != $0.startNanoseconds + grid.widthNanoseconds }.count, 0)

        let expected = try await independentBuckets(server, where: "\"probe\" = 'probe-1' AND \"env\" = 'prod' AND \"target\" = 'web' AND \"tos\" = '' AND \"team\" = ''",
                                                    start: grid.startNanoseconds, width: grid.widthSeconds, count: 800)
        XCTAssertEqual(buckets, expected)
        // The rounds written in the range, each once; the gap hour is empty columns.
        let inGrid = points.filter { $0.tags == web.merging(["address": $0.tags["address"]!]) { $1 } && $0.time >= grid.startNanoseconds && $0.time < grid.endNanoseconds }
        XCTAssertGreaterThanOrEqual(inGrid.count, classZeroInDay)
        XCTAssertEqual(buckets.reduce(0) { $0 + $1.rounds }, inGrid.count)
        XCTAssertEqual(buckets.reduce(0) { $0 + $1.received }, inGrid.reduce(0) { $0 + $1.received })
        XCTAssertGreaterThan(buckets.filter { $0.rounds == 0 }.count, 20, "the hour without rounds")
        XCTAssertTrue(buckets.contains { $0.rounds > 0 && $0.received == 0 && $0.medianMilliseconds == nil }, "a column of lost rounds has no RTT")
        // Class 0 only: its RTTs are under 50 ms; ef, the labelled and the other probe's are not.
        XCTAssertLessThan(buckets.compactMap(\.maximumMilliseconds).max() ?? 0, 50)

        var efKey = key
        efKey.options = PacketOptions(tos: 0xb8)
        let ef = try await history.buckets(for: efKey, from: from, to: to, columns: 800)
        let expectedEF = try await independentBuckets(server, where: "\"probe\" = 'probe-1' AND \"target\" = 'web' AND \"tos\" = 'ef' AND \"team\" = ''",
                                                      start: grid.startNanoseconds, width: grid.widthSeconds, count: 800)
        XCTAssertEqual(ef, expectedEF)
        XCTAssertGreaterThanOrEqual(ef.compactMap(\.minimumMilliseconds).min() ?? 0, 50)
        XCTAssertLessThan(ef.compactMap(\.maximumMilliseconds).max() ?? 99, 80)

        var labelledKey = key
        labelledKey.labels = ["team": "blue"]
        let labelled = try await history.buckets(for: labelledKey, from: from, to: to, columns: 800)
        let expectedLabelled = try await independentBuckets(server, where: "\"probe\" = 'probe-1' AND \"target\" = 'web' AND \"tos\" = '' AND \"team\" = 'blue'",
                                                            start: grid.startNanoseconds, width: grid.widthSeconds, count: 800)
        XCTAssertEqual(labelled, expectedLabelled)
        XCTAssertGreaterThanOrEqual(labelled.compactMap(\.minimumMilliseconds).min() ?? 0, 80)
        XCTAssertLessThan(labelled.compactMap(\.maximumMilliseconds).max() ?? 999, 120)

        let otherProbe = InfluxHistory(servers: [settings(server)], probe: "probe-2", logger: logger)
        let theirs = try await otherProbe.buckets(for: key, from: from, to: to, columns: 800)
        XCTAssertGreaterThanOrEqual(theirs.compactMap(\.minimumMilliseconds).min() ?? 0, 120)

        // An aligned day of 1440 columns: the minutes themselves.
        let minutes = try await history.buckets(for: key, from: midnight, to: midnight + 86_400 * second, columns: 1440)
        XCTAssertEqual(minutes.first?.startNanoseconds, midnight)
        XCTAssertEqual(minutes.first?.durationNanoseconds, 60 * second)
        let expectedMinutes = try await independentBuckets(server, where: "\"probe\" = 'probe-1' AND \"target\" = 'web' AND \"tos\" = '' AND \"team\" = ''",
                                                           start: midnight, width: 60, count: 1440)
        XCTAssertEqual(minutes, expectedMinutes)
    }

    func testEachHostileTargetNameReturnsOnlyThatTargetsRounds() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("probes")
        // One per metacharacter class: InfluxQL's string and identifier quotes, its escape,
        // regular expressions, line protocol's separators, an injection, and a backslash
        // before a space (the sink's line protocol stores that as "a b").
        let names = ["it's down", "say \"hi\"", "back\\slash", "quote\\'mix", "a/.*|b$^", "x, y=z", "' OR '1'='1", "victim", "x"]
        var points: [InfluxHistoryFixturePoint] = []
        for (index, name) in names.enumerated() {
            for minute in [5, 20, 40] {
                points.append(InfluxHistoryFixturePoint(tags: ["probe": "p", "env": "e'\"v", "target": name], sent: 100 + index, received: 100 + index,
                                                        minimum: Double(index), median: Double(index), maximum: Double(index),
                                                        time: midnight + Int64(minute) * 60 * second))
            }
        }
        points.append(InfluxHistoryFixturePoint(tags: ["probe": "p", "env": "e'\"v", "target": "a b"], sent: 7, received: 7, minimum: 1, median: 1, maximum: 1,
                                                time: midnight + 10 * 60 * second))
        var labelled = points[0]
        labelled.tags["owner"] = "o'neil \"x\", y"
        labelled.sent = 3
        labelled.received = 3
        points.append(labelled)
        try await write(server, points)
        // The server holds exactly these names (the fixture's line protocol is right).
        let stored = try await server.column("SHOW TAG VALUES FROM \"icmp\" WITH KEY = \"target\"", database: "probes").compactMap { $0 as? String }
        XCTAssertEqual(Set(stored), Set(names + ["a b"]))

        let history = InfluxHistory(servers: [settings(server)], probe: "p", logger: logger)
        for (index, name) in names.enumerated() {
            let buckets = try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e'\"v", target: name, port: nil),
                                                    from: midnight, to: midnight + 3_600 * second, columns: 60)
            XCTAssertEqual(buckets.count, 60)
            XCTAssertEqual(buckets.filter { $0.rounds > 0 }.map(\.startNanoseconds), [5, 20, 40].map { midnight + Int64($0) * 60 * second }, name)
            XCTAssertEqual(Set(buckets.filter { $0.rounds > 0 }.map(\.sent)), [100 + index], name)
            XCTAssertEqual(Set(buckets.filter { $0.rounds > 0 }.map(\.rounds)), [1], name)
        }
        let backslashBeforeSpace = try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e'\"v", target: "a\\ b", port: nil),
                                                             from: midnight, to: midnight + 3_600 * second, columns: 60)
        XCTAssertEqual(backslashBeforeSpace.map(\.sent).reduce(0, +), 7)
        let hostileLabel = try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e'\"v", target: names[0], port: nil, labels: ["owner": "o'neil \"x\", y"]),
                                                     from: midnight, to: midnight + 3_600 * second, columns: 60)
        XCTAssertEqual(hostileLabel.map(\.sent).reduce(0, +), 3)
    }

    func testTCPSeriesAreTheirPort() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("probes")
        var points: [InfluxHistoryFixturePoint] = []
        for (port, sent) in [("443", 5), ("8443", 9)] {
            var point = round(1, base: 10, tags: ["probe": "p", "env": "e", "target": "db", "port": port, "mode": "half-open"], time: midnight + 30 * second)
            point.measurement = "tcp"
            point.sent = sent
            point.received = sent
            points.append(point)
        }
        try await write(server, points)
        let history = InfluxHistory(servers: [settings(server)], probe: "p", logger: logger)
        let buckets = try await history.buckets(for: WebSeriesKey(kind: .tcp, env: "e", target: "db", port: 8443), from: midnight, to: midnight + 600 * second, columns: 10)
        XCTAssertEqual(buckets.map(\.sent), [9] + Array(repeating: 0, count: 9))
        let icmp = try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e", target: "db", port: nil), from: midnight, to: midnight + 600 * second, columns: 10)
        XCTAssertEqual(icmp.map(\.rounds), Array(repeating: 0, count: 10))
    }

    func testCredentialsGoInAHeaderAndAWrongPasswordIsNamedWithoutIt() async throws {
        let server = try await InfluxDBTestServer.start(authEnabled: true)
        try await server.createDatabase("probes")
        try await write(server, [round(1, base: 10, tags: ["probe": "p", "env": "e", "target": "t"], time: midnight + 5 * second)])
        let key = WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil)
        let history = InfluxHistory(servers: [settings(server, username: "admin", password: "admin-secret")], probe: "p", logger: logger)
        let buckets = try await history.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)
        XCTAssertEqual(buckets.map(\.rounds), [1, 0, 0, 0, 0, 0])

        let wrong = InfluxHistory(servers: [settings(server, username: "admin", password: "not-the-password")], probe: "p", logger: logger)
        do {
            _ = try await wrong.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)
            XCTFail("a wrong password was accepted")
        } catch let error as InfluxHistoryError {
            XCTAssertEqual(error, .authenticationFailed(server: "history", status: 401))
            XCTAssertFalse("\(error)".contains("not-the-password"))
        }
        let anonymous = InfluxHistory(servers: [settings(server)], probe: "p", logger: logger)
        await XCTAssertThrowsErrorAsync(try await anonymous.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)) {
            XCTAssertEqual($0 as? InfluxHistoryError, .authenticationFailed(server: "history", status: 401))
        }
    }

    func testAMissingDatabaseIsTheServersMessage() async throws {
        let server = try await InfluxDBTestServer.start()
        let history = InfluxHistory(servers: [settings(server, database: "nowhere")], probe: "p", logger: logger)
        await XCTAssertThrowsErrorAsync(try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil),
                                                                   from: midnight, to: midnight + 60 * second, columns: 6)) {
            XCTAssertEqual($0 as? InfluxHistoryError, .queryFailed(server: "history", message: "database not found: nowhere"))
        }
    }

    func testOnlyAnInfluxDB1ServerIsReadAndOthersSayWhy() async throws {
        let v2 = InfluxServerSettings(name: "two", url: "http://127.0.0.1:1", api: .v2(org: "o", bucket: "b", token: Secret("t")))
        let none = InfluxHistory(servers: [v2], probe: "p", logger: logger)
        XCTAssertFalse(none.isSupported)
        XCTAssertTrue(none.unsupportedReason?.contains("v2 API") ?? false, "\(none.unsupportedReason ?? "")")
        let key = WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil)
        await XCTAssertThrowsErrorAsync(try await none.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)) {
            XCTAssertEqual($0 as? InfluxHistoryError, .unsupported(reason: none.unsupportedReason!))
        }
        XCTAssertFalse(InfluxHistory(servers: [], probe: "p", logger: logger).isSupported)
        let v1 = InfluxServerSettings(name: "one", url: "http://127.0.0.1:1", api: .v1(database: "d", retentionPolicy: nil, username: nil, password: nil))
        XCTAssertEqual(InfluxHistory(servers: [v2, v1], probe: "p", logger: logger).serverName, "one")

        // VictoriaMetrics takes 1.x writes, but its /query answers every statement with its
        // list of databases.
        let victoria = try await VictoriaMetricsTestServer.start()
        let history = InfluxHistory(servers: [settings(victoria)], probe: "p", logger: logger)
        XCTAssertTrue(history.isSupported, "not known before it answers")
        await XCTAssertThrowsErrorAsync(try await history.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)) {
            guard case .unsupported(let reason)? = $0 as? InfluxHistoryError else { return XCTFail("\($0)") }
            XCTAssertTrue(reason.contains("does not run InfluxQL"), reason)
        }
    }

    func testAServerThatIsDownOrHangsIsATypedError() async throws {
        let key = WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil)
        let port = TestEnvironment.freePort()
        let down = InfluxHistory(servers: [InfluxServerSettings(name: "down", url: "http://127.0.0.1:\(port)", api: .v1(database: "d", retentionPolicy: nil, username: nil, password: nil))],
                                 probe: "p", timeoutSeconds: 1, logger: logger)
        await XCTAssertThrowsErrorAsync(try await down.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)) {
            guard case .unreachable(let server, _)? = $0 as? InfluxHistoryError else { return XCTFail("\($0)") }
            XCTAssertEqual(server, "down")
        }
        let hanging = try HangingTCPServer()
        defer { hanging.stop() }
        let slow = InfluxHistory(servers: [InfluxServerSettings(name: "slow", url: hanging.url.absoluteString, api: .v1(database: "d", retentionPolicy: nil, username: nil, password: nil))],
                                 probe: "p", timeoutSeconds: 1, logger: logger)
        await XCTAssertThrowsErrorAsync(try await slow.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)) {
            XCTAssertEqual($0 as? InfluxHistoryError, .timedOut(server: "slow", seconds: 1))
        }
    }

    func testARetentionPolicyIsReadFromItsOwnName() async throws {
        let server = try await InfluxDBTestServer.start()
        try await server.createDatabase("probes")
        try await server.query("CREATE RETENTION POLICY \"a week\" ON \"probes\" DURATION 3650d REPLICATION 1")
        var components = URLComponents(url: server.url.appendingPathComponent("write"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "db", value: "probes"), URLQueryItem(name: "rp", value: "a week"), URLQueryItem(name: "precision", value: "ns")]
        let point = round(1, base: 10, tags: ["probe": "p", "env": "e", "target": "t"], time: midnight + 5 * second)
        let (status, _) = try await TestEnvironment.http("POST", components.url!, body: Data(point.line.utf8))
        XCTAssertEqual(status, 204)
        let key = WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil)
        let inPolicy = InfluxHistory(servers: [InfluxServerSettings(name: "rp", url: server.url.absoluteString,
                                                                     api: .v1(database: "probes", retentionPolicy: "a week", username: nil, password: nil))],
                                     probe: "p", logger: logger)
        let buckets = try await inPolicy.buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)
        XCTAssertEqual(buckets.map(\.sent), [10, 0, 0, 0, 0, 0])
        // The default policy holds nothing of it.
        let inDefault = try await InfluxHistory(servers: [settings(server)], probe: "p", logger: logger)
            .buckets(for: key, from: midnight, to: midnight + 60 * second, columns: 6)
        XCTAssertEqual(inDefault.map(\.rounds), [0, 0, 0, 0, 0, 0])
    }

    func testTheRequestCarriesTheStatementInItsBodyAndTheCredentialsOnlyInItsHeader() async throws {
        let stub = try StubHTTPServer { _ in .init(status: 200, headers: ["Content-Type": "application/json"], body: #"{"results":[{"statement_id":0}]}"#) }
        defer { stub.stop() }
        let history = InfluxHistory(servers: [InfluxServerSettings(name: "stub", url: "http://127.0.0.1:\(stub.port)/influx/",
                                                                    api: .v1(database: "probes", retentionPolicy: nil, username: "reader", password: Secret("pa ss:word")))],
                                    probe: "p", logger: logger)
        let buckets = try await history.buckets(for: WebSeriesKey(kind: .icmp, env: "e", target: "t", port: nil), from: midnight, to: midnight + 60 * second, columns: 6)
        XCTAssertEqual(buckets.map(\.rounds), [0, 0, 0, 0, 0, 0])
        let requests = stub.requests
        XCTAssertEqual(requests.map(\.requestLine), ["POST /influx/query HTTP/1.1", "POST /influx/query HTTP/1.1"])
        XCTAssertEqual(Set(requests.map { $0.headers["authorization"] }), ["Basic " + Data("reader:pa ss:word".utf8).base64EncodedString()])
        let forms = requests.map { String(decoding: $0.body, as: UTF8.self) }
        XCTAssertTrue(forms.allSatisfy { $0.hasPrefix("db=probes&epoch=ns&q=") }, "\(forms)")
        XCTAssertFalse(forms.contains { $0.contains("word") }, "no password in the body: \(forms)")
        XCTAssertEqual(forms.first.flatMap { $0.split(separator: "&").last?.dropFirst(2).removingPercentEncoding },
                       #"SHOW TAG KEYS FROM "icmp" WHERE "probe" = 'p' AND "env" = 'e' AND "target" = 't'"#)
    }

    // MARK: - Quoting

    func testQuotingFollowsInfluxQLsScanner() {
        XCTAssertEqual(InfluxHistory.string("' OR '1'='1"), #"'\' OR \'1\'=\'1'"#)
        XCTAssertEqual(InfluxHistory.string("back\\slash"), #"'back\\slash'"#)
        XCTAssertEqual(InfluxHistory.identifier("a\"b"), #""a\"b""#)
        XCTAssertEqual(InfluxHistory.string("two\nlines"), #"'two\nlines'"#)
        XCTAssertEqual(InfluxHistory.storedForm("a\\ b\\"), "a b")
        XCTAssertEqual(InfluxHistory.storedForm("c:\\temp"), "c:\\temp")
    }
}

/// XCTAssertThrowsError for an async expression.
private func XCTAssertThrowsErrorAsync<T>(_ expression: @autoclosure () async throws -> T, file: StaticString = #filePath, line: UInt = #line,
                                          _ handler: (Error) -> Void) async {
    do {
        _ = try await expression()
        XCTFail("no error was thrown", file: file, line: line)
    } catch {
        handler(error)
    }
}
