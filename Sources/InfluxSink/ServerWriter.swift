import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What one write request came to.
enum WriteOutcome: Sendable, Equatable {
    /// 2xx: the server stored the batch.
    case stored
    /// 5xx, 429 or a network failure: send the same batch again, after `retryAfter`
    /// seconds when the server said so.
    case retry(retryAfter: Double?, reason: String)
    /// Any other 4xx: sending again cannot help. `partial`: a 400 "partial write", where
    /// the server stored the lines it could parse.
    case refused(status: Int, reason: String, partial: Bool)
}

/// Builds and sends write requests for one server.
struct ServerWriter: Sendable {
    /// One session for the whole process: creating and invalidating sessions per request
    /// has crashed FoundationNetworking in teardown.
    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        configuration.urlCredentialStorage = nil
        return URLSession(configuration: configuration, delegate: challengeRefuser, delegateQueue: nil)
    }()

    static let challengeRefuser = ChallengeRefuser()

    /// Header naming each request, so that a refused challenge can be matched to it.
    static let requestIdentifierHeader = "X-Netprobe-Request"

    let server: InfluxServer
    let writeURL: URL
    private let authorization: String?

    init(server: InfluxServer) throws {
        self.server = server
        guard var components = URLComponents(url: server.url, resolvingAgainstBaseURL: false),
              components.scheme == "http" || components.scheme == "https" else {
            throw InfluxSinkError.invalidConfiguration("InfluxDB server \(server.name): URL \(InfluxServer.redacted(server.url)) is not http:// or https://")
        }
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        let query: [(String, String?)]
        switch server.api {
        case .v1(let database, let retentionPolicy, let username, let password):
            path += "/write"
            query = [("db", database), ("rp", retentionPolicy), ("precision", "ns")]
            authorization = username.map { "Basic " + Data("\($0):\(password?.value ?? "")".utf8).base64EncodedString() }
        case .v2(let org, let bucket, let token):
            path += "/api/v2/write"
            query = [("org", org), ("bucket", bucket), ("precision", "ns")]
            authorization = "Token \(token.value)"
        }
        components.percentEncodedPath = path
        // Encoded by hand: URLComponents leaves "+" alone, which the servers read as a space.
        components.percentEncodedQuery = query.compactMap { key, value in
            value.map { "\(key)=\(Self.percentEncoded($0))" }
        }.joined(separator: "&")
        components.user = nil
        components.password = nil
        guard let url = components.url else {
            throw InfluxSinkError.invalidConfiguration("InfluxDB server \(server.name): cannot build the write URL from \(InfluxServer.redacted(server.url))")
        }
        writeURL = url
    }

    /// The request for a batch (lines without newlines).
    func request(for lines: [String], timeoutSeconds: Int) throws -> URLRequest {
        var body: [UInt8] = []
        body.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 1 })
        for line in lines {
            body.append(contentsOf: line.utf8)
            body.append(UInt8(ascii: "\n"))
        }
        var request = URLRequest(url: writeURL)
        request.httpMethod = "POST"
        request.setValue(UUID().uuidString, forHTTPHeaderField: Self.requestIdentifierHeader)
        // The setter, in whole seconds: FoundationNetworking ignores the initializer's
        // timeout and truncates fractions (0.5 would be 0, an immediate failure).
        request.timeoutInterval = TimeInterval(max(1, timeoutSeconds))
        request.setValue("text/plain; charset=utf-8", forHTTPHeaderField: "Content-Type")
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "Authorization") }
        if server.gzip {
            request.setValue("gzip", forHTTPHeaderField: "Content-Encoding")
            request.httpBody = try Gzip.compress(body)
        } else {
            request.httpBody = Data(body)
        }
        return request
    }

    /// Sends one batch and classifies the answer.
    func send(_ lines: [String], timeoutSeconds: Int) async -> WriteOutcome {
        let request: URLRequest
        do {
            request = try self.request(for: lines, timeoutSeconds: timeoutSeconds)
        } catch {
            return .retry(retryAfter: nil, reason: "\(error)")
        }
        do {
            let (data, response) = try await Self.dataWithWatchdog(for: request, seconds: timeoutSeconds + 5)
            guard let http = response as? HTTPURLResponse else {
                return .retry(retryAfter: nil, reason: "not an HTTP response")
            }
            return Self.classify(status: http.statusCode, retryAfter: http.value(forHTTPHeaderField: "Retry-After"), body: data)
        } catch {
            if let identifier = request.value(forHTTPHeaderField: Self.requestIdentifierHeader),
               let status = Self.challengeRefuser.takeRefusedStatus(identifier) {
                return Self.classify(status: status, retryAfter: nil, body: Data("the server refused the credentials".utf8))
            }
            return .retry(retryAfter: nil, reason: "network: \((error as NSError).localizedDescription)")
        }
    }

    /// data(for:), cancelled if it outlives its own timeout by far: FoundationNetworking
    /// has left requests hanging (see ChallengeRefuser), which would stall this server's
    /// sender for good.
    static func dataWithWatchdog(for request: URLRequest, seconds: Int) async throws -> (Data, URLResponse) {
        try await withThrowingTaskGroup(of: (Data, URLResponse)?.self) { group in
            group.addTask { try await session.data(for: request) }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
                throw URLError(.timedOut)
            }
            throw URLError(.unknown)
        }
    }

    static func classify(status: Int, retryAfter: String?, body: Data) -> WriteOutcome {
        if (200..<300).contains(status) { return .stored }
        let text = "HTTP \(status): " + errorText(body)
        if status == 429 || status >= 500 {
            return .retry(retryAfter: retryAfter.flatMap(parseRetryAfter), reason: text)
        }
        return .refused(status: status, reason: text, partial: status == 400 && text.contains("partial write"))
    }

    /// The message of InfluxDB's JSON error ({"error": ...} in 1.x, {"message": ...} in
    /// 2.x), else the body itself, shortened.
    static func errorText(_ body: Data) -> String {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
           let message = (object["error"] ?? object["message"]) as? String {
            return String(message.prefix(2000))
        }
        let text = String(decoding: body.prefix(2000), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "(empty body)" : text
    }

    /// Retry-After as seconds: either a number of seconds or an HTTP date.
    static func parseRetryAfter(_ value: String) -> Double? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), seconds >= 0, seconds.isFinite { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return max(0, date.timeIntervalSinceNow)
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static func percentEncoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }
}

/// FoundationNetworking (Swift 6.3.1) never completes a request answered with 401 and a
/// WWW-Authenticate challenge when no stored credential applies (swift-corelibs-foundation
/// issue 5456): InfluxDB 1.x does exactly that for a wrong password. The sink sends its
/// credentials in the Authorization header up front, so a challenge always means they were
/// refused: cancel it, and remember the status for `send` to report.
final class ChallengeRefuser: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    private let lock = NSLock()
    private var refused: [String: Int] = [:]

    func urlSession(_ session: URLSession, task: URLSessionTask, didReceive challenge: URLAuthenticationChallenge,
                    completionHandler: @escaping @Sendable (URLSession.AuthChallengeDisposition, URLCredential?) -> Void) {
        if let identifier = task.originalRequest?.value(forHTTPHeaderField: ServerWriter.requestIdentifierHeader) {
            let status = (challenge.failureResponse as? HTTPURLResponse)?.statusCode ?? 401
            lock.withLock { refused[identifier] = status }
        }
        completionHandler(.cancelAuthenticationChallenge, nil)
    }

    func takeRefusedStatus(_ identifier: String) -> Int? {
        lock.withLock { refused.removeValue(forKey: identifier) }
    }
}
