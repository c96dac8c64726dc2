//! Event positions on PostgreSQL (`docs/subscriptions.md`, "Positions"): every committed event
//! gets its tenant's next position after it commits, never before, so no reader can be shown a
//! position that a slower transaction later fills in below it.
//!
//! A write only queues its events (a trigger on `events` adds a row to `position_queue` in the
//! write's own transaction). A *round*, `eventdbx_assign_positions` (migrations 4 and 7 in
//! `schema.rs`), numbers the queue rows that have committed after the tenant's head and raises
//! the head, in one transaction; rounds run one at a time across every server sharing the
//! database (each locks the `position_sequencer` row). A transaction that commits late is simply
//! numbered by a later round, above every position shown before. Readers only read numbered
//! events. Neither advisory locks nor LISTEN/NOTIFY are involved.
//!
//! Who runs rounds:
//! - a task of each engine ([`follow`]), woken by this engine's commits (so its own commits are
//!   numbered at once, and its commit listeners hear the new head) and at least every
//!   [`POLL`], which also numbers commits of a server that died before its round and reports
//!   heads raised by other servers' rounds to this engine's listeners;
//! - a reader ([`events_after`], [`head`]) that finds commits of this engine not yet covered by
//!   a finished round: what this process acknowledged is readable by its next read;
//! - the engine at open and at close;
//! - [`of_events`] (the positions of an event page) when the page holds an event no round has
//!   numbered yet, wherever it was committed: the page is answered with every position, never
//!   with a hole a reader could take for "no position".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use eventdbx_core::merkle::Event;
use eventdbx_store::{CommitListener, EventSelector, PositionPage, PositionedEvent, Result};

use crate::records::decode;
use crate::{col, db, pool_error, signed, unsigned, Cached, PostgresStore};

/// The longest time before a commit of another server (or one that died before numbering it)
/// gets its position and this engine's listeners hear of it.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// The shortest time between the starts of two of the follower's rounds. A round is a
/// transaction with its own WAL flush whatever it numbers: under load, rounds back to back cost
/// the database about a third of what the writes themselves cost, while rounds at most this
/// often number more events each for the same price. A commit in a quiet moment is still numbered
/// at once; readers that need their own commits numbered run a round themselves ([`settle`]).
pub(crate) const PACE: Duration = Duration::from_millis(10);

/// Queue rows one round numbers at most (a round that takes this many runs again).
const ROUND_LIMIT: i32 = 10_000;

/// Events this engine's rounds number between two vacuums of `position_queue` by its follower
/// ([`vacuum_if_due`]).
pub(crate) const VACUUM_EVERY: u64 = 20_000;

/// The follower's vacuum of the queue: `SKIP_LOCKED`, so a server whose neighbour is vacuuming
/// does not wait for it; `TRUNCATE false`, so it never takes the lock that would hold up the
/// writers queueing their events.
const VACUUM: &str = "VACUUM (SKIP_LOCKED, TRUNCATE false) position_queue";

/// How many rows one [`events_after`] call examines at most, as in the embedded engine, so a
/// selector that matches nothing does not read the whole history in one call.
const MAX_EXAMINED: usize = 10_000;

/// Rows read per round trip by [`events_after`].
const BATCH: i64 = 512;

const ASSIGN: &str =
    "SELECT advanced_tenant, new_head, assigned FROM eventdbx_assign_positions($1)";

/// What the engine knows about its own commits and who listens.
#[derive(Default)]
pub(crate) struct Positions {
    /// Commits of this engine that queued events, counted once each has committed.
    committed: AtomicU64,
    /// The value of `committed` when the latest finished round began: every commit counted up
    /// to it has its positions.
    covered: AtomicU64,
    /// Events this engine's rounds numbered since its follower last vacuumed the queue.
    numbered: AtomicU64,
    wake: tokio::sync::Notify,
    listeners: RwLock<Vec<CommitListener>>,
    /// The last head each listener heard per tenant, so a head is reported once.
    reported: Mutex<HashMap<String, u64>>,
}

impl Positions {
    /// Counts a commit that queued events and wakes the follower to number them.
    pub(crate) fn committed(&self) {
        self.committed.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// A bookkeeping whose rounds have numbered `events` since the last vacuum.
    #[cfg(test)]
    pub(crate) fn having_numbered(events: u64) -> Self {
        let positions = Positions::default();
        positions.numbered.store(events, Ordering::Release);
        positions
    }

    pub(crate) fn listen(&self, listener: CommitListener) {
        self.listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    fn listening(&self) -> bool {
        !self
            .listeners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }

    /// Tells the listeners about every head above what they heard.
    fn report(&self, heads: Vec<(String, u64)>) {
        if heads.is_empty() || !self.listening() {
            return;
        }
        let raised: Vec<(String, u64)> = {
            let mut reported = self
                .reported
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            heads
                .into_iter()
                .filter(|(tenant, head)| {
                    let heard = reported.entry(tenant.clone()).or_insert(0);
                    let higher = *head > *heard;
                    *heard = (*heard).max(*head);
                    higher
                })
                .collect()
        };
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (tenant, head) in &raised {
            for listener in listeners.iter() {
                listener(tenant, *head);
            }
        }
    }
}

/// Runs rounds until the queue holds nothing committed, then records what they covered.
async fn round(pool: &Pool, positions: &Positions) -> Result<()> {
    let target = positions.committed.load(Ordering::Acquire);
    let client = pool.get().await.map_err(pool_error)?;
    loop {
        let rows = client
            .query_cached(ASSIGN, &[&ROUND_LIMIT])
            .await
            .map_err(db)?;
        let mut assigned = 0;
        let mut heads = Vec::with_capacity(rows.len());
        for row in &rows {
            heads.push((col::<String>(row, 0)?, unsigned(col(row, 1)?)));
            assigned += col::<i64>(row, 2)?;
        }
        positions.report(heads);
        positions
            .numbered
            .fetch_add(u64::try_from(assigned).unwrap_or(0), Ordering::AcqRel);
        if assigned < i64::from(ROUND_LIMIT) {
            break;
        }
    }
    positions.covered.fetch_max(target, Ordering::AcqRel);
    Ok(())
}

/// Vacuums `position_queue` once this engine's rounds have numbered [`VACUUM_EVERY`] events since
/// the last time; `Ok(true)` when it did (or another server's vacuum was running). Every event
/// passes through the queue, so it fills with dead rows that autovacuum removes at most once a
/// minute, and each round walks the primary key over all of them to find the first live row:
/// 160,000 dead rows made a round of 16 events cost three times its CPU (`docs/storage.md`,
/// "PostgreSQL engine: performance"). A failed vacuum (an engine without `VACUUM`) is not
/// retried before as many events again.
pub(crate) async fn vacuum_if_due(pool: &Pool, positions: &Positions) -> Result<bool> {
    let numbered = positions.numbered.load(Ordering::Acquire);
    if numbered < VACUUM_EVERY {
        return Ok(false);
    }
    positions.numbered.fetch_sub(numbered, Ordering::AcqRel);
    let client = pool.get().await.map_err(pool_error)?;
    client.batch_execute(VACUUM).await.map_err(db)?;
    Ok(true)
}

/// Reports the heads other servers' rounds raised.
async fn poll_heads(pool: &Pool, positions: &Positions) -> Result<()> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query_cached("SELECT tenant, head FROM position_heads", &[])
        .await
        .map_err(db)?;
    let heads = rows
        .iter()
        .map(|row| Ok((col::<String>(row, 0)?, unsigned(col(row, 1)?))))
        .collect::<Result<Vec<_>>>()?;
    positions.report(heads);
    Ok(())
}

/// Numbers the commits this engine acknowledged that no finished round covers yet (`always`:
/// runs a round anyway, for commits of other processes).
pub(crate) fn settle(store: &PostgresStore, always: bool) -> Result<()> {
    let positions = store.positions();
    let behind =
        positions.covered.load(Ordering::Acquire) < positions.committed.load(Ordering::Acquire);
    if !(always || behind) {
        return Ok(());
    }
    let (pool, positions) = (store.pool(), Arc::clone(&store.positions));
    store.run(async move { round(&pool, &positions).await })
}

/// Starts the engine's follower on its runtime: a round after each wake-up by a local commit
/// (at most one per [`PACE`]) and every [`POLL`] at the latest; failures (the database away)
/// are retried at the next turn.
pub(crate) fn follow(handle: &tokio::runtime::Handle, pool: Pool, positions: Arc<Positions>) {
    handle.spawn(async move {
        let mut polled = tokio::time::Instant::now();
        loop {
            let _ = tokio::time::timeout(POLL, positions.wake.notified()).await;
            let began = tokio::time::Instant::now();
            let _ = round(&pool, &positions).await;
            let _ = vacuum_if_due(&pool, &positions).await;
            // Commits during the pause leave their wake-up stored: the next round takes them.
            tokio::time::sleep_until(began + PACE).await;
            if positions.listening() && polled.elapsed() >= POLL {
                polled = tokio::time::Instant::now();
                let _ = poll_heads(&pool, &positions).await;
            }
        }
    });
}

/// The tenant's head as stored (0 for none).
fn stored_head(store: &PostgresStore, tenant: &str) -> Result<u64> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt_cached(
                "SELECT head FROM position_heads WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        row.map_or(Ok(0), |row| Ok(unsigned(col(&row, 0)?)))
    })
}

/// [`eventdbx_store::EventStore::head_position`].
pub(crate) fn head(store: &PostgresStore, tenant: &str) -> Result<u64> {
    settle(store, false)?;
    stored_head(store, tenant)
}

/// One batch of numbered events after `after`: (position, type, id, event JSON).
type Numbered = Vec<(u64, String, String, String)>;

fn numbered_after(store: &PostgresStore, tenant: &str, after: u64, limit: i64) -> Result<Numbered> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let rows = client
            .query_cached(
                "SELECT p.position, p.aggregate_type, p.aggregate_id, e.body \
                 FROM event_positions p JOIN events e ON e.tenant = p.tenant \
                 AND e.aggregate_type = p.aggregate_type AND e.aggregate_id = p.aggregate_id \
                 AND e.version = p.version \
                 WHERE p.tenant = $1 AND p.position > $2 ORDER BY p.position LIMIT $3",
                &[&tenant, &signed(after), &limit],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    unsigned(col(row, 0)?),
                    col(row, 1)?,
                    col(row, 2)?,
                    col(row, 3)?,
                ))
            })
            .collect::<Result<Numbered>>()
    })
}

/// [`eventdbx_store::EventStore::events_after`]. The head is read after the events, so it is
/// never below a position the page holds (heads only rise).
pub(crate) fn events_after(
    store: &PostgresStore,
    tenant: &str,
    after: u64,
    selector: &EventSelector,
    take: usize,
) -> Result<PositionPage> {
    settle(store, false)?;
    let mut page = PositionPage {
        events: Vec::new(),
        last_examined: after,
        head: 0,
    };
    let mut examined = 0;
    'pages: while take > 0 && examined < MAX_EXAMINED {
        let limit = BATCH.min(i64::try_from(MAX_EXAMINED - examined).unwrap_or(BATCH));
        let rows = numbered_after(store, tenant, page.last_examined, limit)?;
        let exhausted = (rows.len() as i64) < limit;
        for (position, aggregate_type, aggregate_id, body) in rows {
            examined += 1;
            page.last_examined = position;
            if !selector.takes_aggregate(&aggregate_type, &aggregate_id) {
                continue;
            }
            let event: Event = decode(&body)?;
            if selector.takes(&event) {
                page.events.push(PositionedEvent { position, event });
                if page.events.len() >= take {
                    break 'pages;
                }
            }
        }
        if exhausted {
            break;
        }
    }
    page.head = stored_head(store, tenant)?;
    Ok(page)
}

/// The position of each of `events` in `tenant` (`None` where it has none), in one query
/// through `event_positions_by_event` (migration 5).
fn lookup(store: &PostgresStore, tenant: &str, events: &[Event]) -> Result<Vec<Option<u64>>> {
    let tenant = tenant.to_owned();
    let types: Vec<String> = events.iter().map(|e| e.aggregate_type.clone()).collect();
    let ids: Vec<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
    let versions: Vec<i64> = events.iter().map(|e| signed(e.version)).collect();
    let (pool, count) = (store.pool(), events.len());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let rows = client
            .query_cached(
                "SELECT k.n, p.position \
                 FROM unnest($2::text[], $3::text[], $4::bigint[]) \
                      WITH ORDINALITY AS k(aggregate_type, aggregate_id, version, n) \
                 JOIN event_positions p ON p.tenant = $1 \
                 AND p.aggregate_type = k.aggregate_type COLLATE \"C\" \
                 AND p.aggregate_id = k.aggregate_id COLLATE \"C\" AND p.version = k.version",
                &[&tenant, &types, &ids, &versions],
            )
            .await
            .map_err(db)?;
        let mut positions = vec![None; count];
        for row in &rows {
            let index = usize::try_from(col::<i64>(row, 0)? - 1).unwrap_or(usize::MAX);
            if let Some(slot) = positions.get_mut(index) {
                *slot = Some(unsigned(col(row, 1)?));
            }
        }
        Ok(positions)
    })
}

/// [`eventdbx_store::EventStore::event_positions`]. An event the page was read with has
/// committed, but its round may not have run yet (a commit of another server, or of this one
/// whose follower has not turned): then one round, which numbers every committed event, and the
/// lookup again. So a page never goes out with some positions missing while its events wait for
/// theirs; `None` remains only for an event `tenant` does not hold.
pub(crate) fn of_events(
    store: &PostgresStore,
    tenant: &str,
    events: &[Event],
) -> Result<Vec<Option<u64>>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let positions = lookup(store, tenant, events)?;
    if positions.iter().all(Option::is_some) {
        return Ok(positions);
    }
    settle(store, true)?;
    lookup(store, tenant, events)
}
