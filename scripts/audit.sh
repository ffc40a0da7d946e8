#!/usr/bin/env bash
# Dependency audit with cargo-deny (deny.toml): RustSec advisories, licenses, bans, sources.
#
# Offline: the machines here cannot reach GitHub, so advisories come from the RustSec snapshot
# in ../shared/advisory-db.tar.gz (or FLOTILLA_ADVISORY_DB), unpacked where deny.toml's db-path
# says and made a git checkout (cargo-deny reads its HEAD's date). The snapshot's date is printed
# with the result: it ages, and an advisory newer than it is not known here.
#
# Installs cargo-deny (crates.io, pinned) if missing: ~3 minutes once on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  echo "(installing cargo-deny $DENY_VERSION from crates.io)"
  cargo install --locked --quiet "cargo-deny@$DENY_VERSION"
fi

snapshot="${FLOTILLA_ADVISORY_DB:-}"
if [ -z "$snapshot" ]; then
  for c in ../shared/advisory-db.tar.gz /work/shared/advisory-db.tar.gz; do
    if [ -f "$c" ]; then snapshot="$c"; break; fi
  done
fi
[ -n "$snapshot" ] && [ -f "$snapshot" ] || {
  echo "no RustSec advisory snapshot: set FLOTILLA_ADVISORY_DB to advisory-db.tar.gz (see ../shared/advisory-db.md)" >&2
  exit 1
}
notes="$(dirname "$snapshot")/advisory-db.md"
commit=$(grep -o 'commit [0-9a-f]\{40\}' "$notes" 2>/dev/null | head -n 1 | cut -d' ' -f2 || true)
date=$(grep -o '([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\})' "$notes" 2>/dev/null | head -n 1 | tr -d '()' || true)
# Without the notes: the newest advisory date in the snapshot.
[ -n "$date" ] || date=$(tar -xzOf "$snapshot" --wildcards '*.md' 2>/dev/null | grep -o '^date = "[0-9-]*"' | cut -d'"' -f2 | sort | tail -n 1)

# cargo-deny's directory for the db-url in deny.toml; unpacked again when the snapshot changes.
db="target/advisory-dbs/advisory-db-3157b0e258782691"
stamp="$(sha256sum "$snapshot" | cut -c1-16)"
if [ "$(cat "$db/.snapshot" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$db" && mkdir -p "$db"
  tar -xzf "$snapshot" -C "$db"
  (
    cd "$db"
    export GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z"
    git init -q && git add -A
    git -c user.name=flotilla -c user.email=audit@flotilla.invalid -c commit.gpgsign=false \
      commit -qm "RustSec advisory-db snapshot ${commit:-unknown}"
  )
  echo "$stamp" > "$db/.snapshot"
fi

# The crate graph for the platforms deny.toml names, every crate's source in cargo's cache (for
# the license files; cargo downloads from crates.io what is missing); then cargo-deny runs
# offline against it.
cargo fetch --locked --quiet
meta="target/deny-metadata.json"
cargo metadata --format-version 1 --locked \
  --filter-platform x86_64-unknown-linux-gnu --filter-platform aarch64-unknown-linux-gnu > "$meta"
status=0
cargo deny --offline --metadata-path "$meta" check advisories licenses bans sources || status=$?
echo "dependency audit against the RustSec snapshot of ${date:-an unknown date} (advisory-db ${commit:0:12}): $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
