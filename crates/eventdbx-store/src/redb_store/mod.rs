//! The embedded engine on [redb](https://docs.rs/redb): one file, crash-safe copy-on-write
//! B-trees, MVCC readers that never block the writer. Key layout and the reasons for redb are in
//! `docs/storage.md`.
//!
//! # Concurrency
//! A write runs in two halves. The *prepare* half runs on the caller's thread under a lock
//! striped by (tenant, type, id): it reads the aggregate from a read snapshot, applies the
//! domain rules, patches, hashes and serialises. Writes to different aggregates prepare in
//! parallel; writes to one aggregate are serialised, so the read snapshot is always current for
//! it. The *commit* half is a closure of inserts queued for group commit (`commit`): one
//! writer (or the round thread) at a time leads, running every queued job in a single redb
//! transaction committed once, so concurrent writers share one fsync (durable mode: the
//! write-ahead log's, and the redb commit is not synced). Callers are answered only after that
//! commit, and hold their aggregate's stripe until then (`stripes`).
//! In relaxed mode the commit half runs in one open transaction shared by consecutive writes,
//! committed before any read starts (see `commit`); a write's own reads then go through that
//! transaction.
//!
//! # Layout
//! This file holds the engine (open, lock stripes, ids, reads) and the [`EventStore`] impl,
//! which hands each method to the module of its concern: `tables` (key layout and stored
//! records), `write`, `archive` (with the reference cascade), `list` (index planning and
//! keyset paging), `events` (event and outbox pages), `verify`, `snapshots`, `usage`,
//! `commit` (group commit), `wal` (durable mode's write-ahead log: records, checkpoints, replay)
//! with `mutations` (a batch's inserts and removes as data), `health` (the database handle,
//! reopened after an I/O error) and
//! `jobs` (the plugin outbox and its [`crate::JobQueue`] impl), `positions` (event positions and
//! commit listeners, for subscriptions).
//! `stripes` are the aggregate locks.
//! `open` opens the file with redb's integrity check, `guard` fences every engine call against
//! a damaged file, and `check` is `dbx store check` and `dbx store recover`.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::Event;
use eventdbx_core::query::filter::Filter;
use eventdbx_core::snowflake::{Next, SnowflakeGenerator};
use redb::{Database, ReadTransaction, ReadableTable};

mod archive;
mod check;
mod commit;
mod events;
mod guard;
mod health;
mod jobs;
mod list;
mod mutations;
mod open;
mod positions;
mod replay;
mod snapshots;
mod stripes;
mod tables;
mod usage;
mod verify;
mod wal;
mod write;

pub use check::{check, recover, AggregateDamage, CheckReport, RecoverReport};
use commit::{Answer, Apply, Committer};
use guard::EngineGuard;
use health::{Handle, OpenDatabase};
use open::{open_database, Fallback};
use stripes::{StripeGuard, Stripes};
use tables::{read_record, storage, Tables, AGGREGATES, LAST_ID, WAL_CHECKPOINT};

use crate::{
    CascadeRule, CommitListener, Durability, EmbeddedOptions, EventPage, EventSelector, EventStore,
    JobRoute, ListPage, ListQuery, OutboxPage, PositionPage, Referrer, Result, StorageHealth,
    StoreError, Usage, Visibility, WriteDone, WriteOutcome, WriteRequest,
};

const LOCK_STRIPES: usize = 1024;

/// The embedded store. Cheap to share behind an `Arc`; dropping it makes relaxed commits
/// durable.
pub struct RedbStore {
    durability: Durability,
    committer: Committer,
    locks: Stripes,
    ids: Mutex<SnowflakeGenerator>,
    guard: Arc<EngineGuard>,
    listeners: Arc<positions::Listeners>,
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

    /// Opens the database; `worker_id` is the Snowflake worker id (0–1023). A damaged file
    /// (a page failing its checksum, an engine panic on it) is refused with
    /// [`crate::StoreError::Damaged`], which names the file and the recovery commands.
    pub fn open_with_worker(
        path: impl AsRef<Path>,
        durability: Durability,
        worker_id: u16,
    ) -> Result<Self> {
        Self::open_with_options(path, durability, worker_id, EmbeddedOptions::default())
    }

    /// [`RedbStore::open_with_worker`] with the engine's tuning (the write-ahead log's
    /// checkpoint threshold).
    pub fn open_with_options(
        path: impl AsRef<Path>,
        durability: Durability,
        worker_id: u16,
        options: EmbeddedOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        let guard = EngineGuard::new(path.display().to_string());
        let opened = open_database(&guard, path, Fallback::Refuse, None)?;
        let logging = Logging::Live {
            checkpoint_bytes: options.checkpoint_bytes.max(1),
            io: if options.wal_direct_io {
                wal::Io::Direct
            } else {
                wal::Io::Buffered
            },
        };
        Self::from_database(
            path,
            opened.db,
            guard,
            durability,
            worker_id,
            reopen_file,
            logging,
        )
    }

    /// The store over an opened database: creates any missing table, replays the write-ahead
    /// log and reads the id reservation, inside the guard (these are the first reads of the
    /// file's tables). `reopen` is what the handle runs after an I/O error (`health`).
    fn from_database(
        path: &Path,
        db: Database,
        guard: EngineGuard,
        durability: Durability,
        worker_id: u16,
        reopen: OpenDatabase,
        logging: Logging,
    ) -> Result<Self> {
        let log_path = wal::path_for(path);
        let prepared = guard.run(|| prepare_tables(&db, &log_path, redb::Durability::Immediate))?;
        let (log, checkpoint_bytes) = match logging {
            Logging::Live {
                checkpoint_bytes,
                io,
            } => {
                // Everything the log held is in the file now: it starts empty (relaxed mode
                // does not use it, and only empties one a durable store left).
                let log = if durability == Durability::Fsync || log_path.exists() {
                    Some(wal::Log::create_empty(
                        &log_path,
                        prepared.last_lsn + 1,
                        io,
                    )?)
                } else {
                    None
                };
                (
                    log.filter(|_| durability == Durability::Fsync),
                    checkpoint_bytes,
                )
            }
            Logging::ReadOnly => (None, u64::MAX),
        };
        let ids = SnowflakeGenerator::new(worker_id, prepared.last_id)?;
        let handle = Handle::new(path.to_path_buf(), reopen, db);
        let guard = Arc::new(guard);
        let committer = Committer::new(
            handle,
            durability,
            prepared.last_id,
            log,
            checkpoint_bytes,
            Arc::clone(&guard),
        )?;
        Ok(RedbStore {
            durability,
            committer,
            locks: Stripes::new(LOCK_STRIPES),
            ids: Mutex::new(ids),
            guard,
            listeners: Arc::default(),
        })
    }

    fn stripe(tenant: &str, aggregate_type: &str, aggregate_id: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        (tenant, aggregate_type, aggregate_id).hash(&mut hasher);
        (hasher.finish() % LOCK_STRIPES as u64) as usize
    }

    fn lock(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> StripeGuard {
        self.locks
            .lock(Self::stripe(tenant, aggregate_type, aggregate_id))
    }

    /// Locks the stripes of several aggregates, in stripe order so two multi-aggregate writers
    /// can never deadlock (single-aggregate writers hold one stripe and wait for none).
    fn lock_all<'s>(
        &self,
        tenant: &str,
        aggregates: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Vec<StripeGuard> {
        let stripes: BTreeSet<usize> = aggregates
            .map(|(t, i)| Self::stripe(tenant, t, i))
            .collect();
        stripes
            .into_iter()
            .map(|stripe| self.locks.lock(stripe))
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
    /// Fenced (`guard`) here as well as in the [`EventStore`] methods, so that the plugin
    /// outbox's commits (`jobs`) are too.
    fn commit(&self, max_id: u64, apply: Apply) -> Result<()> {
        self.guard.run(|| self.committer.commit(max_id, apply))
    }

    /// Tells the commit listeners that `tenant`'s head is at least `head`, once the commit that
    /// assigned it is visible to readers (0: the commit assigned no position).
    fn committed(&self, tenant: &str, head: u64) {
        self.listeners.committed(tenant, head);
    }

    /// Makes every write acknowledged so far durable now, without waiting for the relaxed
    /// flusher (a no-op in fsync mode, where acknowledged writes already are). What a crash
    /// test uses to know which acknowledgements a kill must not lose.
    pub fn flush(&self) -> Result<()> {
        self.guard.run(|| self.committer.flush())
    }

    /// A read transaction that sees every acknowledged write (relaxed mode commits its open
    /// transaction first).
    pub(crate) fn read(&self) -> Result<ReadTransaction> {
        self.committer.reopen_for_read()?;
        self.committer.settle()?;
        self.committer.begin_read()
    }
}

/// Whether a store writes the write-ahead log.
enum Logging {
    /// A serving store: the log is replayed, emptied, and appended to in durable mode.
    Live { checkpoint_bytes: u64, io: wal::Io },
    /// `dbx store check` and `recover`: the log is replayed into the view and left as it is.
    ReadOnly,
}

/// The reopen after an I/O error (`health`): the same open as at startup, the integrity check
/// and the roll-back policy included, and the log's records replayed without a sync (the disk
/// may still be full; the next checkpoint makes them durable again).
fn reopen_file(path: &Path) -> Result<(Database, u64)> {
    let guard = EngineGuard::new(path.display().to_string());
    let opened = open_database(&guard, path, Fallback::Refuse, None)?;
    let log_path = wal::path_for(path);
    let prepared = guard.run(|| prepare_tables(&opened.db, &log_path, redb::Durability::None))?;
    Ok((opened.db, prepared.last_id))
}

/// A view that is never reopened (`dbx store check` and `recover` read a copy-on-write
/// overlay, which an I/O error of the file cannot have latched).
pub(crate) fn never_reopen(path: &Path) -> Result<(Database, u64)> {
    Err(StoreError::engine(format!(
        "the read-only view of {} is not reopened after an I/O error",
        path.display()
    )))
}

/// What [`prepare_tables`] read.
struct Prepared {
    /// The id reservation.
    last_id: u64,
    /// The last log record the file holds now.
    last_lsn: u64,
}

/// Creates every table, so readers never meet a missing one, replays the records of the
/// write-ahead log at `log` that the file does not hold yet (recording the last one as its
/// checkpoint in the same commit) and reads the id reservation.
fn prepare_tables(db: &Database, log: &Path, durability: redb::Durability) -> Result<Prepared> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(durability)
        .map_err(|err| StoreError::storage("", err))?;
    let prepared = {
        let mut tables = Tables::new(&txn);
        // Create every table now, so readers never meet a missing one.
        tables.aggregates()?;
        tables.events()?;
        tables.outbox()?;
        tables.positions()?;
        tables.event_positions()?;
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
        let checkpoint = read_meta(&mut tables, WAL_CHECKPOINT)?;
        let scan = wal::scan(log, checkpoint)?;
        if let Some(torn) = &scan.torn {
            tracing::warn!(log = %log.display(), "{torn}");
        }
        for (_, body) in &scan.records {
            mutations::replay(&mut tables, body)?;
        }
        if scan.last_lsn > checkpoint {
            tables
                .meta()?
                .insert(WAL_CHECKPOINT, scan.last_lsn)
                .map_err(storage)?;
        }
        Prepared {
            last_id: read_meta(&mut tables, LAST_ID)?,
            last_lsn: scan.last_lsn,
        }
    };
    positions::assign_missing(&txn)?;
    txn.commit().map_err(storage)?;
    Ok(prepared)
}

/// A [`tables::META`] value (0 when absent).
fn read_meta(tables: &mut Tables<'_>, key: &str) -> Result<u64> {
    Ok(tables
        .meta()?
        .get(key)
        .map_err(storage)?
        .map_or(0, |v| v.value()))
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.committer.close();
    }
}

/// Wall-clock time for ids and timestamps (0 before the epoch).
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl EventStore for RedbStore {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn commit_running(&self) -> bool {
        self.committer.commit_running()
    }

    fn write_waits(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> bool {
        self.locks
            .is_held(Self::stripe(tenant, aggregate_type, aggregate_id))
    }

    fn health(&self) -> StorageHealth {
        // A damaged file is not a passing fault: it stays degraded until `dbx store recover`.
        if let Some(damage) = self.guard.damage() {
            return StorageHealth::Degraded {
                cause: self.guard.damaged(damage).to_string(),
            };
        }
        // The probe writes, so it is fenced like any write; its failure shows in the health.
        let _ = self.guard.run(|| {
            self.committer.probe();
            Ok(())
        });
        self.committer.health()
    }

    fn close(&self) {
        self.committer.close();
    }

    fn write(&self, tenant: &str, request: WriteRequest) -> Result<WriteOutcome> {
        self.guard.run(|| write::write(self, tenant, request))
    }

    /// Durable mode: prepares the write on this thread, then queues it; when no round is
    /// running this thread leads one at once (`done` is called before this returns), and
    /// otherwise this returns at once and the running round's leader calls `done` after the
    /// round's log record is synced (`commit`, "leader"). The aggregate's lock stripe is held
    /// until then, so the next write to it reads this one.
    fn write_then(&self, tenant: &str, request: WriteRequest, done: WriteDone) {
        if self.durability == Durability::Relaxed {
            return done(self.write(tenant, request));
        }
        let pending = match self.guard.run(|| write::prepare(self, tenant, request)) {
            Ok(write::Prepared::Queued(pending)) => pending,
            Ok(write::Prepared::Replayed(outcome)) => return done(Ok(outcome)),
            Err(err) => return done(Err(err)),
        };
        let write::Pending {
            max_id,
            apply,
            answer: answered,
        } = pending;
        let (listeners, guard) = (Arc::clone(&self.listeners), Arc::clone(&self.guard));
        let answer = Answer::new(move |result: Result<()>| {
            done(
                guard
                    .checked(result)
                    .map(|()| answered.committed(&listeners)),
            );
        });
        // A round that panics answers its writers with an error (`commit`, "leader") before
        // the guard marks the store damaged.
        let _ = self.guard.run(|| {
            self.committer.submit(max_id, apply, answer);
            Ok(())
        });
    }

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
        self.guard.run(|| {
            archive::set_archived(
                self,
                tenant,
                aggregate_type,
                aggregate_id,
                archived,
                note,
                nullify,
                publish,
            )
        })
    }

    fn referrers(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Referrer>> {
        self.guard
            .run(|| archive::referrers(self, tenant, aggregate_type, aggregate_id))
    }

    fn get(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Aggregate>> {
        self.guard.run(|| {
            let read = self.read()?;
            let record = read_record(
                &read.open_table(AGGREGATES).map_err(storage)?,
                tenant,
                aggregate_type,
                aggregate_id,
            )?;
            Ok(record.filter(|r| r.version > 0).map(|r| r.aggregate()))
        })
    }

    fn aggregate_types(&self, tenant: &str) -> Result<Vec<String>> {
        self.guard.run(|| list::aggregate_types(self, tenant))
    }

    fn list(&self, tenant: &str, query: &ListQuery, visible: Visibility<'_>) -> Result<ListPage> {
        self.guard.run(|| list::list(self, tenant, query, visible))
    }

    fn events(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        after_version: u64,
        take: usize,
        filter: Option<&Filter>,
    ) -> Result<EventPage> {
        self.guard.run(|| {
            events::events(
                self,
                tenant,
                aggregate_type,
                aggregate_id,
                after_version,
                take,
                filter,
            )
        })
    }

    fn outbox(
        &self,
        tenant: &str,
        after_event_id: u64,
        take: usize,
        visible: &dyn Fn(&str, &str) -> bool,
    ) -> Result<OutboxPage> {
        self.guard
            .run(|| events::outbox(self, tenant, after_event_id, take, visible))
    }

    fn verify(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        self.guard
            .run(|| verify::verify(self, tenant, aggregate_type, aggregate_id))
    }

    fn create_snapshot(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Snapshot> {
        self.guard
            .run(|| snapshots::create(self, tenant, aggregate_type, aggregate_id, comment))
    }

    fn list_snapshots(
        &self,
        tenant: &str,
        aggregate_type: Option<&str>,
        aggregate_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<Snapshot>> {
        self.guard
            .run(|| snapshots::list(self, tenant, aggregate_type, aggregate_id, version))
    }

    fn get_snapshot(&self, tenant: &str, snapshot_id: u64) -> Result<Option<Snapshot>> {
        self.guard.run(|| snapshots::get(self, tenant, snapshot_id))
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        self.guard.run(|| usage::usage(self, tenant))
    }

    fn recalc_usage(&self, tenant: &str) -> Result<Usage> {
        self.guard.run(|| usage::recount(self, tenant))
    }

    fn tenants(&self) -> Result<Vec<String>> {
        self.guard.run(|| usage::tenants(self))
    }

    fn events_after(
        &self,
        tenant: &str,
        after: u64,
        selector: &EventSelector,
        take: usize,
    ) -> Result<PositionPage> {
        self.guard
            .run(|| positions::events_after(self, tenant, after, selector, take))
    }

    fn event_positions(&self, tenant: &str, events: &[Event]) -> Result<Vec<Option<u64>>> {
        self.guard
            .run(|| positions::of_events(self, tenant, events))
    }

    fn head_position(&self, tenant: &str) -> Result<u64> {
        self.guard.run(|| positions::head(self, tenant))
    }

    fn listen_commits(&self, listener: CommitListener) -> Result<()> {
        self.listeners.add(listener);
        Ok(())
    }
}
