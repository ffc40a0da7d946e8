#!/usr/bin/env bash
# Cost of one change fanned out to N Delta streams against the null server, counted rather than
# timed: the `fanout` bench's fixed-count mode under callgrind (one thread, instructions and
# simulated cache misses inside `fanout_wake` and `null_changes` only). Steady from run to
# run, unlike wall-clock on a shared VM. Needs valgrind.
#
#   scripts/fanout-cost.sh [--streams N] [--changes C] [--burst K [--paced]] [--bin PATH]
#
# --burst K: each of the C wakes carries K changes to as many ClusterLoadAssignments, set one by
# one (the streams find K generations they missed: what a stream waiting on its own coalescing
# window finds); --paced publishes the K changes as one generation (what a group's window does).
#
# --bin runs an already built `fanout` bench binary (e.g. one built from an older commit, for a
# before/after comparison) instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
streams=10000
changes=5
bin=
burst=1
paced=0
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams="$2"; shift 2 ;;
    --changes) changes="$2"; shift 2 ;;
    --burst) burst="$2"; shift 2 ;;
    --paced) paced=1; shift ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "usage: $0 [--streams N] [--changes C] [--burst K [--paced]] [--bin PATH]" >&2; exit 2 ;;
  esac
done
for v in "$streams" "$changes" "$burst"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "--streams, --changes and --burst take a positive whole number, not '$v'" >&2; exit 2; }
done
[ "$burst" -le 100 ] || { echo "--burst is at most 100 (the bench's group has 100 clusters)" >&2; exit 2; }
[ -z "$bin" ] || [ -x "$bin" ] || { echo "--bin $bin: no such executable" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -n "$bin" ] || bin=$(cargo bench -p flotilla-edge --bench fanout --no-run --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="fanout" and m.get("executable"): print(m["executable"])')
[ -n "$bin" ] || { echo "the fanout bench built no executable" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in fanout_wake null_changes; do
  FANOUT_FIXED="$changes" FANOUT_STREAMS="$streams" FANOUT_BURST="$burst" FANOUT_PACED="$paced" valgrind --tool=callgrind --cache-sim=yes \
    --toggle-collect="fanout::$f" --callgrind-out-file="$out/$f" "$bin" >/dev/null 2>"$out/$f.log" \
    || { echo "the bench failed under callgrind ($f):" >&2; tail -20 "$out/$f.log" >&2; exit 1; }
done
python3 - "$out" "$streams" "$changes" "$burst" "$paced" <<'PY'
import sys
out, streams, changes, burst, paced = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
def totals(path):
    events = summary = None
    for line in open(path):
        if line.startswith("events:"): events = line.split()[1:]
        if line.startswith("summary:") or line.startswith("totals:"): summary = [int(x) for x in line.split()[1:]]
    return dict(zip(events, summary))
# Each fleet's one warm-up wake runs inside the counted function too.
per = streams * (changes + 1)
rows = {f: totals(f"{out}/{f}") for f in ("fanout_wake", "null_changes")}
what = "" if burst == 1 else f" of {burst} changes{' as one generation' if paced else ' set one by one'}"
print(f"{streams} streams, {changes} wakes{what} (+1 warm-up), per stream per wake:")
print(f"{'':8} {'instructions':>13} {'D1 misses':>10} {'LL misses':>10}")
for f, t in rows.items():
    d1 = t.get("D1mr", 0) + t.get("D1mw", 0)
    ll = t.get("DLmr", 0) + t.get("DLmw", 0)
    print(f"{f.split('_')[0]:8} {t['Ir']/per:13.0f} {d1/per:10.1f} {ll/per:10.2f}")
f, z = rows["fanout_wake"], rows["null_changes"]
print(f"ratio    {f['Ir']/z['Ir']:13.1f}x")
PY
