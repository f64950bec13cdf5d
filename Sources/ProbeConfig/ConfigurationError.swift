/// One problem in a config or targets file, at the node that caused it.
///
/// The position is the 1-based line and column of the offending YAML node (from Yams'
/// marks), so an editor can jump straight to it; the message says what to change.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file the problem is in, as it was given or resolved (not made absolute).
    public var file: String
    /// 1-based line of the offending node.
    public var line: Int
    /// 1-based column of the offending node, counted in Unicode scalars as libyaml does.
    public var column: Int
    /// What is wrong and what to change.
    public var message: String

    /// - Parameters:
    ///   - file: the file the problem is in.
    ///   - line: 1-based line.
    ///   - column: 1-based column.
    ///   - message: what is wrong and what to change.
    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `FILE:LINE:COLUMN: error: MESSAGE`, the form compilers use, so editors and CI
    /// annotate it without help.
    public var description: String { "\(file):\(line):\(column): error: \(message)" }
}

/// Something that works but is probably not what the user meant (for example rounds
/// that overlap). Never stops loading; `validate` and `run` print it.
public struct ConfigurationWarning: CustomStringConvertible, Equatable, Sendable {
    /// The file the remark is about.
    public var file: String
    /// 1-based line of the node concerned.
    public var line: Int
    /// 1-based column of the node concerned.
    public var column: Int
    /// What looks wrong and how to change it if it was not meant.
    public var message: String

    /// - Parameters:
    ///   - file: the file the remark is about.
    ///   - line: 1-based line.
    ///   - column: 1-based column.
    ///   - message: what looks wrong and how to change it.
    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `FILE:LINE:COLUMN: warning: MESSAGE`.
    public var description: String { "\(file):\(line):\(column): warning: \(message)" }
}

/// Every error found in one pass over the config and targets files, so the user can fix
/// them all at once instead of one per run.
public struct ConfigurationErrors: Error, CustomStringConvertible, Equatable, Sendable {
    /// The errors, ordered by file (in the order files were read), then line, then column.
    public var errors: [ConfigurationError]

    /// - Parameter errors: the errors, in the order they should be shown.
    public init(errors: [ConfigurationError]) {
        self.errors = errors
    }

    /// One error per line, each in `FILE:LINE:COLUMN: error: MESSAGE` form.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// Errors and warnings gathered while reading, so that one bad value does not hide the
/// next one.
struct Diagnostics {
    var errors: [ConfigurationError] = []
    var warnings: [ConfigurationWarning] = []

    mutating func error(_ file: String, _ position: Position, _ message: String) {
        errors.append(ConfigurationError(file: file, line: position.line, column: position.column, message: message))
    }

    mutating func warning(_ file: String, _ position: Position, _ message: String) {
        warnings.append(ConfigurationWarning(file: file, line: position.line, column: position.column, message: message))
    }

    /// Errors grouped by file in the order files were first mentioned, each file's in
    /// reading order: a config error reads before the targets errors it may explain.
    var sortedErrors: [ConfigurationError] {
        var fileOrder: [String: Int] = [:]
        for error in errors where fileOrder[error.file] == nil {
            fileOrder[error.file] = fileOrder.count
        }
        return errors.enumerated().sorted { left, right in
            let leftKey = (fileOrder[left.element.file]!, left.element.line, left.element.column, left.offset)
            let rightKey = (fileOrder[right.element.file]!, right.element.line, right.element.column, right.offset)
            return leftKey < rightKey
        }.map(\.element)
    }
}

/// A 1-based line and column.
struct Position: Equatable {
    var line: Int
    var column: Int

    /// Where a whole-file problem is reported (a missing file, an empty document).
    static let startOfFile = Position(line: 1, column: 1)
}
