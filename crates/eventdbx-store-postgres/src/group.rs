//! Group commit: plain writes of different aggregates that are ready at the same time are
//! committed by one statement, one transaction, one WAL flush and one round trip, instead of
//! one each (`docs/storage.md`, "PostgreSQL engine: performance").
//!
//! A *plain* write stores its record, its event and its usage, and clears the aggregate's
//! reference index when it was asked to keep it and found no reference (unless this process's
//! last commit of it left none: `Plan::unreferenced`): no quota to check, no snapshot, no
//! idempotency result, no reference to add, no plugin job. Those others commit alone through
//! `eventdbx_write` as before (`write.rs`), which is what keeps their checks (the quota locks,
//! the key's first result) exactly as they were.
//!
//! A few committer tasks ([`COMMITTERS`]) share one queue; each takes everything queued when it is
//! free (at most [`MAX_GROUP`]) and sends it as one [`statement`]. So a lone write goes at once,
//! and writes only gather while every committer is busy: the group's size follows the load, with no
//! timer. The statement decides each write on its own: a write whose record changed since it was
//! read (its revision) updates nothing and stores nothing, and only the writes whose record was
//! written insert their events, so one lost race never fails the others; its writer prepares it
//! again from the stored state, as a lone lost race is. Any error of the statement as a whole (a
//! deadlock with another server's group, a key taken that no revision check foresaw) rolled it all
//! back, so each write of the group is then committed alone, which decides it exactly as before.
//! Only a session lost while the statement ran leaves every write of the group with an unknown
//! outcome, as it leaves a lone commit's.
//!
//! Writers of one aggregate in one process are serialised by their stripe lock, held through the
//! commit, so no group holds two writes of one aggregate. Each committer counts its groups' usage
//! on a usage row of its own, so concurrent groups of one server never wait for each other's
//! usage row.

use std::sync::Arc;

use deadpool_postgres::Pool;
use eventdbx_store::{Result, StoreError};
use tokio::sync::{mpsc, Mutex};

use crate::write::{commit_alone, Committed, Plan, USAGE_SHARDS};
use crate::{col, commit_error, db, pool_error, signed};

/// Group statements in flight at once. More gives smaller groups, so more transactions and more
/// database CPU per write (at 16 writers, 4 committers cost the database about a third more per
/// write than 2); one leaves the database idle while its group's WAL flush runs.
pub(crate) const COMMITTERS: usize = 2;

/// The most writes one statement commits.
pub(crate) const MAX_GROUP: usize = 64;

/// The group's statement, one transaction, prepared on the committer's session ([`SESSION`]),
/// which spares the database a function call around it (about 12% of its CPU per write,
/// `docs/benchmarks.md`). Each write is a row of the arrays, numbered from 1; the result is the
/// number of every write that was stored. Every record goes through one insert that finds its
/// row by the primary key, the conflict's arbiter, whatever the planner thinks of the other
/// indexes (`docs/storage.md`, "Records found by the primary key"): a create inserts its record
/// unless it exists; an append's record conflicts with the stored one, which is updated when its
/// revision is still the one read. Only the writes that did store their record insert their
/// event, clear references and count usage (one row per tenant, on this committer's shard).
///
/// An append carries its revision negated into the insert, so that the update can compare it;
/// an append whose record was no longer there would insert it, with that negative revision, and
/// the statement then fails (a division by zero) and rolls back: its writes are committed alone,
/// which refuses it. [`Shape::Plain`] leaves out the references' delete, which a group with no
/// reference entry to clear never uses: one step less for the database to set up each time.
pub(crate) fn statement(shape: Shape) -> String {
    [
        WRITES,
        RECORDS,
        STORED,
        if shape == Shape::Clearing {
            UNLINKED
        } else {
            ""
        },
        COUNTED,
    ]
    .concat()
}

/// Which [`statement`] a group needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Some write clears its aggregate's reference entries.
    Clearing,
    /// No write has reference entries to clear.
    Plain,
}

impl Shape {
    /// The shape of `group`.
    pub(crate) fn of(group: &[&Plan]) -> Self {
        if group.iter().any(|plan| clears(plan)) {
            Shape::Clearing
        } else {
            Shape::Plain
        }
    }
}

/// Whether `plan`'s commit deletes its aggregate's reference entries: it wants none and some
/// may exist.
fn clears(plan: &Plan) -> bool {
    plan.links.is_some() && !plan.unreferenced
}

const WRITES: &str = "WITH w AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::boolean[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[],
                         $11::text[], $12::bigint[], $13::boolean[])
        WITH ORDINALITY AS w(tenant, aggregate_type, aggregate_id, revision, version, archived,
                             created_ms, updated_ms, record, event_id, event_body, bytes,
                             clear_references, k)
)";

const RECORDS: &str = ", records AS (
    INSERT INTO aggregates AS a (tenant, aggregate_type, aggregate_id, revision, version,
                                 archived, created_ms, updated_ms, record)
    SELECT tenant, aggregate_type, aggregate_id, coalesce(-revision, 1), version, archived,
           created_ms, updated_ms, record
    FROM w
    ON CONFLICT (tenant, aggregate_type, aggregate_id) DO UPDATE
    SET revision = a.revision + 1, version = EXCLUDED.version, archived = EXCLUDED.archived,
        created_ms = EXCLUDED.created_ms, updated_ms = EXCLUDED.updated_ms,
        record = EXCLUDED.record
    WHERE a.revision = -EXCLUDED.revision
    RETURNING a.tenant, a.aggregate_type, a.aggregate_id, a.revision
), written AS (
    SELECT w.* FROM w
    JOIN records AS d
      ON d.tenant = w.tenant AND d.aggregate_type = w.aggregate_type
     AND d.aggregate_id = w.aggregate_id
    WHERE 1 / (d.revision > 0)::integer = 1
)";

const STORED: &str = ", stored AS (
    INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body)
    SELECT tenant, aggregate_type, aggregate_id, version, event_id, event_body FROM written
)";

const UNLINKED: &str = ", unlinked AS (
    DELETE FROM aggregate_references r USING written
    WHERE written.clear_references AND r.tenant = written.tenant
      AND r.source_type = written.aggregate_type AND r.source_id = written.aggregate_id
)";

const COUNTED: &str = ", counted AS (
    INSERT INTO usage (tenant, shard, events, bytes)
    SELECT tenant, $14::integer, count(*), sum(bytes) FROM written GROUP BY tenant
    ON CONFLICT (tenant, shard) DO UPDATE
    SET events = usage.events + EXCLUDED.events, bytes = usage.bytes + EXCLUDED.bytes
)
SELECT k FROM written";

/// The planner settings of a committer's session, those migration 6 gives the write functions:
/// every row is found by key (nested loops probing the indexes), by a plan made once per session
/// and kept, whatever the tables grew to since. Only on connections of the committers' own
/// ([`Session`]): a pooled connection would carry them to every other query.
pub(crate) const SESSION: &str = "SET enable_seqscan = off; SET enable_hashjoin = off; \
     SET enable_mergejoin = off; SET plan_cache_mode = force_generic_plan";

/// A committer's connection, taken out of the pool for good (closed when dropped), with
/// [`SESSION`]'s settings and both shapes of the group's [`statement`] prepared. Connections the
/// pool does not count: two per server ([`COMMITTERS`]).
pub(crate) struct Session {
    client: deadpool_postgres::ClientWrapper,
    clearing: tokio_postgres::Statement,
    plain: tokio_postgres::Statement,
}

impl Session {
    async fn open(pool: &Pool) -> Result<Self> {
        let client = deadpool_postgres::Object::take(pool.get().await.map_err(pool_error)?);
        client.batch_execute(SESSION).await.map_err(db)?;
        let clearing = client
            .prepare(&statement(Shape::Clearing))
            .await
            .map_err(db)?;
        let plain = client.prepare(&statement(Shape::Plain)).await.map_err(db)?;
        Ok(Session {
            client,
            clearing,
            plain,
        })
    }

    /// The statement of `shape`, prepared.
    fn prepared(&self, shape: Shape) -> &tokio_postgres::Statement {
        match shape {
            Shape::Clearing => &self.clearing,
            Shape::Plain => &self.plain,
        }
    }
}

/// Where a queued write's outcome arrives: `Ok(None)` when it lost a race.
#[cfg(test)]
pub(crate) type Answered = std::sync::mpsc::Receiver<Result<Option<Committed>>>;

/// What a committer calls with a queued write's outcome (`Ok(None)`: it lost a race), on the
/// engine's runtime: it must not block.
pub(crate) type Answer = Box<dyn FnOnce(Result<Option<Committed>>) + Send + 'static>;

/// A write waiting for its group, and what to call with its outcome.
pub(crate) struct Queued {
    plan: Plan,
    answer: Answer,
}

impl Queued {
    /// `plan` ready to queue, and where its outcome will arrive.
    #[cfg(test)]
    pub(crate) fn new(plan: Plan) -> (Self, Answered) {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let answer: Answer = Box::new(move |outcome| {
            let _ = answer.send(outcome);
        });
        (Queued { plan, answer }, answered)
    }

    /// `plan` ready to queue; `answer` is called with its outcome.
    pub(crate) fn then(plan: Plan, answer: Answer) -> Self {
        Queued { plan, answer }
    }
}

/// The queue of plain writes and the committers that empty it.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupCommit {
    /// Starts the committers on the engine's runtime. `worker_id` spreads the usage rows of
    /// servers sharing the database over the shards.
    pub(crate) fn start(handle: &tokio::runtime::Handle, pool: &Pool, worker_id: u16) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        for committer in 0..COMMITTERS {
            let shard = (usize::from(worker_id) * COMMITTERS + committer) % USAGE_SHARDS as usize;
            handle.spawn(commit_groups(
                pool.clone(),
                Arc::clone(&waiting),
                i32::try_from(shard).unwrap_or(0),
            ));
        }
        GroupCommit { queue }
    }

    /// Whether `plan` may commit in a group (see the module's documentation).
    pub(crate) fn takes(plan: &Plan) -> bool {
        plan.quota.is_none()
            && plan.snapshot.is_none()
            && plan.idempotency.is_none()
            && plan.jobs.is_empty()
            && plan.links.as_ref().is_none_or(|links| links.is_empty())
    }

    /// Queues a plain write for the next group; its answer is called once the group's outcome
    /// is known (at once, with an error, when the store is closed). Never waits.
    pub(crate) fn queue(&self, queued: Queued) {
        if let Err(mpsc::error::SendError(queued)) = self.queue.send(queued) {
            (queued.answer)(Err(StoreError::engine("the store is closed")));
        }
    }

    /// Commits a plain write with whatever else is ready; `Ok(None)` when it lost a race
    /// (nothing of it was written). For a task on the engine's runtime.
    pub(crate) async fn commit(&self, plan: Plan) -> Result<Option<Committed>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue(Queued::then(
            plan,
            Box::new(move |outcome| {
                let _ = answer.send(outcome);
            }),
        ));
        answered
            .await
            .map_err(|_| StoreError::engine("the group commit ended without an answer"))?
    }
}

/// One committer: takes what is queued, commits it, answers, until the queue closes.
async fn commit_groups(
    pool: Pool,
    waiting: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    shard: i32,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut session = None;
    loop {
        let taken = waiting.lock().await.recv_many(&mut group, MAX_GROUP).await;
        if taken == 0 {
            return;
        }
        commit_group(&pool, &mut session, shard, &mut group).await;
    }
}

/// Answers every writer of `group` (emptying it) with the same error.
fn fail(group: &mut Vec<Queued>, err: &StoreError) {
    for queued in group.drain(..) {
        (queued.answer)(Err(err.clone()));
    }
}

/// Commits `group` (emptying it) on the committer's `session` (opened first when there is none,
/// or when its connection was lost) and answers each of its writers.
pub(crate) async fn commit_group(
    pool: &Pool,
    session: &mut Option<Session>,
    shard: i32,
    group: &mut Vec<Queued>,
) {
    if session.as_ref().is_some_and(|s| s.client.is_closed()) {
        *session = None;
    }
    let opened = match session {
        Some(session) => session,
        // Opening sends nothing of the writes: a failure there leaves nothing done.
        None => match Session::open(pool).await {
            Ok(opened) => session.insert(opened),
            Err(err) => return fail(group, &err),
        },
    };
    // The plans alone cross the round trip: an answer need not be shareable between threads.
    let plans: Vec<&Plan> = group.iter().map(|queued| &queued.plan).collect();
    let client = &opened.client;
    let written = run_group(client, opened.prepared(Shape::of(&plans)), shard, &plans)
        .await
        .map(|rows| {
            rows.iter()
                .map(|row| col::<i64>(row, 0))
                .collect::<Result<Vec<_>>>()
        });
    match written {
        // Committed, but its answer does not say which writes were stored.
        Ok(Err(err)) => fail(group, &err),
        Ok(Ok(written)) => {
            for (k, queued) in (1..).zip(group.drain(..)) {
                let outcome = written.contains(&k).then(|| Committed::of(queued.plan));
                (queued.answer)(Ok(outcome));
            }
        }
        // The statement may have committed before the answer was lost.
        Err(err) if crate::session_lost(&err) => {
            *session = None;
            fail(group, &commit_error(err));
        }
        Err(_) => {
            // Rolled back as a whole: each write is decided alone, as it would have been.
            for queued in group.drain(..) {
                let outcome = commit_alone(client, queued.plan).await;
                (queued.answer)(outcome);
            }
        }
    }
}

/// Runs the group's [`statement`] (prepared: `statement`) for `group`: a row with the number
/// (from 1) of each write that was stored.
async fn run_group(
    client: &deadpool_postgres::ClientWrapper,
    statement: &tokio_postgres::Statement,
    shard: i32,
    group: &[&Plan],
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let plans = || group.iter().copied();
    let tenants: Vec<&str> = plans().map(|p| p.tenant.as_str()).collect();
    let types: Vec<&str> = plans().map(|p| p.record.aggregate_type.as_str()).collect();
    let ids: Vec<&str> = plans().map(|p| p.record.aggregate_id.as_str()).collect();
    let revisions: Vec<Option<i64>> = plans().map(|p| p.revision).collect();
    let versions: Vec<i64> = plans().map(|p| p.columns.version).collect();
    let archived: Vec<bool> = plans().map(|p| p.columns.archived).collect();
    let created: Vec<i64> = plans().map(|p| p.columns.created_ms).collect();
    let updated: Vec<i64> = plans().map(|p| p.columns.updated_ms).collect();
    let records: Vec<&str> = plans().map(|p| p.columns.text.as_str()).collect();
    let event_ids: Vec<i64> = plans().map(|p| signed(p.event_id)).collect();
    let bodies: Vec<&str> = plans().map(|p| p.event_body.as_str()).collect();
    let bytes: Vec<i64> = plans().map(|p| signed(p.event_body.len() as u64)).collect();
    let clear: Vec<bool> = plans().map(clears).collect();
    client
        .query(
            statement,
            &[
                &tenants, &types, &ids, &revisions, &versions, &archived, &created, &updated,
                &records, &event_ids, &bodies, &bytes, &clear, &shard,
            ],
        )
        .await
}
