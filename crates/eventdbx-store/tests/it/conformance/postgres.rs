//! The conformance suite on the PostgreSQL engine: one scratch cluster per test process
//! (`eventdbx_store_postgres::cluster`, stopped when the process ends) and one database per test
//! directory, so tests stay independent and parallel and a reopen of the directory finds the
//! same data. A test that cannot start or reach PostgreSQL fails; it never skips.

// The suite's files are compiled once per engine on purpose: that is the parametrisation.
#![allow(clippy::duplicate_mod)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use eventdbx_store::{Durability, EventStore, Storage};
use eventdbx_store_postgres::cluster::TestCluster;
use eventdbx_store_postgres::PostgresConfig;

pub(crate) use super::{append, append_until_refused, domain, request, T};

#[path = "jobs.rs"]
mod jobs;
#[path = "paging.rs"]
mod paging;
#[path = "positions.rs"]
mod positions;
#[path = "references.rs"]
pub(crate) mod references;
#[path = "writes.rs"]
mod writes;

/// Commit listeners hear a head once a round numbered the commit's events, just after the
/// write returns (docs/subscriptions.md, "Positions").
pub(crate) const LISTENERS_HEAR_BEFORE_THE_WRITE_RETURNS: bool = false;

/// The engine under test, opened (or reopened) on the database of `dir` with `durability`.
pub(crate) fn engine(dir: &Path, durability: Durability) -> Storage {
    let mut hasher = DefaultHasher::new();
    dir.hash(&mut hasher);
    let url = TestCluster::shared().database(&format!("t{:016x}", hasher.finish()));
    let mut config = PostgresConfig::new(url, durability);
    config.pool_size = 8;
    eventdbx_store_postgres::open_postgres(&config).expect("open the engine")
}

/// The event store of a durable engine on `dir`.
pub(crate) fn open(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Fsync).events
}

/// The event store of a relaxed engine on `dir`.
pub(crate) fn relaxed(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Relaxed).events
}
