"""Checks deploy/kubernetes/flotilla.yaml without a cluster (no API server, helm or kubeconform is
available here): parses every object and checks what would otherwise fail only at deploy time —
kinds and API versions, selectors that match their pods, probes on declared ports, non-root and
read-only containers, the HPA's target, and that every FLOTILLA_* variable the manifests set is
one the binaries take (their --help, given as arguments, lists each `[env: ...]`).

usage: python check.py flotilla.yaml BRAIN_HELP_FILE EDGE_HELP_FILE
"""

import re
import sys

import yaml

path, brain_help, edge_help = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    assert "apiVersion" in d and "kind" in d and "metadata" in d, d
    by_kind.setdefault(d["kind"], []).append(d)

want = {"Namespace": 1, "ConfigMap": 1, "Deployment": 2, "Service": 3, "PodDisruptionBudget": 2,
        "HorizontalPodAutoscaler": 1}
for kind, n in want.items():
    assert len(by_kind.get(kind, [])) == n, f"{kind}: want {n}, have {len(by_kind.get(kind, []))}"

envs = {"brain": set(re.findall(r"env: (FLOTILLA_[A-Z_]+)", open(brain_help).read())),
        "edge": set(re.findall(r"env: (FLOTILLA_[A-Z_]+)", open(edge_help).read()))}
assert envs["brain"] and envs["edge"], "no [env: ...] in the --help outputs"
config = by_kind["ConfigMap"][0]["data"]
deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
for name, d in deployments.items():
    spec = d["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector does not match its pods"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    component = labels["app.kubernetes.io/component"]
    for c in pod["containers"]:
        ports = {p["name"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, f"{name}: {probe} on an undeclared port"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        set_vars = {e["name"] for e in c.get("env", [])} | set(config)
        unknown = {v for v in set_vars if v.startswith("FLOTILLA_")} - envs[component]
        assert not unknown, f"{name}: flotilla-{component} takes no {sorted(unknown)}"

for s in by_kind["Service"]:
    sel = s["spec"]["selector"].items()
    targets = [d for d in deployments.values() if sel <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert targets, f"Service {s['metadata']['name']} selects no pods"
    for p in s["spec"]["ports"]:
        declared = {cp["name"] for d in targets for c in d["spec"]["template"]["spec"]["containers"] for cp in c["ports"]}
        assert p["targetPort"] in declared, f"Service {s['metadata']['name']}: no port {p['targetPort']}"
for pdb in by_kind["PodDisruptionBudget"]:
    sel = pdb["spec"]["selector"]["matchLabels"].items()
    assert any(sel <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()), pdb
hpa = by_kind["HorizontalPodAutoscaler"][0]["spec"]
assert hpa["scaleTargetRef"]["name"] in deployments, hpa
assert deployments["flotilla-brain"]["spec"]["replicas"] >= 2, "HA needs two brains"
brain_env = {e["name"]: e for e in deployments["flotilla-brain"]["spec"]["template"]["spec"]["containers"][0]["env"]}
assert brain_env["FLOTILLA_HA"]["value"] == "true"
assert "secretKeyRef" in brain_env["FLOTILLA_DATABASE_URL"]["valueFrom"], "the database URL comes from a Secret"
print(f"deploy/kubernetes: {len(docs)} objects checked")
