#!/usr/bin/env bash
# The container test: builds deploy/Dockerfile with podman (unchanged; base images swapped
# by build arguments for local stand-ins) and runs the image as production does, checking
#   1. as its non-root user with --cap-drop ALL --cap-add NET_RAW: raw ICMP works, and
#      CapEff is 0 once it has started (the capability was used, then dropped);
#   2. results reach an InfluxDB (stand-in image from Debian's influxdb package) on a
#      podman network, by service name, and every round counted is stored;
#   3. SIGTERM stops it within the grace period (exit 0, not killed), nothing lost;
#   4. the spool volume survives the container being removed and recreated: rounds
#      spooled while InfluxDB was down arrive after the new container starts;
#   5. `podman kube play` runs the StatefulSet's pod spec of deploy/kubernetes/ (its nearest
#      form podman 4.3 supports, see kube-pod.py): as shipped, non-root with CapEff 0, and
#      shard 0 probes exactly its share of 40 loopback targets, by a second computation;
#   6. the compose stack (deploy/docker-compose.yml, all services but Grafana) comes up
#      with podman-compose, through an override file that only swaps image names.
# Network safety: the containers probe only their own loopback and the address of the
# InfluxDB container on a podman network this test created (an --internal one: no route
# out of it); the compose stack probes the repository's loopback-only targets.
#
# Needs root, podman, runc, netavark, iptables, podman-compose, debootstrap (.ci/run
# installs them). Where podman cannot run containers it skips with the reason (exit 0),
# except that a missing tool under CI=true is a failure.
# Usage: bash deploy/container-test/run.sh   (about 4 min the first time on a machine, 2 after)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/container-test
tag=netprobe-test-$$-$RANDOM
started=$(date +%s)
phase_started=$started
declare -a timings=()
say() { printf 'container-test: %s\n' "$*"; }
fail() { printf 'container-test: FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'container-test: skipped: %s\n' "$*"; exit 0; }
phase() { # NAME: time since the last phase
  local now; now=$(date +%s)
  timings+=("$1 $((now - phase_started)) s")
  say "ok: $1 ($((now - phase_started)) s)"
  phase_started=$now
}
# Waits for a command to succeed: polls every 0.5 s until the deadline (generous: this
# is a shared machine), then fails with the message and the container's last log lines.
wait_for() { # DEADLINE_SECONDS MESSAGE CONTAINER|- COMMAND...
  local deadline=$(( $(date +%s) + $1 )) message=$2 container=$3; shift 3
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      [ "$container" = - ] || message="$message; $container's log: $(podman logs "$container" 2>&1 | tail -n 8)"
      fail "$message"
    fi
    sleep 0.5
  done
}

for tool in podman runc podman-compose debootstrap iptables; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && fail "$tool is not installed (.ci/run installs it)"
    skip "$tool is not installed (apt-get install podman runc podman-compose debootstrap iptables)"
  fi
done
[ "$(id -u)" = 0 ] || skip "needs root (rootful podman, debootstrap)"

# This machine kind needs runc (crun refuses its hybrid cgroups) and rlimits no higher
# than root may set; both go in a containers.conf of the test's own, so a machine's own
# /etc/containers/containers.conf is neither needed nor changed.
scratch=$(mktemp -d "/tmp/$tag.XXXX")
cat >"$scratch/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
CONF
export CONTAINERS_CONF="$scratch/containers.conf"
export PODMAN_COMPOSE_PROVIDER=podman-compose
containers=()
compose=()
networks=()
volumes=()
compose_up=false
kube_up=false
kube_secret=
cleanup() {
  set +e
  [ "$kube_up" = true ] && podman kube down "$scratch/kube/pod.yaml" >/dev/null 2>&1
  [ -n "$kube_secret" ] && podman secret rm "$kube_secret" >/dev/null 2>&1
  if [ "$compose_up" = true ]; then
    "${compose[@]}" down -v >/dev/null 2>&1
  fi
  for container in "${containers[@]}"; do podman rm -f -v -t 0 "$container" >/dev/null 2>&1; done
  for volume in "${volumes[@]}"; do podman volume rm -f "$volume" >/dev/null 2>&1; done
  for network in "${networks[@]}"; do podman network rm -f "$network" >/dev/null 2>&1; done
  rm -rf "$scratch"
}
trap cleanup EXIT

if ! podman_info=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>&1); then
  skip "podman does not work here: $podman_info"
fi

# --- base image: debootstrap from the mirror apt uses, kept between runs -------------------
base=localhost/netprobe-test/debian:bookworm-slim
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
mirror=${mirror:-$(sed -n 's/^deb \(\[[^]]*\] \)\?\(http[^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
if podman image exists "$base"; then
  say "base image $base is there (debootstrap'd on $(podman image inspect -f '{{.Created}}' "$base" | cut -c1-10)); remove it to make a new one"
else
  say "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$scratch/rootfs" "$mirror" >"$scratch/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: $(tail -n 5 "$scratch/debootstrap.log")"
  # The PATH and command of the registry's debian:bookworm-slim.
  tar -C "$scratch/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$base" >/dev/null
  rm -rf "$scratch/rootfs"
fi
# Whether this machine can run a container at all (a nested, unprivileged CI container
# often cannot): skip with podman's reason rather than fail every step after.
if ! run_output=$(podman run --rm --network none --cap-drop ALL "$base" true 2>&1); then
  skip "podman cannot run containers here: $run_output"
fi
phase "base image"

# --- stand-ins and the real Dockerfile --------------------------------------------------------
build() { podman build --pull=never -q "$@" >"$scratch/build.log" 2>&1 || fail "podman build $*: $(tail -n 20 "$scratch/build.log")"; }
build -t localhost/netprobe-test/swift:6.3-bookworm -f "$here/swift-standin.Containerfile" "$here"
build -t localhost/netprobe-test/influxdb:1.8 -f "$here/influxdb-standin.Containerfile" "$here"
phase "stand-in images (Swift build image, InfluxDB)"
toolchain=$(dirname "$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")")
[ -x "$toolchain/usr/bin/swift" ] || fail "cannot find the Swift toolchain's root (swift is $(command -v swift))"
mounts=(--volume "$toolchain:/opt/swift:ro")
# The machine's offline mirror of the Swift packages, where git is pointed at one.
[ -d /opt/swift-packages ] && mounts+=(--volume /opt/swift-packages:/opt/swift-packages:ro)
build "${mounts[@]}" \
  --build-arg SWIFT_IMAGE=localhost/netprobe-test/swift:6.3-bookworm \
  --build-arg RUNTIME_IMAGE="$base" \
  -f deploy/Dockerfile -t localhost/netprobe-test/netprobe:local .
image=localhost/netprobe-test/netprobe:local
[ "$(podman image inspect -f '{{.Config.User}}' "$image")" = netprobe ] || fail "the image does not run as user netprobe"
phase "netprobe image from deploy/Dockerfile"

# --- a network of the test's own, InfluxDB on it by service name ----------------------------
network=$tag
podman network create --internal "$network" >/dev/null
networks+=("$network")
influx=$tag-influxdb
influx_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
podman run -d --name "$influx" --network "$network" --network-alias influxdb \
  -e INFLUXDB_DB=netprobe -e INFLUXDB_HTTP_AUTH_ENABLED=true \
  -e INFLUXDB_ADMIN_USER=admin -e INFLUXDB_ADMIN_PASSWORD="$influx_password" \
  -e INFLUXDB_WRITE_USER=netprobe -e INFLUXDB_WRITE_USER_PASSWORD="$influx_password" \
  -v "$PWD/deploy/influxdb.conf:/etc/influxdb/influxdb.conf:ro" \
  localhost/netprobe-test/influxdb:1.8 >/dev/null
containers+=("$influx")
influx_ready() { podman exec "$influx" curl -sf http://127.0.0.1:8086/ping; }
wait_for 120 "InfluxDB did not answer /ping within 120 s" "$influx" influx_ready
# One InfluxQL query as admin inside the InfluxDB container; prints the first value.
influx_value() { # QUERY
  podman exec "$influx" curl -sf -G -u "admin:$influx_password" http://127.0.0.1:8086/query \
    --data-urlencode db=netprobe --data-urlencode "q=$1" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; s=r.get("series"); print(s[0]["values"][0][1] if s else 0)'
}

# Probes 127.0.0.1 and ::1 (ICMP, raw socket) and the InfluxDB container by service name
# (TCP, half-open), once a second.
mkdir -p "$scratch/etc/targets"
cat >"$scratch/etc/netprobe.yaml" <<CONF
targets: {ping: /etc/netprobe/targets/ping.yaml, tcp: /etc/netprobe/targets/tcp.yaml}
icmp: {interval: 1s, count: 2, spacing: 100ms, timeout: 500ms}
tcp: {interval: 1s, count: 2, spacing: 100ms, timeout: 500ms}
influxdb:
  - {name: influxdb, url: "http://influxdb:8086", database: netprobe, username: netprobe, password_env: NETPROBE_INFLUXDB_WRITE_PASSWORD}
spool: {directory: /var/lib/netprobe/spool}
batch: {size: 100, flush_interval: 200ms}
CONF
printf 'loopback: [127.0.0.1]\n' >"$scratch/etc/targets/ping.yaml"
printf 'compose-network:\n  influxdb: 8086\n' >"$scratch/etc/targets/tcp.yaml"
chmod -R a+rX "$scratch/etc"
spool=$tag-spool
podman volume create "$spool" >/dev/null
volumes+=("$spool")
has_started() { podman logs "$1" 2>&1 | grep -q "netprobe run started"; }
start_netprobe() { # NAME HOSTNAME
  podman run -d --name "$1" --hostname "$2" --network "$network" --cap-drop ALL --cap-add NET_RAW \
    -e NETPROBE_INFLUXDB_WRITE_PASSWORD="$influx_password" \
    -v "$scratch/etc:/etc/netprobe:ro" -v "$spool:/var/lib/netprobe/spool" \
    --stop-timeout 15 "$image" run --config /etc/netprobe/netprobe.yaml >/dev/null
  containers+=("$1")
  wait_for 60 "$1 did not start" "$1" has_started "$1"
}
# SIGTERM, a 15 s grace period (the compose file's stop_grace_period), then the exit code:
# 0 is a clean stop, 137 would be the SIGKILL after the grace period.
stop_netprobe() { # NAME
  podman stop -t 15 "$1" >/dev/null
  local code; code=$(podman inspect -f '{{.State.ExitCode}}' "$1")
  [ "$code" = 0 ] || fail "$1 exited with $code after SIGTERM (137: killed at the end of the grace period): $(podman logs "$1" 2>&1 | tail -n 5)"
}
# Rounds stored for a probe name must equal the rounds its self-monitoring counted.
check_nothing_lost() { # PROBE
  local stored counted
  stored=$(( $(influx_value "SELECT count(sent) FROM icmp WHERE probe='$1'") + $(influx_value "SELECT count(sent) FROM tcp WHERE probe='$1'") ))
  counted=$(influx_value "SELECT sum(rounds) FROM netprobe WHERE probe='$1' AND server=''")
  [ "$stored" -gt 0 ] || fail "no rounds of $1 in InfluxDB"
  [ "$stored" = "$counted" ] || fail "$1: InfluxDB holds $stored rounds, netprobe counted $counted"
  say "$1: $stored rounds counted, $stored stored"
}

first=$tag-first
start_netprobe "$first" np-first
user=$(podman exec "$first" id -un)
[ "$user" = netprobe ] || fail "netprobe runs as $user, not netprobe"
capabilities=$(podman exec "$first" grep -E '^Cap(Eff|Prm|Bnd):' /proc/1/status | tr -s '\t ' ' ' | tr '\n' ' ')
grep -q "CapEff: 0000000000000000" <<<"$capabilities" || fail "CapEff is not 0 after start: $capabilities"
grep -q "CapBnd: 0000000000002000" <<<"$capabilities" || fail "the bounding set is not NET_RAW alone: $capabilities"
say "as $user: $capabilities"
icmp_received() { [ "$(influx_value "SELECT sum(received) FROM icmp WHERE probe='np-first' AND target='127.0.0.1'")" -ge 10 ]; }
tcp_completed() { [ "$(influx_value "SELECT count(sent) FROM tcp WHERE probe='np-first' AND target='influxdb' AND result='ok'")" -gt 0 ]; }
wait_for 60 "no ICMP echo reply from 127.0.0.1 reached InfluxDB" "$first" icmp_received
wait_for 60 "no TCP round to influxdb:8086 reached InfluxDB" "$first" tcp_completed
phase "raw ICMP as netprobe with NET_RAW only, CapEff 0, results in InfluxDB by service name"
stop_netprobe "$first"
check_nothing_lost np-first
phase "SIGTERM: clean exit within the grace period, every round stored"

# InfluxDB down: a container spools, stops, is removed; a new one on the same volume
# delivers what the first spooled.
podman stop -t 10 "$influx" >/dev/null
offline=$tag-offline
start_netprobe "$offline" np-offline
spooled() { [ -n "$(podman exec "$offline" find /var/lib/netprobe/spool -type f -size +0)" ]; }
wait_for 60 "nothing was spooled while InfluxDB was down" "$offline" spooled
stop_netprobe "$offline"
podman rm -v "$offline" >/dev/null
podman start "$influx" >/dev/null
wait_for 120 "InfluxDB did not come back" "$influx" influx_ready
[ "$(influx_value "SELECT count(sent) FROM icmp WHERE probe='np-offline'")" = 0 ] || fail "np-offline's rounds reached InfluxDB while it was down?"
after=$tag-after
start_netprobe "$after" np-after
delivered() { [ "$(influx_value "SELECT sum(rounds) FROM netprobe WHERE probe='np-offline' AND server=''")" -gt 0 ]; }
wait_for 90 "the spooled rounds of the removed container did not arrive" "$after" delivered
stop_netprobe "$after"
check_nothing_lost np-offline
check_nothing_lost np-after
phase "spool volume survives the container's removal; spooled rounds delivered by the new one"

# --- the StatefulSet's pod with podman kube play ---------------------------------------------
mkdir -p "$scratch/kube"
kube_spool=$tag-kube-spool
volumes+=("$kube_spool")
{ read -r secret_name; read -r configmap_name; read -r expected_targets; } < <(python3 "$here/kube-pod.py" "$scratch/kube" "$image" "$kube_spool" "$influx_password")
[ -n "$expected_targets" ] || fail "kube-pod.py gave shard 0 no targets"
if podman secret inspect "$secret_name" >/dev/null 2>&1; then fail "a podman secret $secret_name exists already (not the test's): remove it or run elsewhere"; fi
if podman volume exists "$configmap_name"; then fail "a podman volume $configmap_name exists already (kube play keeps the ConfigMap in a volume of that name): remove it or run elsewhere"; fi
volumes+=("$configmap_name")
podman secret create "$secret_name" "$scratch/kube/secret.json" >/dev/null
kube_secret=$secret_name
podman kube play --network "$network" --configmap "$scratch/kube/configmap.yaml" "$scratch/kube/pod.yaml" >"$scratch/kube.log" 2>&1 \
  || fail "podman kube play: $(tail -n 20 "$scratch/kube.log")"
kube_up=true
pod_container=netprobe-shard-0-netprobe
wait_for 60 "the StatefulSet's pod did not start" "$pod_container" has_started "$pod_container"
capabilities=$(podman exec "$pod_container" grep -E '^CapEff:' /proc/1/status | tr -s '\t ' ' ')
[ "$capabilities" = "CapEff: 0000000000000000" ] || fail "the pod's netprobe holds capabilities: $capabilities"
[ "$(podman exec "$pod_container" id -u)" = 10001 ] || fail "the pod does not run as 10001"
probed_targets() {
  podman exec "$influx" curl -sf -G -u "admin:$influx_password" http://127.0.0.1:8086/query --data-urlencode db=netprobe \
    --data-urlencode "q=SELECT sum(received) FROM icmp WHERE probe = 'netprobe-shard-0' GROUP BY target" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(" ".join(sorted((s["tags"]["target"] for s in r.get("series", []) if s["values"][0][1] > 0), key=lambda t: [int(p) for p in t.split(".")])))'
}
all_answered() { [ "$(probed_targets)" = "$expected_targets" ]; }
wait_for 60 "shard 0 did not probe exactly its targets ($expected_targets), it probed: $(probed_targets)" "$pod_container" all_answered
podman kube down "$scratch/kube/pod.yaml" >/dev/null 2>&1
kube_up=false
say "netprobe-shard-0 (ordinal from its host name, count from the StatefulSet's env) probed its share: $expected_targets"
phase "podman kube play of the StatefulSet's pod: non-root, CapEff 0, its shard of 40 loopback targets into InfluxDB"
podman rm -f -v -t 0 "$after" "$first" "$influx" >/dev/null

# --- the compose stack ----------------------------------------------------------------------
compose_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
# The stack's files, copied unchanged into a folder of the test's own, with a .env of
# its own beside them: a developer's deploy/.env (real credentials) is never read.
stack=$scratch/stack
mkdir -p "$stack/deploy" "$stack/targets"
cp deploy/docker-compose.yml deploy/influxdb.conf deploy/netprobe.compose.yaml "$stack/deploy/"
cp "$here/compose.override.yml" "$stack/deploy/"
cp targets/ping.yaml targets/tcp.yaml "$stack/targets/"
sed -e "s/=change-me-.*/=$compose_password/" -e "s/^NETPROBE_PROBE_NAME=.*/NETPROBE_PROBE_NAME=$tag/" deploy/.env.example >"$stack/deploy/.env"
compose=(podman-compose -p "$tag" -f "$stack/deploy/docker-compose.yml" -f "$stack/deploy/compose.override.yml")
compose_up=true
networks+=("${tag}_default")
"${compose[@]}" up -d influxdb >"$scratch/compose.log" 2>&1 || fail "podman-compose up influxdb: $(tail -n 20 "$scratch/compose.log")"
influx=${tag}_influxdb_1
influx_password=$compose_password
wait_for 120 "compose InfluxDB did not answer" "$influx" influx_ready
"${compose[@]}" up -d netprobe dashboards >>"$scratch/compose.log" 2>&1 || fail "podman-compose up: $(tail -n 20 "$scratch/compose.log")"
compose_rounds() { [ "$(influx_value "SELECT count(sent) FROM icmp WHERE probe='$tag'")" -gt 0 ]; }
wait_for 90 "the compose stack's netprobe wrote nothing" "${tag}_netprobe_1" compose_rounds
dashboards_done() { [ "$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${tag}_dashboards_1")" = "exited 0" ]; }
wait_for 60 "the dashboards service did not finish with 0" "${tag}_dashboards_1" dashboards_done
# The stack's containers with their anonymous volumes (the image's VOLUME of the one-shot
# dashboards service), which `down -v` of podman-compose 1.0.3 leaves behind.
podman ps -aq --filter "label=io.podman.compose.project=$tag" | xargs -r podman rm -f -v -t 0 >/dev/null
"${compose[@]}" down -v >>"$scratch/compose.log" 2>&1 || fail "podman-compose down: $(tail -n 20 "$scratch/compose.log")"
compose_up=false
phase "compose stack (influxdb, netprobe, dashboards) with podman-compose, results in InfluxDB"

say "timings: $(IFS=';'; echo "${timings[*]}"); total $(( $(date +%s) - started )) s"
say "passed"
