// Real InfluxDB 1.x and VictoriaMetrics servers for tests, on 127.0.0.1 only, with all
// their files in a temporary directory. Self-contained (Foundation + XCTest): copy this
// file into another test target to reuse it.
//
//   let influx = try await InfluxDBTestServer.start()        // skips (or fails in CI) without influxd
//   // .start(authEnabled: true) adds user admin/admin-secret; .start(port: p) picks the port
//   try await influx.createDatabase("probes")
//   influx.url                                                // http://127.0.0.1:PORT
//   try await influx.query("SELECT * FROM rtt", database: "probes")  // decoded JSON
//   influx.stop(); try await influx.restart()                 // SIGTERM; same port, same data
//   influx.kill()                                             // also done by deinit
//
//   let victoria = try await VictoriaMetricsTestServer.start()
//   try await victoria.export(match: "{__name__=~\"rtt_.*\"}")  // [[String: Any]] series

import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

public enum TestEnvironment {
    /// A TCP socket listening on 127.0.0.1:`port` (SO_REUSEADDR), for the stub servers.
    /// - Throws: an NSError in `owner`'s domain with the errno of bind or listen.
    public static func listenOnLoopback(port: Int, backlog: Int32, owner: String) throws -> Int32 {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, backlog) == 0 else {
            let error = errno
            close(listener)
            throw NSError(domain: owner, code: Int(error))
        }
        return listener
    }

    /// CI installs every server: there a missing one is a failure, not a skip.
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// The binary's path, or a skip (an XCTFail first in CI).
    public static func requireBinary(_ name: String, package: String) throws -> String {
        for directory in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        if isCI { XCTFail("\(name) is missing: .ci/run must install the Debian package \(package)") }
        throw XCTSkip("\(name) is not installed (apt-get install \(package)); CI installs it")
    }

    /// A TCP port on 127.0.0.1 nobody listens on right now.
    public static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length)
                return getsockname(descriptor, socketAddress, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    public static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// One HTTP request; returns status and body. Tests' own session, not the sink's.
    public static func http(_ method: String, _ url: URL, body: Data? = nil, headers: [String: String] = [:], timeoutSeconds: Int = 10) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = TimeInterval(timeoutSeconds)
        request.httpBody = body
        for (key, value) in headers { request.setValue(value, forHTTPHeaderField: key) }
        // With a watchdog: FoundationNetworking has left requests hanging for good (a server
        // restarting under them), which would hang the whole test run.
        let finished = request
        let (data, response) = try await withThrowingTaskGroup(of: (Data, URLResponse)?.self) { group in
            group.addTask { try await URLSession.shared.data(for: finished) }
            group.addTask {
                try await Task.sleep(for: .seconds(timeoutSeconds + 5))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let result = first else { throw URLError(.timedOut) }
            return result
        }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// The one poll-until of the tests: waits on an event (a counter, a line in a log, a row
    /// in a server, a process's exit) by looking at `condition` every `interval` seconds
    /// until it holds. `seconds` is a generous bound that only keeps a broken run from
    /// hanging the suite, never a measurement: a loaded machine just takes longer.
    /// - Returns: true once `condition` holds; false if it still does not after `seconds`.
    @discardableResult
    public static func eventually(within seconds: Double, every interval: Double = 0.05, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
        return try await condition()
    }

    /// `eventually` for synchronous code (child processes, sockets, `ip netns exec` bodies):
    /// the same contract, blocking the calling thread between looks.
    @discardableResult
    public static func eventually(within seconds: Double, every interval: Double = 0.01, _ condition: () throws -> Bool) rethrows -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if try condition() { return true }
            usleep(useconds_t(interval * 1_000_000))
        }
        return try condition()
    }
}

/// A child server process with its log in its directory.
public class TestServerProcess {
    public let executable: String
    public let directory: URL
    public let port: Int
    private var process: Process?

    public var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    public init(executable: String, directory: URL, port: Int) {
        self.executable = executable
        self.directory = directory
        self.port = port
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }

    public var arguments: [String] { [] }

    /// What is started: the server's binary, or a wrapper that runs it (ip netns exec).
    public var launchExecutable: String { executable }

    /// True when the server answers its health check.
    public func isReady() async -> Bool { false }

    public func launch() async throws {
        precondition(process == nil, "already running")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launchExecutable)
        process.arguments = arguments
        let logPath = directory.appendingPathComponent("server.log").path
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        let ready = await TestEnvironment.eventually(within: 60) { await isReady() }
        guard ready, process.isRunning else {
            kill()
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw NSError(domain: "TestServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(executable) did not become ready on port \(port):\n\(text.suffix(2000))"])
        }
    }

    /// SIGTERM and wait (the data stays for `restart`).
    public func stop() {
        guard let process else { return }
        if process.isRunning { process.terminate() }
        TestEnvironment.eventually(within: 15) { !process.isRunning }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        self.process = nil
    }

    /// SIGKILL now.
    public func kill() {
        guard let process else { return }
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        self.process = nil
    }

    public func restart() async throws {
        stop()
        try await launch()
    }
}

/// influxd (InfluxDB 1.x) with a temporary config: data, meta and WAL in a temporary
/// directory, HTTP on 127.0.0.1:PORT, no reporting, no HTTP log, optional auth.
public final class InfluxDBTestServer: TestServerProcess {
    /// Admin credentials when started with auth.
    public let admin: (username: String, password: String)?

    private init(executable: String, directory: URL, port: Int, admin: (String, String)?) {
        self.admin = admin
        super.init(executable: executable, directory: directory, port: port)
    }

    /// Starts influxd (on `port`, or a free one); with `authEnabled`, also creates an
    /// admin user (`admin` / `admin-secret`), which `query` then uses.
    public static func start(authEnabled: Bool = false, port: Int? = nil) async throws -> InfluxDBTestServer {
        let executable = try TestEnvironment.requireBinary("influxd", package: "influxdb")
        let directory = try TestEnvironment.temporaryDirectory("influxd")
        let server = InfluxDBTestServer(executable: executable, directory: directory, port: port ?? TestEnvironment.freePort(),
                                        admin: authEnabled ? ("admin", "admin-secret") : nil)
        try writeConfig(in: directory, httpPort: server.port, authEnabled: authEnabled)
        try await server.launch()
        if let admin = server.admin {
            // With auth on and no user yet, 1.x allows exactly this statement unauthenticated.
            let (status, body) = try await TestEnvironment.http("POST", server.queryURL(
                "CREATE USER \(admin.username) WITH PASSWORD '\(admin.password)' WITH ALL PRIVILEGES", database: nil))
            guard status == 200 else { throw NSError(domain: "TestServer", code: status, userInfo: [NSLocalizedDescriptionKey: String(decoding: body, as: UTF8.self)]) }
        }
        return server
    }

    /// Writes `influxdb.conf` in `directory`: data below it, HTTP on 127.0.0.1:`httpPort`,
    /// the RPC port on another free one, nothing reported or logged that a test does not read.
    /// (For an influxd started some other way too, e.g. inside a test's namespace.)
    public static func writeConfig(in directory: URL, httpPort: Int, authEnabled: Bool = false) throws {
        let root = directory.path
        let config = """
            reporting-disabled = true
            bind-address = "127.0.0.1:\(TestEnvironment.freePort())"
            [meta]
              dir = "\(root)/meta"
            [data]
              dir = "\(root)/data"
              wal-dir = "\(root)/wal"
              query-log-enabled = false
            [http]
              bind-address = "127.0.0.1:\(httpPort)"
              auth-enabled = \(authEnabled)
              log-enabled = false
            [monitor]
              store-enabled = false
            [continuous_queries]
              enabled = false
            [subscriber]
              enabled = false
            """
        try config.write(toFile: root + "/influxdb.conf", atomically: true, encoding: .utf8)
    }

    /// The distinct start times (ns) of the traces of `target` written so far, from their
    /// `hop` points in database `netprobe`, oldest first.
    public func traceStartTimes(target: String) throws -> [Int64] {
        let escaped = target.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
        return try TestEnvironment.blocking {
            let series = try await self.series("SELECT \"sent\" FROM \"hop\" WHERE \"target\" = '\(escaped)'", database: "netprobe")
            return Array(Set(((series.first?["values"] as? [[Any]]) ?? []).compactMap { ($0[0] as? NSNumber)?.int64Value })).sorted()
        }
    }

    override public var arguments: [String] { ["-config", directory.path + "/influxdb.conf"] }

    override public func isReady() async -> Bool {
        (try? await TestEnvironment.http("GET", url.appendingPathComponent("ping"), timeoutSeconds: 1).status) == 204
    }

    public func queryURL(_ statement: String, database: String?) -> URL {
        var components = URLComponents(url: url.appendingPathComponent("query"), resolvingAgainstBaseURL: false)!
        var items = [URLQueryItem(name: "q", value: statement), URLQueryItem(name: "epoch", value: "ns")]
        if let database { items.append(URLQueryItem(name: "db", value: database)) }
        if let admin { items += [URLQueryItem(name: "u", value: admin.username), URLQueryItem(name: "p", value: admin.password)] }
        components.queryItems = items
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        return components.url!
    }

    /// Runs InfluxQL through HTTP /query; returns the decoded JSON, failing on any "error".
    @discardableResult
    public func query(_ statement: String, database: String? = nil) async throws -> [String: Any] {
        let (status, body) = try await TestEnvironment.http("POST", queryURL(statement, database: database))
        guard status == 200, let json = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw NSError(domain: "TestServer", code: status, userInfo: [NSLocalizedDescriptionKey: "query \(statement): HTTP \(status) \(String(decoding: body, as: UTF8.self))"])
        }
        if let results = json["results"] as? [[String: Any]], let error = results.first?["error"] as? String {
            throw NSError(domain: "TestServer", code: 0, userInfo: [NSLocalizedDescriptionKey: "query \(statement): \(error)"])
        }
        return json
    }

    /// The series of the first statement's result (empty when there is none).
    public func series(_ statement: String, database: String) async throws -> [[String: Any]] {
        let json = try await query(statement, database: database)
        return ((json["results"] as? [[String: Any]])?.first?["series"] as? [[String: Any]]) ?? []
    }

    public func createDatabase(_ name: String) async throws {
        try await query("CREATE DATABASE \"\(name)\"")
    }

    /// Values of one column over all rows of a single-series query.
    public func column(_ statement: String, database: String, column: String = "value") async throws -> [Any] {
        guard let series = try await series(statement, database: database).first,
              let columns = series["columns"] as? [String], let index = columns.firstIndex(of: column),
              let rows = series["values"] as? [[Any]] else { return [] }
        return rows.map { $0[index] }
    }
}

/// victoria-metrics on 127.0.0.1:PORT with its storage in a temporary directory.
public final class VictoriaMetricsTestServer: TestServerProcess {
    public static func start() async throws -> VictoriaMetricsTestServer {
        let executable = try TestEnvironment.requireBinary("victoria-metrics", package: "victoria-metrics")
        let server = VictoriaMetricsTestServer(executable: executable, directory: try TestEnvironment.temporaryDirectory("victoria"), port: TestEnvironment.freePort())
        try await server.launch()
        return server
    }

    override public var arguments: [String] {
        ["-httpListenAddr", "127.0.0.1:\(port)", "-storageDataPath", directory.path + "/data", "-retentionPeriod", "100y"]
    }

    override public func isReady() async -> Bool {
        (try? await TestEnvironment.http("GET", url.appendingPathComponent("health"), timeoutSeconds: 1).status) == 200
    }

    /// /api/v1/export for a series selector, after a flush: one dictionary per series
    /// ("metric", "values", "timestamps" in milliseconds).
    public func export(match selector: String) async throws -> [[String: Any]] {
        _ = try await TestEnvironment.http("GET", url.appendingPathComponent("internal/force_flush"))
        var components = URLComponents(url: url.appendingPathComponent("api/v1/export"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "match[]", value: selector)]
        let (status, body) = try await TestEnvironment.http("GET", components.url!)
        guard status == 200 else { throw NSError(domain: "TestServer", code: status) }
        return try String(decoding: body, as: UTF8.self).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
        }
    }
}

/// A scripted HTTP/1.1 server on 127.0.0.1 for status codes the real servers will not
/// give on demand (429, 503, 500). One connection at a time, "Connection: close".
public final class StubHTTPServer: @unchecked Sendable {
    public struct Reply {
        public var status: Int
        public var headers: [String: String] = [:]
        public var body: String = ""

        public init(status: Int, headers: [String: String] = [:], body: String = "") {
            self.status = status
            self.headers = headers
            self.body = body
        }
    }

    public struct Received {
        public var time: Date
        public var requestLine: String
        public var headers: [String: String]
        public var body: Data
    }

    public let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var received: [Received] = []
    private let respond: @Sendable (Int) -> Reply
    private var thread: Thread?
    private var stopped = false

    /// - Parameter respond: the reply to the request with this index (0-based).
    public init(port: Int = TestEnvironment.freePort(), respond: @escaping @Sendable (Int) -> Reply) throws {
        self.port = port
        self.respond = respond
        listener = try TestEnvironment.listenOnLoopback(port: port, backlog: 16, owner: "StubHTTPServer")
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    public var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    public var requests: [Received] { lock.withLock { received } }

    /// A second call does nothing (closing the listener twice would close whatever reused
    /// its descriptor number).
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    deinit { if !lock.withLock({ stopped }) { stop() } }

    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            handle(connection)
            close(connection)
        }
    }

    private func handle(_ connection: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Range<Data.Index>?
        var contentLength = 0
        while true {
            let count = recv(connection, &buffer, buffer.count, 0)
            guard count > 0 else { return }
            data.append(contentsOf: buffer[0..<count])
            if headerEnd == nil, let range = data.range(of: Data("\r\n\r\n".utf8)) {
                headerEnd = range
                let head = String(decoding: data[..<range.lowerBound], as: UTF8.self)
                for line in head.split(separator: "\r\n").dropFirst() where line.lowercased().hasPrefix("content-length:") {
                    contentLength = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            if let headerEnd, data.count - headerEnd.upperBound >= contentLength { break }
        }
        guard let headerEnd else { return }
        let lines = String(decoding: data[..<headerEnd.lowerBound], as: UTF8.self).split(separator: "\r\n")
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let request = Received(time: Date(), requestLine: String(lines.first ?? ""), headers: headers, body: Data(data[headerEnd.upperBound...]))
        let index = lock.withLock { () -> Int in
            received.append(request)
            return received.count - 1
        }
        let reply = respond(index)
        var text = "HTTP/1.1 \(reply.status) Stub\r\nContent-Length: \(reply.body.utf8.count)\r\nConnection: close\r\n"
        for (key, value) in reply.headers { text += "\(key): \(value)\r\n" }
        text += "\r\n" + reply.body
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}

/// A server that accepts TCP connections on 127.0.0.1 and never answers (nor reads): a
/// hung InfluxDB. `stop` closes every connection it holds.
public final class HangingTCPServer: @unchecked Sendable {
    public let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [Int32] = []
    private var stopped = false
    private var acceptedCount = 0

    public init(port: Int = TestEnvironment.freePort()) throws {
        self.port = port
        listener = try TestEnvironment.listenOnLoopback(port: port, backlog: 64, owner: "HangingTCPServer")
        Thread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                let kept = lock.withLock { () -> Bool in
                    if !stopped {
                        connections.append(connection)
                        acceptedCount += 1
                    }
                    return !stopped
                }
                if !kept { close(connection) }
            }
        }.start()
    }

    public var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// Connections accepted so far (until `stop`).
    public var accepted: Int { lock.withLock { acceptedCount } }

    /// Closes the listener and every connection; a second call does nothing (closing a
    /// descriptor twice would close whatever reused its number).
    public func stop() {
        let held: [Int32]? = lock.withLock {
            guard !stopped else { return nil }
            stopped = true
            defer { connections = [] }
            return connections
        }
        guard let held else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for connection in held { close(connection) }
    }
}

extension TestEnvironment {
    /// A product built next to the test bundle (`swift build` puts every executable there);
    /// `<NAME>_BINARY` in the environment overrides it (e.g. NETPROBE_BINARY).
    public static func builtExecutable(_ name: String) -> String {
        if let path = ProcessInfo.processInfo.environment["\(name.uppercased())_BINARY"] { return path }
        let candidates = [
            Bundle.main.bundleURL.appendingPathComponent(name).path,
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent(name).path,
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path,
            URL(fileURLWithPath: CommandLine.arguments.last ?? "").deletingLastPathComponent().appendingPathComponent(name).path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }
}

/// A TCP listener on 0.0.0.0 and a free port: every 127.x address reaches it, and the
/// kernel answers every SYN, which is all a half-open probe needs.
public final class AnyAddressListener {
    public let fd: Int32
    public let port: UInt16

    public init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        listen(fd, 256)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(fd) }
}
