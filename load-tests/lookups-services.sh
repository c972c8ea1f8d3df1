#!/usr/bin/env bash
# IDENTITY lookups through the separate services: poz-query-gw in front of
# poz-store on Postgres holding BINDINGS bindings (loaded by
# store-identity), plaintext and Noise NK, against a bare Noise NK
# responder (bare-nk) in the same run (docs/BENCHMARKS.md). Handles are
# drawn at random from all BINDINGS; each query is a new TCP connection
# from one of 4,000 loopback source addresses. Two gateways share the
# store: one gathers IDENTITY lookups (the default), one sends each alone.
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
"$bin/poz-store" --insecure --listen 127.0.0.1:0 --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    >"$tmp/store.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q '^listening ' "$tmp/store.out" && break; sleep 0.1; done
store=$(sed -n 's/^listening //p' "$tmp/store.out")
echo "loading $BINDINGS bindings into poz-store on Postgres ($DB)"
"$bin/store-identity" --endpoint "http://$store" --bindings "$BINDINGS" --concurrency 1 --seconds 1 >/dev/null 2>&1
hex32 >"$tmp/noise.key"; hex32 >"$tmp/secrets"
# Three gateways on the same store, differing only in how they send
# IDENTITY lookups to it: "gathered" groups the lookups that queue behind
# busy store calls (the default: up to 64 per call, 2 calls out at once),
# "gathered-1" the same with 1 call out at once, "single" sends each lookup
# on its own call (up to 64 out at once).
gateway() { # name gather_max gather_in_flight
    local P N
    P=$(port); N=$(port)
    POZ_QUERY_GW_NOISE_KEY_FILE="$tmp/noise.key" POZ_QUERY_GW_CHALLENGE_SECRETS_FILE="$tmp/secrets" \
    POZ_QUERY_GW_CACHE_TTL_MS="${CACHE_TTL_MS:-0}" \
    POZ_QUERY_GW_STORE_GATHER_MAX="$2" POZ_QUERY_GW_STORE_GATHER_IN_FLIGHT="$3" \
        "$bin/poz-query-gw" --insecure --listen-plain "127.0.0.1:$P" --listen-noise "127.0.0.1:$N" --store "http://$store" \
        >"$tmp/$1.out" 2>/dev/null & pids+=($!)
    echo $! >"$tmp/$1.pid"
    for _ in $(seq 100); do [ -s "$tmp/$1.out" ] && break; sleep 0.1; done
}
gateway gathered 64 2
gateway gathered-1 64 1
gateway single 1 64
"$bin/bare-nk" >"$tmp/bare.out" & pids+=($!)
echo $! >"$tmp/bare.pid"
for _ in $(seq 100); do [ -s "$tmp/bare.out" ] && break; sleep 0.1; done
plain() { awk '{print $3}' "$tmp/$1.out"; }
noise() { awk '{print $5}' "$tmp/$1.out"; }
key=$(awk '{print $7}' "$tmp/gathered.out")
bare_addr=$(awk '{print $2}' "$tmp/bare.out"); bare_key=$(awk '{print $4}' "$tmp/bare.out")
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); concurrency $C, $T s each, answer cache ${CACHE_TTL_MS:-0} ms"
# CPU time (user + system, clock ticks) of each process of the run, and of
# all Postgres processes together: printed per load as microseconds of CPU
# per query, so where a lookup's cost goes can be read off.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
cpu_snapshot() {
    echo "store $(ticks "${pids[0]}")"
    for g in gathered gathered-1 single; do echo "gw-$g $(ticks "$(cat "$tmp/$g.pid")")"; done
    echo "bare $(ticks "$(cat "$tmp/bare.pid")")"
    echo "postgres $(pg_ticks)"
}
load() { # label, poz-load arguments
    echo "== $1"; shift
    local before load_pid hz=$(getconf CLK_TCK)
    before=$(cpu_snapshot)
    "$bin/poz-load" --sources 4000 --concurrency "$C" --seconds "$T" --domain bench.example --json "$@" \
        >"$tmp/load.json" 2>"$tmp/load.err" & load_pid=$!
    sleep 0.5; local load_ticks=0
    while kill -0 "$load_pid" 2>/dev/null; do load_ticks=$(ticks "$load_pid"); sleep 0.2; done
    wait "$load_pid" || { cat "$tmp/load.err" >&2; return 1; }
    python3 - "$tmp/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['security']} {r['query_type']}: {r['queries']} queries in {r['seconds']:.1f} s = {r['queries_per_second']:.0f}/s; "
      f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms p99.9 {r['p999_ms']:.2f} ms; errors {r['errors']}")
PY
    local n; n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["queries"])' "$tmp/load.json")
    paste <(echo "$before") <(cpu_snapshot) | awk -v n="$n" -v hz="$hz" -v lt="$load_ticks" '
        { d = $4 - $2; if (d > 0) printf "  %s %.0f", $1, d * 1e6 / hz / n }
        END { printf "  poz-load %.0f  (us CPU per query)\n", lt * 1e6 / hz / n }'
}
ids=(--handle-range "user:$BINDINGS")
for g in gathered gathered-1 single; do
    load "plain, $g" --target "$(plain $g)" "${ids[@]}"
done
for round in 1 2; do
    for g in gathered gathered-1 single; do
        load "noise, $g" --target "$(noise $g)" --noise-key "$key" "${ids[@]}"
    done
    load "bare NK" --target "$bare_addr" --noise-key "$bare_key" --type serial
done
