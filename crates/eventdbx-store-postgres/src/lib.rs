//! EventDBX storage on PostgreSQL: [`PostgresStore`] implements the `eventdbx-store` traits
//! ([`EventStore`], [`JobQueue`]) so several `dbx` servers can share one database.
//!
//! The engine only stores and fetches. Every derived value (payloads, patches, event hashes,
//! Merkle roots, filters, sort keys, cursors, the state fold of `verify`) is computed by
//! `eventdbx-core`, exactly as the embedded engine computes it, so both engines give the same
//! answers for the same events; the conformance suite of `eventdbx-store` runs against both.
//!
//! ```no_run
//! use eventdbx_store::Durability;
//! use eventdbx_store_postgres::PostgresConfig;
//!
//! let storage = eventdbx_store_postgres::open_postgres(&PostgresConfig::new(
//!     "postgres://dbx@127.0.0.1/dbx",
//!     Durability::Fsync,
//! ))
//! .unwrap();
//! storage.events.close();
//! ```
//!
//! # Concurrency
//! The traits are synchronous and the server also calls them from async tasks, so the engine
//! never blocks on a runtime: it owns a tokio runtime on a thread of its own, spawns each
//! database round trip on it and waits for the answer on a channel ([`PostgresStore::run`]). Domain work (sealing,
//! the server's payload check, filters) runs on the caller's thread between round trips, never
//! while a transaction is open. A write can also be started without waiting
//! ([`EventStore::write_then`], `writer`): the thread that learns its outcome answers it.
//!
//! A write is optimistic: it reads the aggregate (with its `revision`; or starts from the record
//! this process committed last), seals the event, then commits in one statement, its own
//! transaction, that updates the aggregate only if its revision is unchanged and inserts the
//! event under the unique `(tenant, aggregate_type, aggregate_id, version)` key: a server-side
//! function for a write alone, or one statement for a group of plain writes of other aggregates
//! that were ready at the same time (`group`). A lost race stores nothing of that write, which is
//! prepared again from the stored state: an append then gets the next version, and a write with an
//! expected version gets `version_conflict`. Writers of one aggregate in one process are also
//! serialised by a striped lock, so races only happen between servers.
//!
//! # Layout
//! `schema` (versioned migrations applied at open), `records` (stored forms), `documents` (the
//! control documents servers share), `write`, `writer` (a write from request to outcome),
//! `group` (plain writes ready together, committed as one statement), `archive` (archive,
//! restore, referrers), `read` (aggregates, events, outbox, snapshots, usage), `list` (keyset
//! paging), `verify`, `jobs` (the plugin outbox), `positions` (event positions for
//! subscriptions), `cluster` (a scratch cluster for tests, feature `test-cluster`). The tables and their indexes are described in
//! `docs/storage.md`, "PostgreSQL engine".

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::query::filter::Filter;
use eventdbx_core::snowflake::{Next, SnowflakeGenerator};
use eventdbx_store::documents::ControlDocuments;
use eventdbx_store::{
    CascadeRule, CommitListener, Durability, EventPage, EventSelector, EventStore, JobQueue,
    JobRoute, ListPage, ListQuery, OutboxPage, PositionPage, Referrer, Result, Storage,
    StorageHealth, StoreError, Usage, Visibility, WriteDone, WriteOutcome, WriteRequest,
};
use tokio::sync::OwnedMutexGuard;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

#[cfg(test)]
mod account_writes;
mod archive;
#[cfg(any(test, feature = "test-cluster"))]
pub mod cluster;
mod documents;
mod group;
#[cfg(test)]
mod group_tests;
mod jobs;
mod list;
mod positions;
#[cfg(test)]
mod positions_tests;
mod read;
mod records;
mod schema;
#[cfg(test)]
mod session_loss_tests;
mod verify;
mod write;
mod writer;
#[cfg(test)]
mod writer_tests;

pub use schema::{migrate_up, migration_status, Migration, MigrationStatus, SCHEMA_VERSION};

const LOCK_STRIPES: usize = 1024;
/// How long `/health` waits for the database to answer before calling it degraded.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach the database and how to use it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq-style URL or key/value string (`postgres://user@host:port/db`).
    pub url: String,
    /// Connections in the pool (at least 1).
    pub pool_size: usize,
    /// Every statement is cancelled by the server after this long (`None`: no limit).
    pub statement_timeout: Option<Duration>,
    /// `Fsync`: commits wait for the WAL flush (`synchronous_commit = on`). `Relaxed`: they do
    /// not (`synchronous_commit = off`); PostgreSQL flushes within three `wal_writer_delay`s.
    pub durability: Durability,
    /// The Snowflake worker id (0–1023): distinct per server sharing the database.
    pub worker_id: u16,
}

impl PostgresConfig {
    /// A configuration with a pool of 16, a 30 s statement timeout and worker id 0.
    pub fn new(url: impl Into<String>, durability: Durability) -> Self {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            statement_timeout: Some(Duration::from_secs(30)),
            durability,
            worker_id: 0,
        }
    }
}

/// Opens the database (applying any pending migration; refusing a schema newer than this
/// build's [`SCHEMA_VERSION`]) and returns both views of the engine.
pub fn open_postgres(config: &PostgresConfig) -> Result<Storage> {
    let engine = Arc::new(PostgresStore::open(config)?);
    Ok(Storage {
        events: Arc::clone(&engine) as Arc<dyn EventStore>,
        jobs: engine as Arc<dyn JobQueue>,
    })
}

/// [`open_postgres`], with the engine's control documents (`documents`): what servers sharing
/// the database keep their tokens, tenants and plugin definitions in.
pub fn open_postgres_shared(
    config: &PostgresConfig,
) -> Result<(Storage, Arc<dyn ControlDocuments>)> {
    let engine = Arc::new(PostgresStore::open(config)?);
    let storage = Storage {
        events: Arc::clone(&engine) as Arc<dyn EventStore>,
        jobs: Arc::clone(&engine) as Arc<dyn JobQueue>,
    };
    let documents: Arc<dyn ControlDocuments> = engine;
    Ok((storage, documents))
}

/// The PostgreSQL engine. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    /// Ends the thread that runs the engine's runtime (dropped with the store).
    runtime: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    handle: tokio::runtime::Handle,
    /// The thread that runs the runtime: a call waiting on it from there would wait forever.
    engine_thread: std::thread::ThreadId,
    pool: Pool,
    durability: Durability,
    closed: AtomicBool,
    locks: Vec<Arc<tokio::sync::Mutex<write::Stripe>>>,
    ids: Arc<Mutex<SnowflakeGenerator>>,
    positions: Arc<positions::Positions>,
    group: group::GroupCommit,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Whether the driver says the session is gone: the connection closed or broke, or the
/// database is shutting down, crashed or not yet accepting connections. A transaction in such a
/// session that did not reach its COMMIT is rolled back by PostgreSQL.
pub(crate) fn session_lost(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    err.is_closed()
        || err.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        })
}

/// A failed statement that cannot have committed anything: a read, BEGIN, or a statement of a
/// transaction before its COMMIT was sent (every call site awaits each statement before the
/// next, so nothing is in flight behind it). A lost session is therefore
/// [`StoreError::Unavailable`]: nothing was done, the request may be sent again; the pool
/// replaces the connection by itself. A statement that commits (COMMIT, or one outside a
/// transaction that writes) maps its error with [`commit_error`] instead.
pub(crate) fn db(err: tokio_postgres::Error) -> StoreError {
    if session_lost(&err) {
        return StoreError::unavailable("the database connection was lost (retry later)", err);
    }
    StoreError::storage("database", err)
}

/// A failed COMMIT, or a failed statement that commits by itself. When the session was lost
/// the COMMIT may have been applied before the answer was lost: the outcome is unknown, so it
/// stays `storage` (never `unavailable`, which promises that nothing was done) and says so.
/// Any other failure is [`db`]'s (a lost race or a constraint at commit rolled back).
pub(crate) fn commit_error(err: tokio_postgres::Error) -> StoreError {
    if session_lost(&err) {
        return StoreError::storage(
            "the database connection was lost during the commit: the outcome is unknown (read \
             the data back before retrying)",
            err,
        );
    }
    db(err)
}

/// No connection could be had from the pool: the database refused or did not answer, or the
/// pool stayed full. Nothing was sent, so it is [`StoreError::Unavailable`], except when the
/// database answered a connection with a refusal a retry cannot cure (a wrong password, an
/// unknown database) or the pool itself is closed or misconfigured.
pub(crate) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    use tokio_postgres::error::SqlState;
    let transient = match &err {
        PoolError::Timeout(_) => true,
        PoolError::Backend(backend) => match backend.code() {
            None => true,
            Some(code) => session_lost(backend) || *code == SqlState::TOO_MANY_CONNECTIONS,
        },
        _ => false,
    };
    if transient {
        return StoreError::unavailable("cannot reach the database (retry later)", err);
    }
    StoreError::storage("cannot get a database connection", err)
}

/// A stored record that no longer decodes.
pub(crate) fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::storage("stored record is not valid JSON", err)
}

/// Whether a statement lost a race with another writer (a unique key taken, a serialisation
/// failure or a deadlock): the transaction is rolled back and the operation prepared again.
pub(crate) fn lost_race(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    err.code().is_some_and(|code| {
        *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Statements through the connection's statement cache: after a connection's first use of a
/// statement, running it is one round trip instead of a prepare and an execute.
pub(crate) trait Cached: deadpool_postgres::GenericClient {
    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a
    where
        Self: Sized,
    {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.execute(&statement, params).await
        }
    }

    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a
    where
        Self: Sized,
    {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query(&statement, params).await
        }
    }

    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Option<Row>, tokio_postgres::Error>> + Send + 'a
    where
        Self: Sized,
    {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_opt(&statement, params).await
        }
    }

    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = std::result::Result<Row, tokio_postgres::Error>> + Send + 'a
    where
        Self: Sized,
    {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_one(&statement, params).await
        }
    }
}

impl<C: deadpool_postgres::GenericClient> Cached for C {}

/// Whether a transaction failed because it lost a race ([`lost_race`]) somewhere inside: a
/// deadlock between servers writing the same rows in different orders, or a key taken. The
/// transaction was rolled back, so the operation is prepared again.
pub(crate) fn raced(err: &StoreError) -> bool {
    match err {
        StoreError::Storage {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<tokio_postgres::Error>()
            .is_some_and(lost_race),
        _ => false,
    }
}

/// A column of a row, with a decoding failure as a storage error (never a panic).
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<T> {
    row.try_get(index).map_err(db)
}

/// A stored count or id (BIGINT) as the domain's unsigned number.
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A domain number as a BIGINT parameter (versions, ids and times stay far below 2^63).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The next Snowflake id of `ids`, waiting out a clock that went back or a full millisecond.
pub(crate) fn next_id(ids: &Mutex<SnowflakeGenerator>) -> u64 {
    loop {
        let now_ms = now_nanos() / 1_000_000;
        let next = ids.lock().unwrap_or_else(|p| p.into_inner()).next(now_ms);
        match next {
            Next::Id(id) => return id,
            Next::WaitUntil(at) => {
                std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms).max(1)));
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::engine("the store is closed")
}

impl PostgresStore {
    /// Connects, migrates and seeds the id generator above every stored id.
    pub fn open(config: &PostgresConfig) -> Result<Self> {
        // One thread runs every database task: a round trip's tasks (the caller's, a group
        // committer, the driver's connection) then hand over to each other without waking
        // another thread, which on two cores cost more than the work itself.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| StoreError::storage("cannot start the database runtime", err))?;
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|err| StoreError::storage("invalid PostgreSQL url", err))?;
        let mut options = String::new();
        if let Some(timeout) = config.statement_timeout {
            options.push_str(&format!("-c statement_timeout={}", timeout.as_millis()));
        }
        if config.durability == Durability::Relaxed {
            options.push_str(" -c synchronous_commit=off");
        }
        if !options.is_empty() {
            pg.options(options.trim());
        }
        if pg.get_application_name().is_none() {
            pg.application_name("dbx");
        }
        pg.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|err| StoreError::storage("cannot build the connection pool", err))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let engine_thread = std::thread::Builder::new()
            .name("eventdbx-postgres".to_owned())
            .spawn(move || {
                // Until the store is dropped; the runtime and its tasks go with this thread.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|err| StoreError::storage("cannot start the database thread", err))?
            .thread()
            .id();
        let store = PostgresStore {
            runtime: Mutex::new(Some(stop)),
            engine_thread,
            group: group::GroupCommit::start(&handle, &pool, config.worker_id),
            handle,
            pool,
            durability: config.durability,
            closed: AtomicBool::new(false),
            locks: (0..LOCK_STRIPES).map(|_| Arc::default()).collect(),
            ids: Arc::new(Mutex::new(SnowflakeGenerator::new(config.worker_id, 0)?)),
            positions: Arc::default(),
        };
        let pool = store.pool.clone();
        let floor = store.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            schema::migrate(&mut client).await?;
            schema::highest_id(&client).await
        })?;
        *store.ids.lock().unwrap_or_else(|p| p.into_inner()) =
            SnowflakeGenerator::new(config.worker_id, floor)?;
        // Events a server committed and did not live to number get their positions now.
        positions::settle(&store, true)?;
        positions::follow(&store.handle, store.pool(), Arc::clone(&store.positions));
        Ok(store)
    }

    /// Runs one database task on the engine's runtime and waits for it on this thread. Safe
    /// from inside another runtime's task: it blocks that thread as a file read would, and
    /// never enters a runtime itself.
    pub(crate) fn run<T, F>(&self, task: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.off_engine()?;
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = answer.send(task.await);
        });
        answered
            .recv()
            .map_err(|_| StoreError::engine("the database task ended without an answer"))?
    }

    /// Refuses a call that would wait on the engine's own thread (a `write_then` answer that
    /// calls the store again runs there): it would wait for a task only that thread can run.
    pub(crate) fn off_engine(&self) -> Result<()> {
        if std::thread::current().id() == self.engine_thread {
            return Err(StoreError::engine(
                "a store call from the engine's own thread: a write's answer must not wait on \
                 the store",
            ));
        }
        Ok(())
    }

    /// A pool handle for a task.
    pub(crate) fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The engine's position bookkeeping (commits to number, listeners).
    pub(crate) fn positions(&self) -> &positions::Positions {
        &self.positions
    }

    /// Refuses writes once the store is closed.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(())
    }

    fn stripe(tenant: &str, aggregate_type: &str, aggregate_id: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        (tenant, aggregate_type, aggregate_id).hash(&mut hasher);
        (hasher.finish() % LOCK_STRIPES as u64) as usize
    }

    /// The in-process lock of one aggregate's stripe: fewer lost races between writers of one
    /// server. A write holds it through its commit, released by whichever thread finishes it.
    pub(crate) fn stripe_lock(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Arc<tokio::sync::Mutex<write::Stripe>> {
        Arc::clone(&self.locks[Self::stripe(tenant, aggregate_type, aggregate_id)])
    }

    /// Takes a stripe on this thread: at once when it is free, else waiting for it on the
    /// engine's runtime (never entering a runtime here).
    fn take_stripe(&self, stripe: usize) -> Result<OwnedMutexGuard<write::Stripe>> {
        let lock = Arc::clone(&self.locks[stripe]);
        match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => Ok(guard),
            Err(_) => self.run(async move { Ok(lock.lock_owned().await) }),
        }
    }

    /// Locks one aggregate's stripe on this thread (see [`PostgresStore::stripe_lock`]).
    pub(crate) fn lock(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<OwnedMutexGuard<write::Stripe>> {
        self.take_stripe(Self::stripe(tenant, aggregate_type, aggregate_id))
    }

    /// Locks several aggregates' stripes in stripe order (no deadlock between two such callers).
    pub(crate) fn lock_all<'s>(
        &self,
        tenant: &str,
        aggregates: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Result<Vec<OwnedMutexGuard<write::Stripe>>> {
        let stripes: BTreeSet<usize> = aggregates
            .map(|(t, i)| Self::stripe(tenant, t, i))
            .collect();
        stripes
            .into_iter()
            .map(|stripe| self.take_stripe(stripe))
            .collect()
    }

    pub(crate) fn next_id(&self) -> u64 {
        next_id(&self.ids)
    }

    /// What a write needs of the store, owned, so that it can finish on the engine's runtime.
    pub(crate) fn writer(&self) -> writer::Writer {
        writer::Writer {
            handle: self.handle.clone(),
            pool: self.pool.clone(),
            group: self.group.clone(),
            ids: Arc::clone(&self.ids),
            positions: Arc::clone(&self.positions),
        }
    }

    /// Checks the database answers (`SELECT 1` on a pooled connection), within `timeout`: what
    /// a health check reports. An error says why (unreachable, shutting down, too slow).
    pub fn ping(&self, timeout: Duration) -> Result<()> {
        let pool = self.pool();
        self.run(async move {
            let check = async {
                let client = pool.get().await.map_err(pool_error)?;
                client.simple_query("SELECT 1").await.map_err(db)?;
                Ok(())
            };
            tokio::time::timeout(timeout, check).await.map_err(|_| {
                StoreError::engine("the database did not answer in time (retry later)")
            })?
        })
    }

    /// Makes every acknowledged relaxed commit durable: a commit with `synchronous_commit = on`
    /// waits for the WAL flush up to its own record, which follows theirs.
    fn flush(&self) -> Result<()> {
        let pool = self.pool();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let txn = client.transaction().await.map_err(db)?;
            txn.batch_execute("SET LOCAL synchronous_commit = on; SELECT txid_current()")
                .await
                .map_err(db)?;
            txn.commit().await.map_err(db)
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The runtime's own thread drops it, never this one: dropping a runtime blocks, which
        // is refused inside another runtime's task (where the server may drop its last handle).
        let stop = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

/// Wall-clock time for ids and timestamps (0 before the epoch).
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl EventStore for PostgresStore {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn health(&self) -> StorageHealth {
        match self.ping(HEALTH_TIMEOUT) {
            Ok(()) => StorageHealth::Ok,
            Err(err) => StorageHealth::Degraded {
                cause: err.to_string(),
            },
        }
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The acknowledged writes get their positions before another process opens the
        // database; a failure leaves them to the next round of any server (or this open's).
        let _ = positions::settle(self, false);
        if self.durability == Durability::Relaxed {
            // Nothing to report to: a failed flush leaves the commits to PostgreSQL's own
            // WAL writer, which flushes them within its delay.
            let _ = self.flush();
        }
    }

    fn write(&self, tenant: &str, request: WriteRequest) -> Result<WriteOutcome> {
        writer::write(self, tenant, request)
    }

    fn write_then(&self, tenant: &str, request: WriteRequest, done: WriteDone) {
        writer::write_then(self, tenant, request, done);
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
        archive::set_archived(
            self,
            tenant,
            (aggregate_type, aggregate_id),
            archived,
            note,
            nullify,
            publish,
        )
    }

    fn referrers(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Referrer>> {
        archive::referrers(self, tenant, aggregate_type, aggregate_id)
    }

    fn aggregate_types(&self, tenant: &str) -> Result<Vec<String>> {
        read::aggregate_types(self, tenant)
    }

    fn get(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Aggregate>> {
        read::get(self, tenant, aggregate_type, aggregate_id)
    }

    fn list(&self, tenant: &str, query: &ListQuery, visible: Visibility<'_>) -> Result<ListPage> {
        list::list(self, tenant, query, visible)
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
        read::events(
            self,
            tenant,
            (aggregate_type, aggregate_id),
            after_version,
            take,
            filter,
        )
    }

    fn outbox(
        &self,
        tenant: &str,
        after_event_id: u64,
        take: usize,
        visible: &dyn Fn(&str, &str) -> bool,
    ) -> Result<OutboxPage> {
        read::outbox(self, tenant, after_event_id, take, visible)
    }

    fn verify(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        verify::verify(self, tenant, aggregate_type, aggregate_id)
    }

    fn create_snapshot(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Snapshot> {
        read::create_snapshot(self, tenant, aggregate_type, aggregate_id, comment)
    }

    fn list_snapshots(
        &self,
        tenant: &str,
        aggregate_type: Option<&str>,
        aggregate_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<Snapshot>> {
        read::list_snapshots(self, tenant, aggregate_type, aggregate_id, version)
    }

    fn get_snapshot(&self, tenant: &str, snapshot_id: u64) -> Result<Option<Snapshot>> {
        read::get_snapshot(self, tenant, snapshot_id)
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        read::usage(self, tenant)
    }

    fn recalc_usage(&self, tenant: &str) -> Result<Usage> {
        read::recalc_usage(self, tenant)
    }

    fn tenants(&self) -> Result<Vec<String>> {
        read::tenants(self)
    }

    fn events_after(
        &self,
        tenant: &str,
        after: u64,
        selector: &EventSelector,
        take: usize,
    ) -> Result<PositionPage> {
        positions::events_after(self, tenant, after, selector, take)
    }

    fn event_positions(
        &self,
        tenant: &str,
        events: &[eventdbx_core::merkle::Event],
    ) -> Result<Vec<Option<u64>>> {
        positions::of_events(self, tenant, events)
    }

    fn head_position(&self, tenant: &str) -> Result<u64> {
        positions::head(self, tenant)
    }

    fn listen_commits(&self, listener: CommitListener) -> Result<()> {
        self.positions.listen(listener);
        Ok(())
    }
}
