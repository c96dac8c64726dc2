//! The stored forms every engine writes: the aggregate record (domain fields, Merkle frontier,
//! archive bookkeeping), snapshots and idempotency results.
//!
//! Both engines serialise these as the same JSON (same fields, same order), so stored byte
//! counts, usage and quotas agree between them (`docs/storage.md`). How a record is keyed and
//! indexed stays with each engine.

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, Event, MerkleBuilder};
use eventdbx_core::time::parse_unix_millis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Result, StoreError};

/// The stored form of an aggregate: the domain fields plus the Merkle frontier and archive
/// bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AggregateRecord {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Version of the latest event.
    pub version: u64,
    /// Current state.
    pub state: Map<String, Value>,
    /// Metadata of the latest write.
    pub extensions: Map<String, Value>,
    /// Merkle root over the events.
    pub merkle_root: String,
    /// RFC 3339 time of the first event.
    pub created_at: Option<String>,
    /// RFC 3339 time of the latest event.
    pub updated_at: Option<String>,
    /// Whether the aggregate is archived.
    pub archived: bool,
    /// The Merkle frontier as (leaf count, hex digest), largest subtree first.
    pub frontier: Vec<(u64, String)>,
    /// When it was archived.
    pub archived_at: Option<String>,
    /// The note of the archive.
    pub archive_note: Option<String>,
}

impl AggregateRecord {
    /// The record of `aggregate` whose events `merkle` has folded.
    pub fn from_aggregate(aggregate: &Aggregate, merkle: &MerkleBuilder) -> Self {
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

    /// The aggregate the record describes.
    pub fn aggregate(&self) -> Aggregate {
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

    /// The Merkle builder the next event extends, from the stored frontier.
    pub fn merkle(&self) -> Result<MerkleBuilder> {
        let frontier = self
            .frontier
            .iter()
            .map(|(n, hex)| Ok((*n, digest_from_hex(hex)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MerkleBuilder::from_frontier(frontier)?)
    }

    /// The sort value of `created_at` ([`timestamp_sort_value`]).
    pub fn created_sort_value(&self) -> u64 {
        timestamp_sort_value(self.created_at.as_deref())
    }

    /// The sort value of `updated_at` ([`timestamp_sort_value`]).
    pub fn updated_sort_value(&self) -> u64 {
        timestamp_sort_value(self.updated_at.as_deref())
    }
}

/// The sort value of a timestamp: 0 when absent or unreadable (sorts first), else epoch ms + 1.
pub fn timestamp_sort_value(text: Option<&str>) -> u64 {
    text.and_then(parse_unix_millis).map_or(0, |ms| ms + 1)
}

/// A Merkle digest from its stored hex form.
pub fn digest_from_hex(hex: &str) -> Result<merkle::Digest> {
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

/// The stored form of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Snapshot id (a Snowflake id).
    pub snapshot_id: u64,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate's version when the snapshot was taken.
    pub version: u64,
    /// The aggregate's state then.
    pub state: Map<String, Value>,
    /// The aggregate's Merkle root then.
    pub merkle_root: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The caller's comment.
    pub comment: Option<String>,
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

/// The first result of an idempotency key: what a repeated request is answered with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Hex digest of the first request.
    pub digest: String,
    /// The event it recorded.
    pub event: Event,
    /// The aggregate after it.
    pub aggregate: AggregateRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_after_their_absence() {
        assert_eq!(timestamp_sort_value(None), 0);
        assert_eq!(timestamp_sort_value(Some("not a time")), 0);
        assert_eq!(timestamp_sort_value(Some("1970-01-01T00:00:00Z")), 1);
    }

    #[test]
    fn digests_round_trip_through_hex_and_bad_hex_is_refused() {
        let digest = [0xabu8; 32];
        assert_eq!(
            digest_from_hex(&merkle::to_hex(&digest)).expect("hex"),
            digest
        );
        assert!(digest_from_hex("ab").is_err());
        assert!(digest_from_hex(&"zz".repeat(32)).is_err());
    }
}
