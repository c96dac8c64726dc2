//! Storage for EventDBX: the [`EventStore`] and [`JobQueue`] traits and their embedded engine,
//! [`RedbStore`].
//!
//! The traits speak only domain types (`eventdbx-core`): no engine type appears in a signature,
//! so a PostgreSQL engine can implement them without changing callers, who hold
//! `Arc<dyn EventStore>` and `Arc<dyn JobQueue>` from [`open_embedded`]. Every event method takes
//! the (already normalised) tenant id first; every key the engine writes starts with it.
//!
//! ```
//! use eventdbx_store::{Durability, WriteRequest};
//! use eventdbx_core::write::{WriteBody, WriteKind};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let storage = eventdbx_store::open_embedded(dir.path().join("data.redb"), Durability::Fsync, 0)
//!     .unwrap();
//! let request = WriteRequest::new(
//!     WriteKind::Create, "order", "o-1", "order_created",
//!     WriteBody::Payload(serde_json::json!({"status": "new"})),
//! );
//! let outcome = storage.events.write("default", request).unwrap();
//! assert_eq!(outcome.event.version, 1);
//! let root = storage.events.verify("default", "order", "o-1").unwrap();
//! assert_eq!(root, outcome.aggregate.merkle_root);
//! storage.events.close();
//! ```
//!
//! # Layout
//! - `lib.rs`: the traits, their request and result types, [`open_embedded`].
//! - `error`: [`StoreError`] and [`StorageHealth`].
//! - [`documents`]: the control documents several servers share (the PostgreSQL engine's;
//!   the embedded engine's server keeps files).
//! - [`record`]: the stored forms of aggregates, snapshots and idempotency results, shared by
//!   every engine.
//! - [`redb_store`]: the embedded engine: key layout, group commit, paging.
//! - [`subscription`]: event positions, pages after a position, commit listeners.
//!
//! Every engine passes the conformance suite in `tests/it/conformance` (see `docs/storage.md`).

use std::path::Path;
use std::sync::Arc;

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::{Event, IssuedBy};
use eventdbx_core::plugin::{JobAction, JobStatus, PayloadMode, PluginJob, Priority, RetryPolicy};
use eventdbx_core::query::cursor::{ListOrder, PagePlan};
use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::Scope;
pub use eventdbx_core::schema::reference::{ReferenceLink, Referrer};
use eventdbx_core::write::{WriteBody, WriteKind};
use serde_json::{Map, Value};

pub mod documents;
mod error;
pub mod record;
pub mod redb_store;
pub mod subscription;

pub use error::{StorageHealth, StoreError};
pub use redb_store::RedbStore;
pub use subscription::{CommitListener, EventSelector, PositionPage, PositionedEvent};

/// Whether an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before any write in it is acknowledged (group commit shares one
    /// flush among concurrent writers). The default.
    #[default]
    Fsync,
    /// Writes are acknowledged before they are fsynced; a background flush makes them durable
    /// within 50 ms. A process kill, an OS crash or a power loss can lose the writes of that last
    /// window (EventDBX never fsyncs at all). Reported as `relaxed`.
    Relaxed,
}

impl Durability {
    /// `fsync` or `relaxed`, as the config file and `/health` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Relaxed => "relaxed",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs inside the write's critical section on the payload the event will record, before the
/// event is sealed, with the aggregate as it is before the event: validates the payload (schema
/// rules, reference integrity) and may rewrite it (canonical reference values). It may read the
/// store (a reference's target), so it returns a [`StoreError`].
pub type PayloadCheck = Arc<dyn Fn(&Aggregate, &mut Value) -> Result<()> + Send + Sync>;

/// The references the state of an aggregate holds (`docs/server.md`, "References"), given the
/// aggregate as it will be after the event. The store keeps its reverse index equal to what this
/// returns.
pub type ReferenceScan = Arc<dyn Fn(&Aggregate) -> Vec<ReferenceLink> + Send + Sync>;

/// Decides, for one referrer of an aggregate being archived, whether its reference is cleared by
/// a `_ref_nullify` event (`true`) or blocks the archive (`false`).
pub type CascadeRule<'a> = &'a dyn Fn(&Referrer) -> bool;

/// An idempotency key and the digest of the request it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key (scoped to tenant, type and id).
    pub key: String,
    /// [`eventdbx_core::write::request_digest`] of the request.
    pub digest: [u8; 32],
}

/// One create, append or patch. Names, payload and metadata are already validated.
#[derive(Clone)]
pub struct WriteRequest {
    /// Create, append or patch.
    pub kind: WriteKind,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Normalised event type.
    pub event_type: String,
    /// The client's event type.
    pub event_type_raw: Option<String>,
    /// Payload or patch.
    pub body: WriteBody,
    /// The request's metadata, verbatim.
    pub extensions: Option<Map<String, Value>>,
    /// Note, untrimmed.
    pub note: Option<String>,
    /// Group and user of the token.
    pub issued_by: Option<IssuedBy>,
    /// Optimistic concurrency (append, patch).
    pub expected_version: Option<u64>,
    /// Idempotency key and request digest.
    pub idempotency: Option<Idempotency>,
    /// Automatic snapshot every N versions (append and patch only).
    pub snapshot_threshold: Option<u64>,
    /// The tenant's storage quota in bytes, checked atomically with the commit.
    pub quota_bytes: Option<u64>,
    /// Validation and rewriting of the payload before the event is sealed.
    pub prepare: Option<PayloadCheck>,
    /// The references of the resulting state; `None` leaves the aggregate's entries in the
    /// reverse index as they are.
    pub references: Option<ReferenceScan>,
    /// Plugin jobs to queue in the write's own commit (the durable outbox, `docs/plugins.md`,
    /// "Delivery"): an acknowledged write always has its jobs.
    pub publish: Vec<JobRoute>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("kind", &self.kind)
            .field("aggregate_type", &self.aggregate_type)
            .field("aggregate_id", &self.aggregate_id)
            .field("event_type", &self.event_type)
            .field("expected_version", &self.expected_version)
            .finish_non_exhaustive()
    }
}

impl WriteRequest {
    /// A request with only the required fields; set the others directly.
    pub fn new(
        kind: WriteKind,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        body: WriteBody,
    ) -> Self {
        let event_type = event_type.into();
        WriteRequest {
            kind,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type_raw: Some(event_type.clone()),
            event_type: event_type.replace('.', "_"),
            body,
            extensions: None,
            note: None,
            issued_by: None,
            expected_version: None,
            idempotency: None,
            snapshot_threshold: None,
            quota_bytes: None,
            prepare: None,
            references: None,
            publish: Vec::new(),
        }
    }
}

/// One plugin job a write (or an archive or restore) queues in its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRoute {
    /// The plugin identifier.
    pub plugin: String,
    /// Payload mode.
    pub mode: PayloadMode,
    /// Priority.
    pub priority: Priority,
    /// The aggregate's schema JSON, if it has one (kept with the job).
    pub schema: Option<Value>,
}

/// The jobs of one write or state change, one per route of `publish` (every engine queues these
/// in the write's commit; ids are assigned when they are queued).
pub fn plugin_jobs(
    tenant: &str,
    publish: &[JobRoute],
    action: JobAction,
    event_id: u64,
    event: Option<&Event>,
    aggregate: &Aggregate,
) -> Vec<PluginJob> {
    if publish.is_empty() {
        return Vec::new();
    }
    let now_ms = redb_store::now_nanos() / 1_000_000;
    let aggregate_json = aggregate.to_json(&[]);
    publish
        .iter()
        .map(|route| PluginJob {
            id: 0,
            plugin: route.plugin.clone(),
            tenant: tenant.to_owned(),
            mode: route.mode,
            priority: route.priority,
            status: JobStatus::Pending,
            attempts: 0,
            next_retry_at_ms: now_ms,
            deadline_ms: None,
            last_error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            event_id,
            action,
            event: event.cloned(),
            aggregate_type: aggregate.aggregate_type.clone(),
            aggregate_id: aggregate.aggregate_id.clone(),
            aggregate: aggregate_json.clone(),
            schema: route.schema.clone(),
        })
        .collect()
}

/// What [`JobQueue::claim_job`] found at the head of a plugin's queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The job to deliver now; it is `processing` with `attempts + 1` and a deadline.
    Job(Box<PluginJob>),
    /// The head job is not due before this time (Unix ms).
    WaitUntil(u64),
    /// The head job is being delivered until this deadline (Unix ms).
    Busy(u64),
    /// Nothing pending.
    Empty,
}

/// Which jobs [`JobQueue::list_jobs`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this plugin.
    pub plugin: Option<String>,
    /// Only these statuses (empty = all).
    pub statuses: Vec<JobStatus>,
    /// Only jobs of this event id.
    pub event_id: Option<u64>,
    /// At most this many (0 = no limit).
    pub limit: usize,
}

/// Jobs per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Pending (including those waiting for a retry).
    pub pending: u64,
    /// Being delivered.
    pub processing: u64,
    /// Delivered and not yet pruned.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// What a committed (or replayed) write produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// The stored event.
    pub event: Event,
    /// The aggregate after the event.
    pub aggregate: Aggregate,
    /// The automatic snapshot taken with this write, if any.
    pub snapshot: Option<Snapshot>,
    /// True when an idempotency key matched and nothing was written.
    pub replayed: bool,
}

/// Per-tenant usage, for quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Stored events.
    pub events: u64,
    /// Bytes of stored events and snapshots.
    pub bytes: u64,
}

/// Decides per listed aggregate whether the caller may see it, and in what form (hidden types
/// dropped, hidden fields removed). Filters run on what it returns.
pub type Visibility<'a> = &'a dyn Fn(Aggregate) -> Option<Aggregate>;

/// A page request of `listAggregates`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The order and the cursor position (see [`PagePlan::new`]).
    pub plan: PagePlan,
    /// Which sets to read.
    pub scope: Scope,
    /// Filter, evaluated on the visible aggregate.
    pub filter: Option<Filter>,
    /// Aggregate types known to the tenant (the filter's type-qualifier rule needs them).
    pub known_types: Vec<String>,
    /// Items to return (0 = empty page).
    pub take: usize,
}

/// A page of aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The items, in order.
    pub items: Vec<Aggregate>,
    /// True when the page is full (the caller then returns a cursor after the last item).
    pub full: bool,
    /// The order used (a cursor may imply one).
    pub order: ListOrder,
}

/// A page of events of one aggregate or of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// Events in version (or event id) order.
    pub events: Vec<Event>,
    /// True when the page is full.
    pub full: bool,
}

/// A page of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxPage {
    /// Visible events in ascending event id.
    pub events: Vec<Event>,
    /// The id of the last row examined (visible or not); `None` when nothing was examined.
    pub last_examined: Option<u64>,
    /// True when the page holds `take` events.
    pub full: bool,
}

/// What [`EventStore::write_then`] calls with a write's outcome.
pub type WriteDone = Box<dyn FnOnce(Result<WriteOutcome>) + Send + 'static>;

/// The storage engine interface.
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// How writes are made durable.
    fn durability(&self) -> Durability;

    /// Whether a write made now would wait for a commit of other writes already running (the
    /// embedded engine's group commit). A caller may run a write that would not on a thread it
    /// can afford to block for the sync; an engine that cannot tell answers `true`.
    fn commit_running(&self) -> bool {
        true
    }

    /// Whether a write to this aggregate made now would first wait, blocking its thread, for an
    /// earlier write to it that is not answered yet (the embedded engine's lock stripe). A caller
    /// of [`EventStore::write_then`] may then make it where blocking is cheap. An engine that
    /// never blocks a write's caller for another write answers `false`.
    fn write_waits(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> bool {
        let _ = (tenant, aggregate_type, aggregate_id);
        false
    }

    /// Whether writes commit now, or fail since an I/O error (and why). While they fail, the
    /// engine may probe (a small durable write) to find out whether they would commit again, so
    /// a caller that never writes still sees the recovery. An engine that cannot tell reports
    /// [`StorageHealth::Ok`].
    fn health(&self) -> StorageHealth {
        StorageHealth::Ok
    }

    /// Creates, appends or patches atomically; see `docs/server.md`, "Writes".
    fn write(&self, tenant: &str, request: WriteRequest) -> Result<WriteOutcome>;

    /// Starts a write like [`EventStore::write`] and calls `done` with its outcome once it is
    /// durable (or has failed), on whichever thread finishes it: a caller can then await a write
    /// without a thread blocked on it while it waits for its group's commit. `done` should only
    /// hand the outcome on (a channel, a waker): it may run on the thread that commits other
    /// writers' groups, so a `done` that waits for another write of the same store may never
    /// return. The default runs [`EventStore::write`] on the calling thread.
    fn write_then(&self, tenant: &str, request: WriteRequest, done: WriteDone) {
        done(self.write(tenant, request));
    }

    /// Archives (`true`) or restores (`false`) an aggregate; returns it afterwards. Archiving
    /// is refused while any aggregate refers to it (see [`EventStore::archive`]).
    fn set_archived(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        archived: bool,
        note: Option<&str>,
    ) -> Result<Aggregate> {
        self.set_archived_publishing(
            tenant,
            aggregate_type,
            aggregate_id,
            archived,
            note,
            &|_| false,
            &[],
        )
    }

    /// Archives an aggregate after clearing the references to it (`docs/server.md`, "Archive and
    /// restore"), in one atomic commit.
    ///
    /// Every referrer for which `nullify` answers `true` gets a `_ref_nullify` event (no
    /// `issued_by`, note `auto-nullify due to <type>#<id>`, no schema check) setting its
    /// referring paths to `null`; any other referrer blocks the archive with `schema_violation`
    /// naming the first five. The referrers are re-read inside the commit, so a reference added
    /// concurrently is never left pointing at the archived aggregate.
    fn archive(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        nullify: CascadeRule<'_>,
    ) -> Result<Aggregate> {
        self.set_archived_publishing(
            tenant,
            aggregate_type,
            aggregate_id,
            true,
            note,
            nullify,
            &[],
        )
    }

    /// The aggregates whose current state refers to `aggregate_type#aggregate_id`, ordered by
    /// (type, id, path). Exact keys: the referrers of `p-1` never include those of `p-10`.
    fn referrers(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Referrer>>;

    /// The distinct aggregate types the tenant holds (active or archived), in byte order.
    fn aggregate_types(&self, tenant: &str) -> Result<Vec<String>>;

    /// An aggregate, active or archived.
    fn get(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Aggregate>>;

    /// One page of aggregates (keyset paging; never loads the whole set).
    fn list(&self, tenant: &str, query: &ListQuery, visible: Visibility<'_>) -> Result<ListPage>;

    /// Events of an aggregate after `after_version`, filtered; empty for an archived or unknown
    /// aggregate.
    fn events(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        after_version: u64,
        take: usize,
        filter: Option<&Filter>,
    ) -> Result<EventPage>;

    /// The tenant's events in ascending event id after `after_event_id`, skipping archived
    /// aggregates and those `visible(type, id)` rejects. The page holds up to `take` visible
    /// events; its `last_examined` is the id of the last row looked at, so a consumer that
    /// checkpoints it always advances even past invisible rows.
    fn outbox(
        &self,
        tenant: &str,
        after_event_id: u64,
        take: usize,
        visible: &dyn Fn(&str, &str) -> bool,
    ) -> Result<OutboxPage>;

    /// Recomputes the Merkle root from the stored events; a mismatch is `integrity_violation`.
    fn verify(&self, tenant: &str, aggregate_type: &str, aggregate_id: &str) -> Result<String>;

    /// Takes a snapshot of an existing aggregate.
    fn create_snapshot(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Snapshot>;

    /// Snapshots by exact type and id (both optional), ordered by type, id, creation.
    fn list_snapshots(
        &self,
        tenant: &str,
        aggregate_type: Option<&str>,
        aggregate_id: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<Snapshot>>;

    /// One snapshot by id.
    fn get_snapshot(&self, tenant: &str, snapshot_id: u64) -> Result<Option<Snapshot>>;

    /// The tenant's recorded usage.
    fn usage(&self, tenant: &str) -> Result<Usage>;

    /// [`EventStore::set_archived`] (with `nullify` deciding the referrers of an archive, as in
    /// [`EventStore::archive`]) that also queues `publish` jobs in the same commit. The jobs
    /// carry the aggregate after the change and the action (`archive` or `restore`); no event
    /// is recorded.
    #[allow(clippy::too_many_arguments)]
    fn set_archived_publishing(
        &self,
        tenant: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        archived: bool,
        note: Option<&str>,
        nullify: CascadeRule<'_>,
        publish: &[JobRoute],
    ) -> Result<Aggregate>;

    /// Recounts the tenant's usage from what is stored and records it.
    fn recalc_usage(&self, tenant: &str) -> Result<Usage>;

    /// The tenants that hold any stored data (events or snapshots), in byte order of their ids.
    fn tenants(&self) -> Result<Vec<String>>;

    /// The tenant's events selected by `selector` with a position above `after`, ascending, at
    /// most `take` of them (`docs/subscriptions.md`, "Positions"). A reader that was shown
    /// position P is never later shown a new event at or below P. The default refuses:
    /// the engine has no positions.
    fn events_after(
        &self,
        tenant: &str,
        after: u64,
        selector: &EventSelector,
        take: usize,
    ) -> Result<PositionPage> {
        let _ = (tenant, after, selector, take);
        Err(subscription::unsupported("events_after"))
    }

    /// The position of each of `events` (events of `tenant` this engine returned), in order;
    /// `None` for an event without one. The default: an engine without positions has none, and
    /// its event pages are sent without them.
    fn event_positions(&self, tenant: &str, events: &[Event]) -> Result<Vec<Option<u64>>> {
        let _ = tenant;
        Ok(vec![None; events.len()])
    }

    /// The position of the tenant's latest committed event (0 when it has none).
    fn head_position(&self, tenant: &str) -> Result<u64> {
        let _ = tenant;
        Err(subscription::unsupported("head_position"))
    }

    /// Registers `listener`, called after every commit that adds events (see
    /// [`CommitListener`]). Listeners stay registered for the life of the store.
    fn listen_commits(&self, listener: CommitListener) -> Result<()> {
        let _ = listener;
        Err(subscription::unsupported("listen_commits"))
    }

    /// Stops accepting writes and makes every acknowledged write durable (the final flush of
    /// relaxed writes). Later writes fail with [`StoreError::Storage`]; closing twice is harmless.
    fn close(&self);
}

/// The durable plugin outbox (`docs/plugins.md`, "Delivery"): the jobs writes queue in their own
/// commit, claimed and settled by the delivery workers. A separate trait from [`EventStore`]
/// because only the plugin workers and the admin commands need it; an engine implements both over
/// one database so a write and its jobs commit together.
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Claims the head of `plugin`'s queue (priority, then age) at `now_ms`: a due pending job
    /// becomes `processing` with `attempts + 1` and a deadline `lease_ms` ahead. A head whose
    /// deadline passed is first recovered as a failure under `policy`.
    fn claim_job(
        &self,
        plugin: &str,
        now_ms: u64,
        lease_ms: u64,
        policy: RetryPolicy,
    ) -> Result<Claim>;

    /// Marks a processing job delivered.
    fn complete_job(&self, job_id: u64, now_ms: u64) -> Result<()>;

    /// Records a failed attempt: dead when `policy` says the attempts are exhausted, else
    /// pending again after the backoff. Returns the new status.
    fn fail_job(
        &self,
        job_id: u64,
        error: &str,
        now_ms: u64,
        policy: RetryPolicy,
    ) -> Result<JobStatus>;

    /// Puts every `processing` job back to pending, due at `now_ms` (after a restart nothing can
    /// still be delivering them). Returns how many.
    fn recover_jobs(&self, now_ms: u64) -> Result<u64>;

    /// Dead jobs matching `filter` go back to pending with no attempts, due at `now_ms`; with
    /// [`JobStatus::Done`] in `filter.statuses`, done jobs too (a replay; `Dead` must then be
    /// listed to include dead ones). Returns the plugin of each job requeued.
    fn retry_jobs(&self, filter: &JobFilter, now_ms: u64) -> Result<Vec<String>>;

    /// Removes jobs matching `filter` whose status is in `filter.statuses` (dead or done; pending
    /// and processing jobs are never removed). Returns how many.
    fn clear_jobs(&self, filter: &JobFilter) -> Result<u64>;

    /// Removes done jobs finished before `done_before_ms`, then the oldest beyond
    /// `max_done` (when set). Returns how many.
    fn prune_jobs(&self, done_before_ms: u64, max_done: Option<u64>) -> Result<u64>;

    /// Jobs matching `filter`, by id.
    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<PluginJob>>;

    /// Jobs per status.
    fn job_counts(&self) -> Result<JobCounts>;
}

/// The two views of one opened engine: the same database behind both, so a write queues its
/// jobs atomically. Callers hold these and never name the engine.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Aggregates, events, snapshots, references, usage.
    pub events: Arc<dyn EventStore>,
    /// The plugin outbox.
    pub jobs: Arc<dyn JobQueue>,
}

/// The embedded engine's tuning beyond its durability (`[storage]` keys of the server's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Durable mode: the size the write-ahead log reaches before a checkpoint (a durable
    /// commit of the database file) lets it start over. It bounds the replay at open after a
    /// crash (`docs/storage.md`, "Write-ahead log").
    pub checkpoint_bytes: u64,
    /// Durable mode: the write-ahead log's records are written with `O_DIRECT | O_DSYNC` where
    /// the filesystem allows it (true), else with a buffered write and `fdatasync` (false, the
    /// default: direct writes measured no better in the benchmark; `docs/storage.md`,
    /// "Write-ahead log").
    pub wal_direct_io: bool,
}

/// [`EmbeddedOptions::checkpoint_bytes`] by default: 32 MiB. A checkpoint writes back every
/// page changed since the last one, and the set of pages a workload keeps changing (its
/// aggregates' records, the tails of their event ranges) is written once per checkpoint however
/// many writes changed it, so rarer checkpoints cost less per write (`docs/storage.md`,
/// "Write-ahead log").
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            wal_direct_io: false,
        }
    }
}

/// Opens (or creates) the embedded engine's database file at `path`; `worker_id` is the
/// Snowflake worker id (0–1023). The engine is closed when [`EventStore::close`] is called or
/// when the last handle of both views is dropped. A damaged file is refused with
/// [`StoreError::Damaged`] (`docs/storage.md`, "Damaged files and recovery").
pub fn open_embedded(
    path: impl AsRef<Path>,
    durability: Durability,
    worker_id: u16,
) -> Result<Storage> {
    open_embedded_with(path, durability, worker_id, EmbeddedOptions::default())
}

/// [`open_embedded`] with the engine's tuning.
pub fn open_embedded_with(
    path: impl AsRef<Path>,
    durability: Durability,
    worker_id: u16,
    options: EmbeddedOptions,
) -> Result<Storage> {
    let engine = Arc::new(RedbStore::open_with_options(
        path, durability, worker_id, options,
    )?);
    Ok(Storage {
        events: Arc::clone(&engine) as Arc<dyn EventStore>,
        jobs: engine,
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_storage_error_keeps_its_source_and_says_what_failed() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only disk");
        let err = StoreError::storage("cannot create the data directory", io);
        assert_eq!(err.code(), "storage");
        assert_eq!(
            err.to_string(),
            "storage error: cannot create the data directory: read-only disk"
        );
        let source = err.source().expect("the engine's error is the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the source is the io::Error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        // One group commit answers all its writers with clones of one error.
        let copy = err.clone();
        assert!(copy.source().is_some());
    }

    #[test]
    fn an_unreachable_engine_is_unavailable_with_its_source() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::unavailable("cannot reach the database", refused);
        assert_eq!(err.code(), "unavailable");
        assert_eq!(
            err.to_string(),
            "unavailable: cannot reach the database: refused"
        );
        assert!(err.is_unavailable() && !err.is_damaged());
        assert!(err.source().is_some());
        assert!(!StoreError::engine("closed").is_unavailable());
    }

    #[test]
    fn an_engine_error_without_a_cause_has_no_source() {
        let err = StoreError::engine("the store is closed");
        assert_eq!(err.to_string(), "storage error: the store is closed");
        assert!(err.source().is_none());
        assert_eq!(err.code(), "storage");
    }
}
