#!/usr/bin/env bash
# The OpenAPI document is a contract: runs schemathesis (pinned in .venv by scripts/test.sh)
# with --checks all against a running flotilla-brain's /api/v1/openapi.json, once on the
# embedded store and once on PostgreSQL (a database of its own, dropped afterwards), and fails on
# any finding. The id-taking operations are pointed at a real config (scripts/schemathesis.toml);
# the stateful phase (which would chain operations through inferred links) is not run, and the
# coverage phase runs on the embedded store only (see below).
# Bounded: FLOTILLA_CONTRACT_EXAMPLES examples per operation and phase (default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
brain="${FLOTILLA_BRAIN_BIN:-$CARGO_TARGET_DIR/debug/flotilla-brain}"
st=.venv/bin/schemathesis
examples="${FLOTILLA_CONTRACT_EXAMPLES:-40}"
[ -x "$brain" ] || cargo build --quiet --bin flotilla-brain
# The brain validates with the real Envoy when asked (`?validate=envoy`), so that path is fuzzed
# too; scripts/test.sh exports the binary's path.
envoy="${FLOTILLA_ENVOY_BIN:-$(ls "$(pwd)"/.venv/lib/python3*/site-packages/envoy/_bin/envoy | head -n 1)}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

contract() { # port, config id, extra schemathesis flags...
  local port="$1" id="$2" out rc; shift 2
  out="$(mktemp)"
  FLOTILLA_ST_CONFIG_ID="$id" SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py "$st" \
    --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --checks all --max-examples "$examples" --seed 1 --workers 1 \
    --phases "$phases" --no-color "$@" 2>&1 | tee "$out"
  rc="${PIPESTATUS[0]}"
  # schemathesis exits 0 when a worker thread dies; a traceback is a failed run too.
  if grep -q "^Traceback" "$out"; then echo "schemathesis crashed (traceback above)" >&2; rc=1; fi
  rm -f "$out"
  return "$rc"
}

run() { # label, extra brain flags...
  local label="$1"; shift
  local dir port pid id
  dir="$(mktemp -d)"
  port="$(free_port)"
  "$brain" --data-dir "$dir/data" --rest-addr "127.0.0.1:$port" --xds-addr "127.0.0.1:$(free_port)" \
    --grpc-api-addr "127.0.0.1:$(free_port)" --envoy-validate-bin "$envoy" --log-level warn "$@" \
    >"$dir/brain.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' RETURN
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  id="$(curl -fs -X POST -H 'Content-Type: application/yaml' --data-binary @docs/examples/quickstart.yaml \
    "http://127.0.0.1:$port/api/v1/configs?apply=true" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  echo "==> schemathesis --checks all, $label (config $id)"
  # The validate operations answer 200 with `valid: false` and every problem when a config is
  # wrong (a port of 0, say): such a config is their input, not a request to refuse, so they run
  # without negative_data_rejection; every other check, and every other operation, runs them all.
  # Their bodies are the config schema the create and update operations already walk in the
  # coverage phase: they run the examples and the fuzzing only.
  # Point-in-time restore runs last and alone: a time before the config above was created
  # deletes it, and the other operations need it.
  if ! contract "$port" "$id" --exclude-path-regex 'validate$|/events$|/restore$' \
     || ! phases=examples,fuzzing contract "$port" "$id" --include-path-regex 'validate$' --exclude-checks negative_data_rejection \
     || ! contract "$port" "$id" --include-path-regex '/restore$'; then
    echo "--- brain log ($label)"; tail -n 50 "$dir/brain.log"
    return 1
  fi
  rm -rf "$dir"
}

# The coverage phase walks every boundary of every schema field: tens of thousands of cases for
# the config bodies, minutes per run. It runs once, on the embedded store; on PostgreSQL (what
# differs there is persistence, not the schema) the examples and the bounded fuzzing run.
phases=examples,coverage,fuzzing
run "embedded store"
phases=examples,fuzzing
db="flotilla_contract_$$"
psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $db" >/dev/null
trap 'psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
run "PostgreSQL" --database-url "postgres://postgres@127.0.0.1:5432/$db"
