import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What TCP probes leave on the real servers users point them at: PostgreSQL and MariaDB
/// in a namespace of the test's own, probed across a veth pair from another namespace.
/// (Not over loopback: MariaDB keeps no per-host state for loopback clients.)
final class DatabaseServerTests: XCTestCase {
    static let serverAddress = "198.18.100.1"
    static let proberAddress = "198.18.100.2"
    static let probes = 200

    /// The two namespaces and the servers, started once for the class.
    final class Fixture {
        let serverNamespace: String
        let proberNamespace: String
        let directory: String
        let postgres: RunningProcess
        let mariadb: RunningProcess

        var mariadbErrorLog: String { (try? String(contentsOfFile: "\(directory)/mariadb/error.log", encoding: .utf8)) ?? "" }
        var postgresLog: String { postgres.errorSoFar }

        init() throws {
            let tag = "\(getpid() % 100_000)"
            serverNamespace = "netprobe-db-server-\(tag)"
            proberNamespace = "netprobe-db-prober-\(tag)"
            directory = "/tmp/netprobe-db-\(tag)"
            try? FileManager.default.removeItem(atPath: directory)
            for namespace in [serverNamespace, proberNamespace] {
                _ = try? Harness.run(["ip", "netns", "delete", namespace])
                try Self.check(["ip", "netns", "add", namespace])
                try Self.check(["ip", "-n", namespace, "link", "set", "lo", "up"])
            }
            // A veth pair, one end in each namespace; neither has any other route.
            try Self.check(["ip", "link", "add", "npdb\(tag)s", "netns", serverNamespace, "type", "veth", "peer", "name", "npdb\(tag)p", "netns", proberNamespace])
            try Self.check(["ip", "-n", serverNamespace, "addr", "add", "\(DatabaseServerTests.serverAddress)/24", "dev", "npdb\(tag)s"])
            try Self.check(["ip", "-n", proberNamespace, "addr", "add", "\(DatabaseServerTests.proberAddress)/24", "dev", "npdb\(tag)p"])
            try Self.check(["ip", "-n", serverNamespace, "link", "set", "npdb\(tag)s", "up"])
            try Self.check(["ip", "-n", proberNamespace, "link", "set", "npdb\(tag)p", "up"])

            try FileManager.default.createDirectory(atPath: directory + "/postgres", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: directory + "/mariadb", withIntermediateDirectories: true)
            try Self.check(["chmod", "755", directory])
            try Self.check(["chown", "postgres:postgres", directory + "/postgres"])
            try Self.check(["chown", "mysql:mysql", directory + "/mariadb"])

            // PostgreSQL with log_connections on: any connection its postmaster accepts is logged.
            let bin = try Self.postgresBin()
            try Self.check(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                            "\(bin)/initdb", "-D", "\(directory)/postgres/data", "-A", "trust", "-U", "postgres", "--no-sync"])
            let hba = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(directory)/postgres/data/pg_hba.conf"))
            hba.seekToEndOfFile()
            hba.write(Data("host all all 198.18.100.0/24 trust\n".utf8))
            try hba.close()
            postgres = try Harness.start(["ip", "netns", "exec", serverNamespace, "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                                          "\(bin)/postgres", "-D", "\(directory)/postgres/data", "-c", "listen_addresses=\(DatabaseServerTests.serverAddress)",
                                          "-c", "port=5432", "-c", "unix_socket_directories=\(directory)/postgres", "-c", "log_connections=on",
                                          "-c", "log_disconnections=on", "-c", "logging_collector=off", "-c", "fsync=off"])

            // MariaDB without name resolution (no DNS query from the namespace), every
            // aborted connection logged (log_warnings=2, the default, said explicitly).
            try Self.check(["mariadb-install-db", "--no-defaults", "--datadir=\(directory)/mariadb/data", "--user=mysql",
                            "--auth-root-authentication-method=socket", "--skip-test-db"])
            mariadb = try Harness.start(["ip", "netns", "exec", serverNamespace, "mariadbd", "--no-defaults", "--datadir=\(directory)/mariadb/data",
                                         "--socket=\(directory)/mariadb/socket", "--bind-address=\(DatabaseServerTests.serverAddress)", "--port=3306",
                                         "--user=mysql", "--skip-name-resolve", "--log-warnings=2", "--pid-file=\(directory)/mariadb/pid",
                                         "--log-error=\(directory)/mariadb/error.log"])
            let postgres = postgres, mariadb = mariadb, directory = directory
            guard TestEnvironment.eventually(within: 60, { postgres.errorSoFar.contains("database system is ready to accept connections") }) else {
                throw Failure("PostgreSQL did not start: \(postgres.errorSoFar)")
            }
            guard TestEnvironment.eventually(within: 60, {
                ((try? String(contentsOfFile: "\(directory)/mariadb/error.log", encoding: .utf8)) ?? "").contains("ready for connections")
            }) else {
                throw Failure("MariaDB did not start: \(mariadb.errorSoFar)")
            }
            _ = try mariadbQuery("CREATE USER 'probe'@'198.18.100.%' IDENTIFIED BY 'probe-password'")
        }

        func stop() {
            postgres.process.interrupt()  // fast shutdown
            mariadb.process.terminate()
            postgres.process.waitUntilExit()
            mariadb.process.waitUntilExit()
            for namespace in [serverNamespace, proberNamespace] { _ = try? Harness.run(["ip", "netns", "delete", namespace]) }
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// A query as root over MariaDB's Unix socket (not over the network: it counts nothing per host).
        func mariadbQuery(_ statement: String) throws -> String {
            let result = try Harness.run(["mariadb", "--no-defaults", "--socket=\(directory)/mariadb/socket", "-u", "root", "-N", "-B", "-e", statement])
            guard result.status == 0 else { throw Failure("mariadb: \(result.standardError)") }
            return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func abortedConnects() throws -> Int {
            let row = try mariadbQuery("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
            return try XCTUnwrap(Int(row.split(separator: "\t").last ?? ""), row)
        }

        /// A real login from the prober's namespace: true when it worked.
        func postgresLogin() throws -> Bool {
            let result = try Harness.run(["ip", "netns", "exec", proberNamespace, "psql", "-h", DatabaseServerTests.serverAddress, "-U", "postgres",
                                          "-d", "postgres", "-Atc", "select 40 + 2"])
            return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == "42"
        }

        func mariadbLogin() throws -> Bool {
            // The password through the environment, not argv.
            let result = try Harness.run(["env", "MYSQL_PWD=probe-password", "ip", "netns", "exec", proberNamespace, "mariadb", "--no-defaults",
                                          "-h", DatabaseServerTests.serverAddress, "-u", "probe", "-N", "-B", "-e", "select 40 + 2"])
            return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == "42"
        }

        /// Sockets of every state in a namespace, as `ss -tan` lists them (listeners included).
        func sockets(in namespace: String, state: String = "all") throws -> [String] {
            let result = try Harness.run(["ip", "netns", "exec", namespace, "ss", "-tanH", "state", state])
            return result.standardOutput.split(separator: "\n").map(String.init)
        }

        static func check(_ arguments: [String]) throws {
            let result = try Harness.run(arguments, timeout: 120)
            guard result.status == 0 else { throw Failure("\(arguments.joined(separator: " ")): \(result.standardError)") }
        }

        static func postgresBin() throws -> String {
            let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
            guard let newest = versions.compactMap(Int.init).max() else { throw Failure("no PostgreSQL server under /usr/lib/postgresql") }
            return "/usr/lib/postgresql/\(newest)/bin"
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    nonisolated(unsafe) static var shared: Result<Fixture, Error>?

    func fixture() throws -> Fixture {
        try Harness.requireRoot()
        try Harness.requireTools(["ip", "ss", "setpriv", "psql", "mariadb", "mariadbd", "mariadb-install-db"])
        if Self.shared == nil { Self.shared = Result { try Fixture() } }
        return try Self.shared!.get()
    }

    override class func tearDown() {
        if case .success(let fixture)? = shared { fixture.stop() }
        shared = nil
        super.tearDown()
    }

    /// `netprobe tcp` from the prober's namespace: 200 handshakes at 20 per second to each port.
    func probe(_ fixture: Fixture, mode: String) throws -> [Int: [String: Any]] {
        let result = try Harness.run(["ip", "netns", "exec", fixture.proberNamespace, netprobePath, "tcp", "--json", "--tcp-mode", mode,
                                      "-c", "\(Self.probes)", "-i", "0.05", "-W", "1", "\(Self.serverAddress):5432,3306"], timeout: 120)
        XCTAssertEqual(result.status, 0, result.standardError)
        var rounds: [Int: [String: Any]] = [:]
        for line in try result.jsonLines() { rounds[line["port"] as? Int ?? 0] = line }
        XCTAssertEqual(Set(rounds.keys), [5432, 3306])
        return rounds
    }

    var netprobePath: String { Harness.netprobePath }

    static func count(_ text: String, _ pattern: String) -> Int {
        text.components(separatedBy: "\n").filter { $0.contains(pattern) }.count
    }

    func testHalfOpenProbesLeaveNothingInPostgreSQLOrMariaDBAndRealLoginsStillWork() throws {
        let fixture = try fixture()
        let postgresBefore = fixture.postgresLog.count
        let abortedBefore = try fixture.abortedConnects()
        let errorLogBefore = fixture.mariadbErrorLog.count
        // (Another test's connect-mode probes may have left TIME_WAIT sockets here.)
        let proberSocketsBefore = Set(try fixture.sockets(in: fixture.proberNamespace))

        let rounds = try probe(fixture, mode: "half-open")
        for (port, round) in rounds {
            XCTAssertEqual(round["mode"] as? String, "half-open", "\(port)")
            XCTAssertEqual(round["sent"] as? Int, Self.probes, "\(port)")
            XCTAssertEqual(round["received"] as? Int, Self.probes, "\(port): every SYN answered by a SYN-ACK")
            XCTAssertEqual(round["completed"] as? Int, 0, "\(port): no final ACK left netprobe")
            XCTAssertEqual(round["timestamp_source"] as? String, "kernel", "\(port)")
        }
        XCTAssertEqual(Set(try fixture.sockets(in: fixture.proberNamespace)).subtracting(proberSocketsBefore), [],
                       "half-open leaves no socket in any state on the prober")
        XCTAssertEqual(try fixture.sockets(in: fixture.serverNamespace, state: "time-wait"), [])

        // A real login from the same address still works, and shows the server does log
        // every connection it accepts: it must be the only one since the probes began.
        XCTAssertTrue(try fixture.postgresLogin(), "psql from \(Self.proberAddress)")
        XCTAssertTrue(try fixture.mariadbLogin(), "mariadb from \(Self.proberAddress)")
        XCTAssertTrue(TestEnvironment.eventually(within: 30) { Self.count(String(fixture.postgresLog.dropFirst(postgresBefore)), "connection authorized") >= 1 })
        let postgresLines = String(fixture.postgresLog.dropFirst(postgresBefore))
        print("half-open, \(Self.probes) probes per port: PostgreSQL log since the probes began:\n\(postgresLines)")
        XCTAssertEqual(Self.count(postgresLines, "connection received: host=\(Self.proberAddress)"), 1, "the login's connection, and no probe's")
        XCTAssertEqual(Self.count(postgresLines, "could not receive data"), 0)
        let aborted = try fixture.abortedConnects() - abortedBefore
        let errorLog = String(fixture.mariadbErrorLog.dropFirst(errorLogBefore))
        print("half-open: MariaDB Aborted_connects +\(aborted); error log since: \(errorLog.isEmpty ? "nothing" : errorLog)")
        XCTAssertEqual(aborted, 0)
        XCTAssertEqual(Self.count(errorLog, "Aborted connection"), 0)
    }

    /// Connect mode is for users who want the server's application to accept: it does, and
    /// each probe shows exactly as documented (README, `netprobe tcp --help`).
    func testConnectModeIsAcceptedLoggedOncePerProbeAndClosedWithAFIN() throws {
        let fixture = try fixture()
        let postgresBefore = fixture.postgresLog.count
        let abortedBefore = try fixture.abortedConnects()
        let errorLogBefore = fixture.mariadbErrorLog.count
        let timeWaitBefore = Set(try fixture.sockets(in: fixture.proberNamespace, state: "time-wait"))

        let rounds = try probe(fixture, mode: "connect")
        for (port, round) in rounds {
            XCTAssertEqual(round["mode"] as? String, "connect", "\(port)")
            XCTAssertEqual(round["received"] as? Int, Self.probes, "\(port)")
            XCTAssertEqual(round["completed"] as? Int, Self.probes, "\(port): every probe a connection")
            XCTAssertEqual(round["timestamp_source"] as? String, "kernel", "\(port)")
        }
        let received = "connection received: host=\(Self.proberAddress)"
        XCTAssertTrue(TestEnvironment.eventually(within: 30) { Self.count(String(fixture.postgresLog.dropFirst(postgresBefore)), received) >= Self.probes })
        XCTAssertTrue(TestEnvironment.eventually(within: 30) { (try? fixture.abortedConnects() - abortedBefore) ?? 0 >= Self.probes })
        // A server slower to close than netprobe's deadline leaves our side in FIN_WAIT_2
        // for a while; it turns TIME_WAIT once the server's FIN comes.
        let newTimeWait = { Set(try fixture.sockets(in: fixture.proberNamespace, state: "time-wait")).subtracting(timeWaitBefore).count }
        XCTAssertTrue(try TestEnvironment.eventually(within: 30) { try newTimeWait() >= 2 * Self.probes })
        let postgresLines = String(fixture.postgresLog.dropFirst(postgresBefore))
        let errorLog = String(fixture.mariadbErrorLog.dropFirst(errorLogBefore))
        let aborted = try fixture.abortedConnects() - abortedBefore
        let timeWait = try newTimeWait()
        print("connect, \(Self.probes) probes per port: PostgreSQL '\(received)' lines: \(Self.count(postgresLines, received)), "
              + "'could not receive data' lines: \(Self.count(postgresLines, "could not receive data")); MariaDB Aborted_connects +\(aborted), "
              + "'closed normally without authentication' lines: \(Self.count(errorLog, "closed normally without authentication")); "
              + "prober TIME_WAIT sockets: \(timeWait)")
        XCTAssertEqual(Self.count(postgresLines, received), Self.probes, "PostgreSQL with log_connections: one line per probe")
        XCTAssertEqual(Self.count(postgresLines, "could not receive data"), 0, "a FIN, not an RST: nothing else is logged")
        XCTAssertEqual(aborted, Self.probes, "MariaDB counts each connection closed without authentication")
        XCTAssertEqual(Self.count(errorLog, "closed normally without authentication"), Self.probes)
        XCTAssertEqual(timeWait, 2 * Self.probes, "one TIME_WAIT socket per probe, on the prober's side")
        XCTAssertEqual(try fixture.sockets(in: fixture.serverNamespace, state: "time-wait"), [], "none on the server's")
    }
}
