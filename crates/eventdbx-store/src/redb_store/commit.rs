//! Group commit without a writer thread: leader/follower.
//!
//! A writer queues its inserts. If no commit is running it becomes the *leader*: it takes every
//! queued job, runs them in one redb transaction and commits once, answering each job. If more
//! jobs queued up meanwhile, it hands leadership to the first of them and returns; otherwise it
//! steps down. A lone writer therefore commits on its own thread with no hand-off at all, and
//! concurrent writers share one commit (one fsync) per round, each waiting at most for the
//! commit in progress and its own.
//!
//! In relaxed mode commits are not made durable by the writer; a flusher thread makes the
//! latest commit durable within [`RELAXED_FLUSH_INTERVAL`] (redb keeps non-durable commits
//! only until the next durable one, so without it a process kill would lose them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::Database;

use super::{storage, Tables, LAST_ID};
use crate::{Durability, Result, StoreError};

/// How long a relaxed commit may stay non-durable.
pub(crate) const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Inserts of one write, run inside the batch transaction. A job that fails must fail before it
/// changes anything, or be safe to re-run: the leader aborts the transaction and runs the batch
/// again without the failing job.
pub(crate) type Apply = Box<dyn for<'t> Fn(&mut Tables<'t>) -> Result<()> + Send>;

enum Reply {
    Done(Result<()>),
    Lead,
}

struct Job {
    apply: Apply,
    /// The highest Snowflake id the job stores.
    max_id: u64,
    reply: SyncSender<Reply>,
}

/// Ids are reserved this far ahead (100 ms worth of Snowflake ids), so the reservation is
/// written about ten times a second rather than with every commit. After a restart the id
/// generator starts above the reservation: at worst it waits out the 100 ms.
const ID_RESERVATION: u64 = 100 << 22;

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    leading: bool,
    closed: bool,
}

pub(crate) struct Committer {
    db: Arc<Database>,
    durability: Durability,
    queue: Mutex<Queue>,
    dirty: Arc<AtomicBool>,
    /// Every id at or below this is covered by the durable (or pending) reservation.
    reserved: AtomicU64,
    flusher: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

fn closed() -> StoreError {
    StoreError::Storage("the store is closed".into())
}

impl Committer {
    pub(crate) fn new(db: Arc<Database>, durability: Durability, reserved: u64) -> Result<Self> {
        let dirty = Arc::new(AtomicBool::new(false));
        let flusher = match durability {
            Durability::Fsync => None,
            Durability::Relaxed => {
                let (stop, stopped) = mpsc::channel::<()>();
                let (db, dirty) = (Arc::clone(&db), Arc::clone(&dirty));
                let handle = std::thread::Builder::new()
                    .name("eventdbx-store-flusher".into())
                    .spawn(move || loop {
                        let last = !matches!(
                            stopped.recv_timeout(RELAXED_FLUSH_INTERVAL),
                            Err(RecvTimeoutError::Timeout)
                        );
                        if dirty.swap(false, Ordering::AcqRel) {
                            // A failed flush leaves the commits to the next one.
                            if flush(&db).is_err() {
                                dirty.store(true, Ordering::Release);
                            }
                        }
                        if last {
                            return;
                        }
                    })
                    .map_err(|err| {
                        StoreError::Storage(format!("cannot start the flusher: {err}"))
                    })?;
                Some((stop, handle))
            }
        };
        Ok(Committer {
            db,
            durability,
            queue: Mutex::new(Queue::default()),
            dirty,
            reserved: AtomicU64::new(reserved),
            flusher: Mutex::new(flusher),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits `apply` (with whatever else is queued) and returns once it is committed.
    pub(crate) fn commit(&self, max_id: u64, apply: Apply) -> Result<()> {
        let (reply, answer) = mpsc::sync_channel(2);
        let lead_now = {
            let mut queue = self.queue();
            if queue.closed {
                return Err(closed());
            }
            queue.jobs.push(Job {
                apply,
                max_id,
                reply,
            });
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead_now {
            self.lead();
        }
        loop {
            match answer.recv() {
                Ok(Reply::Done(result)) => return result,
                Ok(Reply::Lead) => self.lead(),
                Err(_) => return Err(closed()),
            }
        }
    }

    /// One round as leader: commit everything queued, then pass leadership on or step down.
    fn lead(&self) {
        let batch = std::mem::take(&mut self.queue().jobs);
        commit_batch(&self.db, self.durability, &self.reserved, batch);
        if self.durability == Durability::Relaxed {
            self.dirty.store(true, Ordering::Release);
        }
        let mut queue = self.queue();
        match queue.jobs.first() {
            // The next writer is blocked on its answer channel, which has room for this.
            Some(next) => {
                let _ = next.reply.send(Reply::Lead);
            }
            None => queue.leading = false,
        }
    }

    /// Refuses new writes and makes relaxed commits durable. Writes already queued finish.
    pub(crate) fn close(&self) {
        self.queue().closed = true;
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, handle)) = flusher {
            drop(stop);
            // A flusher that panicked leaves the final flush to us.
            if handle.join().is_err() && self.dirty.swap(false, Ordering::AcqRel) {
                let _ = flush(&self.db);
            }
        }
    }
}

/// An empty durable commit: makes every earlier non-durable commit durable.
fn flush(db: &Database) -> Result<()> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|err| StoreError::Storage(err.to_string()))?;
    txn.commit().map_err(storage)
}

fn commit_batch(db: &Database, durability: Durability, reserved: &AtomicU64, mut batch: Vec<Job>) {
    while !batch.is_empty() {
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(err) => return reply_all(batch, &Err(storage(err))),
        };
        let level = match durability {
            Durability::Fsync => redb::Durability::Immediate,
            Durability::Relaxed => redb::Durability::None,
        };
        if let Err(err) = txn.set_durability(level) {
            return reply_all(batch, &Err(StoreError::Storage(err.to_string())));
        }
        let mut tables = Tables::new(&txn);
        let failed = batch
            .iter()
            .enumerate()
            .find_map(|(i, job)| (job.apply)(&mut tables).err().map(|err| (i, err)));
        let needed = batch.iter().map(|job| job.max_id).max().unwrap_or(0);
        let reservation = (failed.is_none() && needed > reserved.load(Ordering::Acquire))
            .then(|| needed.saturating_add(ID_RESERVATION));
        if let Some(new) = reservation {
            let written = tables
                .meta()
                .and_then(|meta| meta.insert(LAST_ID, new).map_err(storage));
            if let Err(err) = written {
                return reply_all(batch, &Err(err));
            }
        }
        drop(tables);
        match failed {
            Some((index, err)) => {
                // Nothing of this transaction is kept; the others run again without the job.
                drop(txn);
                let job = batch.remove(index);
                let _ = job.reply.send(Reply::Done(Err(err)));
            }
            None => {
                let result = txn.commit().map_err(storage);
                if let (Ok(()), Some(new)) = (&result, reservation) {
                    reserved.fetch_max(new, Ordering::AcqRel);
                }
                return reply_all(batch, &result);
            }
        }
    }
}

fn reply_all(batch: Vec<Job>, result: &Result<()>) {
    for job in batch {
        // Every job's owner is waiting; a send can only fail if it is gone, and then no one
        // needs the answer.
        let _ = job.reply.send(Reply::Done(result.clone()));
    }
}
