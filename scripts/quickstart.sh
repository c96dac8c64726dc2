#!/usr/bin/env bash
# The README's first command: set everything up, start a dbx server on an embedded data
# directory, and run the product README's quickstart against it over real TCP on 127.0.0.1:
# the Python SDK (crates/eventdbx-py/examples/quickstart.py: the README's calls as written,
# publish targets included) and the same flow through the Rust client
# (crates/eventdbx-client/examples/quickstart.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked -p eventdbx-cli
cargo build --locked -p eventdbx-client --example quickstart
# The Python SDK into .venv, as the README's development steps do (dev profile: the same build
# as above).
MATURIN_PEP517_ARGS="--profile dev" .venv/bin/python -m pip install --quiet \
  --disable-pip-version-check -e ".[dev]" -c scripts/requirements-test.txt
python="$PWD/.venv/bin/python"
dbx="$PWD/target/debug/dbx"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then dbx="$CARGO_TARGET_DIR/debug/dbx"; fi

# A workspace of its own, on free ports, so nothing on the machine is disturbed.
workspace="$PWD/.dbx-run"
rm -rf "$workspace"
mkdir -p "$workspace"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
control_port=$(free_port)
http_port=$(free_port)
(cd "$workspace" && "$dbx" init)
sed -i "s/127.0.0.1:6363/127.0.0.1:$control_port/; s/^port = 7070/port = $http_port/" "$workspace/.dbx/config.toml"
(cd "$workspace" && "$dbx" start)
trap '(cd "$workspace" && "$dbx" stop) || true' EXIT

# The README's publish targets name these plugins; `log` plugins need no external service
# (their lines go to the server log, target eventdbx.plugin.log).
for plugin in webhook analytics-engine fraud-worker; do
  (cd "$workspace" && "$dbx" plugin add "$plugin" --kind log --template "$plugin {aggregate} {id} {event}" >/dev/null)
done
(cd "$workspace" && "$dbx" plugin list)

curl -fsS "http://127.0.0.1:$http_port/health" && echo
export EVENTDBX_HOST=127.0.0.1 EVENTDBX_PORT=$control_port EVENTDBX_TENANT_ID=default
EVENTDBX_TOKEN="$(cat "$workspace/.dbx/cli.token")"
export EVENTDBX_TOKEN
echo "== the product README's quickstart through the Python SDK"
.venv/bin/python crates/eventdbx-py/examples/quickstart.py
echo "== the same flow through the Rust client"
cargo run --locked --quiet -p eventdbx-client --example quickstart
# The plugins' deliveries (background, from the durable outbox): wait until none is pending.
for _ in $(seq 50); do
  pending=$(cd "$workspace" && "$dbx" queue list --json | "$python" -c \
    'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["pending"]+c["processing"])' 2>/dev/null || echo 1)
  [ "$pending" = 0 ] && break
  sleep 0.1
done
echo "== plugin jobs"
(cd "$workspace" && "$dbx" queue list)
