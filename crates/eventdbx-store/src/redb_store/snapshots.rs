//! Snapshots: manual ones, the automatic ones a write takes (see `write`), and their lookups.

use eventdbx_core::aggregate::Snapshot;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::CoreError;

use super::tables::{
    json_error, storage, SnapshotRecord, Tables, HIGH, SNAPSHOTS, SNAPSHOTS_BY_AGGREGATE,
};
use super::usage::add_usage;
use super::{now_nanos, RedbStore};
use crate::{EventStore, Result};

/// Inserts a snapshot record and its entry in the per-aggregate index.
pub(super) fn put_snapshot(
    tables: &mut Tables<'_>,
    tenant: &str,
    snapshot: &Snapshot,
    bytes: &[u8],
) -> Result<()> {
    tables
        .snapshots()?
        .insert((tenant, snapshot.snapshot_id), bytes)
        .map_err(storage)?;
    let key = (
        tenant,
        snapshot.aggregate_type.as_str(),
        snapshot.aggregate_id.as_str(),
        snapshot.snapshot_id,
    );
    tables
        .snapshots_by_aggregate()?
        .insert(key, ())
        .map_err(storage)?;
    Ok(())
}

/// [`crate::EventStore::create_snapshot`].
pub(super) fn create(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    comment: Option<&str>,
) -> Result<Snapshot> {
    let aggregate = store
        .get(tenant, aggregate_type, aggregate_id)?
        .ok_or(CoreError::AggregateNotFound)?;
    let snapshot = Snapshot::of(
        &aggregate,
        store.next_id(),
        format_unix_nanos(now_nanos()),
        comment,
    );
    let bytes = serde_json::to_vec(&SnapshotRecord::from(&snapshot)).map_err(json_error)?;
    let tenant_owned = tenant.to_owned();
    let for_job = snapshot.clone();
    store.commit(
        snapshot.snapshot_id,
        Box::new(move |tables| {
            put_snapshot(tables, &tenant_owned, &for_job, &bytes)?;
            add_usage(tables, &tenant_owned, 0, bytes.len() as u64)
        }),
    )?;
    Ok(snapshot)
}

/// [`crate::EventStore::list_snapshots`].
pub(super) fn list(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: Option<&str>,
    aggregate_id: Option<&str>,
    version: Option<u64>,
) -> Result<Vec<Snapshot>> {
    let read = store.read()?;
    let by_aggregate = read.open_table(SNAPSHOTS_BY_AGGREGATE).map_err(storage)?;
    let snapshots = read.open_table(SNAPSHOTS).map_err(storage)?;
    let (low, high) = match (aggregate_type, aggregate_id) {
        (Some(t), Some(i)) => ((tenant, t, i, 0), (tenant, t, i, u64::MAX)),
        (Some(t), None) => ((tenant, t, "", 0), (tenant, t, HIGH, u64::MAX)),
        (None, _) => ((tenant, "", "", 0), (tenant, HIGH, HIGH, u64::MAX)),
    };
    let mut out = Vec::new();
    for item in by_aggregate.range(low..=high).map_err(storage)? {
        let (key, _) = item.map_err(storage)?;
        let id = key.value().3;
        if let Some(bytes) = snapshots.get((tenant, id)).map_err(storage)? {
            let record: SnapshotRecord =
                serde_json::from_slice(bytes.value()).map_err(json_error)?;
            if version.is_none_or(|v| v == record.version) {
                out.push(record.into());
            }
        }
    }
    Ok(out)
}

/// [`crate::EventStore::get_snapshot`].
pub(super) fn get(store: &RedbStore, tenant: &str, snapshot_id: u64) -> Result<Option<Snapshot>> {
    let read = store.read()?;
    let snapshots = read.open_table(SNAPSHOTS).map_err(storage)?;
    match snapshots.get((tenant, snapshot_id)).map_err(storage)? {
        Some(bytes) => {
            let record: SnapshotRecord =
                serde_json::from_slice(bytes.value()).map_err(json_error)?;
            Ok(Some(record.into()))
        }
        None => Ok(None),
    }
}
