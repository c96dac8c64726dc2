//! The EventDBX domain, with no I/O: what an aggregate, an event and a snapshot are, the rules
//! that names and writes follow, and the small languages of reads.
//!
//! # Layout
//! - [`aggregate`]: aggregate state, snapshots and their JSON shapes.
//! - [`error`]: the domain error and its wire codes.
//! - [`query`]: the filter language, the sort grammar and cursor formats.
//! - [`names`]: names and write inputs, validated with the spec's messages.
//! - [`merkle`]: the domain-separated event hash and Merkle root.
//! - [`patch`]: RFC 6902 patches with EventDBX's semantics.
//! - [`plugin`]: payload modes, priorities, publish-target routing, plugin jobs and retries.
//! - [`snowflake`]: event and snapshot ids.
//! - [`time`]: RFC 3339 timestamps without a clock.
//! - [`write`]: the rules of create, append and patch, and sealing an event.

pub mod aggregate;
pub mod error;
pub mod merkle;
pub mod names;
pub mod patch;
pub mod plugin;
pub mod query;
pub mod schema;
pub mod snowflake;
pub mod time;
pub mod write;

pub use error::{CoreError, Result};
