#!/usr/bin/env bash
# docs/security.md's worked example, run literally on one machine: one CA, a TLS brain with
# JWT authentication (a local dev signing key instead of an identity provider), the RBAC policy
# and tenant configs beside this script, and the commands the doc shows, each checked.
#
#   docs/examples/security/try.sh [WORKDIR]
#
# Needs openssl, and flotilla-brain and flotilla on PATH (cargo build --release; then
# PATH=$PWD/target/release:$PATH). The brain listens on FLOTILLA_REST_ADDR (default
# 127.0.0.1:8080), FLOTILLA_XDS_ADDR and FLOTILLA_GRPC_API_ADDR (defaults :18000, :18001) and is
# stopped at the end. Exits non-zero at the first step that does not do what the doc says.
set -euo pipefail

EX="$(cd "$(dirname "$0")" && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK" && cd "$WORK"
export FLOTILLA_REST_ADDR="${FLOTILLA_REST_ADDR:-127.0.0.1:8080}"
PORT="${FLOTILLA_REST_ADDR##*:}"
step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

step "certificates: one CA, the brain's (DNS:localhost), a proxy of team-a; a secrets key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=flotilla-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=flotilla \
  -addext "subjectAltName=DNS:localhost" -keyout tls.key -out tls.csr 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 90 \
  -copy_extensions copy -out tls.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=envoy \
  -addext "subjectAltName=URI:spiffe://example.org/ns/team-a/sa/envoy" -keyout envoy.key -out envoy.csr 2>/dev/null
openssl x509 -req -in envoy.csr -CA ca.pem -CAkey ca.key -days 30 -copy_extensions copy -out envoy.crt 2>/dev/null
openssl rand -hex 32 > secrets.key

step "a local signing key, its JWKS, and a token per person"
flotilla auth dev-keys --dir .
ALICE_TOKEN=$(flotilla auth dev-token alice --key signing.pem)
BOB_TOKEN=$(flotilla auth dev-token bob --key signing.pem)
CAROL_TOKEN=$(flotilla auth dev-token carol --key signing.pem)
ADMIN_TOKEN=$(flotilla auth dev-token dana --group platform --key signing.pem)

step "the brain: TLS 1.3, mTLS for proxies, JWT, RBAC, secrets sealed at rest"
flotilla-brain --tls-cert tls.crt --tls-key tls.key --client-ca ca.pem --trust-domain example.org \
  --auth-jwks jwks.json --auth-issuer https://flotilla.dev.local --auth-audience flotilla \
  --rbac-policy "$EX/rbac.yaml" --secrets-key-file secrets.key > brain.log 2>&1 &
BRAIN=$!
trap 'kill $BRAIN 2>/dev/null; wait $BRAIN 2>/dev/null || true' EXIT

export FLOTILLA_SERVER=https://localhost:$PORT FLOTILLA_CA_CERT=ca.pem
for _ in $(seq 1 100); do
  FLOTILLA_TOKEN=$ALICE_TOKEN flotilla auth whoami >/dev/null 2>&1 && break
  kill -0 $BRAIN 2>/dev/null || { cat brain.log; fail "the brain exited"; }
  sleep 0.1
done

step "alice: who am I"
FLOTILLA_TOKEN=$ALICE_TOKEN flotilla auth whoami | tee whoami.txt
grep -q alice whoami.txt || fail "whoami does not name alice"

step "alice applies team-a's config: ok"
FLOTILLA_TOKEN=$ALICE_TOKEN flotilla apply -f "$EX/team-a.yaml"

step "alice applies team-b's config: refused (403)"
if FLOTILLA_TOKEN=$ALICE_TOKEN flotilla apply -f "$EX/team-b.yaml" 2> refused.txt; then
  fail "alice wrote into team-b"
fi
cat refused.txt
grep -q 'alice may not create configs in namespace "team-b"' refused.txt || fail "the refusal does not say why"

step "bob applies team-b's config: ok"
FLOTILLA_TOKEN=$BOB_TOKEN flotilla apply -f "$EX/team-b.yaml"

step "carol reads team-a (ok) but may not delete there"
FLOTILLA_TOKEN=$CAROL_TOKEN flotilla get configs -n team-a | tee carol.txt
grep -q web carol.txt || fail "carol does not see team-a's config"
if FLOTILLA_TOKEN=$CAROL_TOKEN flotilla delete configs web -n team-a 2>/dev/null; then
  fail "carol deleted a config"
fi

step "the platform admin reads team-b's audit log: alice's refused write is there"
FLOTILLA_TOKEN=$ADMIN_TOKEN flotilla audit -n team-b | tee audit.txt
grep -q alice audit.txt || fail "alice's refused write is not in the audit log"

step "every step did what docs/security.md says"
