#!/usr/bin/env bash
# Instruction-count ratios for binding verification against raw Ed25519 in
# ed25519-dalek, measured with callgrind (deterministic: the same binary and
# inputs give the same counts on a busy or an idle machine).
#   single: ratio = (signatures checked × instructions per raw verify_strict) / instructions per verification
#   batch:  ratio = instructions of ed25519_dalek::verify_batch over 256 signatures
#                   / instructions of poz verify_bindings over the same 256 bindings
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
NB=${NB:-20}
cargo build --release -q -p poz --example profile_chain
bin=${CARGO_TARGET_DIR:-target}/release/examples/profile_chain
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | sed -nE 's/.*Collected : ([0-9]+).*/\1/p'; }
per_op() { local base full; base=$(count "$1" 0); full=$(count "$1" "$2"); echo $(( (full - base) / $2 )); }
raw=$(per_op raw "$N"); rawbytes=$(per_op rawbytes "$N"); warm=$(per_op warm "$N"); chain=$(per_op chain "$N")
batch=$(per_op batch "$NB"); rawbatch=$(per_op rawbatch "$NB")
echo "instructions per op: raw verify_strict $raw, raw from key bytes $rawbytes, binding vs verified provider $warm, cold chain (4 signatures) $chain"
echo "instructions per batch of 256: poz verify_bindings $batch, ed25519-dalek verify_batch $rawbatch"
awk -v r="$raw" -v rb="$rawbytes" -v w="$warm" -v c="$chain" -v b="$batch" -v rbt="$rawbatch" 'BEGIN {
  printf "RATIO warm %.3f\nRATIO cold %.3f\nRATIO cold vs raw-from-bytes %.3f\n", r / w, 4 * r / c, 4 * rb / c
  printf "RATIO batch of 256 vs raw verify_batch %.3f\nRATIO batch of 256 vs 256 raw verify_strict %.3f\n", rbt / b, 256 * r / b }'
