#!/usr/bin/env bash
# Long fuzzing runs of the POZ fuzz targets (fuzz/, bodies in
# services/fuzzing): each target in turn for a fixed number of executions
# (--runs N) or a fixed time (--seconds S), then one table of executions,
# time, executions per second, crashes and corpus growth per target.
#
#   load-tests/fuzz-long.sh [--runs N] [--seconds S] [--parallel 2] [--merge] [--out DIR] [TARGET...]
#
# With both --runs and --seconds, each target stops at whichever comes
# first. Default: every target (record entry frame codec noise grpc), 60 s each,
# one at a time, under `nice -n 19`. Works on the stable toolchain: the
# targets are built with `cargo fuzz build --sanitizer none -a -O`
# (coverage instrumentation and libFuzzer need no nightly flag; -a keeps
# debug assertions and overflow checks on, since every panic is a bug).
# cargo-fuzz itself comes from crates.io (`cargo install cargo-fuzz`).
#
# Each run reads the checked-in corpus fuzz/corpus/<target> and writes
# what it finds to a scratch corpus (out/fuzz/<target>, next to this
# script), never to the checked-in one; --merge then adds to
# fuzz/corpus/<target> only the scratch inputs that reach new coverage
# (libFuzzer -merge=1). A crash leaves its input in
# fuzz/artifacts/<target>/ and counts in the table; the script exits 1
# if any target crashed. Logs: out/fuzz/<target>.log (--out DIR: DIR
# instead of out/fuzz, for a second run of a target beside the first).
# Build directory: $POZ_FUZZ_TARGET_DIR (default ~/.cache/poz-fuzz-target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

runs=""
seconds=""
parallel=1
merge=0
out="$root/load-tests/out/fuzz"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    --out) out=$(realpath -m "$2"); shift 2 ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(record entry frame codec noise grpc)
case "$parallel" in 1|2) ;; *) echo "--parallel is 1 or 2 (the machine is shared)" >&2; exit 2 ;; esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1
fi
export CARGO_TARGET_DIR=${POZ_FUZZ_TARGET_DIR:-$HOME/.cache/poz-fuzz-target}
features=()
for t in "${targets[@]}"; do [ "$t" = grpc ] && features=(--features grpc); done
echo "== building ${targets[*]} (commit $(git rev-parse --short HEAD))"
(cd fuzz && nice -n 19 cargo fuzz build --sanitizer none -a -O "${features[@]}" >/dev/null)
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
mkdir -p "$out"

[ -n "$runs" ] || [ -n "$seconds" ] || seconds=60
limit=()
if [ -n "$runs" ]; then limit+=(-runs="$runs"); fi
if [ -n "$seconds" ]; then limit+=(-max_total_time="$seconds"); fi

run_one() {
  local t=$1
  mkdir -p "$out/$t" "fuzz/artifacts/$t"
  local start end status=0
  touch "$out/$t.start"
  start=$(date +%s)
  nice -n 19 "$bin/$t" "$out/$t" "fuzz/corpus/$t" "${limit[@]}" \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$out/$t.log" 2>&1 || status=$?
  end=$(date +%s)
  echo "$status $((end - start))" >"$out/$t.status"
}

pids=()
for t in "${targets[@]}"; do
  echo "== fuzzing $t (${runs:+$runs runs }${seconds:+$seconds s})"
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$parallel" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

failed=0
printf '%-8s %14s %9s %10s %8s %10s %10s\n' target executions seconds exec/s crashes new_units corpus
for t in "${targets[@]}"; do
  read -r status secs <"$out/$t.status"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -n 1)
  newu=$(sed -n 's/^stat::new_units_added: *//p' "$out/$t.log" | tail -n 1)
  # libFuzzer stops at the first crash (or leak, timeout, out-of-memory)
  # and writes its input to the artifacts directory.
  crashes=$(find "fuzz/artifacts/$t" -type f -newer "$out/$t.start" | wc -l)
  if [ "$status" != 0 ]; then crashes=$((crashes > 0 ? crashes : 1)); failed=1; fi
  execs=${execs:-0}
  rate=$(( secs > 0 ? execs / secs : execs ))
  if [ "$merge" = 1 ] && [ "$status" = 0 ]; then
    nice -n 19 "$bin/$t" -merge=1 "fuzz/corpus/$t" "$out/$t" >"$out/$t.merge.log" 2>&1 || true
  fi
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  printf '%-8s %14s %9s %10s %8s %10s %10s\n' "$t" "$execs" "$secs" "$rate" "$crashes" "${newu:-0}" "$corpus"
done
exit $failed
