//! The embedded engine on [redb](https://docs.rs/redb): one file, crash-safe copy-on-write
//! B-trees, MVCC readers that never block the writer. Key layout and the reasons for redb are in
//! `docs/storage.md`.
//!
//! # Concurrency
//! A write runs in two halves. The *prepare* half runs on the caller's thread under a lock
//! striped by (tenant, type, id): it reads the aggregate from a read snapshot, applies the
//! domain rules, patches, hashes and serialises. Writes to different aggregates prepare in
//! parallel; writes to one aggregate are serialised, so the read snapshot is always current for
//! it. The *commit* half is a closure of inserts queued for group commit ([`commit`]): one
//! writer at a time leads, running every queued job in a single redb transaction committed
//! once, so concurrent writers share one fsync. Callers are answered only after that commit.
//! In relaxed mode the commit half runs in one open transaction shared by consecutive writes,
//! committed before any read starts (see [`commit`]); a write's own reads then go through that
//! transaction.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{self, Event, MerkleBuilder};
use eventdbx_core::query::sort::{SortField, SortKey, SortOrder, SortValue};
use eventdbx_core::query::EventView;
use eventdbx_core::schema::reference;
use eventdbx_core::snowflake::{Next, SnowflakeGenerator};
use eventdbx_core::time::{format_unix_nanos, parse_unix_millis};
use eventdbx_core::write::{self, NewEvent, WriteKind};
use eventdbx_core::CoreError;
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod commit;
mod jobs;

use commit::{Apply, Committer, Latest};
use jobs::{queue_jobs, QueueKey, JOBS, JOB_DEAD, JOB_DONE, JOB_QUEUE};

use crate::{
    CascadeRule, Durability, EventPage, EventStore, JobRoute, ListPage, ListQuery, OutboxPage,
    ReferenceLink, Referrer, Result, StoreError, Usage, Visibility, WriteOutcome, WriteRequest,
};
use eventdbx_core::plugin::{JobAction, JobStatus, PluginJob};

/// (tenant, type, id) → aggregate record (JSON).
const AGGREGATES: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("aggregates");
/// (tenant, type, id, version) → event (JSON, the §14.2 shape).
const EVENTS: TableDefinition<(&str, &str, &str, u64), &[u8]> = TableDefinition::new("events");
/// (tenant, event id) → (type, id, version): the global event order the outbox reads.
const OUTBOX: TableDefinition<(&str, u64), (&str, &str, u64)> = TableDefinition::new("outbox");
/// (tenant, index kind, value, a, b) → archived flag: one entry per aggregate per sort layout.
const SORT_INDEX: TableDefinition<(&str, u8, u64, &str, &str), u8> =
    TableDefinition::new("sort_index");
/// (tenant, snapshot id) → snapshot record (JSON).
const SNAPSHOTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("snapshots");
/// (tenant, type, id, snapshot id) → (): snapshots of one aggregate, in creation order.
const SNAPSHOTS_BY_AGGREGATE: TableDefinition<(&str, &str, &str, u64), ()> =
    TableDefinition::new("snapshots_by_aggregate");
/// (tenant, type, id, key) → idempotency record (JSON).
const IDEMPOTENCY: TableDefinition<(&str, &str, &str, &str), &[u8]> =
    TableDefinition::new("idempotency");
/// (tenant, target type, target id, source type, source id, path) → (): the reverse reference
/// index, always equal to the references in each source's current state.
const REFERRERS: TableDefinition<(&str, &str, &str, &str, &str, &str), ()> =
    TableDefinition::new("referrers");
/// (tenant, source type, source id, path) → (target type, target id): the forward side of
/// [`REFERRERS`], so a write can find and replace its aggregate's previous entries.
const REFERENCES: TableDefinition<(&str, &str, &str, &str), (&str, &str)> =
    TableDefinition::new("references");
/// tenant → (events, bytes).
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");
/// name → value: [`LAST_ID`], at or above every Snowflake id ever issued (see
/// `commit::reserve_ids`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The [`META`] key of the id reservation.
pub(crate) const LAST_ID: &str = "last_id";

/// The tables of one batch transaction, each opened on first use and then shared by the jobs
/// of the batch (opening a table and writing back its root are a large part of a small commit).
pub(crate) struct Tables<'t> {
    txn: &'t WriteTransaction,
    aggregates: Option<redb::Table<'t, AggregateKey, Bytes>>,
    events: Option<redb::Table<'t, EventKey, Bytes>>,
    outbox: Option<redb::Table<'t, OutboxKey, OutboxValue>>,
    index: Option<redb::Table<'t, IndexKey, u8>>,
    snapshots: Option<redb::Table<'t, SnapshotKey, Bytes>>,
    snapshots_by_aggregate: Option<redb::Table<'t, EventKey, ()>>,
    idempotency: Option<redb::Table<'t, IdempotencyKey, Bytes>>,
    usage: Option<redb::Table<'t, &'static str, (u64, u64)>>,
    referrers: Option<redb::Table<'t, ReferrerKey, ()>>,
    references: Option<redb::Table<'t, IdempotencyKey, (&'static str, &'static str)>>,
    meta: Option<redb::Table<'t, &'static str, u64>>,
    jobs: Option<redb::Table<'t, u64, Bytes>>,
    job_queue: Option<redb::Table<'t, QueueKey, u8>>,
    job_done: Option<redb::Table<'t, (u64, u64), ()>>,
    job_dead: Option<redb::Table<'t, u64, ()>>,
}

type Bytes = &'static [u8];
type AggregateKey = (&'static str, &'static str, &'static str);
/// (tenant, type, id, number): events by version, snapshots of an aggregate by id.
type EventKey = (&'static str, &'static str, &'static str, u64);
type OutboxKey = (&'static str, u64);
type OutboxValue = (&'static str, &'static str, u64);
type SnapshotKey = (&'static str, u64);
type IdempotencyKey = (&'static str, &'static str, &'static str, &'static str);
type ReferrerKey = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

macro_rules! lazy_table {
    ($name:ident, $definition:expr, $key:ty, $value:ty) => {
        pub(crate) fn $name(&mut self) -> Result<&mut redb::Table<'t, $key, $value>> {
            if self.$name.is_none() {
                self.$name = Some(self.txn.open_table($definition).map_err(storage)?);
            }
            self.$name
                .as_mut()
                .ok_or_else(|| StoreError::engine("table vanished"))
        }
    };
}

impl<'t> Tables<'t> {
    pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
        Tables {
            txn,
            aggregates: None,
            events: None,
            outbox: None,
            index: None,
            snapshots: None,
            snapshots_by_aggregate: None,
            idempotency: None,
            usage: None,
            referrers: None,
            references: None,
            meta: None,
            jobs: None,
            job_queue: None,
            job_done: None,
            job_dead: None,
        }
    }

    lazy_table!(aggregates, AGGREGATES, AggregateKey, Bytes);
    lazy_table!(events, EVENTS, EventKey, Bytes);
    lazy_table!(outbox, OUTBOX, OutboxKey, OutboxValue);
    lazy_table!(index, SORT_INDEX, IndexKey, u8);
    lazy_table!(snapshots, SNAPSHOTS, SnapshotKey, Bytes);
    lazy_table!(snapshots_by_aggregate, SNAPSHOTS_BY_AGGREGATE, EventKey, ());
    lazy_table!(idempotency, IDEMPOTENCY, IdempotencyKey, Bytes);
    lazy_table!(usage, USAGE, &'static str, (u64, u64));
    lazy_table!(referrers, REFERRERS, ReferrerKey, ());
    lazy_table!(
        references,
        REFERENCES,
        IdempotencyKey,
        (&'static str, &'static str)
    );
    lazy_table!(meta, META, &'static str, u64);
    lazy_table!(jobs, JOBS, u64, Bytes);
    lazy_table!(job_queue, JOB_QUEUE, QueueKey, u8);
    lazy_table!(job_done, JOB_DONE, (u64, u64), ());
    lazy_table!(job_dead, JOB_DEAD, u64, ());
}

/// Sort layouts kept in [`SORT_INDEX`]: `(value, a, b)` per aggregate.
const IX_NATURAL: u8 = 0; // (0, type, id)
const IX_ID: u8 = 1; // (0, id, type)
const IX_CREATED: u8 = 2; // (created, type, id)
const IX_CREATED_ID: u8 = 3; // (created, id, type)
const IX_UPDATED: u8 = 4; // (updated, type, id)
const IX_UPDATED_ID: u8 = 5; // (updated, id, type)
const IX_VERSION: u8 = 6; // (version, type, id)

/// Above every character a valid type or id may contain (they are ASCII names).
const HIGH: &str = "\u{7f}";
/// Above every string: field paths are not restricted to ASCII.
const TOP: &str = "\u{10ffff}";
/// How often an archive is re-planned when its referrers change under it.
const ARCHIVE_ATTEMPTS: usize = 8;
const LOCK_STRIPES: usize = 1024;

fn storage(err: impl Into<redb::Error>) -> StoreError {
    StoreError::storage("", err.into())
}

fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::storage("stored record is not valid JSON", err)
}

/// The stored form of an aggregate: the domain fields plus the Merkle frontier and archive
/// bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AggregateRecord {
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    state: Map<String, Value>,
    extensions: Map<String, Value>,
    merkle_root: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    archived: bool,
    /// The Merkle frontier as (leaf count, hex digest), largest subtree first.
    frontier: Vec<(u64, String)>,
    archived_at: Option<String>,
    archive_note: Option<String>,
}

impl AggregateRecord {
    fn from_aggregate(aggregate: &Aggregate, merkle: &MerkleBuilder) -> Self {
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

    fn aggregate(&self) -> Aggregate {
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

    fn merkle(&self) -> Result<MerkleBuilder> {
        let frontier = self
            .frontier
            .iter()
            .map(|(n, hex)| Ok((*n, digest_from_hex(hex)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MerkleBuilder::from_frontier(frontier)?)
    }

    /// The entries this aggregate has in [`SORT_INDEX`].
    fn index_entries(&self) -> [(u8, u64, &str, &str); 7] {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        let created = timestamp_value(self.created_at.as_deref());
        let updated = timestamp_value(self.updated_at.as_deref());
        [
            (IX_NATURAL, 0, t, i),
            (IX_ID, 0, i, t),
            (IX_CREATED, created, t, i),
            (IX_CREATED_ID, created, i, t),
            (IX_UPDATED, updated, t, i),
            (IX_UPDATED_ID, updated, i, t),
            (IX_VERSION, self.version, t, i),
        ]
    }
}

/// Index value of a timestamp: 0 when absent (sorts first), else epoch ms + 1.
fn timestamp_value(text: Option<&str>) -> u64 {
    text.and_then(parse_unix_millis).map_or(0, |ms| ms + 1)
}

fn digest_from_hex(hex: &str) -> Result<merkle::Digest> {
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

/// A stored event decoded for verification, borrowing from the stored bytes where it can.
#[derive(Deserialize)]
struct StoredEvent<'a> {
    #[serde(borrow)]
    aggregate_type: Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    event_type_raw: Option<Cow<'a, str>>,
    payload: Value,
    #[serde(default)]
    extensions: Option<Map<String, Value>>,
    #[serde(borrow)]
    metadata: StoredMetadata<'a>,
    version: u64,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    #[serde(borrow)]
    merkle_root: Cow<'a, str>,
}

#[derive(Deserialize)]
struct StoredMetadata<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    issued_by: Option<StoredIssuer<'a>>,
    #[serde(borrow, default)]
    note: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StoredIssuer<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    snapshot_id: u64,
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    state: Map<String, Value>,
    merkle_root: String,
    created_at: String,
    comment: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    digest: String,
    event: Event,
    aggregate: AggregateRecord,
}

/// The embedded store. Cheap to share behind an `Arc`; dropping it makes relaxed commits
/// durable.
pub struct RedbStore {
    db: Arc<Database>,
    durability: Durability,
    committer: Committer,
    locks: Vec<Mutex<()>>,
    ids: Mutex<SnowflakeGenerator>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the database file at `path` with worker id 0.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        Self::open_with_worker(path, durability, 0)
    }

    /// Opens the database; `worker_id` is the Snowflake worker id (0–1023).
    pub fn open_with_worker(
        path: impl AsRef<Path>,
        durability: Durability,
        worker_id: u16,
    ) -> Result<Self> {
        let db = Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        let last_id = {
            let mut tables = Tables::new(&txn);
            // Create every table now, so readers never meet a missing one.
            tables.aggregates()?;
            tables.events()?;
            tables.outbox()?;
            tables.index()?;
            tables.snapshots()?;
            tables.snapshots_by_aggregate()?;
            tables.idempotency()?;
            tables.usage()?;
            tables.referrers()?;
            tables.references()?;
            tables.jobs()?;
            tables.job_queue()?;
            tables.job_done()?;
            tables.job_dead()?;
            let last = tables
                .meta()?
                .get(LAST_ID)
                .map_err(storage)?
                .map_or(0, |v| v.value());
            last
        };
        txn.commit().map_err(storage)?;
        let ids = SnowflakeGenerator::new(worker_id, last_id)?;
        let db = Arc::new(db);
        let committer = Committer::new(Arc::clone(&db), durability, last_id)?;
        Ok(RedbStore {
            db,
            durability,
            committer,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            ids: Mutex::new(ids),
        })
    }

    fn stripe(tenant: &str, aggregate_type: &str, aggregate_id: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        (tenant, aggregate_type, aggregate_id).hash(&mut hasher);
        (hasher.finish() % LOCK_STRIPES as u64) as usize
    }

    fn lock(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> MutexGuard<'_, ()> {
        // A poisoned stripe only means another writer panicked; the data it guards is redb's.
        self.locks[Self::stripe(tenant, aggregate_type, aggregate_id)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the stripes of several aggregates, in stripe order so two multi-aggregate writers
    /// can never deadlock (single-aggregate writers hold one stripe and wait for none).
    fn lock_all<'s>(
        &self,
        tenant: &str,
        aggregates: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = aggregates
            .map(|(t, i)| Self::stripe(tenant, t, i))
            .collect();
        stripes
            .into_iter()
            .map(|stripe| {
                self.locks[stripe]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            })
            .collect()
    }

    fn next_id(&self) -> u64 {
        loop {
            let now_ms = now_nanos() / 1_000_000;
            let next = self
                .ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next(now_ms);
            match next {
                Next::Id(id) => return id,
                Next::WaitUntil(at) => {
                    std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms).max(1)));
                }
            }
        }
    }

    /// Commits inserts (group commit) and waits for the commit. `max_id` is the highest
    /// Snowflake id the inserts store (0 for none).
    fn commit(&self, max_id: u64, apply: Apply) -> Result<()> {
        self.committer.commit(max_id, apply)
    }

    /// A read transaction that sees every acknowledged write (relaxed mode commits its open
    /// transaction first).
    pub(crate) fn read(&self) -> Result<ReadTransaction> {
        self.committer.settle()?;
        self.db.begin_read().map_err(storage)
    }

    /// One attempt of [`EventStore::archive`]; `Ok(None)` when the referrers changed between
    /// planning and the commit (the caller plans again).
    fn try_archive(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        nullify: CascadeRule<'_>,
        publish: &[JobRoute],
    ) -> Result<Option<Aggregate>> {
        let expected = {
            let read = self.read()?;
            let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
            read_record(&aggregates, tenant, aggregate_type, aggregate_id)?
                .filter(|record| record.version > 0)
                .ok_or(CoreError::AggregateNotFound)?;
            let table = read.open_table(REFERRERS).map_err(storage)?;
            read_referrers(&table, tenant, aggregate_type, aggregate_id)?
        };
        let blocking: Vec<Referrer> = expected.iter().filter(|r| !nullify(r)).cloned().collect();
        if !blocking.is_empty() {
            return Err(reference::archive_blocked(
                tenant,
                aggregate_type,
                aggregate_id,
                &blocking,
            )
            .into());
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
        let _guards = self.lock_all(
            tenant,
            std::iter::once((aggregate_type, aggregate_id))
                .chain(by_source.keys().map(|(t, i)| (t.as_str(), i.as_str()))),
        );
        let read = self.read()?;
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
            let event_id = self.next_id();
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
        // itself.
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
            self.next_id()
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
        let tenant_owned = tenant.to_owned();
        let archived_record = archived.clone();
        let result = self.commit(
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
                    update.apply(tables, tenant, t, i)?;
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
            Ok(()) => Ok(Some(archived.aggregate())),
            Err(_) if changed.load(Ordering::Acquire) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.committer.close();
    }
}

/// The jobs of one write or state change, one per route (ids are assigned in the commit).
fn plugin_jobs(
    tenant: &str,
    publish: &[JobRoute],
    action: JobAction,
    event_id: u64,
    event: Option<&Event>,
    aggregate: &Aggregate,
) -> Vec<PluginJob> {
    if publish.is_empty() {
        return Vec::new();
    }
    let now_ms = now_nanos() / 1_000_000;
    let aggregate_json = aggregate.to_json(&[]);
    publish
        .iter()
        .map(|route| PluginJob {
            id: 0,
            plugin: route.plugin.clone(),
            tenant: tenant.to_owned(),
            mode: route.mode,
            priority: route.priority,
            status: JobStatus::Pending,
            attempts: 0,
            next_retry_at_ms: now_ms,
            deadline_ms: None,
            last_error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            event_id,
            action,
            event: event.cloned(),
            aggregate_type: aggregate.aggregate_type.clone(),
            aggregate_id: aggregate.aggregate_id.clone(),
            aggregate: aggregate_json.clone(),
            schema: route.schema.clone(),
        })
        .collect()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a write reads before it prepares: the first result of its idempotency key (if it has
/// one and it was used) and its aggregate's record.
fn read_for_write(
    idempotency: &impl ReadableTable<IdempotencyKey, Bytes>,
    aggregates: &impl ReadableTable<AggregateKey, Bytes>,
    (tenant, aggregate_type, aggregate_id): (&str, &str, &str),
    idempotency_key: Option<&str>,
) -> Result<(Option<IdempotencyRecord>, Option<AggregateRecord>)> {
    if let Some(key) = idempotency_key {
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

/// Histories at least this long verify in two stages on two threads (hashes and decoding on
/// one, Merkle roots on the other): about twice as fast when a second core is free, and the
/// thread costs nothing next to thousands of events.
const PARALLEL_VERIFY_FROM: u64 = 2048;

/// Leaves (with the root stored after each) handed from the decoding stage to the root stage.
const VERIFY_BATCH: usize = 512;

/// Decodes one stored event, checks it with `events` and hands its hash and stored root to
/// `root`.
fn check_stored_event(
    (tenant, aggregate_type, aggregate_id): (&str, &str, &str),
    bytes: &[u8],
    events: &mut merkle::EventChecker,
    root: impl FnOnce(merkle::Digest, &str) -> Result<()>,
) -> Result<()> {
    // Borrowed decoding: no allocation per string field.
    let event: StoredEvent<'_> = serde_json::from_slice(bytes).map_err(|err| {
        CoreError::IntegrityViolation(format!(
            "a stored event of {aggregate_type}:{aggregate_id} is unreadable: {err}"
        ))
    })?;
    let event_id = event.metadata.event_id.parse::<u64>().map_err(|_| {
        CoreError::IntegrityViolation(format!(
            "event {} of {aggregate_type}:{aggregate_id} has an invalid event id",
            event.version
        ))
    })?;
    let input = merkle::EventHashInput {
        tenant,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        version: event.version,
        event_type: &event.event_type,
        event_type_raw: event.event_type_raw.as_deref(),
        payload: &event.payload,
        extensions: event.extensions.as_ref(),
        note: event.metadata.note.as_deref(),
        event_id,
        created_at: &event.metadata.created_at,
        issued_by_group: event.metadata.issued_by.as_ref().map(|i| &*i.group),
        issued_by_user: event.metadata.issued_by.as_ref().map(|i| &*i.user),
    };
    let leaf = events.check(&input, &event.hash)?;
    root(leaf, &event.merkle_root)
}

/// A stored Merkle root as the root stage receives it: the hex text without an allocation
/// (a root of any other length cannot match and is passed on as it is).
enum StoredRoot {
    Hex([u8; 64]),
    Other(String),
}

impl StoredRoot {
    fn new(text: &str) -> Self {
        match <[u8; 64]>::try_from(text.as_bytes()) {
            Ok(hex) => StoredRoot::Hex(hex),
            Err(_) => StoredRoot::Other(text.to_owned()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Came from a `str`: always UTF-8.
            StoredRoot::Hex(hex) => std::str::from_utf8(hex).unwrap_or_default(),
            StoredRoot::Other(text) => text,
        }
    }
}

/// Verifies a long history with the root stage on a second thread. The first failure in
/// history order wins, as in one thread: the root stage only ever sees events before the
/// decoding stage's failure, so an error of its own is the earlier one.
fn verify_in_two_stages(
    subject: (&str, &str, &str),
    rows: redb::Range<'_, EventKey, Bytes>,
    mut events: merkle::EventChecker,
    mut roots: merkle::RootChecker,
) -> Result<merkle::RootChecker> {
    std::thread::scope(|scope| {
        let (batches, incoming) =
            std::sync::mpsc::sync_channel::<Vec<(merkle::Digest, StoredRoot)>>(4);
        let root_stage = scope.spawn(move || -> Result<merkle::RootChecker> {
            for batch in incoming {
                for (leaf, stored_root) in batch {
                    roots.push(leaf, stored_root.as_str())?;
                }
            }
            Ok(roots)
        });
        let mut batch = Vec::with_capacity(VERIFY_BATCH);
        let mut decoded = Ok(());
        for item in rows {
            let checked = item.map_err(storage).and_then(|(_, bytes)| {
                check_stored_event(subject, bytes.value(), &mut events, |leaf, root| {
                    batch.push((leaf, StoredRoot::new(root)));
                    Ok(())
                })
            });
            if let Err(err) = checked {
                decoded = Err(err);
                break;
            }
            if batch.len() == VERIFY_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(VERIFY_BATCH));
                if batches.send(full).is_err() {
                    // The root stage stopped at a failure of its own, which comes first.
                    break;
                }
            }
        }
        // The events before a decoding failure still get their roots checked: a bad root
        // among them is the first failure.
        let _ = batches.send(batch);
        drop(batches);
        let roots = root_stage
            .join()
            .map_err(|_| StoreError::engine("the verify thread panicked"))?;
        let roots = roots?;
        decoded.map(|()| roots)
    })
}

fn read_record(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<AggregateRecord>> {
    match table
        .get((tenant, aggregate_type, aggregate_id))
        .map_err(storage)?
    {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(json_error),
        None => Ok(None),
    }
}

/// Replaces an aggregate's record and its index entries (`old` is what the table holds now);
/// entries that did not change are left alone, so an append touches only the updated-at and
/// version layouts.
fn put_aggregate(
    tables: &mut Tables<'_>,
    tenant: &str,
    old: Option<&AggregateRecord>,
    new: &AggregateRecord,
    bytes: &[u8],
) -> Result<()> {
    let key = (
        tenant,
        new.aggregate_type.as_str(),
        new.aggregate_id.as_str(),
    );
    tables.aggregates()?.insert(key, bytes).map_err(storage)?;
    let flag_changed = old.is_some_and(|old| old.archived != new.archived);
    let old_entries = old.map(AggregateRecord::index_entries);
    for (n, entry) in new.index_entries().into_iter().enumerate() {
        let previous = old_entries.as_ref().map(|entries| entries[n]);
        if previous == Some(entry) && !flag_changed {
            continue;
        }
        if let Some((kind, value, a, b)) = previous {
            tables
                .index()?
                .remove((tenant, kind, value, a, b))
                .map_err(storage)?;
        }
        let (kind, value, a, b) = entry;
        let flag = u8::from(new.archived);
        tables
            .index()?
            .insert((tenant, kind, value, a, b), flag)
            .map_err(storage)?;
    }
    Ok(())
}

/// A `_ref_nullify` event of one referrer, planned by [`RedbStore::try_archive`].
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

fn add_usage(tables: &mut Tables<'_>, tenant: &str, events: u64, bytes: u64) -> Result<()> {
    let (e, b) = tables
        .usage()?
        .get(tenant)
        .map_err(storage)?
        .map_or((0, 0), |v| v.value());
    tables
        .usage()?
        .insert(tenant, (e + events, b + bytes))
        .map_err(storage)?;
    Ok(())
}

fn check_quota(tables: &mut Tables<'_>, tenant: &str, quota_bytes: Option<u64>) -> Result<()> {
    let Some(quota) = quota_bytes else {
        return Ok(());
    };
    let used = tables
        .usage()?
        .get(tenant)
        .map_err(storage)?
        .map_or(0, |v| v.value().1);
    if used >= quota {
        return Err(CoreError::TenantQuota {
            tenant: tenant.to_owned(),
            quota_mb: quota / (1024 * 1024),
        }
        .into());
    }
    Ok(())
}

fn put_snapshot(
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

fn event_view(event: &Event) -> EventView<'_> {
    EventView {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        event_type: &event.event_type,
        version: event.version,
        event_id: event.metadata.event_id,
        created_at: parse_unix_millis(&event.metadata.created_at)
            .map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        merkle_root: &event.merkle_root,
        hash: &event.hash,
        note: event.metadata.note.as_deref(),
        issued_by: event
            .metadata
            .issued_by
            .as_ref()
            .map(|i| (i.group.as_str(), i.user.as_str())),
        extensions: None,
        payload: &event.payload,
    }
}

impl EventStore for RedbStore {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn close(&self) {
        self.committer.close();
    }

    fn write(&self, tenant: &str, request: WriteRequest) -> Result<WriteOutcome> {
        let (t, i) = (
            request.aggregate_type.as_str(),
            request.aggregate_id.as_str(),
        );
        let _guard = self.lock(tenant, t, i);
        let idempotency_key = request.idempotency.as_ref().map(|idem| idem.key.as_str());
        let (replay, old) = self.committer.read_latest(|latest| match latest {
            Latest::Committed(read) => read_for_write(
                &read.open_table(IDEMPOTENCY).map_err(storage)?,
                &read.open_table(AGGREGATES).map_err(storage)?,
                (tenant, t, i),
                idempotency_key,
            ),
            Latest::Open(txn) => read_for_write(
                &txn.open_table(IDEMPOTENCY).map_err(storage)?,
                &txn.open_table(AGGREGATES).map_err(storage)?,
                (tenant, t, i),
                idempotency_key,
            ),
        })?;
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
        let event_id = self.next_id();
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
                if n > 0
                    && request.kind != WriteKind::Create
                    && event.version.is_multiple_of(n) =>
            {
                let comment = format!("auto snapshot v{}", event.version);
                Some(Snapshot::of(
                    &aggregate,
                    self.next_id(),
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
        self.commit(
            snapshot
                .as_ref()
                .map_or(event_id, |s| s.snapshot_id.max(event_id)),
            Box::new(move |tables| {
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
                let mut bytes = event_bytes.len() as u64;
                if let (Some(snapshot), Some(snapshot_bytes)) = (&snapshot_for_job, &snapshot_bytes)
                {
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
            }),
        )?;
        Ok(WriteOutcome {
            event,
            aggregate,
            snapshot,
            replayed: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn set_archived_publishing(
        &self,
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
                if let Some(aggregate) =
                    self.try_archive(tenant, aggregate_type, aggregate_id, note, nullify, publish)?
                {
                    return Ok(aggregate);
                }
            }
            return Err(StoreError::engine(format!(
                "the referrers of {aggregate_type}:{aggregate_id} kept changing during the archive"
            )));
        }
        let _guard = self.lock(tenant, aggregate_type, aggregate_id);
        let read = self.read()?;
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
            self.next_id()
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
        self.commit(
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

    fn referrers(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Referrer>> {
        let read = self.read()?;
        let table = read.open_table(REFERRERS).map_err(storage)?;
        read_referrers(&table, tenant, aggregate_type, aggregate_id)
    }

    fn get(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Aggregate>> {
        let read = self.read()?;
        let record = read_record(
            &read.open_table(AGGREGATES).map_err(storage)?,
            tenant,
            aggregate_type,
            aggregate_id,
        )?;
        Ok(record.filter(|r| r.version > 0).map(|r| r.aggregate()))
    }

    fn aggregate_types(&self, tenant: &str) -> Result<Vec<String>> {
        let read = self.read()?;
        let index = read.open_table(SORT_INDEX).map_err(storage)?;
        let mut types = Vec::new();
        // One seek per distinct type in the natural layout (0, type, id).
        let mut low = String::new();
        loop {
            let start = (tenant, IX_NATURAL, 0u64, low.as_str(), HIGH);
            let bound = if types.is_empty() {
                Bound::Included((tenant, IX_NATURAL, 0u64, "", ""))
            } else {
                Bound::Excluded(start)
            };
            let high = (tenant, IX_NATURAL, 0u64, HIGH, HIGH);
            let next = index
                .range((bound, Bound::Included(high)))
                .map_err(storage)?
                .next()
                .transpose()
                .map_err(storage)?;
            match next {
                Some((key, _)) => {
                    low = key.value().3.to_owned();
                    types.push(low.clone());
                }
                None => return Ok(types),
            }
        }
    }

    fn list(&self, tenant: &str, query: &ListQuery, visible: Visibility<'_>) -> Result<ListPage> {
        let order = query.plan.order.clone();
        let mut page = ListPage {
            items: Vec::new(),
            full: false,
            order: order.clone(),
        };
        if query.take == 0 {
            return Ok(page);
        }
        let read = self.read()?;
        let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
        let index = read.open_table(SORT_INDEX).map_err(storage)?;
        let known: BTreeSet<String> = query.known_types.iter().cloned().collect();
        let directives = order.directives();
        // An item is listed when it is in scope, after the cursor, visible and matches.
        let accept = |record: AggregateRecord| -> Option<(SortKey, Aggregate)> {
            if !query.scope.contains(record.archived) {
                return None;
            }
            let aggregate = visible(record.aggregate())?;
            let key = order.key_of(&aggregate.view());
            if !query.plan.is_after(&key) {
                return None;
            }
            if let Some(filter) = &query.filter {
                if !filter.matches_aggregate(&aggregate.view(), &known) {
                    return None;
                }
            }
            Some((key, aggregate))
        };
        match IndexPlan::for_directives(&directives) {
            Some(plan) => {
                let start = query.plan.after.as_ref();
                for (pass_flag, start_key) in plan.passes(start) {
                    let mut stop = false;
                    scan_index(
                        &index,
                        tenant,
                        plan.kind,
                        plan.dirs,
                        start_key,
                        &mut |_, a, b, flag| {
                            if pass_flag.is_some_and(|f| f != flag) || !query.scope.contains(flag) {
                                return Ok(true);
                            }
                            let (t, i) = if plan.swapped { (b, a) } else { (a, b) };
                            let Some(record) = read_record(&aggregates, tenant, t, i)? else {
                                return Ok(true);
                            };
                            if let Some((_, aggregate)) = accept(record) {
                                page.items.push(aggregate);
                            }
                            stop = page.items.len() >= query.take;
                            Ok(!stop)
                        },
                    )?;
                    if stop {
                        break;
                    }
                }
            }
            None => {
                // No index serves this order: one streaming pass keeping only the best `take`
                // items (memory O(take), time O(n)).
                let mut best: Vec<(SortKey, Aggregate)> = Vec::with_capacity(query.take + 1);
                let range = (tenant, "", "")..=(tenant, HIGH, HIGH);
                for item in aggregates.range(range).map_err(storage)? {
                    let (_, bytes) = item.map_err(storage)?;
                    let record: AggregateRecord =
                        serde_json::from_slice(bytes.value()).map_err(json_error)?;
                    if record.version == 0 {
                        continue;
                    }
                    if let Some((key, aggregate)) = accept(record) {
                        let position = best.partition_point(|(k, _)| {
                            order.compare(k, &key) == std::cmp::Ordering::Less
                        });
                        if position < query.take {
                            best.insert(position, (key, aggregate));
                            best.truncate(query.take);
                        }
                    }
                }
                page.items = best.into_iter().map(|(_, aggregate)| aggregate).collect();
            }
        }
        page.full = page.items.len() >= query.take;
        Ok(page)
    }

    fn events(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        after_version: u64,
        take: usize,
        filter: Option<&eventdbx_core::query::filter::Filter>,
    ) -> Result<EventPage> {
        let mut page = EventPage {
            events: Vec::new(),
            full: false,
        };
        if take == 0 {
            return Ok(page);
        }
        let read = self.read()?;
        let record = read_record(
            &read.open_table(AGGREGATES).map_err(storage)?,
            tenant,
            aggregate_type,
            aggregate_id,
        )?;
        if record.is_none_or(|r| r.archived) {
            return Ok(page);
        }
        let events = read.open_table(EVENTS).map_err(storage)?;
        let start = after_version.saturating_add(1);
        for item in events
            .range(
                (tenant, aggregate_type, aggregate_id, start)
                    ..=(tenant, aggregate_type, aggregate_id, u64::MAX),
            )
            .map_err(storage)?
        {
            let (_, bytes) = item.map_err(storage)?;
            let event: Event = serde_json::from_slice(bytes.value()).map_err(json_error)?;
            let extensions = event.extensions.clone().map(Value::Object);
            let mut view = event_view(&event);
            view.extensions = extensions.as_ref();
            if filter.is_none_or(|f| f.matches_event(&view)) {
                page.events.push(event);
                if page.events.len() >= take {
                    page.full = true;
                    break;
                }
            }
        }
        Ok(page)
    }

    fn outbox(
        &self,
        tenant: &str,
        after_event_id: u64,
        take: usize,
        visible: &dyn Fn(&str, &str) -> bool,
    ) -> Result<OutboxPage> {
        let mut page = OutboxPage {
            events: Vec::new(),
            last_examined: None,
            full: false,
        };
        if take == 0 {
            return Ok(page);
        }
        let read = self.read()?;
        let outbox = read.open_table(OUTBOX).map_err(storage)?;
        let events = read.open_table(EVENTS).map_err(storage)?;
        let start = after_event_id.saturating_add(1);
        for item in outbox
            .range((tenant, start)..=(tenant, u64::MAX))
            .map_err(storage)?
        {
            let (key, location) = item.map_err(storage)?;
            page.last_examined = Some(key.value().1);
            let (t, i, version) = location.value();
            if !visible(t, i) {
                continue;
            }
            let Some(bytes) = events.get((tenant, t, i, version)).map_err(storage)? else {
                continue;
            };
            page.events
                .push(serde_json::from_slice(bytes.value()).map_err(json_error)?);
            if page.events.len() >= take {
                page.full = true;
                break;
            }
        }
        Ok(page)
    }

    fn verify(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        let read = self.read()?;
        let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
        let record = read_record(&aggregates, tenant, aggregate_type, aggregate_id)?
            .filter(|r| r.version > 0)
            .ok_or(CoreError::AggregateNotFound)?;
        let table = read.open_table(EVENTS).map_err(storage)?;
        let range = (tenant, aggregate_type, aggregate_id, 0)
            ..=(tenant, aggregate_type, aggregate_id, u64::MAX);
        let rows = table.range(range).map_err(storage)?;
        let (mut events, mut roots) = merkle::Verifier::new(aggregate_type, aggregate_id).split();
        let subject = (tenant, aggregate_type, aggregate_id);
        if record.version < PARALLEL_VERIFY_FROM {
            for item in rows {
                let (_, bytes) = item.map_err(storage)?;
                check_stored_event(subject, bytes.value(), &mut events, |leaf, root| {
                    roots.push(leaf, root).map_err(StoreError::from)
                })?;
            }
        } else {
            roots = verify_in_two_stages(subject, rows, events, roots)?;
        }
        if roots.len() != record.version {
            return Err(CoreError::IntegrityViolation(format!(
                "{aggregate_type}:{aggregate_id} has {} stored events but version {}",
                roots.len(),
                record.version
            ))
            .into());
        }
        Ok(roots.finish(Some(&record.merkle_root))?)
    }

    fn create_snapshot(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Snapshot> {
        let aggregate = self
            .get(tenant, aggregate_type, aggregate_id)?
            .ok_or(CoreError::AggregateNotFound)?;
        let snapshot = Snapshot::of(
            &aggregate,
            self.next_id(),
            format_unix_nanos(now_nanos()),
            comment,
        );
        let bytes = serde_json::to_vec(&SnapshotRecord::from(&snapshot)).map_err(json_error)?;
        let tenant_owned = tenant.to_owned();
        let for_job = snapshot.clone();
        self.commit(
            snapshot.snapshot_id,
            Box::new(move |tables| {
                put_snapshot(tables, &tenant_owned, &for_job, &bytes)?;
                add_usage(tables, &tenant_owned, 0, bytes.len() as u64)
            }),
        )?;
        Ok(snapshot)
    }

    fn list_snapshots(
        &self,
        tenant: &str,
        aggregate_type: Option<&str>,
        aggregate_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<Snapshot>> {
        let read = self.read()?;
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

    fn get_snapshot(&self, tenant: &str, snapshot_id: u64) -> Result<Option<Snapshot>> {
        let read = self.read()?;
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

    fn usage(&self, tenant: &str) -> Result<Usage> {
        let read = self.read()?;
        let usage = read.open_table(USAGE).map_err(storage)?;
        let (events, bytes) = usage
            .get(tenant)
            .map_err(storage)?
            .map_or((0, 0), |v| v.value());
        Ok(Usage { events, bytes })
    }

    fn tenants(&self) -> Result<Vec<String>> {
        let read = self.read()?;
        let usage = read.open_table(USAGE).map_err(storage)?;
        let mut tenants = Vec::new();
        for row in usage.iter().map_err(storage)? {
            let (tenant, counts) = row.map_err(storage)?;
            if counts.value() != (0, 0) {
                tenants.push(tenant.value().to_owned());
            }
        }
        Ok(tenants)
    }

    fn recalc_usage(&self, tenant: &str) -> Result<Usage> {
        let tenant_owned = tenant.to_owned();
        let counted = Arc::new(Mutex::new(Usage::default()));
        let result = Arc::clone(&counted);
        // Counted inside the writer's transaction, so no write slips between count and record.
        self.commit(
            0,
            Box::new(move |tables| {
                let tenant = tenant_owned.as_str();
                let mut usage = Usage::default();
                let events = (tenant, "", "", 0)..=(tenant, HIGH, HIGH, u64::MAX);
                for item in tables.events()?.range(events).map_err(storage)? {
                    let (_, bytes) = item.map_err(storage)?;
                    usage.events += 1;
                    usage.bytes += bytes.value().len() as u64;
                }
                let snapshots = (tenant, 0)..=(tenant, u64::MAX);
                for item in tables.snapshots()?.range(snapshots).map_err(storage)? {
                    let (_, bytes) = item.map_err(storage)?;
                    usage.bytes += bytes.value().len() as u64;
                }
                let totals = (usage.events, usage.bytes);
                tables.usage()?.insert(tenant, totals).map_err(storage)?;
                *result.lock().unwrap_or_else(|p| p.into_inner()) = usage;
                Ok(())
            }),
        )?;
        let usage = *counted.lock().unwrap_or_else(|p| p.into_inner());
        Ok(usage)
    }
}

/// A position inside one index layout: (value, a, b).
type IndexStart = (u64, String, String);
/// One pass over an index: the archived flag it reads (if split) and where it starts.
type Pass = (Option<bool>, Option<IndexStart>);

/// How an order is read from [`SORT_INDEX`].
#[derive(Debug, Clone, Copy)]
struct IndexPlan {
    kind: u8,
    /// Directions of (value, a, b).
    dirs: [SortOrder; 3],
    /// `a` is the id and `b` the type.
    swapped: bool,
    /// The order starts with `archived`: read each archived value as its own pass.
    archived_lead: Option<SortOrder>,
    /// Whether the layout has a value component (timestamps, version).
    valued: bool,
}

impl IndexPlan {
    fn for_directives(
        directives: &[eventdbx_core::query::sort::SortDirective],
    ) -> Option<IndexPlan> {
        let (archived_lead, rest) = match directives.split_first() {
            Some((first, rest)) if first.field == SortField::Archived => (Some(first.order), rest),
            _ => (None, directives),
        };
        use SortField::{
            AggregateId as I, AggregateType as T, CreatedAt as C, UpdatedAt as U, Version as V,
        };
        let fields: Vec<SortField> = rest.iter().map(|d| d.field).collect();
        let dirs: Vec<SortOrder> = rest.iter().map(|d| d.order).collect();
        let (kind, swapped, valued) = match fields.as_slice() {
            [T, I] => (IX_NATURAL, false, false),
            [I, T] => (IX_ID, true, false),
            [C, T, I] => (IX_CREATED, false, true),
            [C, I, T] => (IX_CREATED_ID, true, true),
            [U, T, I] => (IX_UPDATED, false, true),
            [U, I, T] => (IX_UPDATED_ID, true, true),
            [V, T, I] => (IX_VERSION, false, true),
            _ => return None,
        };
        let dirs = if valued {
            [dirs[0], dirs[1], dirs[2]]
        } else {
            [dirs[0], dirs[0], dirs[1]]
        };
        Some(IndexPlan {
            kind,
            dirs,
            swapped,
            archived_lead,
            valued,
        })
    }

    /// The passes to read: (archived flag of the pass, exclusive start key within the layout).
    fn passes(&self, after: Option<&SortKey>) -> Vec<Pass> {
        let to_start = |values: &[SortValue]| -> Option<(u64, String, String)> {
            let (value, strings) = if self.valued {
                let value = match values.first()? {
                    SortValue::Timestamp(None) => 0,
                    SortValue::Timestamp(Some(ms)) => u64::try_from(*ms).ok()? + 1,
                    SortValue::Version(v) => *v,
                    _ => return None,
                };
                (value, values.get(1..)?)
            } else {
                (0, values)
            };
            match strings {
                [SortValue::Str(a), SortValue::Str(b), ..] => Some((value, a.clone(), b.clone())),
                _ => None,
            }
        };
        match self.archived_lead {
            None => vec![(None, after.and_then(|key| to_start(&key.0)))],
            Some(order) => {
                let flags = match order {
                    SortOrder::Asc => [false, true],
                    SortOrder::Desc => [true, false],
                };
                let cursor = after.and_then(|key| match key.0.split_first() {
                    Some((SortValue::Bool(flag), rest)) => Some((*flag, to_start(rest))),
                    _ => None,
                });
                let mut passes = Vec::new();
                let mut reached = cursor.is_none();
                for flag in flags {
                    match &cursor {
                        Some((cursor_flag, start)) if !reached && *cursor_flag == flag => {
                            reached = true;
                            passes.push((Some(flag), start.clone()));
                        }
                        _ if reached => passes.push((Some(flag), None)),
                        _ => {}
                    }
                }
                passes
            }
        }
    }
}

type IndexKey = (&'static str, u8, u64, &'static str, &'static str);
type IndexTable = ReadOnlyTable<IndexKey, u8>;
type IndexItem<'a> = std::result::Result<
    (redb::AccessGuard<'a, IndexKey>, redb::AccessGuard<'a, u8>),
    redb::StorageError,
>;

/// Feeds index entries to `visit`; `Ok(false)` when `visit` asked to stop.
fn visit_entries<'a>(
    items: impl Iterator<Item = IndexItem<'a>>,
    visit: &mut Visit<'_>,
) -> Result<bool> {
    for item in items {
        let (key, flag) = item.map_err(storage)?;
        let (_, _, v, a, b) = key.value();
        if !visit(v, a, b, flag.value() != 0)? {
            return Ok(false);
        }
    }
    Ok(true)
}
type Visit<'v> = dyn FnMut(u64, &str, &str, bool) -> Result<bool> + 'v;

/// Visits index entries of `kind` in the order given by `dirs`, strictly after `start`, until
/// `visit` returns `false`. Mixed directions are read by seeking group by group, so no group is
/// ever loaded whole.
fn scan_index(
    table: &IndexTable,
    tenant: &str,
    kind: u8,
    dirs: [SortOrder; 3],
    start: Option<(u64, String, String)>,
    visit: &mut Visit<'_>,
) -> Result<()> {
    if dirs[0] == dirs[1] && dirs[1] == dirs[2] {
        let low = (tenant, kind, 0u64, "", "");
        let high = (tenant, kind, u64::MAX, HIGH, HIGH);
        let range = match (dirs[0], &start) {
            (_, None) => table.range(low..=high),
            (SortOrder::Asc, Some((v, a, b))) => table.range((
                Bound::Excluded((tenant, kind, *v, a.as_str(), b.as_str())),
                Bound::Included(high),
            )),
            (SortOrder::Desc, Some((v, a, b))) => table.range((
                Bound::Included(low),
                Bound::Excluded((tenant, kind, *v, a.as_str(), b.as_str())),
            )),
        }
        .map_err(storage)?;
        match dirs[0] {
            SortOrder::Asc => visit_entries(range, visit)?,
            SortOrder::Desc => visit_entries(range.rev(), visit)?,
        };
        return Ok(());
    }
    // Nested: distinct values in dirs[0]; within each, distinct `a` in dirs[1]; within each
    // (value, a), `b` in dirs[2].
    let first_key = |low: (u64, &str, &str),
                     high: (u64, &str, &str),
                     order: SortOrder|
     -> Result<Option<(u64, String)>> {
        let range = table
            .range((tenant, kind, low.0, low.1, low.2)..=(tenant, kind, high.0, high.1, high.2))
            .map_err(storage)?;
        let item = match order {
            SortOrder::Asc => range.into_iter().next(),
            SortOrder::Desc => range.into_iter().next_back(),
        };
        match item {
            Some(item) => {
                let (key, _) = item.map_err(storage)?;
                let (_, _, v, a, _) = key.value();
                Ok(Some((v, a.to_owned())))
            }
            None => Ok(None),
        }
    };
    // The first value group at or after the start (inclusive: the start group still has items
    // after the start key).
    let mut value = match (&start, dirs[0]) {
        (Some((v, _, _)), _) => Some(*v),
        (None, order) => first_key((0, "", ""), (u64::MAX, HIGH, HIGH), order)?.map(|(v, _)| v),
    };
    let mut first_group = start.is_some();
    while let Some(v) = value {
        // Within value v: the first `a`.
        let mut a_current: Option<String> = match (&start, first_group) {
            (Some((_, a, _)), true) => Some(a.clone()),
            _ => first_key((v, "", ""), (v, HIGH, HIGH), dirs[1])?.map(|(_, a)| a),
        };
        let mut first_a = first_group;
        while let Some(a) = a_current.take() {
            let b_start = match (&start, first_a) {
                (Some((_, _, b)), true) => Some(b.clone()),
                _ => None,
            };
            let low = (tenant, kind, v, a.as_str(), "");
            let high = (tenant, kind, v, a.as_str(), HIGH);
            let range = match (&b_start, dirs[2]) {
                (Some(b), SortOrder::Asc) => table.range((
                    Bound::Excluded((tenant, kind, v, a.as_str(), b.as_str())),
                    Bound::Included(high),
                )),
                (Some(b), SortOrder::Desc) => table.range((
                    Bound::Included(low),
                    Bound::Excluded((tenant, kind, v, a.as_str(), b.as_str())),
                )),
                (None, _) => table.range(low..=high),
            }
            .map_err(storage)?;
            let finished = match dirs[2] {
                SortOrder::Asc => visit_entries(range, visit)?,
                SortOrder::Desc => visit_entries(range.rev(), visit)?,
            };
            if !finished {
                return Ok(());
            }
            first_a = false;
            // The next distinct `a` within v.
            a_current = match dirs[1] {
                SortOrder::Asc => {
                    first_key((v, a.as_str(), HIGH), (v, HIGH, HIGH), SortOrder::Asc)?
                        .filter(|(_, next)| *next != a)
                        .map(|(_, next)| next)
                }
                SortOrder::Desc => first_key((v, "", ""), (v, a.as_str(), ""), SortOrder::Desc)?
                    .filter(|(_, next)| *next != a)
                    .map(|(_, next)| next),
            };
        }
        first_group = false;
        // The next distinct value.
        value = match dirs[0] {
            SortOrder::Asc => match v.checked_add(1) {
                Some(next) => first_key((next, "", ""), (u64::MAX, HIGH, HIGH), SortOrder::Asc)?
                    .map(|(v, _)| v),
                None => None,
            },
            SortOrder::Desc => match v.checked_sub(1) {
                Some(prev) => {
                    first_key((0, "", ""), (prev, HIGH, HIGH), SortOrder::Desc)?.map(|(v, _)| v)
                }
                None => None,
            },
        };
    }
    Ok(())
}
