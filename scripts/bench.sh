#!/usr/bin/env bash
# Runs one load-test scenario against a fresh Flotilla on this machine and keeps its report.
#
#   ./scripts/bench.sh [--shape distributed|embedded] SCENARIO [flotilla-loadtest options]
#   ./scripts/bench.sh churn --proxies 1000 --clusters 100 --endpoints-per-cluster 10
#   ./scripts/bench.sh --shape embedded ramp --proxies 2000
#
# distributed (default): brain (embedded store, publishing to NATS JetStream, no embedded edge)
# + one flotilla-edge + the harness, the shape the benchmark goals are stated for. Each run starts
# its own nats-server (JetStream in a temporary directory, removed afterwards); `nats-server` must
# be on PATH (Debian: apt-get install nats-server). embedded: one flotilla-brain serving xDS itself.
#
# Reports (JSON + SVG plots) go to bench-results/<scenario>-<protocol>-<proxies>-<time>/.
#
# LOADTEST_BIN runs another harness binary (a before/after of the harness itself).
# Profiling the edge: EDGE_BIN runs another flotilla-edge binary, EDGE_WRAP prefixes its command,
# e.g. a heap profile with the system allocator (heaptrack does not see jemalloc):
#   cargo build --release -p flotilla-edge --no-default-features --bin flotilla-edge
#   cp "$CARGO_TARGET_DIR/release/flotilla-edge" /tmp/edge-sys
#   EDGE_WRAP="heaptrack -o /tmp/edge" EDGE_BIN=/tmp/edge-sys ./scripts/bench.sh ramp --proxies 200
set -euo pipefail
cd "$(dirname "$0")/.."

shape=distributed
if [[ "${1:-}" == "--shape" ]]; then
  shape=$2
  shift 2
fi
scenario=${1:?usage: scripts/bench.sh [--shape distributed|embedded] ramp|churn|burst|slow|discovery [options]}
shift
case "$shape" in distributed|embedded) ;; *) echo "unknown --shape $shape (distributed or embedded)" >&2; exit 2 ;; esac

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # one socket per simulated proxy, on both sides
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}
echo "==> building release binaries (first build takes several minutes)"
cargo build --release --quiet --features flotilla-brain/jemalloc --bin flotilla-brain --bin flotilla-edge --bin flotilla-loadtest
bin=$CARGO_TARGET_DIR/release

# Ports of this run (REST, xDS, gRPC API), away from the defaults so a running Flotilla is left alone.
rest=${BENCH_REST_PORT:-28080}
xds=${BENCH_XDS_PORT:-28000}
grpc=${BENCH_GRPC_PORT:-28001}
nats_port=${BENCH_NATS_PORT:-24222}
nats="nats://127.0.0.1:$nats_port"
bucket=flotilla_bench
protocol=delta
proxies=1000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --protocol) protocol=${args[$((i + 1))]} ;;
    --proxies) proxies=${args[$((i + 1))]} ;;
  esac
done
out="bench-results/${scenario}-${protocol}-${proxies}-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
data=$(mktemp -d)
pids=()
cleanup() {
  # Children first: a wrapped edge (EDGE_WRAP) runs under its wrapper's pid.
  for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not come up; see $out/*.log" >&2
  exit 1
}

# The discovery scenario's registry is the harness itself (the plugin protocol on $plugin_port).
plugin_port=${BENCH_PLUGIN_PORT:-29501}
brain_extra=()
if [[ "$scenario" == discovery ]]; then
  brain_extra=(--discovery-plugin "loadtest=http://127.0.0.1:$plugin_port")
  set -- --plugin-addr "127.0.0.1:$plugin_port" "$@"
fi

watch=()
if [[ "$shape" == distributed ]]; then
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  [[ -x "$nats_bin" ]] || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
  "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$data/nats" >"$out/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
  "$bin/flotilla-brain" --log-level warn --data-dir "$data/store" --rest-addr "127.0.0.1:$rest" \
    --grpc-api-addr "127.0.0.1:$grpc" --nats-url "$nats" --nats-bucket "$bucket" --no-embedded-edge \
    "${brain_extra[@]}" >"$out/brain.log" 2>&1 &
  pids+=($!)
  watch+=(--pid "brain=$!")
  wait_http "http://127.0.0.1:$rest/ready"
  ${EDGE_WRAP:-} "${EDGE_BIN:-$bin/flotilla-edge}" --log-level warn --nats-url "$nats" --nats-bucket "$bucket" \
    --xds-addr "127.0.0.1:$xds" --name bench-edge >"$out/edge.log" 2>&1 &
  pids+=($!)
  watch+=(--pid "edge=$!")
else
  "$bin/flotilla-brain" --log-level warn --data-dir "$data/store" --rest-addr "127.0.0.1:$rest" \
    --grpc-api-addr "127.0.0.1:$grpc" --xds-addr "127.0.0.1:$xds" "${brain_extra[@]}" >"$out/brain.log" 2>&1 &
  pids+=($!)
  watch+=(--pid "brain+edge=$!")
  wait_http "http://127.0.0.1:$rest/ready"
fi
echo "==> $shape shape up (REST :$rest, xDS :$xds); running $scenario → $out"
"${LOADTEST_BIN:-$bin/flotilla-loadtest}" "$scenario" --api "http://127.0.0.1:$rest" --xds "http://127.0.0.1:$xds" \
  "${watch[@]}" --report "$out/report.json" "$@" >"$out/summary.json"
echo "==> report: $out/report.json, plots: $out/report-latency.svg $out/report-rss.svg"
