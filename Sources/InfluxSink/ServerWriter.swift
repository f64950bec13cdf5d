import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOPosix
import NIOSSL

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

/// Builds and sends write requests for one server, on AsyncHTTPClient (SwiftNIO).
///
/// Not URLSession: on Linux it runs on libcurl through Dispatch sources, and while a write
/// was in flight its manager thread spun on the connection's always-writable socket
/// (epoll_ctl, epoll_wait, TIOCOUTQ, a futex wake-up: 24,000 times a second), which at
/// 10,000 targets a second cost half a core, more than the probing (BENCHMARKS.md).
final class ServerWriter: Sendable {
    /// One event-loop thread serves every server's connections: the sink sends a request
    /// every few seconds per server, and it never waits on the probe loop.
    static let eventLoopGroup: MultiThreadedEventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    let server: InfluxServer
    let writeURL: URL
    private let authorization: String?
    private let client: HTTPClient

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

        var configuration = HTTPClient.Configuration()
        // A write is never redirected (credentials would follow it) and its answer is small.
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout = .init(connect: .seconds(5))
        // Keep-alive connections to the server; a few, since one request is in flight at a time.
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 2)
        if let caFile = server.caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            do {
                // The system's roots and the configured CA: the server's certificate is
                // verified against either.
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
            } catch {
                throw InfluxSinkError.invalidConfiguration("InfluxDB server \(server.name): cannot read CA file \(caFile) as PEM certificates: \(error)")
            }
            configuration.tlsConfiguration = tls
        }
        client = HTTPClient(eventLoopGroup: Self.eventLoopGroup, configuration: configuration)
    }

    deinit {
        // Closes the client's idle connections; nothing waits for that (and a blocking
        // shutdown must not run on its event loop, where a last release may happen).
        client.shutdown { _ in }
    }

    /// The body of a batch (lines without newlines), gzipped when the server wants that;
    /// made in one buffer of its final size (or compressed as it is read), no copies.
    func body(for lines: [String]) throws -> ByteBuffer {
        if server.gzip { return try Gzip.compress(lines: lines) }
        var body = ByteBufferAllocator().buffer(capacity: lines.reduce(0) { $0 + $1.utf8.count + 1 })
        for line in lines {
            body.writeString(line)
            body.writeInteger(UInt8(ascii: "\n"))
        }
        return body
    }

    /// Sends one batch and classifies the answer.
    func send(_ lines: [String], timeoutSeconds: Int) async -> WriteOutcome {
        var request = HTTPClientRequest(url: writeURL.absoluteString)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        do {
            let body = try self.body(for: lines)
            if server.gzip { request.headers.add(name: "Content-Encoding", value: "gzip") }
            request.body = .bytes(body)
        } catch {
            return .retry(retryAfter: nil, reason: "\(error)")
        }
        do {
            // The deadline covers the whole exchange: connect, send, the server's answer.
            let response = try await client.execute(request, timeout: .seconds(Int64(max(1, timeoutSeconds))))
            let answer = try await response.body.collect(upTo: 1 << 20)
            return Self.classify(status: Int(response.status.code), retryAfter: response.headers.first(name: "Retry-After"),
                                 body: Data(answer.readableBytesView))
        } catch {
            return .retry(retryAfter: nil, reason: "network: \(Self.describe(error))")
        }
    }

    /// A network failure in a few words (NIO's errors print their type names otherwise).
    static func describe(_ error: Error) -> String {
        switch error {
        case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout:
            return "the request timed out"
        case let error as HTTPClientError where error == .remoteConnectionClosed:
            return "the server closed the connection"
        case let error as NIOConnectionError:
            return "cannot connect to \(error.host):\(error.port)" + (error.connectionErrors.first.map { ": \($0.error)" } ?? "")
        case let error as IOError:
            return error.description
        default:
            return "\(error)"
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
