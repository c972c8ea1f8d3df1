#!/usr/bin/env bash
# Runs every test of the POZ fleet. This is the README's test command and
# the only thing CI runs (.ci/run). It sets up what the tests need by
# itself: the Rust toolchain, and Python 3 with PyPI's `noiseprotocol` for
# the interop test (an independent Noise NK client).
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

echo "== format"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build serves clippy, the tests and the benchmark smoke run: same
# profile, same features, so nothing is compiled twice.
echo "== benchmarks compile and run once (figures come from cargo bench)"
cargo test --workspace --locked --benches -- --test >/dev/null

echo "== doc tests"
cargo test --workspace --locked --doc

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
