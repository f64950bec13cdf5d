#!/usr/bin/python3
"""The nearest form of deploy/kubernetes/ that `podman kube play` (4.3) runs: podman has no
StatefulSet, so the StatefulSet's pod template becomes the Pod its first replica would be
(name and host name netprobe-shard-0, so its ordinal is 0); the volume claim template
becomes a claim of a podman volume; the Secret becomes a podman secret (podman reads
base64 `data` as JSON, not `stringData`). Everything else of the pod spec is used as
shipped: args, env, securityContext, resources, mounts. What the test swaps, and why:
the image (the locally built one), the targets (loopback only: network safety), the
InfluxDB URL and password (the test's own InfluxDB on its podman network).

Prints the Secret's and the ConfigMap's names (podman makes a volume of that name for
the ConfigMap), then the ping targets shard 0 of the StatefulSet's count must probe, computed here
independently of netprobe (FNV-1a and SplitMix64, as Sources/ProbeService/Fleet.swift).

Usage: kube-pod.py OUT_DIR IMAGE SPOOL_VOLUME INFLUX_PASSWORD
"""
import base64
import json
import sys

import yaml

out, image, spool_volume, password = sys.argv[1:5]
kubernetes = "deploy/kubernetes"
documents = list(yaml.safe_load_all(open(f"{kubernetes}/statefulset.yaml")))
statefulset = next(d for d in documents if d["kind"] == "StatefulSet")
template = statefulset["spec"]["template"]
name = statefulset["metadata"]["name"] + "-0"
spec = dict(template["spec"], hostname=name, restartPolicy="Always")
for container in spec["containers"]:
    container["image"] = image
claims = {claim["metadata"]["name"] for claim in statefulset["spec"].get("volumeClaimTemplates", [])}
spec["volumes"] = spec.get("volumes", []) + [
    {"name": claim, "persistentVolumeClaim": {"claimName": spool_volume}} for claim in sorted(claims)]
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": name, "labels": template["metadata"]["labels"]}, "spec": spec}
yaml.safe_dump(pod, open(f"{out}/pod.yaml", "w"), sort_keys=False)

configmap = yaml.safe_load(open(f"{kubernetes}/configmap.yaml"))
hosts = [f"127.0.1.{n}" for n in range(1, 41)]
configmap["data"]["ping.yaml"] = "loopback:\n" + "".join(f"  - {host}\n" for host in hosts)
configmap["data"]["tcp.yaml"] = "{}\n"
shards = yaml.safe_load(configmap["data"]["shards.yaml"])
shards["influxdb"][0]["url"] = "http://influxdb:8086"
shards["icmp"] = {"interval": "1s", "count": 2, "spacing": "100ms", "timeout": "500ms"}
configmap["data"]["shards.yaml"] = yaml.safe_dump(shards, sort_keys=False)
yaml.safe_dump(configmap, open(f"{out}/configmap.yaml", "w"), sort_keys=False)

secret = yaml.safe_load(open(f"{kubernetes}/secret.yaml"))
values = {key: password for key in secret["stringData"]}
json.dump({key: base64.b64encode(value.encode()).decode() for key, value in values.items()}, open(f"{out}/secret.json", "w"))
print(secret["metadata"]["name"])
print(configmap["metadata"]["name"])

MASK = (1 << 64) - 1
def fnv1a(text):
    value = 0xcbf29ce484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001b3) & MASK
    return value
def mix(value):
    z = (value + 0x9e3779b97f4a7c15) & MASK
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK
    return z ^ (z >> 31)
def owner(key, count):
    key_hash = fnv1a(key)
    scores = [mix(key_hash ^ mix(bucket)) for bucket in range(count)]
    return scores.index(max(scores))
count = int(next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == "NETPROBE_SHARD_COUNT"))
print(" ".join(host for host in hosts if owner(f"ping\0loopback\0{host}\0", count) == 0))
