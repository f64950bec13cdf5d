import Foundation
import Yams

/// One YAML file read for its node tree: nodes keep their marks, which a decoded
/// dictionary would lose, and every message needs a line and column.
struct YAMLFile {
    /// The path used in messages.
    let path: String
    /// The text, for locating things Yams reports only once (duplicate keys).
    let text: String

    /// Reads and parses `path`.
    ///
    /// - Parameters:
    ///   - path: the file to read.
    ///   - what: what the file is, for messages ("config file", "ping targets file").
    ///   - duplicateKeyHint: said after a duplicate-key error, for the file's own remedy.
    ///   - diagnostics: where problems go.
    /// - Returns: the file and its root node (nil for an empty document), or nil when
    ///   the file cannot be read or parsed (the error is in `diagnostics`).
    static func load(
        path: String, what: String, duplicateKeyHint: String,
        diagnostics: inout Diagnostics
    ) -> (file: YAMLFile, root: Node?)? {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason: String
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                reason = "does not exist; check the path"
            } else if isDirectory.boolValue {
                reason = "is a directory; give the path of a YAML file"
            } else {
                reason = "cannot be read; check its permissions"
            }
            diagnostics.error(path, .startOfFile, "\(what) '\(path)' \(reason)")
            return nil
        }
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            bytes.removeFirst(3)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            diagnostics.error(path, invalidUTF8Position(bytes), "\(what) is not valid UTF-8 text; save it as UTF-8")
            return nil
        }
        let file = YAMLFile(path: path, text: text)
        do {
            return (file, try Yams.compose(yaml: text))
        } catch let error as YamlError {
            let (position, message) = file.describe(error, duplicateKeyHint: duplicateKeyHint)
            diagnostics.error(path, position, message)
            return nil
        } catch {
            diagnostics.error(path, .startOfFile, "invalid YAML: \(error)")
            return nil
        }
    }

    private static func invalidUTF8Position(_ bytes: [UInt8]) -> Position {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var position = Position.startOfFile
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                if scalar == "\n" {
                    position.line += 1
                    position.column = 1
                } else {
                    position.column += 1
                }
            case .emptyInput, .error:
                return position
            }
        }
    }

    /// Turns a Yams error into a position and a message that says what to fix, without
    /// Yams' own description (which can repeat the whole document).
    private func describe(_ error: YamlError, duplicateKeyHint: String) -> (Position, String) {
        let remedy = "fix the YAML syntax here (check indentation, quotes, brackets and the space after ':')"
        switch error {
        case let .scanner(context, problem, mark, _),
             let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            var message = "invalid YAML: \(problem)"
            if let context {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            // `listen: [::1]:19156` reads as the start of a YAML list.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            let line = context?.mark.line ?? mark.line
            if line >= 1, line <= lines.count, let address = lines[line - 1].firstMatch(of: /\[[0-9A-Fa-f:.]*\]:[0-9]+/) {
                return (Position(mark), "\(message); a bracketed IPv6 address with a port must be quoted: write \"\(address.output)\"")
            }
            return (Position(mark), "\(message); \(remedy)")
        case let .reader(problem, offset, _, _):
            return (position(ofUTF8Offset: offset ?? 0), "invalid YAML: \(problem); save the file as UTF-8 text without control characters")
        case let .duplicatedKeysInMapping(duplicates, context):
            let key = duplicates.first ?? ""
            let first = Position(context.mark)
            if let second = findRepeatedKey(key, after: first) {
                return (second, "duplicate key '\(key)' (first at line \(first.line)); \(duplicateKeyHint)")
            }
            return (first, "duplicate key '\(key)' appears more than once in this mapping; \(duplicateKeyHint)")
        default:
            return (.startOfFile, "invalid YAML: \(error)")
        }
    }

    /// Yams reports only the first of two equal keys. In block style the second sits at
    /// the same column on a later line, so look for it there to name both lines.
    private func findRepeatedKey(_ key: String, after first: Position) -> Position? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard first.line >= 1, first.line < lines.count else { return nil }
        let spellings = [key, "\"\(key)\"", "'\(key)'"]
        for index in first.line..<lines.count {
            let scalars = Array(lines[index].unicodeScalars)
            guard scalars.count >= first.column else { continue }
            let rest = String(String.UnicodeScalarView(scalars[(first.column - 1)...]))
            for spelling in spellings where rest.hasPrefix(spelling) {
                let after = rest.dropFirst(spelling.count).drop { $0 == " " || $0 == "\t" }
                if after.hasPrefix(":") {
                    return Position(line: index + 1, column: first.column)
                }
            }
        }
        return nil
    }

    private func position(ofUTF8Offset offset: Int) -> Position {
        var position = Position.startOfFile
        var consumed = 0
        for scalar in text.unicodeScalars {
            if consumed >= offset { break }
            consumed += UTF8.width(scalar)
            if scalar == "\n" {
                position.line += 1
                position.column = 1
            } else {
                position.column += 1
            }
        }
        return position
    }
}

extension Position {
    init(_ mark: Mark) {
        self.init(line: max(1, mark.line), column: max(1, mark.column))
    }

    init(_ node: Node) {
        self = node.mark.map(Position.init) ?? .startOfFile
    }
}

extension Node {
    /// A plain `~`, `null` or empty value: the user wrote the key but no value.
    var isNull: Bool {
        guard case .scalar(let scalar) = self, scalar.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// How the node looks, for "got ..." in messages.
    var shownAs: String {
        switch self {
        case .scalar(let scalar):
            return isNull ? "nothing" : "'\(scalar.string)'"
        case .mapping:
            return "a mapping"
        case .sequence:
            return "a list"
        case .alias:
            return "an alias"
        }
    }
}

/// The known keys of one mapping, each with its key node (for positions).
struct Entries {
    var values: [String: (key: Node, value: Node)] = [:]

    subscript(_ name: String) -> Node? { values[name]?.value }

    func keyNode(_ name: String) -> Node? { values[name]?.key }

    func has(_ name: String) -> Bool { values[name] != nil }
}

/// Walks one file's nodes, checking types and recording errors with that file's name.
struct Reader {
    let file: String
    var diagnostics: Diagnostics

    mutating func error(_ node: Node, _ message: String) {
        diagnostics.error(file, Position(node), message)
    }

    mutating func warning(_ node: Node, _ message: String) {
        diagnostics.warning(file, Position(node), message)
    }

    /// The string keys of a mapping. Unknown keys are errors that suggest the closest
    /// known one, because a misspelt key silently falling back to a default is the worst
    /// kind of configuration bug.
    ///
    /// - Parameters:
    ///   - node: the mapping.
    ///   - section: where it is, for messages ("icmp", "the top level").
    ///   - known: the keys allowed.
    ///   - special: keys answered with a message of their own instead of "unknown".
    mutating func entries(
        of node: Node, section: String, known: [String], special: [String: String] = [:]
    ) -> Entries? {
        if node.isNull { return Entries() }
        guard case .mapping(let mapping) = node else {
            error(node, "\(section) must be a mapping of 'key: value' lines, got \(node.shownAs)")
            return nil
        }
        var entries = Entries()
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                error(key, "keys in \(section) must be plain names, got \(key.shownAs)")
                continue
            }
            let name = scalar.string
            if let message = special[name] {
                error(key, message)
            } else if known.contains(name) {
                entries.values[name] = (key, value)
            } else {
                error(key, unknownKeyMessage(name, section: section, known: known))
            }
        }
        return entries
    }

    /// A scalar's text, exactly as written (YAML types ignored: a host `1.5` or a group
    /// `yes` stays text).
    mutating func string(_ node: Node, _ name: String) -> String? {
        guard case .scalar(let scalar) = node, !node.isNull else {
            error(node, "\(name) must be a string, got \(node.shownAs)")
            return nil
        }
        return scalar.string
    }

    /// A name that ends up as a tag value or in a log line: any text, but no control
    /// characters, which the line protocol has no escape for.
    mutating func name(_ node: Node, _ name: String) -> String? {
        guard let text = string(node, name) else { return nil }
        guard !text.isEmpty else {
            error(node, "\(name) is empty; write a name")
            return nil
        }
        if let control = text.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            let code = "U+" + String(control.value, radix: 16, uppercase: true).leftPadded(to: 4)
            error(node, "\(name) '\(text.debugDescription.dropFirst().dropLast())' contains a control character (\(code)); remove it: tags cannot hold line breaks or tabs")
            return nil
        }
        return text
    }

    mutating func integer(_ node: Node, _ name: String, in range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, !node.isNull, let value = Int(scalar.string) else {
            error(node, "\(name) must be an integer, got \(node.shownAs); write a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        guard range.contains(value) else {
            error(node, "\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
            return nil
        }
        return value
    }

    mutating func boolean(_ node: Node, _ name: String) -> Bool? {
        if case .scalar(let scalar) = node {
            switch scalar.string.lowercased() {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: break
            }
        }
        error(node, "\(name) must be true or false, got \(node.shownAs)")
        return nil
    }

    /// A duration in nanoseconds, at least `minimum`.
    mutating func duration(_ node: Node, _ name: String, minimum: Int64) -> Int64? {
        guard case .scalar(let scalar) = node, !node.isNull,
              let nanoseconds = Units.nanoseconds(scalar.string)
        else {
            error(node, "\(name) must be a duration, got \(node.shownAs); write a number with a unit (ns, us, ms, s, m, h), e.g. '500us', '200ms', '1.5s', '2m', '1m30s', or a bare number of seconds")
            return nil
        }
        guard nanoseconds >= minimum else {
            error(node, "\(name) must be at least \(Units.format(nanoseconds: minimum)), got '\(scalar.string)'")
            return nil
        }
        return nanoseconds
    }

    mutating func byteSize(_ node: Node, _ name: String) -> Int64? {
        guard case .scalar(let scalar) = node, !node.isNull, let bytes = Units.bytes(scalar.string) else {
            error(node, "\(name) must be a size, got \(node.shownAs); write bytes or a number with a unit (KB, MB, GB = 1000-based; KiB, MiB, GiB = 1024-based), e.g. '512MB'")
            return nil
        }
        guard bytes > 0 else {
            error(node, "\(name) must be more than 0 bytes, got '\(scalar.string)'")
            return nil
        }
        return bytes
    }

    private func unknownKeyMessage(_ name: String, section: String, known: [String]) -> String {
        let place = section == "the top level" ? "at the top level" : "in \(section)"
        if let suggestion = Suggestion.closest(to: name, among: known) {
            return "unknown key '\(name)' \(place); did you mean '\(suggestion)'?"
        }
        return "unknown key '\(name)' \(place); known keys are \(known.map { "'\($0)'" }.joined(separator: ", "))"
    }
}

enum Suggestion {
    /// The known word nearest in edit distance, if it is near enough to be a typo
    /// (at most a third of the word, at least 2 edits allowed), or one contains the other.
    static func closest(to word: String, among candidates: [String]) -> String? {
        let lowered = word.lowercased()
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(lowered, candidate.lowercased())
            if best == nil || distance < best!.distance {
                best = (candidate, distance)
            }
        }
        guard let best else { return nil }
        let allowed = max(2, word.count / 3)
        if best.distance <= allowed { return best.candidate }
        return candidates.first { lowered.count >= 3 && ($0.contains(lowered) || lowered.contains($0)) }
    }

    static func editDistance(_ left: String, _ right: String) -> Int {
        let a = Array(left)
        let b = Array(right)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
