import ProbeResults

/// Text from the targets files (names, groups, labels) as it may appear in the view's HTML
/// and SVG: one escaping for both, so no name can open a tag, close an attribute or a
/// CDATA section, or make the SVG ill-formed XML.
enum Markup {
    /// The text with `& < > " '` as character references, tab, CR and LF as spaces (a name
    /// with a newline stays on one line, in text and in attributes alike) and the other
    /// characters XML 1.0 forbids (C0 controls, U+FFFE, U+FFFF) dropped.
    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            case "\t", "\n", "\r": result += " "
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f || scalar.value == 0xfffe || scalar.value == 0xffff { continue }
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// A number with a fixed count of decimals, for coordinates and labels.
    static func number(_ value: Double, places: Int = 1) -> String {
        DecimalText.fixed(value, places: places)
    }

    /// A UTC time as "2026-12-06 19:48" (or a part of it), without a formatter: the civil
    /// date of the day number (Howard Hinnant's days_from_civil, inverted).
    /// - Parameters:
    ///   - nanoseconds: nanoseconds since 1970.
    ///   - date: include the date ("12-06" alone when `time` is false).
    ///   - time: include the hour and minute.
    static func utc(_ nanoseconds: Int64, date: Bool = true, time: Bool = true, year: Bool = false) -> String {
        let seconds = nanoseconds >= 0 ? nanoseconds / 1_000_000_000 : (nanoseconds - 999_999_999) / 1_000_000_000
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let civilYear = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        var parts: [String] = []
        if date { parts.append((year ? "\(civilYear)-" : "") + two(month) + "-" + two(day)) }
        if time { parts.append(two(secondOfDay / 3600) + ":" + two(secondOfDay % 3600 / 60)) }
        return parts.joined(separator: " ")
    }
}
