"""Checks rendered Kubernetes manifests (deploy/kubernetes/flotilla.yaml, or `helm template` of
deploy/helm/flotilla with any values) without a cluster — no API server or kubeconform is
available here: parses every object and checks what would otherwise fail only at deploy time —
kinds and API versions, selectors that match their pods, probes on declared ports, mounts of
declared volumes, non-root and read-only containers, the HPA's target, that every FLOTILLA_*
variable the manifests set is one the binaries take (their --help, given as arguments, lists
each `[env: ...]`), and, given the brain binary, that it accepts the brain's config file
(`flotilla-brain --config FILE --check-config`).

usage: python check.py MANIFESTS.yaml BRAIN_HELP_FILE EDGE_HELP_FILE [FLOTILLA_BRAIN_BIN]
"""

import os
import re
import subprocess
import sys
import tempfile

import yaml

path, brain_help, edge_help = sys.argv[1:4]
brain_bin = sys.argv[4] if len(sys.argv) > 4 else None
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    assert "apiVersion" in d and "kind" in d and "metadata" in d, d
    by_kind.setdefault(d["kind"], []).append(d)

api = {"Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "ServiceAccount": "v1", "Deployment": "apps/v1",
       "PodDisruptionBudget": "policy/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
       "ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
       "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
       "ServiceMonitor": "monitoring.coreos.com/v1"}
for d in docs:
    assert d["kind"] in api, f"unexpected kind {d['kind']}"
    assert d["apiVersion"] == api[d["kind"]], f"{d['kind']} {d['metadata']['name']}: apiVersion {d['apiVersion']}"
    if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
        assert d["metadata"].get("namespace"), f"{d['kind']} {d['metadata']['name']} has no namespace"

has_brain = any(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "brain"
                for d in by_kind.get("Deployment", []))
want_at_least = ({"ConfigMap": 2, "Deployment": 2, "Service": 3, "PodDisruptionBudget": 2} if has_brain
                 else {"ConfigMap": 1, "Deployment": 1, "Service": 2, "PodDisruptionBudget": 1})
for kind, n in want_at_least.items():
    assert len(by_kind.get(kind, [])) >= n, f"{kind}: want {n}, have {len(by_kind.get(kind, []))}"
assert len(by_kind.get("HorizontalPodAutoscaler", [])) <= 1
assert len(by_kind.get("Namespace", [])) <= 1

envs = {"brain": set(re.findall(r"env: (FLOTILLA_[A-Z_]+)", open(brain_help).read())),
        "edge": set(re.findall(r"env: (FLOTILLA_[A-Z_]+)", open(edge_help).read()))}
assert envs["brain"] and envs["edge"], "no [env: ...] in the --help outputs"
config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind["ConfigMap"]}
deployments = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
               for d in by_kind["Deployment"]}
assert set(deployments) == ({"brain", "edge"} if has_brain else {"edge"}), f"deployments: {sorted(deployments)}"
for component, d in deployments.items():
    name = d["metadata"]["name"]
    spec = d["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector does not match its pods"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    # The brain's config file comes from a rendered ConfigMap; others (the RBAC policy) and
    # Secrets are the user's to create.
    if "config" in volumes:
        ref = volumes["config"]["configMap"]["name"]
        assert ref in config_maps, f"{name}: volume config names a ConfigMap that is not rendered: {ref}"
    for c in pod["containers"]:
        ports = {p["name"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, f"{name}: {probe} on an undeclared port"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{name}: mounts undeclared volume {m['name']}"
        from_maps = set()
        for ref in c.get("envFrom", []):
            cm = ref["configMapRef"]["name"]
            assert cm in config_maps, f"{name}: envFrom names a ConfigMap that is not rendered: {cm}"
            from_maps |= set(config_maps[cm])
        set_vars = {e["name"] for e in c.get("env", [])} | from_maps
        unknown = {v for v in set_vars if v.startswith("FLOTILLA_")} - envs[component]
        assert not unknown, f"{name}: flotilla-{component} takes no {sorted(unknown)}"

# Secrets sealed by a brain must be openable by every edge: the same key file, from the same Secret.
def key_source(d):
    pod = d["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
    if "FLOTILLA_SECRETS_KEY_FILE" not in env:
        return None
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    mount = os.path.dirname(env["FLOTILLA_SECRETS_KEY_FILE"])
    assert mount in mounts, f"{d['metadata']['name']}: the secrets key file is not under a mounted volume"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[mount])
    return volume["secret"]["secretName"], "FLOTILLA_SECRETS_OLD_KEY_FILE" in env


if "brain" in deployments:
    brain_key, edge_key = key_source(deployments["brain"]), key_source(deployments["edge"])
    assert brain_key == edge_key, f"the brain seals secrets with {brain_key}, the edges open them with {edge_key}"

for s in by_kind["Service"]:
    sel = s["spec"]["selector"].items()
    targets = [d for d in deployments.values() if sel <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert targets, f"Service {s['metadata']['name']} selects no pods"
    for p in s["spec"]["ports"]:
        declared = {cp["name"] for d in targets for c in d["spec"]["template"]["spec"]["containers"] for cp in c["ports"]}
        assert p["targetPort"] in declared, f"Service {s['metadata']['name']}: no port {p['targetPort']}"
assert any(s["spec"].get("type") in ("LoadBalancer", "NodePort") for s in by_kind["Service"]), "xDS is not exposed"
for pdb in by_kind["PodDisruptionBudget"]:
    sel = pdb["spec"]["selector"]["matchLabels"].items()
    assert any(sel <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()), pdb
names = {d["metadata"]["name"] for d in deployments.values()}
for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployments["edge"]["metadata"]["name"], hpa
    assert "replicas" not in deployments["edge"]["spec"], "an autoscaled Deployment must not fix replicas"
if not has_brain:  # a region following another's brain: edges only
    assert any(e["name"] == "FLOTILLA_MIRROR_DOMAIN" for e in
               deployments["edge"]["spec"]["template"]["spec"]["containers"][0]["env"]), "edges only, yet no mirror"
    print(f"{path}: {len(docs)} objects checked (edges only)")
    sys.exit(0)
for sa_ref in [deployments["brain"]["spec"]["template"]["spec"].get("serviceAccountName")]:
    if sa_ref:
        assert sa_ref in {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}, sa_ref
for binding in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
    roles = {r["metadata"]["name"] for r in by_kind.get(binding["roleRef"]["kind"], [])}
    assert binding["roleRef"]["name"] in roles, f"{binding['metadata']['name']} binds a role that is not rendered"
    accounts = {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}
    assert all(s["name"] in accounts for s in binding["subjects"]), f"{binding['metadata']['name']}: no such account"

brain = deployments["brain"]["spec"]
brain_env = {e["name"]: e for e in brain["template"]["spec"]["containers"][0]["env"]}
assert "secretKeyRef" in brain_env["FLOTILLA_DATABASE_URL"]["valueFrom"], "the database URL comes from a Secret"
config_file = next((data["controlplane.yaml"] for data in config_maps.values() if "controlplane.yaml" in data), None)
assert config_file is not None, "no ConfigMap holds the brain's controlplane.yaml"
config = yaml.safe_load(config_file)
if brain["replicas"] >= 2:
    assert config.get("ha", {}).get("enabled") is True, "two brains need ha.enabled"
if config.get("ha", {}).get("leaseKubernetes"):
    rules = [r for role in by_kind.get("Role", []) for r in role["rules"]]
    assert any("leases" in r["resources"] and "update" in r["verbs"] for r in rules), "no Role lets brains update Leases"
if brain_bin:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
    env["FLOTILLA_DATABASE_URL"] = "postgres://flotilla@db/flotilla"  # from the Secret in a cluster
    r = subprocess.run([brain_bin, "--config", f.name, "--check-config"], env=env, capture_output=True, text=True)
    os.unlink(f.name)
    assert r.returncode == 0, f"flotilla-brain refuses the rendered config file:\n{config_file}\n{r.stderr}"
print(f"{path}: {len(docs)} objects checked")
