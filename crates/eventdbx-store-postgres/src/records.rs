//! The stored forms: the aggregate record (domain fields, Merkle frontier, archive bookkeeping),
//! snapshots and idempotency results, serialised as JSON text exactly as the embedded engine
//! serialises them (same fields, same order), so stored byte counts agree between engines.

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, Event, MerkleBuilder};
use eventdbx_core::time::parse_unix_millis;
use eventdbx_store::{Result, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json_error;

/// An aggregate as stored in `aggregates.record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AggregateRecord {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: u64,
    pub(crate) state: Map<String, Value>,
    pub(crate) extensions: Map<String, Value>,
    pub(crate) merkle_root: String,
    pub(crate) created_at: Option<String>,
    pub(crate) updated_at: Option<String>,
    pub(crate) archived: bool,
    /// The Merkle frontier as (leaf count, hex digest), largest subtree first.
    pub(crate) frontier: Vec<(u64, String)>,
    pub(crate) archived_at: Option<String>,
    pub(crate) archive_note: Option<String>,
}

impl AggregateRecord {
    pub(crate) fn from_aggregate(aggregate: &Aggregate, merkle: &MerkleBuilder) -> Self {
        AggregateRecord {
            aggregate_type: aggregate.aggregate_type.clone(),
            aggregate_id: aggregate.aggregate_id.clone(),
            version: aggregate.version,
            state: aggregate.state.clone(),
            extensions: aggregate.extensions.clone(),
            merkle_root: aggregate.merkle_root.clone(),
            created_at: aggregate.created_at.clone(),
            updated_at: aggregate.updated_at.clone(),
            archived: aggregate.archived,
            frontier: merkle
                .frontier()
                .iter()
                .map(|(n, d)| (*n, merkle::to_hex(d)))
                .collect(),
            archived_at: None,
            archive_note: None,
        }
    }

    pub(crate) fn aggregate(&self) -> Aggregate {
        Aggregate {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            version: self.version,
            state: self.state.clone(),
            extensions: self.extensions.clone(),
            merkle_root: self.merkle_root.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            archived: self.archived,
        }
    }

    pub(crate) fn merkle(&self) -> Result<MerkleBuilder> {
        let frontier = self
            .frontier
            .iter()
            .map(|(n, hex)| Ok((*n, digest_from_hex(hex)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MerkleBuilder::from_frontier(frontier)?)
    }

    /// The record's columns besides the key and revision: version, archived, created and
    /// updated sort values (epoch ms + 1, 0 when absent) and the JSON text.
    pub(crate) fn columns(&self) -> Result<RecordColumns> {
        Ok(RecordColumns {
            version: crate::signed(self.version),
            archived: self.archived,
            created_ms: timestamp_value(self.created_at.as_deref()),
            updated_ms: timestamp_value(self.updated_at.as_deref()),
            text: serde_json::to_string(self).map_err(json_error)?,
        })
    }
}

/// What an `aggregates` row stores of a record.
#[derive(Debug, Clone)]
pub(crate) struct RecordColumns {
    pub(crate) version: i64,
    pub(crate) archived: bool,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
    pub(crate) text: String,
}

/// Sort value of a timestamp: 0 when absent (sorts first), else epoch ms + 1.
fn timestamp_value(text: Option<&str>) -> i64 {
    text.and_then(parse_unix_millis)
        .map_or(0, |ms| crate::signed(ms + 1))
}

/// A Merkle digest from its stored hex form.
fn digest_from_hex(hex: &str) -> Result<merkle::Digest> {
    let bad = || StoreError::engine("stored merkle frontier is not hex");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// A snapshot as stored in `snapshots.body`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) snapshot_id: u64,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: u64,
    pub(crate) state: Map<String, Value>,
    pub(crate) merkle_root: String,
    pub(crate) created_at: String,
    pub(crate) comment: Option<String>,
}

impl From<&Snapshot> for SnapshotRecord {
    fn from(s: &Snapshot) -> Self {
        SnapshotRecord {
            snapshot_id: s.snapshot_id,
            aggregate_type: s.aggregate_type.clone(),
            aggregate_id: s.aggregate_id.clone(),
            version: s.version,
            state: s.state.clone(),
            merkle_root: s.merkle_root.clone(),
            created_at: s.created_at.clone(),
            comment: s.comment.clone(),
        }
    }
}

impl From<SnapshotRecord> for Snapshot {
    fn from(s: SnapshotRecord) -> Self {
        Snapshot {
            snapshot_id: s.snapshot_id,
            aggregate_type: s.aggregate_type,
            aggregate_id: s.aggregate_id,
            version: s.version,
            state: s.state,
            merkle_root: s.merkle_root,
            created_at: s.created_at,
            comment: s.comment,
        }
    }
}

/// The first result of an idempotency key, as stored in `idempotency.body`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub(crate) digest: String,
    pub(crate) event: Event,
    pub(crate) aggregate: AggregateRecord,
}

/// Decodes a stored JSON text.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(json_error)
}
