#!/usr/bin/env bash
# The whole netprobe stack in one command.
#
#   deploy/deployment.sh          bring it up; run it again at any time: what is already
#                                 right is left alone (running processes, up-to-date
#                                 binary, unchanged dashboards)
#   deploy/deployment.sh stop     stop what it started (netprobe and InfluxDB)
#   deploy/deployment.sh status   say what runs
#   deploy/deployment.sh build    (native) only build and install the binary, as `up` does
#
# Where a Docker engine answers (`docker info`), with compose (deploy/docker-compose.yml:
# InfluxDB, netprobe, Grafana on port 3000); deploy/.env is created with random
# passwords when missing.
#
# Otherwise natively, as root: installs InfluxDB from the distribution's packages when
# influxd is missing, starts it (systemctl where systemd runs, else influxd with
# deploy/influxdb.conf in the background, on 127.0.0.1:8086), creates the database,
# builds netprobe in release mode, grants the binary cap_net_raw, generates the Grafana
# dashboards and provisioning, starts `netprobe run` as the unprivileged user "netprobe",
# waits for the first results and prints where everything is.
#
# Settings (environment):
#   NETPROBE_MODE        compose or native (default: compose when `docker info` works)
#   NETPROBE_CONFIG      netprobe's config (default deploy/netprobe.yaml)
#   NETPROBE_TARGETS     folder of ping.yaml and tcp.yaml for the dashboards (default targets)
#   NETPROBE_STATE_DIR   pid files, logs, binary, generated files (default deploy/state)
#   NETPROBE_BUILD_PATH  swift build's scratch path (default .build)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy="$repo/deploy"
state=${NETPROBE_STATE_DIR:-$deploy/state}
config=${NETPROBE_CONFIG:-$deploy/netprobe.yaml}
targets=${NETPROBE_TARGETS:-$repo/targets}
build_path=${NETPROBE_BUILD_PATH:-$repo/.build}
influx_url="http://127.0.0.1:8086"
database=netprobe
run_user=netprobe
binary="$state/bin/netprobe"

log() { printf 'deployment: %s\n' "$*"; }
die() {
  printf 'deployment: error: %s\n' "$*" >&2
  exit 1
}

# --- compose -----------------------------------------------------------------------------

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose --env-file "$deploy/.env" -f "$deploy/docker-compose.yml" "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose --env-file "$deploy/.env" -f "$deploy/docker-compose.yml" "$@"
  else
    die "a Docker engine runs but neither 'docker compose' nor 'docker-compose' is installed"
  fi
}

random_secret() {
  head -c 24 /dev/urandom | base64 | tr -d '/+=\n'
}

# deploy/.env from .env.example, each change-me password replaced by a random one.
ensure_env_file() {
  [ -f "$deploy/.env" ] && return 0
  local line
  (
    umask 077
    while IFS= read -r line; do
      case $line in
        *=change-me-*) printf '%s=%s\n' "${line%%=*}" "$(random_secret)" ;;
        *) printf '%s\n' "$line" ;;
      esac
    done <"$deploy/.env.example" >"$deploy/.env"
  )
  log "created $deploy/.env with random passwords (Grafana admin: GRAFANA_ADMIN_PASSWORD in it)"
}

compose_up() {
  ensure_env_file
  compose up -d --build
  local port
  port=$(sed -n 's/^GRAFANA_PORT=//p' "$deploy/.env")
  cat <<EOF

netprobe stack is up (compose):
  Grafana     http://localhost:${port:-3000}/  (user/password: GRAFANA_ADMIN_USER/_PASSWORD in deploy/.env)
  InfluxDB    inside the compose network only (http://influxdb:8086, database $database)
  netprobe    probes the targets in $repo/targets
  logs        docker compose --env-file deploy/.env -f deploy/docker-compose.yml logs -f
  stop        $deploy/deployment.sh stop
EOF
}

# --- native: helpers ----------------------------------------------------------------------

systemd_runs() { [ -d /run/systemd/system ]; }

# True when the pid file names a live process whose command line contains $2.
pid_alive() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$name"
}

influx_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$influx_url/ping" || true)" = 204 ]
}

# Runs InfluxQL; prints the CSV answer.
influx_query() {
  curl -fsS --max-time 10 -XPOST -H 'Accept: application/csv' "$influx_url/query" \
    --data-urlencode "db=$database" --data-urlencode "q=$1"
}

apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "install ${missing[*]} (no apt-get here)"
  log "installing ${missing[*]} from the distribution's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Copies $1 to $2 only when the content differs; true when it did.
install_if_changed() {
  local source=$1 target=$2 mode=$3
  if [ -f "$target" ] && cmp -s "$source" "$target"; then return 1; fi
  install -D -m "$mode" "$source" "$target.new"
  mv -f "$target.new" "$target"
  return 0
}

stop_pid() {
  local file=$1 name=$2 pid
  if ! pid_alive "$file" "$name"; then
    rm -f "$file"
    log "$name: not running"
    return 0
  fi
  pid=$(<"$file")
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then
    log "$name (pid $pid) did not stop within 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  log "$name (pid $pid): stopped"
}

# spool.directory of the config file (the default of netprobe.yaml when absent).
spool_directory() {
  local directory
  directory=$(awk '/^spool:/ { in_spool = 1; next } /^[^ #]/ { in_spool = 0 }
    in_spool && $1 == "directory:" { print $2; exit }' "$config")
  directory=${directory:-/var/lib/netprobe/spool}
  case $directory in
    /*) printf '%s\n' "$directory" ;;
    *) printf '%s/%s\n' "$(dirname "$config")" "$directory" ;;
  esac
}

# --- native: the steps ----------------------------------------------------------------------

ensure_influxdb() {
  command -v influxd >/dev/null 2>&1 || apt_install influxdb
  if influx_ready; then
    if pid_alive "$state/influxd.pid" influxd; then
      log "InfluxDB: running (pid $(<"$state/influxd.pid")), answering at $influx_url"
    else
      log "InfluxDB: answering at $influx_url"
    fi
    return 0
  fi
  if systemd_runs; then
    # The distribution's unit, with the shipped quiet config on loopback.
    local dropin=/etc/systemd/system/influxdb.service.d/netprobe.conf wanted
    install -D -m 0644 "$deploy/influxdb.conf" /etc/influxdb/influxdb-netprobe.conf
    wanted=$(printf '%s\n' '[Service]' 'Environment=INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:8086' \
      'ExecStart=' 'ExecStart=/usr/bin/influxd -config /etc/influxdb/influxdb-netprobe.conf')
    if [ "$(cat "$dropin" 2>/dev/null || true)" != "$wanted" ]; then
      install -d /etc/systemd/system/influxdb.service.d
      printf '%s\n' "$wanted" >"$dropin"
      systemctl daemon-reload
    fi
    systemctl enable --now influxdb
    echo systemd >"$state/influxdb.mode"
    log "InfluxDB: started with systemctl (unit influxdb, config /etc/influxdb/influxdb-netprobe.conf)"
  else
    local user_options=()
    if id influxdb >/dev/null 2>&1; then
      install -d -o influxdb -m 0755 /var/lib/influxdb
      user_options=(setpriv --reuid=influxdb --regid="$(id -g influxdb)" --init-groups)
    fi
    # Loopback only, no auth (nothing else can reach it); the rest as deploy/influxdb.conf.
    INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:8086 INFLUXDB_HTTP_AUTH_ENABLED=false \
      setsid "${user_options[@]}" influxd -config "$deploy/influxdb.conf" >>"$state/influxd.log" 2>&1 </dev/null &
    echo $! >"$state/influxd.pid"
    echo background >"$state/influxdb.mode"
    log "InfluxDB: started in the background (pid $!, log $state/influxd.log)"
  fi
  for _ in $(seq 1 300); do
    influx_ready && break
    sleep 0.1
  done
  influx_ready || die "InfluxDB did not answer at $influx_url within 30 s; see $state/influxd.log"
}

ensure_database() {
  influx_query "CREATE DATABASE \"$database\"" >/dev/null
}

ensure_binary() {
  command -v swift >/dev/null 2>&1 || die "swift is not on PATH: install Swift 6 (https://swift.org/install), then run this again"
  apt_install libcap-dev zlib1g-dev libcap2-bin curl
  log "building netprobe (release, Swift runtime linked in; log $state/build.log)"
  # --static-swift-stdlib, as the Dockerfile and the benchmarks build it: no libswiftCore
  # and Foundation libraries to load, 22 MB resident with a few targets instead of 34 MB.
  if ! (cd "$repo" && swift build -c release --static-swift-stdlib --product netprobe --scratch-path "$build_path") >"$state/build.log" 2>&1; then
    tail -n 30 "$state/build.log" >&2
    die "the build failed; see $state/build.log"
  fi
  binary_changed=false
  if install_if_changed "$build_path/release/netprobe" "$binary" 0755; then
    binary_changed=true
    log "installed $binary"
  fi
  if ! getcap "$binary" | grep -q cap_net_raw; then
    setcap cap_net_raw+ep "$binary"
    log "granted cap_net_raw to $binary"
  fi
}

ensure_user() {
  id "$run_user" >/dev/null 2>&1 && return 0
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$run_user"
  log "created the system user $run_user"
}

ensure_dashboards() {
  "$binary" dashboards --targets "$targets" --out "$state/grafana" | sed 's/^/deployment: dashboards: /'
  # A Grafana installed on this machine gets the provisioning and the datasource settings.
  if [ -d /etc/grafana ]; then
    local changed=false
    install_if_changed "$state/grafana/provisioning/datasources/netprobe.yaml" /etc/grafana/provisioning/datasources/netprobe.yaml 0644 && changed=true
    install_if_changed "$state/grafana/provisioning/dashboards/netprobe.yaml" /etc/grafana/provisioning/dashboards/netprobe.yaml 0644 && changed=true
    local defaults=/etc/default/grafana-server variable
    for variable in "NETPROBE_INFLUXDB_URL=$influx_url" "NETPROBE_INFLUXDB_DATABASE=$database" \
      NETPROBE_INFLUXDB_READ_USER= NETPROBE_INFLUXDB_READ_PASSWORD=; do
      if ! grep -qxF "$variable" "$defaults" 2>/dev/null; then
        printf '%s\n' "$variable" >>"$defaults"
        changed=true
      fi
    done
    if $changed && systemd_runs; then
      systemctl restart grafana-server || true
    fi
    grafana_note="Grafana     http://localhost:3000/ (provisioned from /etc/grafana/provisioning)"
  else
    grafana_note="Grafana     not installed here: install it (grafana.com/docs, Debian repository), then run this again
              or point its provisioning at $state/grafana/provisioning"
  fi
}

ensure_netprobe() {
  if ! "$binary" validate --config "$config" >"$state/validate.log" 2>&1; then
    cat "$state/validate.log" >&2
    die "$config is invalid"
  fi
  if pid_alive "$state/netprobe.pid" "netprobe run"; then
    if [ "$binary_changed" = true ]; then
      log "netprobe: the binary changed: restarting"
      stop_pid "$state/netprobe.pid" "netprobe run"
    else
      log "netprobe: running (pid $(<"$state/netprobe.pid"))"
      return 0
    fi
  fi
  local spool user_options=()
  spool=$(spool_directory)
  ensure_user
  install -d -o "$run_user" -m 0750 "$spool"
  if setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups test -r "$config" \
    && setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups test -x "$binary"; then
    user_options=(setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups)
  else
    log "netprobe: user $run_user cannot read $config or run $binary: running it as root (it drops every capability after opening its sockets)"
  fi
  setsid "${user_options[@]}" "$binary" run --config "$config" >>"$state/netprobe.log" 2>&1 </dev/null &
  echo $! >"$state/netprobe.pid"
  sleep 1
  pid_alive "$state/netprobe.pid" "netprobe run" || {
    tail -n 20 "$state/netprobe.log" >&2
    die "netprobe exited at once; see $state/netprobe.log"
  }
  log "netprobe: started (pid $(<"$state/netprobe.pid"), log $state/netprobe.log)"
}

# Waits up to one interval (plus the time to send a batch) until every target of the
# config has a result in InfluxDB written since this script started, then shows the
# latest result of each.
wait_for_results() {
  local expected_ping expected_tcp rows="" found
  expected_ping=$(sed -n 's/.*, \([0-9]*\) ping target(s).*/\1/p' "$state/validate.log")
  expected_tcp=$(sed -n 's/.*, \([0-9]*\) tcp target(s).*/\1/p' "$state/validate.log")
  for _ in $(seq 1 60); do
    rows=$(influx_query "SELECT last(\"result\") AS \"result\" FROM \"icmp\", \"tcp\" WHERE time >= ${script_started}s GROUP BY \"target\", \"port\"" | tail -n +2 || true)
    found=$(printf '%s\n' "$rows" | grep -c . || true)
    [ "$found" -ge $((${expected_ping:-0} + ${expected_tcp:-0})) ] && break
    sleep 0.5
  done
  log "latest results in InfluxDB, $found of $((${expected_ping:-0} + ${expected_tcp:-0})) targets (measurement,tags,time,result):"
  printf '%s\n' "$rows" | sed '/^$/d; s/^/    /'
}

native_up() {
  [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, sets a file capability and creates a user)"
  install -d -m 0755 "$state" "$state/bin"
  apt_install curl libcap2-bin
  ensure_influxdb
  ensure_database
  ensure_binary
  ensure_dashboards
  ensure_netprobe
  wait_for_results
  # Where the live view is (validate says, from the config's web: and prometheus: sections).
  web_line=$("$binary" validate --config "$config" 2>/dev/null | sed -n 's/^.*: web view at //p' | head -1)
  cat <<EOF

netprobe stack is up (native):
  InfluxDB    $influx_url, database $database ($(cat "$state/influxdb.mode" 2>/dev/null || echo "already running; not managed here"))
  netprobe    $binary run --config $config
              pid file $state/netprobe.pid, log $state/netprobe.log, spool $(spool_directory)
  web view    ${web_line:-off (add a web: section to $config)}
  dashboards  $state/grafana/dashboards (Grafana provisioning: $state/grafana/provisioning)
  $grafana_note
  stop        $deploy/deployment.sh stop
EOF
}

native_stop() {
  stop_pid "$state/netprobe.pid" "netprobe run"
  case $(cat "$state/influxdb.mode" 2>/dev/null || true) in
    background) stop_pid "$state/influxd.pid" influxd ;;
    systemd)
      systemctl stop influxdb
      log "InfluxDB: stopped (systemctl stop influxdb)"
      ;;
    *) log "InfluxDB: not started by this script; left alone" ;;
  esac
  rm -f "$state/influxdb.mode"
}

native_status() {
  if pid_alive "$state/netprobe.pid" "netprobe run"; then log "netprobe: running (pid $(<"$state/netprobe.pid"))"; else log "netprobe: not running"; fi
  if influx_ready; then log "InfluxDB: answering at $influx_url"; else log "InfluxDB: not answering at $influx_url"; fi
}

# --- main ----------------------------------------------------------------------------------

mode=${NETPROBE_MODE:-}
if [ -z "$mode" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then mode=compose; else mode=native; fi
fi
grafana_note=""
binary_changed=false
script_started=$(date +%s)

case "${1:-up}:$mode" in
  up:compose) compose_up ;;
  stop:compose) compose down ;;
  status:compose) compose ps ;;
  up:native) native_up ;;
  build:native)
    install -d -m 0755 "$state" "$state/bin"
    ensure_binary
    ;;
  stop:native) native_stop ;;
  status:native) native_status ;;
  *) die "usage: $0 [up|stop|status|build] (NETPROBE_MODE=compose|native; build: native only)" ;;
esac
