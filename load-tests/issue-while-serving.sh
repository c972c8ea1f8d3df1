#!/usr/bin/env bash
# Issuance while serving (issue 17, docs/BENCHMARKS.md): BINDINGS bindings
# issued in bulk with batch signatures in SoftHSM2 (load-tests/bulk-issue.sh,
# the Provider API in process on the database) while poz-store, a separate
# process on the same Postgres database, answers GetBinding for random
# handles among the BINDINGS (store-identity --domain bench.example; a
# handle not issued yet answers NOT_FOUND, counted apart and timed like
# the rest). Then the same lookups again with nothing issuing: the idle
# rate at BINDINGS, to compare with. Prints the issue's line and both
# lookup lines; the database is dropped at the end (KEEP_DB=1 keeps it,
# e.g. for load-tests/entries-storage.sh).
#   BINDINGS=10000000 CONCURRENCY=8 IDLE_SECS=30 nice -n 19 load-tests/issue-while-serving.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
BINDINGS=${BINDINGS:-10000000}
C=${CONCURRENCY:-8}
IDLE_SECS=${IDLE_SECS:-30}
# The lookups run for at most this long while the issue runs (they stop
# early if the issue ends first: see below).
ISSUE_SECS=${ISSUE_SECS:-3600}
export DB=${DB:-poz_iws_$$}
cargo build --release -q -p poz-store -p poz-load-tests
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
    [ "${KEEP_DB:-0}" = 1 ] || psql -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The issue: bulk-issue.sh creates the database and the provider record
# (domain bench.example), then streams BINDINGS bindings.
started=$(date +%s.%N)
KEEP_DB=1 MODE=bulk BINDINGS=$BINDINGS bash load-tests/bulk-issue.sh >"$tmp/issue.out" 2>"$tmp/issue.err" &
issuer=$!; pids+=("$issuer")
for _ in $(seq 600); do
    [ "$(psql -qAt -d "$DB" -c "SELECT count(*) FROM domains WHERE domain = 'bench.example'" 2>/dev/null || echo 0)" = 1 ] && break
    kill -0 "$issuer" 2>/dev/null || { cat "$tmp/issue.err" >&2; exit 1; }
    sleep 0.5
done
"$bin/poz-store" --insecure --listen 127.0.0.1:0 --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    >"$tmp/store.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q '^listening ' "$tmp/store.out" && break; sleep 0.1; done
store=$(sed -n 's/^listening //p' "$tmp/store.out")
[ -n "$store" ] || { echo "poz-store did not start" >&2; exit 1; }
echo "issuing $BINDINGS bindings into $DB while poz-store on $store serves lookups ($C tasks)"

# Lookups while issuing: in rounds of 10 s until the issue ends, so the
# figures cover the issue and little after it.
rounds=0
while kill -0 "$issuer" 2>/dev/null && [ $((rounds * 10)) -lt "$ISSUE_SECS" ]; do
    "$bin/store-identity" --endpoint "http://$store" --domain bench.example --bindings "$BINDINGS" \
        --concurrency "$C" --warmup 0 --seconds 10 --json >"$tmp/during.$rounds.json" 2>/dev/null || true
    rounds=$((rounds + 1))
done
wait "$issuer" || { cat "$tmp/issue.err" >&2; exit 1; }
ended=$(date +%s.%N)
tr '\r' '\n' <"$tmp/issue.err" | grep -v '^$' | tail -n 1
cat "$tmp/issue.out"
echo "issue wall time $(python3 -c "print(round($ended - $started, 1))") s"
# All rounds but the last (which may have run past the issue's end).
python3 - "$tmp" "$rounds" <<'EOF'
import json, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{tmp}/during.{i}.json")) for i in range(max(rounds - 1, 1))]
n = sum(r["lookups"] for r in runs); s = sum(r["seconds"] for r in runs)
print(f"during the issue: {n / s:.0f} lookups/s over {s:.0f} s, "
      f"{sum(r['not_found'] for r in runs)} not found, {sum(r['errors'] for r in runs)} errors; "
      f"p99 per 10 s round: {', '.join(str(r['p99_us']) for r in runs)} µs")
EOF
"$bin/store-identity" --endpoint "http://$store" --domain bench.example --bindings "$BINDINGS" \
    --concurrency "$C" --seconds "$IDLE_SECS"
# The entries table with its partitions (a partitioned table's own size
# is 0: its rows and indexes are its partitions'; one heap has no tree).
psql -qAt -d "$DB" -c "WITH t AS (SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('entries')), pg_total_relation_size('entries')) AS bytes),
    n AS (SELECT count(*) AS rows FROM entries WHERE handle IS NOT NULL)
  SELECT 'entries ' || pg_size_pretty(t.bytes) || ' (' || (SELECT greatest(count(*) - 1, 0) FROM pg_partition_tree('entries')) || ' partitions), '
         || n.rows || ' bindings, ' || round(t.bytes / greatest(n.rows, 1)) || ' B/binding' FROM t, n"
