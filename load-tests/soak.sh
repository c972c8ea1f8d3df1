#!/usr/bin/env bash
# The soak (issue 16): the fault harness's mixed load (load-tests/tests/
# faults) for SECS seconds with no fault, sampling every EVERY seconds each
# process's resident memory and open descriptors (and Postgres's client
# connections), against TARGET:
#   split  the split fleet across network namespaces with mutual TLS, its
#          signer's key in SoftHSM2 (needs root: namespaces)
#   pozd   pozd, the whole fleet in one process on SQLite, on loopback
# Prints the samples as a table; fails on a lost write, a wrong answer or
# an undocumented status.
#   TARGET=split SECS=1800 EVERY=60 load-tests/soak.sh
#   TARGET=pozd SECS=1800 EVERY=60 load-tests/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-1800}; EVERY=${EVERY:-60}; TARGET=${TARGET:-split}
case "$TARGET" in
  split) test=soak
    if [ "$(id -u)" != 0 ]; then echo "needs root (network namespaces)" >&2; exit 1; fi
    cargo build -q -p poz-store -p poz-verifier -p poz-signer -p poz-provider -p poz-query-gw -p poz-submit-gw ;;
  pozd) test=soak_pozd; cargo build -q -p pozd ;;
  *) echo "TARGET is split or pozd, not $TARGET" >&2; exit 2 ;;
esac
table=$(mktemp); log=$(mktemp)
trap 'rm -f "$table" "$log"' EXIT
echo "$TARGET: $(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); kernel $(uname -r); $SECS s, a sample every $EVERY s"
set +e
POZ_SOAK_SECS=$SECS POZ_SOAK_EVERY_SECS=$EVERY POZ_FAULTS_TABLE=$table nice -n 19 \
  cargo test -q -p poz-load-tests --test faults "$test" -- --ignored --exact --nocapture >"$log" 2>&1
rc=$?
set -e
grep -v '^|' "$log" | grep -v '^ \+\(at \|[0-9]\+:\)' | tail -n 30
echo
cat "$table"
exit $rc
