//! Mutations: writes (create, apply, patch), archive and restore, and snapshots.

use eventdbx_proto::control::{
    self, CreateSnapshotRequest, Reply, Request, SetAggregateArchiveRequest, WriteRequest,
};

use super::{require_aggregate, unexpected, Client, Safety};
use crate::error::{Error, Result};
use crate::types::{PublishTarget, Write, WriteKind, Written};

impl Client {
    /// Writes one event: [`Write::create`], [`Write::apply`] or [`Write::patch`].
    ///
    /// Returns the aggregate (create) or the event (apply, patch) the server stored.
    pub async fn write(&self, write: Write) -> Result<Written> {
        let write = self.prepare_write(write).await?;
        let safety = Safety::Mutation {
            keyed: write.idempotency_key.is_some(),
        };
        let kind = write.kind;
        let request = write_request(self.token(), write);
        let json = self
            .call(safety, request, |reply| match (kind, reply) {
                (WriteKind::Create, Reply::CreateAggregate(r)) => Ok(r.aggregate_json),
                (WriteKind::Append | WriteKind::Patch, Reply::AppendEvent(r)) => Ok(r.event_json),
                (_, other) => unexpected(&other),
            })
            .await?;
        Ok(self.written(json))
    }

    /// Creates an aggregate with its first event (shorthand for [`Write::create`]).
    pub async fn create(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        self.write(Write::create(
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        ))
        .await
    }

    /// Appends an event (shorthand for [`Write::apply`]).
    pub async fn apply(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        self.write(Write::apply(
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        ))
        .await
    }

    /// Applies RFC 6902 operations (shorthand for [`Write::patch`]).
    pub async fn patch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        patch_json: &str,
    ) -> Result<Written> {
        self.write(Write::patch(
            aggregate_type,
            aggregate_id,
            event_type,
            patch_json,
        ))
        .await
    }

    /// Archives an aggregate (read-only, history kept). Returns the aggregate.
    pub async fn archive(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        self.set_archived(aggregate_type, aggregate_id, true, note, None)
            .await
    }

    /// [`Client::archive`] with publish targets (ours; EventDBX ignores them): the plugins get
    /// the aggregate after the archive and `"action": "archive"`. An empty list broadcasts, as
    /// for writes.
    pub async fn archive_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[PublishTarget],
    ) -> Result<Written> {
        self.set_archived(
            aggregate_type,
            aggregate_id,
            true,
            note,
            Some(publish_targets),
        )
        .await
    }

    /// [`Client::restore`] with publish targets (ours); see [`Client::archive_with`].
    pub async fn restore_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[PublishTarget],
    ) -> Result<Written> {
        self.set_archived(
            aggregate_type,
            aggregate_id,
            false,
            note,
            Some(publish_targets),
        )
        .await
    }

    /// Restores an archived aggregate. Returns the aggregate.
    pub async fn restore(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        self.set_archived(aggregate_type, aggregate_id, false, note, None)
            .await
    }

    async fn set_archived(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        archived: bool,
        note: Option<&str>,
        publish_targets: Option<&[PublishTarget]>,
    ) -> Result<Written> {
        require_aggregate(aggregate_type, aggregate_id)?;
        for target in publish_targets.unwrap_or_default() {
            if target.plugin.trim().is_empty() {
                return Err(Error::argument("publish target plugin cannot be empty"));
            }
        }
        let request = Request::SetAggregateArchive(SetAggregateArchiveRequest {
            token: self.token(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            archived,
            note: note.map(str::to_owned),
            publish_targets: publish_targets.map(wire_targets),
        });
        let json = self
            .call(Safety::Repeatable, request, |reply| match reply {
                Reply::SetAggregateArchive(r) => Ok(r.aggregate_json),
                other => unexpected(&other),
            })
            .await?;
        Ok(self.written(json))
    }

    /// Takes a snapshot of an aggregate's current state. The snapshot JSON is always returned.
    pub async fn create_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Written> {
        require_aggregate(aggregate_type, aggregate_id)?;
        let request = Request::CreateSnapshot(CreateSnapshotRequest {
            token: self.token(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            comment: comment.map(str::to_owned),
        });
        let json = self
            .call(
                Safety::Mutation { keyed: false },
                request,
                |reply| match reply {
                    Reply::CreateSnapshot(r) => Ok(r.snapshot_json),
                    other => unexpected(&other),
                },
            )
            .await?;
        Ok(self.written(json))
    }
}

/// The request member of a write: create, append or patch share one layout.
fn write_request(token: String, write: Write) -> Request {
    let request = WriteRequest {
        token,
        aggregate_type: write.aggregate_type,
        aggregate_id: write.aggregate_id,
        event_type: write.event_type,
        body_json: write.body_json,
        note: write.note,
        metadata_json: write.metadata_json,
        publish_targets: write.publish_targets.as_deref().map(wire_targets),
        expected_version: write.expected_version,
        idempotency_key: write.idempotency_key,
    };
    match write.kind {
        WriteKind::Create => Request::CreateAggregate(request),
        WriteKind::Append => Request::AppendEvent(request),
        WriteKind::Patch => Request::PatchEvent(request),
    }
}

fn wire_targets(targets: &[PublishTarget]) -> Vec<control::PublishTarget> {
    targets
        .iter()
        .map(|target| control::PublishTarget {
            plugin: target.plugin.clone(),
            mode: target.mode.clone(),
            priority: target.priority.clone(),
        })
        .collect()
}
