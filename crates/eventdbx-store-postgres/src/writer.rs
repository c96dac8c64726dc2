//! A write from its request to its outcome, without a thread waiting for its commit
//! ([`write_then`]; [`write`] is the same and a wait for the answer).
//!
//! The common case, a plain write of an aggregate this process wrote last, takes its stripe,
//! prepares on the caller's thread from the remembered record and queues for its group; the
//! committer that commits the group then remembers the new record, releases the stripe and calls
//! the caller's `done` itself. Everything else (the stripe held by another write, a read
//! first, a write committed alone, a lost race prepared again) continues as a task on the
//! engine's runtime, which awaits each round trip instead of blocking a thread on it, and
//! prepares on one of the runtime's blocking threads, never on its own: the server's payload
//! check may read the store, and a read waits for a task of that runtime. Each
//! write's steps, checks and retries are the same on either path (`write.rs`).

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use eventdbx_core::merkle;
use eventdbx_core::snowflake::SnowflakeGenerator;
use eventdbx_core::CoreError;
use eventdbx_store::{Result, StoreError, WriteDone, WriteOutcome, WriteRequest};
use tokio::sync::OwnedMutexGuard;

use crate::group::{GroupCommit, Queued};
use crate::positions::Positions;
use crate::write::{
    commit, prepare, read_for_write, Committed, Plan, Stored, Stripe, MAX_ATTEMPTS,
};
use crate::PostgresStore;

/// What a write needs of the store, owned (cheap clones): a write can then finish on the
/// engine's runtime after the caller has returned.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) pool: Pool,
    pub(crate) group: GroupCommit,
    pub(crate) ids: Arc<Mutex<SnowflakeGenerator>>,
    pub(crate) positions: Arc<Positions>,
}

/// [`eventdbx_store::EventStore::write`]: [`write_then`], then waits for its answer.
pub(crate) fn write(
    store: &PostgresStore,
    tenant: &str,
    request: WriteRequest,
) -> Result<WriteOutcome> {
    store.off_engine()?;
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    write_then(
        store,
        tenant,
        request,
        Box::new(move |outcome| {
            let _ = answer.send(outcome);
        }),
    );
    answered
        .recv()
        .map_err(|_| StoreError::engine("the write ended without an answer"))?
}

/// [`eventdbx_store::EventStore::write_then`]: one round trip (the group's commit) when this
/// process wrote the aggregate last and still remembers its record, two otherwise (read,
/// commit); `done` is called by whichever thread learns the outcome.
pub(crate) fn write_then(
    store: &PostgresStore,
    tenant: &str,
    request: WriteRequest,
    done: WriteDone,
) {
    if let Err(err) = store.writable() {
        return done(Err(err));
    }
    let lock = store.stripe_lock(tenant, &request.aggregate_type, &request.aggregate_id);
    let write = Write {
        writer: store.writer(),
        tenant: tenant.to_owned(),
        request,
    };
    match Arc::clone(&lock).try_lock_owned() {
        Ok(stripe) => write.start(stripe, done),
        Err(_) => {
            let handle = write.writer.handle.clone();
            handle.spawn(async move {
                let stripe = lock.lock_owned().await;
                // Never on the runtime's thread: the payload check may read the store, which
                // waits for a task of this runtime.
                drop(tokio::task::spawn_blocking(move || {
                    write.start(stripe, done)
                }));
            });
        }
    }
}

/// A write under way.
struct Write {
    writer: Writer,
    tenant: String,
    request: WriteRequest,
}

impl Write {
    /// With its stripe held: a plain write prepared from the remembered record goes to its
    /// group, and the committer finishes it; anything else finishes on the engine's runtime.
    fn start(self, mut stripe: OwnedMutexGuard<Stripe>, done: WriteDone) {
        // A write with an idempotency key reads the key first: its first result decides.
        let (remembered, unreferenced) = match self.request.idempotency {
            Some(_) => (None, false),
            None => stripe.recall(&self.tenant, self.aggregate_type(), self.aggregate_id()),
        };
        let Some(stored) = remembered else {
            return self.finish_later(stripe, None, MAX_ATTEMPTS, done);
        };
        match prepare(&self.writer.ids, &self.tenant, &self.request, Some(stored)) {
            Ok((mut plan, outcome)) if GroupCommit::takes(&plan) => {
                plan.unreferenced = unreferenced;
                self.in_group(stripe, plan, outcome, done);
            }
            Ok(prepared) => self.finish_later(stripe, Some(prepared), MAX_ATTEMPTS, done),
            // A refusal decided on a remembered record (another server may have changed the
            // aggregate since) is decided again on the stored one.
            Err(_) => {
                stripe.forget(&self.tenant, self.aggregate_type(), self.aggregate_id());
                self.finish_later(stripe, None, MAX_ATTEMPTS - 1, done);
            }
        }
    }

    /// Queues `plan` for its group; the committer answers `done`, or hands a lost race to a
    /// task that prepares it again from the stored record.
    fn in_group(
        self,
        mut stripe: OwnedMutexGuard<Stripe>,
        plan: Plan,
        outcome: WriteOutcome,
        done: WriteDone,
    ) {
        let group = self.writer.group.clone();
        group.queue(Queued::then(
            plan,
            Box::new(move |committed| match committed {
                Ok(Some(committed)) => {
                    self.settle(stripe, committed);
                    done(Ok(outcome));
                }
                Ok(None) => {
                    stripe.forget(&self.tenant, self.aggregate_type(), self.aggregate_id());
                    self.finish_later(stripe, None, MAX_ATTEMPTS - 1, done);
                }
                Err(err) => done(Err(err)),
            }),
        ));
    }

    /// Runs [`Write::finish`] as a task of the engine's runtime and answers `done`.
    fn finish_later(
        self,
        stripe: OwnedMutexGuard<Stripe>,
        prepared: Option<(Plan, WriteOutcome)>,
        attempts: usize,
        done: WriteDone,
    ) {
        let handle = self.writer.handle.clone();
        handle.spawn(async move {
            done(self.finish(stripe, prepared, attempts).await);
        });
    }

    /// The write's remaining attempts, each prepared from the stored record (after `prepared`,
    /// when the first one is ready), awaiting each round trip.
    async fn finish(
        mut self,
        mut stripe: OwnedMutexGuard<Stripe>,
        mut prepared: Option<(Plan, WriteOutcome)>,
        attempts: usize,
    ) -> Result<WriteOutcome> {
        for _ in 0..attempts {
            let (plan, outcome) = match prepared.take() {
                Some(prepared) => prepared,
                None => {
                    let key = self.request.idempotency.as_ref().map(|i| i.key.clone());
                    let (replay, stored) = read_for_write(
                        self.writer.pool.clone(),
                        self.tenant.clone(),
                        self.aggregate_type().to_owned(),
                        self.aggregate_id().to_owned(),
                        key,
                    )
                    .await?;
                    if let (Some(record), Some(idempotency)) = (replay, &self.request.idempotency) {
                        if record.digest != merkle::to_hex(&idempotency.digest) {
                            return Err(
                                CoreError::IdempotencyConflict(idempotency.key.clone()).into()
                            );
                        }
                        return Ok(WriteOutcome {
                            event: record.event,
                            aggregate: record.aggregate.aggregate(),
                            snapshot: None,
                            replayed: true,
                        });
                    }
                    let (write, prepared) = self.prepare_aside(stored).await?;
                    self = write;
                    prepared?
                }
            };
            let committed = if GroupCommit::takes(&plan) {
                self.writer.group.commit(plan).await?
            } else {
                commit(self.writer.pool.clone(), plan).await?
            };
            match committed {
                Some(committed) => {
                    self.settle(stripe, committed);
                    return Ok(outcome);
                }
                None => stripe.forget(&self.tenant, self.aggregate_type(), self.aggregate_id()),
            }
        }
        Err(StoreError::engine(format!(
            "{}:{} kept changing under the write (retry later)",
            self.aggregate_type(),
            self.aggregate_id()
        )))
    }

    /// Prepares the write on a blocking thread of the engine's runtime, never on the runtime's
    /// own thread: the payload check may read the store (a reference's target), and such a read
    /// waits for a task of this runtime.
    async fn prepare_aside(self, stored: Stored) -> Result<(Self, Result<(Plan, WriteOutcome)>)> {
        tokio::task::spawn_blocking(move || {
            let prepared = prepare(&self.writer.ids, &self.tenant, &self.request, stored);
            (self, prepared)
        })
        .await
        .map_err(|_| StoreError::engine("a write's preparation ended without an answer"))
    }

    /// After the commit: remembers the record for the aggregate's next write, releases the
    /// stripe, and has the events numbered.
    fn settle(&self, mut stripe: OwnedMutexGuard<Stripe>, committed: Committed) {
        stripe.remember(&self.tenant, committed);
        drop(stripe);
        self.writer.positions.committed();
    }

    fn aggregate_type(&self) -> &str {
        &self.request.aggregate_type
    }

    fn aggregate_id(&self) -> &str {
        &self.request.aggregate_id
    }
}
