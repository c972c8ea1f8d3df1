#!/usr/bin/env bash
# The soak (issue 16): the split fleet across network namespaces with
# mutual TLS (the fault harness's, load-tests/tests/faults) under its mixed
# load for SECS seconds with no fault, sampling every EVERY seconds each
# service's resident memory and open descriptors and Postgres's client
# connections. Prints the samples as a table; fails on a lost write, a
# wrong answer or an undocumented status. Needs root (namespaces).
#   SECS=1800 EVERY=60 load-tests/soak.sh
# (pozd is not soaked by this script: see docs/BENCHMARKS.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-1800}; EVERY=${EVERY:-60}
if [ "$(id -u)" != 0 ]; then echo "needs root (network namespaces)" >&2; exit 1; fi
cargo build -q -p poz-store -p poz-verifier -p poz-signer -p poz-provider -p poz-query-gw -p poz-submit-gw
table=$(mktemp); log=$(mktemp)
trap 'rm -f "$table" "$log"' EXIT
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); kernel $(uname -r); $SECS s, a sample every $EVERY s"
set +e
POZ_SOAK_SECS=$SECS POZ_SOAK_EVERY_SECS=$EVERY POZ_FAULTS_TABLE=$table nice -n 19 \
  cargo test -q -p poz-load-tests --test faults soak -- --ignored --exact --nocapture >"$log" 2>&1
rc=$?
set -e
grep -v '^|' "$log" | grep -v '^ \+\(at \|[0-9]\+:\)' | tail -n 30
echo
cat "$table"
exit $rc
