import Diagnosis
import ProbeResults

/// The view's HTML: the overview and the target page, self-contained (inline CSS and SVG,
/// no script). Every text from the targets files goes through `Markup.escape`.
///
/// What a browser test can count:
/// - overview: `tr.target` one per series (id `s-ID`, `data-kind` icmp or tcp), inside
///   `section.group` (one per group, `h2` its name); `.verdict` one per host probed with
///   both ICMP and TCP, in its ICMP row (class `verdict-network`, `verdict-server`,
///   `verdict-neither`, `verdict-inconclusive` or `verdict-name`); `svg.sparkline` one
///   per row; `nav.pages` where there is more than one page.
/// - target page: `svg.smoke-graph` with one `g.lane` per series of the host,
///   `rect.median` one per bucket with a reply, `figcaption.source` (`data-source` memory or
///   influxdb) naming where the buckets came from, `nav.ranges`, `p.notice` where a range
///   could not be had.
enum WebPages {
    /// A graph as rendered, with where its buckets came from.
    struct RenderedGraph {
        var svg: String
        var source: HistorySource
        /// The range actually drawn ("1h" where a longer one was not available).
        var rangeName: String
        /// Why the range asked for is not the one drawn (no long-range source, or its error).
        var notice: String?
        var bucketNanoseconds: Int64
    }

    static let style = """
    body{font-family:sans-serif;margin:1em 2em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
    table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:middle}\
    td.rtt,td.loss{text-align:right;font-variant-numeric:tabular-nums}td.rtt,td.loss,td.kind,td.outcome{white-space:nowrap}.outcome-ok td.outcome{color:#1a7f37}\
    tr.target:not(.outcome-ok) td.outcome{color:#c00;font-weight:bold}.verdict{font-weight:bold;padding:0 4px}\
    .verdict-network{background:#fdd}.verdict-server{background:#fec}.verdict-neither{background:#dfd}\
    .verdict-inconclusive,.verdict-name{background:#eee}.verdict-summary{font-size:.8em;color:#555;max-width:40em}\
    .notice{background:#ffe;border:1px solid #cc9;padding:4px 8px}nav a{margin-right:.8em}nav a[aria-current]{font-weight:bold}\
    figcaption{font-size:.85em;color:#555}.labels{font-size:.85em;color:#555}
    """

    static func document(title: String, body: String, refreshSeconds: Int) -> String {
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">"
            + "<meta http-equiv=\"refresh\" content=\"\(refreshSeconds)\"><link rel=\"icon\" href=\"data:,\">"
            + "<title>\(Markup.escape(title))</title><style>\(style)</style></head><body>\(body)</body></html>"
    }

    /// A short page for errors (404, 400).
    static func message(title: String, text: String) -> String {
        document(title: title, body: "<h1>\(Markup.escape(title))</h1><p class=\"message\">\(Markup.escape(text))</p><p><a href=\"/\">Overview</a></p>",
                 refreshSeconds: 300)
    }

    /// The order of the overview and of a host's lanes: group, name, ICMP before TCP, port,
    /// class, then the id (labels), so the rows never shuffle between loads.
    static func ordered(_ series: [RecentHistory.SeriesSummary]) -> [RecentHistory.SeriesSummary] {
        series.sorted {
            ($0.key.env, $0.key.target, $0.key.kind == .icmp ? 0 : 1, Int($0.key.port ?? 0), Int($0.key.options.tos), $0.id)
                < ($1.key.env, $1.key.target, $1.key.kind == .icmp ? 0 : 1, Int($1.key.port ?? 0), Int($1.key.options.tos), $1.id)
        }
    }

    /// "ICMP", "TCP port 443", with the packet options where they are not the default.
    static func laneTitle(_ key: WebSeriesKey) -> String {
        var title = key.kind == .icmp ? "ICMP" : "TCP port \(key.port.map(String.init) ?? "?")"
        var options: [String] = []
        if key.options.tos != 0 { options.append("tos " + TrafficClass.describe(key.options.tos)) }
        if let source = key.options.source { options.append("source \(source)") }
        if let interface = key.options.interface { options.append("interface " + interface) }
        if !options.isEmpty { title += " (" + options.joined(separator: ", ") + ")" }
        return title
    }

    static func labelsText(_ labels: [String: String]) -> String {
        labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
    }

    static func verdictHTML(_ verdict: ContinuousVerdict.HostVerdict) -> String {
        let culprit = verdict.diagnosis.culprit.rawValue
        return "<span class=\"verdict verdict-\(culprit)\" title=\"\(Markup.escape(verdict.diagnosis.summary))\">\(culprit)</span>"
            + "<div class=\"verdict-summary\">\(Markup.escape(verdict.diagnosis.summary)) (last \(verdict.rounds.max() ?? 0) rounds)</div>"
    }

    static func rtt(_ milliseconds: Double?) -> String {
        guard let milliseconds else { return "-" }
        return Markup.number(milliseconds, places: milliseconds < 10 ? 2 : 1) + " ms"
    }

    // MARK: Overview

    /// Every series by group: the last round's outcome, median RTT and loss, a sparkline of
    /// the last hour, and the verdict of hosts probed with ICMP and TCP.
    static func overview(history: RecentHistory, page requestedPage: Int, pageSize: Int, now: Int64) -> String {
        let all = ordered(history.series())
        let verdicts = ContinuousVerdict.verdicts(history)
        var verdictByICMP: [WebSeriesKey: ContinuousVerdict.HostVerdict] = [:]
        for verdict in verdicts { verdictByICMP[verdict.icmp] = verdict }
        let pages = max(1, (all.count + pageSize - 1) / pageSize)
        let page = min(max(1, requestedPage), pages)
        let shown = all.dropFirst((page - 1) * pageSize).prefix(pageSize)
        let from = now - RecentHistory.windowNanoseconds

        var body = "<h1>netprobe: live view</h1>"
        let groups = Set(all.map(\.key.env)).count
        body += "<p class=\"summary\">\(all.count) series in \(groups) group\(groups == 1 ? "" : "s"); verdicts for \(verdicts.count) host\(verdicts.count == 1 ? "" : "s") probed with ICMP and TCP (from each series' last \(ContinuousVerdict.windowRounds) rounds, or 100 probes' worth where rounds are smaller). Times UTC; \(Markup.utc(now, year: true)).</p>"
        let navigation = pages > 1 ? pageNavigation(page: page, pages: pages) : ""
        body += navigation
        if all.isEmpty { body += "<p class=\"notice\">No round has finished yet.</p>" }
        var index = shown.startIndex
        var groupNumber = 0
        while index < shown.endIndex {
            let env = shown[index].key.env
            var end = index
            while end < shown.endIndex, shown[end].key.env == env { end += 1 }
            groupNumber += 1
            body += "<section class=\"group\" id=\"g-\(page)-\(groupNumber)\"><h2>\(Markup.escape(env))</h2><table class=\"targets\"><thead><tr>"
            body += "<th>Kind</th><th>Target</th><th>Labels</th><th>Last outcome</th><th>Median RTT</th><th>Loss</th><th>Last hour</th><th>Verdict</th></tr></thead><tbody>"
            for summary in shown[index..<end] {
                // The path note goes with the series traced the same way (ICMP or the port).
                let traced = history.paths.paths(env: summary.key.env, target: summary.key.target)
                    .filter { $0.port == (summary.key.kind == .tcp ? summary.key.port : nil) && $0.options == summary.key.options }
                body += row(summary, verdict: verdictByICMP[summary.key], path: traced.first,
                            buckets: history.buckets(for: summary.key, from: from, to: now + 1), from: from, to: now)
            }
            body += "</tbody></table></section>"
            index = end
        }
        body += navigation
        return document(title: "netprobe: live view", body: body, refreshSeconds: 30)
    }

    /// One line on a traced path: its ending, its length, where loss starts, its last change.
    static func pathNote(_ path: RecentPaths.Summary) -> String {
        var text = "path: \(path.ending.replacingOccurrences(of: "_", with: " ")), \(path.hops.count) hop\(path.hops.count == 1 ? "" : "s")"
        if let start = path.lossStartHop, let hop = path.hops.first(where: { $0.hop == start }) {
            text += "; loss starts at hop \(start)\(hop.address.map { " (\($0))" } ?? ""), \(Markup.number(hop.forwardedLossPercent)) % from there"
        }
        if let changed = path.changes.last { text += "; changed \(Markup.utc(changed, year: false))" }
        return "<div class=\"path-note\">\(Markup.escape(text))</div>"
    }

    static func row(_ summary: RecentHistory.SeriesSummary, verdict: ContinuousVerdict.HostVerdict?, path: RecentPaths.Summary? = nil,
                    buckets: [HistoryBucket], from: Int64, to: Int64) -> String {
        let key = summary.key
        var html = "<tr class=\"target outcome-\(summary.lastOutcome.rawValue)\" id=\"s-\(summary.id)\" data-kind=\"\(key.kind.rawValue)\">"
        html += "<td class=\"kind\">\(Markup.escape(laneTitle(key)))</td>"
        html += "<td class=\"name\"><a href=\"/target?id=\(summary.id)\">\(Markup.escape(key.target))</a></td>"
        html += "<td class=\"labels\">\(Markup.escape(labelsText(key.labels)))</td>"
        html += "<td class=\"outcome\">\(summary.lastOutcome.rawValue)</td>"
        html += "<td class=\"rtt\">\(rtt(summary.lastMedianMilliseconds))</td>"
        html += "<td class=\"loss\">\(Markup.number(summary.lastLossPercent)) %</td>"
        html += "<td class=\"spark\">\(SmokeGraph.sparkline(buckets, from: from, to: to))</td>"
        html += "<td class=\"verdict-cell\">\(verdict.map(verdictHTML) ?? "")\(path.map(pathNote) ?? "")</td></tr>"
        return html
    }

    static func pageNavigation(page: Int, pages: Int) -> String {
        var html = "<nav class=\"pages\">Page"
        for number in 1...pages {
            html += number == page ? " <a href=\"/?page=\(number)\" aria-current=\"page\">\(number)</a>" : " <a href=\"/?page=\(number)\">\(number)</a>"
        }
        return html + " of \(pages)</nav>"
    }

    // MARK: Target page

    /// The series of the host a key belongs to (same group and name), in lane order.
    static func hostSeries(of key: WebSeriesKey, history: RecentHistory) -> [RecentHistory.SeriesSummary] {
        ordered(history.series().filter { $0.key.env == key.env && $0.key.target == key.target })
    }

    /// The host's graph over a range: from memory for the hour, from the long-range source
    /// beyond it (or the hour again, with a notice, where there is none or it failed).
    static func graph(of key: WebSeriesKey, range: (name: String, nanoseconds: Int64), history: RecentHistory,
                      longRange: (any LongRangeSource)?, now: Int64) async -> RenderedGraph {
        let series = hostSeries(of: key, history: history)
        let title = key.target + " (" + key.env + ")"
        var notice: String?
        if range.nanoseconds > RecentHistory.windowNanoseconds, let longRange {
            let columns = WebView.longRangeColumns
            let step = range.nanoseconds / Int64(columns)
            let to = (now / step + 1) * step
            let from = to - range.nanoseconds
            do {
                var lanes: [SmokeGraph.Lane] = []
                for summary in series {
                    lanes.append(SmokeGraph.Lane(title: laneTitle(summary.key),
                                                 buckets: try await longRange.buckets(for: summary.key, from: from, to: to, columns: columns)))
                }
                var graph = SmokeGraph(title: title, from: from, to: to, columns: columns, lanes: lanes)
                graph.pathChanges = pathChanges(of: key, history: history)
                return RenderedGraph(svg: graph.svg(), source: .influxDB, rangeName: range.name, notice: nil, bucketNanoseconds: step)
            } catch {
                notice = "The long-range query failed (\(error)); the last hour from memory is shown instead."
            }
        } else if range.nanoseconds > RecentHistory.windowNanoseconds {
            notice = ""
        }
        // The last hour: one column per bucket of the finest series, ending with the
        // bucket that holds now (aligned to the rounds where they are not bucketed).
        let finest = series.min { $0.bucketNanoseconds < $1.bucketNanoseconds }
        let width = finest?.bucketNanoseconds ?? RecentHistory.minimumBucketNanoseconds
        let columns = Int((RecentHistory.windowNanoseconds + width - 1) / width)
        let to: Int64
        if let finest, finest.roundsPerBucket == 1 {
            let behind = max(0, now - finest.lastStartNanoseconds)
            to = finest.lastStartNanoseconds + max(1, (behind + width - 1) / width) * width
        } else {
            to = (now / width + 1) * width
        }
        let from = to - Int64(columns) * width
        let lanes = series.map { SmokeGraph.Lane(title: laneTitle($0.key), buckets: history.buckets(for: $0.key, from: from, to: to)) }
        var graph = SmokeGraph(title: title, from: from, to: to, columns: columns, lanes: lanes)
        graph.pathChanges = pathChanges(of: key, history: history)
        return RenderedGraph(svg: graph.svg(), source: .memory, rangeName: "1h", notice: notice, bucketNanoseconds: width)
    }

    /// When any traced path of the host changed.
    static func pathChanges(of key: WebSeriesKey, history: RecentHistory) -> [Int64] {
        history.paths.paths(env: key.env, target: key.target).flatMap(\.changes).sorted()
    }

    static func duration(_ nanoseconds: Int64) -> String {
        let seconds = nanoseconds / 1_000_000_000
        if seconds % 3600 == 0 { return "\(seconds / 3600) h" }
        if seconds % 60 == 0 { return "\(seconds / 60) min" }
        return "\(seconds) s"
    }

    /// A host's page: the verdict, the ranges, the graph and where it came from, the
    /// series' last rounds.
    static func target(key: WebSeriesKey, range: String, graph: RenderedGraph, history: RecentHistory, longRangeUnavailable: String) -> String {
        let id = SeriesID.of(key)
        let series = hostSeries(of: key, history: history)
        var body = "<p><a href=\"/\">Overview</a></p><h1 class=\"target-name\">\(Markup.escape(key.target))</h1>"
        body += "<p class=\"group\">Group <span class=\"env\">\(Markup.escape(key.env))</span>"
        if !key.labels.isEmpty { body += "; labels <span class=\"labels\">\(Markup.escape(labelsText(key.labels)))</span>" }
        body += "</p>"
        if let verdict = ContinuousVerdict.verdicts(history).first(where: { $0.env == key.env && $0.target == key.target }) {
            body += "<p class=\"host-verdict\">Verdict: \(verdictHTML(verdict))</p>"
        }
        body += "<nav class=\"ranges\">"
        for (name, _) in WebView.ranges {
            let current = name == range ? " aria-current=\"page\"" : ""
            body += "<a href=\"/target?id=\(id)&amp;range=\(name)\"\(current)>\(name)</a>"
        }
        body += "</nav>"
        if let notice = graph.notice {
            body += "<p class=\"notice\">\(Markup.escape(notice.isEmpty ? longRangeUnavailable : notice))</p>"
        }
        let source: String
        switch graph.source {
        case .memory:
            source = "Source: this process' memory (the last hour since netprobe run started), buckets of \(duration(graph.bucketNanoseconds))."
        case .influxDB:
            source = "Source: InfluxDB (the first configured 1.x server), \(WebView.longRangeColumns) buckets of \(duration(graph.bucketNanoseconds))."
        }
        body += "<figure class=\"graph\" data-range=\"\(graph.rangeName)\">\(graph.svg)<figcaption class=\"source\" data-source=\"\(graph.source.rawValue)\">\(source)</figcaption></figure>"
        body += "<h2>Last rounds</h2><table class=\"series\"><thead><tr><th>Series</th><th>Last round (UTC)</th><th>Outcome</th><th>Median RTT</th><th>Loss</th><th>Rounds</th></tr></thead><tbody>"
        for summary in series {
            body += "<tr class=\"series-row\" id=\"r-\(summary.id)\"><td><a href=\"/target?id=\(summary.id)&amp;range=\(range)\">\(Markup.escape(laneTitle(summary.key)))</a></td>"
            body += "<td>\(Markup.utc(summary.lastStartNanoseconds, year: true))</td><td class=\"outcome\">\(summary.lastOutcome.rawValue)</td>"
            body += "<td class=\"rtt\">\(rtt(summary.lastMedianMilliseconds))</td><td class=\"loss\">\(Markup.number(summary.lastLossPercent)) %</td><td>\(summary.rounds)</td></tr>"
        }
        body += "</tbody></table>"
        for path in history.paths.paths(env: key.env, target: key.target) {
            body += hopTable(path)
        }
        return document(title: key.target + ": netprobe", body: body, refreshSeconds: 60)
    }

    /// The last trace of one traced series: a row per hop, the path's changes.
    static func hopTable(_ path: RecentPaths.Summary) -> String {
        var title = "Path (\(path.protocolName)"
        if let tos = Schema.tosTagValue(path.options.tos) { title += ", tos \(tos)" }
        title += "), traced \(Markup.utc(path.startNanoseconds, year: true))"
        var body = "<h2>\(Markup.escape(title))</h2>\(pathNote(path))"
        body += "<table class=\"hops\"><thead><tr><th>Hop</th><th>Address</th><th>Loss</th><th>Forwarded loss</th><th>Median RTT</th><th></th></tr></thead><tbody>"
        for hop in path.hops {
            let marks = [hop.hop == path.lossStartHop ? "loss starts here" : nil, hop.rateLimited ? "rate-limits its answers (not loss)" : nil].compactMap { $0 }
            body += "<tr class=\"hop\"\(hop.hop == path.lossStartHop ? " data-loss-start=\"true\"" : "")><td>\(hop.hop)</td><td>\(Markup.escape(hop.address ?? "???"))</td>"
            body += "<td class=\"loss\">\(Markup.number(hop.lossPercent)) %</td><td class=\"loss\">\(Markup.number(hop.forwardedLossPercent)) %</td>"
            body += "<td class=\"rtt\">\(rtt(hop.medianMilliseconds))</td><td>\(Markup.escape(marks.joined(separator: "; ")))</td></tr>"
        }
        body += "</tbody></table>"
        body += "<p class=\"path-changes\">First traced \(Markup.utc(path.firstTracedNanoseconds, year: true)) UTC; "
        body += path.changes.isEmpty ? "the path has not changed since.</p>"
            : "path changes since (UTC): \(path.changes.map { Markup.utc($0, year: true) }.joined(separator: ", ")).</p>"
        return body
    }
}
