//! The small languages of reads (`docs/server.md`, "Reads"): the sort grammar, cursor formats
//! and keyset paging, and the filter language.
//!
//! Everything here reads aggregates and events through borrowed views ([`AggregateView`],
//! [`EventView`]) so that a store can evaluate filters and sort keys on its own records without
//! building an owned copy per item.
//!
//! # Layout
//! - [`sort`]: `field[:asc|desc]` directives, sort keys and their total order.
//! - [`cursor`]: every cursor format, and the paging plan that turns a sort plus a cursor into
//!   "resume strictly after this key".
//! - [`filter`]: tokenizer, recursive-descent parser, canonical printer and evaluator.

use serde_json::{Map, Value};

pub mod cursor;
pub mod filter;
pub mod sort;

/// A borrowed view of one aggregate: exactly the fields filters, sorts and cursors read.
///
/// Timestamps are epoch milliseconds because that is what filters compare and cursors encode;
/// the RFC 3339 text of the JSON shape is the store's business.
#[derive(Debug, Clone, Copy)]
pub struct AggregateView<'a> {
    /// The aggregate type, e.g. `person`.
    pub aggregate_type: &'a str,
    /// The aggregate id, e.g. `p-1`.
    pub aggregate_id: &'a str,
    /// The number of events the aggregate has.
    pub version: u64,
    /// Whether the aggregate sits in the archived set.
    pub archived: bool,
    /// Commit time of the first event, epoch ms; `None` when unknown.
    pub created_at: Option<i64>,
    /// Time of the last event, archive or restore, epoch ms; `None` when unknown.
    pub updated_at: Option<i64>,
    /// The aggregate's Merkle root (64 lowercase hex characters).
    pub merkle_root: &'a str,
    /// The merged state (hidden fields already removed by the caller).
    pub state: &'a Map<String, Value>,
    /// The merged extension map with normalised keys (`@created_by`).
    pub extensions: &'a Map<String, Value>,
}

/// A borrowed view of one stored event, for `listEvents` filters (`docs/server.md`, "Filter",
/// on events).
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// The aggregate type.
    pub aggregate_type: &'a str,
    /// The aggregate id.
    pub aggregate_id: &'a str,
    /// The normalised event type (dots replaced by `_`).
    pub event_type: &'a str,
    /// The 1-based version of this event.
    pub version: u64,
    /// The Snowflake id; filters see it as a decimal string, as in the JSON shape.
    pub event_id: u64,
    /// Commit time, epoch ms.
    pub created_at: i64,
    /// The aggregate's Merkle root after this event.
    pub merkle_root: &'a str,
    /// The event hash.
    pub hash: &'a str,
    /// The event note, when one was sent.
    pub note: Option<&'a str>,
    /// `(group, user)` of the token that wrote the event; `None` for server-written events.
    pub issued_by: Option<(&'a str, &'a str)>,
    /// The request's `metadataJson`, raw keys; `None` when absent.
    pub extensions: Option<&'a Value>,
    /// The event payload.
    pub payload: &'a Value,
}

/// Which aggregate sets a listing reads (`docs/server.md`, "Listing aggregates").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Active aggregates only (the default).
    Active,
    /// Active and archived aggregates.
    ActiveAndArchived,
    /// Archived aggregates only.
    ArchivedOnly,
}

impl Scope {
    /// Whether an aggregate with this archived flag belongs to the scope.
    pub fn contains(self, archived: bool) -> bool {
        match self {
            Scope::Active => !archived,
            Scope::ActiveAndArchived => true,
            Scope::ArchivedOnly => archived,
        }
    }
}
