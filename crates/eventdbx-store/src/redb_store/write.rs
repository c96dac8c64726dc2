//! Create, append and patch: the prepare half under the aggregate's lock stripe (idempotency
//! replay, domain checks, payload check, sealing) and the commit half (quota, record, event,
//! outbox, position, snapshot, reference index, plugin jobs, usage) queued for group commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, MerkleBuilder};
use eventdbx_core::plugin::JobAction;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::write::{self, NewEvent, WriteKind};
use eventdbx_core::CoreError;
use redb::ReadableTable;

use super::commit::{Apply, Latest};
use super::jobs::queue_jobs;
use super::positions::{self, Listeners};
use super::snapshots::put_snapshot;
use super::stripes::StripeGuard;
use super::tables::{
    json_error, put_aggregate, read_record, storage, AggregateKey, AggregateRecord, Bytes,
    IdempotencyKey, IdempotencyRecord, SnapshotRecord, Tables, AGGREGATES, IDEMPOTENCY, TOP,
};
use super::usage::{add_usage, check_quota};
use super::{now_nanos, RedbStore};
use crate::plugin_jobs;
use crate::{ReferenceLink, Result, WriteOutcome, WriteRequest};

/// What a write reads before it prepares: the first result of its idempotency key (if it has
/// one and it was used) and its aggregate's record. `idempotency` is opened only for a write
/// with a key: opening a table in the shared write transaction is not free.
fn read_for_write(
    idempotency: Option<&impl ReadableTable<IdempotencyKey, Bytes>>,
    aggregates: &impl ReadableTable<AggregateKey, Bytes>,
    (tenant, aggregate_type, aggregate_id): (&str, &str, &str),
    idempotency_key: Option<&str>,
) -> Result<(Option<IdempotencyRecord>, Option<AggregateRecord>)> {
    if let (Some(key), Some(idempotency)) = (idempotency_key, idempotency) {
        if let Some(bytes) = idempotency
            .get((tenant, aggregate_type, aggregate_id, key))
            .map_err(storage)?
        {
            let record: IdempotencyRecord =
                serde_json::from_slice(bytes.value()).map_err(json_error)?;
            return Ok((Some(record), None));
        }
    }
    let old = read_record(aggregates, tenant, aggregate_type, aggregate_id)?;
    Ok((None, old))
}

/// The aggregate a stored record holds, its state and extensions moved out rather than copied:
/// past this point a write keeps the old record only for its keys, its sort index values and its
/// archive fields (`put_aggregate`), and the state is the costliest part of it to copy.
fn take_aggregate(record: &mut AggregateRecord) -> Aggregate {
    Aggregate {
        aggregate_type: record.aggregate_type.clone(),
        aggregate_id: record.aggregate_id.clone(),
        version: record.version,
        state: std::mem::take(&mut record.state),
        extensions: std::mem::take(&mut record.extensions),
        merkle_root: record.merkle_root.clone(),
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        archived: record.archived,
    }
}

/// Makes the reference index entries of a source aggregate equal to `links` (the references of
/// its new state): entries that did not change are left alone.
fn put_references(
    tables: &mut Tables<'_>,
    tenant: &str,
    source_type: &str,
    source_id: &str,
    links: &[ReferenceLink],
) -> Result<()> {
    let mut previous: BTreeMap<String, (String, String)> = BTreeMap::new();
    {
        let forward = tables.references()?;
        let range = (tenant, source_type, source_id, "")..=(tenant, source_type, source_id, TOP);
        for item in forward.range(range).map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            let (target_type, target_id) = value.value();
            previous.insert(
                key.value().3.to_owned(),
                (target_type.to_owned(), target_id.to_owned()),
            );
        }
    }
    let wanted: BTreeMap<&str, (&str, &str)> = links
        .iter()
        .map(|l| {
            (
                l.path.as_str(),
                (l.target_type.as_str(), l.target_id.as_str()),
            )
        })
        .collect();
    for (path, (target_type, target_id)) in &previous {
        if wanted.get(path.as_str()) == Some(&(target_type.as_str(), target_id.as_str())) {
            continue;
        }
        tables
            .references()?
            .remove((tenant, source_type, source_id, path.as_str()))
            .map_err(storage)?;
        let key = (
            tenant,
            target_type.as_str(),
            target_id.as_str(),
            source_type,
            source_id,
            path.as_str(),
        );
        tables.referrers()?.remove(key).map_err(storage)?;
    }
    for (path, (target_type, target_id)) in wanted {
        let unchanged = previous
            .get(path)
            .is_some_and(|(t, i)| t == target_type && i == target_id);
        if unchanged {
            continue;
        }
        tables
            .references()?
            .insert(
                (tenant, source_type, source_id, path),
                (target_type, target_id),
            )
            .map_err(storage)?;
        let key = (tenant, target_type, target_id, source_type, source_id, path);
        tables.referrers()?.insert(key, ()).map_err(storage)?;
    }
    Ok(())
}

/// A write prepared under its aggregate's lock stripe: answered from its idempotency record, or
/// its commit half ready to queue.
pub(super) enum Prepared {
    Replayed(WriteOutcome),
    Queued(Pending),
}

/// The commit half of a write.
pub(super) struct Pending {
    /// The highest Snowflake id the job stores.
    pub(super) max_id: u64,
    pub(super) apply: Apply,
    pub(super) answer: Answered,
}

/// What a write's answer needs once its commit is done.
pub(super) struct Answered {
    /// Held until the write is answered (`stripes`).
    stripe: StripeGuard,
    tenant: String,
    /// The position the job assigned to the event.
    assigned: Arc<AtomicU64>,
    outcome: WriteOutcome,
}

impl Answered {
    /// The outcome once the commit succeeded: the commit listeners are told of the new head
    /// (the commit is visible to readers now), then the stripe is released.
    pub(super) fn committed(self, listeners: &Listeners) -> WriteOutcome {
        listeners.committed(&self.tenant, self.assigned.load(Ordering::Acquire));
        drop(self.stripe);
        self.outcome
    }
}

/// [`crate::EventStore::write`].
pub(super) fn write(
    store: &RedbStore,
    tenant: &str,
    request: WriteRequest,
) -> Result<WriteOutcome> {
    match prepare(store, tenant, request)? {
        Prepared::Replayed(outcome) => Ok(outcome),
        Prepared::Queued(pending) => {
            // A failed commit releases the stripe with the answer.
            store.commit(pending.max_id, pending.apply)?;
            Ok(pending.answer.committed(&store.listeners))
        }
    }
}

/// The prepare half of a write, on the caller's thread: takes the aggregate's stripe, reads its
/// latest state, checks, seals and serialises, and builds the job of inserts for the commit.
pub(super) fn prepare(store: &RedbStore, tenant: &str, request: WriteRequest) -> Result<Prepared> {
    let (t, i) = (
        request.aggregate_type.as_str(),
        request.aggregate_id.as_str(),
    );
    let stripe = store.lock(tenant, t, i);
    let idempotency_key = request.idempotency.as_ref().map(|idem| idem.key.as_str());
    let (replay, mut old) = store.committer.read_latest(|latest| match latest {
        Latest::Committed(read) => read_for_write(
            idempotency_key
                .map(|_| read.open_table(IDEMPOTENCY))
                .transpose()
                .map_err(storage)?
                .as_ref(),
            &read.open_table(AGGREGATES).map_err(storage)?,
            (tenant, t, i),
            idempotency_key,
        ),
        Latest::Open(txn) => read_for_write(
            idempotency_key
                .map(|_| txn.open_table(IDEMPOTENCY))
                .transpose()
                .map_err(storage)?
                .as_ref(),
            &txn.open_table(AGGREGATES).map_err(storage)?,
            (tenant, t, i),
            idempotency_key,
        ),
    })?;
    if let (Some(record), Some(idempotency)) = (replay, &request.idempotency) {
        if record.digest != merkle::to_hex(&idempotency.digest) {
            return Err(CoreError::IdempotencyConflict(idempotency.key.clone()).into());
        }
        return Ok(Prepared::Replayed(WriteOutcome {
            event: record.event,
            aggregate: record.aggregate.aggregate(),
            snapshot: None,
            replayed: true,
        }));
    }
    let current = old.as_mut().map(take_aggregate);
    write::check_write(
        request.kind,
        t,
        i,
        current.as_ref(),
        request.expected_version,
    )?;
    // The checked state is the one the event extends: no second copy of it.
    let (mut aggregate, mut merkle) = match (current, &old) {
        (Some(current), Some(record)) if record.version > 0 => (current, record.merkle()?),
        _ => (Aggregate::new(t, i), MerkleBuilder::new()),
    };
    let mut payload = write::event_payload(&aggregate.state, &request.body)?;
    if let Some(prepare) = &request.prepare {
        prepare(&aggregate, &mut payload)?;
    }
    let event_id = store.next_id();
    let created_at = format_unix_nanos(now_nanos());
    let event = write::seal_event(
        tenant,
        &mut aggregate,
        &mut merkle,
        NewEvent {
            // The request is the write's own: its fields move into the event.
            event_type: request.event_type,
            event_type_raw: request.event_type_raw,
            payload,
            extensions: request.extensions,
            note: request.note,
            issued_by: request.issued_by,
            event_id,
            created_at: created_at.clone(),
        },
    );
    let links = request.references.as_ref().map(|scan| scan(&aggregate));
    let snapshot = match request.snapshot_threshold {
        Some(n)
            if n > 0 && request.kind != WriteKind::Create && event.version.is_multiple_of(n) =>
        {
            let comment = format!("auto snapshot v{}", event.version);
            Some(Snapshot::of(
                &aggregate,
                store.next_id(),
                created_at,
                Some(&comment),
            ))
        }
        _ => None,
    };
    let mut record = AggregateRecord::from_aggregate(&aggregate, &merkle);
    if let Some(old) = &old {
        record.archived_at.clone_from(&old.archived_at);
        record.archive_note.clone_from(&old.archive_note);
    }
    let record_bytes = serde_json::to_vec(&record).map_err(json_error)?;
    let event_bytes = serde_json::to_vec(&event).map_err(json_error)?;
    let snapshot_bytes = snapshot
        .as_ref()
        .map(|s| serde_json::to_vec(&SnapshotRecord::from(s)))
        .transpose()
        .map_err(json_error)?;
    let idempotency_bytes = request
        .idempotency
        .as_ref()
        .map(|idem| {
            serde_json::to_vec(&IdempotencyRecord {
                digest: merkle::to_hex(&idem.digest),
                event: event.clone(),
                aggregate: record.clone(),
            })
        })
        .transpose()
        .map_err(json_error)?;
    let jobs = plugin_jobs(
        tenant,
        &request.publish,
        JobAction::Event,
        event_id,
        Some(&event),
        &aggregate,
    );
    let tenant_owned = tenant.to_owned();
    let key = request.idempotency.as_ref().map(|idem| idem.key.clone());
    let quota = request.quota_bytes;
    let version = event.version;
    let new_record = record;
    let snapshot_for_job = snapshot.clone();
    let assigned = Arc::new(AtomicU64::new(0));
    let position = Arc::clone(&assigned);
    let max_id = snapshot
        .as_ref()
        .map_or(event_id, |s| s.snapshot_id.max(event_id));
    let apply: Apply = Box::new(move |tables| {
        let tenant = tenant_owned.as_str();
        check_quota(tables, tenant, quota)?;
        let (t, i) = (
            new_record.aggregate_type.as_str(),
            new_record.aggregate_id.as_str(),
        );
        put_aggregate(tables, tenant, old.as_ref(), &new_record, &record_bytes)?;
        let event_key = (tenant, t, i, version);
        tables
            .events()?
            .insert(event_key, event_bytes.as_slice())
            .map_err(storage)?;
        tables
            .outbox()?
            .insert((tenant, event_id), (t, i, version))
            .map_err(storage)?;
        positions::assign(tables, event_key, &position)?;
        let mut bytes = event_bytes.len() as u64;
        if let (Some(snapshot), Some(snapshot_bytes)) = (&snapshot_for_job, &snapshot_bytes) {
            put_snapshot(tables, tenant, snapshot, snapshot_bytes)?;
            bytes += snapshot_bytes.len() as u64;
        }
        if let (Some(key), Some(idempotency_bytes)) = (&key, &idempotency_bytes) {
            let idempotency_key = (tenant, t, i, key.as_str());
            tables
                .idempotency()?
                .insert(idempotency_key, idempotency_bytes.as_slice())
                .map_err(storage)?;
        }
        if let Some(links) = &links {
            put_references(tables, tenant, t, i, links)?;
        }
        queue_jobs(tables, &jobs)?;
        add_usage(tables, tenant, 1, bytes)
    });
    Ok(Prepared::Queued(Pending {
        max_id,
        apply,
        answer: Answered {
            stripe,
            tenant: tenant.to_owned(),
            assigned,
            outcome: WriteOutcome {
                event,
                aggregate,
                snapshot,
                replayed: false,
            },
        },
    }))
}
