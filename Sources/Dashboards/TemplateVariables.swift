import ProbeResults

/// One template variable of the dashboards: the tag (InfluxDB) or label (Prometheus) it
/// selects by, and its name in Grafana.
public struct TemplateVariable: Hashable, Sendable {
    /// The tag or label the variable's values come from and its selection filters.
    public var tag: String
    /// The variable's name in Grafana (`$name` in queries, `var-name` in URLs): the tag's,
    /// unless Grafana would read that name as one of its own (`templateVariables`).
    public var name: String
    /// A per-target label of the targets files: only some series carry it.
    public var isLabel: Bool

    /// What "All" stands for in the queries. A label's is `.*`, sent unescaped: `/^.*$/`
    /// (and PromQL's `=~".*"`) matches a series without the tag, where Grafana's default
    /// ("All" as every value listed, `(fra1|ams1)`) would drop the targets that have no
    /// such label. The schema's own tags are on every series and keep Grafana's default.
    public var allValue: String? { isLabel ? ".*" : nil }
}

extension DashboardGenerator {
    /// Names Grafana fills in by itself in InfluxQL queries and in their aliases: a
    /// variable so named would be replaced (or would replace `$col`, `$tag_target`).
    /// Names starting with `__` are Grafana's too; the targets files refuse those.
    static let grafanaReservedNames: Set<String> = ["timeFilter", "interval", "interval_ms", "col", "m", "measurement"]

    /// The variables of a dashboard, in display order: `probe`, `env`, then one per label
    /// of its targets (sorted by name), then `target`; each query restricted by the ones
    /// before it, so choosing a site narrows the target list.
    /// - Parameter labelNames: the label names of the dashboard's targets.
    /// - Returns: the variables; a label whose name Grafana keeps for itself (`col`,
    ///   `tag_x`, ...) gets a variable named `label_<name>`.
    public static func templateVariables(labelNames: [String]) -> [TemplateVariable] {
        let fixed = variableNames.map { TemplateVariable(tag: $0, name: $0, isLabel: false) }
        var taken = Set(variableNames)
        var labels: [TemplateVariable] = []
        for label in Set(labelNames).sorted() {
            var name = label
            if grafanaReservedNames.contains(name) || name.hasPrefix("tag_") { name = "label_" + name }
            while taken.contains(name) { name += "_" }
            taken.insert(name)
            labels.append(TemplateVariable(tag: label, name: name, isLabel: true))
        }
        return Array(fixed.prefix(2)) + labels + fixed.dropFirst(2)
    }

    /// The label names of some targets' label sets, sorted, each once.
    static func labelNames(_ labelSets: [[String: String]]) -> [String] {
        Set(labelSets.flatMap(\.keys)).sorted()
    }

    /// `SHOW TAG VALUES` for one variable, restricted by the variables before it.
    /// - Parameters:
    ///   - measurement: `icmp` or `tcp`.
    ///   - variable: the variable.
    ///   - variables: all of the dashboard's variables, in order.
    /// - Returns: the InfluxQL query of the variable.
    public static func variableQuery(measurement: String, variable: TemplateVariable, in variables: [TemplateVariable]) -> String {
        let earlier = variables.prefix { $0 != variable }
        var query = "SHOW TAG VALUES FROM \(InfluxQL.identifier(measurement)) WITH KEY = \(InfluxQL.identifier(variable.tag))"
        if !earlier.isEmpty {
            query += " WHERE " + earlier.map { InfluxQL.tagMatchesVariable($0.tag, variable: $0.name) }.joined(separator: " AND ")
        }
        return query
    }

    /// `SHOW TAG VALUES` for one of the fixed variables (`probe`, `env`, `target`) of a
    /// dashboard without labels.
    public static func variableQuery(measurement: String, name: String) -> String {
        let variables = templateVariables(labelNames: [])
        let variable = variables.first { $0.name == name } ?? TemplateVariable(tag: name, name: name, isLabel: false)
        return variableQuery(measurement: measurement, variable: variable, in: variables)
    }

    /// The conditions every panel query starts with: the variables' selection.
    static func variableConditions(_ variables: [TemplateVariable]) -> [String] {
        variables.map { InfluxQL.tagMatchesVariable($0.tag, variable: $0.name) }
    }

    // MARK: TOS classes

    /// How a series of one TOS class is named in legends: the `tos` tag's value (`ef`,
    /// `af41`, `4`), and `0` for class 0, which has no tag.
    static func className(_ tos: UInt8) -> String {
        Schema.tosTagValue(tos) ?? "0"
    }

    /// The InfluxQL condition for one class: its `tos` tag, or for class 0 the tag's absence
    /// (`"tos" = ''` matches series without the tag).
    static func classCondition(_ tos: UInt8) -> String {
        guard let value = Schema.tosTagValue(tos) else { return "\(InfluxQL.identifier(Schema.Tag.tos)) = ''" }
        return InfluxQL.tagEquals(Schema.Tag.tos, value)
    }

    /// Grafana query reference ids: A ... Z, then AA, AB, ...
    static func refID(_ index: Int) -> String {
        let letters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        var index = index
        var text = ""
        repeat {
            text = String(letters[index % 26]) + text
            index = index / 26 - 1
        } while index >= 0
        return text
    }
}
