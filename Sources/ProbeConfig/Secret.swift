/// A password or token. It prints as `<redacted>` everywhere (description, debug
/// description, `dump`, string interpolation of anything that contains it) so it cannot
/// leak into logs; only `value` gives it out, to the code that sends it.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself. Read it only to put it into a request.
    public let value: String

    /// - Parameter value: the secret.
    public init(_ value: String) {
        self.value = value
    }

    /// Always `<redacted>`.
    public var description: String { "<redacted>" }
    /// Always `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// No children, so `dump` and mirrors show nothing but `<redacted>`.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: nil) }
}
