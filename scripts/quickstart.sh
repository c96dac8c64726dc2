#!/usr/bin/env bash
# The README's first command: set everything up and run the main job that exists today.
#
# The server (`dbx`) and the Python SDK are not built yet (see the open issues); what exists is
# the wire-protocol crate. This script builds it and runs its loopback demo: a v2 handshake
# (Noise XXpsk3, token-derived PSK, pinned server key) and a 1 MiB chunked round trip over real
# TCP on 127.0.0.1, then a v1 handshake (Noise NNpsk0, EventDBX's own) on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo run --quiet --locked -p eventdbx-proto --example loopback_handshake
