#!/usr/bin/env bash
# Runs every test of the POZ fleet. This is the README's test command and
# the only thing CI runs (.ci/run). It sets up what the tests need by
# itself; today that is the Rust toolchain alone.
set -euo pipefail
cd "$(dirname "$0")/.."

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
