#!/usr/bin/env bash
# The brain's write path as an independent client sees it: `flotilla-loadtest writes` against a
# fresh release `flotilla-brain` on its embedded defaults (embedded store, in-process bus, embedded
# edge), once per run, reporting changes/min, PUT latency and the brain's CPU.
#
#   ./scripts/bench-writes.sh [--runs N] [--jemalloc] [flotilla-loadtest writes options]
#   ./scripts/bench-writes.sh --runs 3 --clients 8 --format yaml --duration 20s
#   ./scripts/bench-writes.sh --clients 1 --proxies 100   # with 100 mock Delta proxies in sync
#
# --jemalloc builds the brain with jemalloc as its allocator (the container and dist builds);
# without it the brain has the system allocator, as a plain `cargo build --release` does.
# Reports go to bench-results/writes-<time>/run-<i>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1
features=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --jemalloc) features=(--features flotilla-brain/jemalloc); shift ;;
    *) break ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}
echo "==> building release binaries (first build takes several minutes)"
cargo build --release --quiet "${features[@]}" --bin flotilla-brain --bin flotilla-loadtest
bin=$CARGO_TARGET_DIR/release
rest=${BENCH_REST_PORT:-28080}
xds=${BENCH_XDS_PORT:-28000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
out="bench-results/writes-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
data=$(mktemp -d)
brain=
cleanup() {
  [[ -n "$brain" ]] && kill "$brain" 2>/dev/null && wait "$brain" 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT

# CPU seconds (user + system) the process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

for i in $(seq 1 "$runs"); do
  rm -rf "$data/store"
  "$bin/flotilla-brain" --log-level warn --data-dir "$data/store" --rest-addr "127.0.0.1:$rest" \
    --grpc-api-addr 127.0.0.1:0 --xds-addr "127.0.0.1:$xds" >"$out/brain-$i.log" 2>&1 &
  brain=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$rest/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  t0=$(date +%s.%N)
  c0=$(cpu_seconds "$brain")
  "$bin/flotilla-loadtest" writes --api "http://127.0.0.1:$rest" --xds "http://127.0.0.1:$xds" --report "$out/run-$i.json" "$@"
  c1=$(cpu_seconds "$brain")
  t1=$(date +%s.%N)
  awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v i="$i" \
    'BEGIN { printf "run %d: brain CPU %.2f core(s) over the run\n", i, (c1 - c0) / (t1 - t0) }'
  kill "$brain"; wait "$brain" 2>/dev/null || true
  brain=
done
echo "==> reports: $out/run-*.json"
