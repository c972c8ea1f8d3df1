#!/usr/bin/env bash
# IDENTITY lookups by handle through poz-store on Postgres with BINDINGS
# bindings loaded (docs/BENCHMARKS.md). Creates a fresh database on the
# Postgres server at PGHOST:PGPORT (default 127.0.0.1:5432, user postgres),
# starts poz-store on it, runs the load driver, stops the store and drops
# the database (KEEP_DB=1 keeps it for a rerun with --skip-load).
#   BINDINGS=1000000 CONCURRENCY=32 SECONDS=30 load-tests/store-identity.sh [extra driver flags]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
BINDINGS=${BINDINGS:-1000000}
CONCURRENCY=${CONCURRENCY:-32}
SECONDS_=${SECONDS:-30}
DB=${DB:-poz_bench_$$}
cargo build --release -q -p poz-store -p poz-load-tests
target=${CARGO_TARGET_DIR:-target}/release
psql -qAt -d postgres -c "CREATE DATABASE $DB" >/dev/null 2>&1 || true
log=$(mktemp)
"$target/poz-store" --insecure --listen 127.0.0.1:0 --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    --max-connections "${MAX_CONNECTIONS:-16}" >"$log" 2>/dev/null &
store=$!
cleanup() {
    kill "$store" 2>/dev/null || true
    wait "$store" 2>/dev/null || true
    rm -f "$log"
    [ "${KEEP_DB:-0}" = 1 ] || psql -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^listening ' "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening //p' "$log")
[ -n "$addr" ] || { echo "poz-store did not start" >&2; exit 1; }
echo "poz-store on $addr, database $DB; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"$target/store-identity" --endpoint "http://$addr" --bindings "$BINDINGS" \
    --concurrency "$CONCURRENCY" --seconds "$SECONDS_" "$@"
psql -qAt -d "$DB" -c "SELECT 'entries table ' || pg_size_pretty(coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('entries')), pg_total_relation_size('entries'))) || ', ' || count(*) || ' rows' FROM entries"
