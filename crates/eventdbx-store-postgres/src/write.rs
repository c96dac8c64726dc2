//! Create, append and patch. The write reads its aggregate (and idempotency key), seals the
//! event on the caller's thread with `eventdbx-core`, then commits record, event, snapshot,
//! idempotency result, reference index, plugin jobs and usage in one transaction. The record is
//! updated only at the revision that was read, and the event's key is unique, so a write that
//! lost a race changes nothing and is prepared again from the new state.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use deadpool_postgres::Transaction;
use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, Event, MerkleBuilder};
use eventdbx_core::plugin::{JobAction, PluginJob};
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::write::{self, NewEvent, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{ReferenceLink, Result, StoreError, WriteOutcome, WriteRequest};

use crate::jobs::{plugin_jobs, queue_jobs};
use crate::records::{decode, AggregateRecord, IdempotencyRecord, SnapshotRecord};
use crate::{col, db, json_error, lost_race, now_nanos, pool_error, signed, Cached, PostgresStore};

/// How often a write is prepared again after losing a race before it gives up.
pub(crate) const MAX_ATTEMPTS: usize = 256;

/// Usage counters per tenant are spread over this many rows, so concurrent writes of one tenant
/// do not queue on one row lock until they commit.
const USAGE_SHARDS: u64 = 16;

/// An aggregate's stored record and the revision it was read at.
pub(crate) type Stored = Option<(i64, AggregateRecord)>;

/// Reads an aggregate's record and revision.
pub(crate) async fn read_record(
    client: &deadpool_postgres::Client,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Stored> {
    let row = client
        .query_opt_cached(
            "SELECT revision, record FROM aggregates \
             WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3",
            &[&tenant, &aggregate_type, &aggregate_id],
        )
        .await
        .map_err(db)?;
    match row {
        Some(row) => Ok(Some((col(&row, 0)?, decode(col(&row, 1)?)?))),
        None => Ok(None),
    }
}

/// Writes `new` over the record read at `revision` (`None`: there was none). `false` when the
/// record changed since (a lost race; nothing was written).
pub(crate) async fn put_aggregate(
    txn: &Transaction<'_>,
    tenant: &str,
    revision: Option<i64>,
    new: &AggregateRecord,
) -> Result<bool> {
    let c = new.columns()?;
    let (t, i) = (new.aggregate_type.as_str(), new.aggregate_id.as_str());
    let written = match revision {
        None => txn
            .execute_cached(
                "INSERT INTO aggregates (tenant, aggregate_type, aggregate_id, revision, version, \
                 archived, created_ms, updated_ms, record) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
                &[&tenant, &t, &i, &c.version, &c.archived, &c.created_ms, &c.updated_ms, &c.text],
            )
            .await
            .map_err(db)?,
        Some(revision) => txn
            .execute_cached(
                "UPDATE aggregates SET revision = revision + 1, version = $4, archived = $5, \
                 created_ms = $6, updated_ms = $7, record = $8 \
                 WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND revision = $9",
                &[
                    &tenant,
                    &t,
                    &i,
                    &c.version,
                    &c.archived,
                    &c.created_ms,
                    &c.updated_ms,
                    &c.text,
                    &revision,
                ],
            )
            .await
            .map_err(db)?,
    };
    Ok(written == 1)
}

/// Inserts a sealed event (its JSON is `body`). `false` when its version is taken.
pub(crate) async fn insert_event(
    txn: &Transaction<'_>,
    tenant: &str,
    event: &Event,
    body: &str,
) -> Result<bool> {
    let inserted = txn
        .execute_cached(
            "INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &tenant,
                &event.aggregate_type,
                &event.aggregate_id,
                &signed(event.version),
                &signed(event.metadata.event_id),
                &body,
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(err) if lost_race(&err) => Ok(false),
        Err(err) => Err(db(err)),
    }
}

/// Inserts a snapshot record.
pub(crate) async fn insert_snapshot(
    txn: &Transaction<'_>,
    tenant: &str,
    snapshot: &Snapshot,
    body: &str,
) -> Result<()> {
    txn.execute_cached(
        "INSERT INTO snapshots (tenant, snapshot_id, aggregate_type, aggregate_id, version, body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &tenant,
            &signed(snapshot.snapshot_id),
            &snapshot.aggregate_type,
            &snapshot.aggregate_id,
            &signed(snapshot.version),
            &body,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Adds to the tenant's usage, on the shard of `(aggregate_type, aggregate_id)`. Run it last in
/// a transaction: the row stays locked until the commit.
pub(crate) async fn add_usage(
    txn: &Transaction<'_>,
    tenant: &str,
    (aggregate_type, aggregate_id): (&str, &str),
    events: u64,
    bytes: u64,
) -> Result<()> {
    let mut hasher = DefaultHasher::new();
    (aggregate_type, aggregate_id).hash(&mut hasher);
    let shard = i32::try_from(hasher.finish() % USAGE_SHARDS).unwrap_or(0);
    txn.execute_cached(
        "INSERT INTO usage (tenant, shard, events, bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant, shard) DO UPDATE \
         SET events = usage.events + EXCLUDED.events, bytes = usage.bytes + EXCLUDED.bytes",
        &[&tenant, &shard, &signed(events), &signed(bytes)],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Refuses the write when the tenant already uses its quota. The tenant's usage rows (all of
/// them, created if missing) stay locked until the commit, so writers under a quota are checked
/// one after another against what the others committed, as in the embedded engine: concurrent
/// writes never pass the quota on the same reading.
async fn check_quota(txn: &Transaction<'_>, tenant: &str, quota: u64) -> Result<()> {
    let shards = i32::try_from(USAGE_SHARDS).unwrap_or(i32::MAX) - 1;
    txn.execute_cached(
        "INSERT INTO usage (tenant, shard, events, bytes) \
         SELECT $1, shard, 0, 0 FROM generate_series(0, $2) AS shard ON CONFLICT DO NOTHING",
        &[&tenant, &shards],
    )
    .await
    .map_err(db)?;
    let row = txn
        .query_one_cached(
            "SELECT coalesce(sum(bytes), 0)::bigint FROM \
             (SELECT bytes FROM usage WHERE tenant = $1 ORDER BY shard FOR UPDATE) AS locked",
            &[&tenant],
        )
        .await
        .map_err(db)?;
    let used = crate::unsigned(col(&row, 0)?);
    if used >= quota {
        return Err(CoreError::TenantQuota {
            tenant: tenant.to_owned(),
            quota_mb: quota / (1024 * 1024),
        }
        .into());
    }
    Ok(())
}

/// Makes the reference index entries of a source aggregate equal to `links`.
async fn put_references(
    txn: &Transaction<'_>,
    tenant: &str,
    (source_type, source_id): (&str, &str),
    links: &[ReferenceLink],
) -> Result<()> {
    let rows = txn
        .query_cached(
            "SELECT path, target_type, target_id FROM aggregate_references \
             WHERE tenant = $1 AND source_type = $2 AND source_id = $3",
            &[&tenant, &source_type, &source_id],
        )
        .await
        .map_err(db)?;
    let mut previous: BTreeMap<String, (String, String)> = BTreeMap::new();
    for row in &rows {
        previous.insert(col(row, 0)?, (col(row, 1)?, col(row, 2)?));
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
        txn.execute_cached(
            "DELETE FROM aggregate_references \
             WHERE tenant = $1 AND source_type = $2 AND source_id = $3 AND path = $4",
            &[&tenant, &source_type, &source_id, path],
        )
        .await
        .map_err(db)?;
    }
    for (path, (target_type, target_id)) in wanted {
        let unchanged = previous
            .get(path)
            .is_some_and(|(t, i)| t == target_type && i == target_id);
        if unchanged {
            continue;
        }
        txn.execute_cached(
            "INSERT INTO aggregate_references \
             (tenant, source_type, source_id, path, target_type, target_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &tenant,
                &source_type,
                &source_id,
                &path,
                &target_type,
                &target_id,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// What a prepared write commits.
struct Plan {
    tenant: String,
    revision: Option<i64>,
    record: AggregateRecord,
    event: Event,
    event_body: String,
    snapshot: Option<(Snapshot, String)>,
    idempotency: Option<(String, String)>,
    links: Option<Vec<ReferenceLink>>,
    jobs: Vec<PluginJob>,
    quota: Option<u64>,
}

/// Commits a prepared write; `Ok(false)` when it lost a race (nothing written).
async fn commit(pool: deadpool_postgres::Pool, plan: Plan) -> Result<bool> {
    match try_commit(pool, plan).await {
        Err(err) if crate::raced(&err) => Ok(false),
        other => other,
    }
}

async fn try_commit(pool: deadpool_postgres::Pool, plan: Plan) -> Result<bool> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let txn = client.transaction().await.map_err(db)?;
    let tenant = plan.tenant.as_str();
    let (t, i) = (
        plan.record.aggregate_type.as_str(),
        plan.record.aggregate_id.as_str(),
    );
    // The aggregate's row first, then the usage rows, in every write: two writes never take
    // the same rows in opposite orders (a deadlock PostgreSQL would break after a second).
    if !put_aggregate(&txn, tenant, plan.revision, &plan.record).await? {
        return Ok(false);
    }
    if let Some(quota) = plan.quota {
        check_quota(&txn, tenant, quota).await?;
    }
    if !insert_event(&txn, tenant, &plan.event, &plan.event_body).await? {
        return Ok(false);
    }
    let mut bytes = plan.event_body.len() as u64;
    if let Some((snapshot, body)) = &plan.snapshot {
        insert_snapshot(&txn, tenant, snapshot, body).await?;
        bytes += body.len() as u64;
    }
    if let Some((key, body)) = &plan.idempotency {
        let inserted = txn
            .execute_cached(
                "INSERT INTO idempotency (tenant, aggregate_type, aggregate_id, key, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&tenant, &t, &i, key, body],
            )
            .await
            .map_err(db)?;
        if inserted == 0 {
            return Ok(false);
        }
    }
    if let Some(links) = &plan.links {
        put_references(&txn, tenant, (t, i), links).await?;
    }
    queue_jobs(&txn, &plan.jobs).await?;
    add_usage(&txn, tenant, (t, i), 1, bytes).await?;
    txn.commit().await.map_err(crate::commit_error)?;
    Ok(true)
}

/// Reads what a write starts from: the idempotency key's first result, else the record.
async fn read_for_write(
    pool: deadpool_postgres::Pool,
    tenant: String,
    aggregate_type: String,
    aggregate_id: String,
    key: Option<String>,
) -> Result<(Option<IdempotencyRecord>, Stored)> {
    let client = pool.get().await.map_err(pool_error)?;
    if let Some(key) = key {
        let row = client
            .query_opt_cached(
                "SELECT body FROM idempotency WHERE tenant = $1 AND aggregate_type = $2 \
                 AND aggregate_id = $3 AND key = $4",
                &[&tenant, &aggregate_type, &aggregate_id, &key],
            )
            .await
            .map_err(db)?;
        if let Some(row) = row {
            return Ok((Some(decode(col(&row, 0)?)?), None));
        }
    }
    let stored = read_record(&client, &tenant, &aggregate_type, &aggregate_id).await?;
    Ok((None, stored))
}

/// [`eventdbx_store::EventStore::write`].
pub(crate) fn write(
    store: &PostgresStore,
    tenant: &str,
    request: WriteRequest,
) -> Result<WriteOutcome> {
    store.writable()?;
    let (t, i) = (
        request.aggregate_type.as_str(),
        request.aggregate_id.as_str(),
    );
    let _guard = store.lock(tenant, t, i);
    for _ in 0..MAX_ATTEMPTS {
        let key = request.idempotency.as_ref().map(|idem| idem.key.clone());
        let (replay, stored) = store.run(read_for_write(
            store.pool(),
            tenant.to_owned(),
            t.to_owned(),
            i.to_owned(),
            key,
        ))?;
        if let (Some(record), Some(idempotency)) = (replay, &request.idempotency) {
            if record.digest != merkle::to_hex(&idempotency.digest) {
                return Err(CoreError::IdempotencyConflict(idempotency.key.clone()).into());
            }
            return Ok(WriteOutcome {
                event: record.event,
                aggregate: record.aggregate.aggregate(),
                snapshot: None,
                replayed: true,
            });
        }
        let (plan, outcome) = prepare(store, tenant, &request, stored)?;
        if store.run(commit(store.pool(), plan))? {
            return Ok(outcome);
        }
    }
    Err(StoreError::engine(format!(
        "{t}:{i} kept changing under the write (retry later)"
    )))
}

/// The prepare half: domain checks, payload, sealing, snapshot and serialisation.
fn prepare(
    store: &PostgresStore,
    tenant: &str,
    request: &WriteRequest,
    stored: Stored,
) -> Result<(Plan, WriteOutcome)> {
    let (t, i) = (
        request.aggregate_type.as_str(),
        request.aggregate_id.as_str(),
    );
    let (revision, old) = match stored {
        Some((revision, record)) => (Some(revision), Some(record)),
        None => (None, None),
    };
    let current = old.as_ref().map(AggregateRecord::aggregate);
    write::check_write(
        request.kind,
        t,
        i,
        current.as_ref(),
        request.expected_version,
    )?;
    let (mut aggregate, mut merkle) = match &old {
        Some(record) if record.version > 0 => (record.aggregate(), record.merkle()?),
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
            event_type: request.event_type.clone(),
            event_type_raw: request.event_type_raw.clone(),
            payload,
            extensions: request.extensions.clone(),
            note: request.note.clone(),
            issued_by: request.issued_by.clone(),
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
    let event_body = serde_json::to_string(&event).map_err(json_error)?;
    let snapshot_body = snapshot
        .as_ref()
        .map(|s| serde_json::to_string(&SnapshotRecord::from(s)))
        .transpose()
        .map_err(json_error)?;
    let idempotency = request
        .idempotency
        .as_ref()
        .map(|idem| {
            serde_json::to_string(&IdempotencyRecord {
                digest: merkle::to_hex(&idem.digest),
                event: event.clone(),
                aggregate: record.clone(),
            })
            .map(|body| (idem.key.clone(), body))
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
    let plan = Plan {
        tenant: tenant.to_owned(),
        revision,
        record,
        event: event.clone(),
        event_body,
        snapshot: snapshot.clone().zip(snapshot_body),
        idempotency,
        links,
        jobs,
        quota: request.quota_bytes,
    };
    Ok((
        plan,
        WriteOutcome {
            event,
            aggregate,
            snapshot,
            replayed: false,
        },
    ))
}
