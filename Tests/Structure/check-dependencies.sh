#!/usr/bin/env bash
# The module graph (docs/ARCHITECTURE.md): reads Package.swift (swift package dump-package)
# and every `import` line under each target's folder, and fails on
#   - an import of one of our modules that the target does not declare,
#   - a declared or imported edge between our modules that the architecture does not allow,
#   - Dashboards linking swift-nio (directly or through a module it depends on).
# Usage: bash Tests/Structure/check-dependencies.sh   (from anywhere in the checkout)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
swift package dump-package > "${TMPDIR:-/tmp}/netprobe-package.$$.json"
trap 'rm -f "${TMPDIR:-/tmp}/netprobe-package.$$.json"' EXIT
python3 - "${TMPDIR:-/tmp}/netprobe-package.$$.json" <<'PY'
import json, os, re, sys

package = json.load(open(sys.argv[1]))
# Our modules and the edges between them that the architecture allows. C shims are leaves
# that the modules touching the kernel or zlib may use. Executables and tests may use any.
allowed = {
    "ProbeResults": set(),
    "ProbeEngine": {"ProbeResults", "CSystemShims"},
    "ProbeConfig": {"ProbeResults"},
    "Diagnosis": {"ProbeResults"},
    "ProbeService": {"ProbeEngine", "ProbeConfig", "Diagnosis", "ProbeResults"},
    "InfluxSink": {"ProbeResults", "ProbeConfig", "CZlib"},
    "PrometheusExporter": {"ProbeResults", "ProbeConfig"},
    "Dashboards": {"ProbeResults", "ProbeConfig"},
    # The live view: a sink like the others (rounds by RoundObserver), with check's verdicts.
    "WebView": {"ProbeResults", "ProbeConfig", "Diagnosis"},
    "NetSim": {"ProbeEngine", "ProbeResults", "CSystemShims"},
    "CSystemShims": set(),
    "CZlib": set(),
}
anything = {"netprobe", "netsim", "TestSupport"}

targets = {t["name"]: t for t in package["targets"]}
ours = set(targets)
failures = []

def declared(target):
    names = set()
    for dependency in target.get("dependencies", []):
        for key in ("byName", "target"):
            if key in dependency:
                names.add(dependency[key][0])
        if "product" in dependency:
            names.add(("product", dependency["product"][1], dependency["product"][0]))
    return names

def folder(target):
    if target.get("path"):
        return target["path"]
    base = "Tests" if target["type"] == "test" else "Sources"
    return os.path.join(base, target["name"])

import_line = re.compile(r"^\s*(?:@testable\s+|@_exported\s+|public\s+|package\s+|internal\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.M)

def imports(target):
    found = {}
    for directory, _, files in os.walk(folder(target)):
        for name in files:
            if not name.endswith(".swift"):
                continue
            path = os.path.join(directory, name)
            for match in import_line.finditer(open(path, encoding="utf-8").read()):
                found.setdefault(match.group(1), path)
    return found

edges = []
for name, target in sorted(targets.items()):
    if target["type"] == "system" or target["type"] == "binary":
        continue
    deps = declared(target)
    internal = {d for d in deps if isinstance(d, str) and d in ours}
    for module, path in sorted(imports(target).items()):
        if module in ours and module != name and module not in internal:
            failures.append(f"{path}: imports {module}, which target {name} does not declare in Package.swift")
        if module in ours and module != name:
            internal.add(module)
    for other in sorted(internal):
        edges.append((name, other))
        if target["type"] == "test" or name in anything:
            continue
        if name not in allowed:
            failures.append(f"target {name} is not in the architecture's list (Tests/Structure/check-dependencies.sh, docs/ARCHITECTURE.md)")
            break
        if other not in allowed[name]:
            failures.append(f"{name} -> {other}: not an edge of the architecture (allowed for {name}: {', '.join(sorted(allowed[name])) or 'none of ours'})")

# Dashboards must not link swift-nio: walk its dependencies, ours and the products'.
def closure(name, seen):
    if name in seen or name not in targets:
        return
    seen.add(name)
    for dependency in declared(targets[name]):
        if isinstance(dependency, tuple):
            seen.add(dependency)
        else:
            closure(dependency, seen)

reach = set()
closure("Dashboards", reach)
nio = sorted(f"{d[2]} ({d[1]})" for d in reach if isinstance(d, tuple) and d[1] in ("swift-nio", "swift-nio-ssl", "async-http-client", "hummingbird", "swift-nio-extras"))
if nio:
    failures.append("Dashboards links swift-nio through its dependencies: " + ", ".join(nio))

for name, other in edges:
    if name in allowed:
        print(f"  {name} -> {other}")
if failures:
    print("\n".join("check-dependencies: " + f for f in failures), file=sys.stderr)
    sys.exit(1)
print(f"check-dependencies: {len([e for e in edges if e[0] in allowed])} edges between library modules, all allowed; Dashboards does not link swift-nio")
PY
