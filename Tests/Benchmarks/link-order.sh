#!/usr/bin/env bash
# Regenerates Sources/netprobe/netprobe.order: the functions `netprobe run` (5 loopback
# targets into a real influxd, 30 s) and `netprobe ping -c1` execute, which the release
# link puts first in .text (lld --symbol-ordering-file, see Package.swift).
#
#   sudo Tests/Benchmarks/link-order.sh
#
# Why: the kernel maps 64 KiB of an executable around every page of code touched
# (fault-around). Start-up and the probing path touch a few MB of code spread over most
# of the 27 MB .text, so most of .text counted as resident. With those functions
# packed together, `run` with 5 targets held 26.5 MB instead of 32.8 MB (BENCHMARKS.md).
#
# The list is a build input, not a correctness one: a function renamed since is simply not
# found (the link does not warn), and a function missing from it only lands where the
# linker would have put it anyway. Rerun this after large changes to what run executes.
#
# Tools: valgrind (callgrind records every function executed), influxd, curl. valgrind
# cannot read the release binary's debug info, so it runs a copy stripped of it.
# Safety: every probe goes to 127.0.0.0/8 (the kernel answers); nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
[ "$(id -u)" = 0 ] || { echo "link-order: run as root (raw ICMP sockets)" >&2; exit 4; }

need=()
for pair in valgrind:valgrind influxd:influxdb curl:curl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "link-order: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "link-order: building the release binary as deployed (static Swift runtime)"
scratch="$root/.build-bench"
swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product netprobe >/dev/null
netprobe="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)/netprobe"

work=$(mktemp -d /tmp/netprobe-order.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$((port + 1))"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[logging]
  level = "error"
EOF
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE netprobe" >/dev/null

printf 'bench:\n  - 127.0.0.1\n  - 127.0.0.2\n  - 127.0.0.3\n  - 127.0.0.4\n  - 127.0.0.5\n' >"$work/ping.yaml"
cat >"$work/netprobe.yaml" <<EOF
probe: order
targets: {ping: ping.yaml, tcp: null}
icmp: {interval: 1s, count: 1, spacing: 1s, timeout: 500ms}
spool: {directory: spool, max_size: 64MB}
influxdb:
  - url: http://127.0.0.1:$port
    database: netprobe
EOF
cp "$netprobe" "$work/netprobe"
strip -g "$work/netprobe"

echo "link-order: netprobe run under callgrind for 30 s"
timeout -s INT 30 valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/run.cg" \
  "$work/netprobe" run --config "$work/netprobe.yaml" >"$work/run.log" 2>&1 || true
echo "link-order: netprobe ping -c1 under callgrind"
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/ping.cg" \
  "$work/netprobe" ping -c1 127.0.0.1 127.0.0.2 >"$work/ping.log" 2>&1 || true
grep -q "written=" "$work/run.log" || { echo "link-order: run did not write to influxd; see its log:" >&2; cat "$work/run.log" >&2; exit 1; }

python3 - "$work/run.cg" "$work/ping.cg" >"$root/Sources/netprobe/netprobe.order" <<'PY'
import re, sys
# callgrind names a function once, at its first fn= or cfn= line, as "(id) name".
seen, order = set(), []
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        match = re.match(r"^c?fn=\(\d+\) (\S.*)$", line.rstrip("\n"))
        if match and match.group(1) not in seen and not match.group(1).startswith("0x"):
            seen.add(match.group(1))
            order.append(match.group(1))
print("\n".join(order))
PY
echo "link-order: $(wc -l <"$root/Sources/netprobe/netprobe.order") functions in Sources/netprobe/netprobe.order"
# SwiftPM does not know the list is a link input: remove the binary so that the next
# release build links again, with the new order.
rm -f "$netprobe"
