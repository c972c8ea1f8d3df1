#!/usr/bin/env bash
# SoftHSM2 Ed25519 signing rate: sessions and threads in one process
# against worker processes (docs/BENCHMARKS.md). Uses a fresh token in a
# temporary directory with one key.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${DURATION:-10}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$tmp/tokens" >"$tmp/softhsm2.conf"
export SOFTHSM2_CONF=$tmp/softhsm2.conf
softhsm2-util --init-token --free --label poz-bench --pin 1234 --so-pin 5678 >/dev/null
cargo build --release -q -p poz-load-tests --bin hsm-rate
bin=${CARGO_TARGET_DIR:-target}/release
module=${POZ_PKCS11_MODULE:-$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1)}
# The first run generates the token's key.
"$bin/hsm-rate" --pkcs11-module "$module" --seconds 0 >/dev/null
echo "SoftHSM2 $(softhsm2-util --version), $(nproc) cores"
for st in "1 1" "2 2" "4 4"; do
    set -- $st
    "$bin/hsm-rate" --pkcs11-module "$module" --sessions "$1" --threads "$2" --seconds "$SECS"
done
echo "two processes, 1 session and 1 thread each, at the same time:"
"$bin/hsm-rate" --pkcs11-module "$module" --seconds "$SECS" & p1=$!
"$bin/hsm-rate" --pkcs11-module "$module" --seconds "$SECS" & p2=$!
wait $p1 $p2
