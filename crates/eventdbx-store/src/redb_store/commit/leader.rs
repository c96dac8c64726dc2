//! Who leads the durable rounds (`docs/storage.md`, "Write-ahead log").
//!
//! A writer queues its job with an answer to call ([`Answer`]) and returns at once unless no
//! round is running: then it leads one round itself, on its own thread (a lone writer commits
//! with no hand-off at all, the answer called before it returns). When its round ends with more
//! jobs queued, it hands the lead to the store's *round thread*, which keeps leading while jobs
//! queue and then waits. Writers therefore never park a thread to wait for a round: an async
//! caller awaits its answer ([`crate::EventStore::write_then`]), and only a blocking caller
//! ([`super::Committer::commit`]) waits, on a channel.
//!
//! A panic in a round (the engine on a damaged file) refuses the queue: every queued writer
//! and every later one is answered with an error, never left waiting.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};

use super::{closed, round, Apply, Shared};
use crate::redb_store::guard::{catch_engine_panic, EngineGuard};
use crate::{Result, StoreError};

/// What a queued job's writer is answered with, once its round's record is synced (or the
/// round failed). Called exactly once: dropped unanswered (a round that panicked, a queue that
/// closed), it answers that the store is closed.
pub(crate) struct Answer(Option<Box<dyn FnOnce(Result<()>) + Send>>);

impl Answer {
    pub(crate) fn new(answer: impl FnOnce(Result<()>) + Send + 'static) -> Self {
        Answer(Some(Box::new(answer)))
    }

    pub(crate) fn send(mut self, result: Result<()>) {
        if let Some(answer) = self.0.take() {
            answer(result);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(closed()));
        }
    }
}

pub(super) struct Job {
    pub(super) apply: Apply,
    /// The highest Snowflake id the job stores.
    pub(super) max_id: u64,
    pub(super) answer: Answer,
}

pub(super) struct Queue {
    pub(super) jobs: Vec<Job>,
    /// A round is running, or about to: a writer that queues now is answered by its leader.
    pub(super) leading: bool,
    /// The lead was handed to the round thread, which has not taken it yet.
    handed: bool,
    pub(super) closed: bool,
    /// The round thread has stopped: a leader keeps leading itself.
    stopped: bool,
    /// Rounds run since the store opened, and the jobs they held (for tests and measurements).
    rounds: u64,
    round_jobs: u64,
}

/// The queue and the round thread's wake-up.
pub(super) struct Leadership {
    queue: Mutex<Queue>,
    handed: Condvar,
}

impl Leadership {
    /// `thread`: whether a round thread will take the lead over (durable mode); without one a
    /// leader leads every round itself.
    pub(super) fn new(thread: bool) -> Self {
        Leadership {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                leading: false,
                handed: false,
                closed: false,
                stopped: !thread,
                rounds: 0,
                round_jobs: 0,
            }),
            handed: Condvar::new(),
        }
    }

    pub(super) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rounds run so far and the jobs they held.
    pub(super) fn rounds(&self) -> (u64, u64) {
        let queue = self.queue();
        (queue.rounds, queue.round_jobs)
    }
}

/// The round thread, stopped when the store closes.
pub(super) struct RoundThread {
    handle: JoinHandle<()>,
}

impl RoundThread {
    pub(super) fn start(shared: Arc<Shared>, guard: Arc<EngineGuard>) -> Result<Self> {
        let handle = std::thread::Builder::new()
            .name("eventdbx-store-rounds".into())
            .spawn(move || loop {
                {
                    let lead = &shared.leadership;
                    let mut queue = lead.queue();
                    while !queue.handed {
                        if queue.stopped {
                            return;
                        }
                        queue = lead.handed.wait(queue).unwrap_or_else(|p| p.into_inner());
                    }
                    queue.handed = false;
                }
                // A panic closes the queue (`lead_guarded`) and the guard marks the store; a store
                // already found damaged is refused by the guard before the round.
                let led = guard.run(|| {
                    shared.lead_guarded(true);
                    Ok(())
                });
                if let Err(err) = led {
                    shared.refuse_queued(&err);
                }
            })
            .map_err(|err| StoreError::storage("cannot start the round thread", err))?;
        Ok(RoundThread { handle })
    }

    fn id(&self) -> ThreadId {
        self.handle.thread().id()
    }

    /// Stops the thread once it has led every round handed to it. Not from the thread itself
    /// (an answer that drops the last handle on the store): it then stops on its own.
    pub(super) fn stop(self, shared: &Shared) {
        {
            let mut queue = shared.leadership.queue();
            queue.stopped = true;
        }
        shared.leadership.handed.notify_all();
        if std::thread::current().id() != self.id() {
            let _ = self.handle.join();
        }
    }
}

impl Shared {
    /// Queues a job; leads its round at once when none is running (on this thread, `answer`
    /// called before this returns), and otherwise returns at once: the running round's leader
    /// answers it.
    pub(super) fn submit(&self, max_id: u64, apply: Apply, answer: Answer) {
        let lead_now = {
            let mut queue = self.leadership.queue();
            if queue.closed {
                drop(queue);
                answer.send(Err(closed()));
                return;
            }
            queue.jobs.push(Job {
                apply,
                max_id,
                answer,
            });
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead_now {
            self.lead_guarded(false);
        }
    }

    /// Leads rounds until the queue is empty (`round_thread`) or hands the lead over to the
    /// round thread after one (a writer's thread). A panic in a round closes the queue, answers
    /// every queued writer, and goes on up to the caller's guard.
    pub(super) fn lead_guarded(&self, round_thread: bool) {
        let led = catch_engine_panic(|| while self.lead_round(round_thread) {});
        if let Err(panic) = led {
            self.refuse_queued(&StoreError::engine(format!(
                "a commit round panicked: {panic}"
            )));
            std::panic::resume_unwind(Box::new(panic));
        }
    }

    /// Closes the queue and answers every queued writer with `err`: no round will run them.
    fn refuse_queued(&self, err: &StoreError) {
        let queued = {
            let mut queue = self.leadership.queue();
            queue.closed = true;
            std::mem::take(&mut queue.jobs)
        };
        reply_all(queued, &Err(err.clone()));
    }

    /// One round as leader, then the lead passed on (true: lead the next round too).
    fn lead_round(&self, round_thread: bool) -> bool {
        let batch = {
            // Counted before the answers, so an answered writer sees its round counted.
            let mut queue = self.leadership.queue();
            if !queue.jobs.is_empty() {
                queue.rounds += 1;
                queue.round_jobs += queue.jobs.len() as u64;
            }
            std::mem::take(&mut queue.jobs)
        };
        if batch.is_empty() {
            // Handed a checkpoint, with no writer queued meanwhile.
            self.checkpoint_if_due();
            return self.pass_lead(self.leadership.queue(), round_thread);
        }
        let prepared = self.prepare_write(Some(&mut self.open()));
        match prepared {
            Ok(()) => round::commit_batch(self, batch),
            Err(err) => reply_all(batch, &Err(err)),
        }
        // After the answers: a checkpoint delays the next round, never this one's writers. On a
        // writer's thread it would delay that writer all the same (its caller sends the answer
        // once this returns), and hold the thread: the round thread checkpoints instead.
        if !round_thread && self.checkpoint_due() && !self.hand_lead(self.leadership.queue()) {
            return false;
        }
        self.checkpoint_if_due();
        self.pass_lead(self.leadership.queue(), round_thread)
    }

    /// Ends a turn as leader (the caller holds `queue`): steps down when nothing is queued,
    /// and otherwise hands the lead to the round thread; true when the caller must lead the next
    /// round itself (it is the round thread, or that has stopped).
    fn pass_lead(&self, mut queue: MutexGuard<'_, Queue>, round_thread: bool) -> bool {
        if queue.jobs.is_empty() {
            queue.leading = false;
            return false;
        }
        round_thread || self.hand_lead(queue)
    }

    /// Hands the lead to the round thread (false: the caller's turn is over), or keeps it when
    /// that has stopped (true). The caller holds `queue`.
    fn hand_lead(&self, mut queue: MutexGuard<'_, Queue>) -> bool {
        if queue.stopped {
            return true;
        }
        queue.handed = true;
        drop(queue);
        self.leadership.handed.notify_one();
        false
    }

    /// Takes the lead when no round is running (false: one is, and its leader does the work).
    pub(super) fn take_lead(&self) -> bool {
        !std::mem::replace(&mut self.leadership.queue().leading, true)
    }

    /// Gives up a lead taken with [`Shared::take_lead`], leading what queued meanwhile.
    pub(super) fn give_up_lead(&self) {
        if self.pass_lead(self.leadership.queue(), false) {
            self.lead_guarded(false);
        }
    }
}

/// Answers every job of a round with its outcome.
pub(super) fn reply_all(batch: Vec<Job>, result: &Result<()>) {
    for job in batch {
        job.answer.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use eventdbx_core::write::{WriteBody, WriteKind};
    use serde_json::json;

    use crate::redb_store::{wal, RedbStore};
    use crate::{Durability, EventStore, WriteRequest};

    const T: &str = "default";

    /// Only a safety net against a hang, far beyond what a loaded machine needs.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn create(id: &str) -> WriteRequest {
        let body = WriteBody::Payload(json!({ "id": id }));
        WriteRequest::new(WriteKind::Create, "order", id, "created", body)
    }

    /// Whether a record of the log at `path` mentions `id`.
    fn logged(path: &std::path::Path, id: &str) -> bool {
        let scan = wal::scan(path, 0).expect("scan");
        scan.records
            .iter()
            .any(|(_, body)| body.windows(id.len()).any(|w| w == id.as_bytes()))
    }

    #[test]
    fn a_write_queued_behind_a_running_round_returns_at_once_and_is_answered_after_its_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let store = Arc::new(RedbStore::open(&path, Durability::Fsync).expect("open"));
        store.write(T, create("o-0")).expect("first write");
        // Holding the log stalls the next round's leader before its append.
        let held = store.committer.shared.log().expect("a durable store logs");
        let leader = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.write(T, create("o-1")).map(|o| o.event.version))
        };
        while !store.commit_running() {
            std::thread::yield_now();
        }
        let (returned, has_returned) = mpsc::channel();
        let (answer, answered) = mpsc::channel();
        let queued = {
            let store = Arc::clone(&store);
            let log = wal::path_for(&path);
            std::thread::spawn(move || {
                let done = Box::new(move |outcome: crate::Result<crate::WriteOutcome>| {
                    let in_log = logged(&log, "o-2");
                    let _ = answer.send((outcome.map(|o| o.event.version), in_log));
                });
                store.write_then(T, create("o-2"), done);
                let _ = returned.send(());
            })
        };
        has_returned
            .recv_timeout(PATIENCE)
            .expect("write_then returns while a round is running, without waiting for it");
        assert!(
            answered.try_recv().is_err(),
            "answered while its round could not have run"
        );
        // Its aggregate's lock is held until it is answered: the next write to it would wait.
        assert!(store.write_waits(T, "order", "o-2"));
        drop(held);
        let (version, in_log) = answered.recv().expect("answered");
        queued.join().expect("queued writer");
        assert!(!store.write_waits(T, "order", "o-2"));
        assert_eq!(version.expect("the write succeeds"), 1);
        assert!(in_log, "answered before its record was appended and synced");
        assert_eq!(leader.join().expect("leader").expect("write"), 1);
        // Read-your-writes from any thread once answered.
        let got = store.get(T, "order", "o-2").expect("get");
        assert_eq!(got.map(|a| a.version), Some(1));
        let (rounds, jobs) = store.committer.rounds();
        assert_eq!(jobs, 3, "{rounds} rounds");
    }

    #[test]
    fn a_durable_store_writes_its_log_directly_only_when_told_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!crate::EmbeddedOptions::default().wal_direct_io);
        for (name, direct) in [("d.redb", true), ("b.redb", false)] {
            let options = crate::EmbeddedOptions {
                wal_direct_io: direct,
                ..crate::EmbeddedOptions::default()
            };
            let path = dir.path().join(name);
            let store =
                RedbStore::open_with_options(&path, Durability::Fsync, 0, options).expect("open");
            store.write(T, create("o-1")).expect("write");
            let log = store.committer.shared.log().expect("a durable store logs");
            assert_eq!(
                log.writes_directly(),
                direct,
                "wal_direct_io = {direct} (the temporary directory must take O_DIRECT writes)"
            );
            drop(log);
            assert!(logged(&wal::path_for(&path), "o-1"));
        }
    }
}
