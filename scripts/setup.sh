#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh machine (Rust, Python 3.11 and pip
# assumed): a local .venv with the Python test dependencies, Debian's capnproto so the
# committed Cap'n Proto code can be checked against the schema, Debian's PostgreSQL for the
# PostgreSQL engine's tests, and cargo-fuzz for the fuzz targets. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

if ! command -v capnp >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing capnproto (schema drift check)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq capnproto) >/dev/null 2>&1 \
      || echo "setup: capnproto unavailable; the schema drift test will skip its comparison"
  else
    echo "setup: no capnp compiler; the schema drift test will skip its comparison"
  fi
fi

# The PostgreSQL engine's tests start their own scratch cluster with Debian's PostgreSQL
# (initdb, pg_ctl, psql under /usr/lib/postgresql/*/bin); they fail without it.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing PostgreSQL (the PostgreSQL engine's tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
  else
    echo "setup: PostgreSQL is not installed and cannot be (needs apt-get as root);" \
      "the PostgreSQL engine's tests will fail" >&2
  fi
fi

# scripts/fuzz.sh: cargo-fuzz from crates.io, built with its own lock file (it runs on stable).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz (scripts/fuzz.sh)"
  cargo install --locked --quiet cargo-fuzz --version "~0.13"
fi

# dbx's allocator (jemalloc, built from its C source by tikv-jemalloc-sys) needs make.
if ! command -v make >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing make (jemalloc's build)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make) >/dev/null
  else
    echo "setup: make is not installed and cannot be (needs apt-get as root); dbx will not build" >&2
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo-nextest not found; tests will run with cargo test"
fi
