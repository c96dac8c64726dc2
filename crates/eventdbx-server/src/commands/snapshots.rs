//! Snapshots: `createSnapshot`, `listSnapshots`, `getSnapshot` (`docs/server.md`, "Snapshots").

use eventdbx_core::aggregate::Snapshot;
use eventdbx_core::names::{validate_aggregate_id, validate_aggregate_type};
use eventdbx_core::schema::SchemaMap;
use eventdbx_core::CoreError;
use eventdbx_proto::control::{
    CreateSnapshotRequest, CreateSnapshotResponse, GetSnapshotRequest, GetSnapshotResponse,
    ListSnapshotsRequest, ListSnapshotsResponse,
};

use super::aggregates::json_array;
use super::{resource, Apply, Context, Reply};
use crate::error::RequestError;

/// The snapshot JSON a reader may see (hidden fields removed), or `None` for a hidden type.
fn visible_json(schemas: &SchemaMap, snapshot: &Snapshot) -> Option<String> {
    let schema = schemas.get(&snapshot.aggregate_type);
    if schema.is_some_and(|s| s.hidden) {
        return None;
    }
    let hidden = schema.map(|s| s.hidden_fields.clone()).unwrap_or_default();
    Some(snapshot.to_json(&hidden).to_string())
}

/// `createSnapshot`.
impl Apply for CreateSnapshotRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        ctx.authorize(&self.token, "aggregate.append", Some(&resource(t, i)))?;
        validate_aggregate_type(t)?;
        validate_aggregate_id(i)?;
        let schemas = ctx.schemas();
        if ctx.hidden_type(&schemas, t) {
            return Err(CoreError::AggregateNotFound.into());
        }
        if let Some(quota) = ctx.state.tenants.quota_bytes(ctx.tenant) {
            if ctx.state.store.usage(ctx.tenant)?.bytes >= quota {
                return Err(CoreError::TenantQuota {
                    tenant: ctx.tenant.to_owned(),
                    quota_mb: quota / crate::tenants::BYTES_PER_MB,
                }
                .into());
            }
        }
        let snapshot =
            ctx.state
                .store
                .create_snapshot(ctx.tenant, t, i, self.comment.as_deref())?;
        Ok(Reply::CreateSnapshot(CreateSnapshotResponse {
            snapshot_json: visible_json(&schemas, &snapshot).unwrap_or_default(),
        }))
    }
}

/// `listSnapshots`.
impl Apply for ListSnapshotsRequest {
    fn apply(mut self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        // Empty strings count as absent.
        self.aggregate_type = self.aggregate_type.filter(|t| !t.is_empty());
        self.aggregate_id = self.aggregate_id.filter(|i| !i.is_empty());
        let target = match (&self.aggregate_type, &self.aggregate_id) {
            (Some(t), Some(i)) => Some(resource(t, i)),
            _ => None,
        };
        let claims = ctx.authorize(&self.token, "aggregate.read", target.as_deref())?;
        if self.aggregate_id.is_some() && self.aggregate_type.is_none() {
            return Err(RequestError::invalid(
                "aggregate type is required when providing aggregate id",
            ));
        }
        let schemas = ctx.schemas();
        let snapshots = ctx.state.store.list_snapshots(
            ctx.tenant,
            self.aggregate_type.as_deref(),
            self.aggregate_id.as_deref(),
            self.version,
        )?;
        let items = snapshots
            .iter()
            .filter(|s| claims.allows_resource(&resource(&s.aggregate_type, &s.aggregate_id)))
            .filter_map(|s| visible_json(&schemas, s));
        Ok(Reply::ListSnapshots(ListSnapshotsResponse {
            snapshots_json: json_array(items),
        }))
    }
}

/// `getSnapshot`.
impl Apply for GetSnapshotRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        // The action first; then a snapshot the token may not read is simply not found.
        let claims = ctx.authorize(&self.token, "aggregate.read", None)?;
        let schemas = ctx.schemas();
        let snapshot_json = ctx
            .state
            .store
            .get_snapshot(ctx.tenant, self.snapshot_id)?
            .filter(|s| claims.allows_resource(&resource(&s.aggregate_type, &s.aggregate_id)))
            .and_then(|s| visible_json(&schemas, &s));
        Ok(Reply::GetSnapshot(GetSnapshotResponse { snapshot_json }))
    }
}
