#!/usr/bin/env bash
# IDENTITY lookups through the separate services: poz-query-gw in front of
# poz-store on Postgres holding BINDINGS bindings (loaded by
# store-identity), plaintext and Noise NK, against a bare Noise NK
# responder (bare-nk) in the same run (docs/BENCHMARKS.md). Handles are
# drawn at random from all BINDINGS; each query is a new TCP connection
# from one of 4,000 loopback source addresses.
#   BINDINGS=1000000 CONCURRENCY=64 SECS=10 [CACHE_TTL_MS=0] load-tests/lookups-services.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
BINDINGS=${BINDINGS:-1000000}; C=${CONCURRENCY:-64}; T=${SECS:-10}
DB=poz_lookups_$$
cargo build --release -q -p poz-store -p poz-query-gw -p poz-load-tests
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
    psql -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hex32() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
psql -qAt -d postgres -c "CREATE DATABASE $DB" >/dev/null
"$bin/poz-store" --listen 127.0.0.1:0 --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    >"$tmp/store.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q '^listening ' "$tmp/store.out" && break; sleep 0.1; done
store=$(sed -n 's/^listening //p' "$tmp/store.out")
echo "loading $BINDINGS bindings into poz-store on Postgres ($DB)"
"$bin/store-identity" --endpoint "http://$store" --bindings "$BINDINGS" --concurrency 1 --seconds 1 >/dev/null 2>&1
hex32 >"$tmp/noise.key"; hex32 >"$tmp/secrets"
P=$(port); N=$(port)
POZ_QUERY_GW_NOISE_KEY_FILE="$tmp/noise.key" POZ_QUERY_GW_CHALLENGE_SECRETS_FILE="$tmp/secrets" \
POZ_QUERY_GW_CACHE_TTL_MS="${CACHE_TTL_MS:-0}" \
    "$bin/poz-query-gw" --listen-plain "127.0.0.1:$P" --listen-noise "127.0.0.1:$N" --store "http://$store" \
    >"$tmp/gw.out" 2>/dev/null & pids+=($!)
"$bin/bare-nk" >"$tmp/bare.out" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/gw.out" ] && [ -s "$tmp/bare.out" ] && break; sleep 0.1; done
key=$(awk '{print $7}' "$tmp/gw.out")
bare_addr=$(awk '{print $2}' "$tmp/bare.out"); bare_key=$(awk '{print $4}' "$tmp/bare.out")
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); concurrency $C, $T s each, answer cache ${CACHE_TTL_MS:-0} ms"
load() { "$bin/poz-load" --sources 4000 --concurrency "$C" --seconds "$T" --domain bench.example "$@" 2>"$tmp/load.err" || { cat "$tmp/load.err" >&2; return 1; }; }
load --target "127.0.0.1:$P" --handle-range "user:$BINDINGS"
load --target "127.0.0.1:$N" --noise-key "$key" --handle-range "user:$BINDINGS"
load --target "$bare_addr" --noise-key "$bare_key" --type serial
load --target "127.0.0.1:$N" --noise-key "$key" --handle-range "user:$BINDINGS"
load --target "$bare_addr" --noise-key "$bare_key" --type serial
