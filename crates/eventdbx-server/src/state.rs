//! What every connection shares: the opened store, token authority, tenants, plugins and v2 key
//! ([`ServerState`]), the `/metrics` counters ([`Metrics`]) and the session limits.
//!
//! A leaf of the crate's module graph: `server` builds the state, `connection`, `commands` and
//! `http` read it, and it imports none of them, so none of them import each other through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventdbx_proto::noise::v2::StaticKeypair;
use eventdbx_store::{EventStore, JobQueue};
use tokio_util::task::TaskTracker;

use crate::auth::Authority;
use crate::config::Config;
use crate::plugins::Plugins;
use crate::tenants::Tenants;

/// A control session with no request for this long is closed (clients reconnect lazily).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a listener (control or HTTP) waits after a failed accept: such failures (too many
/// open files) are transient, and retrying at once would spin.
pub(crate) const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long a stopping server lets its connections finish their in-flight requests; a connection
/// still busy then (e.g. a peer that reads no answers) is aborted.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two log lines about the same kind of trouble: a flood logs once per burst,
/// with the number of occurrences it left unsaid.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Rate limits of the log lines a flood of bad connections would otherwise repeat.
#[derive(Debug, Default)]
pub(crate) struct LogBursts {
    /// A connection budget was hit (a pending connection evicted, a session refused).
    pub(crate) limits: BurstLog,
    /// A connection ended before completing its hello and handshake.
    pub(crate) handshakes: BurstLog,
    /// A session ended on a bad frame or message.
    pub(crate) protocol: BurstLog,
}

/// Logs one line per burst: [`BurstLog::admit`] says whether to log now, and how many
/// occurrences went unlogged since the last line.
#[derive(Debug, Default)]
pub(crate) struct BurstLog {
    last: Mutex<Option<Instant>>,
    unsaid: AtomicU64,
}

impl BurstLog {
    /// `Some(unsaid)` when this occurrence should be logged, `None` to stay quiet.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < LOG_INTERVAL => {
                self.unsaid.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.unsaid.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// Connections that ended before completing their hello and handshake, for any reason.
    pub handshake_failures: AtomicU64,
    /// Pending connections closed to make room in the pre-authentication budget.
    pub preauth_rejected: AtomicU64,
    /// Authenticated connections refused because every session slot was taken.
    pub sessions_refused: AtomicU64,
    /// Sessions ended by a bad frame, an oversize chunk or an unreadable message.
    pub protocol_errors: AtomicU64,
    /// Requests answered: counted as each answer is made, before it is sent (a client gone by
    /// then does not read it).
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub request_errors: AtomicU64,
    /// Busy-polls of a session's socket (`[socket] busy_poll_us`) started.
    pub busy_polls: AtomicU64,
    /// Busy-polls during which the next request arrived.
    pub busy_poll_hits: AtomicU64,
    /// Sessions polling their socket right now (never above the cap; see `busy_poll_us`).
    pub busy_polling: AtomicU64,
    /// The most sessions ever seen polling at once.
    pub busy_polling_peak: AtomicU64,
    /// Bytes reserved from the message budget right now (`[socket] message_budget_bytes`).
    pub message_bytes_reserved: AtomicU64,
    /// The most bytes ever reserved at once: never above the budget.
    pub message_bytes_reserved_peak: AtomicU64,
    /// Messages that had to wait for room in the message budget.
    pub message_budget_waits: AtomicU64,
    /// Sessions closed because a message they had begun did not arrive whole in time
    /// (`[socket] message_timeout_ms`); also counted in `protocol_errors`.
    pub message_timeouts: AtomicU64,
    /// Sessions closed because the peer took no byte of an answer (or a subscription's batch)
    /// for `[socket] answer_timeout_ms`; also counted in `protocol_errors`.
    pub answer_timeouts: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub struct ServerState {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn EventStore>,
    /// The plugin outbox, in the same engine as `store`.
    pub(crate) jobs: Arc<dyn JobQueue>,
    pub(crate) auth: Arc<Authority>,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) server_key: StaticKeypair,
    pub(crate) metrics: Metrics,
    pub(crate) log_bursts: LogBursts,
    pub(crate) plugins: Arc<Plugins>,
    /// Each tenant's head position, raised by the store's commit listener (subscriptions).
    pub(crate) heads: Arc<crate::heads::CommitHeads>,
    /// Modification time of the token-id registry when it was last read for an unknown id.
    pub(crate) registry_seen: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// Every task a session starts apart from its own (requests run apart, subscriptions, their
    /// blocking reads), and the blocking calls of the server's own background tasks: each may
    /// hold this state, and so the store, until it ends. `Server::run` waits for all of them
    /// (aborted by their owners first) before it returns.
    pub(crate) tasks: TaskTracker,
    #[cfg(feature = "test-hooks")]
    pub(crate) hooks: Hooks,
}

impl ServerState {
    /// Whether the token-id registry changed on disk since it was last read for an unknown id
    /// (another process, e.g. `dbx token generate`, issued a token). Unknown ids alone never
    /// make the server read files in a loop: only a changed file does.
    pub(crate) fn registry_changed(&self) -> bool {
        let path = self.config.auth_state_dir().join("registry.json");
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            return false;
        };
        let mut seen = self.registry_seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(modified) {
            return false;
        }
        *seen = Some(modified);
        true
    }
}

/// Seams for this crate's own tests (the `test-hooks` feature): a subscription read held in
/// flight across a shutdown.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    /// Taken by the next subscription read, which then waits at it.
    pub(crate) read_gate: Mutex<Option<ReadGate>>,
    /// Told when `Server::run`, its connections ended, starts waiting for the tasks left.
    pub(crate) waiting_for_tasks: Arc<tokio::sync::Notify>,
}

#[cfg(feature = "test-hooks")]
impl Hooks {
    /// Makes the next subscription read wait until the returned [`HeldRead`] is released.
    pub(crate) fn hold_next_read(&self) -> HeldRead {
        let (entered, entered_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        *self.read_gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReadGate {
            entered,
            release: release_rx,
        });
        HeldRead {
            entered: entered_rx,
            release: Some(release),
            waiting: Arc::clone(&self.waiting_for_tasks),
        }
    }

    /// The gate of the next read, if one is set.
    pub(crate) fn take_read_gate(&self) -> Option<ReadGate> {
        self.read_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Where a held read waits.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub(crate) struct ReadGate {
    entered: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

#[cfg(feature = "test-hooks")]
impl ReadGate {
    /// Says the read is held, then blocks this (blocking) thread until it is released.
    pub(crate) fn wait(self) {
        let _ = self.entered.send(());
        let _ = self.release.recv();
    }
}

/// A subscription read held in flight (`Server::hold_next_read`); dropping it releases the read.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct HeldRead {
    entered: tokio::sync::oneshot::Receiver<()>,
    release: Option<std::sync::mpsc::Sender<()>>,
    waiting: Arc<tokio::sync::Notify>,
}

#[cfg(feature = "test-hooks")]
impl HeldRead {
    /// Resolves once a read is held (on a blocking thread, with the server's state).
    pub async fn entered(&mut self) {
        let _ = (&mut self.entered).await;
    }

    /// Resolves once `Server::run` has seen its connections end and waits for the tasks left.
    pub async fn server_waiting(&self) {
        self.waiting.notified().await;
    }

    /// Lets the held read go on.
    pub fn release(&mut self) {
        self.release = None;
    }
}
