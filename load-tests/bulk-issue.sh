#!/usr/bin/env bash
# Issuance through the Provider API with keys in SoftHSM2 and the store on
# Postgres (docs/BENCHMARKS.md). Creates a SoftHSM2 token in a temporary
# directory and a fresh database on PGHOST:PGPORT (default 127.0.0.1:5432,
# user postgres), runs load-tests/src/bin/bulk-issue.rs, removes both.
#   MODE=bulk BINDINGS=1000000 load-tests/bulk-issue.sh [extra flags]
#   MODE=single DURATION=20 CONCURRENCY=8 load-tests/bulk-issue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
MODE=${MODE:-bulk}
DB=${DB:-poz_bulk_$$}
tmp=$(mktemp -d)
cleanup() {
    rm -rf "$tmp"
    [ "${KEEP_DB:-0}" = 1 ] || psql -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$tmp/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$tmp/tokens" >"$tmp/softhsm2.conf"
export SOFTHSM2_CONF=$tmp/softhsm2.conf
softhsm2-util --init-token --free --label poz-bench --pin 1234 --so-pin 5678 >/dev/null
module=${POZ_PKCS11_MODULE:-$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1)}
psql -qAt -d postgres -c "CREATE DATABASE $DB" >/dev/null
cargo build --release -q -p poz-load-tests --bin bulk-issue
echo "SoftHSM2 $(softhsm2-util --version), $(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
"${CARGO_TARGET_DIR:-target}/release/bulk-issue" --mode "$MODE" --pkcs11-module "$module" \
    --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    --bindings "${BINDINGS:-1000000}" --seconds "${DURATION:-20}" \
    --concurrency "${CONCURRENCY:-8}" "$@"
