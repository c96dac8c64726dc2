//! The server configuration: `.dbx/config.toml` (every key is described in
//! `docs/configuration.md`), its discovery and workspace initialisation (`dbx init`).
//!
//! ```
//! use eventdbx_server::config::Config;
//! use std::path::Path;
//!
//! let config = Config::from_toml_str("port = 8080\n[storage]\ndurability = \"relaxed\"\n",
//!     Path::new("/srv/app/.dbx"))?;
//! assert_eq!(config.http_bind_addr(), "127.0.0.1:8080");
//! assert_eq!(config.data_dir, Path::new("/srv/app/.dbx"));
//! # Ok::<(), eventdbx_server::config::ConfigError>(())
//! ```
//!
//! # Layout
//! - [`Config`] holds every key with its default, typed and validated; relative paths in the
//!   file resolve against the file's directory. Unknown keys are ignored with a warning, keys
//!   of the reference server are handled as `docs/configuration.md` says (`no_noise` is an alias
//!   of `allow_plaintext`, `data_encryption_key` is ignored, `[auth] private_key`/`public_key`
//!   are refused). The model and its defaults are here; `load` reads a file into it (serde,
//!   then validated and clamped), `render` writes it back as TOML (serde), `edit` changes keys
//!   of an existing file keeping its comments (`toml_edit`), `paths` derives every file and
//!   directory the server uses from it.
//! - [`init_workspace`] (`init`): `dbx init` without the keys and tokens (the auth module makes
//!   those).
//! - Secret files and atomic writes are [`crate::fs`]'s.

mod backend;
mod edit;
mod init;
mod load;
mod paths;
mod render;

pub use backend::{StorageOpenError, POSTGRES_URL_ENV};
pub use edit::ConfigValue;
pub use init::{
    init_workspace, init_workspace_with, postgres_url_has_password, InitOutcome, InitStorage,
};

use std::io;
use std::path::{Path, PathBuf};

use eventdbx_core::plugin::RetryPolicy;
use eventdbx_core::schema::RestrictMode;
use eventdbx_proto::noise::v2::DEFAULT_MAX_MESSAGE;
use eventdbx_store::Durability;
use serde::Serialize;

use crate::auth::{DEFAULT_CLOCK_SKEW_SECS, DEFAULT_TTL_SECS};
/// Name of the workspace directory.
pub const WORKSPACE_DIR: &str = ".dbx";
/// Name of the config file inside the workspace directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Smallest `[plugin_queue.prune] interval_secs`; smaller values are raised to it.
pub const MIN_PRUNE_INTERVAL_SECS: u64 = 60;
/// Default `[socket] busy_poll_us`.
pub const DEFAULT_BUSY_POLL_US: u64 = 50;
/// Largest `[socket] busy_poll_us`; larger values are lowered to it.
pub const MAX_BUSY_POLL_US: u64 = 1000;
/// Default `[socket] message_budget_bytes`: four largest messages at once.
pub const DEFAULT_MESSAGE_BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest `[socket] message_budget_bytes`; smaller values are raised to it.
pub const MIN_MESSAGE_BUDGET_BYTES: u64 = 64 * 1024;
/// Default `[socket] message_timeout_ms`.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// Smallest `[socket] message_timeout_ms`; smaller values are raised to it.
pub const MIN_MESSAGE_TIMEOUT_MS: u64 = 100;
/// Default `[socket] answer_timeout_ms`.
pub const DEFAULT_ANSWER_TIMEOUT_MS: u64 = 30_000;
/// Smallest `[socket] answer_timeout_ms`; smaller values are raised to it.
pub const MIN_ANSWER_TIMEOUT_MS: u64 = 100;

/// A config file or value that cannot be used. Every message names the file (or "config text"
/// for [`Config::from_toml_str`]) and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The text is not TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Parse {
        /// The file, or "config text".
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("{origin}: `{key}`: {message}")]
    InvalidValue {
        /// The file, or "config text".
        origin: String,
        /// The dotted key, such as `auth.default_ttl_secs`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A config that cannot be written as TOML (a path that is not UTF-8, a number above
    /// `i64::MAX`).
    #[error("cannot write the config as TOML: {message}")]
    Render {
        /// The serializer's message.
        message: String,
    },
    /// Key material in the config file: keys live in owner-only files (`docs/configuration.md`).
    #[error(
        "{origin}: `{key}` is not accepted in the config file: keys live in files of mode 0600 \
         (the token signing key in `<data_dir>/secrets/token_signing.key`, or `[auth] \
         signing_key_file`); remove `{key}` from the file"
    )]
    SecretInConfig {
        /// The file, or "config text".
        origin: String,
        /// The dotted key.
        key: String,
    },
}

/// `[socket]`: the control-protocol listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketConfig {
    /// Address the control socket binds; `127.0.0.1:6363` (the reference binds `0.0.0.0`).
    pub bind_addr: String,
    /// `busy_poll_us` (ours; 50): the longest time, in microseconds, a session whose
    /// conversation is hot polls its socket with non-blocking reads after answering, before it
    /// parks until the socket is readable. A sequential client's next request then finds the
    /// server running, instead of on a CPU that went idle and must be woken (tens of
    /// microseconds on a VM whose idle vCPUs halt). Adaptive: a session polls only when it has
    /// nothing in flight and nothing buffered, after requests that came within a millisecond of
    /// the answer before them; polls that catch a request keep the whole budget, polls that end
    /// with nothing halve it down to no polling at all, and each such cool-down doubles the
    /// quick requests needed before the next poll (1, 2, 4, … 1,024), so an idle or slow
    /// connection costs next to nothing. At most one session per runtime worker but one (at
    /// least one) polls at a time, none on a single CPU. Polling time is CPU time. `0` disables
    /// it; at most 1000.
    pub busy_poll_us: u64,
    /// `message_budget_bytes` (ours; 64 MiB): bytes of messages being received (and then
    /// answered) across all connections at once. A message of several chunks reserves its
    /// announced length before it is reassembled; when the budget is spent its session stops
    /// reading until earlier ones are answered (`docs/server.md`, "Connection limits").
    pub message_budget_bytes: u64,
    /// `message_timeout_ms` (ours; 30,000): time a message has, from its first byte (or from
    /// its turn in the budget), to arrive whole; a session that stalls mid-message is closed.
    pub message_timeout_ms: u64,
    /// `answer_timeout_ms` (ours; 30,000): time the peer may take no byte of an answer (or of a
    /// subscription's batch) being written; a session whose peer stops reading is closed. A
    /// peer that reads slowly keeps it open as long as it takes some of the answer.
    pub answer_timeout_ms: u64,
}

/// `[http]`: the health and metrics listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HttpConfig {
    /// Address the HTTP listener binds; `None` means `127.0.0.1:<port>`.
    pub bind_addr: Option<String>,
}

/// `[tenants]`: tenant placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantsConfig {
    /// When true the hello must name a tenant.
    pub multi_tenant: bool,
    /// Number of shards, at least 1 (default 16).
    pub shard_count: u32,
    /// Directory of tenant metadata; `None` means `<data_dir>/tenant_meta`.
    pub shard_map_path: Option<PathBuf>,
}

/// `[auth]`: token issuing and checking. Holds no key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthSection {
    /// `iss` of issued tokens (`eventdbx://self`).
    pub issuer: String,
    /// `aud` of issued tokens (`eventdbx-clients`).
    pub audience: String,
    /// Lifetime of a token issued without one, at least 60 s (default 3600).
    pub default_ttl_secs: u64,
    /// Tolerated clock difference when checking `exp`/`nbf`, 0–300 s (default 30).
    pub clock_skew_secs: u64,
    /// `kid` of the signing key; `None` until the auth module generates one.
    pub key_id: Option<String>,
    /// The token signing key file; `None` means `<data_dir>/secrets/token_signing.key`.
    pub signing_key_file: Option<PathBuf>,
}

/// `[storage]`: where and how events are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageConfig {
    /// `embedded` (the default) or `postgres`.
    pub backend: String,
    /// PostgreSQL connection URL for the `postgres` backend (`DBX_POSTGRES_URL` overrides it).
    pub url: Option<String>,
    /// `sync`/`fsync` (acknowledge after fsync, the default) or `relaxed`.
    #[serde(serialize_with = "render::durability")]
    pub durability: Durability,
    /// Connections in the `postgres` backend's pool, at least 1 (16). Written only when changed.
    #[serde(skip_serializing_if = "render::is_default_pool_size")]
    pub pool_size: u32,
    /// The `postgres` backend's statement timeout in ms, 0 for none (30,000). Written only when
    /// changed.
    #[serde(skip_serializing_if = "render::is_default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// How often a `postgres` server polls the shared control documents for changes made by
    /// the others, in ms, at least 10 (1,000). Written only when changed.
    #[serde(skip_serializing_if = "render::is_default_sync_interval")]
    pub sync_interval_ms: u64,
    /// The embedded engine's write-ahead log size that triggers a checkpoint (32 MiB), at
    /// least [`MIN_CHECKPOINT_BYTES`]. Written only when changed.
    #[serde(skip_serializing_if = "render::is_default_checkpoint_bytes")]
    pub checkpoint_bytes: u64,
    /// Whether the embedded engine writes its write-ahead log with `O_DIRECT | O_DSYNC` where
    /// the filesystem allows it (true) or with buffered writes and `fdatasync` (false, the
    /// default). Written only when changed.
    #[serde(skip_serializing_if = "render::is_false")]
    pub wal_direct_io: bool,
}

/// The smallest `[storage] checkpoint_bytes` (a checkpoint after every batch).
pub const MIN_CHECKPOINT_BYTES: u64 = 1;

/// `[storage] pool_size` when the file has none.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// `[storage] sync_interval_ms` when the file has none.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1_000;

/// The shortest `[storage] sync_interval_ms`.
pub const MIN_SYNC_INTERVAL_MS: u64 = 10;

/// `[storage] statement_timeout_ms` when the file has none.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// `[plugin_queue]`: the plugin delivery outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginQueueConfig {
    /// `[plugin_queue] backoff_unit_ms` (ours): the retry backoff unit; the default 1,000 gives
    /// retries after 1 s, 2 s, 4 s, 10 s. Only tests should lower it, so it is written only
    /// when changed.
    #[serde(skip_serializing_if = "render::is_default_backoff")]
    pub backoff_unit_ms: u64,
    /// `[plugin_queue] lease_ms` (ours): how long a claimed job is its server's; a job whose
    /// server died is delivered by another (sharing the PostgreSQL database) after it. The
    /// default is 60,000; written only when changed.
    #[serde(skip_serializing_if = "render::is_default_lease")]
    pub lease_ms: u64,
    /// `[plugin_queue.prune]`: removal of delivered jobs.
    pub prune: PruneConfig,
}

impl Default for PluginQueueConfig {
    fn default() -> Self {
        PluginQueueConfig {
            prune: PruneConfig::default(),
            backoff_unit_ms: RetryPolicy::default().backoff_unit_ms,
            lease_ms: eventdbx_core::plugin::PROCESSING_DEADLINE_MS,
        }
    }
}

/// `[plugin_queue.prune]`: removal of delivered jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneConfig {
    /// How long a delivered job is kept (86,400 s).
    pub done_ttl_secs: u64,
    /// How often pruning runs, at least 60 s (default 300).
    pub interval_secs: u64,
    /// Most delivered jobs kept regardless of age; `None` means no limit.
    pub max_done_jobs: Option<u64>,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            done_ttl_secs: 86_400,
            interval_secs: 300,
            max_done_jobs: None,
        }
    }
}

/// The server configuration: every key with its default (`docs/configuration.md`). Paths are
/// absolute once loaded from a file (relative ones resolve against the file's directory).
/// Serializes as the file's TOML; optional keys that are unset are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// HTTP health/metrics port (7070).
    pub port: u16,
    /// Data directory; the `.dbx` directory by default.
    pub data_dir: PathBuf,
    /// Default tenant (`default`).
    pub domain: String,
    /// When writes are validated against schemas. The file takes a string or a bool.
    #[serde(serialize_with = "render::restrict")]
    pub restrict: RestrictMode,
    /// Page size of a list without `take` (10).
    pub list_page_size: u64,
    /// Largest page (1000).
    pub page_limit: u64,
    /// Whether writes answer with the aggregate (true).
    pub verbose_responses: bool,
    /// Reference resolution depth when a request gives none (2).
    pub reference_default_depth: u32,
    /// Largest reference resolution depth (5).
    pub reference_max_depth: u32,
    /// Snowflake worker id, 0–1023, unique per server (0).
    pub snowflake_worker_id: u16,
    /// Delivery attempts before a plugin job is dead-lettered, at least 1 (10).
    pub plugin_max_attempts: u32,
    /// Reference cache threshold (10,000), alias `memory_threshold`; unused.
    pub cache_threshold: u64,
    /// Reference global snapshot threshold; unused (per-schema thresholds apply).
    pub snapshot_threshold: Option<u64>,
    /// Grant `noNoise` (plaintext) requests (false); `no_noise` is a deprecated alias.
    pub allow_plaintext: bool,
    /// Accept protocol v1 hellos (true).
    pub accept_v1: bool,
    /// Largest v2 logical message in bytes (16 MiB).
    pub max_message_bytes: u64,
    /// How long an idempotency key is remembered, in seconds (86,400).
    pub idempotency_ttl_secs: u64,
    /// How often the revocation list is re-read, in seconds (5).
    pub revocation_refresh_secs: u64,
    /// The v2 static key file; `None` means `<data_dir>/secrets/server_static.key`.
    pub server_key_file: Option<PathBuf>,
    /// RFC 3339 time `dbx init` created the workspace.
    pub created_at: Option<String>,
    /// RFC 3339 time the file was last written.
    pub updated_at: Option<String>,
    /// `[socket]`.
    pub socket: SocketConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[tenants]`.
    pub tenants: TenantsConfig,
    /// `[auth]`.
    pub auth: AuthSection,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[plugin_queue]`.
    pub plugin_queue: PluginQueueConfig,
}

impl Config {
    /// The defaults (ours where they differ from the reference server), with `data_dir`.
    pub fn defaults(data_dir: PathBuf) -> Self {
        Config {
            port: 7070,
            data_dir,
            domain: "default".to_owned(),
            restrict: RestrictMode::Default,
            list_page_size: 10,
            page_limit: 1000,
            verbose_responses: true,
            reference_default_depth: 2,
            reference_max_depth: 5,
            snowflake_worker_id: 0,
            plugin_max_attempts: RetryPolicy::default().max_attempts,
            cache_threshold: 10_000,
            snapshot_threshold: None,
            allow_plaintext: false,
            accept_v1: true,
            // Lossless: the wire default (16 MiB) fits in a u64.
            max_message_bytes: DEFAULT_MAX_MESSAGE as u64,
            idempotency_ttl_secs: 86_400,
            revocation_refresh_secs: 5,
            server_key_file: None,
            created_at: None,
            updated_at: None,
            socket: SocketConfig {
                bind_addr: "127.0.0.1:6363".to_owned(),
                busy_poll_us: DEFAULT_BUSY_POLL_US,
                message_budget_bytes: DEFAULT_MESSAGE_BUDGET_BYTES,
                message_timeout_ms: DEFAULT_MESSAGE_TIMEOUT_MS,
                answer_timeout_ms: DEFAULT_ANSWER_TIMEOUT_MS,
            },
            http: HttpConfig::default(),
            tenants: TenantsConfig {
                multi_tenant: false,
                shard_count: 16,
                shard_map_path: None,
            },
            auth: AuthSection {
                issuer: "eventdbx://self".to_owned(),
                audience: "eventdbx-clients".to_owned(),
                default_ttl_secs: DEFAULT_TTL_SECS,
                clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
                key_id: None,
                signing_key_file: None,
            },
            storage: StorageConfig {
                backend: "embedded".to_owned(),
                url: None,
                durability: Durability::Fsync,
                pool_size: DEFAULT_POOL_SIZE,
                statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
                sync_interval_ms: DEFAULT_SYNC_INTERVAL_MS,
                checkpoint_bytes: eventdbx_store::DEFAULT_CHECKPOINT_BYTES,
                wal_direct_io: false,
            },
            plugin_queue: PluginQueueConfig::default(),
        }
    }
    /// Parses config text. `base_dir` is the directory the text belongs to (the `.dbx`
    /// directory): `data_dir` defaults to it and relative paths resolve against it.
    ///
    /// Unknown keys are ignored with a warning; out-of-range values with a documented minimum
    /// or range are clamped with a warning; a wrong type, an unknown enumeration value, a
    /// `snowflake_worker_id` above 1023 and key material under `[auth]` are errors.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        load::parse(text, base_dir, "config text")
    }

    /// Reads and parses the config file at `path`; relative paths in it resolve against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let path = paths::absolute(path);
        let base_dir = path.parent().unwrap_or(Path::new("/"));
        load::parse(&text, base_dir, &path.display().to_string())
    }
    /// Writes [`Config::to_toml`] to `path` atomically (mode 0644), replacing the file and
    /// any comments in it ([`Config::edit_file`] keeps them).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        crate::fs::write_atomic(path, self.to_toml()?.as_bytes(), crate::fs::STATE_FILE_MODE)
            .map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
    }
}
