//! The conformance suite on the embedded engine: `open_embedded` on a file in the test's
//! directory, so a reopen of the directory finds the same database.

// The suite's files are compiled once per engine on purpose: that is the parametrisation.
#![allow(clippy::duplicate_mod)]

use std::path::Path;
use std::sync::Arc;

use eventdbx_store::{Durability, EventStore, Storage};

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

/// Commit listeners are called inside the commit, before the write returns.
pub(crate) const LISTENERS_HEAR_BEFORE_THE_WRITE_RETURNS: bool = true;

/// The engine under test, opened (or reopened) on `dir` with `durability`. Every engine must
/// honour both durability modes; the suite uses relaxed mode where a test writes a lot.
pub(crate) fn engine(dir: &Path, durability: Durability) -> Storage {
    eventdbx_store::open_embedded(dir.join("data.redb"), durability, 0).expect("open the engine")
}

/// The event store of a durable engine on `dir`.
pub(crate) fn open(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Fsync).events
}

/// The event store of a relaxed engine on `dir`.
pub(crate) fn relaxed(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    engine(dir.path(), Durability::Relaxed).events
}
