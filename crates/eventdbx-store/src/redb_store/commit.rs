//! Group commit: rounds led by a writer or the round thread (durable mode), and one open
//! transaction shared by consecutive writes (relaxed mode).
//!
//! **Durable.** A writer queues its inserts with the answer to call once they are durable. If no
//! commit is running it becomes the *leader*: it takes every queued job, runs them in one redb
//! transaction and commits once, answering each job. If more jobs queued up meanwhile, it hands
//! the lead to the round thread, which leads until the queue is empty (`leader`). A lone writer
//! therefore commits on its own thread with no hand-off at all, a writer that finds a round
//! running returns at once (its answer comes from the next round's leader), and concurrent
//! writers share one commit (one fsync) per round.
//!
//! The round's fsync is the write-ahead log's (`wal`): the batch runs in the *open* redb
//! transaction, its inserts and removes recorded (`mutations`), the record is appended to the
//! log and synced, and only then are the writers answered (`round`). The open transaction is
//! not committed with every round: a redb commit, even without a sync, costs more CPU than the
//! writes of a small round (copy-on-write of every touched B-tree path, checksums, the
//! allocator's bookkeeping), so rounds share one, as relaxed writes do (below), committed before
//! any read transaction starts, after [`MAX_OPEN_LOGGED_WRITES`] writes, and by checkpoints. A round is
//! therefore visible to readers once it is durable, never before: [`Committer::settle`] waits
//! for the round being synced before it commits, and a round whose append fails leaves the
//! transaction, which is rebuilt from the records of the rounds before it. After its answers, a
//! leader whose round left the log past the checkpoint threshold checkpoints (the open
//! transaction committed without a sync, then a durable commit of its own recording the last
//! record, made without the open transaction's lock so that readers need not wait for it), and
//! the log starts over.
//!
//! **Relaxed.** A commit costs redb far more than the inserts of one write (every touched
//! table's root and page checksums are written back), and relaxed mode does not make a write
//! durable when it is acknowledged anyway. So relaxed writes run their inserts in one *open*
//! write transaction and are answered at once; the transaction is committed
//! - before any read transaction starts ([`Committer::settle`], called by every read path), so an
//!   acknowledged write is visible to every later read;
//! - after [`MAX_OPEN_WRITES`] writes, to bound its memory;
//! - durably by the flusher thread within [`RELAXED_FLUSH_INTERVAL`] (redb keeps non-durable
//!   commits only until the next durable one), and when the store closes.
//!
//! A write's own reads (its aggregate's record, an idempotency key) go through the open
//! transaction ([`Committer::read_latest`]), which sees the writes before it. A crash loses what
//! it lost before: the writes since the last durable commit, at most one flush interval.
//!
//! A job that fails must not have changed anything, unless the engine itself failed
//! ([`StoreError::Storage`]): in durable mode a job that changed something before it failed
//! makes the leader rebuild the open transaction from the log records of its earlier rounds and
//! run the round again without that job; in relaxed mode the open transaction is discarded,
//! losing the writes acknowledged since the last commit as a crash would.
//!
//! Every transaction begins from the [`Handle`], and every commit's outcome is recorded there: an
//! I/O error (a full disk) makes the next writer reopen the database before it begins (see
//! `health`). Only the writer side reopens: the leader in durable mode, the holder of the
//! open-transaction lock in relaxed mode, so no write transaction is alive when it does.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{ReadTransaction, ReadableDatabase, WriteTransaction};

use super::guard::EngineGuard;
use super::health::{commit_error, is_io_failure, Handle};
use super::mutations;
use super::tables::{storage, Tables, LAST_ID};
use super::wal::Log;
use crate::{Durability, Result, StorageHealth, StoreError};

mod leader;
mod round;

pub(crate) use leader::Answer;
use leader::{Leadership, RoundThread};

/// How long a relaxed commit may stay non-durable.
pub(crate) const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Inserts of one write, run inside the batch transaction. A job that fails must fail before it
/// changes anything, or be safe to re-run: the leader aborts the transaction and runs the batch
/// again without the failing job.
pub(crate) type Apply = Box<dyn for<'t> Fn(&mut Tables<'t>) -> Result<()> + Send>;

/// Ids are reserved this far ahead (100 ms worth of Snowflake ids), so the reservation is
/// written about ten times a second rather than with every commit. After a restart the id
/// generator starts above the reservation: at worst it waits out the 100 ms.
const ID_RESERVATION: u64 = 100 << 22;

/// How many relaxed writes share one open transaction before it is committed.
pub(crate) const MAX_OPEN_WRITES: usize = 256;

/// How many durable writes share one open transaction before it is committed. More than
/// relaxed ones: a commit in the middle of a round holds up that round's writers. The commit
/// frees the rounds' records kept to rebuild the transaction from; the pages it changed stay in
/// memory until the next checkpoint (every `checkpoint_bytes` of log) writes them back.
pub(crate) const MAX_OPEN_LOGGED_WRITES: usize = 4096;

/// The open transaction: of relaxed mode, and of the logged rounds of durable mode.
struct Open {
    txn: WriteTransaction,
    /// Writes acknowledged in it.
    writes: usize,
    /// The id reservation written in it (0 for none); it counts once the commit succeeds.
    reservation: u64,
    /// Durable mode: the log records of the rounds it holds, in order, to rebuild it from when
    /// it is lost before its commit (a failed commit, a job that failed half-way).
    rounds: Vec<Vec<u8>>,
    /// Durable mode: the last round applied here is being appended to the log and synced; no
    /// commit may make it visible until that is done.
    syncing: bool,
}

/// What relaxed writers, readers and the flusher share.
struct Shared {
    handle: Handle,
    /// Durable mode's queue of jobs and who leads their rounds (`leader`).
    leadership: Leadership,
    /// Every id at or below this is covered by a committed reservation.
    reserved: AtomicU64,
    open: Mutex<Option<Open>>,
    /// Signalled when a round's sync ends (`Open::syncing`).
    synced: Condvar,
    /// How many threads wait on `synced`: a round that ends with none skips the signal (a
    /// system call each round).
    awaiting_sync: AtomicUsize,
    /// Whether `open` may hold a transaction: readers skip the lock when it does not.
    any_open: AtomicBool,
    /// Whether something was committed (or opened) since the last durable commit.
    dirty: AtomicBool,
    /// How many times acknowledged relaxed writes may have been lost to an engine failure (the
    /// open transaction discarded, non-durable commits dropped by a reopen); counted whenever
    /// anything was pending, so it may count a loss of nothing.
    losses: AtomicU64,
    /// Durable mode's write-ahead log (`wal`); `None` in relaxed mode and in the read-only views
    /// of `dbx store check`, which commit to redb durably instead.
    log: Option<Mutex<Log>>,
    /// The log's size that makes the leader checkpoint after its round.
    checkpoint_bytes: u64,
    /// Tests: holds a checkpoint between its two commits while armed.
    #[cfg(test)]
    checkpoint_pause: Pause,
}

/// Tests: a point where a thread waits while the pause is armed, and tells that it got there.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Pause {
    /// (armed, a thread is held at the point)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

#[cfg(test)]
impl Pause {
    fn state(&self) -> MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The point: returns at once unless armed, else once released.
    pub(super) fn pause(&self) {
        let mut state = self.state();
        if !state.0 {
            return;
        }
        state.1 = true;
        self.changed.notify_all();
        while state.0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.1 = false;
    }

    pub(super) fn arm(&self) {
        self.state().0 = true;
    }

    /// Waits until a thread is held at the point.
    pub(super) fn reached(&self) {
        let mut state = self.state();
        while !state.1 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn release(&self) {
        self.state().0 = false;
        self.changed.notify_all();
    }
}

impl Shared {
    /// Reopens the database if an I/O error requires it, before a writer begins a transaction.
    /// The caller holds the writer side; in relaxed mode `slot` is the open transaction, which
    /// a reopen discards (an I/O error already did).
    fn prepare_write(&self, slot: Option<&mut Option<Open>>) -> Result<()> {
        if !self.handle.needs_reopen() {
            return Ok(());
        }
        if let Some(slot) = slot {
            // Durable mode loses nothing: the reopen replays the log, which holds every round.
            if slot.take().is_some() && self.log.is_none() {
                self.losses.fetch_add(1, Ordering::AcqRel);
            }
            self.any_open.store(false, Ordering::Release);
        }
        let reopened = self.handle.prepare_write()?;
        self.reopened(reopened);
        Ok(())
    }

    fn reopened(&self, reserved: Option<u64>) {
        if let Some(reserved) = reserved {
            // The reopened file's reservation is the one that counts: relaxed commits since the
            // last durable one did not survive the close.
            // Non-durable commits pending at the failure died with it (counted as a loss there).
            self.reserved.store(reserved, Ordering::Release);
            self.dirty.store(false, Ordering::Release);
        }
    }

    fn open(&self) -> MutexGuard<'_, Option<Open>> {
        match self.open.lock() {
            Ok(slot) => slot,
            Err(poisoned) => {
                // A writer panicked in the middle of its inserts: like an engine failure, the
                // open transaction cannot be trusted and is discarded.
                let mut slot = poisoned.into_inner();
                if slot.take().is_some() {
                    self.losses.fetch_add(1, Ordering::AcqRel);
                }
                self.any_open.store(false, Ordering::Release);
                self.open.clear_poison();
                slot
            }
        }
    }

    /// Waits until no round is being synced in the open transaction (durable mode).
    fn synced<'s>(&self, mut slot: MutexGuard<'s, Option<Open>>) -> MutexGuard<'s, Option<Open>> {
        while slot.as_ref().is_some_and(|open| open.syncing) {
            // Counted under the lock that the round takes to end its sync, so the round sees it.
            self.awaiting_sync.fetch_add(1, Ordering::AcqRel);
            slot = self.synced.wait(slot).unwrap_or_else(|p| p.into_inner());
            self.awaiting_sync.fetch_sub(1, Ordering::AcqRel);
        }
        slot
    }

    /// Commits the open transaction, if any (`durable` makes it, and every earlier commit,
    /// durable). The caller holds the lock, and no round is being synced in it. In durable mode
    /// a failed commit leaves the transaction rebuilt from its rounds' records.
    fn commit_open(&self, slot: &mut Option<Open>, durable: bool) -> Result<bool> {
        let Some(mut open) = slot.take() else {
            return Ok(false);
        };
        let rounds = std::mem::take(&mut open.rounds);
        let committed = if open.writes == 0 && !durable {
            // Opened for a write's reads only; nothing to keep.
            Ok(false)
        } else {
            let durability = if durable {
                open.txn
                    .set_durability(redb::Durability::Immediate)
                    .map_err(|err| StoreError::storage("", err))
            } else {
                Ok(())
            };
            let committed = durability
                .and_then(|()| open.txn.commit().map_err(commit_error))
                .map(|()| true);
            self.handle
                .record(&committed.as_ref().map(drop).map_err(Clone::clone), durable);
            if committed.is_err() && self.log.is_none() {
                self.losses.fetch_add(1, Ordering::AcqRel);
            }
            committed
        };
        if committed.is_err() {
            self.rebuild(slot, rounds);
            return committed;
        }
        if committed.is_ok() && open.reservation > 0 {
            self.reserved.fetch_max(open.reservation, Ordering::AcqRel);
        }
        // Only now: a reader that skips the lock because nothing is open must find the writes
        // committed, not in a commit still running.
        self.any_open.store(false, Ordering::Release);
        committed
    }

    /// Durable mode: the open transaction holding `rounds` (acknowledged, in the log) was lost
    /// before its commit; begins a new one holding them again, replayed from their records, so
    /// every acknowledged write stays visible. When that fails the database is marked stale: it
    /// is reopened before the next read or write, which replays the log from the file.
    fn rebuild(&self, slot: &mut Option<Open>, rounds: Vec<Vec<u8>>) {
        *slot = None;
        self.any_open.store(false, Ordering::Release);
        if rounds.is_empty() {
            return;
        }
        let rebuilt = begin_open(&self.handle).and_then(|mut open| {
            let mut tables = Tables::new(&open.txn);
            for body in &rounds {
                mutations::replay(&mut tables, body)?;
            }
            drop(tables);
            open.writes = rounds.len();
            open.rounds = rounds;
            Ok(open)
        });
        match rebuilt {
            Ok(open) => {
                *slot = Some(open);
                self.any_open.store(true, Ordering::Release);
            }
            Err(err) => self.handle.record_stale(&err),
        }
    }

    /// Makes every relaxed write so far durable: commits the open transaction durably, or makes
    /// an empty durable commit when earlier non-durable commits are pending.
    fn make_durable(&self) -> Result<()> {
        let mut slot = self.open();
        if !self.dirty.swap(false, Ordering::AcqRel) && slot.is_none() {
            return Ok(());
        }
        if self.handle.needs_reopen() {
            // What was not durable died with the failed handle; the next write reopens it
            // (not the flusher, which would reopen every interval while the disk stays full).
            return Err(self.handle.lost_writes());
        }
        let result = self
            .commit_open(&mut slot, true)
            .and_then(|committed| match committed {
                true => Ok(()),
                false => {
                    let flushed = flush(&self.handle);
                    self.handle.record(&flushed, true);
                    if flushed.is_err() {
                        // The earlier non-durable commits die with the handle's reopen.
                        self.losses.fetch_add(1, Ordering::AcqRel);
                    }
                    flushed
                }
            });
        if result.is_err() {
            // Left to the next flush.
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

/// Where a write reads the latest state of its aggregate.
pub(crate) enum Latest<'a> {
    /// Durable mode: a read transaction (every acknowledged write is committed).
    Committed(ReadTransaction),
    /// Relaxed mode: the open transaction, which holds the writes not yet committed.
    Open(&'a WriteTransaction),
}

pub(crate) struct Committer {
    durability: Durability,
    shared: Arc<Shared>,
    closed: AtomicBool,
    flusher: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// Durable mode's round thread (`leader`), stopped when the store closes.
    rounds: Mutex<Option<RoundThread>>,
    /// `Shared::losses` as the last [`Committer::flush`] reported it.
    losses_reported: AtomicU64,
}

fn closed() -> StoreError {
    StoreError::engine("the store is closed")
}

impl Committer {
    /// `log`: durable mode's write-ahead log, checkpointed once it holds `checkpoint_bytes`
    /// (without one, durable batches commit to redb durably). `guard` fences the rounds the
    /// round thread leads, as the store's methods fence the others.
    pub(crate) fn new(
        handle: Handle,
        durability: Durability,
        reserved: u64,
        log: Option<Log>,
        checkpoint_bytes: u64,
        guard: Arc<EngineGuard>,
    ) -> Result<Self> {
        let durable = durability == Durability::Fsync;
        let shared = Arc::new(Shared {
            handle,
            leadership: Leadership::new(durable),
            reserved: AtomicU64::new(reserved),
            open: Mutex::new(None),
            synced: Condvar::new(),
            awaiting_sync: AtomicUsize::new(0),
            any_open: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            losses: AtomicU64::new(0),
            log: log.map(Mutex::new),
            checkpoint_bytes,
            #[cfg(test)]
            checkpoint_pause: Pause::default(),
        });
        let flusher = match durability {
            Durability::Fsync => None,
            Durability::Relaxed => {
                let (stop, stopped) = mpsc::channel::<()>();
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("eventdbx-store-flusher".into())
                    .spawn(move || loop {
                        let last = !matches!(
                            stopped.recv_timeout(RELAXED_FLUSH_INTERVAL),
                            Err(RecvTimeoutError::Timeout)
                        );
                        // A failed flush leaves the commits to the next one.
                        let _ = shared.make_durable();
                        if last {
                            return;
                        }
                    })
                    .map_err(|err| StoreError::storage("cannot start the flusher", err))?;
                Some((stop, handle))
            }
        };
        let rounds = if durable {
            Some(RoundThread::start(Arc::clone(&shared), guard)?)
        } else {
            None
        };
        Ok(Committer {
            durability,
            shared,
            closed: AtomicBool::new(false),
            flusher: Mutex::new(flusher),
            rounds: Mutex::new(rounds),
            losses_reported: AtomicU64::new(0),
        })
    }

    /// Commits `apply` (with whatever else is queued) and returns once it is committed, or,
    /// in relaxed mode, once it is in the open transaction.
    pub(crate) fn commit(&self, max_id: u64, apply: Apply) -> Result<()> {
        if self.durability == Durability::Relaxed {
            return self.commit_relaxed(max_id, &apply);
        }
        let (answer, answered) = mpsc::sync_channel(1);
        self.submit(
            max_id,
            apply,
            Answer::new(move |result| {
                // The caller waits on the other end.
                let _ = answer.send(result);
            }),
        );
        answered.recv().unwrap_or_else(|_| Err(closed()))
    }

    /// Queues `apply` and calls `answer` once it is committed (durable mode: once its round's
    /// log record is synced), on whichever thread leads its round. When no round is running
    /// this thread leads one at once, and `answer` is called before this returns; otherwise
    /// this returns at once. Relaxed mode runs it at once.
    pub(crate) fn submit(&self, max_id: u64, apply: Apply, answer: Answer) {
        if self.durability == Durability::Relaxed {
            answer.send(self.commit_relaxed(max_id, &apply));
            return;
        }
        self.shared.submit(max_id, apply, answer);
    }

    /// Whether a durable round is running (a write now would wait for it); relaxed writes never
    /// wait for one.
    pub(crate) fn commit_running(&self) -> bool {
        self.durability == Durability::Fsync && self.shared.leadership.queue().leading
    }

    /// Durable rounds run since the store opened, and the jobs they held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn rounds(&self) -> (u64, u64) {
        self.shared.leadership.rounds()
    }

    /// Runs `apply` in the open transaction (opening one if needed).
    fn commit_relaxed(&self, max_id: u64, apply: &Apply) -> Result<()> {
        let shared = &*self.shared;
        let mut slot = self.open_slot()?;
        shared.prepare_write(Some(&mut slot))?;
        let open = ensure_open(&mut slot, shared)?;
        let covered = shared
            .reserved
            .load(Ordering::Acquire)
            .max(open.reservation);
        let reservation = (max_id > covered).then(|| max_id.saturating_add(ID_RESERVATION));
        let result = {
            let mut tables = Tables::new(&open.txn);
            apply(&mut tables).and_then(|()| match reservation {
                Some(new) => tables
                    .meta()
                    .and_then(|mut meta| meta.insert(LAST_ID, new).map_err(storage)),
                None => Ok(()),
            })
        };
        match result {
            Ok(()) => {
                open.writes += 1;
                if let Some(new) = reservation {
                    open.reservation = new;
                }
                let full = open.writes >= MAX_OPEN_WRITES;
                shared.dirty.store(true, Ordering::Release);
                if full {
                    // The write is in; a failed commit here is the engine failing, which
                    // loses what a crash would.
                    shared.commit_open(&mut slot, false)?;
                } else {
                    shared.any_open.store(true, Ordering::Release);
                }
                Ok(())
            }
            Err(err @ StoreError::Domain(_)) => Err(err),
            Err(err) => {
                // The engine failed part-way: nothing of the open transaction can be trusted.
                *slot = None;
                shared.losses.fetch_add(1, Ordering::AcqRel);
                shared.any_open.store(false, Ordering::Release);
                shared.handle.record(&Err(err.clone()), false);
                Err(err)
            }
        }
    }

    /// The open-transaction slot, locked, for a relaxed write (refused once the store closes).
    fn open_slot(&self) -> Result<MutexGuard<'_, Option<Open>>> {
        let slot = self.shared.open();
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(slot)
    }

    /// Commits the open relaxed transaction, so a read transaction started after this sees
    /// every acknowledged write. Cheap when there is none.
    pub(crate) fn settle(&self) -> Result<()> {
        if !self.shared.any_open.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut slot = self.shared.synced(self.shared.open());
        self.shared.commit_open(&mut slot, false).map(drop)
    }

    /// Runs `read` against the latest state a write must see: the open transaction in relaxed
    /// mode (opened if needed, so the write's inserts join it), a read transaction otherwise.
    /// `read` must not call back into the store.
    pub(crate) fn read_latest<T>(&self, read: impl FnOnce(Latest<'_>) -> Result<T>) -> Result<T> {
        if self.durability == Durability::Fsync {
            self.reopen_for_read()?;
            let slot = self.shared.open();
            // The open transaction holds acknowledged rounds a read transaction would miss, and
            // may hold the round being synced: never this writer's aggregate, whose lock stripe
            // it holds until its own write is answered.
            return match slot.as_ref() {
                Some(open) => read(Latest::Open(&open.txn)),
                None => read(Latest::Committed(self.begin_read()?)),
            };
        }
        let shared = &*self.shared;
        let mut slot = self.open_slot()?;
        shared.prepare_write(Some(&mut slot))?;
        let open = ensure_open(&mut slot, shared)?;
        shared.any_open.store(true, Ordering::Release);
        read(Latest::Open(&open.txn))
    }

    /// Reopens the database before a read when an I/O error left it stale (redb then refuses
    /// reads too) or closed. Takes the writer side as a write would: the open-transaction lock,
    /// or the lead when no commit is running (a running leader reopens before its commit).
    pub(crate) fn reopen_for_read(&self) -> Result<()> {
        if !self.shared.handle.needs_reopen() {
            return Ok(());
        }
        match self.durability {
            Durability::Relaxed => {
                let mut slot = self.shared.open();
                self.shared.prepare_write(Some(&mut slot))
            }
            Durability::Fsync => {
                if !self.shared.take_lead() {
                    return Ok(());
                }
                let reopened = self.shared.prepare_write(Some(&mut self.shared.open()));
                self.shared.give_up_lead();
                reopened
            }
        }
    }

    /// Probes a failing store (`health`, "probe") when one is due: with the writer side taken as
    /// [`Committer::reopen_for_read`] takes it; a running leader makes the probe unnecessary,
    /// its commit's outcome being recorded anyway.
    pub(crate) fn probe(&self) {
        let handle = &self.shared.handle;
        if !handle.probe_due() {
            return;
        }
        let lead = self.durability == Durability::Fsync;
        if lead && !self.shared.take_lead() {
            return;
        }
        let mut slot = self.shared.open();
        if self.shared.prepare_write(Some(&mut slot)).is_ok() {
            if slot.is_some() {
                // Pending writes: their durable commit is the probe (a probe's own transaction
                // would wait for the open one forever).
                let _ = self.shared.commit_open(&mut slot, true);
            } else {
                handle.probe();
            }
        }
        drop(slot);
        if lead {
            self.shared.give_up_lead();
        }
    }

    /// A read transaction on the current database (after a reopen, the reopened one).
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction> {
        self.shared
            .handle
            .with_db(|db| db.begin_read().map_err(storage))
    }

    /// Whether writes commit, or fail since an I/O error.
    pub(crate) fn health(&self) -> StorageHealth {
        self.shared.handle.health()
    }

    /// Makes every write acknowledged so far durable (relaxed mode), or fails when one may have
    /// been lost to an engine failure since the last flush returned (exact for one flushing
    /// caller; of several, the first to flush after a loss is told). Durable mode has nothing
    /// to do.
    pub(crate) fn flush(&self) -> Result<()> {
        match self.durability {
            Durability::Fsync => Ok(()),
            Durability::Relaxed => {
                let result = self.shared.make_durable();
                // A loss since the last flush that returned means a write acknowledged before
                // this call may be gone, whatever this flush committed.
                let losses = self.shared.losses.load(Ordering::Acquire);
                let lost = self.losses_reported.swap(losses, Ordering::AcqRel) < losses;
                match result {
                    Ok(()) if lost => Err(self.shared.handle.lost_writes()),
                    result => result,
                }
            }
        }
    }

    /// Refuses new writes and makes relaxed commits durable. Writes already queued finish.
    pub(crate) fn close(&self) {
        self.shared.leadership.queue().closed = true;
        self.closed.store(true, Ordering::Release);
        let rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rounds) = rounds {
            // Its last rounds answer the writers queued before the close.
            rounds.stop(&self.shared);
        }
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, handle)) = flusher {
            drop(stop);
            // The flusher's last round makes everything durable; one that panicked leaves it
            // to us.
            if handle.join().is_err() {
                let _ = self.shared.make_durable();
            }
        }
        self.close_log();
    }

    /// Durable mode: a last checkpoint, then the log emptied, so a closed store is whole in its
    /// database file. Only when no commit is running (one still running leaves the log to the
    /// next open's replay, which is as good).
    fn close_log(&self) {
        if self.shared.log.is_none() {
            return;
        }
        if !self.shared.take_lead() {
            return;
        }
        let prepared = self.shared.prepare_write(Some(&mut self.shared.open()));
        if prepared.is_ok() && self.shared.checkpoint().is_ok() {
            if let Some(mut log) = self.shared.log() {
                let _ = log.truncate();
            }
        }
        self.shared.give_up_lead();
    }
}

/// The open transaction, begun if there is none.
fn ensure_open<'s>(slot: &'s mut Option<Open>, shared: &Shared) -> Result<&'s mut Open> {
    if slot.is_none() {
        let begun = begin_open(&shared.handle);
        if let Err(err) = &begun {
            shared.handle.record(&Err(err.clone()), false);
            if is_io_failure(err) && shared.dirty.load(Ordering::Acquire) {
                // The reopen this failure calls for drops the pending non-durable commits.
                shared.losses.fetch_add(1, Ordering::AcqRel);
            }
        }
        *slot = Some(begun?);
    }
    slot.as_mut()
        .ok_or_else(|| StoreError::engine("no open transaction"))
}

fn begin_open(handle: &Handle) -> Result<Open> {
    let mut txn = handle.with_db(|db| db.begin_write().map_err(commit_error))?;
    txn.set_durability(redb::Durability::None)
        .map_err(|err| StoreError::storage("", err))?;
    Ok(Open {
        txn,
        writes: 0,
        reservation: 0,
        rounds: Vec::new(),
        syncing: false,
    })
}

/// An empty durable commit: makes every earlier non-durable commit durable.
fn flush(handle: &Handle) -> Result<()> {
    let mut txn = handle.with_db(|db| db.begin_write().map_err(commit_error))?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|err| StoreError::storage("", err))?;
    txn.commit().map_err(commit_error)
}
