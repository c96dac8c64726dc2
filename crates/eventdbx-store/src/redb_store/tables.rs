//! The engine's tables: the key layout of `docs/storage.md` ("Tables and keys") and the writes
//! that keep an aggregate's sort index entries equal to its record (the stored forms themselves
//! are [`crate::record`]'s, shared with the other engines).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::jobs::{QueueKey, JOBS, JOB_DEAD, JOB_DONE, JOB_QUEUE};
use super::mutations::{Logged, MutationLog, TableTag};
pub(super) use crate::record::{AggregateRecord, IdempotencyRecord, SnapshotRecord};
use crate::{Result, StoreError};

/// (tenant, type, id) → aggregate record (JSON).
pub(super) const AGGREGATES: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("aggregates");

/// (tenant, type, id, version) → event (JSON, the event shape of `docs/protocol.md`).
pub(super) const EVENTS: TableDefinition<(&str, &str, &str, u64), &[u8]> =
    TableDefinition::new("events");

/// (tenant, event id) → (type, id, version): the global event order the outbox reads.
pub(super) const OUTBOX: TableDefinition<(&str, u64), (&str, &str, u64)> =
    TableDefinition::new("outbox");

/// (tenant, position) → (type, id, version): every event in the tenant's commit order
/// (`positions`).
pub(super) const POSITIONS: TableDefinition<(&str, u64), (&str, &str, u64)> =
    TableDefinition::new("positions");

/// (tenant, type, id, version) → position: the reverse of [`POSITIONS`], so the events a page
/// returns carry their positions.
pub(super) const EVENT_POSITIONS: TableDefinition<(&str, &str, &str, u64), u64> =
    TableDefinition::new("event_positions");

/// (tenant, index kind, value, a, b) → archived flag: one entry per aggregate per sort layout.
pub(super) const SORT_INDEX: TableDefinition<(&str, u8, u64, &str, &str), u8> =
    TableDefinition::new("sort_index");

/// (tenant, snapshot id) → snapshot record (JSON).
pub(super) const SNAPSHOTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("snapshots");

/// (tenant, type, id, snapshot id) → (): snapshots of one aggregate, in creation order.
pub(super) const SNAPSHOTS_BY_AGGREGATE: TableDefinition<(&str, &str, &str, u64), ()> =
    TableDefinition::new("snapshots_by_aggregate");

/// (tenant, type, id, key) → idempotency record (JSON).
pub(super) const IDEMPOTENCY: TableDefinition<(&str, &str, &str, &str), &[u8]> =
    TableDefinition::new("idempotency");

/// (tenant, target type, target id, source type, source id, path) → (): the reverse reference
/// index, always equal to the references in each source's current state.
pub(super) const REFERRERS: TableDefinition<(&str, &str, &str, &str, &str, &str), ()> =
    TableDefinition::new("referrers");

/// (tenant, source type, source id, path) → (target type, target id): the forward side of
/// [`REFERRERS`], so a write can find and replace its aggregate's previous entries.
pub(super) const REFERENCES: TableDefinition<(&str, &str, &str, &str), (&str, &str)> =
    TableDefinition::new("references");

/// tenant → (events, bytes).
pub(super) const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");

/// name → value: [`LAST_ID`], at or above every Snowflake id ever issued (see
/// `commit::reserve_ids`); [`WAL_CHECKPOINT`].
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The [`META`] key of the id reservation.
pub(super) const LAST_ID: &str = "last_id";

/// The [`META`] key of the last write-ahead log record the file holds (`wal`): written by each
/// checkpoint, and by the replay at open in the same commit as the records it replays.
pub(super) const WAL_CHECKPOINT: &str = "wal_checkpoint";

/// The tables of one batch transaction, each opened on first use and then shared by the jobs
/// of the batch (opening a table and writing back its root are a large part of a small commit).
pub(crate) struct Tables<'t> {
    txn: &'t WriteTransaction,
    /// Every insert and remove made through these tables, in order, when the batch goes to the
    /// write-ahead log (`mutations`).
    log: Option<MutationLog>,
    aggregates: Option<redb::Table<'t, AggregateKey, Bytes>>,
    events: Option<redb::Table<'t, EventKey, Bytes>>,
    outbox: Option<redb::Table<'t, OutboxKey, OutboxValue>>,
    positions: Option<redb::Table<'t, OutboxKey, OutboxValue>>,
    event_positions: Option<redb::Table<'t, EventKey, u64>>,
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

pub(super) type Bytes = &'static [u8];

pub(super) type AggregateKey = (&'static str, &'static str, &'static str);

/// (tenant, type, id, number): events by version, snapshots of an aggregate by id.
pub(super) type EventKey = (&'static str, &'static str, &'static str, u64);

pub(super) type OutboxKey = (&'static str, u64);

pub(super) type OutboxValue = (&'static str, &'static str, u64);

pub(super) type SnapshotKey = (&'static str, u64);

pub(super) type IdempotencyKey = (&'static str, &'static str, &'static str, &'static str);

pub(super) type ReferrerKey = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

pub(super) type IndexKey = (&'static str, u8, u64, &'static str, &'static str);

macro_rules! lazy_table {
    ($name:ident, $tag:expr, $definition:expr, $key:ty, $value:ty) => {
        pub(crate) fn $name(&mut self) -> Result<Logged<'_, 't, $key, $value>> {
            if self.$name.is_none() {
                self.$name = Some(self.txn.open_table($definition).map_err(storage)?);
            }
            let table = self
                .$name
                .as_mut()
                .ok_or_else(|| StoreError::engine("table vanished"))?;
            Ok(Logged::new(table, self.log.as_mut(), $tag))
        }
    };
}

impl<'t> Tables<'t> {
    /// The tables of `txn`, not logged (relaxed mode, replay, the commits that bypass the log).
    pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
        Self::with_log(txn, None)
    }

    /// The tables of `txn`, recording every insert and remove for the write-ahead log.
    pub(crate) fn logged(txn: &'t WriteTransaction) -> Self {
        Self::with_log(txn, Some(MutationLog::default()))
    }

    /// How many bytes of mutations were recorded so far (0 when not logged).
    pub(crate) fn recorded(&self) -> usize {
        self.log.as_ref().map_or(0, MutationLog::len)
    }

    /// What was recorded (empty when not logged).
    pub(crate) fn take_log(&mut self) -> MutationLog {
        self.log.take().unwrap_or_default()
    }

    fn with_log(txn: &'t WriteTransaction, log: Option<MutationLog>) -> Self {
        Tables {
            txn,
            log,
            aggregates: None,
            events: None,
            outbox: None,
            positions: None,
            event_positions: None,
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

    lazy_table!(
        aggregates,
        TableTag::Aggregates,
        AGGREGATES,
        AggregateKey,
        Bytes
    );
    lazy_table!(events, TableTag::Events, EVENTS, EventKey, Bytes);
    lazy_table!(outbox, TableTag::Outbox, OUTBOX, OutboxKey, OutboxValue);
    lazy_table!(
        positions,
        TableTag::Positions,
        POSITIONS,
        OutboxKey,
        OutboxValue
    );
    lazy_table!(
        event_positions,
        TableTag::EventPositions,
        EVENT_POSITIONS,
        EventKey,
        u64
    );
    lazy_table!(index, TableTag::Index, SORT_INDEX, IndexKey, u8);
    lazy_table!(
        snapshots,
        TableTag::Snapshots,
        SNAPSHOTS,
        SnapshotKey,
        Bytes
    );
    lazy_table!(
        snapshots_by_aggregate,
        TableTag::SnapshotsByAggregate,
        SNAPSHOTS_BY_AGGREGATE,
        EventKey,
        ()
    );
    lazy_table!(
        idempotency,
        TableTag::Idempotency,
        IDEMPOTENCY,
        IdempotencyKey,
        Bytes
    );
    lazy_table!(usage, TableTag::Usage, USAGE, &'static str, (u64, u64));
    lazy_table!(referrers, TableTag::Referrers, REFERRERS, ReferrerKey, ());
    lazy_table!(
        references,
        TableTag::References,
        REFERENCES,
        IdempotencyKey,
        (&'static str, &'static str)
    );
    lazy_table!(meta, TableTag::Meta, META, &'static str, u64);
    lazy_table!(jobs, TableTag::Jobs, JOBS, u64, Bytes);
    lazy_table!(job_queue, TableTag::JobQueue, JOB_QUEUE, QueueKey, u8);
    lazy_table!(job_done, TableTag::JobDone, JOB_DONE, (u64, u64), ());
    lazy_table!(job_dead, TableTag::JobDead, JOB_DEAD, u64, ());
}

/// Sort layouts kept in [`SORT_INDEX`]: `(value, a, b)` per aggregate.
pub(super) const IX_NATURAL: u8 = 0; // (0, type, id)
pub(super) const IX_ID: u8 = 1; // (0, id, type)
pub(super) const IX_CREATED: u8 = 2; // (created, type, id)
pub(super) const IX_CREATED_ID: u8 = 3; // (created, id, type)
pub(super) const IX_UPDATED: u8 = 4; // (updated, type, id)
pub(super) const IX_UPDATED_ID: u8 = 5; // (updated, id, type)
pub(super) const IX_VERSION: u8 = 6; // (version, type, id)

/// Above every character a valid type or id may contain (they are ASCII names).
pub(super) const HIGH: &str = "\u{7f}";

/// Above every string: field paths are not restricted to ASCII.
pub(super) const TOP: &str = "\u{10ffff}";

/// An engine failure with redb's error as its source (a full disk and redb's latched I/O error
/// explained, see `health`).
pub(super) fn storage(err: impl Into<redb::Error>) -> StoreError {
    super::health::engine_error(err)
}

/// A stored record that no longer decodes.
pub(super) fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::storage("stored record is not valid JSON", err)
}

impl AggregateRecord {
    /// The entries this aggregate has in [`SORT_INDEX`].
    pub(super) fn index_entries(&self) -> [(u8, u64, &str, &str); 7] {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        let created = self.created_sort_value();
        let updated = self.updated_sort_value();
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

/// An aggregate's stored record, if there is one.
pub(super) fn read_record(
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
pub(super) fn put_aggregate(
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
