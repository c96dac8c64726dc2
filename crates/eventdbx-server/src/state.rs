//! What every connection shares: the opened store, token authority, tenants, plugins and v2 key
//! ([`ServerState`]), the `/metrics` counters ([`Metrics`]) and the session limits.
//!
//! A leaf of the crate's module graph: `server` builds the state, `connection`, `commands` and
//! `http` read it, and it imports none of them, so none of them import each other through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::noise::v2::StaticKeypair;
use eventdbx_store::{EventStore, JobQueue};

use crate::auth::Authority;
use crate::config::Config;
use crate::plugins::Plugins;
use crate::tenants::Tenants;

/// A control session with no request for this long is closed (clients reconnect lazily).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a listener (control or HTTP) waits after a failed accept: such failures (too many
/// open files) are transient, and retrying at once would spin.
pub(crate) const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// Hellos rejected or handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Requests answered.
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
    pub(crate) plugins: Arc<Plugins>,
    /// Modification time of the token-id registry when it was last read for an unknown id.
    pub(crate) registry_seen: std::sync::Mutex<Option<std::time::SystemTime>>,
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
