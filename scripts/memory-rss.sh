#!/usr/bin/env bash
# The server's memory (RSS, from /proc) under large messages, by hand (not in CI): the three
# scenarios of docs/server.md, "Messages in flight", each against a fresh `dbx serve`:
#   sequential  20 requests of about 16 MiB on one session;
#   concurrent  8 clients x 5 such requests at once;
#   stall       20 sessions that each send 15 MiB of a 16 MiB message and stop.
# Prints, per scenario, the peak RSS (VmHWM) and the RSS after it (or, for stall, while held).
#
# The RSS "after" is read 1 s after a burst: dbx's allocator (jemalloc with its background
# thread) gives the memory back some seconds later, so read /proc/<pid>/status again ~15 s after
# to see it back near the idle baseline (docs/server.md, "Messages in flight").
#
# usage: scripts/memory-rss.sh [dbx] [large_messages]
#   defaults: the release builds, `cargo build --release -p eventdbx-cli` and
#   `cargo build --release -p eventdbx-proto --example large_messages`.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
dbx="${1:-$target/release/dbx}"
probe="${2:-$target/release/examples/large_messages}"
size=$((16 * 1024 * 1024 - 1024))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss() { awk -v k="$2:" '$1 == k { print int($2 / 1024) " MB" }' "/proc/$1/status"; }

run() {
  local name=$1
  shift
  local workspace port http pid
  workspace=$(mktemp -d)
  port=$(free_port)
  http=$(free_port)
  (cd "$workspace" && "$dbx" init >/dev/null 2>&1)
  sed -i "s/127.0.0.1:6363/127.0.0.1:$port/; s/^port = 7070/port = $http/" "$workspace/.dbx/config.toml"
  (cd "$workspace" && exec "$dbx" serve >"$workspace/serve.log" 2>&1) &
  pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$http/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local token
  token=$(cat "$workspace/.dbx/cli.token")
  local start
  start=$(rss "$pid" VmRSS)
  if [ "$name" = stall ]; then
    # Measured while the sessions are held, once their bytes had time to arrive on a busy
    # machine (inside the 30 s message timeout).
    "$probe" "127.0.0.1:$port" "$token" stall 20 "$size" 20 | {
      read -r _
      sleep 15
      echo "$name: start $start, while held $(rss "$pid" VmRSS), peak $(rss "$pid" VmHWM)"
      cat >/dev/null
    }
  else
    "$probe" "127.0.0.1:$port" "$token" "$@" "$size"
    sleep 1
    echo "$name: start $start, after $(rss "$pid" VmRSS), peak $(rss "$pid" VmHWM)"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$workspace"
}

run sequential sequential 20
run concurrent concurrent 8x5
run stall
