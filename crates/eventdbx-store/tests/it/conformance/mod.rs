//! The conformance suite: the behaviour every storage engine owes the server, written against
//! the [`EventStore`](eventdbx_store::EventStore) and [`JobQueue`](eventdbx_store::JobQueue)
//! traits only. The suite's files (`writes`, `paging`, `references`, `jobs`) are compiled once
//! per engine, as modules of that engine's file (`redb.rs`, `postgres.rs`), which defines the
//! one constructor the tests use, `engine(dir, durability)`. So the same tests run on both
//! engines under their engine's name (`conformance::redb::writes::...`,
//! `conformance::postgres::writes::...`); see "Engines and the conformance suite" in
//! `docs/storage.md`. Engine-specific tests (crash safety, relaxed commit internals, the on-disk
//! layout) live beside this module, not in it.

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{EventStore, StoreError, WriteRequest};
use serde_json::{json, Value};

pub(crate) mod postgres;
pub(crate) mod redb;

/// The embedded engine's reference scan, used by its own tests beside the suite.
pub(crate) use redb::references;

pub(crate) const T: &str = "default";

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
