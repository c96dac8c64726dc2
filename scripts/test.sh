#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (nextest), doc tests.
# This is the README's second command and exactly what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export EVENTDBX_TEST_PYTHON="$PWD/.venv/bin/python"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== doc tests"
cargo test --workspace --locked --doc
