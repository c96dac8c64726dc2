//! The server: shared state, the accept loop, graceful shutdown.
//!
//! Structure after mini-redis: a listener, one task per connection, shutdown by broadcast, and a
//! drain that waits for every handler to finish its in-flight request before `run` returns (for
//! at most [`DRAIN_TIMEOUT`], then aborts it), and then for every task the sessions started
//! apart, which may hold the store as long as the sessions themselves (`ServerState::tasks`). The
//! listener accepts every connection at once; `connection::admission` decides which may stay
//! (`docs/server.md`, "Connection limits").

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::noise::v2::{Fingerprint, StaticKeypair};
use eventdbx_store::documents::ControlDocuments;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthConfig, Authority, KeyOverrides};
use crate::config::Config;
use crate::connection::{self, admission::Gate};
use crate::control::DocumentPoll;
use crate::plugins::Plugins;
use crate::state::{Metrics, ServerState, DRAIN_TIMEOUT};
use crate::tenants::Tenants;

/// Most concurrent authenticated control sessions; a further one is told the server is busy.
pub const MAX_CONNECTIONS: usize = connection::admission::MAX_SESSIONS;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store could not be opened (a damaged file is refused, naming the recovery
    /// commands).
    #[error("{}", store_failure(path, error))]
    Store {
        /// The database file.
        path: String,
        /// Why. Not the error's `source()`: the text already holds it, and `dbx` prints the
        /// chain, which would say it twice.
        error: eventdbx_store::StoreError,
    },
    /// The token authority could not start (key file, ledger).
    #[error("cannot start token authority: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The plugins file could not be read.
    #[error("cannot load plugins: {0}")]
    Plugins(eventdbx_core::CoreError),
    /// Tenant metadata could not be read.
    #[error("cannot read tenant metadata: {0}")]
    Tenants(eventdbx_core::CoreError),
    /// The v2 server key could not be read or created.
    #[error("server key {path}: {message}")]
    ServerKey {
        /// The key file.
        path: String,
        /// Why.
        message: String,
    },
}

/// The text of [`StartError::Store`]: a damaged file's refusal already names the file and
/// what to run.
fn store_failure(path: &str, error: &eventdbx_store::StoreError) -> String {
    if error.is_damaged() {
        format!("refusing to start: {error}")
    } else {
        format!("cannot open the event store at {path}: {error}")
    }
}

/// An opened server: store, token authority, tenants and the v2 key, ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<ServerState>,
    /// On a shared database: its control documents and their revisions when they were loaded.
    documents: Option<(Arc<dyn ControlDocuments>, BTreeMap<String, u64>)>,
}

impl Server {
    /// Opens the data directory of `config`: the store (with its durability), the token
    /// authority, tenant metadata and the v2 static key (created on first start, mode 0600).
    pub fn open(config: Config) -> Result<Self, StartError> {
        let store_path = config.store_path();
        if let Some(parent) = store_path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| StartError::Store {
                path: store_path.display().to_string(),
                error: eventdbx_store::StoreError::storage("cannot create the data directory", err),
            })?;
        }
        let (storage, documents) =
            config
                .open_storage_shared()
                .map_err(|err| StartError::Store {
                    path: err.location,
                    error: err.source,
                })?;
        // Read before anything is loaded: a change made meanwhile is then reloaded at once.
        let documents = match documents {
            Some(documents) => {
                let seen = documents.revisions().map_err(|error| StartError::Store {
                    path: "the shared control documents".to_owned(),
                    error,
                })?;
                Some((documents, seen))
            }
            None => None,
        };
        let shared = documents
            .as_ref()
            .map(|(documents, _)| Arc::clone(documents));
        let auth = open_authority_in(&config, shared.clone())?;
        let tenants = match &shared {
            Some(documents) => {
                Tenants::open_shared(Arc::clone(documents), config.tenants.shard_count)
            }
            None => Tenants::open(
                &config.data_dir,
                &config.tenant_meta_dir(),
                config.tenants.shard_count,
            ),
        }
        .map_err(StartError::Tenants)?;
        let server_key = load_or_create_server_key(&config)?;
        let policy = eventdbx_core::plugin::RetryPolicy {
            max_attempts: config.plugin_max_attempts,
            backoff_unit_ms: config.plugin_queue.backoff_unit_ms,
        };
        let plugins = match shared {
            Some(documents) => Plugins::open_shared(&config.data_dir, policy, documents),
            None => Plugins::open(&config.data_dir, policy),
        }
        .map_err(StartError::Plugins)?
        .with_lease(config.plugin_queue.lease_ms);
        tracing::info!(
            durability = storage.events.durability().as_str(),
            fingerprint = %server_key.fingerprint(),
            "server opened"
        );
        if storage.events.durability() == eventdbx_store::Durability::Relaxed {
            tracing::warn!(
                "durability is relaxed: writes are acknowledged before they reach the disk \
                 (flushed within 50 ms); a crash or power loss can lose the latest ones"
            );
        }
        Ok(Server {
            state: Arc::new(ServerState {
                config,
                heads: {
                    let heads = Arc::new(crate::heads::CommitHeads::default());
                    // An engine without positions refuses: its subscriptions are refused too,
                    // when they first read.
                    let _ = storage.events.listen_commits(heads.listener());
                    heads
                },
                store: storage.events,
                jobs: storage.jobs,
                auth: Arc::new(auth),
                tenants: Arc::new(tenants),
                server_key,
                metrics: Metrics::default(),
                log_bursts: crate::state::LogBursts::default(),
                plugins: Arc::new(plugins),
                registry_seen: std::sync::Mutex::new(None),
                tasks: TaskTracker::new(),
                #[cfg(feature = "test-hooks")]
                hooks: crate::state::Hooks::default(),
            }),
            documents,
        })
    }

    /// The token authority (to issue tokens, e.g. in tests and the CLI).
    pub fn auth(&self) -> &Authority {
        &self.state.auth
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The v2 server static key.
    pub fn fingerprint_key(&self) -> StaticKeypair {
        self.state.server_key.clone()
    }

    /// The v2 server key fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.state.server_key.fingerprint()
    }

    /// Test builds: the next subscription read waits, holding the server's state, until the
    /// returned hold is released or dropped.
    #[cfg(feature = "test-hooks")]
    pub fn hold_next_read(&self) -> crate::state::HeldRead {
        self.state.hooks.hold_next_read()
    }

    /// Serves the control protocol on `listener` until `shutdown` completes, then stops
    /// accepting, lets every connection finish its in-flight request (for at most
    /// [`DRAIN_TIMEOUT`], then aborts it), and returns once every task it started has ended and
    /// the store is closed: with no other clone of this `Server` alive, the store's files are
    /// then released, and the data directory can be opened again at once.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let gate = Arc::new(Gate::new(self.state.config.socket.message_budget_bytes));
        self.state.plugins.start(
            Arc::clone(&self.state.jobs),
            self.state.config.plugin_queue.prune.clone(),
        );
        // Tokens issued and revoked by the CLI (another process) reach this server here.
        let refresher = {
            let auth = Arc::clone(&self.state.auth);
            let every = Duration::from_secs(self.state.config.revocation_refresh_secs.max(1));
            // Its reload outlives an abort (a blocking call cannot be cut short): tracked.
            let tasks = self.state.tasks.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let auth = Arc::clone(&auth);
                    if let Ok(Err(err)) = tasks.spawn_blocking(move || auth.reload()).await {
                        tracing::warn!(error = %err, "could not refresh tokens and revocations");
                    }
                }
            })
        };
        // Changes other servers of a shared database make reach this one here.
        let poll = self.documents.clone().map(|(documents, seen)| {
            let poll = DocumentPoll::new(
                documents,
                seen,
                Arc::clone(&self.state.auth),
                Arc::clone(&self.state.tenants),
                Arc::clone(&self.state.plugins),
            );
            crate::control::spawn(
                poll,
                self.state.config.sync_interval(),
                self.state.tasks.clone(),
            )
        });
        let (notify_shutdown, _) = broadcast::channel::<()>(1);
        // Every connection task holds the state (and so the store) until it ends; `run` must
        // not return before the last one has, or a restart on the same directory finds the
        // database still locked.
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Accept errors (e.g. too many open files) are transient: back off.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(crate::state::ACCEPT_RETRY_DELAY).await;
                        continue;
                    }
                },
            };
            Metrics::add(&self.state.metrics.connections_accepted, 1);
            let (ticket, eviction, evicted) = gate.admit(peer.ip());
            if evicted > 0 {
                Metrics::add(&self.state.metrics.preauth_rejected, evicted);
                if let Some(unsaid) = self.state.log_bursts.limits.admit() {
                    tracing::warn!(
                        %peer,
                        budget = connection::admission::MAX_PREAUTH,
                        per_address = connection::admission::MAX_PREAUTH_PER_IP,
                        similar_since_last_line = unsaid,
                        "too many connections without a completed handshake: closing the oldest"
                    );
                }
            }
            let state = Arc::clone(&self.state);
            let shutdown = notify_shutdown.subscribe();
            connections.spawn(async move {
                Metrics::add(&state.metrics.connections_open, 1);
                connection::serve(Arc::clone(&state), socket, peer, ticket, eviction, shutdown)
                    .await;
                state
                    .metrics
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(%peer, "connection closed");
            });
        }
        drop(listener);
        gate.close_pending();
        refresher.abort();
        if let Some(poll) = &poll {
            poll.abort();
        }
        drop(notify_shutdown);
        drain(&mut connections).await;
        // An aborted task still owns what it captured until its handle resolves.
        let _ = refresher.await;
        if let Some(poll) = poll {
            let _ = poll.await;
        }
        self.state.plugins.shutdown().await;
        // What the sessions started apart was ended (aborted) by its owners as the sessions
        // ended; what is left is being dropped, or is a blocking call, which ends on its own.
        self.state.tasks.close();
        #[cfg(feature = "test-hooks")]
        if !self.state.tasks.is_empty() {
            self.state.hooks.waiting_for_tasks.notify_one();
        }
        self.state.tasks.wait().await;
        self.state.store.close();
        Ok(())
    }

    /// Serves `/health` and `/metrics` on `listener` until `shutdown` completes.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        crate::http::serve(Arc::clone(&self.state), listener, shutdown).await
    }
}

/// Waits for every connection task to end, for at most [`DRAIN_TIMEOUT`]; then aborts the ones
/// left and waits until they are dropped (an aborted task holds what it captured, the state
/// among it, until then).
async fn drain(connections: &mut JoinSet<()>) {
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still busy {DRAIN_TIMEOUT:?} after the shutdown began: aborting them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// The token authority's settings for a server configuration.
pub fn authority_config(config: &Config) -> AuthConfig {
    AuthConfig {
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        default_ttl_secs: config.auth.default_ttl_secs,
        clock_skew_secs: config.auth.clock_skew_secs,
        key_id: config.auth.key_id.clone(),
        signing_key_file: config.signing_key_path(),
        state_dir: config.auth_state_dir(),
    }
}

/// The token authority of `config` outside a running server (`dbx token`): the files of its
/// data directory, or on a shared database (`[storage] backend = "postgres"`) its control
/// documents, which every server there reads.
pub fn open_authority(config: &Config) -> Result<Authority, StartError> {
    if config.storage.backend != "postgres" {
        return open_authority_in(config, None);
    }
    let (_, documents) = config
        .open_storage_shared()
        .map_err(|err| StartError::Store {
            path: err.location,
            error: err.source,
        })?;
    open_authority_in(config, documents)
}

fn open_authority_in(
    config: &Config,
    documents: Option<Arc<dyn ControlDocuments>>,
) -> Result<Authority, StartError> {
    let auth = authority_config(config);
    Ok(match documents {
        Some(documents) => Authority::open_shared(auth, KeyOverrides::from_env(), documents)?,
        None => Authority::open_with(auth, KeyOverrides::from_env())?,
    })
}

/// Loads the v2 static key of a data directory without opening anything else (for
/// `dbx key fingerprint`); `None` when the server has not created it yet.
pub fn read_server_key(config: &Config) -> Result<Option<StaticKeypair>, StartError> {
    if !config.server_key_path().exists() {
        return Ok(None);
    }
    load_or_create_server_key(config).map(Some)
}

/// Opens the server from `config` and serves the control protocol until `shutdown`; returns once
/// the store is closed and its files released (see [`Server::run`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = Server::open(config)?;
    server.run(listener, shutdown).await?;
    Ok(())
}

fn load_or_create_server_key(config: &Config) -> Result<StaticKeypair, StartError> {
    let path = config.server_key_path();
    let error = |message: String| StartError::ServerKey {
        path: path.display().to_string(),
        message,
    };
    if path.exists() {
        let bytes = crate::fs::read_secret(&path).map_err(|err| error(err.to_string()))?;
        let private: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| error(format!("expected 32 bytes, found {}", bytes.len())))?;
        return Ok(StaticKeypair::from_private(private));
    }
    let key = StaticKeypair::generate().map_err(|err| error(err.to_string()))?;
    crate::fs::write_secret(&path, key.private_bytes()).map_err(|err| error(err.to_string()))?;
    Ok(key)
}
