#!/usr/bin/env bash
# netprobe vs iputils ping on loopback, in the same run: each trial runs
#   netprobe ping -c 20 -i 0.05 127.0.0.1 ::1 --json   and   ping -c 20 -i 0.05 127.0.0.1
# side by side and compares the minimum RTTs.   sudo Tests/Benchmarks/loopback-vs-ping.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/../.."
trials=${1:-10}
[ "$(id -u)" = 0 ] || { echo "run as root (raw sockets)" >&2; exit 4; }
command -v ping >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-ping; }
swift build -c release --product netprobe >/dev/null
netprobe=$(swift build -c release --show-bin-path)/netprobe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for trial in $(seq "$trials"); do
  "$netprobe" ping -c 20 -i 0.05 127.0.0.1 ::1 --json >"$work/netprobe.json" &
  ping -c 20 -i 0.05 127.0.0.1 >"$work/ping.txt"
  wait
  python3 - "$work" "$trial" <<'PY'
import json, re, sys
work, trial = sys.argv[1], sys.argv[2]
rounds = {r["target"]: r for r in map(json.loads, open(f"{work}/netprobe.json"))}
ping_min = float(re.search(r"= ([\d.]+)/", open(f"{work}/ping.txt").read().splitlines()[-1]).group(1))
v4, v6 = rounds["127.0.0.1"], rounds["::1"]
verdict = "netprobe <= ping" if v4["rtt_min_ms"] <= ping_min else "netprobe > ping"
print(f"trial {trial}: netprobe 127.0.0.1 {v4['received']}/{v4['sent']} {v4['timestamp_source']} min {v4['rtt_min_ms']:.4f} ms, "
      f"::1 {v6['received']}/{v6['sent']} {v6['timestamp_source']} min {v6['rtt_min_ms']:.4f} ms; ping min {ping_min:.3f} ms: {verdict}")
PY
done
