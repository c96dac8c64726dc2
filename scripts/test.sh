#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (nextest), doc tests, the Python SDK.
# This is the README's second command and exactly what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export EVENTDBX_TEST_PYTHON="$PWD/.venv/bin/python"
# Tests start many servers on reused loopback ports: the clients' memory of servers that spoke
# v2 (a file in the user's state directory) must neither leak between tests nor into $HOME.
# The client tests that exercise it point each client at a file of their own.
export EVENTDBX_KNOWN_V2_HOSTS=off

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Before the Rust tests: pg_outage (crate eventdbx-cli) drives this tree's SDK through
# EVENTDBX_TEST_PYTHON.
echo "== Python SDK (crates/eventdbx-py): pip install -e '.[dev]' into .venv, as the README's"
echo "   development steps do (maturin builds the extension in the dev profile, which the tests reuse)"
MATURIN_PEP517_ARGS="--profile dev" .venv/bin/python -m pip install --quiet \
  --disable-pip-version-check -e ".[dev]" -c scripts/requirements-test.txt
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== doc tests"
cargo test --workspace --locked --doc
echo "== fuzz targets, ${FUZZ_SECONDS:-20} s each (scripts/fuzz.sh, docs/testing.md)"
scripts/fuzz.sh
echo "== EventDBX's own Rust client (crates.io eventdbx-client) against our server"
if command -v capnp >/dev/null 2>&1; then
  cargo test --locked --manifest-path compat/reference-client/Cargo.toml
else
  echo "capnp is not installed (scripts/setup.sh installs it with apt-get): compatibility test NOT run"
  exit 1
fi
echo "== Python SDK: the _core.pyi stub against the built extension (mypy.stubtest), ruff"
.venv/bin/python -m mypy.stubtest eventdbx._core
.venv/bin/ruff check
echo "== Python SDK: pytest (testpaths in pyproject.toml: crates/eventdbx-py/tests)"
.venv/bin/python -m pytest -q
echo "== benchmark smoke run: bench/run --quick starts every system and runs every workload"
echo "   (on the debug builds above: BENCH_PROFILE=dev); checked for completeness and its report,"
echo "   never for its figures (bench/check_smoke.py)"
bench_out="$(mktemp -d)"
BENCH_PROFILE=dev bench/run --quick --out "$bench_out"
.venv/bin/python -m bench.check_smoke "$bench_out"
.venv/bin/python -m pytest -q -p no:cacheprovider bench/tests
rm -rf "$bench_out"
