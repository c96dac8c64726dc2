#!/usr/bin/env bash
# The README's first command: set everything up, start a dbx server on an embedded data
# directory, and run the quickstart against it over real TCP on 127.0.0.1.
#
# The Python SDK is not built yet, so the quickstart is the product README's sequence of calls
# through the Rust client (crates/eventdbx-client/examples/quickstart.rs): create, apply, patch,
# archive, restore, get, select, filtered and sorted list with cursors, events, verify, snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked -p eventdbx-cli
cargo build --locked -p eventdbx-client --example quickstart
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
EVENTDBX_HOST=127.0.0.1 EVENTDBX_PORT=$control_port EVENTDBX_TENANT_ID=default \
EVENTDBX_TOKEN="$(cat "$workspace/.dbx/cli.token")" \
  cargo run --locked --quiet -p eventdbx-client --example quickstart
