import Foundation
import Yams

/// The `influxdb:` list. Secrets come only from the environment or a private file, so a
/// config file can be world-readable, committed and shown in bug reports.
struct InfluxServersReader {
    var reader: Reader
    let configDirectory: String
    let environment: [String: String]

    private static let v1Keys = ["database", "retention_policy", "username", "password_env", "password_file"]
    private static let v2Keys = ["org", "bucket", "token_env", "token_file"]
    private static let commonKeys = ["name", "url", "api", "ca_file", "gzip"]
    private static let inlineSecrets = [
        "password": "inline 'password' is not allowed: secrets are read only from the environment or a file; use 'password_env: VARIABLE' or 'password_file: /path/to/file' (chmod 600)",
        "token": "inline 'token' is not allowed: secrets are read only from the environment or a file; use 'token_env: VARIABLE' or 'token_file: /path/to/file' (chmod 600)",
    ]

    mutating func read(_ node: Node) -> [InfluxServerSettings] {
        if node.isNull { return [] }
        guard case .sequence(let sequence) = node else {
            reader.error(node, "influxdb must be a list of servers, each starting with '- url: ...', got \(node.shownAs)")
            return []
        }
        var servers: [InfluxServerSettings] = []
        var names: [String: Position] = [:]
        for item in sequence {
            guard let server = readServer(item) else { continue }
            if let earlier = names[server.settings.name] {
                reader.error(server.nameNode, "two InfluxDB servers are named '\(server.settings.name)' (the other at line \(earlier.line)); give each a distinct 'name'")
                continue
            }
            names[server.settings.name] = Position(server.nameNode)
            servers.append(server.settings)
        }
        return servers
    }

    private mutating func readServer(_ node: Node) -> (settings: InfluxServerSettings, nameNode: Node)? {
        guard let entries = reader.entries(
            of: node, section: "an influxdb server",
            known: Self.commonKeys + Self.v1Keys + Self.v2Keys, special: Self.inlineSecrets
        ) else { return nil }
        if node.isNull {
            reader.error(node, "empty influxdb server entry; give at least 'url' and 'database' (v1) or 'org', 'bucket', 'token_env' (v2), or remove the '-'")
            return nil
        }
        var failed = false

        var url: String?
        var host = ""
        var isHTTPS = false
        if let urlNode = entries["url"] {
            if let text = reader.string(urlNode, "url") {
                if let parsed = URLComponents(string: text), let scheme = parsed.scheme?.lowercased(),
                   scheme == "http" || scheme == "https", let parsedHost = parsed.host, !parsedHost.isEmpty {
                    url = text
                    isHTTPS = scheme == "https"
                    host = parsed.port.map { "\(parsedHost):\($0)" } ?? parsedHost
                } else {
                    reader.error(urlNode, "url must be an http:// or https:// URL with a host, as 'https://influx.example.com:8086', got '\(text)'")
                }
            }
        } else {
            reader.error(node, "influxdb server needs 'url'; add 'url: https://HOST:8086'")
        }
        if url == nil { failed = true }

        let api = decideAPI(node, entries)
        let settingsAPI: InfluxAPI?
        switch api {
        case "v1": settingsAPI = readV1(node, entries)
        case "v2": settingsAPI = readV2(node, entries)
        default: settingsAPI = nil
        }

        var caFile: String?
        if let caNode = entries["ca_file"], let path = reader.string(caNode, "ca_file") {
            let resolved = Paths.resolve(path, against: configDirectory)
            if url != nil && !isHTTPS {
                reader.error(caNode, "ca_file applies only to https URLs; use an https:// url or remove ca_file")
                failed = true
            } else if !FileManager.default.isReadableFile(atPath: resolved) {
                reader.error(caNode, "ca_file '\(resolved)' does not exist or cannot be read; give the path of the CA's PEM certificate")
                failed = true
            } else {
                caFile = resolved
            }
        }
        var gzip = true
        if let gzipNode = entries["gzip"] {
            if let value = reader.boolean(gzipNode, "gzip") { gzip = value } else { failed = true }
        }
        var name = host
        let nameNode = entries["name"] ?? entries["url"] ?? node
        if let explicitNode = entries["name"] {
            if let value = reader.name(explicitNode, "name") { name = value } else { failed = true }
        }
        guard !failed, let url, let settingsAPI else { return nil }
        return (InfluxServerSettings(name: name, url: url, api: settingsAPI, caFile: caFile, gzip: gzip), nameNode)
    }

    /// "v1" or "v2" from `api:` or from which keys are present; nil after an error.
    private mutating func decideAPI(_ node: Node, _ entries: Entries) -> String? {
        let v1Present = Self.v1Keys.filter(entries.has)
        let v2Present = Self.v2Keys.filter(entries.has)
        if let apiNode = entries["api"] {
            guard let text = reader.string(apiNode, "api") else { return nil }
            guard text == "v1" || text == "v2" else {
                reader.error(apiNode, "api must be 'v1' (InfluxDB 1.x: database) or 'v2' (InfluxDB 2.x/3.x: org, bucket, token), got '\(text)'")
                return nil
            }
            let (foreign, other) = text == "v1" ? (v2Present, "v2") : (v1Present, "v1")
            for key in foreign {
                reader.error(entries.keyNode(key)!, "'\(key)' is an InfluxDB \(other) key but this server has 'api: \(text)'; remove it or change api")
            }
            return foreign.isEmpty ? text : nil
        }
        switch (v1Present.isEmpty, v2Present.isEmpty) {
        case (false, true): return "v1"
        case (true, false): return "v2"
        case (false, false):
            reader.error(node, "influxdb server mixes v1 keys (\(v1Present.joined(separator: ", "))) and v2 keys (\(v2Present.joined(separator: ", "))); keep one set, or set 'api: v1' or 'api: v2'")
            return nil
        case (true, true):
            reader.error(node, "cannot tell whether this InfluxDB server is v1 or v2; add 'database' (v1) or 'org', 'bucket' and 'token_env' (v2), or set 'api'")
            return nil
        }
    }

    private mutating func readV1(_ node: Node, _ entries: Entries) -> InfluxAPI? {
        var failed = false
        var database: String?
        if let databaseNode = entries["database"] {
            database = reader.name(databaseNode, "database")
        } else {
            reader.error(node, "InfluxDB v1 server needs 'database'; add 'database: NAME'")
        }
        let retentionPolicy = entries["retention_policy"].flatMap { reader.name($0, "retention_policy") }
        if entries.has("retention_policy") && retentionPolicy == nil { failed = true }
        let username = entries["username"].flatMap { reader.name($0, "username") }
        if entries.has("username") && username == nil { failed = true }
        let (password, passwordState) = secret(entries, variable: "password_env", file: "password_file")
        switch (entries.has("username"), passwordState) {
        case (true, .absent):
            reader.error(entries.keyNode("username")!, "username '\(username ?? "")' needs a password; add 'password_env: VARIABLE' or 'password_file: PATH'")
            failed = true
        case (false, .read):
            let key = entries.has("password_env") ? "password_env" : "password_file"
            reader.error(entries.keyNode(key)!, "\(key) needs 'username'; add 'username: NAME' or remove \(key)")
            failed = true
        default:
            break
        }
        if passwordState == .failed { failed = true }
        guard !failed, let database else { return nil }
        return .v1(database: database, retentionPolicy: retentionPolicy, username: username, password: password)
    }

    private mutating func readV2(_ node: Node, _ entries: Entries) -> InfluxAPI? {
        var values: [String: String] = [:]
        for key in ["org", "bucket"] {
            if let valueNode = entries[key] {
                values[key] = reader.name(valueNode, key)
            } else {
                reader.error(node, "InfluxDB v2 server needs '\(key)'; add '\(key): NAME'")
            }
        }
        let (token, tokenState) = secret(entries, variable: "token_env", file: "token_file")
        if tokenState == .absent {
            reader.error(node, "missing secret: InfluxDB v2 server needs a token; add 'token_env: VARIABLE' or 'token_file: PATH' (chmod 600)")
        }
        guard let org = values["org"], let bucket = values["bucket"], let token else { return nil }
        return .v2(org: org, bucket: bucket, token: token)
    }

    private enum SecretState { case absent, read, failed }

    /// Reads the secret named by `*_env` or `*_file`. The value is never put into a
    /// message: messages name only the variable or the file.
    private mutating func secret(_ entries: Entries, variable: String, file: String) -> (Secret?, SecretState) {
        let variableNode = entries[variable]
        let fileNode = entries[file]
        if variableNode != nil && fileNode != nil {
            reader.error(entries.keyNode(file)!, "set only one of \(variable) and \(file); remove one")
            return (nil, .failed)
        }
        if let variableNode {
            guard let name = reader.string(variableNode, variable) else { return (nil, .failed) }
            guard let value = environment[name], !value.isEmpty else {
                reader.error(variableNode, "missing secret: environment variable '\(name)' (\(variable)) is unset or empty; export it before starting netprobe, or use \(file)")
                return (nil, .failed)
            }
            return (Secret(value), .read)
        }
        if let fileNode {
            guard let path = reader.string(fileNode, file) else { return (nil, .failed) }
            let resolved = Paths.resolve(path, against: configDirectory)
            switch SecretFile.read(resolved) {
            case .success(let value):
                return (Secret(value), .read)
            case .failure(let problem):
                reader.error(fileNode, "missing secret: \(problem.message(path: resolved, key: file))")
                return (nil, .failed)
            }
        }
        return (nil, .absent)
    }
}

/// A file holding one secret, which must be private to its owner.
enum SecretFile {
    enum Problem: Error {
        case missing
        case notRegular
        case exposed(mode: UInt32)
        case unreadable(String)
        case empty

        func message(path: String, key: String) -> String {
            switch self {
            case .missing:
                return "secret file '\(path)' (\(key)) does not exist; create it holding only the secret, then run 'chmod 600 \(path)'"
            case .notRegular:
                return "secret file '\(path)' (\(key)) is not a regular file; point \(key) at a file holding only the secret"
            case .exposed(let mode):
                return "secret file '\(path)' (\(key)) is readable or writable by group or others (mode \(String(mode & 0o777, radix: 8).leftPadded(to: 4))); run 'chmod 600 \(path)'"
            case .unreadable(let reason):
                return "secret file '\(path)' (\(key)) cannot be read (\(reason)); make it readable by the user netprobe runs as, mode 600"
            case .empty:
                return "secret file '\(path)' (\(key)) is empty; write the secret into it"
            }
        }
    }

    /// The file's content without the trailing line break editors add.
    static func read(_ path: String) -> Result<String, Problem> {
        var status = stat()
        guard stat(path, &status) == 0 else {
            return .failure(errno == ENOENT || errno == ENOTDIR ? .missing : .unreadable(String(cString: strerror(errno))))
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else { return .failure(.notRegular) }
        // Refuse rather than warn, as ssh does for keys: a readable secret has leaked already.
        guard status.st_mode & 0o077 == 0 else { return .failure(.exposed(mode: UInt32(status.st_mode))) }
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(.unreadable("permission denied"))
        }
        var text = String(decoding: data, as: UTF8.self)
        while let last = text.last, last.isNewline {
            text.removeLast()
        }
        return text.isEmpty ? .failure(.empty) : .success(text)
    }
}
