//! Create, append and patch: the statements and the prepare half (`writer.rs` runs a write from
//! its request to its outcome). The write reads its aggregate (and idempotency key), or starts
//! from the record this process committed last for it ([`Stripe`]), seals the event with
//! `eventdbx-core`, then commits record, event, snapshot, idempotency
//! result, reference index, plugin jobs and usage in one statement, `eventdbx_write` (its own
//! transaction: one round trip), or, for a plain write, in the statement of its group with the
//! other plain writes ready at the same time (`group.rs`). The record is updated only at the
//! revision that was read, and the event's key is unique, so a write that lost a race changes
//! nothing and is prepared again from the stored state.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use deadpool_postgres::Transaction;
use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, Event, MerkleBuilder};
use eventdbx_core::plugin::{JobAction, PluginJob};
use eventdbx_core::snowflake::SnowflakeGenerator;
use eventdbx_core::time::format_unix_nanos;
use eventdbx_core::write::{self, NewEvent, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{Result, StoreError, WriteOutcome, WriteRequest};

use crate::records::{decode, AggregateRecord, IdempotencyRecord, RecordColumns, SnapshotRecord};
use crate::{col, db, json_error, lost_race, next_id, now_nanos, pool_error, signed, Cached};
use eventdbx_store::plugin_jobs;

/// How often a write is prepared again after losing a race before it gives up.
pub(crate) const MAX_ATTEMPTS: usize = 256;

/// Usage counters per tenant are spread over this many rows, so concurrent writes of one tenant
/// do not queue on one row lock until they commit.
pub(crate) const USAGE_SHARDS: u64 = 16;

/// An aggregate's stored record and the revision it was read at.
pub(crate) type Stored = Option<(i64, AggregateRecord)>;

/// Records remembered per lock stripe, and the largest one remembered (its JSON length): at most
/// 4 × 1024 stripes × 16 KiB.
const REMEMBERED_PER_STRIPE: usize = 4;
const REMEMBERED_MAX_BYTES: usize = 16 * 1024;

/// One lock stripe: its mutex serialises this process's writers of the aggregates hashed to it,
/// and it remembers the records they committed last, so the next write of a hot aggregate starts
/// from memory instead of a read. A remembered record is only a guess: the commit still checks
/// the revision, so a record changed since (by another server, or an archive) makes the write
/// lose its race and start again from the database.
#[derive(Default)]
pub(crate) struct Stripe {
    recent: std::collections::VecDeque<Remembered>,
}

/// A record this process committed last, with what the commit left of its reference index.
struct Remembered {
    tenant: String,
    revision: i64,
    record: AggregateRecord,
    unreferenced: bool,
}

/// What a stripe recalls of an aggregate: its record and revision (`None`: nothing remembered),
/// and whether this process's last commit of it left no reference index entry
/// ([`Plan::unreferenced`]).
pub(crate) type Recalled = (Stored, bool);

impl Stripe {
    fn position(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> Option<usize> {
        self.recent.iter().position(|r| {
            r.tenant == tenant
                && r.record.aggregate_type == aggregate_type
                && r.record.aggregate_id == aggregate_id
        })
    }

    /// The record this process committed last for the aggregate, with its revision, and
    /// whether that commit left it without reference index entries.
    pub(crate) fn recall(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Recalled {
        self.position(tenant, aggregate_type, aggregate_id)
            .and_then(|found| self.recent.get(found))
            .map_or((None, false), |r| {
                (Some((r.revision, r.record.clone())), r.unreferenced)
            })
    }

    pub(crate) fn forget(&mut self, tenant: &str, aggregate_type: &str, aggregate_id: &str) {
        if let Some(found) = self.position(tenant, aggregate_type, aggregate_id) {
            self.recent.remove(found);
        }
    }

    /// Remembers what `committed` left for the next write of its aggregate.
    pub(crate) fn remember(&mut self, tenant: &str, committed: Committed) {
        let Committed {
            revision,
            record,
            size,
            unreferenced,
        } = committed;
        self.forget(tenant, &record.aggregate_type, &record.aggregate_id);
        if size > REMEMBERED_MAX_BYTES {
            return;
        }
        if self.recent.len() >= REMEMBERED_PER_STRIPE {
            self.recent.pop_back();
        }
        self.recent.push_front(Remembered {
            tenant: tenant.to_owned(),
            revision,
            record,
            unreferenced,
        });
    }
}

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
    let c = crate::records::columns(new)?;
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
    let shard = usage_shard(aggregate_type, aggregate_id);
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

/// The whole commit of a write, one statement (migration 2 in `schema.rs`): PostgreSQL runs it
/// as its own transaction, so a write costs one round trip and one WAL flush, which PostgreSQL
/// shares between concurrent commits.
const WRITE: &str = "SELECT eventdbx_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)";

/// The SQLSTATE `eventdbx_write` raises when the tenant already uses its quota.
const QUOTA_EXCEEDED: &str = "EDBQ1";

/// The usage row of an aggregate among its tenant's [`USAGE_SHARDS`].
fn usage_shard(aggregate_type: &str, aggregate_id: &str) -> i32 {
    let mut hasher = DefaultHasher::new();
    (aggregate_type, aggregate_id).hash(&mut hasher);
    i32::try_from(hasher.finish() % USAGE_SHARDS).unwrap_or(0)
}

/// What a prepared write commits.
pub(crate) struct Plan {
    pub(crate) tenant: String,
    pub(crate) revision: Option<i64>,
    pub(crate) record: AggregateRecord,
    pub(crate) columns: RecordColumns,
    pub(crate) event_id: u64,
    pub(crate) event_body: String,
    pub(crate) snapshot: Option<(Snapshot, String)>,
    pub(crate) idempotency: Option<(String, String)>,
    /// The reference index entries wanted, by path (`None`: leave them alone).
    pub(crate) links: Option<BTreeMap<String, (String, String)>>,
    /// The aggregate has no reference index entry at `revision`: this process's last commit of
    /// it (at that revision) left none, so a write that wants none has nothing to clear. Entries
    /// are only ever added by a write of their aggregate, which moves its revision on; a write
    /// whose revision is stale stores nothing. `false` when not known (a record read from the
    /// database).
    pub(crate) unreferenced: bool,
    pub(crate) jobs: Vec<QueuedJob>,
    pub(crate) quota: Option<u64>,
}

/// A plugin job of the write: its JSON after the id, which the sequence gives in the commit.
pub(crate) struct QueuedJob {
    plugin: String,
    rank: i32,
    tail: String,
}

impl QueuedJob {
    fn new(job: &PluginJob) -> Result<Self> {
        let body = serde_json::to_string(job).map_err(json_error)?;
        // `id` is the job's first field (eventdbx-core); the commit writes the real one in.
        let tail = body
            .strip_prefix(&format!("{{\"id\":{},", job.id))
            .ok_or_else(|| StoreError::engine("a plugin job's JSON does not start with its id"))?
            .to_owned();
        Ok(QueuedJob {
            plugin: job.plugin.clone(),
            rank: i32::from(job.priority.rank()),
            tail,
        })
    }
}

/// What a committed write leaves for the next write of its aggregate.
pub(crate) struct Committed {
    revision: i64,
    record: AggregateRecord,
    size: usize,
    /// The commit left no reference index entry ([`Plan::unreferenced`]).
    unreferenced: bool,
}

impl Committed {
    /// What `plan` leaves once committed.
    pub(crate) fn of(plan: Plan) -> Self {
        Committed {
            revision: plan.revision.map_or(1, |r| r + 1),
            size: plan.columns.text.len(),
            unreferenced: plan
                .links
                .as_ref()
                .map_or(plan.unreferenced, BTreeMap::is_empty),
            record: plan.record,
        }
    }
}

/// Commits a prepared write on a connection of the pool; `Ok(None)` when it lost a race.
pub(crate) async fn commit(pool: deadpool_postgres::Pool, plan: Plan) -> Result<Option<Committed>> {
    let client = pool.get().await.map_err(pool_error)?;
    commit_alone(&client, plan).await
}

/// Commits a prepared write by itself (`eventdbx_write`); `Ok(None)` when it lost a race
/// (nothing was written).
pub(crate) async fn commit_alone(
    client: &deadpool_postgres::ClientWrapper,
    plan: Plan,
) -> Result<Option<Committed>> {
    let (t, i) = (
        plan.record.aggregate_type.as_str(),
        plan.record.aggregate_id.as_str(),
    );
    let c = &plan.columns;
    let (snapshot_id, snapshot_version, snapshot_body) = match &plan.snapshot {
        Some((snapshot, body)) => (
            Some(signed(snapshot.snapshot_id)),
            Some(signed(snapshot.version)),
            Some(body.as_str()),
        ),
        None => (None, None, None),
    };
    let (key, key_body) = match &plan.idempotency {
        Some((key, body)) => (Some(key.as_str()), Some(body.as_str())),
        None => (None, None),
    };
    let links = plan.links.as_ref();
    let paths: Vec<&str> = links
        .into_iter()
        .flatten()
        .map(|(p, _)| p.as_str())
        .collect();
    let types: Vec<&str> = links
        .into_iter()
        .flatten()
        .map(|(_, (t, _))| t.as_str())
        .collect();
    let ids: Vec<&str> = links
        .into_iter()
        .flatten()
        .map(|(_, (_, i))| i.as_str())
        .collect();
    let plugins: Vec<&str> = plan.jobs.iter().map(|j| j.plugin.as_str()).collect();
    let ranks: Vec<i32> = plan.jobs.iter().map(|j| j.rank).collect();
    let tails: Vec<&str> = plan.jobs.iter().map(|j| j.tail.as_str()).collect();
    let bytes = plan.event_body.len() + snapshot_body.map_or(0, str::len);
    // Preparing sends nothing of the write (a failure there is `db`'s); the statement itself is
    // the commit, so a session lost while it runs leaves the outcome unknown (`commit_error`).
    let statement = client.prepare_cached(WRITE).await.map_err(db)?;
    let written = client
        .execute(
            &statement,
            &[
                &plan.tenant,
                &t,
                &i,
                &plan.revision,
                &c.version,
                &c.archived,
                &c.created_ms,
                &c.updated_ms,
                &c.text,
                &plan.quota.map(signed),
                &signed(plan.event_id),
                &plan.event_body,
                &snapshot_id,
                &snapshot_version,
                &snapshot_body,
                &key,
                &key_body,
                &links.is_some(),
                &paths,
                &types,
                &ids,
                &plugins,
                &ranks,
                &tails,
                &usage_shard(t, i),
                &signed(bytes as u64),
            ],
        )
        .await;
    match written {
        Ok(_) => Ok(Some(Committed::of(plan))),
        Err(err) if lost_race(&err) => Ok(None),
        Err(err) if err.code().is_some_and(|c| c.code() == QUOTA_EXCEEDED) => {
            let quota = plan.quota.unwrap_or(0);
            Err(CoreError::TenantQuota {
                tenant: plan.tenant.clone(),
                quota_mb: quota / (1024 * 1024),
            }
            .into())
        }
        Err(err) => Err(crate::commit_error(err)),
    }
}

/// Reads what a write starts from: the idempotency key's first result, else the record.
pub(crate) async fn read_for_write(
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

/// The prepare half: domain checks, payload, sealing, snapshot and serialisation.
pub(crate) fn prepare(
    ids: &Mutex<SnowflakeGenerator>,
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
    let event_id = next_id(ids);
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
    // One entry per path, the last one winning, as the embedded engine's index keeps them.
    let links = request.references.as_ref().map(|scan| {
        scan(&aggregate)
            .into_iter()
            .map(|l| (l.path, (l.target_type, l.target_id)))
            .collect::<BTreeMap<_, _>>()
    });
    let snapshot = match request.snapshot_threshold {
        Some(n)
            if n > 0 && request.kind != WriteKind::Create && event.version.is_multiple_of(n) =>
        {
            let comment = format!("auto snapshot v{}", event.version);
            Some(Snapshot::of(
                &aggregate,
                next_id(ids),
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
    )
    .iter()
    .map(QueuedJob::new)
    .collect::<Result<Vec<_>>>()?;
    let plan = Plan {
        tenant: tenant.to_owned(),
        revision,
        columns: crate::records::columns(&record)?,
        record,
        event_id,
        event_body,
        snapshot: snapshot.clone().zip(snapshot_body),
        idempotency,
        links,
        unreferenced: false,
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

#[cfg(test)]
mod tests {
    use eventdbx_core::plugin::{PayloadMode, Priority};
    use eventdbx_store::JobRoute;

    use super::*;

    /// The commit writes a job's id in front of the rest of its JSON: the JSON must start with
    /// the id, and the two together must be the job again.
    #[test]
    fn a_queued_job_is_its_json_after_the_id() {
        let route = JobRoute {
            plugin: "search".into(),
            mode: PayloadMode::All,
            priority: Priority::High,
            schema: None,
        };
        let aggregate = Aggregate::new("order", "o-1");
        let jobs = plugin_jobs("default", &[route], JobAction::Event, 7, None, &aggregate);
        let queued = QueuedJob::new(&jobs[0]).expect("queued");
        assert_eq!((queued.plugin.as_str(), queued.rank), ("search", 0));
        let stored: PluginJob =
            serde_json::from_str(&format!("{{\"id\":42,{}", queued.tail)).expect("job JSON");
        let mut expected = jobs[0].clone();
        expected.id = 42;
        assert_eq!(stored, expected);
    }
}
