#!/usr/bin/env bash
# The daemon's cost: `netprobe run` probing loopback targets once a second each and
# writing every round to a real influxd, side by side in one run with `fping -l` (and
# prometheus-smokeping-prober where installed) over the same targets at the same rate.
#
#   sudo Tests/Benchmarks/daemon.sh [--targets "1000 10000"] [--seconds 15] [--profile]
#
# --profile records netprobe's measured window with perf and prints where its CPU goes.
#
# CPU is read from /proc/PID/stat over the measured window (after a 3 s warm-up), peak
# RSS from VmHWM; the points that reached InfluxDB in the window are counted.
#
# Safety: every probe goes to 127.0.0.0/8 (the kernel answers); nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

sizes="1000 10000"
seconds=15
warmup=3
profile=false
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=true; shift ;;
    --targets) sizes="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: $0 [--targets \"1000 10000\"] [--seconds N]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "daemon benchmark: run as root (raw sockets for every tool)" >&2; exit 4; }

name="daemon benchmark"
. "$root/Tests/Benchmarks/common.sh"
bench_start fping:fping influxd:influxdb curl:curl python3:python3 prometheus-smokeping-prober:prometheus-smokeping-prober
smokeping=$(command -v prometheus-smokeping-prober || command -v smokeping_prober || true)
start_influxd
influx_query() { curl -sf -G "http://127.0.0.1:$port/query" --data-urlencode "db=netprobe" --data-urlencode "q=$1"; }

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# Measures PID over the window: "cpu_percent peak_mb".
measure() {
  local pid=$1
  sleep "$warmup"
  local before; before=$(cpu_ticks "$pid")
  sleep "$seconds"
  local after; after=$(cpu_ticks "$pid")
  python3 -c "print(f'{($after - $before) / $ticks / $seconds * 100:.1f} {$(peak_kb "$pid") / 1024:.1f}')"
}

results="$work/results"
: >"$results"
for n in $sizes; do
  python3 -c "
for i in range($n): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))" >"$work/targets-$n"
  { echo "bench:"; sed 's/^/  - /' "$work/targets-$n"; } >"$work/ping-$n.yaml"
  cat >"$work/netprobe-$n.yaml" <<EOF
probe: bench
targets: {ping: ping-$n.yaml, tcp: null}
icmp: {interval: 1s, count: 1, spacing: 1s, timeout: 500ms}
spool: {directory: spool-$n, max_size: 256MB}
influxdb:
  - url: http://127.0.0.1:$port
    database: netprobe
EOF

  echo "daemon benchmark: $n targets: netprobe run"
  start_ns=$(date +%s%N)
  "$netprobe" run --config "$work/netprobe-$n.yaml" >"$work/netprobe-$n.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if $profile; then
    (sleep "$warmup"; perf record -q -g -o "$work/perf-$n.data" -p "$pid" -- sleep "$seconds" >/dev/null 2>&1) &
  fi
  read -r cpu rss < <(measure "$pid")
  window_end=$(date +%s%N)
  if $profile; then
    wait %% 2>/dev/null || sleep 1
    echo "daemon benchmark: where netprobe run's CPU goes at $n targets (perf, self time by symbol):"
    perf report -q -i "$work/perf-$n.data" --no-children --sort sym -g none >"$work/perf-$n.txt" 2>/dev/null || true
    grep -v '^$' "$work/perf-$n.txt" | head -30 | cut -c1-160 || true
  fi
  kill -TERM "$pid"; wait "$pid" || true
  # Rounds that started in the measured window, as InfluxDB has them.
  sleep 1
  window_start=$((start_ns + warmup * 1000000000))
  points=$(influx_query "SELECT count(sent) FROM icmp WHERE probe = 'bench' AND time >= ${window_start} AND time < ${window_end}" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)')
  # Every target once a second over the window, as it really lasted.
  expected=$(( n * (window_end - window_start) / 1000000000 ))
  echo "netprobe-run $n $cpu $rss $points $expected" >>"$results"
  influx_query "DROP SERIES FROM icmp" >/dev/null || true

  echo "daemon benchmark: $n targets: fping -l"
  interval_ms=$(python3 -c "print(max(0.1, 1000 / $n))")
  fping -l -q -p 1000 -i "$interval_ms" -t 500 -f "$work/targets-$n" >/dev/null 2>&1 &
  pid=$!
  pids+=("$pid")
  read -r cpu rss < <(measure "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "fping-l $n $cpu $rss - -" >>"$results"

  if [ -n "$smokeping" ] && [ "$n" -le 1000 ]; then
    echo "daemon benchmark: $n targets: prometheus-smokeping-prober"
    sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2046 # one argument per target, on purpose
    "$smokeping" --privileged --ping.interval=1s --web.listen-address="127.0.0.1:$sport" $(cat "$work/targets-$n") >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    read -r cpu rss < <(measure "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "smokeping-prober $n $cpu $rss - -" >>"$results"
  fi
done

python3 - "$results" "$seconds" <<'EOF'
import sys
rows = [line.split() for line in open(sys.argv[1])]
seconds = int(sys.argv[2])
print()
print("| targets | program | CPU (% of a core) | peak RSS MB | points in InfluxDB | CPU vs fping -l |")
print("| ---: | --- | ---: | ---: | ---: | ---: |")
for n in sorted({int(r[1]) for r in rows}):
    fping = next((float(r[2]) for r in rows if r[0] == "fping-l" and int(r[1]) == n), None)
    for name, count, cpu, rss, points, expected in (r for r in rows if int(r[1]) == n):
        ratio = f"{float(cpu) / fping:.2f}x" if fping else "-"
        shown = f"{points} of {expected}" if points != "-" else "-"
        print(f"| {n} | {name} | {cpu} | {rss} | {shown} | {ratio} |")
EOF

# One-off rounds: `netprobe ping -c1` over 5,000 and 10,000 loopback targets, from a file
# and (5,000) as arguments, against fping -C1 -q at its fastest loss-free interval
# (-i 0.1 ms here); CPU (user+sys) and peak RSS from /usr/bin/time, median of 3 runs each.
oneshot="$work/oneshot"
: >"$oneshot"
head -5000 "$work/targets-10000" >"$work/targets-5000" 2>/dev/null || python3 -c "
for i in range(5000): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))" >"$work/targets-5000"
[ -s "$work/targets-10000" ] || python3 -c "
for i in range(10000): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))" >"$work/targets-10000"
timed() {  # timed NAME TARGETS COMMAND...: appends "NAME TARGETS cpu_s rss_mb lost"
  local name=$1 count=$2; shift 2
  /usr/bin/time -o "$work/oneshot.time" -f "TIME %U %S %M" "$@" >"$work/oneshot.out" 2>&1 || true
  cat "$work/oneshot.time" >>"$work/oneshot.out"
  python3 - "$name" "$count" "$work/oneshot.out" >>"$oneshot" <<'PY'
import sys, re
name, count, out = sys.argv[1], int(sys.argv[2]), open(sys.argv[3]).read()
user, system, rss = re.search(r"TIME (\S+) (\S+) (\d+)", out).groups()
# fping -C prints "host : rtt" with "-" for a lost probe; netprobe -q prints a summary line.
# netprobe -q prints "host : sent N, received M, ..." per target.
pairs = re.findall(r"sent (\d+), received (\d+)", out)
if pairs:
    lost = sum(int(sent) - int(received) for sent, received in pairs)
else:
    lost = sum(line.split(":", 1)[1].split().count("-") for line in out.splitlines() if " : " in line)
print(name, count, float(user) + float(system), int(rss) / 1024, lost)
PY
}
echo "daemon benchmark: one-off rounds (ping -c1 against fping -C1), 3 runs each"
for _ in 1 2 3; do
  for n in 5000 10000; do
    timed "netprobe-ping-file" "$n" "$netprobe" ping -c 1 -i 1 --rate 10000 -q -f "$work/targets-$n"
    timed "fping-C1" "$n" fping -C1 -q -i 0.1 -f "$work/targets-$n"
  done
  # shellcheck disable=SC2046 # one argument per target, on purpose
  timed "netprobe-ping-args" 5000 "$netprobe" ping -c 1 -i 1 --rate 10000 -q $(cat "$work/targets-5000")
done
python3 - "$oneshot" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, count, cpu, rss, lost = line.split()
    runs[(int(count), name)].append((float(cpu), float(rss), int(lost)))
print()
print("| targets | program | CPU s (median of 3) | peak RSS MB | lost (all runs) | CPU vs fping -C1 |")
print("| ---: | --- | ---: | ---: | ---: | ---: |")
for (count, name), values in sorted(runs.items()):
    cpu = statistics.median(v[0] for v in values)
    fping = runs.get((count, "fping-C1"))
    ratio = f"{cpu / statistics.median(v[0] for v in fping):.2f}x" if fping else "-"
    print(f"| {count} | {name} | {cpu:.2f} | {max(v[1] for v in values):.1f} | {sum(v[2] for v in values)} | {ratio} |")
PY
