//! The conformance suite: the behaviour every storage engine owes the server, written against
//! the [`EventStore`] and [`JobQueue`] traits only. Each test gets its engine from [`engine`] and
//! nothing else, so a second engine runs the same tests by changing that one function (see
//! "Engines and the conformance suite" in `docs/storage.md`). Engine-specific tests (crash
//! safety, relaxed commit internals, the on-disk layout) live beside this module, not in it.

use std::path::Path;
use std::sync::Arc;

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{Durability, EventStore, Storage, StoreError, WriteRequest};
use serde_json::{json, Value};

mod jobs;
mod paging;
mod positions;
pub(crate) mod references;
mod writes;

/// The engine under test, opened (or reopened) on `dir` with `durability`. Every engine must
/// honour both durability modes; the suite uses relaxed mode where a test writes a lot.
pub(crate) fn engine(dir: &Path, durability: Durability) -> Storage {
    eventdbx_store::open_embedded(dir.join("data.redb"), durability, 0).expect("open the engine")
}

pub(crate) const T: &str = "default";

/// The event store of a durable engine on `dir`.
pub(crate) fn open(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Fsync).events
}

/// The event store of a relaxed engine on `dir`.
pub(crate) fn relaxed(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Relaxed).events
}

pub(crate) fn request(kind: WriteKind, t: &str, id: &str, payload: Value) -> WriteRequest {
    WriteRequest::new(kind, t, id, "thing.changed", WriteBody::Payload(payload))
}

pub(crate) fn append(
    store: &dyn EventStore,
    tenant: &str,
    t: &str,
    id: &str,
    payload: Value,
) -> u64 {
    store
        .write(tenant, request(WriteKind::Append, t, id, payload))
        .expect("append")
        .event
        .version
}

pub(crate) fn domain(err: StoreError) -> CoreError {
    match err {
        StoreError::Domain(err) => err,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

/// Appends `blob_len`-byte payloads to one aggregate under a tenant quota of `quota` bytes
/// until a write is refused: the writes accepted and the refusal.
pub(crate) fn append_until_refused(
    store: &dyn EventStore,
    t: &str,
    id: &str,
    blob_len: usize,
    quota: u64,
) -> (u64, StoreError) {
    let mut accepted = 0;
    loop {
        let mut write = request(
            WriteKind::Append,
            t,
            id,
            json!({"blob": "x".repeat(blob_len)}),
        );
        write.quota_bytes = Some(quota);
        match store.write(T, write) {
            Ok(_) => accepted += 1,
            Err(err) => return (accepted, err),
        }
        assert!(accepted < 100, "quota never enforced");
    }
}
