/// Durations and sizes as people write them in config files.
enum Units {
    private static let durationUnits: [String: Double] = [
        "ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9,
    ]

    /// Parses "200ms", "1.5s", "2m", "500us", "1m30s" (units as Go and the command line
    /// take them) or a bare number of seconds ("10", "0.2", as ping takes them).
    ///
    /// - Returns: nanoseconds, or nil when the text is not a duration (or is negative or
    ///   absurdly long).
    static func nanoseconds(_ text: String) -> Int64? {
        let text = text.trimmingWhitespace
        if let seconds = Double(text) {
            return checked(seconds * 1e9)
        }
        var total = 0.0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unit.count)
            guard let value = Double(number), let scale = durationUnits[String(unit)] else { return nil }
            total += value * scale
        }
        return checked(total)
    }

    private static func checked(_ nanoseconds: Double) -> Int64? {
        // A year is far beyond any sensible interval; the bound keeps sums from overflowing.
        guard nanoseconds.isFinite, nanoseconds >= 0, nanoseconds <= 366 * 86400e9 else { return nil }
        return Int64(nanoseconds.rounded())
    }

    private static let sizeUnits: [String: Double] = [
        "": 1, "b": 1,
        "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
        "kib": 1024, "mib": 1024 * 1024, "gib": 1024 * 1024 * 1024, "tib": 1024 * 1024 * 1024 * 1024,
    ]

    /// Parses "512MB", "1.5 GiB", "1048576": KB/MB/GB are powers of 1000 and KiB/MiB/GiB
    /// powers of 1024, as the SI and IEC prefixes say; bare numbers are bytes.
    ///
    /// - Returns: bytes, or nil when the text is not a size.
    static func bytes(_ text: String) -> Int64? {
        let text = text.trimmingWhitespace
        let number = text.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        let unit = text.dropFirst(number.count).trimmingWhitespace.lowercased()
        guard let value = Double(number), let scale = sizeUnits[unit] else { return nil }
        let bytes = (value * scale).rounded()
        guard bytes.isFinite, bytes >= 0, bytes < 9e18 else { return nil }
        return Int64(bytes)
    }

    /// A short human form of a duration for messages: "1ms", "1.2s".
    static func format(nanoseconds: Int64) -> String {
        let value = Double(nanoseconds)
        if nanoseconds % 60_000_000_000 == 0 && nanoseconds >= 60_000_000_000 {
            return "\(nanoseconds / 60_000_000_000)m"
        }
        if nanoseconds >= 1_000_000_000 { return String(format3: value / 1e9) + "s" }
        if nanoseconds >= 1_000_000 { return String(format3: value / 1e6) + "ms" }
        if nanoseconds >= 1_000 { return String(format3: value / 1e3) + "us" }
        return "\(nanoseconds)ns"
    }
}

extension String {
    /// A number with at most three decimals and no trailing zeros: 1.5, 0.25, 2.
    init(format3 number: Double) {
        let thousandths = (number * 1000).rounded()
        let whole = Int64(thousandths / 1000)
        var fraction = Int64(thousandths) - whole * 1000
        if fraction == 0 {
            self = "\(whole)"
            return
        }
        var digits = 3
        while fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        self = "\(whole)." + String(fraction).leftPadded(to: digits)
    }
}

extension StringProtocol {
    var trimmingWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

/// Paths in a config file are relative to the file, not to wherever netprobe was started,
/// so the same config works from systemd, a container and a shell.
enum Paths {
    /// The directory part of `file` ("" for a bare file name, meaning the working directory).
    static func directory(of file: String) -> String {
        guard let slash = file.lastIndex(of: "/") else { return "" }
        let directory = file[..<slash]
        return directory.isEmpty ? "/" : String(directory)
    }

    /// `path` if absolute, else `path` under `directory`, with "." and ".." folded away.
    static func resolve(_ path: String, against directory: String) -> String {
        if path.hasPrefix("/") || directory.isEmpty { return normalized(path) }
        return normalized(directory + "/" + path)
    }

    static func normalized(_ path: String) -> String {
        let absolute = path.hasPrefix("/")
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == "..", let last = parts.last, last != ".." {
                parts.removeLast()
            } else if part == "..", absolute {
                continue
            } else {
                parts.append(part)
            }
        }
        let joined = parts.joined(separator: "/")
        if absolute { return "/" + joined }
        return joined.isEmpty ? "." : joined
    }
}
