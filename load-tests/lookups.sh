#!/usr/bin/env bash
# IDENTITY lookups through pozd, plaintext and Noise NK, and through a bare
# Noise NK responder (bare-nk) in the same run (docs/BENCHMARKS.md).
# Each query opens a new TCP connection; connections come from 4,000
# loopback source addresses so the gateway's per-address limits see many
# clients.
#   CONCURRENCY=64 SECS=10 [CACHE_TTL_MS=1000] load-tests/lookups.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pozd -p poz-load-tests
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port); N=$(port); S=$(port)
"$bin/pozd" --data "$tmp/data" --plain "127.0.0.1:$P" --noise "127.0.0.1:$N" --submit "127.0.0.1:$S" --cache-ttl-ms "${CACHE_TTL_MS:-1000}" \
    >"$tmp/pozd.out" 2>"$tmp/pozd.err" & pids+=($!)
"$bin/bare-nk" >"$tmp/bare.out" & pids+=($!)
for _ in $(seq 100); do grep -q -- '--noise-key' "$tmp/pozd.out" 2>/dev/null && [ -s "$tmp/bare.out" ] && break; sleep 0.1; done
key=$(sed -n 's/.*Noise NK lookups .* server key \([0-9a-f]*\).*/\1/p' "$tmp/pozd.out")
bare_addr=$(awk '{print $2}' "$tmp/bare.out"); bare_key=$(awk '{print $4}' "$tmp/bare.out")
C=${CONCURRENCY:-64}; T=${SECS:-10}
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); concurrency $C, $T s each"
load() { "$bin/poz-load" --sources 4000 --concurrency "$C" --seconds "$T" "$@" 2>/dev/null; }
load --target "127.0.0.1:$P"
load --target "127.0.0.1:$N" --noise-key "$key"
load --target "$bare_addr" --noise-key "$bare_key" --type serial
load --target "127.0.0.1:$N" --noise-key "$key"
load --target "$bare_addr" --noise-key "$bare_key" --type serial
