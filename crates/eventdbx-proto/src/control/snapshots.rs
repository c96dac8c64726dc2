//! Snapshots: `createSnapshot`, `listSnapshots` and `getSnapshot`.

use super::{optional_text, text};
use crate::schema::control_capnp::{
    create_snapshot_request, create_snapshot_response, get_snapshot_request, get_snapshot_response,
    list_snapshots_request, list_snapshots_response,
};
use crate::Result;

/// `createSnapshot`: a snapshot of an aggregate's current state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateSnapshotRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub comment: Option<String>,
}

impl CreateSnapshotRequest {
    pub fn encode(&self, mut r: create_snapshot_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        if let Some(comment) = &self.comment {
            r.set_comment(comment.as_str());
            r.set_has_comment(true);
        }
        Ok(())
    }

    pub fn decode(r: create_snapshot_request::Reader<'_>) -> Result<Self> {
        Ok(CreateSnapshotRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            comment: optional_text(r.get_has_comment(), r.get_comment())?,
        })
    }
}

/// The `createSnapshot` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateSnapshotResponse {
    pub snapshot_json: String,
}

impl CreateSnapshotResponse {
    pub fn encode(&self, mut r: create_snapshot_response::Builder<'_>) {
        r.set_snapshot_json(self.snapshot_json.as_str());
    }

    pub fn decode(r: create_snapshot_response::Reader<'_>) -> Result<Self> {
        Ok(CreateSnapshotResponse {
            snapshot_json: text(r.get_snapshot_json())?,
        })
    }
}

/// `listSnapshots`: snapshots, optionally filtered (not paged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSnapshotsRequest {
    pub token: String,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub version: Option<u64>,
}

impl ListSnapshotsRequest {
    pub fn encode(&self, mut r: list_snapshots_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        if let Some(aggregate_type) = &self.aggregate_type {
            r.set_aggregate_type(aggregate_type.as_str());
            r.set_has_aggregate_type(true);
        }
        if let Some(aggregate_id) = &self.aggregate_id {
            r.set_aggregate_id(aggregate_id.as_str());
            r.set_has_aggregate_id(true);
        }
        if let Some(version) = self.version {
            r.set_version(version);
            r.set_has_version(true);
        }
        Ok(())
    }

    pub fn decode(r: list_snapshots_request::Reader<'_>) -> Result<Self> {
        Ok(ListSnapshotsRequest {
            token: text(r.get_token())?,
            aggregate_type: optional_text(r.get_has_aggregate_type(), r.get_aggregate_type())?,
            aggregate_id: optional_text(r.get_has_aggregate_id(), r.get_aggregate_id())?,
            version: r.get_has_version().then(|| r.get_version()),
        })
    }
}

/// The `listSnapshots` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSnapshotsResponse {
    /// A JSON array of snapshots.
    pub snapshots_json: String,
}

impl ListSnapshotsResponse {
    pub fn encode(&self, mut r: list_snapshots_response::Builder<'_>) {
        r.set_snapshots_json(self.snapshots_json.as_str());
    }

    pub fn decode(r: list_snapshots_response::Reader<'_>) -> Result<Self> {
        Ok(ListSnapshotsResponse {
            snapshots_json: text(r.get_snapshots_json())?,
        })
    }
}

/// `getSnapshot`: one snapshot by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetSnapshotRequest {
    pub token: String,
    pub snapshot_id: u64,
}

impl GetSnapshotRequest {
    pub fn encode(&self, mut r: get_snapshot_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_snapshot_id(self.snapshot_id);
        Ok(())
    }

    pub fn decode(r: get_snapshot_request::Reader<'_>) -> Result<Self> {
        Ok(GetSnapshotRequest {
            token: text(r.get_token())?,
            snapshot_id: r.get_snapshot_id(),
        })
    }
}

/// The `getSnapshot` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetSnapshotResponse {
    /// `None` when not found (sent as `found = false` and an empty text).
    pub snapshot_json: Option<String>,
}

impl GetSnapshotResponse {
    pub fn encode(&self, mut r: get_snapshot_response::Builder<'_>) {
        r.set_found(self.snapshot_json.is_some());
        r.set_snapshot_json(self.snapshot_json.as_deref().unwrap_or(""));
    }

    pub fn decode(r: get_snapshot_response::Reader<'_>) -> Result<Self> {
        Ok(GetSnapshotResponse {
            snapshot_json: optional_text(r.get_found(), r.get_snapshot_json())?,
        })
    }
}
