/// Quoting for InfluxQL (InfluxDB 1.x), so names users write in the targets files (any
/// text: quotes, spaces, commas, backslashes, `$`) reach the server exactly.
public enum InfluxQL {
    /// A double-quoted identifier: `"rtt_avg_ms"`.
    public static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// A single-quoted string literal: `'prod, \'east\''`.
    public static func string(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// The text with every regular-expression metacharacter escaped, and `$` written as
    /// `[$]`, so that neither Go's regexp nor Grafana's variable interpolation (which
    /// replaces `$name` and `[[name]]` anywhere in a query) reads anything into it.
    public static func regexEscaped(_ value: String) -> String {
        var output = ""
        for character in value {
            switch character {
            case "$": output += "[$]"
            case "\\", "^", "*", "+", "?", ".", "(", ")", "|", "{", "}", "[", "]", "/":
                output += "\\" + String(character)
            default: output.append(character)
            }
        }
        return output
    }

    /// `"tag" = 'value'`, or an anchored regular expression match when the value holds
    /// something Grafana would take for a variable (`$`, `[[`): Grafana has no escape
    /// for those inside a string literal.
    public static func tagEquals(_ tag: String, _ value: String) -> String {
        if value.contains("$") || value.contains("[[") {
            return "\(identifier(tag)) =~ /^\(regexEscaped(value))$/"
        }
        return "\(identifier(tag)) = \(string(value))"
    }

    /// `"tag" =~ /^$variable$/`: the tag matches the Grafana variable's selection (Grafana
    /// replaces `$variable` with the regex-escaped value, or `(a|b)` for several).
    public static func tagMatchesVariable(_ tag: String, variable: String) -> String {
        "\(identifier(tag)) =~ /^$\(variable)$/"
    }
}
