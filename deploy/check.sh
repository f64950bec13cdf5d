#!/usr/bin/env bash
# Checks the deployment files with the real tools where the distribution has them:
#   - the scripts with ShellCheck
#   - deploy/netprobe.service with systemd-analyze verify (needs no running systemd)
#   - deploy/influxdb.conf with `influxd config`, which parses it as InfluxDB does
#   - deploy/docker-compose.yml with `docker-compose config` (needs no engine)
#   - the structure of the compose file and the CI definitions with python3-yaml
#   - deploy/kubernetes/ against the Kubernetes API schemas with kubernetes-validate (PyPI),
#     and its securityContext, resources, spool and ConfigMap/Secret wiring with python3-yaml
# Debian packages: shellcheck systemd influxdb docker-compose python3-yaml (.ci/run
# installs them). A missing tool is an error under CI=true and a warning otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0
fail() {
  printf 'check: FAIL: %s\n' "$*" >&2
  failures=$((failures + 1))
}
pass() { printf 'check: ok: %s\n' "$*"; }
missing_tool() {
  if [ "${CI:-}" = true ]; then fail "$1 is not installed (Debian package $2)"; else printf 'check: skipped: %s is not installed (apt-get install %s)\n' "$1" "$2"; fi
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- scripts ---------------------------------------------------------------------------------
scripts=(deploy/deployment.sh deploy/check.sh .ci/run deploy/container-test/run.sh deploy/container-test/influxdb-entrypoint.sh)
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck --shell=bash "${scripts[@]}"; then pass "shellcheck ${scripts[*]}"; else fail "shellcheck ${scripts[*]}"; fi
else
  missing_tool shellcheck shellcheck
fi

# --- systemd unit ----------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at a stand-in, check everything else.
  printf '#!/bin/sh\nexit 0\n' >"$scratch/netprobe"
  chmod +x "$scratch/netprobe"
  sed "s#/usr/local/bin/netprobe#$scratch/netprobe#" deploy/netprobe.service >"$scratch/netprobe.service"
  if output=$(systemd-analyze verify "$scratch/netprobe.service" 2>&1) && [ -z "$output" ]; then
    pass "systemd-analyze verify deploy/netprobe.service"
  else
    fail "systemd-analyze verify deploy/netprobe.service: $output"
  fi
  for setting in AmbientCapabilities=CAP_NET_RAW CapabilityBoundingSet=CAP_NET_RAW NoNewPrivileges=yes \
    DynamicUser=yes StateDirectory=netprobe ProtectSystem=strict Restart=on-failure; do
    grep -qxF "$setting" deploy/netprobe.service || fail "deploy/netprobe.service lacks $setting"
  done
else
  missing_tool systemd-analyze systemd
fi

# --- InfluxDB config -------------------------------------------------------------------------
if command -v influxd >/dev/null 2>&1; then
  if influxd config -config deploy/influxdb.conf >"$scratch/influxdb.conf" 2>"$scratch/influxd.err"; then
    for expected in 'log-enabled = false' 'query-log-enabled = false' 'level = "error"' 'store-enabled = false'; do
      grep -qF "$expected" "$scratch/influxdb.conf" || fail "influxd config -config deploy/influxdb.conf: no '$expected' in the merged config"
    done
    pass "influxd config -config deploy/influxdb.conf"
  else
    fail "influxd cannot read deploy/influxdb.conf: $(cat "$scratch/influxd.err")"
  fi
else
  missing_tool influxd influxdb
fi

# --- compose file ----------------------------------------------------------------------------
compose_command=()
if docker compose version >/dev/null 2>&1; then
  compose_command=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_command=(docker-compose)
fi
if [ ${#compose_command[@]} -gt 0 ]; then
  if "${compose_command[@]}" --env-file deploy/.env.example -f deploy/docker-compose.yml config -q; then
    pass "${compose_command[*]} config deploy/docker-compose.yml"
  else
    fail "${compose_command[*]} config deploy/docker-compose.yml"
  fi
else
  missing_tool "docker compose" docker-compose
fi

git check-ignore -q deploy/.env || fail "deploy/.env (the real credentials) is not ignored by git"
[ -z "$(git ls-files deploy/.env)" ] || fail "deploy/.env is committed"

# The distribution's python3 (where python3-yaml installs), else whatever python3 is first.
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3 || echo python3)
if "$python" -c 'import yaml' 2>/dev/null; then
  if "$python" - <<'EOF'; then pass "compose structure, CI definitions, netprobe.compose.yaml"; else fail "YAML structure (above)"; fi
import re
import sys
import yaml

problems = []
def check(condition, message):
    if not condition:
        problems.append(message)

compose = yaml.safe_load(open("deploy/docker-compose.yml"))
services = compose["services"]
check(set(services) == {"influxdb", "netprobe", "dashboards", "grafana"}, f"services: {sorted(services)}")
published = {name: service.get("ports", []) for name, service in services.items() if service.get("ports")}
check(list(published) == ["grafana"], f"only grafana may publish a port, got {published}")
check([str(port).split(":")[-1] for port in published.get("grafana", [])] == ["3000"], "grafana publishes 3000")
netprobe = services["netprobe"]
check(netprobe.get("cap_add") == ["NET_RAW"] and netprobe.get("cap_drop") == ["ALL"], "netprobe: cap_drop ALL, cap_add NET_RAW")
check(any(v.startswith("netprobe-spool:/var/lib/netprobe/spool") for v in netprobe["volumes"]), "netprobe: spool on a volume")
influx = services["influxdb"]
check(any(v.startswith("influxdb-data:/var/lib/influxdb") for v in influx["volumes"]), "influxdb: data on a volume")
check(any(v.startswith("./influxdb.conf:/etc/influxdb/influxdb.conf") for v in influx["volumes"]), "influxdb: shipped config mounted")
grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
for path in ["/var/lib/grafana", "/var/lib/grafana/dashboards", "/var/lib/grafana/plugins", "/etc/grafana/provisioning"]:
    check(path in grafana_mounts, f"grafana: {path} is a mounted volume")
for name, service in services.items():
    for key, value in (service.get("environment") or {}).items():
        if re.search(r"PASSWORD|TOKEN|SECRET", key):
            check(isinstance(value, str) and value.startswith("${"), f"{name}: {key} must come from deploy/.env, not the compose file")
for volume in ["influxdb-data", "netprobe-spool", "grafana-data", "grafana-dashboards", "grafana-plugins", "grafana-provisioning"]:
    check(volume in (compose.get("volumes") or {}), f"volume {volume} declared")

example = dict(line.split("=", 1) for line in open("deploy/.env.example").read().splitlines() if line and not line.startswith("#"))
for variable in set(re.findall(r"\$\{(\w+)", open("deploy/docker-compose.yml").read())):
    check(variable in example, f"{variable} is used by the compose file but not documented in deploy/.env.example")

config = yaml.safe_load(open("deploy/netprobe.compose.yaml"))
check(config["influxdb"][0]["url"] == "http://influxdb:8086", "netprobe.compose.yaml writes to the influxdb service")
check("password" not in config["influxdb"][0], "no inline password in netprobe.compose.yaml")

github = yaml.safe_load(open(".github/workflows/ci.yml"))
check({"lint", "test", "image"} <= set(github["jobs"]), f"GitHub jobs: {sorted(github['jobs'])}")
gitlab = yaml.safe_load(open(".gitlab-ci.yml"))
check(gitlab.get("stages") == ["lint", "test", "build"], f"GitLab stages: {gitlab.get('stages')}")
for name, job in gitlab.items():
    if isinstance(job, dict) and "script" in job:
        check(job.get("stage") in gitlab["stages"], f"GitLab job {name} has a known stage")

dockerfile = open("deploy/Dockerfile").read()
check(re.search(r"^FROM .* AS build$", dockerfile, re.M) is not None, "Dockerfile: a build stage")
check(len(re.findall(r"^FROM ", dockerfile, re.M)) == 2, "Dockerfile: two stages")
check("setcap cap_net_raw+ep /usr/local/bin/netprobe" in dockerfile, "Dockerfile: cap_net_raw file capability")
check(re.search(r"^USER (?!root)\S+$", dockerfile, re.M) is not None, "Dockerfile: runs as a non-root user")
check("libcurl" not in dockerfile, "Dockerfile: no libcurl (the InfluxDB writer is AsyncHTTPClient, linked in)")

for problem in problems:
    print("check:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
else
  missing_tool "python3 yaml module" python3-yaml
fi

# --- Kubernetes manifests --------------------------------------------------------------------
# kubernetes-validate (PyPI; .ci/run installs it in .build/ci-python) bundles the API
# schemas, so it needs no cluster and no network. --strict: unknown fields are errors.
validator=$(command -v kubernetes-validate || true)
if [ -z "$validator" ] && [ -x .build/ci-python/bin/kubernetes-validate ]; then validator=.build/ci-python/bin/kubernetes-validate; fi
if [ -n "$validator" ]; then
  if output=$("$validator" --strict deploy/kubernetes/*.yaml 2>&1); then
    pass "kubernetes-validate --strict deploy/kubernetes/*.yaml ($(grep -c passed <<<"$output") resources)"
  else
    fail "kubernetes-validate deploy/kubernetes: $(grep -v '^INFO' <<<"$output")"
  fi
else
  missing_tool kubernetes-validate "kubernetes-validate (pip)"
fi
if "$python" -c 'import yaml' 2>/dev/null; then
  if "$python" - <<'EOF'; then pass "Kubernetes securityContext, resources, spool, ConfigMap and Secret wiring"; else fail "Kubernetes manifests (above)"; fi
import glob
import sys
import yaml

problems = []
resources = {}
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    for document in yaml.safe_load_all(open(path)):
        resources[(document["kind"], document["metadata"]["name"])] = document
configmap = resources[("ConfigMap", "netprobe")]
for kind, name in [("StatefulSet", "netprobe-shard"), ("DaemonSet", "netprobe-mesh")]:
    workload = resources.get((kind, name))
    if workload is None:
        problems.append(f"no {kind} {name}")
        continue
    spec = workload["spec"]["template"]["spec"]
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot")
    for container in spec["containers"]:
        context = container.get("securityContext", {})
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if context.get("capabilities") != {"drop": ["ALL"], "add": ["NET_RAW"]}:
            problems.append(f"{name}: capabilities must drop ALL and add NET_RAW only")
        for bound in ["requests", "limits"]:
            if set(container.get("resources", {}).get(bound, {})) != {"cpu", "memory"}:
                problems.append(f"{name}: resources.{bound} for cpu and memory")
        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
        if "/var/lib/netprobe/spool" not in mounts:
            problems.append(f"{name}: the spool on a volume")
        config = container["args"][container["args"].index("--config") + 1]
        key = config.removeprefix("/etc/netprobe/")
        if mounts.get("/etc/netprobe") != "config" or key not in configmap["data"]:
            problems.append(f"{name}: --config {config} is not a key of the ConfigMap mounted at /etc/netprobe")
            continue
        settings = yaml.safe_load(configmap["data"][key])
        if not settings.get("watch_interval"):
            problems.append(f"{name}: {key} sets no watch_interval (ConfigMap changes would need a restart)")
        for file in settings.get("targets", {}).values():
            if file is not None and file not in configmap["data"]:
                problems.append(f"{name}: targets file {file} is not in the ConfigMap")
        for server in settings.get("influxdb", []):
            if "password" in server or "token" in server:
                problems.append(f"{name}: an inline secret in {key}")
            variable = server.get("password_env") or server.get("token_env")
            if variable and not any(e["name"] == variable and "secretKeyRef" in e.get("valueFrom", {}) for e in container.get("env", [])):
                problems.append(f"{name}: {variable} does not come from a Secret")
statefulset = resources[("StatefulSet", "netprobe-shard")]
count = [e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "NETPROBE_SHARD_COUNT"]
if count != [str(statefulset["spec"]["replicas"])]:
    problems.append(f"StatefulSet: NETPROBE_SHARD_COUNT {count} must equal replicas {statefulset['spec']['replicas']}")
for problem in problems:
    print("check:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
fi

# The ConfigMap's configs and targets, checked as netprobe reads them (the release build
# .ci/run makes; the Secret's variable and the StatefulSet's shard count set as there).
binary=.build/release/netprobe
if [ -x "$binary" ] && "$python" -c 'import yaml' 2>/dev/null; then
  mkdir -p "$scratch/configmap"
  "$python" -c 'import sys, yaml
for key, value in yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))["data"].items():
    open(sys.argv[1] + "/" + key, "w").write(value)' "$scratch/configmap"
  for config in shards.yaml mesh.yaml; do
    if output=$(NETPROBE_INFLUXDB_WRITE_PASSWORD=x NETPROBE_SHARD_COUNT=4 NETPROBE_SHARD_INDEX=0 "$binary" validate --config "$scratch/configmap/$config" 2>&1); then
      pass "netprobe validate of the ConfigMap's $config"
    else
      fail "netprobe validate of the ConfigMap's $config: $output"
    fi
  done
else
  printf 'check: skipped: netprobe validate of the ConfigMap (no %s; .ci/run builds it first)\n' "$binary"
fi

# --- the binary deployment.sh installs -------------------------------------------------------
# Built as `deploy/deployment.sh` builds it (its `build` step, into a scratch state folder):
# the Swift runtime linked in, so no libswiftCore or Foundation library is loaded at start.
if [ "$(id -u)" -eq 0 ] && command -v swift >/dev/null 2>&1 && command -v ldd >/dev/null 2>&1; then
  if output=$(NETPROBE_MODE=native NETPROBE_STATE_DIR="$scratch/deploy-state" deploy/deployment.sh build 2>&1); then
    installed="$scratch/deploy-state/bin/netprobe"
    if ldd "$installed" | grep -q 'libswift\|libFoundation'; then
      fail "deployment.sh installs a binary that loads the Swift runtime: $(ldd "$installed" | grep 'libswift\|libFoundation' | tr '\n' ' ')"
    elif ! getcap "$installed" | grep -q cap_net_raw; then
      fail "deployment.sh installs a binary without cap_net_raw: $(getcap "$installed")"
    else
      pass "deployment.sh build: $installed links no Swift runtime library ($(ldd "$installed" | wc -l) libraries) and has cap_net_raw"
    fi
  else
    fail "deployment.sh build: $output"
  fi
elif [ "${CI:-}" = true ]; then
  fail "the deployment.sh build check needs root, swift and ldd"
else
  printf 'check: skipped: the binary deployment.sh installs (needs root and swift)\n'
fi

if [ "$failures" -gt 0 ]; then
  printf 'check: %d check(s) failed\n' "$failures" >&2
  exit 1
fi
printf 'check: every deployment check passed\n'
