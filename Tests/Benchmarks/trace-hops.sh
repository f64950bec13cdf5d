#!/usr/bin/env bash
# Per-hop RTT medians of one namespace path (5 real routers, Tests/Benchmarks/router-chain.sh)
# as netprobe's TCP and ICMP traces and mtr (ICMP, and -T for TCP) measure them, side by
# side: for BENCHMARKS.md (issue 27: hop times of one path must not fall along the path
# because of the tool).
#
#   sudo Tests/Benchmarks/trace-hops.sh [--count 100] [--interval 0.1] [--runs 3] [--ipv6]
#
# Each run: `netprobe trace --json -c COUNT -i INTERVAL` to HOST and to HOST:8080, `mtr --raw
# -c COUNT -i INTERVAL` and `mtr --raw -T -P 8080` to the same host, one after the other.
# mtr reports no median, so its median comes from its raw per-probe times. Each cell is
# min/median/max over the runs of that run's per-hop median, in ms. The CPU model is printed
# first. Not run by CI (a figure, not a check).
#
# Safety: every packet stays in the script's own namespaces (198.18.0.0/15, 2001:db8::/32;
# no default route anywhere).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

count=100
interval=0.1
runs=3
family=4
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --ipv6) family=6; shift ;;
    *) echo "usage: $0 [--count N] [--interval SECONDS] [--runs R] [--ipv6]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "trace-hops benchmark: run as root (namespaces, raw sockets)" >&2; exit 4; }

name="trace-hops benchmark"
# shellcheck source=Tests/Benchmarks/common.sh
. "$root/Tests/Benchmarks/common.sh"
# shellcheck source=Tests/Benchmarks/router-chain.sh
. "$root/Tests/Benchmarks/router-chain.sh"
bench_start mtr:mtr-tiny socat:socat nft:nftables ss:iproute2
trap 'chain_delete; bench_cleanup' EXIT

routers=5
chain_make "$routers"
if [ "$family" = 4 ]; then host=$chain_target4; tcp_target="$host:8080"; else host=$chain_target6; tcp_target="[$host]:8080"; fi

grep -m1 'model name' /proc/cpuinfo | sed 's/^.*: /CPU: /'
echo "kernel $(uname -r), $(nproc) cores; $routers routers, destination $host (hop $((routers + 1))); $count probes per hop, ${interval}s apart, $runs runs"

# Connections the destination's application accepted during each TCP tool's runs.
accepted_netprobe=0 accepted_mtr=0
for run in $(seq "$runs"); do
  echo "$name: run $run of $runs" >&2
  ip netns exec "$chain_prober" "$netprobe" trace --json -c "$count" -i "${interval}s" "$host" >"$work/netprobe-icmp-$run.json" || true
  before=$(chain_accepted)
  ip netns exec "$chain_prober" "$netprobe" trace --json -c "$count" -i "${interval}s" "$tcp_target" >"$work/netprobe-tcp-$run.json" || true
  accepted_netprobe=$((accepted_netprobe + $(chain_accepted) - before))
  ip netns exec "$chain_prober" mtr "-$family" --raw -n -c "$count" -i "$interval" "$host" >"$work/mtr-icmp-$run.raw" || true
  before=$(chain_accepted)
  ip netns exec "$chain_prober" mtr "-$family" --raw -n -T -P 8080 -c "$count" -i "$interval" "$host" >"$work/mtr-tcp-$run.raw" || true
  sleep 0.5  # socat logs its accepts after the fact
  accepted_mtr=$((accepted_mtr + $(chain_accepted) - before))
done

python3 - "$work" "$runs" "$((routers + 1))" <<'PY'
import json, statistics, sys
work, runs, hops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def netprobe(path):
    medians = {}
    for line in open(path):
        for hop in json.loads(line).get("hops", []):
            if hop.get("rtt_median_ms") is not None:
                medians[hop["hop"]] = hop["rtt_median_ms"]
    return medians

def mtr(path):
    # --raw: "h HOP ADDRESS" and "p HOP MICROSECONDS SEQ", hops counted from 0.
    samples = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "p":
            samples.setdefault(int(parts[1]) + 1, []).append(int(parts[2]) / 1000)
    return {hop: statistics.median(values) for hop, values in samples.items()}

tools = [("netprobe icmp", "netprobe-icmp", netprobe, "json"), ("mtr icmp", "mtr-icmp", mtr, "raw"),
         ("netprobe tcp", "netprobe-tcp", netprobe, "json"), ("mtr -T", "mtr-tcp", mtr, "raw")]
per_tool = {label: [reader(f"{work}/{stem}-{run}.{ext}") for run in range(1, runs + 1)] for label, stem, reader, ext in tools}

def cell(label, hop):
    values = sorted(m[hop] for m in per_tool[label] if hop in m)
    if not values:
        return "-"
    return f"{values[0]:.3f} / {statistics.median(values):.3f} / {values[-1]:.3f}"

print()
print("Per-hop median RTT, ms: min / median / max over the runs")
print()
print("| hop | " + " | ".join(label for label, *_ in tools) + " |")
print("| ---: | " + " | ".join("---:" for _ in tools) + " |")
for hop in range(1, hops + 1):
    print(f"| {hop}{' (destination)' if hop == hops else ''} | " + " | ".join(cell(label, hop) for label, *_ in tools) + " |")
PY
echo
echo "Connections the destination's listener accepted over the $runs runs: netprobe tcp $accepted_netprobe, mtr -T $accepted_mtr."
