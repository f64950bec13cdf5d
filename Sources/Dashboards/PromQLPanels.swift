import ProbeResults

/// Which datasource the dashboards query.
public enum QueryLanguage: String, Sendable, CaseIterable {
    /// InfluxDB 1.x (the points of `run`'s sink).
    case influxQL = "influxdb"
    /// Prometheus (or anything that speaks PromQL) scraping `run`'s /metrics.
    case promQL = "prometheus"

    func title(_ base: String) -> String { self == .promQL ? base + " (Prometheus)" : base }
    func uid(_ base: String) -> String { self == .promQL ? base + "-prometheus" : base }
}

/// The panels of the Prometheus dashboards: the InfluxDB ones' layout, titles and colours,
/// with PromQL over the exporter's names (Schema.Prometheus) and base units (seconds,
/// ratios). Each query honours the `probe`, `env`, label and `target` variables; a label's
/// "All" is `.*`, which matches series without that label.
enum PromQLPanels {
    /// The uid of the Prometheus datasource the provisioning file creates.
    static let datasourceUID = "netprobe-prometheus"
    static let datasource: JSONValue = ["type": "prometheus", "uid": .string(datasourceUID)]

    static func kind(_ measurement: String) -> ProbeKind { measurement == "tcp" ? .tcp : .icmp }

    /// A PromQL string literal.
    static func literal(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
    }

    /// `{probe=~"$probe",env=~"$env",site=~"$site",target=~"$target",...}` plus exact
    /// matches (an empty value matches series without the label: class 0's missing `tos`)
    /// and `extra` matchers as written.
    static func selector(_ variables: [TemplateVariable], _ exact: [(String, String)] = [], extra: [String] = []) -> String {
        let selection = variables.map { "\($0.tag)=~\"$\($0.name)\"" }
        return "{" + (selection + exact.map { "\($0.0)=\(literal($0.1))" } + extra).joined(separator: ",") + "}"
    }

    static func queryTarget(refID: String, expression: String, legend: String, instant: Bool = false) -> JSONValue {
        ["refId": .string(refID), "datasource": datasource, "expr": .string(expression), "legendFormat": .string(legend),
         "instant": .bool(instant), "range": .bool(!instant), "editorMode": "code"]
    }

    // MARK: Template variables

    static func variables(measurement: String, variables: [TemplateVariable]) -> [JSONValue] {
        variables.map { variable in
            let query = variableQuery(measurement: measurement, variable: variable, in: variables)
            return [
                "name": .string(variable.name), "label": .string(variable.tag), "type": "query",
                "datasource": datasource,
                "query": .string(query), "definition": .string(query),
                "refresh": 2, "multi": true, "includeAll": true, "allValue": ".*", "sort": 1, "hide": 0, "regex": "",
                "options": [], "skipUrlSync": false,
                "current": ["selected": true, "text": ["All"], "value": ["$__all"]],
            ]
        }
    }

    /// `label_values(...)` for one variable, restricted by the variables before it.
    static func variableQuery(measurement: String, variable: TemplateVariable, in variables: [TemplateVariable]) -> String {
        let earlier = variables.prefix { $0 != variable }
        let metric = Schema.Prometheus.rounds(kind(measurement))
        let matchers = earlier.map { "\($0.tag)=~\"$\($0.name)\"" }
        return "label_values(\(metric)\(matchers.isEmpty ? "" : "{" + matchers.joined(separator: ",") + "}"), \(variable.tag))"
    }

    // MARK: Panels

    /// The summary stats, in the InfluxDB dashboard's order (same titles).
    static func statExpression(_ stat: DashboardGenerator.SummaryStat, measurement: String, variables: [TemplateVariable]) -> (expression: String, unit: String) {
        let kind = kind(measurement)
        let all = selector(variables)
        switch stat.title {
        case let title where title.hasPrefix("Median"):
            return ("quantile(0.5, quantile_over_time(0.5, \(Schema.Prometheus.gauge(kind, Schema.Field.rttMedian))\(all)[$__range]))", "s")
        case let title where title.hasPrefix("Max"):
            return ("max(max_over_time(\(Schema.Prometheus.gauge(kind, Schema.Field.rttMaximum))\(all)[$__range]))", "s")
        case "Loss":
            return ("avg(avg_over_time(\(Schema.Prometheus.gauge(kind, Schema.Field.lossPercent))\(all)[$__range]))", "percentunit")
        case "Completed connections":
            return ("sum(increase(\(Schema.Prometheus.counter(kind, Schema.Field.completed))\(all)[$__range]))", "none")
        default:  // lost packets / failed handshakes
            return ("sum(increase(\(Schema.Prometheus.counter(kind, Schema.Field.sent))\(all)[$__range])) - sum(increase(\(Schema.Prometheus.counter(kind, Schema.Field.received))\(all)[$__range]))", "none")
        }
    }

    static func statPanel(_ stat: DashboardGenerator.SummaryStat, measurement: String, variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        let (expression, unit) = statExpression(stat, measurement: measurement, variables: variables)
        return [
            "type": "stat", "title": .string(stat.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string(DashboardGenerator.statDescription(variables)),
            "targets": [queryTarget(refID: "A", expression: expression, legend: stat.title, instant: true)],
            "fieldConfig": [
                "defaults": [
                    "unit": .string(unit), "decimals": .int(stat.decimals), "color": ["mode": "thresholds"],
                    "thresholds": ["mode": "absolute", "steps": [["color": "green", "value": nil]]],
                ],
                "overrides": [],
            ],
            "options": [
                "reduceOptions": ["calcs": ["lastNotNull"], "fields": "", "values": false],
                "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto", "textMode": "auto",
            ],
        ]
    }

    /// As the InfluxDB one: in an env with TOS classes other than 0, class 0 (no `tos`
    /// label) per target where some target has it, and the other classes per target and class.
    static func outcomeTimeline(measurement: String, env: String, classes: Set<UInt8> = [0], variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        let kind = kind(measurement)
        let by = kind == .tcp ? "target, port" : "target"
        let gauge = Schema.Prometheus.gauge(kind, Schema.Field.resultCode)
        let legend = kind == .tcp ? "{{target}}:{{port}}" : "{{target}}"
        let splitsByClass = classes != [0]
        var queries: [(expression: String, legend: String)] = []
        if !splitsByClass {
            queries = [("max by (\(by)) (\(gauge)\(selector(variables, [(Schema.Tag.env, env)])))", legend)]
        } else {
            if classes.contains(0) { queries.append(("max by (\(by)) (\(gauge)\(selector(variables, [(Schema.Tag.env, env), (Schema.Tag.tos, "")])))", legend)) }
            queries.append(("max by (\(by), \(Schema.Tag.tos)) (\(gauge)\(selector(variables, [(Schema.Tag.env, env)], extra: ["\(Schema.Tag.tos)!=\"\""])))",
                            legend + " tos {{tos}}"))
        }
        let targets = queries.enumerated().map { queryTarget(refID: DashboardGenerator.refID($0.offset), expression: $0.element.expression, legend: $0.element.legend) }
        let perWhat = kind == .tcp ? "port" : "target"
        return [
            "type": "state-timeline", "title": .string("Outcome per \(perWhat)"), "id": .int(id), "gridPos": grid,
            "datasource": datasource,
            "description": .string("The last round's result per \(perWhat)\(splitsByClass ? " and TOS class" : "") at each scrape: ok, timeout, unreachable, unresolved, error, refused."),
            "targets": .array(targets),
            "fieldConfig": DashboardGenerator.outcomeFieldConfig,
            "options": DashboardGenerator.outcomePanelOptions,
        ]
    }

    /// Queries A-D (min, avg, max, median) and E (loss); for a target probed in several
    /// TOS classes, the four of each class (`tos="ef"`, class 0 `tos=""`), then the loss of
    /// each, named by the class ("min (tos ef)").
    static func rttPanel(measurement: String, target: DashboardGenerator.Target, variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        let kind = kind(measurement)
        var exact = [(Schema.Tag.env, target.env), (Schema.Tag.target, target.host)]
        if let port = target.port { exact.append((Schema.Tag.port, String(port))) }
        let statistics: [(legend: String, field: String)] = [("min", Schema.Field.rttMinimum), ("avg", Schema.Field.rttAverage),
                                                             ("max", Schema.Field.rttMaximum), ("median", Schema.Field.rttMedian)]
        var targets: [JSONValue] = []
        var lossRefIDs: [String] = []
        if target.splitsByClass {
            func matching(_ tos: UInt8) -> String { selector(variables, exact + [(Schema.Tag.tos, Schema.tosTagValue(tos) ?? "")]) }
            for tos in target.classes {
                for statistic in statistics {
                    targets.append(queryTarget(refID: DashboardGenerator.refID(targets.count), expression: Schema.Prometheus.gauge(kind, statistic.field) + matching(tos),
                                               legend: "\(statistic.legend) (tos \(DashboardGenerator.className(tos)))"))
                }
            }
            for tos in target.classes {
                lossRefIDs.append(DashboardGenerator.refID(targets.count))
                targets.append(queryTarget(refID: DashboardGenerator.refID(targets.count), expression: Schema.Prometheus.gauge(kind, Schema.Field.lossPercent) + matching(tos),
                                           legend: "loss (tos \(DashboardGenerator.className(tos)))"))
            }
        } else {
            let matching = selector(variables, exact)
            for statistic in statistics {
                targets.append(queryTarget(refID: DashboardGenerator.refID(targets.count), expression: Schema.Prometheus.gauge(kind, statistic.field) + matching, legend: statistic.legend))
            }
            lossRefIDs = ["E"]
            targets.append(queryTarget(refID: "E", expression: Schema.Prometheus.gauge(kind, Schema.Field.lossPercent) + matching, legend: "loss"))
        }
        let what = kind == .tcp ? "handshake (SYN to SYN-ACK)" : "ICMP echo round trip"
        let perClass = target.splitsByClass ? " One series per TOS class (\(target.classes.map(DashboardGenerator.className).joined(separator: ", ")))." : ""
        return [
            "type": "timeseries", "title": .string(target.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string("\(what) time of each scraped round: min, avg, max and median (left axis); loss (right axis).\(perClass)"),
            "targets": .array(targets),
            "fieldConfig": DashboardGenerator.rttFieldConfig(rttUnit: "s", lossRefIDs: lossRefIDs, lossUnit: "percentunit", lossMaximum: 1),
            "options": DashboardGenerator.rttPanelOptions,
        ]
    }
}
