import ProbeConfig
import ProbeResults

/// Grafana dashboards for netprobe's schema (README "Schema"), generated from the
/// targets files: one for ICMP, one for TCP.
///
/// Layout of each: summary stat panels over the selection of the template variables
/// `probe`, `env`, one per label of the targets (`site`, `circuit`, ...) and `target`;
/// then a row per env (in the order of the targets file) with an outcome state timeline
/// (result per target, and per port for TCP) and, per target (per port for TCP), an RTT
/// panel: min/avg/max and median on the left axis, loss percent on the right. Every panel
/// query also honours the variables, so deselecting an env or target empties its panels.
///
/// A target probed in TOS classes other than 0 (`tos: [0, ef]`: one target per class in
/// the targets file) keeps one panel, with one query per class (alias naming the class),
/// so no series mixes the classes; its env's timeline has a row per target and class.
///
/// Everything is derived from the targets alone: panel ids are hashes of what the panel
/// shows, order is file order, and `JSONValue` renders with sorted keys, so unchanged
/// targets give byte-identical files.
public enum DashboardGenerator {
    /// The uid of the InfluxDB datasource the provisioning file creates.
    public static let datasourceUID = "netprobe-influxdb"
    /// The dashboard uids: fixed, so links and bookmarks survive regeneration.
    public static let icmpDashboardUID = "netprobe-icmp"
    public static let tcpDashboardUID = "netprobe-tcp"
    /// The fixed template variables, in display order (the labels' go between `env` and
    /// `target`: `templateVariables`).
    public static let variableNames = [Schema.Tag.probe, Schema.Tag.env, Schema.Tag.target]

    /// One target of a dashboard: a host, or a host and port, in one or more TOS classes.
    struct Target {
        var env: String
        var host: String
        var port: UInt16?
        /// The TOS bytes it is probed with, in file order; `[0]` unless the targets file says.
        var classes: [UInt8] = [0]

        var title: String {
            guard let port else { return host }
            return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }

        /// Its series are told apart by `tos`: a query per class, never their mix.
        var splitsByClass: Bool { classes != [0] }

        /// The targets files' entries merged per env, host and port, in file order: a `tos`
        /// list gives one entry per class there, and one panel with a series per class here.
        static func merged(_ entries: [(env: String, host: String, port: UInt16?, tos: UInt8)]) -> [Target] {
            var targets: [Target] = []
            var index: [String: Int] = [:]
            for entry in entries {
                let key = [entry.env, entry.host, entry.port.map { String($0) } ?? ""].joined(separator: "\u{1F}")
                if let existing = index[key] {
                    if !targets[existing].classes.contains(entry.tos) { targets[existing].classes.append(entry.tos) }
                } else {
                    index[key] = targets.count
                    targets.append(Target(env: entry.env, host: entry.host, port: entry.port, classes: [entry.tos]))
                }
            }
            return targets
        }
    }

    /// The ICMP dashboard for the ping targets.
    /// - Parameters:
    ///   - targets: the ping targets, in file order.
    ///   - paths: add a path panel per target (for `run` with `trace:`; InfluxDB only: the
    ///     hop and path points are written to InfluxDB).
    ///   - language: InfluxQL (InfluxDB datasource) or PromQL (Prometheus datasource).
    /// - Returns: the dashboard JSON (Grafana schema 39).
    public static func icmpDashboard(targets: [PingTarget], paths: Bool = false, language: QueryLanguage = .influxQL) -> JSONValue {
        dashboard(measurement: "icmp", title: language.title("netprobe ICMP"), uid: language.uid(icmpDashboardUID),
                  targets: Target.merged(targets.map { ($0.env, $0.host, nil, $0.options.tos) }),
                  labelNames: labelNames(targets.map(\.labels)), paths: paths, language: language)
    }

    /// The TCP dashboard for the tcp targets.
    /// - Parameters:
    ///   - targets: the tcp targets (one per host and port), in file order.
    ///   - paths: add a path panel per target and port (TCP SYN traces; InfluxDB only).
    ///   - language: InfluxQL (InfluxDB datasource) or PromQL (Prometheus datasource).
    /// - Returns: the dashboard JSON (Grafana schema 39).
    public static func tcpDashboard(targets: [TCPTarget], paths: Bool = false, language: QueryLanguage = .influxQL) -> JSONValue {
        dashboard(measurement: "tcp", title: language.title("netprobe TCP"), uid: language.uid(tcpDashboardUID),
                  targets: Target.merged(targets.map { ($0.env, $0.host, $0.port, $0.options.tos) }),
                  labelNames: labelNames(targets.map(\.labels)), paths: paths, language: language)
    }

    /// One layout for both datasources: the panels differ only in their queries, units and
    /// datasource (PromQLPanels.swift). Path panels exist for InfluxQL only.
    static func dashboard(measurement: String, title: String, uid: String, targets: [Target], labelNames: [String] = [], paths: Bool = false,
                          language: QueryLanguage = .influxQL) -> JSONValue {
        let variables = templateVariables(labelNames: labelNames)
        var ids = PanelIDs(namespace: measurement)
        var panels: [JSONValue] = []
        var y = 0

        let stats = summaryStats(measurement: measurement)
        let statWidth = 24 / stats.count
        for (index, stat) in stats.enumerated() {
            // The last one takes what the division leaves, so the row spans the full width.
            let width = index == stats.count - 1 ? 24 - index * statWidth : statWidth
            let id = ids.next("summary", stat.title), position = grid(x: index * statWidth, y: y, width: width, height: 4)
            switch language {
            case .influxQL: panels.append(statPanel(stat, measurement: measurement, variables: variables, id: id, grid: position))
            case .promQL: panels.append(PromQLPanels.statPanel(stat, measurement: measurement, variables: variables, id: id, grid: position))
            }
        }
        y += 4

        var envs: [String] = []
        for target in targets where !envs.contains(target.env) { envs.append(target.env) }
        for env in envs {
            let members = targets.filter { $0.env == env }
            panels.append([
                "type": "row", "title": .string("env: \(env)"), "collapsed": false, "panels": [],
                "id": .int(ids.next("row", env)), "gridPos": grid(x: 0, y: y, width: 24, height: 1),
            ])
            y += 1
            let timelineHeight = max(4, 2 + members.map(\.classes.count).reduce(0, +))
            let timelineID = ids.next("outcome", env), timelineGrid = grid(x: 0, y: y, width: 24, height: timelineHeight)
            let classes = Set(members.flatMap(\.classes))
            switch language {
            case .influxQL:
                panels.append(outcomeTimeline(measurement: measurement, env: env, classes: classes, variables: variables, id: timelineID, grid: timelineGrid))
            case .promQL:
                panels.append(PromQLPanels.outcomeTimeline(measurement: measurement, env: env, classes: classes, variables: variables, id: timelineID, grid: timelineGrid))
            }
            y += timelineHeight
            for (index, target) in members.enumerated() {
                let x = index % 2 == 0 ? 0 : 12
                let id = ids.next("rtt", target.env, target.host, target.port.map { String($0) } ?? ""), position = grid(x: x, y: y, width: 12, height: 8)
                switch language {
                case .influxQL: panels.append(rttPanel(measurement: measurement, target: target, variables: variables, id: id, grid: position))
                case .promQL: panels.append(PromQLPanels.rttPanel(measurement: measurement, target: target, variables: variables, id: id, grid: position))
                }
                if index % 2 == 1 || index == members.count - 1 { y += 8 }
            }
            guard paths, language == .influxQL else { continue }
            // A table per target, and per class for a target in several: path points carry
            // the class as the round points do, and each class's path is its own.
            let tables = members.flatMap { target in target.splitsByClass ? target.classes.map { (target, Optional($0)) } : [(target, nil)] }
            for (index, (target, tos)) in tables.enumerated() {
                let x = index % 2 == 0 ? 0 : 12
                let id = ids.next(["path", target.env, target.host, target.port.map { String($0) } ?? ""] + (tos.map { [className($0)] } ?? []))
                panels.append(pathPanel(target: target, tos: tos, variables: variables, id: id, grid: grid(x: x, y: y, width: 12, height: 6)))
                if index % 2 == 1 || index == tables.count - 1 { y += 6 }
            }
        }

        return [
            "uid": .string(uid),
            "title": .string(title),
            "tags": ["netprobe", .string(measurement)],
            "description": .string("Generated by `netprobe dashboards` from the targets files; edits are overwritten when it runs again."),
            "editable": true,
            "graphTooltip": 1,
            "refresh": "1m",
            "schemaVersion": 39,
            "version": 1,
            "time": ["from": "now-6h", "to": "now"],
            "timepicker": [:],
            "timezone": "",
            "annotations": ["list": []],
            "links": [],
            "panels": .array(panels),
            "templating": ["list": .array(language == .influxQL ? variablesJSON(measurement: measurement, variables: variables)
                                                                  : PromQLPanels.variables(measurement: measurement, variables: variables))],
        ]
    }

    // MARK: Template variables

    /// `probe`, `env`, the labels, `target`: multi-value with "All", each limited by the
    /// ones before (`templateVariables`); a label's "All" is `.*` (`TemplateVariable.allValue`).
    static func variablesJSON(measurement: String, variables: [TemplateVariable]) -> [JSONValue] {
        variables.map { variable in
            let query = variableQuery(measurement: measurement, variable: variable, in: variables)
            var json: [String: JSONValue] = [
                "name": .string(variable.name), "label": .string(variable.tag), "type": "query",
                "datasource": datasource,
                "query": .string(query), "definition": .string(query),
                "refresh": 2, "multi": true, "includeAll": true, "sort": 1, "hide": 0, "regex": "",
                "options": [], "skipUrlSync": false,
                "current": ["selected": true, "text": ["All"], "value": ["$__all"]],
            ]
            if let allValue = variable.allValue { json["allValue"] = .string(allValue) }
            return .object(json)
        }
    }

    // MARK: Panels

    static let datasource: JSONValue = ["type": "influxdb", "uid": .string(datasourceUID)]

    static func grid(x: Int, y: Int, width: Int, height: Int) -> JSONValue {
        ["x": .int(x), "y": .int(y), "w": .int(width), "h": .int(height)]
    }

    static func queryTarget(refID: String, query: String, alias: String) -> JSONValue {
        ["refId": .string(refID), "datasource": datasource, "query": .string(query), "rawQuery": true,
         "resultFormat": "time_series", "alias": .string(alias)]
    }

    static func whereClause(_ conditions: [String]) -> String {
        "WHERE " + (conditions + ["$timeFilter"]).joined(separator: " AND ")
    }

    struct SummaryStat {
        var title: String
        var select: String
        var unit: String
        var decimals: Int
    }

    static func summaryStats(measurement: String) -> [SummaryStat] {
        let field = InfluxQL.identifier
        let kind = measurement == "tcp" ? "handshake" : "RTT"
        let lost = measurement == "tcp" ? "Failed handshakes" : "Lost packets"
        var stats = [
            SummaryStat(title: "Median \(kind)", select: "median(\(field(Schema.Field.rttMedian))) AS \(field("median"))", unit: "ms", decimals: 2),
            SummaryStat(title: "Max \(kind)", select: "max(\(field(Schema.Field.rttMaximum))) AS \(field("max"))", unit: "ms", decimals: 2),
            SummaryStat(title: "Loss", select: "mean(\(field(Schema.Field.lossPercent))) AS \(field("loss"))", unit: "percent", decimals: 1),
            SummaryStat(title: lost, select: "sum(\(field(Schema.Field.sent))) - sum(\(field(Schema.Field.received))) AS \(field("lost"))", unit: "none", decimals: 0),
        ]
        if measurement == "tcp" {
            // Connections the probed servers saw (connect mode, or a half-open probe whose
            // final ACK left before netprobe's RST): 0 means no trace in their logs.
            stats.append(SummaryStat(title: "Completed connections", select: "sum(\(field(Schema.Field.completed))) AS \(field("completed"))", unit: "none", decimals: 0))
        }
        return stats
    }

    static func statPanel(_ stat: SummaryStat, measurement: String, variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        let query = "SELECT \(stat.select) FROM \(InfluxQL.identifier(measurement)) \(whereClause(variableConditions(variables)))"
        return [
            "type": "stat", "title": .string(stat.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string(statDescription(variables)),
            "targets": [queryTarget(refID: "A", query: query, alias: stat.title)],
            "fieldConfig": [
                "defaults": [
                    "unit": .string(stat.unit), "decimals": .int(stat.decimals), "color": ["mode": "thresholds"],
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

    /// Outcome codes of the schema's `result_code`, with the text and colour shown.
    static let outcomes: [(code: Int, text: String, color: String)] = [
        (0, "ok", "green"), (1, "timeout", "orange"), (2, "unreachable", "red"),
        (3, "unresolved", "purple"), (4, "error", "dark-red"), (5, "refused", "yellow"),
    ]

    /// The summary stats' description, naming the variables they honour.
    static func statDescription(_ variables: [TemplateVariable]) -> String {
        let labels = variables.filter(\.isLabel).map(\.tag)
        guard !labels.isEmpty else { return "Over the selected probes, envs and targets and the dashboard's time range." }
        return "Over the selected probes, envs, \(labels.joined(separator: ", ")) and targets and the dashboard's time range."
    }

    /// The last result code per target (per port for TCP) and interval. In an env with
    /// TOS classes other than 0 (`classes`: those of its targets), a query for class 0 (no
    /// `tos` tag) per target where some target has it, and one for the other classes per
    /// target and class, so no row mixes classes.
    static func outcomeTimeline(measurement: String, env: String, classes: Set<UInt8> = [0], variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        let groupTags = measurement == "tcp" ? "\"target\", \"port\"" : "\"target\""
        let alias = measurement == "tcp" ? "$tag_target:$tag_port" : "$tag_target"
        let conditions = variableConditions(variables) + [InfluxQL.tagEquals(Schema.Tag.env, env)]
        func query(_ extra: [String], groupBy: String) -> String {
            "SELECT last(\(InfluxQL.identifier(Schema.Field.resultCode))) AS \(InfluxQL.identifier("result")) "
                + "FROM \(InfluxQL.identifier(measurement)) \(whereClause(conditions + extra)) "
                + "GROUP BY time($__interval), \(groupBy) fill(null)"
        }
        let tos = InfluxQL.identifier(Schema.Tag.tos)
        let splitsByClass = classes != [0]
        var queries: [(query: String, alias: String)] = []
        if !splitsByClass {
            queries = [(query([], groupBy: groupTags), alias)]
        } else {
            if classes.contains(0) { queries.append((query(["\(tos) = ''"], groupBy: groupTags), alias)) }
            queries.append((query(["\(tos) != ''"], groupBy: groupTags + ", " + tos), alias + " tos $tag_tos"))
        }
        let targets = queries.enumerated().map { queryTarget(refID: refID($0.offset), query: $0.element.query, alias: $0.element.alias) }
        let perWhat = measurement == "tcp" ? "port" : "target"
        return [
            "type": "state-timeline", "title": .string("Outcome per \(perWhat)"), "id": .int(id), "gridPos": grid,
            "datasource": datasource,
            "description": .string("The last round's result per \(perWhat)\(splitsByClass ? " and TOS class" : "") and interval: ok, timeout, unreachable, unresolved, error, refused."),
            "targets": .array(targets),
            "fieldConfig": outcomeFieldConfig,
            "options": outcomePanelOptions,
        ]
    }

    /// Every path change of a target (the `path` points: one per change of its hop list),
    /// newest first: when, how many hops, which, and where loss started.
    /// - Parameters:
    ///   - tos: the class of this table, for a target in several; nil for one in class 0 only.
    ///   - variables: the dashboard's; the table honours `probe` and the labels' (its env
    ///     and target are fixed).
    static func pathPanel(target: Target, tos: UInt8? = nil, variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        var conditions = [InfluxQL.tagMatchesVariable(Schema.Tag.probe, variable: Schema.Tag.probe)]
            + variableConditions(variables.filter(\.isLabel))
            + [InfluxQL.tagEquals(Schema.Tag.env, target.env), InfluxQL.tagEquals(Schema.Tag.target, target.host),
               InfluxQL.tagEquals(Schema.PathTag.traceProtocol, target.port == nil ? "icmp" : "tcp")]
        if let port = target.port { conditions.append(InfluxQL.tagEquals(Schema.Tag.port, String(port))) }
        if let tos { conditions.append(classCondition(tos)) }
        let field = InfluxQL.identifier
        let query = "SELECT \(field(Schema.PathField.hopCount)), \(field(Schema.PathField.hops)), \(field(Schema.PathField.ending)), "
            + "\(field(Schema.PathField.lossStartHop)), \(field(Schema.PathField.hash)) FROM \(field("path")) \(whereClause(conditions)) ORDER BY time DESC"
        return [
            "type": "table", "title": .string("path: \(target.title)" + (tos.map { " (tos \(className($0)))" } ?? "")), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string("The path to the target each time it changed (netprobe run with trace:): hop count, the hops, how it ended (reached, unreachable, routing_loop, ...), the hop where loss starts, a hash of the hop list."),
            "targets": [["refId": "A", "datasource": datasource, "query": .string(query), "rawQuery": true, "resultFormat": "table"]],
            "fieldConfig": ["defaults": [:], "overrides": []],
            "options": ["showHeader": true, "cellHeight": "sm"],
        ]
    }

    /// A target's RTT and loss: queries A (RTT) and B (loss); for a target probed in
    /// several TOS classes, the RTT queries of each class, then the loss queries of each,
    /// each class's series named by it ("min (tos ef)").
    static func rttPanel(measurement: String, target: Target, variables: [TemplateVariable], id: Int, grid: JSONValue) -> JSONValue {
        var conditions = variableConditions(variables) + [InfluxQL.tagEquals(Schema.Tag.env, target.env), InfluxQL.tagEquals(Schema.Tag.target, target.host)]
        if let port = target.port { conditions.append(InfluxQL.tagEquals(Schema.Tag.port, String(port))) }
        let field = InfluxQL.identifier
        func from(_ extra: [String]) -> String {
            "FROM \(field(measurement)) \(whereClause(conditions + extra)) GROUP BY time($__interval) fill(null)"
        }
        func rtt(_ extra: [String]) -> String {
            "SELECT min(\(field(Schema.Field.rttMinimum))) AS \(field("min")), mean(\(field(Schema.Field.rttAverage))) AS \(field("avg")), "
                + "max(\(field(Schema.Field.rttMaximum))) AS \(field("max")), mean(\(field(Schema.Field.rttMedian))) AS \(field("median")) \(from(extra))"
        }
        func loss(_ extra: [String]) -> String { "SELECT mean(\(field(Schema.Field.lossPercent))) AS \(field("loss")) \(from(extra))" }
        var queries: [JSONValue] = []
        var lossRefIDs: [String] = []
        if target.splitsByClass {
            for tos in target.classes {
                queries.append(queryTarget(refID: refID(queries.count), query: rtt([classCondition(tos)]), alias: "$col (tos \(className(tos)))"))
            }
            for tos in target.classes {
                lossRefIDs.append(refID(queries.count))
                queries.append(queryTarget(refID: refID(queries.count), query: loss([classCondition(tos)]), alias: "loss % (tos \(className(tos)))"))
            }
        } else {
            queries = [queryTarget(refID: "A", query: rtt([]), alias: "$col"), queryTarget(refID: "B", query: loss([]), alias: "loss %")]
            lossRefIDs = ["B"]
        }
        let what = measurement == "tcp" ? "handshake (SYN to SYN-ACK)" : "ICMP echo round trip"
        let perClass = target.splitsByClass ? " One series per TOS class (\(target.classes.map(className).joined(separator: ", ")))." : ""
        return [
            "type": "timeseries", "title": .string(target.title), "id": .int(id), "gridPos": grid, "datasource": datasource,
            "description": .string("\(what) time per interval: min, avg, max and median (left axis, ms); loss percent (right axis).\(perClass)"),
            "targets": .array(queries),
            "fieldConfig": rttFieldConfig(rttUnit: "ms", lossRefIDs: lossRefIDs, lossUnit: "percent", lossMaximum: 100),
            "options": rttPanelOptions,
        ]
    }

    /// The outcome timeline's colours and value mappings (result code -> name), for both
    /// datasources.
    static var outcomeFieldConfig: JSONValue {
        var mappingOptions: [String: JSONValue] = [:]
        for (index, outcome) in outcomes.enumerated() {
            mappingOptions[String(outcome.code)] = ["text": .string(outcome.text), "color": .string(outcome.color), "index": .int(index)]
        }
        return [
            "defaults": [
                "color": ["mode": "thresholds"],
                "thresholds": ["mode": "absolute", "steps": [["color": "text", "value": nil]]],
                "mappings": [["type": "value", "options": .object(mappingOptions)]],
                "custom": ["fillOpacity": 80, "lineWidth": 0],
            ],
            "overrides": [],
        ]
    }

    /// The outcome timeline's display options.
    static let outcomePanelOptions: JSONValue = [
        "mergeValues": true, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
        "legend": ["showLegend": true, "displayMode": "list", "placement": "bottom"],
        "tooltip": ["mode": "single", "sort": "none"],
    ]

    /// The RTT panel's axes, for both datasources: RTT lines on the left, the loss queries'
    /// bars (`lossRefIDs`) on the right.
    static func rttFieldConfig(rttUnit: String, lossRefIDs: [String], lossUnit: String, lossMaximum: Int) -> JSONValue {
        [
            "defaults": [
                "unit": .string(rttUnit), "min": 0, "color": ["mode": "palette-classic"],
                "custom": ["drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never",
                           "spanNulls": false, "axisPlacement": "left", "axisLabel": "RTT"],
            ],
            "overrides": .array(lossRefIDs.map { lossRefID in [
                "matcher": ["id": "byFrameRefID", "options": .string(lossRefID)],
                "properties": [
                    ["id": "custom.axisPlacement", "value": "right"],
                    ["id": "custom.axisLabel", "value": "loss"],
                    ["id": "unit", "value": .string(lossUnit)],
                    ["id": "min", "value": 0],
                    ["id": "max", "value": .int(lossMaximum)],
                    ["id": "custom.drawStyle", "value": "bars"],
                    ["id": "custom.fillOpacity", "value": 40],
                    ["id": "color", "value": ["mode": "fixed", "fixedColor": "red"]],
                ],
            ] }),
        ]
    }

    /// The RTT panel's legend (a table with mean and max) and tooltip.
    static let rttPanelOptions: JSONValue = [
        "legend": ["showLegend": true, "displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]],
        "tooltip": ["mode": "multi", "sort": "none"],
    ]
}

/// Panel ids from what a panel shows (FNV-1a of its description), so adding a target does
/// not renumber the others; a collision takes the next free id, deterministically.
struct PanelIDs {
    let namespace: String
    private var used: Set<Int> = []

    init(namespace: String) {
        self.namespace = namespace
    }

    mutating func next(_ parts: String...) -> Int {
        next(parts)
    }

    mutating func next(_ parts: [String]) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in ([namespace] + parts).joined(separator: "\u{1F}").utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        // Grafana keeps ids in JavaScript numbers and URLs: stay well inside 31 bits.
        var id = Int(hash % 2_000_000_000) + 1
        while used.contains(id) { id = id % 2_000_000_000 + 1 }
        used.insert(id)
        return id
    }
}
