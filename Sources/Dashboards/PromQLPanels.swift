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
/// ratios). Each query honours the `probe`, `env` and `target` variables.
enum PromQLPanels {
    /// The uid of the Prometheus datasource the provisioning file creates.
    static let datasourceUID = "netprobe-prometheus"
    static let datasource: JSONValue = ["type": "prometheus", "uid": .string(datasourceUID)]

    static func kind(_ measurement: String) -> ProbeKind { measurement == "tcp" ? .tcp : .icmp }

    /// A PromQL string literal.
    static func literal(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
    }

    /// `{probe=~"$probe",env=~"$env",target=~"$target",...}` plus exact matches.
    static func selector(_ exact: [(String, String)] = []) -> String {
        let variables = DashboardGenerator.variableNames.map { "\($0)=~\"$\($0)\"" }
        return "{" + (variables + exact.map { "\($0.0)=\(literal($0.1))" }).joined(separator: ",") + "}"
    }

    static func queryTarget(refID: String, expression: String, legend: String, instant: Bool = false) -> JSONValue {
        ["refId": .string(refID), "datasource": datasource, "expr": .string(expression), "legendFormat": .string(legend),
         "instant": .bool(instant), "range": .bool(!instant), "editorMode": "code"]
    }

    // MARK: Template variables

    static func variables(measurement: String) -> [JSONValue] {
        DashboardGenerator.variableNames.map { name in
            let query = variableQuery(measurement: measurement, name: name)
            return [
                "name": .string(name), "label": .string(name), "type": "query",
                "datasource": datasource,
                "query": .string(query), "definition": .string(query),
                "refresh": 2, "multi": true, "includeAll": true, "allValue": ".*", "sort": 1, "hide": 0, "regex": "",
                "options": [], "skipUrlSync": false,
                "current": ["selected": true, "text": ["All"], "value": ["$__all"]],
            ]
        }
    }

    /// `label_values(...)` for one variable, restricted by the variables before it.
    static func variableQuery(measurement: String, name: String) -> String {
        let earlier = DashboardGenerator.variableNames.prefix { $0 != name }
        let metric = Schema.Prometheus.rounds(kind(measurement))
        let matchers = earlier.map { "\($0)=~\"$\($0)\"" }
        return "label_values(\(metric)\(matchers.isEmpty ? "" : "{" + matchers.joined(separator: ",") + "}"), \(name))"
    }

    // MARK: Panels

    /// The summary stats, in the InfluxDB dashboard's order (same titles).
    static func statExpression(_ stat: DashboardGenerator.SummaryStat, measurement: String) -> (expression: String, unit: String) {
        let kind = kind(measurement)
        let all = selector()
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

    static func statPanel(_ stat: DashboardGenerator.SummaryStat, measurement: String, id: Int, grid: JSONValue) -> JSONValue {
        let (expression, unit) = statExpression(stat, measurement: measurement)
        return [
            "type": "stat", "title": .string(stat.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string("Over the selected probes, envs and targets and the dashboard's time range."),
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

    static func outcomeTimeline(measurement: String, env: String, id: Int, grid: JSONValue) -> JSONValue {
        let kind = kind(measurement)
        let by = kind == .tcp ? "target, port" : "target"
        let expression = "max by (\(by)) (\(Schema.Prometheus.gauge(kind, Schema.Field.resultCode))\(selector([(Schema.Tag.env, env)])))"
        let perWhat = kind == .tcp ? "port" : "target"
        return [
            "type": "state-timeline", "title": .string("Outcome per \(perWhat)"), "id": .int(id), "gridPos": grid,
            "datasource": datasource,
            "description": .string("The last round's result per \(perWhat) at each scrape: ok, timeout, unreachable, unresolved, error, refused."),
            "targets": [queryTarget(refID: "A", expression: expression, legend: kind == .tcp ? "{{target}}:{{port}}" : "{{target}}")],
            "fieldConfig": DashboardGenerator.outcomeFieldConfig,
            "options": DashboardGenerator.outcomePanelOptions,
        ]
    }

    static func rttPanel(measurement: String, target: DashboardGenerator.Target, id: Int, grid: JSONValue) -> JSONValue {
        let kind = kind(measurement)
        var exact = [(Schema.Tag.env, target.env), (Schema.Tag.target, target.host)]
        if let port = target.port { exact.append((Schema.Tag.port, String(port))) }
        let matching = selector(exact)
        let statistics: [(String, String)] = [("A", Schema.Field.rttMinimum), ("B", Schema.Field.rttAverage), ("C", Schema.Field.rttMaximum), ("D", Schema.Field.rttMedian)]
        let legends = ["A": "min", "B": "avg", "C": "max", "D": "median"]
        var targets: [JSONValue] = statistics.map { refID, field in
            queryTarget(refID: refID, expression: Schema.Prometheus.gauge(kind, field) + matching, legend: legends[refID]!)
        }
        targets.append(queryTarget(refID: "E", expression: Schema.Prometheus.gauge(kind, Schema.Field.lossPercent) + matching, legend: "loss"))
        let what = kind == .tcp ? "handshake (SYN to SYN-ACK)" : "ICMP echo round trip"
        return [
            "type": "timeseries", "title": .string(target.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string("\(what) time of each scraped round: min, avg, max and median (left axis); loss (right axis)."),
            "targets": .array(targets),
            "fieldConfig": DashboardGenerator.rttFieldConfig(rttUnit: "s", lossRefID: "E", lossUnit: "percentunit", lossMaximum: 1),
            "options": DashboardGenerator.rttPanelOptions,
        ]
    }
}
