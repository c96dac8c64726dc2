#!/usr/bin/env bash
# Regenerates the committed Cap'n Proto code of eventdbx-proto from its schema.
#
# crates/eventdbx-proto/schema/*.capnp  ->  crates/eventdbx-proto/src/schema/*_capnp.rs
#   control.capnp -> control_capnp.rs   (control protocol)
#   schema.capnp  -> schema_capnp.rs    (schema and tenant administration)
#   plugin.capnp  -> plugin_capnp.rs    (process plugins: PluginEnvelope on a child's stdin/stdout)
# The list of files lives in the schema_drift test (tests/it/schema_drift.rs): add a new schema there.
#
# Needs the `capnp` compiler on PATH (Debian/Ubuntu: apt-get install capnproto). The generated files
# are committed exactly as capnpc writes them (src/schema.rs marks them #[rustfmt::skip]), so the
# schema_drift test can compare them byte for byte. Run this after every schema change and commit
# both the schema and the regenerated files.
set -euo pipefail

if ! command -v capnp >/dev/null 2>&1; then
    echo "regen-capnp: the capnp compiler is not on PATH (apt-get install capnproto)" >&2
    exit 1
fi

cd "$(dirname "$0")/.."
# The generator lives in the drift test so that regeneration and the drift check can never
# disagree on capnpc's options.
cargo test -p eventdbx-proto --test it -- --ignored --exact schema_drift::regenerate_committed_code
cargo test -p eventdbx-proto --test it -- --exact schema_drift::committed_code_matches_schema
echo "regen-capnp: src/schema/ regenerated; review with git diff and commit it with the schema"
