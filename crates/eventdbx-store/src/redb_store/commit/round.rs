//! One round of the durable group commit, and the checkpoints of the write-ahead log
//! (`docs/storage.md`, "Write-ahead log").
//!
//! With the log, a round runs its jobs in the open transaction (`Open`), appends their
//! mutations to the log as one record and syncs it, and answers its writers; the transaction is
//! committed later, for many rounds at once (module docs of `commit`). Two rules keep every
//! round invisible until it is durable and every acknowledged one visible:
//! - the transaction's lock is held while the round's jobs run; while its record is synced the
//!   round is marked `Open::syncing`, and nothing commits the transaction meanwhile
//!   ([`Shared::synced`]);
//! - a transaction lost before its commit (a failed commit, a job that failed after changing
//!   something, a round whose append failed) is rebuilt at once from the records of the rounds
//!   it held ([`Shared::rebuild`]), or the database is marked stale and reopened before the
//!   next read or write, replaying the log.
//!
//! Without a log (the read-only views of `dbx store check`), a round is one durable redb commit.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use super::leader::{reply_all, Job};
use super::{ensure_open, Shared, ID_RESERVATION, LAST_ID, MAX_OPEN_LOGGED_WRITES};
use crate::redb_store::health::{commit_error, is_io_failure};
use crate::redb_store::tables::{storage, Tables, META, WAL_CHECKPOINT};
use crate::redb_store::wal::Log;
use crate::{Result, StoreError};

/// One durable group commit of `batch`; its outcome is recorded in the handle.
pub(super) fn commit_batch(shared: &Shared, batch: Vec<Job>) {
    let (batch, result) = match shared.log() {
        Some(mut log) => run_logged(shared, &mut log, batch),
        None => run_unlogged(shared, batch),
    };
    reply_all(batch, &result);
}

/// The id reservation a round must write: above the highest id its jobs store, when the last
/// reservation does not cover it.
fn reservation(shared: &Shared, batch: &[Job]) -> Option<u64> {
    let needed = batch.iter().map(|job| job.max_id).max().unwrap_or(0);
    (needed > shared.reserved.load(Ordering::Acquire))
        .then(|| needed.saturating_add(ID_RESERVATION))
}

/// Runs `batch` in the open transaction until its record is synced or the engine fails: a job
/// that fails without changing anything is answered alone; one that fails after changing
/// something is answered, the transaction rebuilt without its round, and the others run
/// again. Returns the jobs left to answer and their result.
fn run_logged(shared: &Shared, log: &mut Log, mut batch: Vec<Job>) -> (Vec<Job>, Result<()>) {
    let handle = &shared.handle;
    while !batch.is_empty() {
        let mut slot = shared.open();
        let open = match ensure_open(&mut slot, shared) {
            Ok(open) => open,
            Err(err) => return (batch, Err(err)),
        };
        shared.any_open.store(true, Ordering::Release);
        let mut tables = Tables::logged(&open.txn);
        let mut kept = Vec::with_capacity(batch.len());
        let mut broken = None;
        let mut jobs = batch.into_iter();
        for job in jobs.by_ref() {
            let before = tables.recorded();
            match (job.apply)(&mut tables) {
                Ok(()) => kept.push(job),
                Err(err) if !is_io_failure(&err) && tables.recorded() == before => {
                    job.answer.send(Err(err));
                }
                Err(err) => {
                    broken = Some((job, err));
                    break;
                }
            }
        }
        kept.extend(jobs);
        let reservation = reservation(shared, &kept);
        let reserved = match (&broken, reservation) {
            (None, Some(new)) => tables
                .meta()
                .and_then(|mut meta| meta.insert(LAST_ID, new).map_err(storage)),
            _ => Ok(()),
        };
        let mutations = tables.take_log();
        drop(tables);
        if let Err(err) = reserved {
            // The engine failed in the middle of the round.
            let rounds = std::mem::take(&mut open.rounds);
            handle.record(&Err(err.clone()), true);
            shared.rebuild(&mut slot, rounds);
            return (kept, Err(err));
        }
        if let Some((job, err)) = broken {
            // The transaction holds changes of this round that will never be logged.
            let rounds = std::mem::take(&mut open.rounds);
            if is_io_failure(&err) {
                handle.record(&Err(err.clone()), true);
                shared.rebuild(&mut slot, rounds);
                kept.push(job);
                return (kept, Err(err));
            }
            job.answer.send(Err(err));
            shared.rebuild(&mut slot, rounds);
            batch = kept;
            continue;
        }
        if mutations.is_empty() {
            return (kept, Ok(()));
        }
        open.syncing = true;
        drop(slot);
        let appended = log.append(mutations.as_bytes());
        let mut slot = shared.open();
        let result = match appended {
            Ok(_) => {
                if let Some(new) = reservation {
                    shared.reserved.fetch_max(new, Ordering::AcqRel);
                }
                handle.record(&Ok(()), true);
                let full = slot.as_mut().is_some_and(|open| {
                    open.syncing = false;
                    open.writes += kept.len();
                    open.rounds.push(mutations.into_bytes());
                    open.writes >= MAX_OPEN_LOGGED_WRITES
                });
                if full {
                    // Bounds the transaction's memory; a failure rebuilds it, and the round is
                    // durable in the log whatever happens to the transaction.
                    let _ = shared.commit_open(&mut slot, false);
                }
                Ok(())
            }
            Err(err) => {
                // Aborted: redb saw no error, so nothing needs a reopen; the round leaves the
                // transaction with it.
                let rounds = slot
                    .as_mut()
                    .map(|open| std::mem::take(&mut open.rounds))
                    .unwrap_or_default();
                shared.rebuild(&mut slot, rounds);
                handle.record_unlatched(&Err(err.clone()));
                Err(err)
            }
        };
        drop(slot);
        if shared.awaiting_sync.load(Ordering::Acquire) > 0 {
            shared.synced.notify_all();
        }
        return (kept, result);
    }
    (batch, Ok(()))
}

/// Runs `batch` in its own durable redb commit until it commits or the engine fails: a job that
/// fails on its own is answered and dropped, and the others run again. Returns the jobs left to
/// answer and their result, recorded in the handle.
fn run_unlogged(shared: &Shared, mut batch: Vec<Job>) -> (Vec<Job>, Result<()>) {
    let handle = &shared.handle;
    while !batch.is_empty() {
        let mut txn = match handle.with_db(|db| db.begin_write().map_err(commit_error)) {
            Ok(txn) => txn,
            Err(err) => {
                handle.record(&Err(err.clone()), true);
                return (batch, Err(err));
            }
        };
        if let Err(err) = txn.set_durability(redb::Durability::Immediate) {
            return (batch, Err(StoreError::storage("", err)));
        }
        let mut tables = Tables::new(&txn);
        let failed = batch
            .iter()
            .enumerate()
            .find_map(|(i, job)| (job.apply)(&mut tables).err().map(|err| (i, err)));
        let reservation = failed
            .is_none()
            .then(|| reservation(shared, &batch))
            .flatten();
        if let Some(new) = reservation {
            let written = tables
                .meta()
                .and_then(|mut meta| meta.insert(LAST_ID, new).map_err(storage));
            if let Err(err) = written {
                handle.record(&Err(err.clone()), true);
                return (batch, Err(err));
            }
        }
        drop(tables);
        match failed {
            // The engine failed, not the job: the transaction is lost, and so is the batch.
            Some((_, err)) if is_io_failure(&err) => {
                handle.record(&Err(err.clone()), true);
                return (batch, Err(err));
            }
            Some((index, err)) => {
                // Nothing of this transaction is kept; the others run again without the job.
                drop(txn);
                let job = batch.remove(index);
                job.answer.send(Err(err));
            }
            None => {
                let result = txn.commit().map_err(commit_error);
                handle.record(&result, true);
                if let (Ok(()), Some(new)) = (&result, reservation) {
                    shared.reserved.fetch_max(new, Ordering::AcqRel);
                }
                return (batch, result);
            }
        }
    }
    (batch, Ok(()))
}

impl Shared {
    pub(super) fn log(&self) -> Option<MutexGuard<'_, Log>> {
        self.log
            .as_ref()
            .map(|log| log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the log has grown past the threshold (and the database is usable).
    pub(super) fn checkpoint_due(&self) -> bool {
        self.log()
            .is_some_and(|log| log.len() >= self.checkpoint_bytes)
            && !self.handle.needs_reopen()
    }

    /// Checkpoints when the log has grown past the threshold; the caller leads.
    pub(super) fn checkpoint_if_due(&self) {
        if self.checkpoint_due() {
            // A failure is recorded in the handle; the log keeps every record until one succeeds.
            let _ = self.checkpoint();
        }
    }

    /// A durable redb commit recording the last LSN of the log, which the file then holds with
    /// every record before it; the log then starts over. The open transaction is first committed
    /// without a sync, under its lock, and the durable commit is a transaction of its own made
    /// with that lock released: it writes back every page changed since the last checkpoint and
    /// syncs the file, which takes a while, and readers (which take the lock to settle the open
    /// transaction) need not wait for it. Writers do: the caller holds the writer side (leads,
    /// or the store is closing), so no transaction is opened meanwhile. Should the durable
    /// commit fail, the non-durable one is lost with the file's reopen, whose replay of the log
    /// (not started over) brings its rounds back.
    pub(super) fn checkpoint(&self) -> Result<()> {
        let Some(mut log) = self.log() else {
            return Ok(());
        };
        if log.is_checkpointed() {
            return Ok(());
        }
        let lsn = log.last_lsn();
        {
            let mut slot = self.synced(self.open());
            // A failure leaves the transaction rebuilt from its rounds (`commit_open`).
            self.commit_open(&mut slot, false)?;
        }
        #[cfg(test)]
        self.checkpoint_pause.pause();
        let result = self.handle.with_db(|db| {
            let mut txn = db.begin_write().map_err(commit_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|err| StoreError::storage("", err))?;
            mark_checkpoint(&txn, lsn)?;
            txn.commit().map_err(commit_error)
        });
        self.handle.record(&result, true);
        if result.is_ok() {
            log.restart(lsn);
        }
        result
    }
}

/// Records `lsn` as the checkpoint in `txn` (not logged: the log starts over after it).
fn mark_checkpoint(txn: &redb::WriteTransaction, lsn: u64) -> Result<()> {
    txn.open_table(META)
        .map_err(storage)?
        .insert(WAL_CHECKPOINT, lsn)
        .map_err(storage)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use eventdbx_core::write::{WriteBody, WriteKind};
    use eventdbx_core::CoreError;
    use serde_json::json;

    use crate::redb_store::tables::{read_record, storage, AGGREGATES, META};
    use crate::redb_store::RedbStore;
    use crate::{Durability, EmbeddedOptions, EventStore, StoreError, WriteRequest};

    /// Only a safety net against a hang, far beyond what a loaded machine needs.
    const PATIENCE: Duration = Duration::from_secs(30);

    const T: &str = "default";

    fn write(store: &RedbStore, id: &str, version: u64) {
        let kind = match version {
            1 => WriteKind::Create,
            _ => WriteKind::Append,
        };
        let body = WriteBody::Payload(json!({ "version": version }));
        let request = WriteRequest::new(kind, "order", id, "changed", body);
        let outcome = store.write(T, request).expect("write");
        assert_eq!(outcome.event.version, version);
    }

    /// Whether the last commit (without settling the open transaction) holds `id`.
    fn committed(store: &RedbStore, id: &str) -> bool {
        let read = store.committer.begin_read().expect("read");
        let table = read.open_table(AGGREGATES).expect("aggregates");
        read_record(&table, T, "order", id)
            .expect("record")
            .is_some()
    }

    /// Returns once no round runs (the round thread's checkpoint included).
    fn until_no_round_runs(store: &RedbStore) {
        while store.commit_running() {
            std::thread::yield_now();
        }
    }

    /// A durable store that checkpoints after every round (at 1 byte), with one write ("o-0")
    /// made and its checkpoint over.
    fn checkpointing_every_round(dir: &std::path::Path) -> Arc<RedbStore> {
        let options = EmbeddedOptions {
            checkpoint_bytes: 1,
            ..EmbeddedOptions::default()
        };
        let path = dir.join("s.redb");
        let store = Arc::new(
            RedbStore::open_with_options(&path, Durability::Fsync, 0, options).expect("open"),
        );
        write(&store, "o-0", 1);
        // Its checkpoint is made by the round thread: let it end (before a pause is armed).
        until_no_round_runs(&store);
        store
    }

    /// A checkpoint's durable commit writes back every page changed since the last one and
    /// syncs the file; a read that comes meanwhile does not wait for it.
    #[test]
    fn a_read_during_a_checkpoint_does_not_wait_for_its_durable_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = checkpointing_every_round(dir.path());
        let pause = &store.committer.shared.checkpoint_pause;
        pause.arm();
        // Its round is answered, then checkpointed (every round, at 1 byte).
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || write(&store, "o-1", 1))
        };
        pause.reached();
        let (read, got) = mpsc::channel();
        {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let _ = read.send(store.get(T, "order", "o-1").map(|a| a.map(|a| a.version)));
            });
        }
        let answer = got.recv_timeout(PATIENCE);
        pause.release();
        writer.join().expect("writer");
        let version = answer
            .expect("the read waited for the checkpoint's durable commit")
            .expect("get");
        assert_eq!(version, Some(1), "the read sees the acknowledged write");
        // The checkpoint went through: the log starts over, and the file holds both writes.
        assert!(store.committer.shared.log().expect("log").is_checkpointed());
        assert!(committed(&store, "o-0") && committed(&store, "o-1"));
    }

    /// A writer that leads its round (none was running) is answered, and its thread let go,
    /// before the checkpoint its round made due: the round thread makes it.
    #[test]
    fn a_writer_leading_its_round_returns_before_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = checkpointing_every_round(dir.path());
        let pause = &store.committer.shared.checkpoint_pause;
        pause.arm();
        let (wrote, returned) = mpsc::channel();
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                write(&store, "o-1", 1);
                let _ = wrote.send(());
            })
        };
        let outcome = returned.recv_timeout(PATIENCE);
        // The checkpoint is held on another thread meanwhile.
        pause.reached();
        pause.release();
        writer.join().expect("writer");
        outcome.expect("the writer waited for the checkpoint its round made due");
        // The next write waits for that checkpoint (the round thread holds the lead), then goes;
        // once its own is made, the file holds all three.
        write(&store, "o-2", 1);
        until_no_round_runs(&store);
        assert!(store.committer.shared.log().expect("log").is_checkpointed());
        assert!(["o-0", "o-1", "o-2"].iter().all(|id| committed(&store, id)));
    }

    #[test]
    fn acknowledged_rounds_share_one_redb_commit_made_before_the_next_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path().join("s.redb"), Durability::Fsync).expect("open");
        for n in 0..10 {
            write(&store, &format!("o-{n}"), 1);
        }
        // Durable in the log, not yet committed to redb: one round each, no commit each.
        assert!(!committed(&store, "o-0") && !committed(&store, "o-9"));
        // Every read path settles first: all ten are visible to it, and committed since.
        for n in 0..10 {
            let id = format!("o-{n}");
            let got = store.get(T, "order", &id).expect("get");
            assert_eq!(got.map(|a| a.version), Some(1), "{id}");
        }
        assert!(committed(&store, "o-0") && committed(&store, "o-9"));
    }

    #[test]
    fn durable_rounds_share_their_transaction_past_the_relaxed_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path().join("s.redb"), Durability::Fsync).expect("open");
        let writes = super::super::MAX_OPEN_WRITES + 44;
        for n in 0..writes {
            write(&store, &format!("o-{n}"), 1);
        }
        // No commit in the middle of a round held its writers up: the transaction is committed
        // by the next read (or a checkpoint), not after the relaxed mode's bound.
        assert!(!committed(&store, "o-0"));
        let last = format!("o-{}", writes - 1);
        let got = store.get(T, "order", &last).expect("get");
        assert_eq!(got.map(|a| a.version), Some(1));
        assert!(committed(&store, "o-0") && committed(&store, &last));
    }

    #[test]
    fn a_job_that_fails_after_changing_something_leaves_the_acknowledged_rounds_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path().join("s.redb"), Durability::Fsync).expect("open");
        write(&store, "kept", 1);
        write(&store, "kept", 2);
        let failed = store.commit(
            0,
            Box::new(|tables| {
                tables.meta()?.insert("half-way", 1).map_err(storage)?;
                Err(CoreError::SchemaViolation("fails after a change".into()).into())
            }),
        );
        assert!(matches!(failed, Err(StoreError::Domain(_))), "{failed:?}");
        // The open transaction was rebuilt from the log records of the two writes before.
        write(&store, "kept", 3);
        let got = store.get(T, "order", "kept").expect("get");
        assert_eq!(got.map(|a| a.version), Some(3));
        let read = store.read().expect("read");
        let meta = read.open_table(META).expect("meta");
        assert!(meta.get("half-way").expect("get").is_none());
        store
            .verify(T, "order", "kept")
            .expect("the chain verifies");
    }
}
