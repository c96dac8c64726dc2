//! Archive and restore: the archive cascade that clears references to the archived aggregate
//! with `_ref_nullify` events in the same commit (`docs/storage.md`, "Reference index"), and the
//! outbox entries that leave and come back with the aggregate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::merkle::Event;
use eventdbx_core::plugin::JobAction;
use eventdbx_core::schema::reference;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::write::{self, NewEvent};
use eventdbx_core::CoreError;
use redb::{ReadTransaction, ReadableTable};

use super::jobs::queue_jobs;
use super::positions;
use super::tables::{
    json_error, put_aggregate, read_record, storage, AggregateRecord, ReferrerKey, Tables,
    AGGREGATES, EVENTS, HIGH, REFERRERS, TOP,
};
use super::usage::add_usage;
use super::{now_nanos, RedbStore};
use crate::plugin_jobs;
use crate::{CascadeRule, JobRoute, Referrer, Result, StoreError};

/// How often an archive is re-planned when its referrers change under it.
const ARCHIVE_ATTEMPTS: usize = 8;

/// [`crate::EventStore::set_archived_publishing`]: restores in place; archives with the
/// reference cascade, planned again when the referrers change under it.
#[allow(clippy::too_many_arguments)]
pub(super) fn set_archived(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    archived: bool,
    note: Option<&str>,
    nullify: CascadeRule<'_>,
    publish: &[JobRoute],
) -> Result<Aggregate> {
    if archived {
        for _ in 0..ARCHIVE_ATTEMPTS {
            if let Some(aggregate) = try_archive(
                store,
                tenant,
                aggregate_type,
                aggregate_id,
                note,
                nullify,
                publish,
            )? {
                return Ok(aggregate);
            }
        }
        return Err(StoreError::engine(format!(
            "the referrers of {aggregate_type}:{aggregate_id} kept changing during the archive"
        )));
    }
    let _guard = store.lock(tenant, aggregate_type, aggregate_id);
    let read = store.read()?;
    let old = read_record(
        &read.open_table(AGGREGATES).map_err(storage)?,
        tenant,
        aggregate_type,
        aggregate_id,
    )?
    .filter(|record| record.version > 0)
    .ok_or(CoreError::AggregateNotFound)?;
    // Restoring puts the events back into the outbox with their original event ids.
    let outbox_entries = if old.archived {
        outbox_entries(&read, tenant, aggregate_type, aggregate_id)?
    } else {
        Vec::new()
    };
    drop(read);
    let mut record = old.clone();
    record.archived = false;
    record.updated_at = Some(format_unix_nanos(now_nanos()));
    let bytes = serde_json::to_vec(&record).map_err(json_error)?;
    let change_id = if publish.is_empty() {
        0
    } else {
        store.next_id()
    };
    let jobs = plugin_jobs(
        tenant,
        publish,
        JobAction::Restore,
        change_id,
        None,
        &record.aggregate(),
    );
    let tenant_owned = tenant.to_owned();
    let new_record = record.clone();
    store.commit(
        change_id,
        Box::new(move |tables| {
            let tenant = tenant_owned.as_str();
            put_aggregate(tables, tenant, Some(&old), &new_record, &bytes)?;
            let (t, i) = (
                new_record.aggregate_type.as_str(),
                new_record.aggregate_id.as_str(),
            );
            for (event_id, version) in &outbox_entries {
                tables
                    .outbox()?
                    .insert((tenant, *event_id), (t, i, *version))
                    .map_err(storage)?;
            }
            queue_jobs(tables, &jobs)
        }),
    )?;
    Ok(record.aggregate())
}

/// One attempt of [`crate::EventStore::archive`]; `Ok(None)` when the referrers changed between
/// planning and the commit (the caller plans again).
fn try_archive(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    note: Option<&str>,
    nullify: CascadeRule<'_>,
    publish: &[JobRoute],
) -> Result<Option<Aggregate>> {
    let expected = {
        let read = store.read()?;
        let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
        read_record(&aggregates, tenant, aggregate_type, aggregate_id)?
            .filter(|record| record.version > 0)
            .ok_or(CoreError::AggregateNotFound)?;
        let table = read.open_table(REFERRERS).map_err(storage)?;
        read_referrers(&table, tenant, aggregate_type, aggregate_id)?
    };
    let blocking: Vec<Referrer> = expected.iter().filter(|r| !nullify(r)).cloned().collect();
    if !blocking.is_empty() {
        return Err(
            reference::archive_blocked(tenant, aggregate_type, aggregate_id, &blocking).into(),
        );
    }
    let mut by_source: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for referrer in &expected {
        by_source
            .entry((
                referrer.aggregate_type.clone(),
                referrer.aggregate_id.clone(),
            ))
            .or_default()
            .push(referrer.path.clone());
    }
    let _guards = store.lock_all(
        tenant,
        std::iter::once((aggregate_type, aggregate_id))
            .chain(by_source.keys().map(|(t, i)| (t.as_str(), i.as_str()))),
    );
    let read = store.read()?;
    let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
    let stored_target = read_record(&aggregates, tenant, aggregate_type, aggregate_id)?
        .filter(|record| record.version > 0)
        .ok_or(CoreError::AggregateNotFound)?;
    let note_text = reference::nullify_note(aggregate_type, aggregate_id);
    let mut updates = Vec::new();
    let mut max_id = 0;
    for ((source_type, source_id), paths) in by_source {
        let Some(old) = read_record(&aggregates, tenant, &source_type, &source_id)?
            .filter(|record| record.version > 0)
        else {
            continue;
        };
        let is_target = source_type == aggregate_type && source_id == aggregate_id;
        let mut aggregate = old.aggregate();
        let mut merkle = old.merkle()?;
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let payload = reference::nullify_payload(&aggregate.state, &path_refs);
        let event_id = store.next_id();
        max_id = max_id.max(event_id);
        let event = write::seal_event(
            tenant,
            &mut aggregate,
            &mut merkle,
            NewEvent {
                event_type: reference::NULLIFY_EVENT_TYPE.to_owned(),
                event_type_raw: Some(reference::NULLIFY_EVENT_TYPE.to_owned()),
                payload,
                extensions: None,
                note: Some(note_text.clone()),
                issued_by: None,
                event_id,
                created_at: format_unix_nanos(now_nanos()),
            },
        );
        let mut record = AggregateRecord::from_aggregate(&aggregate, &merkle);
        record.archived_at.clone_from(&old.archived_at);
        record.archive_note.clone_from(&old.archive_note);
        updates.push(NullifyUpdate {
            record_bytes: serde_json::to_vec(&record).map_err(json_error)?,
            event_bytes: serde_json::to_vec(&event).map_err(json_error)?,
            // Archived aggregates have no outbox entries; the target is about to be one.
            in_outbox: !old.archived && !is_target,
            event_id,
            version: event.version,
            old,
            record,
            paths,
        });
    }
    // The target as the table will hold it after its own nullify event, if it refers to
    // itstore.
    let target_base = updates
        .iter()
        .find(|u| {
            u.record.aggregate_type == aggregate_type && u.record.aggregate_id == aggregate_id
        })
        .map_or(stored_target, |u| u.record.clone());
    let outbox_removals = if target_base.archived {
        Vec::new()
    } else {
        outbox_entries(&read, tenant, aggregate_type, aggregate_id)?
    };
    drop(aggregates);
    drop(read);
    let now = format_unix_nanos(now_nanos());
    let mut archived = target_base.clone();
    archived.archived = true;
    archived.updated_at = Some(now.clone());
    archived.archived_at = Some(now);
    archived.archive_note = note
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let archived_bytes = serde_json::to_vec(&archived).map_err(json_error)?;
    let change_id = if publish.is_empty() {
        0
    } else {
        store.next_id()
    };
    let jobs = plugin_jobs(
        tenant,
        publish,
        JobAction::Archive,
        change_id,
        None,
        &archived.aggregate(),
    );
    let max_id = max_id.max(change_id);
    let changed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&changed);
    let assigned = Arc::new(AtomicU64::new(0));
    let position = Arc::clone(&assigned);
    let tenant_owned = tenant.to_owned();
    let archived_record = archived.clone();
    let result = store.commit(
        max_id,
        Box::new(move |tables| {
            let tenant = tenant_owned.as_str();
            let (t, i) = (
                archived_record.aggregate_type.as_str(),
                archived_record.aggregate_id.as_str(),
            );
            if read_referrers(&*tables.referrers()?, tenant, t, i)? != expected {
                flag.store(true, Ordering::Release);
                // A domain error: the job changed nothing (the flag says what happened).
                return Err(CoreError::IntegrityViolation("referrers changed".into()).into());
            }
            for update in &updates {
                update.apply(tables, tenant, t, i, &position)?;
            }
            put_aggregate(
                tables,
                tenant,
                Some(&target_base),
                &archived_record,
                &archived_bytes,
            )?;
            for (event_id, _) in &outbox_removals {
                tables
                    .outbox()?
                    .remove((tenant, *event_id))
                    .map_err(storage)?;
            }
            queue_jobs(tables, &jobs)
        }),
    );
    match result {
        Ok(()) => {
            store.committed(tenant, assigned.load(Ordering::Acquire));
            Ok(Some(archived.aggregate()))
        }
        Err(_) if changed.load(Ordering::Acquire) => Ok(None),
        Err(err) => Err(err),
    }
}

/// A `_ref_nullify` event of one referrer, planned by [`try_archive`].
struct NullifyUpdate {
    old: AggregateRecord,
    record: AggregateRecord,
    record_bytes: Vec<u8>,
    event_bytes: Vec<u8>,
    event_id: u64,
    version: u64,
    in_outbox: bool,
    /// The referring paths the event clears.
    paths: Vec<String>,
}

impl NullifyUpdate {
    /// Writes the event and the referrer's new record, and drops its index entries pointing at
    /// `target_type#target_id`.
    fn apply(
        &self,
        tables: &mut Tables<'_>,
        tenant: &str,
        target_type: &str,
        target_id: &str,
        position: &AtomicU64,
    ) -> Result<()> {
        let (t, i) = (
            self.record.aggregate_type.as_str(),
            self.record.aggregate_id.as_str(),
        );
        put_aggregate(
            tables,
            tenant,
            Some(&self.old),
            &self.record,
            &self.record_bytes,
        )?;
        tables
            .events()?
            .insert((tenant, t, i, self.version), self.event_bytes.as_slice())
            .map_err(storage)?;
        positions::assign(tables, (tenant, t, i, self.version), position)?;
        if self.in_outbox {
            tables
                .outbox()?
                .insert((tenant, self.event_id), (t, i, self.version))
                .map_err(storage)?;
        }
        for path in &self.paths {
            tables
                .references()?
                .remove((tenant, t, i, path.as_str()))
                .map_err(storage)?;
            tables
                .referrers()?
                .remove((tenant, target_type, target_id, t, i, path.as_str()))
                .map_err(storage)?;
        }
        add_usage(tables, tenant, 1, self.event_bytes.len() as u64)
    }
}

/// (event id, version) of every stored event of an aggregate.
fn outbox_entries(
    read: &ReadTransaction,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<(u64, u64)>> {
    let events = read.open_table(EVENTS).map_err(storage)?;
    let low = (tenant, aggregate_type, aggregate_id, 0);
    let high = (tenant, aggregate_type, aggregate_id, u64::MAX);
    let mut out = Vec::new();
    for item in events.range(low..=high).map_err(storage)? {
        let (key, value) = item.map_err(storage)?;
        let event: Event = serde_json::from_slice(value.value()).map_err(json_error)?;
        out.push((event.metadata.event_id, key.value().3));
    }
    Ok(out)
}

/// The referrers of one target, from [`REFERRERS`], in key order.
fn read_referrers(
    table: &impl ReadableTable<ReferrerKey, ()>,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<Referrer>> {
    let low = (tenant, aggregate_type, aggregate_id, "", "", "");
    let high = (tenant, aggregate_type, aggregate_id, HIGH, HIGH, TOP);
    let mut out = Vec::new();
    for item in table.range(low..=high).map_err(storage)? {
        let (key, _) = item.map_err(storage)?;
        let (_, _, _, source_type, source_id, path) = key.value();
        out.push(Referrer {
            aggregate_type: source_type.to_owned(),
            aggregate_id: source_id.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// [`crate::EventStore::referrers`].
pub(super) fn referrers(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<Referrer>> {
    let read = store.read()?;
    let table = read.open_table(REFERRERS).map_err(storage)?;
    read_referrers(&table, tenant, aggregate_type, aggregate_id)
}
