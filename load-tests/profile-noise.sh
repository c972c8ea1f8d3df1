#!/usr/bin/env bash
# Where a lookup's CPU goes, in pozd (answer cache off; plaintext and
# Noise NK) and in the bare NK responder, under the same closed-loop load (docs/BENCHMARKS.md,
# "Where the time goes"). Samples each server with `perf record -e
# cpu-clock` (a software clock: this VM has no hardware counters), then
# groups the samples by what the function is (handshake crypto, the
# kernel's TCP, tokio, the gate, SQLite, ...) and prints µs of CPU per
# answered lookup for each group, side by side.
#   [CONCURRENCY=64] [SECS=8] load-tests/profile-noise.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null; }
cargo build --release -q -p pozd -p poz-load-tests
bin=${CARGO_TARGET_DIR:-target}/release
C=${CONCURRENCY:-64}; T=${SECS:-8}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port); N=$(port); S=$(port)
"$bin/pozd" --data "$tmp/data" --plain "127.0.0.1:$P" --noise "127.0.0.1:$N" --submit "127.0.0.1:$S" --cache-ttl-ms 0 \
    >"$tmp/pozd.out" 2>/dev/null & pozd=$!; pids+=($pozd)
"$bin/bare-nk" >"$tmp/bare.out" & bare=$!; pids+=($bare)
for _ in $(seq 100); do grep -q 'Try, from' "$tmp/pozd.out" 2>/dev/null && [ -s "$tmp/bare.out" ] && break; sleep 0.1; done
key=$(sed -n 's/.*Noise NK lookups .* server key \([0-9a-f]*\).*/\1/p' "$tmp/pozd.out")
bare_addr=$(awk '{print $2}' "$tmp/bare.out"); bare_key=$(awk '{print $4}' "$tmp/bare.out")
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); commit $(git rev-parse --short HEAD); concurrency $C, $T s each"
profile() { # name pid poz-load args...
    local name=$1 pid=$2; shift 2
    "$bin/poz-load" --sources 4000 --concurrency "$C" --seconds "$T" --json "$@" >"$tmp/$name.json" 2>/dev/null & local load=$!
    sleep 1
    perf record -q -e cpu-clock -F 4999 -g -p "$pid" -o "$tmp/$name.data" -- sleep "$((T - 2))" >/dev/null 2>&1
    wait "$load"
    perf report -q -i "$tmp/$name.data" --no-children -F period,sym --stdio -g none 2>/dev/null >"$tmp/$name.txt"
}
profile pozd-plain "$pozd" --target "127.0.0.1:$P" --domain demo.example
profile pozd-noise "$pozd" --target "127.0.0.1:$N" --noise-key "$key" --domain demo.example
profile bare-nk "$bare" --target "$bare_addr" --noise-key "$bare_key" --type serial
python3 "$(dirname "$0")/profile-groups.py" "$tmp" "$((T - 2))" pozd-plain pozd-noise bare-nk
# PROFILE_OUT=DIR keeps the reports (perf report text and poz-load JSON).
[ -n "${PROFILE_OUT:-}" ] && mkdir -p "$PROFILE_OUT" && cp "$tmp"/*.txt "$tmp"/*.json "$PROFILE_OUT"/
