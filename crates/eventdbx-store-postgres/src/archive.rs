//! Archive and restore, with the archive cascade that clears references to the archived
//! aggregate with `_ref_nullify` events in the same transaction (`docs/storage.md`, "Reference
//! index"). Like a write, both are optimistic: every record is updated at the revision that was
//! read, and the cascade re-reads the target's referrers inside its transaction; a change in
//! between rolls everything back and the archive is planned again.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::merkle::Event;
use eventdbx_core::plugin::{JobAction, PluginJob};
use eventdbx_core::schema::reference;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::write::{self, NewEvent};
use eventdbx_core::CoreError;
use eventdbx_store::{CascadeRule, JobRoute, Referrer, Result, StoreError};

use crate::jobs::queue_jobs;
use crate::records::AggregateRecord;
use crate::write::{add_usage, insert_event, put_aggregate, Stored, MAX_ATTEMPTS};
use crate::{col, db, json_error, now_nanos, pool_error, Cached, PostgresStore};
use eventdbx_store::plugin_jobs;

/// How often an archive is planned again when its referrers change under it.
const ARCHIVE_ATTEMPTS: usize = 8;

/// The referrers of one target, ordered by (type, id, path).
async fn read_referrers(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &str,
    (target_type, target_id): (&str, &str),
) -> Result<Vec<Referrer>> {
    let rows = client
        .query_cached(
            "SELECT source_type, source_id, path FROM aggregate_references \
             WHERE tenant = $1 AND target_type = $2 AND target_id = $3 \
             ORDER BY source_type, source_id, path",
            &[&tenant, &target_type, &target_id],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            Ok(Referrer {
                aggregate_type: col(row, 0)?,
                aggregate_id: col(row, 1)?,
                path: col(row, 2)?,
            })
        })
        .collect()
}

/// [`eventdbx_store::EventStore::referrers`].
pub(crate) fn referrers(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<Referrer>> {
    let (pool, tenant, t, i) = (
        store.pool(),
        tenant.to_owned(),
        aggregate_type.to_owned(),
        aggregate_id.to_owned(),
    );
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        read_referrers(&client, &tenant, (&t, &i)).await
    })
}

/// [`eventdbx_store::EventStore::set_archived_publishing`].
pub(crate) fn set_archived(
    store: &PostgresStore,
    tenant: &str,
    (aggregate_type, aggregate_id): (&str, &str),
    archived: bool,
    note: Option<&str>,
    nullify: CascadeRule<'_>,
    publish: &[JobRoute],
) -> Result<Aggregate> {
    store.writable()?;
    if archived {
        for _ in 0..ARCHIVE_ATTEMPTS {
            let target = (aggregate_type, aggregate_id);
            if let Some(aggregate) = try_archive(store, tenant, target, note, nullify, publish)? {
                return Ok(aggregate);
            }
        }
        return Err(StoreError::engine(format!(
            "the referrers of {aggregate_type}:{aggregate_id} kept changing during the archive"
        )));
    }
    let _guard = store.lock(tenant, aggregate_type, aggregate_id)?;
    for _ in 0..MAX_ATTEMPTS {
        let (revision, old) = crate::read::record(store, tenant, aggregate_type, aggregate_id)?
            .filter(|(_, record)| record.version > 0)
            .ok_or(CoreError::AggregateNotFound)?;
        let mut record = old;
        record.archived = false;
        record.updated_at = Some(format_unix_nanos(now_nanos()));
        let change_id = if publish.is_empty() {
            0
        } else {
            store.next_id()
        };
        let aggregate = record.aggregate();
        let jobs = plugin_jobs(
            tenant,
            publish,
            JobAction::Restore,
            change_id,
            None,
            &aggregate,
        );
        let (pool, tenant_owned) = (store.pool(), tenant.to_owned());
        let committed = store.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let txn = client.transaction().await.map_err(db)?;
            if !put_aggregate(&txn, &tenant_owned, Some(revision), &record).await? {
                return Ok(false);
            }
            queue_jobs(&txn, &jobs).await?;
            txn.commit().await.map_err(crate::commit_error)?;
            Ok(true)
        });
        let committed = match committed {
            Err(err) if crate::raced(&err) => false,
            other => other?,
        };
        if committed {
            return Ok(aggregate);
        }
    }
    Err(StoreError::engine(format!(
        "{aggregate_type}:{aggregate_id} kept changing during the restore"
    )))
}

/// A `_ref_nullify` event of one referrer.
struct Nullify {
    revision: i64,
    record: AggregateRecord,
    event: Event,
    body: String,
    /// The referring paths the event clears.
    paths: Vec<String>,
}

/// What one archive attempt commits.
struct ArchivePlan {
    tenant: String,
    expected: Vec<Referrer>,
    nullified: Vec<Nullify>,
    /// The target's own nullify event, when it refers to itself.
    own_event: Option<(Event, String, Vec<String>)>,
    target_revision: i64,
    archived: AggregateRecord,
    jobs: Vec<PluginJob>,
}

/// Seals the `_ref_nullify` event of `record` clearing `paths`.
fn seal_nullify(
    store: &PostgresStore,
    tenant: &str,
    record: &AggregateRecord,
    paths: &[String],
    note: &str,
) -> Result<(AggregateRecord, Event, String)> {
    let mut aggregate = record.aggregate();
    let mut merkle = record.merkle()?;
    let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let payload = reference::nullify_payload(&aggregate.state, &path_refs);
    let event = write::seal_event(
        tenant,
        &mut aggregate,
        &mut merkle,
        NewEvent {
            event_type: reference::NULLIFY_EVENT_TYPE.to_owned(),
            event_type_raw: Some(reference::NULLIFY_EVENT_TYPE.to_owned()),
            payload,
            extensions: None,
            note: Some(note.to_owned()),
            issued_by: None,
            event_id: store.next_id(),
            created_at: format_unix_nanos(now_nanos()),
        },
    );
    let mut new = AggregateRecord::from_aggregate(&aggregate, &merkle);
    new.archived_at.clone_from(&record.archived_at);
    new.archive_note.clone_from(&record.archive_note);
    let body = serde_json::to_string(&event).map_err(json_error)?;
    Ok((new, event, body))
}

/// Reads several records in one round trip.
fn read_records(
    store: &PostgresStore,
    tenant: &str,
    keys: Vec<(String, String)>,
) -> Result<Vec<Stored>> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let mut out = Vec::with_capacity(keys.len());
        for (t, i) in &keys {
            out.push(crate::write::read_record(&client, &tenant, t, i).await?);
        }
        Ok(out)
    })
}

/// One archive attempt; `Ok(None)` when something changed before the commit.
fn try_archive(
    store: &PostgresStore,
    tenant: &str,
    (aggregate_type, aggregate_id): (&str, &str),
    note: Option<&str>,
    nullify: CascadeRule<'_>,
    publish: &[JobRoute],
) -> Result<Option<Aggregate>> {
    let expected = referrers(store, tenant, aggregate_type, aggregate_id)?;
    crate::read::get(store, tenant, aggregate_type, aggregate_id)?
        .ok_or(CoreError::AggregateNotFound)?;
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
    )?;
    let target_key = (aggregate_type.to_owned(), aggregate_id.to_owned());
    let mut keys = vec![target_key.clone()];
    keys.extend(by_source.keys().cloned());
    let mut stored = read_records(store, tenant, keys)?.into_iter();
    let (target_revision, mut target) = stored
        .next()
        .flatten()
        .filter(|(_, record)| record.version > 0)
        .ok_or(CoreError::AggregateNotFound)?;
    let note_text = reference::nullify_note(aggregate_type, aggregate_id);
    let mut nullified = Vec::new();
    let mut own_event = None;
    for ((source, paths), record) in by_source.into_iter().zip(stored) {
        let Some((revision, old)) = record.filter(|(_, r)| r.version > 0) else {
            continue;
        };
        if source == target_key {
            let (new, event, body) = seal_nullify(store, tenant, &target, &paths, &note_text)?;
            target = new;
            own_event = Some((event, body, paths));
            continue;
        }
        let (record, event, body) = seal_nullify(store, tenant, &old, &paths, &note_text)?;
        nullified.push(Nullify {
            revision,
            record,
            event,
            body,
            paths,
        });
    }
    let now = format_unix_nanos(now_nanos());
    let mut archived = target;
    archived.archived = true;
    archived.updated_at = Some(now.clone());
    archived.archived_at = Some(now);
    archived.archive_note = note
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let change_id = if publish.is_empty() {
        0
    } else {
        store.next_id()
    };
    let aggregate = archived.aggregate();
    let jobs = plugin_jobs(
        tenant,
        publish,
        JobAction::Archive,
        change_id,
        None,
        &aggregate,
    );
    let plan = ArchivePlan {
        tenant: tenant.to_owned(),
        expected,
        nullified,
        own_event,
        target_revision,
        archived,
        jobs,
    };
    let queues_events = !plan.nullified.is_empty() || plan.own_event.is_some();
    let committed = store.run(commit_archive(store.pool(), plan))?;
    if committed && queues_events {
        store.positions().committed();
    }
    Ok(committed.then_some(aggregate))
}

/// Removes the index entries of `source` that point at the target, for the cleared `paths`.
async fn drop_references(
    txn: &Transaction<'_>,
    tenant: &str,
    (source_type, source_id): (&str, &str),
    paths: &[String],
) -> Result<()> {
    for path in paths {
        txn.execute_cached(
            "DELETE FROM aggregate_references \
             WHERE tenant = $1 AND source_type = $2 AND source_id = $3 AND path = $4",
            &[&tenant, &source_type, &source_id, path],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Commits an archive attempt; `Ok(false)` when a referrer or a record changed meanwhile.
async fn commit_archive(pool: deadpool_postgres::Pool, plan: ArchivePlan) -> Result<bool> {
    match try_commit_archive(pool, plan).await {
        Err(err) if crate::raced(&err) => Ok(false),
        other => other,
    }
}

async fn try_commit_archive(pool: deadpool_postgres::Pool, plan: ArchivePlan) -> Result<bool> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let txn = client.transaction().await.map_err(db)?;
    let tenant = plan.tenant.as_str();
    let target = (
        plan.archived.aggregate_type.as_str(),
        plan.archived.aggregate_id.as_str(),
    );
    // Lock the target first: a concurrent archive of it waits here.
    txn.execute_cached(
        "SELECT 1 FROM aggregates WHERE tenant = $1 AND aggregate_type = $2 \
         AND aggregate_id = $3 FOR UPDATE",
        &[&tenant, &target.0, &target.1],
    )
    .await
    .map_err(db)?;
    if read_referrers(&txn, tenant, target).await? != plan.expected {
        return Ok(false);
    }
    for update in &plan.nullified {
        let source = (
            update.record.aggregate_type.as_str(),
            update.record.aggregate_id.as_str(),
        );
        if !put_aggregate(&txn, tenant, Some(update.revision), &update.record).await?
            || !insert_event(&txn, tenant, &update.event, &update.body).await?
        {
            return Ok(false);
        }
        drop_references(&txn, tenant, source, &update.paths).await?;
        add_usage(&txn, tenant, source, 1, update.body.len() as u64).await?;
    }
    if let Some((event, body, paths)) = &plan.own_event {
        if !insert_event(&txn, tenant, event, body).await? {
            return Ok(false);
        }
        drop_references(&txn, tenant, target, paths).await?;
        add_usage(&txn, tenant, target, 1, body.len() as u64).await?;
    }
    if !put_aggregate(&txn, tenant, Some(plan.target_revision), &plan.archived).await? {
        return Ok(false);
    }
    queue_jobs(&txn, &plan.jobs).await?;
    txn.commit().await.map_err(crate::commit_error)?;
    Ok(true)
}
