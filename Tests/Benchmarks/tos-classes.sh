#!/usr/bin/env bash
# What a second TOS class costs `run` per probe (issue 28, acceptance 5): the daemon
# benchmark's harness (daemon.sh: loopback targets once a second each into a real influxd,
# CPU from /proc/PID/stat over a window after a warm-up, the window's points counted in
# InfluxDB) over three configurations, interleaved run after run so drift hits all three:
#
#   one class   N targets, class 0 (today's single class)
#   two classes the same N targets at `tos: [0, ef]`: 2N probes a second, every one with
#               an IP_TOS control message beside today's
#   2N targets  2N distinct targets, class 0: as many probes as two classes, without options
#
#   sudo Tests/Benchmarks/tos-classes.sh [--targets 1000] [--seconds 15] [--runs 3]
#
# Prints CPU per 1,000 probes a second for each run, then min/median/max over the runs and
# the ratios of the medians. Safety: every probe goes to 127.0.0.0/8 (the kernel answers).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

n=1000
seconds=15
runs=3
warmup=3
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) n="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "usage: $0 [--targets 1000] [--seconds 15] [--runs 3]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "tos-classes benchmark: run as root (raw ICMP sockets)" >&2; exit 4; }

name="tos-classes benchmark"
. "$root/Tests/Benchmarks/common.sh"
bench_start influxd:influxdb curl:curl python3:python3
start_influxd
influx_query() { curl -sf -G "http://127.0.0.1:$port/query" --data-urlencode "db=netprobe" --data-urlencode "q=$1"; }
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

addresses() { python3 -c "
for i in range($1): print('127.%d.%d.%d' % (1 + i // 62500, (i // 250) % 250, i % 250 + 1))"; }
{ echo "bench:"; addresses "$n" | sed 's/^/  - /'; } >"$work/one.yaml"
{ echo "bench:"; addresses "$n" | sed 's/^/  - {host: /; s/$/, tos: [0, ef]}/'; } >"$work/two.yaml"
{ echo "bench:"; addresses $((2 * n)) | sed 's/^/  - /'; } >"$work/double.yaml"
for config in one two double; do
  cat >"$work/$config-netprobe.yaml" <<CONF
probe: $config
targets: {ping: $config.yaml, tcp: null}
icmp: {interval: 1s, count: 1, spacing: 1s, timeout: 500ms}
spool: {directory: spool-$config, max_size: 256MB}
influxdb:
  - url: http://127.0.0.1:$port
    database: netprobe
CONF
  "$netprobe" validate --config "$work/$config-netprobe.yaml" >/dev/null
done

results="$work/results"
: >"$results"
for run in $(seq "$runs"); do
  for config in one two double; do
    probes=$([ "$config" = one ] && echo "$n" || echo $((2 * n)))
    "$netprobe" run --config "$work/$config-netprobe.yaml" >"$work/$config.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    start_ns=$(date +%s%N)
    sleep "$warmup"
    before=$(cpu_ticks "$pid")
    sleep "$seconds"
    after=$(cpu_ticks "$pid")
    window_end=$(date +%s%N)
    kill -TERM "$pid"; wait "$pid" || true
    sleep 1
    window_start=$((start_ns + warmup * 1000000000))
    points=$(influx_query "SELECT count(sent) FROM icmp WHERE probe = '$config' AND time >= ${window_start} AND time < ${window_end}" \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)')
    expected=$(( probes * (window_end - window_start) / 1000000000 ))
    cpu=$(python3 -c "print(f'{($after - $before) / $ticks / $seconds * 100:.2f}')")
    echo "$run $config $probes $cpu $points $expected" | tee -a "$results"
  done
done

python3 - "$results" "$n" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
n = int(sys.argv[2])
label = {"one": f"{n} targets, class 0", "two": f"{n} targets x [0, ef]", "double": f"{2 * n} targets, class 0"}
print()
print("| configuration | probes/s | CPU % of a core (min / median / max) | CPU % per 1,000 probes/s (median) | points in InfluxDB (all runs) |")
print("| --- | ---: | ---: | ---: | ---: |")
median = {}
for config in ["one", "two", "double"]:
    mine = [r for r in rows if r[1] == config]
    cpus = [float(r[3]) for r in mine]
    probes = int(mine[0][2])
    median[config] = statistics.median(cpus) / probes * 1000
    points = sum(int(r[4]) for r in mine); expected = sum(int(r[5]) for r in mine)
    print(f"| {label[config]} | {probes} | {min(cpus):.2f} / {statistics.median(cpus):.2f} / {max(cpus):.2f} | {median[config]:.2f} | {points} of {expected} |")
print()
print(f"per probe, two classes vs one class: {median['two'] / median['one']:.2f}x; two classes vs {2 * n} targets of class 0: {median['two'] / median['double']:.2f}x")
PY
grep -m1 "model name" /proc/cpuinfo
