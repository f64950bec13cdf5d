#!/usr/bin/env bash
# What the live view (`web:`, issue 29, acceptance 4) costs `netprobe run`: loopback
# targets probed once a second each (ICMP, one probe a round) into a real influxd, as
# daemon.sh does, with and without the view.
#
#   sudo Tests/Benchmarks/live-view.sh [--memory-seconds 30] [--cpu-seconds 60] [--runs 3]
#                                      [--requests 10] [--targets "1000 10000"]
#
# 1. Memory: 1,000 and 10,000 targets, each in three configurations that differ only in
#    their last section: none (no HTTP server), `prometheus:` (the HTTP server and its
#    per-target metrics, no view) and `web:` (the server, the metrics and the view's
#    memory of the last hour). Peak RSS (VmHWM) after --memory-seconds from the start,
#    before any request; for `web:` again after every overview page and one target page
#    have been fetched once. The view's own figure (RecentHistory.memoryUsedBytes) is not
#    exposed outside the process, so it is not reported here.
# 2. Render time: 1,000 targets with `web:`, and 30 days of history of 127.1.0.1's ICMP
#    series written to influxd beforehand (a point per 10 min, 4,320 points, as `run`
#    writes them). Once every series has had a round: --requests rounds of GET /?page=1,
#    /?page=2 (500 series a page), /target?id=ID (the hour, from memory) and
#    /target?id=ID&range=30d (InfluxDB), interleaved, timed by curl (%{time_total}):
#    min / median / max per page.
# 3. CPU: 1,000 targets with `web:`, --cpu-seconds with no client, then --cpu-seconds with
#    a real browser (Debian's headless Chromium, one session driven over WebDriver by
#    chromedriver) loading the overview and the first target's page (its hour) every 10 s;
#    a fresh `run` per window after a warm-up, the two kinds interleaved over --runs
#    rounds; CPU of all of run's threads from /proc/PID/stat; min / median / max and the
#    ratio of the medians. The browser is started once and sits on about:blank outside
#    the windows with the refresher, so it loads the machine alike in both kinds.
#
# The CPU model, core count and load average are printed with the tables. Nothing here is
# a test: no figure is asserted. Takes about 11 minutes with the defaults (after the build).
#
# Safety: every probe goes to 127.0.0.0/8 (the kernel answers); the browser reaches
# loopback only (as Tests/TestSupport/HeadlessChromium.swift: Chromium's own traffic off,
# every other host sent to a proxy on 127.0.0.1:9 that is not there, a resolver that knows
# only localhost); nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

sizes="1000 10000"
memory_seconds=30
cpu_seconds=60
runs=3
requests=10
cpu_targets=1000
warmup=5
refresh_every=10
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) sizes="$2"; shift 2 ;;
    --memory-seconds) memory_seconds="$2"; shift 2 ;;
    --cpu-seconds) cpu_seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    *) echo "usage: $0 [--targets \"1000 10000\"] [--memory-seconds 30] [--cpu-seconds 60] [--runs 3] [--requests 10]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "live-view benchmark: run as root (raw ICMP sockets)" >&2; exit 4; }

name="live-view benchmark"
. "$root/Tests/Benchmarks/common.sh"
bench_start influxd:influxdb curl:curl python3:python3 chromium:chromium chromedriver:chromium-driver
start_influxd
started=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, kernel $(uname -r)"
echo "live-view benchmark: $machine; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE memory" >/dev/null
influx_query() { curl -sf -G "http://127.0.0.1:$port/query" --data-urlencode "db=$1" --data-urlencode "q=$2"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"; }
mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

addresses() { python3 -c "
for i in range($1): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))"; }
for n in $(echo "$sizes $cpu_targets" | tr ' ' '\n' | sort -un); do
  { echo "bench:"; addresses "$n" | sed 's/^/  - /'; } >"$work/ping-$n.yaml"
done

# config NAME TARGETS MODE DATABASE [PORT]: MODE none, prometheus (the server alone) or web.
config() {
  local file=$1 n=$2 mode=$3 database=$4 listen=${5:-}
  cat >"$work/$file.yaml" <<CONF
probe: $file
targets: {ping: ping-$n.yaml, tcp: null}
icmp: {interval: 1s, count: 1, spacing: 1s, timeout: 500ms}
spool: {directory: spool-$file, max_size: 256MB}
influxdb:
  - url: http://127.0.0.1:$port
    database: $database
CONF
  case "$mode" in
    prometheus) echo "prometheus: {listen: \"127.0.0.1:$listen\"}" >>"$work/$file.yaml" ;;
    web) echo "web: {listen: \"127.0.0.1:$listen\"}" >>"$work/$file.yaml" ;;
  esac
  "$netprobe" validate --config "$work/$file.yaml" >/dev/null
}

# Waits (polling, at most 120 s) until the overview on PORT counts N series.
wait_for_series() {
  local listen=$1 n=$2 page
  for _ in $(seq 600); do
    page=$(curl -sf "http://127.0.0.1:$listen/" 2>/dev/null || true)
    case "$page" in *"<p class=\"summary\">$n series in"*) return 0 ;; esac
    sleep 0.2
  done
  echo "live-view benchmark: the overview on port $listen never listed $n series" >&2
  return 1
}

# The first series' id on the overview (127.1.0.1's ICMP series: the rows are sorted by name).
first_id() {
  curl -sf "http://127.0.0.1:$1/" | python3 -c '
import re, sys
print(re.search(r"<tr class=\"target[^>]*>.*?<td class=\"name\"><a href=\"/target\?id=([0-9a-f]+)\">", sys.stdin.read()).group(1))'
}

stop_run() { kill -TERM "$1"; wait "$1" || true; }

# ---------------------------------------------------------------------------------------
# 1. Memory
memory="$work/memory"
: >"$memory"
for n in $sizes; do
  for mode in none prometheus web; do
    listen=$(free_port)
    file="memory-$mode-$n"
    config "$file" "$n" "$mode" memory "$listen"
    echo "live-view benchmark: memory, $n targets, $mode: ${memory_seconds} s"
    "$netprobe" run --config "$work/$file.yaml" >"$work/$file.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    sleep "$memory_seconds"
    hwm=$(status_kb "$pid" VmHWM)
    rss=$(status_kb "$pid" VmRSS)
    after="-"
    if [ "$mode" = web ]; then
      wait_for_series "$listen" "$n"
      pages=$(( (n + 499) / 500 ))
      for page in $(seq "$pages"); do curl -sf -o /dev/null "http://127.0.0.1:$listen/?page=$page"; done
      curl -sf -o /dev/null "http://127.0.0.1:$listen/target?id=$(first_id "$listen")"
      after=$(mb "$(status_kb "$pid" VmHWM)")
    fi
    stop_run "$pid"
    sleep 1
    points=$(influx_query memory "SELECT count(sent) FROM icmp WHERE probe = '$file'" \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)')
    echo "$n $mode $(mb "$hwm") $(mb "$rss") $after $points" | tee -a "$memory"
  done
done
# The memory runs' points are not needed again: keep influxd's compactions out of the rest.
curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=DROP DATABASE memory" >/dev/null

# ---------------------------------------------------------------------------------------
# 2. Render time, with 30 days of history for 127.1.0.1 in InfluxDB
echo "live-view benchmark: render time, $cpu_targets targets, 30 days of history for 127.1.0.1"
python3 - "$work/history.txt" <<'PY'
import sys, time
# 30 days, a round every 10 min, as run writes an ICMP round of 5 probes: every 7th round
# loses 2, every 13th all (then there are no RTT fields).
end = int(time.time()) // 600 * 600
lines = []
for index in range(30 * 24 * 6):
    second = end - (30 * 24 * 6 - index) * 600
    received = 0 if index % 13 == 0 else (3 if index % 7 == 0 else 5)
    fields = f"sent=5i,received={received}i,loss_percent={(5 - received) * 20.0}"
    if received:
        fields += f",rtt_min_ms=0.02,rtt_median_ms={0.03 + (index % 5) * 0.01:.2f},rtt_max_ms=0.09"
    lines.append(f"icmp,probe=render,env=bench,target=127.1.0.1,address=127.1.0.1,family=ipv4 {fields} {second}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
curl -sf -XPOST "http://127.0.0.1:$port/write?db=netprobe&precision=s" --data-binary "@$work/history.txt"
history_points=$(wc -l <"$work/history.txt")
listen=$(free_port)
config render "$cpu_targets" web netprobe "$listen"
"$netprobe" run --config "$work/render.yaml" >"$work/render.log" 2>&1 &
pid=$!
pids+=("$pid")
wait_for_series "$listen" "$cpu_targets"
id=$(first_id "$listen")
sleep "$warmup"
pages=$(( (cpu_targets + 499) / 500 ))
render="$work/render"
: >"$render"
for _ in $(seq "$requests"); do
  for page in $(seq "$pages"); do
    echo "overview-page-$page $(curl -sf -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$listen/?page=$page")" >>"$render"
  done
  echo "target-1h $(curl -sf -o /dev/null -w '%{time_total} %{size_download}' "http://127.0.0.1:$listen/target?id=$id")" >>"$render"
  echo "target-30d $(curl -sf -o "$work/target-30d.html" -w '%{time_total} %{size_download}' "http://127.0.0.1:$listen/target?id=$id&range=30d")" >>"$render"
done
# The 30-day page really drew InfluxDB's buckets: its source and its median marks.
source=$(grep -o 'data-source="[a-z]*"' "$work/target-30d.html" | head -1)
marks=$(grep -o 'class="median"' "$work/target-30d.html" | wc -l)
echo "live-view benchmark: the 30-day page of 127.1.0.1: $source, $marks median marks ($history_points points written, 720 columns of 1 h)"
stop_run "$pid"

# ---------------------------------------------------------------------------------------
# 3. CPU with and without a browser refreshing every 10 s
cat >"$work/webdriver.py" <<'PY'
# A minimal W3C WebDriver client (urllib) for chromedriver on loopback.
#   webdriver.py new DRIVER_PORT PROFILE        prints the session id
#   webdriver.py refresh DRIVER_PORT SESSION BASE_URL SECONDS EVERY
#       loads BASE_URL/ and then the first target's page every EVERY s for SECONDS,
#       prints the number of loads; leaves the browser on about:blank
#   webdriver.py quit DRIVER_PORT SESSION
import json, sys, time, urllib.request

def call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)["value"]

command, port = sys.argv[1], sys.argv[2]
if command == "new":
    arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={sys.argv[3]}", "--window-size=1280,800",
                 "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
                 "--metrics-recording-only",
                 "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
                 "--proxy-server=http://127.0.0.1:9",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
    value = call(port, "POST", "/session", {"capabilities": {"alwaysMatch": {
        "browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": arguments}}}})
    print(value["sessionId"])
elif command == "refresh":
    session, base, seconds, every = sys.argv[3], sys.argv[4].rstrip("/"), float(sys.argv[5]), float(sys.argv[6])
    assert base.startswith("http://127."), "the browser loads loopback only"
    start, loads, tick = time.monotonic(), 0, 0
    while start + tick * every < start + seconds:
        now = time.monotonic()
        if start + tick * every > now:
            time.sleep(start + tick * every - now)
        call(port, "POST", f"/session/{session}/url", {"url": base + "/"})
        href = call(port, "POST", f"/session/{session}/execute/sync",
                    {"script": "return document.querySelector('tr.target td.name a').href", "args": []})
        assert href.startswith(base + "/target?id="), href
        call(port, "POST", f"/session/{session}/url", {"url": href})
        rows = call(port, "POST", f"/session/{session}/execute/sync",
                    {"script": "return document.querySelectorAll('svg.smoke-graph g.lane').length", "args": []})
        assert rows >= 1, "the target page has no graph"
        loads += 2
        tick += 1
    call(port, "POST", f"/session/{session}/url", {"url": "about:blank"})
    print(loads)
elif command == "quit":
    call(port, "DELETE", f"/session/{sys.argv[3]}")
PY
driver_port=$(free_port)
chromedriver --port="$driver_port" --log-path="$work/chromedriver.log" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$driver_port/status" >/dev/null && break; sleep 0.1; done
session=$(python3 "$work/webdriver.py" new "$driver_port" "$work/chromium-profile")
quit_browser() { python3 "$work/webdriver.py" quit "$driver_port" "$session" >/dev/null 2>&1 || true; bench_cleanup; }
trap quit_browser EXIT
echo "live-view benchmark: headless $(chromium --version 2>/dev/null | head -1) started (session $session)"

cpu="$work/cpu"
: >"$cpu"
for run in $(seq "$runs"); do
  for kind in quiet browser; do
    listen=$(free_port)
    config "cpu-$kind" "$cpu_targets" web netprobe "$listen"
    "$netprobe" run --config "$work/cpu-$kind.yaml" >"$work/cpu-$kind-$run.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_for_series "$listen" "$cpu_targets"
    sleep "$warmup"
    loads=0
    before=$(cpu_ticks "$pid")
    start_ns=$(date +%s%N)
    if [ "$kind" = browser ]; then
      loads=$(python3 "$work/webdriver.py" refresh "$driver_port" "$session" "http://127.0.0.1:$listen" "$cpu_seconds" "$refresh_every")
      # Whatever is left of the window, without a load.
      left=$(python3 -c "print(max(0, $cpu_seconds - ($(date +%s%N) - $start_ns) / 1e9))")
      sleep "$left"
    else
      sleep "$cpu_seconds"
    fi
    after=$(cpu_ticks "$pid")
    end_ns=$(date +%s%N)
    stop_run "$pid"
    python3 -c "print(f'$run $kind {($after - $before) / $ticks / (($end_ns - $start_ns) / 1e9) * 100:.2f} $loads')" | tee -a "$cpu"
  done
done

# ---------------------------------------------------------------------------------------
python3 - "$memory" "$render" "$cpu" "$cpu_seconds" "$refresh_every" "$cpu_targets" "$memory_seconds" <<'PY'
import statistics, sys
memory, render, cpu = ([line.split() for line in open(path)] for path in sys.argv[1:4])
cpu_seconds, every, targets, memory_seconds = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
label = {"none": "no HTTP server", "prometheus": "`prometheus:` (server, no view)", "web": "`web:` (server and view)"}
print()
print(f"Memory: peak RSS (VmHWM) after {memory_seconds} s, no request yet; `web:` also after every overview page and a target page once")
print()
print("| targets | last section | peak RSS MB | over none MB | over `prometheus:` MB | peak after the pages MB | points written (whole run) |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for n in sorted({int(r[0]) for r in memory}):
    rows = {r[1]: r for r in memory if int(r[0]) == n}
    for mode in ["none", "prometheus", "web"]:
        r = rows[mode]
        over = lambda base: f"{float(r[2]) - float(rows[base][2]):+.1f}" if mode != base else "-"
        print(f"| {n} | {label[mode]} | {r[2]} | {over('none')} | {over('prometheus') if mode == 'web' else '-'} | {r[4]} | {r[5]} |")
print()
print("Render time: curl's time_total in ms (min / median / max), page size")
print()
print("| page | requests | ms (min / median / max) | bytes |")
print("| --- | ---: | ---: | ---: |")
times = {page: [float(r[1]) * 1000 for r in render if r[0] == page] for page in dict.fromkeys(r[0] for r in render)}
sizes = {page: max(int(float(r[2])) for r in render if r[0] == page) for page in times}
overview = [page for page in times if page.startswith("overview-page-")]
# Every page of the overview, request by request: what reading all of it takes.
times["overview, all pages"] = [sum(values) for values in zip(*(times[page] for page in overview))]
sizes["overview, all pages"] = sum(sizes[page] for page in overview)
for page in overview + ["overview, all pages", "target-1h", "target-30d"]:
    values = times[page]
    print(f"| {page} | {len(values)} | {min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} | {sizes[page]} |")
print()
print(f"CPU: {targets} targets with `web:`, % of a core over {cpu_seconds:.0f} s per run")
print()
print("| client | runs | CPU % (min / median / max) | page loads per run |")
print("| --- | ---: | ---: | --- |")
median = {}
for kind, text in [("quiet", "none"), ("browser", f"headless Chromium: overview + a target page every {every:.0f} s")]:
    values = [float(r[2]) for r in cpu if r[1] == kind]
    median[kind] = statistics.median(values)
    print(f"| {text} | {len(values)} | {min(values):.2f} / {median[kind]:.2f} / {max(values):.2f} | {', '.join(r[3] for r in cpu if r[1] == kind)} |")
extra = (median["browser"] - median["quiet"]) / 100 * cpu_seconds
ticks = cpu_seconds / every
print()
print(f"ratio of the medians, browser / none: {median['browser'] / median['quiet']:.2f}x; "
      f"difference {median['browser'] - median['quiet']:+.2f} % of a core, {extra / ticks:.3f} s of CPU per refresh (overview + target page)")
PY
echo "live-view benchmark: started $started; $machine; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
