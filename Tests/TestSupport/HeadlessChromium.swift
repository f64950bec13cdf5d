// Headless Chromium for tests, driven over W3C WebDriver by Debian's chromedriver, on
// loopback only. Self-contained (Foundation + XCTest).
//
//   let browser = try await HeadlessChromium.start(for: self)   // skips (or fails in CI) without chromium
//   try await browser.navigate(to: URL(string: "http://127.0.0.1:\(port)/")!)
//   try await browser.count("tr.target")                         // elements matching a CSS selector
//   try await browser.texts("tr.target td.name")                 // their rendered text
//   try await browser.execute("return document.title")           // a script's JSON result
//   try await browser.consoleErrors()                            // SEVERE console lines since the last read
//   try await browser.screenshot(named: "overview")              // .build/screenshots/overview.png
//   // quit: by the test's teardown (failed or not), else by deinit
//
// Processes: chromedriver (a child of the test, on a free 127.0.0.1 port) starts chromium
// (headless, its own temporary profile). `quit` ends the session (chromium exits), kills
// chromium by its process id if it did not, then the driver, and removes the profile.
//
// Console log: W3C WebDriver has no log command. chromedriver 156 (Debian 12) keeps the
// JSON-wire one, and Selenium's alias of it: POST /session/{id}/se/log {"type": "browser"}
// (also /session/{id}/log; types from GET /session/{id}/se/log/types: browser, driver), when
// the session asked for `goog:loggingPrefs: {browser: ALL}`. Each read returns what was
// logged since the previous read (the buffer is drained). Entries carry level (SEVERE for
// console.error, uncaught exceptions and failed loads), source (console-api, javascript,
// network) and the message with its URL and line:column. A page's missing /favicon.ico is
// a SEVERE network entry too: a page that must be clean declares an icon
// (<link rel="icon" href="data:,">) or serves one.
//
// Network: the browser reaches loopback and nothing else. `navigate` refuses other hosts;
// everything else goes to a proxy on 127.0.0.1 that is not there (port 9; loopback
// bypasses proxies), unresolved, and the resolver knows only localhost and 127.x. The
// proxy is what holds: with every background switch below, Chromium 156 still asks within
// a second of starting for clients2.google.com, update.googleapis.com,
// accounts.google.com and start.duckduckgo.com (HeadlessChromiumTests saw them arrive at
// a stub proxy); here they fail on loopback.
//
// Children of the test process inherit its blocked SIGTERM: the driver is ended with
// SIGKILL (after the session is deleted, nothing is left for it to clean up).

import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

public final class HeadlessChromium: @unchecked Sendable {
    /// One line of the browser's console log.
    public struct ConsoleEntry: Sendable, Equatable, CustomStringConvertible {
        /// SEVERE, WARNING, INFO, DEBUG (console.error, console.warn, console.log, console.debug).
        public var level: String
        /// console-api (a console call), javascript (an uncaught exception), network (a
        /// failed load), and others Chromium names.
        public var source: String
        /// The text, starting with the script's URL and line:column.
        public var message: String

        public init(level: String, source: String, message: String) {
            self.level = level
            self.source = source
            self.message = message
        }

        public var description: String { "\(level) \(source): \(message)" }
    }

    /// A WebDriver command that failed: its HTTP status and the driver's error code
    /// (`no such element`, `javascript error`, ...) and message.
    public struct WebDriverError: Error, CustomStringConvertible {
        public var command: String
        public var status: Int
        public var error: String
        public var message: String

        public var description: String { "WebDriver \(command): HTTP \(status) \(error): \(message.prefix(500))" }
    }

    /// The driver's address (http://127.0.0.1:PORT).
    public let driverURL: URL
    /// The WebDriver session.
    public let sessionID: String
    /// Chromium's process id, from the session's capabilities (`goog:processID`).
    public let browserProcessID: pid_t?
    /// Where chromedriver writes its log (kept after `quit` for a failed test's reader).
    public let driverLogPath: String

    private let driver: Process
    private let profileDirectory: URL
    private let lock = NSLock()
    private var ended = false

    private init(driver: Process, driverURL: URL, sessionID: String, browserProcessID: pid_t?, profileDirectory: URL, driverLogPath: String) {
        self.driver = driver
        self.driverURL = driverURL
        self.sessionID = sessionID
        self.browserProcessID = browserProcessID
        self.profileDirectory = profileDirectory
        self.driverLogPath = driverLogPath
    }

    deinit { kill() }

    /// Where screenshots go: `.build/screenshots` of this package (not committed).
    public static var screenshotDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/screenshots")
    }

    /// Starts chromedriver and a headless Chromium session, ended by `testCase`'s teardown
    /// whether the test passes, fails or throws.
    ///
    /// - Parameters:
    ///   - testCase: whose teardown quits the browser.
    ///   - width: the window's width in CSS pixels (the screenshot's).
    ///   - height: its height.
    ///   - proxyPort: the port on 127.0.0.1 of the proxy every request for anything but
    ///     loopback goes to. Nothing listens on the default, 9 (discard), so such requests
    ///     fail; a test can pass a stub server's port to see them arrive there.
    /// - Returns: the browser, on about:blank.
    /// - Throws: XCTSkip when chromium or chromedriver is not installed (in CI, an XCTFail
    ///   first: CI installs both); an error with the driver's log when it does not start.
    public static func start(for testCase: XCTestCase, width: Int = 1280, height: Int = 800, proxyPort: Int = 9) async throws -> HeadlessChromium {
        let chromium = try TestEnvironment.requireBinary("chromium", package: "chromium")
        let chromedriver = try TestEnvironment.requireBinary("chromedriver", package: "chromium-driver")
        let directory = try TestEnvironment.temporaryDirectory("headless-chromium")
        let profile = directory.appendingPathComponent("profile")
        let logPath = directory.appendingPathComponent("chromedriver.log").path
        let port = TestEnvironment.freePort()
        let driver = Process()
        driver.executableURL = URL(fileURLWithPath: chromedriver)
        // chromedriver listens on loopback only unless given --allowed-ips.
        driver.arguments = ["--port=\(port)", "--log-path=\(logPath)"]
        driver.standardInput = FileHandle.nullDevice
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        let driverURL = URL(string: "http://127.0.0.1:\(port)")!

        func fail(_ what: String) throws -> Never {
            if driver.isRunning { Glibc.kill(driver.processIdentifier, SIGKILL); driver.waitUntilExit() }
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw NSError(domain: "HeadlessChromium", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(what); chromedriver log (\(logPath)):\n\(log.suffix(3000))"])
        }
        // First until the port takes a connection, so /status is asked once it can answer.
        let listening = TestEnvironment.eventually(within: 30) { Self.acceptsConnections(port: port) }
        guard listening else { try fail("chromedriver never listened on 127.0.0.1:\(port)") }
        var lastAnswer = "no answer"
        let ready = await TestEnvironment.eventually(within: 30) {
            guard driver.isRunning else { return false }
            do {
                let (status, body) = try await Self.http("GET", driverURL.appendingPathComponent("status"), timeoutSeconds: 2)
                lastAnswer = "HTTP \(status): \(String(decoding: body.prefix(300), as: UTF8.self))"
                let value = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["value"] as? [String: Any]
                return status == 200 && value?["ready"] as? Bool == true
            } catch {
                lastAnswer = "\(error)"
                return false
            }
        }
        guard ready else { try fail("chromedriver did not become ready on 127.0.0.1:\(port) (GET /status: \(lastAnswer))") }

        let arguments = [
            "--headless=new",
            "--no-sandbox",                 // CI runs as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",      // containers' /dev/shm is 64 MB
            "--user-data-dir=\(profile.path)",
            "--window-size=\(width),\(height)",
            "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
            // Nothing but loopback: Chromium's own traffic off, anything else a page asks for
            // sent to a proxy that is not there (loopback bypasses proxies) by a resolver
            // that knows only localhost.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
            "--metrics-recording-only", "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
            "--proxy-server=http://127.0.0.1:\(proxyPort)",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE [::1]",
        ]
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": chromium, "args": arguments],
            "goog:loggingPrefs": ["browser": "ALL"],
        ] as [String: Any]]]
        let value: Any?
        do {
            value = try await command("POST", driverURL.appendingPathComponent("session"), capabilities, name: "new session")
        } catch {
            try fail("no session: \(error)")
        }
        guard let session = value as? [String: Any], let id = session["sessionId"] as? String else { try fail("no session id in \(String(describing: value))") }
        let processID = ((session["capabilities"] as? [String: Any])?["goog:processID"] as? Int).map { pid_t($0) }
        let browser = HeadlessChromium(driver: driver, driverURL: driverURL, sessionID: id, browserProcessID: processID,
                                       profileDirectory: profile, driverLogPath: logPath)
        testCase.addTeardownBlock { await browser.quit() }
        return browser
    }

    /// Loads `url` and waits for its load event (WebDriver's "normal" page load strategy).
    /// - Throws: when `url` is not on loopback (127.0.0.0/8, ::1, localhost): tests browse
    ///   nothing else.
    public func navigate(to url: URL) async throws {
        let host = url.host ?? ""
        guard ["http", "https"].contains(url.scheme ?? ""), host == "localhost" || host.hasPrefix("127.") || host == "::1" || host == "[::1]" else {
            throw WebDriverError(command: "navigate", status: 0, error: "not loopback", message: "\(url) is not a loopback URL; tests browse 127.0.0.0/8, ::1 and localhost only")
        }
        _ = try await session("POST", "url", ["url": url.absoluteString], name: "navigate to \(url)")
    }

    /// The page's URL now.
    public func currentURL() async throws -> String {
        try await session("GET", "url", nil, name: "current URL") as? String ?? ""
    }

    /// How many elements match a CSS selector.
    public func count(_ selector: String) async throws -> Int {
        try await elements(selector).count
    }

    /// The rendered text (as a user sees it: `innerText`, whitespace collapsed) of every
    /// element matching a CSS selector, in document order.
    public func texts(_ selector: String) async throws -> [String] {
        var texts: [String] = []
        for element in try await elements(selector) {
            texts.append(try await session("GET", "element/\(element)/text", nil, name: "text of \(selector)") as? String ?? "")
        }
        return texts
    }

    /// The rendered text of the first element matching a CSS selector.
    /// - Throws: WebDriverError `no such element` when none matches.
    public func text(_ selector: String) async throws -> String {
        let value = try await session("POST", "element", ["using": "css selector", "value": selector], name: "find \(selector)")
        guard let element = Self.elementID(value) else { throw WebDriverError(command: "find \(selector)", status: 200, error: "malformed", message: "\(String(describing: value))") }
        return try await session("GET", "element/\(element)/text", nil, name: "text of \(selector)") as? String ?? ""
    }

    /// An attribute of the first element matching a CSS selector; nil when it has none.
    public func attribute(_ name: String, of selector: String) async throws -> String? {
        let value = try await session("POST", "element", ["using": "css selector", "value": selector], name: "find \(selector)")
        guard let element = Self.elementID(value) else { return nil }
        return try await session("GET", "element/\(element)/attribute/\(name)", nil, name: "attribute \(name) of \(selector)") as? String
    }

    /// Runs `script` as a function body in the page (`return` gives the result) with
    /// `arguments` as `arguments[0...]`.
    /// - Returns: the result as JSON decodes it (String, NSNumber, [Any], [String: Any]) or nil.
    /// - Throws: WebDriverError `javascript error` when the script throws.
    @discardableResult
    public func execute(_ script: String, arguments: [Any] = []) async throws -> Any? {
        try await session("POST", "execute/sync", ["script": script, "args": arguments], name: "execute script")
    }

    /// What the page logged since the previous read: console calls, uncaught exceptions,
    /// failed loads, in order.
    public func consoleLog() async throws -> [ConsoleEntry] {
        let value = try await session("POST", "se/log", ["type": "browser"], name: "browser log")
        return (value as? [[String: Any]] ?? []).map {
            ConsoleEntry(level: $0["level"] as? String ?? "", source: $0["source"] as? String ?? "", message: $0["message"] as? String ?? "")
        }
    }

    /// The SEVERE entries of `consoleLog()` (console.error, uncaught exceptions, failed
    /// loads); it drains the log as `consoleLog` does.
    public func consoleErrors() async throws -> [ConsoleEntry] {
        try await consoleLog().filter { $0.level == "SEVERE" }
    }

    /// Saves a PNG of the viewport to `path` (folders created).
    /// - Returns: the file's URL.
    @discardableResult
    public func screenshot(to path: String) async throws -> URL {
        guard let text = try await session("GET", "screenshot", nil, name: "screenshot") as? String, let data = Data(base64Encoded: text) else {
            throw WebDriverError(command: "screenshot", status: 200, error: "malformed", message: "the screenshot is not base64")
        }
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
        return url
    }

    /// Saves a PNG of the viewport as `.build/screenshots/NAME.png`.
    @discardableResult
    public func screenshot(named name: String) async throws -> URL {
        try await screenshot(to: Self.screenshotDirectory.appendingPathComponent("\(name).png").path)
    }

    /// Ends the session (Chromium exits), then makes sure: Chromium killed by its id if it
    /// is still there, the driver killed, the profile removed. A second call does nothing.
    public func quit() async {
        guard lock.withLock({ !ended }) else { return }
        _ = try? await session("DELETE", "", nil, name: "delete session", timeoutSeconds: 10)
        kill()
    }

    /// The part of `quit` that needs no WebDriver: kills Chromium (by the id the session
    /// gave) and the driver, removes the profile.
    public func kill() {
        let first = lock.withLock { () -> Bool in
            defer { ended = true }
            return !ended
        }
        guard first else { return }
        if let browserProcessID, Self.isChromium(browserProcessID) {
            Glibc.kill(browserProcessID, SIGKILL)
        }
        if driver.isRunning {
            Glibc.kill(driver.processIdentifier, SIGKILL)
            driver.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: profileDirectory)
    }

    /// Whether Chromium (the session's browser process) is still running.
    public var isBrowserRunning: Bool { browserProcessID.map(Self.isChromium) ?? false }

    /// Whether chromedriver is still running.
    public var isDriverRunning: Bool { driver.isRunning }

    /// Whether `pid` is still a Chromium process (not a reused id, not a zombie).
    private static func isChromium(_ pid: pid_t) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let command = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
        return command.hasSuffix("chromium") || command.hasSuffix("chrome")
    }

    private func elements(_ selector: String) async throws -> [String] {
        let value = try await session("POST", "elements", ["using": "css selector", "value": selector], name: "find \(selector)")
        return (value as? [Any] ?? []).compactMap(Self.elementID)
    }

    /// W3C's element reference key.
    private static func elementID(_ value: Any?) -> String? {
        (value as? [String: Any])?["element-6066-11e4-a52e-4f735466cecf"] as? String
    }

    private func session(_ method: String, _ path: String, _ body: [String: Any]?, name: String, timeoutSeconds: Int = 60) async throws -> Any? {
        var url = driverURL.appendingPathComponent("session").appendingPathComponent(sessionID)
        if !path.isEmpty { url = url.appendingPathComponent(path) }
        return try await Self.command(method, url, body, name: name, timeoutSeconds: timeoutSeconds)
    }

    /// One HTTP/1.1 exchange with chromedriver on loopback, on a socket of its own.
    /// FoundationNetworking cannot be used: chromedriver writes its headers without a space
    /// after the colon (`Content-Length:251`), which libcurl under URLSession refuses
    /// ("Failed writing header"), every request.
    static func http(_ method: String, _ url: URL, body: Data? = nil, timeoutSeconds: Int) async throws -> (status: Int, body: Data) {
        let port = url.port ?? 80
        let path = url.path.isEmpty ? "/" : url.path
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try Self.exchange(method, port: port, path: path, body: body, timeoutSeconds: timeoutSeconds) })
            }
        }
    }

    private static func exchange(_ method: String, port: Int, path: String, body: Data?, timeoutSeconds: Int) throws -> (status: Int, body: Data) {
        func failure(_ what: String) -> NSError {
            NSError(domain: "HeadlessChromium", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "\(method) \(path) on 127.0.0.1:\(port): \(what) (errno \(errno))"])
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw failure("socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw failure("connect") }
        var request = Data("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n".utf8)
        if let body {
            request += Data("Content-Type: application/json; charset=utf-8\r\nContent-Length: \(body.count)\r\n".utf8)
        }
        request += Data("\r\n".utf8) + (body ?? Data())
        var sent = 0
        while sent < request.count {
            let count = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw failure("send") }
            sent += count
        }
        // The answer: its header, then Content-Length bytes (chromedriver keeps the
        // connection open despite `Connection: close`), or until it closes without one.
        var answer = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var header: (end: Int, head: String, length: Int?)?
        while true {
            if header == nil, let end = answer.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: answer[..<end.lowerBound], as: UTF8.self)
                let lengthLine = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                header = (end.upperBound, head, lengthLine.flatMap { Int($0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)) })
            }
            if let header, let length = header.length, answer.count - header.end >= length { break }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            guard count > 0 else { throw failure("recv after \(answer.count) bytes") }
            answer.append(contentsOf: buffer[0..<count])
        }
        guard let header else { throw failure("no header end in \(answer.count) bytes") }
        let statusLine = header.head.split(separator: "\r\n").first ?? ""
        guard let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { throw failure("status line '\(statusLine)'") }
        let content = Data(answer[header.end...])
        return (status, header.length.map { Data(content.prefix($0)) } ?? content)
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port` (a connect and close).
    public static func acceptsConnections(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0
    }

    /// One WebDriver command: JSON in, the answer's `value` out.
    private static func command(_ method: String, _ url: URL, _ body: [String: Any]?, name: String, timeoutSeconds: Int = 60) async throws -> Any? {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let (status, answer) = try await Self.http(method, url, body: data ?? (method == "POST" ? Data("{}".utf8) : nil), timeoutSeconds: timeoutSeconds)
        let decoded = (try? JSONSerialization.jsonObject(with: answer, options: [.fragmentsAllowed])) as? [String: Any]
        let value = decoded?["value"]
        guard status == 200 else {
            let details = value as? [String: Any]
            throw WebDriverError(command: name, status: status, error: details?["error"] as? String ?? "unknown error",
                                 message: details?["message"] as? String ?? String(decoding: answer.prefix(500), as: UTF8.self))
        }
        return value is NSNull ? nil : value
    }
}
