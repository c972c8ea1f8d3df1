#!/usr/bin/env bash
# One command for every lookup figure in docs/BENCHMARKS.md ("Side by side
# with Knot DNS"): starts, on this machine and in one run,
#   - Knot DNS (Debian's `knot`, installed when missing) serving a zone of
#     BINDINGS TXT names signed with Ed25519 (DNSSEC algorithm 15), each
#     answer about the size of an IDENTITY answer;
#   - the bare Noise NK responder (bare-nk), the ceiling for Noise lookups;
#   - pozd (the whole fleet in one process, SQLite) holding BINDINGS
#     bindings, cache off and then on;
#   - the split fleet: poz-store on Postgres (a throwaway database) holding
#     BINDINGS bindings, and two poz-query-gw in front of it (cache off, on);
# and drives every one with poz-load (the same generator: DNS over TCP for
# Knot, the POZ protocol for the rest), a new TCP connection per query from
# 4,000 loopback addresses, handles drawn at random among BINDINGS:
#   1. closed loop at CONCURRENCY, plaintext and Noise, cache off and on;
#   2. open loop at fixed arrival rates (fractions of each server's closed
#      loop maximum; latency from the scheduled arrival, so no coordinated
#      omission);
#   3. a flood: clients that never solve PoW at FLOOD_X times pozd's
#      capacity beside honest clients that do.
# It writes every result as JSON lines and SVG plots to OUT and prints the
# ratios of the goals of issue 15 (card #10). PHASES picks what to run (default
# all: closed open cache flood; a flood alone measures pozd's capacity
# first).
#   [BINDINGS=1000000] [CONCURRENCY=64] [SECS=6] [OUT=load-tests/out/compare] [PHASES=...] load-tests/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}" "${PGUSER:=postgres}"
export PGHOST PGPORT PGUSER
BINDINGS=${BINDINGS:-1000000}; C=${CONCURRENCY:-64}; T=${SECS:-6}
FLOOD_X=${FLOOD_X:-4}
PHASES=${PHASES:-closed open cache flood}
has() { [[ " $PHASES " == *" $1 "* ]]; }
OUT=${OUT:-$root/load-tests/out/compare}
mkdir -p "$OUT"; : >"$OUT/results.jsonl"
DB=poz_compare_$$

if (has closed || has open) && ! command -v knotd >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "compare.sh: knotd missing; install Debian's knot (as root)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q knot >/dev/null
fi
cargo build --release -q -p pozd -p poz-store -p poz-query-gw -p poz-load-tests
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
wait_for() { # file pattern seconds
    for _ in $(seq $((${3:-30} * 10))); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "compare.sh: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(free -g | awk '/Mem:/{print $2}') GiB;" \
     "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!load-tests/out' || echo '+changes');" \
     "$BINDINGS bindings, concurrency $C, $T s per load"

# --- the split fleet on Postgres, loaded first: its size per binding is
# measured on a quiet database.
psql -qAt -d postgres -c "CREATE DATABASE $DB" >/dev/null
"$bin/poz-store" --insecure --listen 127.0.0.1:0 --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$DB" \
    >"$tmp/store.out" 2>"$tmp/store.err" & pids+=($!)
wait_for "$tmp/store.out" '^listening '
store=$(sed -n 's/^listening //p' "$tmp/store.out")
echo "loading $BINDINGS bindings into poz-store on Postgres"
"$bin/store-identity" --endpoint "http://$store" --bindings "$BINDINGS" --concurrency 1 --seconds 1 --warmup 0 >/dev/null 2>&1
hex32 >"$tmp/noise.key"; hex32 >"$tmp/secrets"
gateway() { # name cache_ttl_ms
    local P N
    P=$(port); N=$(port)
    POZ_QUERY_GW_NOISE_KEY_FILE="$tmp/noise.key" POZ_QUERY_GW_CHALLENGE_SECRETS_FILE="$tmp/secrets" \
    POZ_QUERY_GW_CACHE_TTL_MS="$2" \
        "$bin/poz-query-gw" --insecure --listen-plain "127.0.0.1:$P" --listen-noise "127.0.0.1:$N" --store "http://$store" \
        >"$tmp/$1.out" 2>"$tmp/$1.err" & pids+=($!)
    wait_for "$tmp/$1.out" 'noise'
}
gateway split-off 0
gateway split-on 1000
split_key=$(awk '{print $7}' "$tmp/split-off.out")

# --- pozd on SQLite, loaded through its store port.
pozd_start() { # cache_ttl_ms
    PZ=$(port); NZ=$(port); SZ=$(port)
    "$bin/pozd" --data "$tmp/pozd-data" --plain "127.0.0.1:$PZ" --noise "127.0.0.1:$NZ" --submit "127.0.0.1:$SZ" \
        --cache-ttl-ms "$1" >"$tmp/pozd.out" 2>"$tmp/pozd.err" & pozd_pid=$!; pids+=($pozd_pid)
    wait_for "$tmp/pozd.out" 'Try, from another terminal'
    pozd_key=$(sed -n 's/.*Noise NK lookups .* server key \([0-9a-f]*\).*/\1/p' "$tmp/pozd.out")
}
pozd_start 0
pozd_store=$(awk '/store, verifier, signer/{print $4}' "$tmp/pozd.out")
echo "loading $BINDINGS bindings into pozd (SQLite)"
"$bin/store-identity" --endpoint "$pozd_store" --bindings "$BINDINGS" --concurrency 1 --seconds 1 --warmup 0 >/dev/null 2>&1

# --- Knot DNS with the same names, signed. The TXT string is as long as
# one stored binding, so the DNS answer carries what an IDENTITY answer
# carries plus DNS's own signature (RRSIG), as an IDENTITY answer carries
# the provider's.
if has closed || has open; then
answer_len=$("$bin/poz-load" --target "127.0.0.1:$PZ" --domain bench.example --handles user1 --sources 100 --concurrency 1 --seconds 1 --json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["answer_bytes"])')
KP=$(port)
mkdir -p "$tmp/knot/db"
python3 - "$tmp/knot/bench.example.zone" "$BINDINGS" "$answer_len" <<'PY'
import sys
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
txt = '"' + "x" * min(255, size) + '"' + ((' "' + "x" * (size - 255) + '"') if size > 255 else "")
with open(path, "w") as f:
    f.write("$ORIGIN bench.example.\n$TTL 3600\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\n")
    for i in range(n):
        f.write(f"user{i} TXT {txt}\n")
PY
cat >"$tmp/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KP
    rundir: $tmp/knot
    tcp-workers: $(nproc)
    udp-workers: 1
    background-workers: $(nproc)
database:
    storage: $tmp/knot/db
log:
  - target: stderr
    any: warning
policy:
  - id: ed25519
    algorithm: ed25519
    nsec3: off
    single-type-signing: on
template:
  - id: default
    storage: $tmp/knot
    file: "%s.zone"
    dnssec-signing: on
    dnssec-policy: ed25519
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: bench.example
EOF
echo "signing $BINDINGS TXT names with Knot (Ed25519)"
knotd -c "$tmp/knot/knot.conf" >"$tmp/knot.out" 2>&1 & pids+=($!)
for _ in $(seq 3000); do
    "$bin/poz-load" --protocol dns --target "127.0.0.1:$KP" --domain bench.example --handles user1 \
        --sources 100 --concurrency 1 --seconds 1 --json 2>/dev/null | grep -q '"queries": [1-9]' && break
    sleep 1
done

fi

"$bin/bare-nk" >"$tmp/bare.out" & pids+=($!)
wait_for "$tmp/bare.out" 'listening'
bare_addr=$(awk '{print $2}' "$tmp/bare.out"); bare_key=$(awk '{print $4}' "$tmp/bare.out")

# One load: label, then poz-load arguments; appends its JSON (with the
# label) to results.jsonl and prints one line.
load() {
    local label=$1; shift
    "$bin/poz-load" --sources "${SRC:-4000}" --seconds "$T" --domain bench.example --handle-range "user:$BINDINGS" --json "$@" \
        >"$tmp/load.json" 2>"$tmp/load.err" || { cat "$tmp/load.err" >&2; return 1; }
    python3 - "$tmp/load.json" "$label" "$OUT/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["label"] = sys.argv[2]
open(sys.argv[3], "a").write(json.dumps(r) + "\n")
mode = f"open {r['offered_per_second']:.0f}/s" if r["mode"] == "open" else f"closed x{r['concurrency']}"
print(f"{r['label']:<22} {mode:<14} {r['queries_per_second']:>8.0f}/s  ok {100*r['success_rate']:5.1f}%  "
      f"p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  p99.9 {r['p999_ms']:6.2f} ms  {r['errors'] or ''}")
PY
}
closed() { load "$1" --concurrency "$C" "${@:2}"; }
max_of() { python3 - "$OUT/results.jsonl" "$1" <<'PY'
import json, sys
print(int(max(r["queries_per_second"] for r in map(json.loads, open(sys.argv[1])) if r["label"] == sys.argv[2] and r["mode"] == "closed")))
PY
}

declare -A target=(
    [knot]="--protocol dns --target 127.0.0.1:${KP:-0}"
    [bare-nk]="--target $bare_addr --noise-key $bare_key --type serial"
    [split-plain]="--target $(awk '{print $3}' "$tmp/split-off.out")"
    [split-noise]="--target $(awk '{print $5}' "$tmp/split-off.out") --noise-key $split_key"
    [split-plain-cache]="--target $(awk '{print $3}' "$tmp/split-on.out")"
    [split-noise-cache]="--target $(awk '{print $5}' "$tmp/split-on.out") --noise-key $split_key"
)
pozd_targets() {
    target[pozd-plain$1]="--target 127.0.0.1:$PZ"
    target[pozd-noise$1]="--target 127.0.0.1:$NZ --noise-key $pozd_key"
}
pozd_targets ""

has closed && echo "== closed loop"
# Twice each, interleaved, so a slow moment of the machine does not fall
# on one side only; the better of the two is the maximum.
has closed && for round in 1 2; do
    for t in knot pozd-plain split-plain bare-nk pozd-noise split-noise split-plain-cache split-noise-cache; do
        # shellcheck disable=SC2086
        closed "$t" ${target[$t]}
    done
done

has open && echo "== open loop (fractions of each one's closed-loop maximum)"
has open && for t in knot pozd-plain split-plain bare-nk pozd-noise split-noise; do
    max=$(max_of "$t")
    for f in 0.25 0.5 0.75 1.0 1.25; do
        rate=$(python3 -c "print(max(1, int($max * $f)))")
        # shellcheck disable=SC2086
        load "$t" --rate "$rate" ${target[$t]}
    done
done

if has cache; then
echo "== pozd with its answer cache on (1 s)"
kill "$pozd_pid"; wait "$pozd_pid" 2>/dev/null || true
pozd_start 1000
pozd_targets "-cache"
for t in pozd-plain-cache pozd-noise-cache; do
    # shellcheck disable=SC2086
    closed "$t" ${target[$t]}
done
fi

if has flood; then
echo "== flood: clients that never solve PoW at ${FLOOD_X}x pozd's capacity beside honest solving clients"
kill "$pozd_pid"; wait "$pozd_pid" 2>/dev/null || true
pozd_start 0
pozd_targets ""
has closed || { closed pozd-plain ${target[pozd-plain]}; sleep 2; }
cap=$(max_of pozd-plain)
honest=$((cap / 4)); flood=$((cap * FLOOD_X))
# shellcheck disable=SC2086
SRC=1000 load honest-alone --rate "$honest" --source-offset 40000 ${target[pozd-plain]}
"$bin/poz-load" --sources 4000 --seconds "$((T + 2))" --domain bench.example --handle-range "user:$BINDINGS" --json \
    --rate "$flood" --max-pow 0 --max-outstanding 15000 --timeout-s 2 ${target[pozd-plain]} >"$tmp/flood.json" 2>/dev/null & flood_pid=$!
sleep 2
# shellcheck disable=SC2086
SRC=1000 load honest-in-flood --rate "$honest" --source-offset 40000 ${target[pozd-plain]}
wait "$flood_pid" || true
python3 - "$tmp/flood.json" "$OUT/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["label"] = "flood"
open(sys.argv[2], "a").write(json.dumps(r) + "\n")
sat = r["errors"].get("client-saturated", 0)
print(f"flood                  offered {r['offered_per_second']:.0f}/s, sent {(r['attempts'] - sat) / r['seconds']:.0f}/s, "
      f"answered {r['queries_per_second']:.0f}/s  {r['errors']}")
PY
fi

echo "== ratios (goals of issue 15, card #10)"
# matplotlib from PyPI in a cached venv, for the plots.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/poz-tools/plot-venv"
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib >/dev/null || true
fi
py=$venv/bin/python; [ -x "$py" ] || py=python3
"$py" "$root/load-tests/compare-report.py" "$OUT/results.jsonl" "$OUT"
