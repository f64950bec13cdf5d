#!/usr/bin/env bash
# Regenerates deploy/link-order/netprobe.order: the functions `netprobe run` (5 loopback
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

name="link-order"
. "$root/Tests/Benchmarks/common.sh"
bench_start valgrind:valgrind influxd:influxdb curl:curl python3:python3
start_influxd

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

python3 - "$work/run.cg" "$work/ping.cg" >"$root/deploy/link-order/netprobe.order" <<'PY'
import re, sys
# callgrind names a function once, at its first fn= or cfn= line, as "(id) name".
seen, order = set(), []
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        match = re.match(r"^c?fn=\(\d+\) (\S.*)$", line.rstrip("\n"))
        if match and match.group(1) not in seen and not match.group(1).startswith("0x"):
            seen.add(match.group(1))
            order.append(match.group(1))
# Sorted: which of them comes first matters little (they end up packed together either
# way), and a sorted list changes only where the code did.
print("\n".join(sorted(order)))
PY
echo "link-order: $(wc -l <"$root/deploy/link-order/netprobe.order") functions in deploy/link-order/netprobe.order"
# SwiftPM does not know the list is a link input: remove the binary so that the next
# release build links again, with the new order.
rm -f "$netprobe"
