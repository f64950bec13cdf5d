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
        return URLSession(configuration: configuration)
    }()

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
            authorization = username.map { "Basic " + Data("\($0):\(password ?? "")".utf8).base64EncodedString() }
        case .v2(let org, let bucket, let token):
            path += "/api/v2/write"
            query = [("org", org), ("bucket", bucket), ("precision", "ns")]
            authorization = "Token \(token)"
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
            let (data, response) = try await Self.session.data(for: request)
            guard let http = response as? HTTPURLResponse else {
                return .retry(retryAfter: nil, reason: "not an HTTP response")
            }
            return Self.classify(status: http.statusCode, retryAfter: http.value(forHTTPHeaderField: "Retry-After"), body: data)
        } catch {
            return .retry(retryAfter: nil, reason: "network: \((error as NSError).localizedDescription)")
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
