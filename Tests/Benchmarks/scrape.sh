#!/usr/bin/env bash
# What a Prometheus scrape of /metrics costs `netprobe run`: 10,000 loopback targets
# probed once a second into a real influxd, scraped every 15 s and every 2 s, side by side
# in one run with the same run unscraped and with prometheus-smokeping-prober on the same
# targets (scraped the same way).
#
#   sudo Tests/Benchmarks/scrape.sh [--targets 10000] [--seconds 300] [--every "15 2"] [--runs 1]
#                                   [--baseline PATH]   # another netprobe binary, same runs
#                                   [--without-smokeping]
#
# Per program and scrape interval: peak RSS (VmHWM) against the same program unscraped,
# CPU per scrape (the CPU of every thread, /proc/PID/task/*/schedstat, over each scrape,
# less the unscraped run's CPU rate over the scrape's wall time) as min/median/max over the
# scrapes, and bytes per scrape. The CPU model is printed first.
#
# Safety: every probe goes to 127.0.0.0/8 (the kernel answers); nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

targets=10000
seconds=300
every="15 2"
runs=1
baseline=""
with_smokeping=true
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --every) every="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    --without-smokeping) with_smokeping=false; shift ;;
    *) echo "usage: $0 [--targets N] [--seconds S] [--every \"15 2\"] [--runs R] [--baseline PATH] [--without-smokeping]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "scrape benchmark: run as root (raw sockets)" >&2; exit 4; }

name="scrape benchmark"
. "$root/Tests/Benchmarks/common.sh"
bench_start influxd:influxdb curl:curl python3:python3 prometheus-smokeping-prober:prometheus-smokeping-prober
smokeping=$(command -v prometheus-smokeping-prober || command -v smokeping_prober || true)
$with_smokeping || smokeping=""
start_influxd
echo "scrape benchmark: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"

python3 -c "
for i in range($targets): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))" >"$work/targets"
{ echo "bench:"; sed 's/^/  - /' "$work/targets"; } >"$work/ping.yaml"
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/netprobe.yaml" <<EOF
probe: bench
targets: {ping: ping.yaml, tcp: null}
icmp: {interval: 1s, count: 1, spacing: 1s, timeout: 500ms}
spool: {directory: spool, max_size: 256MB}
influxdb:
  - url: http://127.0.0.1:$port
    database: netprobe
prometheus:
  listen: 127.0.0.1:$mport
EOF

# One measured run: PROGRAM LABEL SCRAPE_EVERY (0: unscraped) appends its figures.
results="$work/results"
: >"$results"
measure() {
  local label=$1 interval=$2 url=$3 pid=$4
  python3 - "$label" "$interval" "$url" "$pid" "$seconds" "$results" <<'PY'
import glob, os, statistics, sys, time, urllib.request
label, interval, url, pid, seconds, results = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]

def cpu_ns():
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(open(path).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total

def peak_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

def scrape():
    with urllib.request.urlopen(url, timeout=60) as answer:
        return len(answer.read())

# Up and warm: the endpoint answers (smokeping_prober takes long to start many targets),
# then every target has had rounds before measuring.
started = time.monotonic()
while True:
    try:
        scrape()
        break
    except OSError:
        if not os.path.exists(f"/proc/{pid}") or time.monotonic() - started > 300:
            with open(results, "a") as out:
                out.write(f"{label} {interval:g} nan 0 0 never-answered\n")
            print(f"scrape benchmark: {label} never answered /metrics", file=sys.stderr)
            sys.exit(0)
        time.sleep(1)
time.sleep(10)
start_wall, start_cpu = time.monotonic(), cpu_ns()
scrapes = []  # (cpu_ns, wall_s, bytes)
failed = 0
next_scrape = time.monotonic()
while time.monotonic() - start_wall < seconds:
    if interval > 0 and time.monotonic() >= next_scrape:
        before_wall, before_cpu = time.monotonic(), cpu_ns()
        try:
            size = scrape()
            scrapes.append((cpu_ns() - before_cpu, time.monotonic() - before_wall, size))
        except OSError:
            failed += 1
        next_scrape += interval
    time.sleep(0.05)
wall = time.monotonic() - start_wall
cpu = cpu_ns() - start_cpu
line = (f"{label} {interval:g} {cpu / 1e9 / wall:.4f} {peak_mb():.1f} {failed} "
        + (",".join(f"{c}:{w:.4f}:{b}" for c, w, b in scrapes) or "-"))
with open(results, "a") as out:
    out.write(line + "\n")
print(f"scrape benchmark: {label} every {interval:g}s: CPU {cpu / 1e9 / wall * 100:.1f} % of a core, peak {peak_mb():.1f} MB, {len(scrapes)} scrapes, {failed} failed")
PY
}

run_netprobe() {  # BINARY LABEL INTERVAL
  "$1" run --config "$work/netprobe.yaml" >"$work/netprobe.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  measure "$2" "$3" "http://127.0.0.1:$mport/metrics" "$pid"
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$work/spool"
  curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=DROP SERIES FROM icmp" >/dev/null || true
}

run_smokeping() {  # INTERVAL
  local sport
  sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # shellcheck disable=SC2046 # one argument per target, on purpose
  "$smokeping" --privileged --ping.interval=1s --web.listen-address="127.0.0.1:$sport" $(cat "$work/targets") >"$work/smokeping.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  measure smokeping-prober "$1" "http://127.0.0.1:$sport/metrics" "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for _ in $(seq "$runs"); do
  for interval in 0 $every; do
    echo "scrape benchmark: netprobe run, $targets targets, scraped every ${interval}s (0: never), ${seconds}s"
    run_netprobe "$netprobe" netprobe "$interval"
    if [ -n "$baseline" ]; then
      echo "scrape benchmark: baseline $baseline, scraped every ${interval}s"
      run_netprobe "$baseline" baseline "$interval"
    fi
    # (Once it has not come up at all, it is not started again at this size.)
    if [ -n "$smokeping" ] && ! grep -q '^smokeping-prober .* never-answered$' "$results"; then
      echo "scrape benchmark: prometheus-smokeping-prober, scraped every ${interval}s"
      run_smokeping "$interval"
    fi
  done
done

python3 - "$results" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
never = set()
for line in open(sys.argv[1]):
    parts = line.split()
    label, interval = parts[0], float(parts[1])
    if parts[5] == "never-answered":
        never.add((label, interval))
        continue
    rate, peak, failed = float(parts[2]), float(parts[3]), int(parts[4])
    scrapes = [tuple(float(x) for x in s.split(":")) for s in parts[5].split(",")] if parts[5] != "-" else []
    rows[(label, interval)].append((rate, peak, scrapes, failed))
print()
print("| program | scraped every | CPU (% of a core) | peak RSS MB | peak over unscraped MB | CPU per scrape s (min / median / max) | bytes per scrape | scrapes (failed) |")
print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
for label, interval in sorted(never):
    print(f"| {label} | {f'{interval:g} s' if interval else 'never'} | - | - | - | never answered /metrics within 300 s | - | - |")
for (label, interval), measured in sorted(rows.items(), key=lambda item: (item[0][0], -item[0][1] if item[0][1] else -1e9)):
    unscraped = rows.get((label, 0.0))
    base_rate = statistics.median(m[0] for m in unscraped) if unscraped else 0.0
    base_peak = statistics.median(m[1] for m in unscraped) if unscraped else 0.0
    peak = statistics.median(m[1] for m in measured)
    rate = statistics.median(m[0] for m in measured)
    per_scrape = [max(0.0, c / 1e9 - base_rate * w) for m in measured for c, w, b in m[2]]
    sizes = [b for m in measured for c, w, b in m[2]]
    failed = sum(m[3] for m in measured)
    cpu = f"{min(per_scrape):.3f} / {statistics.median(per_scrape):.3f} / {max(per_scrape):.3f}" if per_scrape else "-"
    size = f"{statistics.median(sizes) / 1e6:.1f} MB" if sizes else "-"
    every = f"{interval:g} s" if interval else "never"
    over = f"{peak - base_peak:+.1f}" if interval and unscraped else "-"
    print(f"| {label} | {every} | {rate * 100:.1f} | {peak:.1f} | {over} | {cpu} | {size} | {len(per_scrape)} ({failed}) |")
PY
