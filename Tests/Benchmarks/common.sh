# Shared by the benchmark scripts (sourced, not run): the release binary as deployed and a
# quiet influxd of their own on a free loopback port.
#
# Before sourcing: `root` (the repository) and `name` (the script's name, for messages).
# After `bench_start NEEDS...`: `netprobe`, `work` (a temp folder removed at exit), `pids`
# (killed at exit); after `start_influxd`: `port`, a `netprobe` database on it.

# Installs the Debian packages of the commands missing ("command:package" pairs), builds
# the static release binary and makes the work folder.
bench_start() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "$name: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  echo "$name: building the release binary as deployed (static Swift runtime)"
  scratch="$root/.build-bench"
  swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product netprobe >/dev/null
  netprobe="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)/netprobe"
  work=$(mktemp -d "/tmp/netprobe-${name// /-}.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# influxd on a free loopback port, its data in $work, quiet; waits until it answers.
start_influxd() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/influxdb.conf" <<CONF
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
CONF
  influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
  curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE netprobe" >/dev/null
}
