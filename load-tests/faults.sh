#!/usr/bin/env bash
# The fault harness's long form (issue 16; load-tests/tests/faults): the
# split fleet across network namespaces with mutual TLS under a mixed
# load, then each fault alone and pairs of faults (SIGKILL of every
# service, Postgres fast and immediate shutdown, Redis killed, partitions
# query gateway|store, submit gateway|store and Provider API|signer,
# packet loss, latency where the kernel has netem). Prints the table
# (fault, acknowledged, lost, forks, duplicates, unverified, wrong
# answers, undocumented statuses, statuses seen, recovery time) and
# exits non-zero on any finding. Needs root (network namespaces);
# Debian's iproute2, nftables, postgresql and redis-server.
#   load-tests/faults.sh            # the long form (about 5 minutes)
#   FORM=short load-tests/faults.sh # the form the test command runs
#   POZ_FAULTS_ONLY='partition api' load-tests/faults.sh  # the long form's faults naming these words
set -euo pipefail
cd "$(dirname "$0")/.."
FORM=${FORM:-long}
if [ "$(id -u)" != 0 ]; then echo "needs root (network namespaces)" >&2; exit 1; fi
need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need ip iproute2; need nft nftables; need redis-server redis-server
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
cargo build -q -p poz-store -p poz-verifier -p poz-signer -p poz-provider -p poz-query-gw -p poz-submit-gw
table=$(mktemp); log=$(mktemp)
trap 'rm -f "$table" "$log"' EXIT
echo "$(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); kernel $(uname -r); form $FORM"
test=faults_$FORM
args=(--exact --nocapture)
[ "$FORM" = long ] && args+=(--ignored)
set +e
POZ_FAULTS_TABLE=$table nice -n 19 cargo test -q -p poz-load-tests --test faults "$test" -- "${args[@]}" >"$log" 2>&1
rc=$?
set -e
# The rows as they came, then the findings (if any) and the totals.
grep -v '^ \+\(at \|[0-9]\+:\)' "$log" | grep -v '^|' | tail -n 60
echo
cat "$table"
exit $rc
