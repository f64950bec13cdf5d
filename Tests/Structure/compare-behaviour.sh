#!/usr/bin/env bash
# Does this checkout's netprobe behave as a baseline's does? (issue 26, acceptance 2: the
# restructuring keeps behaviour unchanged.)
#
#   sudo bash Tests/Structure/compare-behaviour.sh [--baseline-binary PATH | --baseline-commit REV]
#                                                  [--binary PATH]
#
#   --baseline-binary PATH  the baseline netprobe, already built
#   --baseline-commit REV   else build REV (default 8fde5d0) in a temporary git worktree
#                           (swift build -c release --product netprobe, with this checkout's
#                           Package.resolved), removed afterwards
#   --binary PATH           the netprobe under test; else this checkout's release build
#                           (swift build -c release --product netprobe)
#
# Compared, baseline against current:
#   1. byte for byte: `--version`, `--help`, `help` and, for every subcommand found in the
#      SUBCOMMANDS section of a help text (recursively), `SUB --help` and `help SUB`
#      (COLUMNS=80, so the wrapping does not depend on a terminal);
#   2. byte for byte: the whole directory tree `netprobe dashboards` writes for the shipped
#      targets/ping.yaml and targets/tcp.yaml, with every --datasource and with and without
#      --paths (both binaries write to the same absolute path, one after the other, so the
#      default --dashboards-path is the same), and what it prints;
#   3. by structure: `--json` of ping (127.0.0.1, ::1), tcp (a port a listener of this script
#      owns, and a closed port), trace (ICMP and TCP SYN to 127.0.0.1) and check (the open and
#      the closed port) on loopback: the same records, keys (and key order), JSON types and
#      values, except the measured values listed in MEASURED_KEYS below, which are printed as
#      ignored; and the same exit status.
# Each difference is printed; the last line is a summary. Exit status: 0 no difference,
# 1 some difference, 2 the comparison could not be made (bad arguments, build failure,
# not root).
#
# Safety (DESIGN.md, "Test network rules"): every probe goes to 127.0.0.1 or ::1.
# Needs root: ping and trace need raw sockets (CAP_NET_RAW), and a non-root run would fall
# back to other sockets or fail, which is not the behaviour being compared.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
name="compare-behaviour"

usage() {
  echo "usage: $0 [--baseline-binary PATH | --baseline-commit REV (default 8fde5d0)] [--binary PATH]" >&2
  exit 2
}
fail() { echo "$name: $*" >&2; exit 2; }

baseline_binary=""
baseline_commit=""
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline-binary) [ $# -ge 2 ] || usage; baseline_binary="$2"; shift 2 ;;
    --baseline-commit) [ $# -ge 2 ] || usage; baseline_commit="$2"; shift 2 ;;
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done
if [ -n "$baseline_binary" ] && [ -n "$baseline_commit" ]; then
  fail "give --baseline-binary or --baseline-commit, not both"
fi
[ -n "$baseline_binary" ] || baseline_commit=${baseline_commit:-8fde5d0}

if [ "$(id -u)" != 0 ]; then
  fail "run as root: ping and trace need raw ICMP sockets (CAP_NET_RAW); e.g. sudo bash $0 $*"
fi
command -v python3 >/dev/null || fail "python3 is needed (listener and JSON comparison)"

work=$(mktemp -d "${TMPDIR:-/tmp}/compare-behaviour.XXXXXX")
baseline_tree=""
listener_pid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if [ -n "$listener_pid" ]; then kill "$listener_pid" 2>/dev/null || true; wait "$listener_pid" 2>/dev/null || true; fi
  if [ -n "$baseline_tree" ] && [ -d "$baseline_tree" ]; then
    git -C "$root" worktree remove --force "$baseline_tree" >/dev/null 2>&1 ||
      echo "$name: could not remove the worktree $baseline_tree (git worktree remove --force it)" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 2' INT TERM HUP

# --- 1. The two binaries ---------------------------------------------------------------
if [ -n "$baseline_commit" ]; then
  rev=$(git -C "$root" rev-parse --verify --quiet "$baseline_commit^{commit}") || fail "no such commit: $baseline_commit"
  baseline_tree="$work/baseline-src"
  echo "$name: building the baseline $baseline_commit ($rev) in a temporary worktree (slow)"
  git -C "$root" worktree add --detach "$baseline_tree" "$rev" >/dev/null 2>&1 || fail "git worktree add $rev failed"
  # Package.resolved is not in git: build the baseline with this checkout's pins, so that a
  # newer dependency (ArgumentParser's help layout, say) is not taken for a change of ours.
  if [ -f "$root/Package.resolved" ]; then cp "$root/Package.resolved" "$baseline_tree/"; fi
  if ! (cd "$baseline_tree" && swift build -c release --product netprobe) >"$work/baseline-build.log" 2>&1; then
    tail -n 30 "$work/baseline-build.log" >&2
    fail "the baseline's build failed (log above)"
  fi
  cp "$(cd "$baseline_tree" && swift build -c release --show-bin-path)/netprobe" "$work/netprobe-baseline"
  baseline_binary="$work/netprobe-baseline"
  git -C "$root" worktree remove --force "$baseline_tree" >/dev/null 2>&1 || fail "git worktree remove $baseline_tree failed"
  baseline_tree=""
fi
if [ -z "$binary" ]; then
  echo "$name: building this checkout ($(git -C "$root" rev-parse --short HEAD))"
  if ! swift build -c release --product netprobe >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    fail "this checkout's build failed (log above)"
  fi
  binary="$(swift build -c release --show-bin-path)/netprobe"
fi
for b in "$baseline_binary" "$binary"; do
  [ -x "$b" ] || fail "not an executable: $b"
done
old=$(cd "$(dirname "$baseline_binary")" && pwd)/$(basename "$baseline_binary")
new=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
echo "$name: baseline $old"
echo "$name: current  $new"

differences=0
difference() { differences=$((differences + 1)); echo "DIFFERENCE: $*"; }

# Shows a unified diff, at most 60 lines of it.
show_diff() {
  local lines
  lines=$(diff -u --label "baseline/$3" --label "current/$3" "$1" "$2" | wc -l || true)
  diff -u --label "baseline/$3" --label "current/$3" "$1" "$2" | head -n 60 | sed 's/^/    /' || true
  [ "$lines" -le 60 ] || echo "    ... ($((lines - 60)) more diff lines)"
}

# --- 2. Help texts, byte for byte ------------------------------------------------------
echo
echo "== help texts (COLUMNS=80), byte for byte"
export COLUMNS=80 LINES=24
mkdir -p "$work/help"

# The subcommand names in the SUBCOMMANDS section of a help text (names start lower-case;
# the closing "See 'netprobe help ...'" line does not).
subcommands_of() {
  awk '/^SUBCOMMANDS:/ { in_list = 1; next }
       in_list && /^[A-Z]/ { in_list = 0 }
       in_list && /^  [a-z][a-z0-9-]*( |$)/ { print $1 }' "$1"
}

help_cases=0
# compare_output LABEL ARGS...: runs both binaries with ARGS; stdout, stderr and the exit
# status must be the same.
compare_output() {
  local label="$1"; shift
  local file
  file="$work/help/$(echo "$label" | tr ' /' '__')"
  local old_status=0 new_status=0
  "$old" "$@" >"$file.old" 2>"$file.old.err" </dev/null || old_status=$?
  "$new" "$@" >"$file.new" 2>"$file.new.err" </dev/null || new_status=$?
  help_cases=$((help_cases + 1))
  if ! cmp -s "$file.old" "$file.new"; then
    difference "netprobe $label: standard output differs"
    show_diff "$file.old" "$file.new" "netprobe $label"
  fi
  if ! cmp -s "$file.old.err" "$file.new.err"; then
    difference "netprobe $label: standard error differs"
    show_diff "$file.old.err" "$file.new.err" "netprobe $label (stderr)"
  fi
  if [ "$old_status" != "$new_status" ]; then
    difference "netprobe $label: exit status $old_status (baseline) vs $new_status (current)"
  fi
}

compare_output "--version" --version
compare_output "--help" --help
compare_output "help" help
# Breadth-first over the command tree, from both binaries' help (a subcommand only one has
# is then a difference too).
queue=("")
seen=" "
while [ ${#queue[@]} -gt 0 ]; do
  parent="${queue[0]}"; queue=("${queue[@]:1}")
  # shellcheck disable=SC2086 # the parent path is words
  "$old" $parent --help >"$work/help/list.old" 2>/dev/null || true
  # shellcheck disable=SC2086
  "$new" $parent --help >"$work/help/list.new" 2>/dev/null || true
  for sub in $( { subcommands_of "$work/help/list.old"; subcommands_of "$work/help/list.new"; } | sort -u); do
    path="${parent:+$parent }$sub"
    case "$seen" in *" $path "*) continue ;; esac
    seen="$seen$path "
    # shellcheck disable=SC2086
    compare_output "$path --help" $path --help
    # shellcheck disable=SC2086
    compare_output "help $path" help $path
    queue+=("$path")
  done
done
echo "compared $help_cases commands' output; subcommands found:${seen% }"

# --- 3. Dashboards, byte for byte ------------------------------------------------------
echo
echo "== dashboards for targets/ (ping.yaml, tcp.yaml), byte for byte"
for f in ping.yaml tcp.yaml; do [ -f "$root/targets/$f" ] || fail "missing targets/$f"; done
dash_cases=0
for datasource in influxdb prometheus both; do
  for paths in "" --paths; do
    label="--datasource $datasource${paths:+ $paths}"
    case_dir="$work/dashboards/$datasource${paths}"
    mkdir -p "$case_dir"
    for side in old new; do
      binary_of_side=$old; [ "$side" = new ] && binary_of_side=$new
      status=0
      # shellcheck disable=SC2086 # $paths is one flag or nothing
      "$binary_of_side" dashboards --targets "$root/targets" --out "$work/dashboards-out" \
        --datasource "$datasource" $paths >"$case_dir/$side.stdout" 2>"$case_dir/$side.stderr" || status=$?
      echo "$status" >"$case_dir/$side.status"
      if [ -d "$work/dashboards-out" ]; then mv "$work/dashboards-out" "$case_dir/$side"; else mkdir "$case_dir/$side"; fi
    done
    dash_cases=$((dash_cases + 1))
    if ! diff -r "$case_dir/old" "$case_dir/new" >"$case_dir/tree.diff" 2>&1; then
      difference "dashboards $label: the written trees differ"
      diff -ru "$case_dir/old" "$case_dir/new" | head -n 60 | sed "s|$case_dir/||g; s/^/    /" || true
    fi
    for stream in stdout stderr status; do
      if ! cmp -s "$case_dir/old.$stream" "$case_dir/new.$stream"; then
        difference "dashboards $label: $stream differs"
        show_diff "$case_dir/old.$stream" "$case_dir/new.$stream" "dashboards $label ($stream)"
      fi
    done
  done
done
echo "compared $dash_cases dashboards runs: $(cd "$work/dashboards/influxdb--paths/old" && find . -type f | sort | tr '\n' ' ')(and the prometheus files)"

# --- 4. --json runs on loopback, by structure ------------------------------------------
echo
echo "== --json runs on loopback, by keys, types and non-measured values"
# A listener on 127.0.0.1 (accepts and closes), and a port bound but not listening, so the
# kernel refuses it and nobody else can take it for the duration.
python3 - "$work/ports" <<'PY' &
import socket, sys, time
listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listening.bind(("127.0.0.1", 0))
listening.listen(128)
closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
closed.bind(("127.0.0.1", 0))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{listening.getsockname()[1]} {closed.getsockname()[1]}\n")
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
listening.settimeout(1.0)
while True:
    try:
        connection, _ = listening.accept()
        connection.close()
    except socket.timeout:
        pass
PY
listener_pid=$!
for _ in $(seq 50); do [ -f "$work/ports" ] && break; sleep 0.1; done
[ -f "$work/ports" ] || fail "the loopback listener did not start"
read -r open_port closed_port <"$work/ports"
echo "listener on 127.0.0.1:$open_port; closed port 127.0.0.1:$closed_port"

mkdir -p "$work/json"
runs=()
# json_run LABEL ARGS...: both binaries, one after the other.
json_run() {
  local label="$1"; shift
  local file="$work/json/$label"
  local status
  for side in old new; do
    local binary_of_side=$old; [ "$side" = new ] && binary_of_side=$new
    status=0
    "$binary_of_side" "$@" >"$file.$side" 2>"$file.$side.err" </dev/null || status=$?
    echo "$status" >"$file.$side.status"
  done
  echo "netprobe $*" >"$file.command"
  runs+=("$label")
}
json_run ping ping --json -c 3 -i 200ms -W 1s 127.0.0.1 ::1
json_run tcp tcp --json -c 3 -i 200ms -W 1s "127.0.0.1:$open_port" "127.0.0.1:$closed_port"
json_run tcp-ports tcp --json -c 2 -i 200ms -W 1s "127.0.0.1:$open_port,$closed_port"
json_run trace-icmp trace --json -c 3 -i 200ms -W 1s 127.0.0.1
json_run trace-tcp trace --json -c 3 -i 200ms -W 1s "127.0.0.1:$open_port"
json_run trace-icmp6 trace --json -c 3 -i 200ms -W 1s ::1
json_run check-open check --json --duration 2s 127.0.0.1:"$open_port"
json_run check-closed check --json --duration 2s --no-trace 127.0.0.1:"$closed_port"

python3 - "$work/json" "${runs[@]}" <<'PY' || fail "the JSON comparison failed (a bug in this script)"
import json, re, sys

# Values that are measured (they differ from run to run): compared by JSON type only
# (and, for arrays, by length and element types).
MEASURED_KEYS = [
    "time",                                  # when the round ended (wall clock)
    "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_median_ms", "rtt_stddev_ms",
    "jitter_ms",
    "rtts_ms",                               # every RTT: length and types still compared
    "added_latency_ms",                      # trace: the latency a hop adds
]
# Counts of packets that were not ours (other programs' ICMP on loopback): noise.
NOISE_KEYS = ["ignored"]
# Sentences with measured numbers in them ("0.02 ms"): compared with each "<number> ms"
# masked.
MASKED_TEXT_KEYS = ["summary"]
MS_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)? ?ms\b")
# `check` probes for a duration, not a count: how many probes (and path rounds) fit in it
# differs by one from run to run. In check's runs these counts, and the length of the
# measured arrays, are compared only as zero or not.
TIMED_COUNT_KEYS = ["sent", "received", "answers", "rounds"]
# What pairs a record of one run with the other's (output order follows completion).
IDENTITY_KEYS = ["kind", "target", "address", "port", "protocol"]

print("ignored as measured:", ", ".join(MEASURED_KEYS), "(type, length compared);",
      ", ".join(NOISE_KEYS), "(packets not ours; type compared);",
      ", ".join(MASKED_TEXT_KEYS), "(compared with '<number> ms' masked);",
      "in check's runs:", ", ".join(TIMED_COUNT_KEYS), "and measured arrays' lengths (compared as zero or not)")

directory, labels = sys.argv[1], sys.argv[2:]
found = []

def json_type(value):
    if value is None: return "null"
    if isinstance(value, bool): return "boolean"
    if isinstance(value, (int, float)): return "number"
    if isinstance(value, str): return "string"
    if isinstance(value, list): return "array"
    return "object"

def compare(old, new, path, key, out, timed):
    if json_type(old) != json_type(new):
        out.append(f"{path}: type {json_type(old)} ({json.dumps(old)[:60]}) vs {json_type(new)} ({json.dumps(new)[:60]})")
        return
    if key in NOISE_KEYS:
        return
    if isinstance(old, dict):
        for k in old:
            if k not in new: out.append(f"{path}.{k}: only in the baseline ({json.dumps(old[k])[:60]})")
        for k in new:
            if k not in old: out.append(f"{path}.{k}: only in the current ({json.dumps(new[k])[:60]})")
        common_old = [k for k in old if k in new]
        common_new = [k for k in new if k in old]
        if common_old != common_new:
            out.append(f"{path}: key order {common_old} vs {common_new}")
        for k in common_old:
            compare(old[k], new[k], f"{path}.{k}", k, out, timed)
        return
    if isinstance(old, list):
        if timed and key in MEASURED_KEYS:
            if (len(old) == 0) != (len(new) == 0):
                out.append(f"{path}: {len(old)} elements vs {len(new)}")
        elif len(old) != len(new):
            out.append(f"{path}: {len(old)} elements vs {len(new)}" +
                       ("" if key in MEASURED_KEYS else f" ({json.dumps(old)[:80]} vs {json.dumps(new)[:80]})"))
        for i, (a, b) in enumerate(zip(old, new)):
            compare(a, b, f"{path}[{i}]", key, out, timed)
        return
    if key in MEASURED_KEYS:
        return
    if timed and key in TIMED_COUNT_KEYS and json_type(old) == "number":
        if (old == 0) != (new == 0):
            out.append(f"{path}: {json.dumps(old)} vs {json.dumps(new)}")
        return
    if key in MASKED_TEXT_KEYS and isinstance(old, str):
        if MS_NUMBER.sub("<N> ms", old) != MS_NUMBER.sub("<N> ms", new):
            out.append(f"{path}: {json.dumps(old)} vs {json.dumps(new)}")
        return
    if old != new:
        out.append(f"{path}: {json.dumps(old)} vs {json.dumps(new)}")

def records(file):
    result = []
    with open(file) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                result.append(json.loads(line))
            except json.JSONDecodeError:
                result.append({"<not JSON, line %d>" % number: line.rstrip("\n")})
    def identity(record):
        return tuple(json.dumps(record.get(k)) for k in IDENTITY_KEYS) if isinstance(record, dict) else ()
    return sorted(result, key=identity)   # stable: equal identities keep their order

for label in labels:
    base = f"{directory}/{label}"
    command = open(base + ".command").read().strip()
    out = []
    statuses = [open(f"{base}.{side}.status").read().strip() for side in ("old", "new")]
    if statuses[0] != statuses[1]:
        out.append(f"exit status {statuses[0]} vs {statuses[1]}")
    old, new = records(base + ".old"), records(base + ".new")
    if len(old) != len(new):
        out.append(f"{len(old)} records vs {len(new)}")
    for i, (a, b) in enumerate(zip(old, new)):
        compare(a, b, f"record {i}", None, out, timed=command.split()[1] == "check")
    if out:
        print(f"DIFFERENCE: {command} ({len(old)} records, exit {statuses[0]} baseline vs {len(new)}, exit {statuses[1]} current):")
        for line in out:
            print("    " + line)
        for side, name in (("old", "baseline"), ("new", "current")):
            err = open(f"{base}.{side}.err").read().strip()
            if err:
                print(f"    {name} stderr: " + err[:400].replace("\n", "\n      "))
        found.append(len(out))
    else:
        print(f"same: {command} ({len(old)} records, exit {statuses[0]})")
with open(f"{directory}/differences", "w") as f:
    f.write(f"{sum(found)}\n")
PY
differences=$((differences + $(cat "$work/json/differences")))

echo
if [ "$differences" -eq 0 ]; then
  echo "$name: no difference ($help_cases help outputs, $dash_cases dashboards runs, ${#runs[@]} --json runs)"
  exit 0
fi
echo "$name: $differences difference(s) ($help_cases help outputs, $dash_cases dashboards runs, ${#runs[@]} --json runs compared)"
exit 1
