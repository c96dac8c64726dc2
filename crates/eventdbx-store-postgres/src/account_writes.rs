//! The `account` aggregates the group and writer tests write: an engine on a database of the
//! shared test cluster, a plain write whose payload is its number `n`, and an aggregate's history
//! of those numbers.

use std::sync::Arc;

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EventStore, WriteRequest};
use serde_json::json;

use crate::cluster::TestCluster;
use crate::{PostgresConfig, PostgresStore};

/// The tenant every test write goes to.
pub(crate) const T: &str = "default";

/// An engine with snowflake worker `worker_id` on the shared cluster's database `name`.
pub(crate) fn open(name: &str, worker_id: u16) -> PostgresStore {
    let mut config = PostgresConfig::new(TestCluster::shared().database(name), Durability::Fsync);
    config.worker_id = worker_id;
    PostgresStore::open(&config).expect("open the engine")
}

/// A write of `account` `id` whose payload is `{"n": n}`.
pub(crate) fn request(kind: WriteKind, id: &str, n: u64) -> WriteRequest {
    let mut request = WriteRequest::new(
        kind,
        "account",
        id,
        "thing.changed",
        WriteBody::Payload(json!({ "n": n })),
    );
    // As the server asks: keep the reference index, here with no reference found.
    request.references = Some(Arc::new(|_| Vec::new()));
    request
}

/// The payloads' `n` of an aggregate's events, in version order.
pub(crate) fn history(store: &PostgresStore, id: &str) -> Vec<u64> {
    let page = store
        .events(T, "account", id, 0, 100, None)
        .expect("events");
    page.events
        .iter()
        .enumerate()
        .map(|(k, event)| {
            assert_eq!(event.version, k as u64 + 1, "versions are gapless");
            event.payload["n"].as_u64().expect("n")
        })
        .collect()
}
