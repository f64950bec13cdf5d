#!/usr/bin/env bash
# What a default `netprobe check` says on real routers (issue 27, acceptance 1, the
# random-drop half): 20 runs on a path of 5 routers losing 10 % at random from hop 4 on
# (nftables `numgen random mod 1000 < 100` in hop 4's prerouting, so probes that expire
# there are dropped too), and 20 runs on a clean path whose hop 2 keeps the kernel's ICMP
# rate limit. Tallies verdicts and summaries, and how many lossy runs name hop 4, say
# "not the network", or are inconclusive; how many clean runs blame the network.
#
#   sudo Tests/Benchmarks/check-verdicts.sh [--runs 20] [--duration 10s]
#
# Not run by CI (a tally for the issue's closing note). The CPU model is printed first.
# Safety: every packet stays in the script's own namespaces (198.18.0.0/15; no default route).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

runs=20
duration=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--duration D]" >&2; exit 3 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "check-verdicts: run as root (namespaces, raw sockets)" >&2; exit 4; }

name="check-verdicts"
# shellcheck source=Tests/Benchmarks/common.sh
. "$root/Tests/Benchmarks/common.sh"
# shellcheck source=Tests/Benchmarks/router-chain.sh
. "$root/Tests/Benchmarks/router-chain.sh"
bench_start nft:nftables socat:socat ss:iproute2
trap 'chain_delete; bench_cleanup' EXIT

grep -m1 'model name' /proc/cpuinfo | sed 's/^.*: /CPU: /'
echo "kernel $(uname -r), $(nproc) cores; $runs default runs per path${duration:+ (--duration $duration)}"
extra=()
[ -n "$duration" ] && extra=(--duration "$duration")

chain_make 5 lossy$$
lossy_prober=$chain_prober lossy_hop4=${chain_routers[4]} lossy_host=$chain_target4
chain_loss 4 "numgen random mod 1000 < 100"
chain_make 5 clean$$
clean_prober=$chain_prober clean_host=$chain_target4
chain_rate_limit 2

for run in $(seq "$runs"); do
  echo "$name: run $run of $runs" >&2
  ip netns exec "$lossy_prober" "$netprobe" check --json "${extra[@]}" "$lossy_host" >>"$work/lossy.jsonl" || true
  ip netns exec "$clean_prober" "$netprobe" check --json "${extra[@]}" "$clean_host" >>"$work/clean.jsonl" || true
done
echo "hop 4 saw $(chain_counter "$lossy_hop4" seen) probes and dropped $(chain_counter "$lossy_hop4" dropped)"

python3 - "$work" <<'PY'
import collections, json, re, sys
work = sys.argv[1]
for path, title in (("lossy", "10 % random loss from hop 4"), ("clean", "clean path, hop 2 rate-limits its ICMP")):
    results = [json.loads(line) for line in open(f"{work}/{path}.jsonl") if line.strip()]
    verdicts = collections.Counter(r.get("verdict") for r in results)
    # Percentages and times as N; hop numbers and addresses kept (which hop is named matters).
    summaries = collections.Counter(re.sub(r"\d+(\.\d+)?(%| ms)", r"N\2", r.get("summary", "")) for r in results)
    print()
    print(f"## {title}: {len(results)} runs")
    print("verdicts: " + ", ".join(f"{v} {n}" for v, n in verdicts.most_common()))
    if path == "lossy":
        names = sum("hop 4" in r.get("summary", "") for r in results)
        starts = sum((r.get("path") or {}).get("loss_start_hop") == 4 for r in results)
        not_network = sum("not the network" in r.get("summary", "") for r in results)
        print(f"name hop 4 in the summary: {names}; trace loss_start_hop 4: {starts}; say \"not the network\": {not_network}")
    else:
        print(f"blame the network: {verdicts.get('network', 0)}")
    print("summaries (percentages and times as N):")
    for summary, n in summaries.most_common():
        print(f"  {n} x {summary}")
    for r in results:
        if r.get("verdict") == "inconclusive":
            print(f"  inconclusive: {r.get('summary')}")
PY
