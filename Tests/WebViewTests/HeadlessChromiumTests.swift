import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The browser harness the view's tests stand on (TestSupport/HeadlessChromium.swift),
/// against real pages served on loopback by a real HTTP server: what it finds, what it
/// reads from the console, what it saves, and that it leaves nothing running.
final class HeadlessChromiumTests: XCTestCase {
    /// An icon in the page itself: without one Chromium asks for /favicon.ico, and the
    /// server's 404 is a console error of its own.
    private static let head = #"<meta charset="utf-8"><link rel="icon" href="data:,">"#

    private static let pages = [
        "clean.html": """
            <!doctype html><html><head>\(head)<title>Clean page</title></head><body>
            <h1 id="title">Targets</h1>
            <table><tr class="target"><td class="name">db1</td><td class="verdict">network</td></tr>
            <tr class="target"><td class="name">web1</td><td class="verdict">neither</td></tr>
            <tr class="target"><td class="name">&lt;script&gt;alert(1)&lt;/script&gt;</td><td class="verdict">inconclusive</td></tr></table>
            <a id="more" href="/clean.html?page=2">next page</a>
            <script>console.log("clean page ready"); console.warn("a warning is not an error");</script>
            </body></html>
            """,
        "errors.html": """
            <!doctype html><html><head>\(head)<title>Broken page</title></head><body>
            <p id="status">loaded</p>
            <script>console.error("boom from console.error");</script>
            <script>notDefinedAnywhere();</script>
            </body></html>
            """,
    ]

    private var site: StaticSite!

    override func setUp() async throws {
        site = try await StaticSite.start(pages: Self.pages, for: self)
    }

    func testElementsAreFoundByCSSSelectorWithTheirRenderedText() async throws {
        let browser = try await HeadlessChromium.start(for: self)
        try await browser.navigate(to: site.url("clean.html"))
        let count = try await browser.count("tr.target")
        XCTAssertEqual(count, 3)
        let names = try await browser.texts("tr.target td.name")
        XCTAssertEqual(names, ["db1", "web1", "<script>alert(1)</script>"], "escaped markup is text, not a script")
        let heading = try await browser.text("#title")
        XCTAssertEqual(heading, "Targets")
        let missing = try await browser.count("tr.nothing")
        XCTAssertEqual(missing, 0)
        let link = try await browser.attribute("href", of: "#more")
        XCTAssertEqual(link, "/clean.html?page=2")
        let url = try await browser.currentURL()
        XCTAssertEqual(url, site.url("clean.html").absoluteString)
        do {
            _ = try await browser.text("#absent")
            XCTFail("a selector that matches nothing has no text")
        } catch let error as HeadlessChromium.WebDriverError {
            XCTAssertEqual(error.error, "no such element")
        }
    }

    func testScriptsRunInThePageWithArgumentsAndTheirErrorsAreThrown() async throws {
        let browser = try await HeadlessChromium.start(for: self)
        try await browser.navigate(to: site.url("clean.html"))
        let title = try await browser.execute("return document.title") as? String
        XCTAssertEqual(title, "Clean page")
        let rows = try await browser.execute("return document.querySelectorAll(arguments[0]).length * arguments[1]", arguments: ["tr.target", 2]) as? Int
        XCTAssertEqual(rows, 6)
        do {
            try await browser.execute("throw new Error('thrown on purpose')")
            XCTFail("a script that throws is an error")
        } catch let error as HeadlessChromium.WebDriverError {
            XCTAssertEqual(error.error, "javascript error")
            XCTAssertTrue(error.message.contains("thrown on purpose"), error.message)
        }
    }

    func testAConsoleErrorAndAnUncaughtExceptionAreBothReported() async throws {
        let browser = try await HeadlessChromium.start(for: self)
        try await browser.navigate(to: site.url("errors.html"))
        let errors = try await browser.consoleErrors()
        XCTAssertEqual(errors.map(\.source), ["console-api", "javascript"], "\(errors)")
        XCTAssertTrue(errors.first?.message.contains("boom from console.error") == true, "\(errors)")
        XCTAssertTrue(errors.last?.message.contains("Uncaught ReferenceError: notDefinedAnywhere is not defined") == true, "\(errors)")
        XCTAssertTrue(errors.allSatisfy { $0.message.hasPrefix(site.url("errors.html").absoluteString) }, "each names the page: \(errors)")
        let again = try await browser.consoleErrors()
        XCTAssertEqual(again, [], "a read drains the log")

        // Errors after the load are caught too.
        try await browser.execute("setTimeout(() => { throw new Error('late failure') }, 0)")
        var late: [HeadlessChromium.ConsoleEntry] = []
        let seen = try await TestEnvironment.eventually(within: 10) {
            late += try await browser.consoleErrors()
            return !late.isEmpty
        }
        XCTAssertTrue(seen)
        XCTAssertEqual(late.map(\.source), ["javascript"])
        XCTAssertTrue(late.first?.message.contains("Uncaught Error: late failure") == true, "\(late)")
    }

    func testACleanPageReportsNoErrorsWhileItsOtherLinesAreRead() async throws {
        let browser = try await HeadlessChromium.start(for: self)
        try await browser.navigate(to: site.url("clean.html"))
        let log = try await browser.consoleLog()
        // The log is on (the page's own lines are there), so no SEVERE line means none.
        XCTAssertEqual(log.map(\.level), ["INFO", "WARNING"], "\(log)")
        XCTAssertTrue(log.first?.message.hasSuffix("\"clean page ready\"") == true, "\(log)")
        XCTAssertEqual(log.filter { $0.level == "SEVERE" }, [])
        XCTAssertEqual(site.requestedPaths.filter { $0.contains("favicon") }, [], "the page's own icon: nothing else was asked for")
    }

    func testAScreenshotIsAPNGOfTheViewportUnderTheBuildFolder() async throws {
        let browser = try await HeadlessChromium.start(for: self, width: 1024, height: 700)
        try await browser.navigate(to: site.url("clean.html"))
        let file = try await browser.screenshot(named: "headless-chromium-harness")
        XCTAssertTrue(file.path.hasSuffix("/.build/screenshots/headless-chromium-harness.png"), file.path)
        let bytes = [UInt8](try Data(contentsOf: file))
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG signature")
        XCTAssertEqual(String(decoding: bytes[12..<16], as: UTF8.self), "IHDR")
        // The image is the viewport, in device pixels.
        let width = bytes[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = bytes[20..<24].reduce(0) { $0 << 8 | Int($1) }
        let viewport = try await browser.execute("return [Math.round(window.innerWidth * devicePixelRatio), Math.round(window.innerHeight * devicePixelRatio)]") as? [Int]
        XCTAssertEqual([width, height], viewport)
        XCTAssertEqual(width, 1024)
    }

    func testOnlyLoopbackIsBrowsed() async throws {
        // A stub in place of the dead proxy, to see where other requests go.
        let proxy = try StubHTTPServer { _ in StubHTTPServer.Reply(status: 502, body: "no") }
        addTeardownBlock { proxy.stop() }
        let browser = try await HeadlessChromium.start(for: self, proxyPort: proxy.port)
        for address in ["http://192.0.2.1/", "http://example.com/", "file:///etc/passwd"] {
            do {
                try await browser.navigate(to: try XCTUnwrap(URL(string: address)))
                XCTFail("\(address) was browsed")
            } catch let error as HeadlessChromium.WebDriverError {
                XCTAssertEqual(error.error, "not loopback", address)
            }
        }
        let url = try await browser.currentURL()
        XCTAssertFalse(url.hasPrefix("http"), "nothing was loaded: \(url)")
        // What a page asks of another host goes to the proxy on loopback, unresolved (a
        // reserved name, which no resolver would answer, in case it did not).
        try await browser.navigate(to: site.url("clean.html"))
        try await browser.execute("fetch('http://netprobe-harness.invalid/asked-by-the-page', {mode: 'no-cors'}).catch(() => {})")
        let asked = "GET http://netprobe-harness.invalid/asked-by-the-page HTTP/1.1"
        let proxied = await TestEnvironment.eventually(within: 10) { () async in proxy.requests.contains { $0.requestLine == asked } }
        XCTAssertTrue(proxied, "\(proxy.requests.map(\.requestLine))")
        // Chromium's own traffic, which no switch turns wholly off (update and time checks,
        // sign-in, the search engine's pages), lands there too: that is what the proxy is for.
        XCTAssertTrue(proxy.requests.allSatisfy { !$0.requestLine.contains("127.0.0.1") }, "loopback bypasses the proxy")
        XCTAssertFalse(site.requestedPaths.contains { $0.contains("asked-by-the-page") }, "\(site.requestedPaths)")
    }

    func testQuitEndsChromiumAndTheDriverAndASecondQuitDoesNothing() async throws {
        let browser = try await HeadlessChromium.start(for: self)
        try await browser.navigate(to: site.url("clean.html"))
        XCTAssertNotNil(browser.browserProcessID)
        XCTAssertTrue(browser.isBrowserRunning)
        XCTAssertTrue(browser.isDriverRunning)
        await browser.quit()
        XCTAssertFalse(browser.isDriverRunning)
        let browserGone = await TestEnvironment.eventually(within: 10) { () async in !browser.isBrowserRunning }
        XCTAssertTrue(browserGone)
        await browser.quit()
    }
}

/// Files served by Python's http.server on 127.0.0.1 from a temporary folder, stopped by
/// the test's teardown.
final class StaticSite: @unchecked Sendable {
    let port: Int
    private let process: Process
    private let directory: URL

    private init(port: Int, process: Process, directory: URL) {
        self.port = port
        self.process = process
        self.directory = directory
    }

    static func start(pages: [String: String], for testCase: XCTestCase) async throws -> StaticSite {
        let python = try TestEnvironment.requireBinary("python3", package: "python3")
        let directory = try TestEnvironment.temporaryDirectory("static-site")
        let root = directory.appendingPathComponent("www")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for (name, text) in pages { try text.write(to: root.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        let port = TestEnvironment.freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", root.path]
        let log = directory.appendingPathComponent("access.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let site = StaticSite(port: port, process: process, directory: directory)
        testCase.addTeardownBlock { site.stop() }
        // A connection first: no HTTP request before the port listens (see HeadlessChromium).
        let listening = TestEnvironment.eventually(within: 30) { process.isRunning && HeadlessChromium.acceptsConnections(port: port) }
        guard listening, let (status, _) = try? await TestEnvironment.http("GET", site.url(""), timeoutSeconds: 10), status == 200 else {
            site.stop()
            throw NSError(domain: "StaticSite", code: 1, userInfo: [NSLocalizedDescriptionKey: "python3 -m http.server did not answer on 127.0.0.1:\(port)"])
        }
        return site
    }

    func url(_ path: String) -> URL { URL(string: "http://127.0.0.1:\(port)/\(path)")! }

    /// The paths requested so far, from the server's access log.
    var requestedPaths: [String] {
        let text = (try? String(contentsOf: directory.appendingPathComponent("access.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let request = line.split(separator: "\"").dropFirst().first else { return nil }
            let parts = request.split(separator: " ")
            return parts.count > 1 ? String(parts[1]) : nil
        }
    }

    /// SIGKILL: the test process's children inherit its blocked SIGTERM.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
