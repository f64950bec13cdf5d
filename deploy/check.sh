#!/usr/bin/env bash
# Checks the deployment files with the real tools where the distribution has them:
#   - the scripts with ShellCheck
#   - deploy/netprobe.service with systemd-analyze verify (needs no running systemd)
#   - deploy/influxdb.conf with `influxd config`, which parses it as InfluxDB does
#   - deploy/docker-compose.yml with `docker-compose config` (needs no engine)
#   - the structure of the compose file and the CI definitions with python3-yaml
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
scripts=(deploy/deployment.sh deploy/check.sh .ci/run)
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
check("libcurl4" in dockerfile, "Dockerfile: libcurl for FoundationNetworking")

for problem in problems:
    print("check:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
else
  missing_tool "python3 yaml module" python3-yaml
fi

if [ "$failures" -gt 0 ]; then
  printf 'check: %d check(s) failed\n' "$failures" >&2
  exit 1
fi
printf 'check: every deployment check passed\n'
