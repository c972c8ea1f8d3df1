#!/usr/bin/env bash
# Instruction-count ratios for binding verification against raw Ed25519
# verify_strict, measured with callgrind (deterministic: the same binary and
# inputs give the same counts on a busy or an idle machine).
#   ratio = (signatures checked × instructions per raw verify) / instructions per verification
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
cargo build --release -q -p poz --example profile_chain
bin=${CARGO_TARGET_DIR:-target}/release/examples/profile_chain
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | sed -nE 's/.*Collected : ([0-9]+).*/\1/p'; }
per_op() { local base full; base=$(count "$1" 0); full=$(count "$1" "$N"); echo $(( (full - base) / N )); }
raw=$(per_op raw); rawbytes=$(per_op rawbytes); warm=$(per_op warm); chain=$(per_op chain)
echo "instructions per op: raw verify_strict $raw, raw from key bytes $rawbytes, binding vs verified provider $warm, cold chain (4 signatures) $chain"
awk -v r="$raw" -v rb="$rawbytes" -v w="$warm" -v c="$chain" 'BEGIN { printf "RATIO warm %.3f\nRATIO cold %.3f\nRATIO cold vs raw-from-bytes %.3f\n", r / w, 4 * r / c, 4 * rb / c }'
