//! The server configuration: `.dbx/config.toml` (`02-server.md` §15), its discovery, secret
//! files ([`secrets`]) and workspace initialisation (§16 `dbx init`).
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
//! - [`Config`] holds every key of §15 with its default, typed and validated; relative paths
//!   in the file resolve against the file's directory. Unknown keys are ignored with a warning,
//!   reference-only keys are handled as §15 says (`no_noise` is an alias of `allow_plaintext`,
//!   `data_encryption_key` is ignored, `[auth] private_key`/`public_key` are refused).
//! - [`secrets`]: 0600 files for keys, atomic writes for state files.
//! - [`init_workspace`]: `dbx init` without the keys and tokens (the auth module makes those).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use eventdbx_core::schema::RestrictMode;
use eventdbx_store::Durability;
use toml::{Table, Value};

/// Name of the workspace directory.
pub const WORKSPACE_DIR: &str = ".dbx";
/// Name of the config file inside the workspace directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Largest allowed `snowflake_worker_id` (10 bits).
pub const MAX_SNOWFLAKE_WORKER_ID: u16 = 1023;
/// Smallest `[auth] default_ttl_secs`; smaller values are raised to it.
pub const MIN_TOKEN_TTL_SECS: u64 = 60;
/// Largest `[auth] clock_skew_secs`; larger values are lowered to it.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Smallest `[plugin_queue.prune] interval_secs`; smaller values are raised to it.
pub const MIN_PRUNE_INTERVAL_SECS: u64 = 60;
/// Default `[socket] busy_poll_us`.
pub const DEFAULT_BUSY_POLL_US: u64 = 50;
/// Largest `[socket] busy_poll_us`; larger values are lowered to it.
pub const MAX_BUSY_POLL_US: u64 = 1000;

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
    /// Key material in the config file, which §10.1 forbids.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Address the control socket binds; `127.0.0.1:6363` (the reference binds `0.0.0.0`).
    pub bind_addr: String,
    /// `busy_poll_us` (ours; 50): how long, in microseconds, a session whose conversation is
    /// hot polls its socket with non-blocking reads after answering, before it parks until the
    /// socket is readable. A sequential client's next request then finds the server running,
    /// instead of on a CPU that went idle and must be woken (tens of microseconds on a VM whose
    /// idle vCPUs halt). A session polls only when it has nothing in flight and nothing
    /// buffered, and its previous request came within a millisecond of the previous answer;
    /// after polls that end with no request it polls less often (every 2nd, 4th, … up to every
    /// 64th answer). At most one session per runtime worker but one (at least one) polls at a
    /// time, none on a single CPU. Polling time is CPU time. `0` disables it; at most 1000.
    pub busy_poll_us: u64,
}

/// `[http]`: the health and metrics listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpConfig {
    /// Address the HTTP listener binds; `None` means `127.0.0.1:<port>`.
    pub bind_addr: Option<String>,
}

/// `[tenants]`: tenant placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    /// When true the hello must name a tenant.
    pub multi_tenant: bool,
    /// Number of shards, at least 1 (default 16).
    pub shard_count: u32,
    /// Directory of tenant metadata; `None` means `<data_dir>/tenant_meta`.
    pub shard_map_path: Option<PathBuf>,
}

/// `[auth]`: token issuing and checking. Holds no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `embedded` (the default) or `postgres`.
    pub backend: String,
    /// PostgreSQL connection URL for the `postgres` backend.
    pub url: Option<String>,
    /// `sync`/`fsync` (acknowledge after fsync, the default) or `relaxed`.
    pub durability: Durability,
}

/// `[plugin_queue]`: the plugin delivery outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginQueueConfig {
    /// `[plugin_queue.prune]`: removal of delivered jobs.
    pub prune: PruneConfig,
    /// `[plugin_queue] backoff_unit_ms` (ours): the retry backoff unit; the default 1,000 gives
    /// the spec's 1 s, 2 s, 4 s, 10 s. Only tests should lower it.
    pub backoff_unit_ms: u64,
}

impl Default for PluginQueueConfig {
    fn default() -> Self {
        PluginQueueConfig {
            prune: PruneConfig::default(),
            backoff_unit_ms: 1000,
        }
    }
}

/// `[plugin_queue.prune]`: removal of delivered jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The server configuration (§15): every key with its default. Paths are absolute once loaded
/// from a file (relative ones resolve against the file's directory).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// HTTP health/metrics port (7070).
    pub port: u16,
    /// Data directory; the `.dbx` directory by default.
    pub data_dir: PathBuf,
    /// Default tenant (`default`).
    pub domain: String,
    /// When writes are validated against schemas (§6.2). The file takes a string or a bool.
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
    /// The defaults of §15 (ours where they differ from the reference), with `data_dir`.
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
            plugin_max_attempts: 10,
            cache_threshold: 10_000,
            snapshot_threshold: None,
            allow_plaintext: false,
            accept_v1: true,
            max_message_bytes: 16 * 1024 * 1024,
            idempotency_ttl_secs: 86_400,
            revocation_refresh_secs: 5,
            server_key_file: None,
            created_at: None,
            updated_at: None,
            socket: SocketConfig {
                bind_addr: "127.0.0.1:6363".to_owned(),
                busy_poll_us: DEFAULT_BUSY_POLL_US,
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
                default_ttl_secs: 3600,
                clock_skew_secs: 30,
                key_id: None,
                signing_key_file: None,
            },
            storage: StorageConfig {
                backend: "embedded".to_owned(),
                url: None,
                durability: Durability::Fsync,
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
        parse(text, base_dir, "config text")
    }

    /// Reads and parses the config file at `path`; relative paths in it resolve against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let path = absolute(path);
        let base_dir = path.parent().unwrap_or(Path::new("/"));
        parse(&text, base_dir, &path.display().to_string())
    }

    /// Finds the config file: `.dbx/config.toml` in `start` or the nearest ancestor that has
    /// one. A relative `start` is taken from the current directory.
    pub fn discover(start: &Path) -> Option<PathBuf> {
        absolute(start)
            .ancestors()
            .map(|dir| dir.join(WORKSPACE_DIR).join(CONFIG_FILE))
            .find(|candidate| candidate.is_file())
    }

    /// Writes the config as TOML that [`Config::from_toml_str`] reads back to an equal value.
    /// Unset optional keys are left out. The config holds no key material, so neither does
    /// the text: secrets stay in their files, named only by path.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("port", self.port.to_string());
        line("data_dir", quote_path(&self.data_dir));
        line("domain", quote(&self.domain));
        line("restrict", quote(restrict_name(self.restrict)));
        line("list_page_size", self.list_page_size.to_string());
        line("page_limit", self.page_limit.to_string());
        line("verbose_responses", self.verbose_responses.to_string());
        line(
            "reference_default_depth",
            self.reference_default_depth.to_string(),
        );
        line("reference_max_depth", self.reference_max_depth.to_string());
        line("snowflake_worker_id", self.snowflake_worker_id.to_string());
        line("plugin_max_attempts", self.plugin_max_attempts.to_string());
        line("cache_threshold", self.cache_threshold.to_string());
        if let Some(threshold) = self.snapshot_threshold {
            line("snapshot_threshold", threshold.to_string());
        }
        line("allow_plaintext", self.allow_plaintext.to_string());
        line("accept_v1", self.accept_v1.to_string());
        line("max_message_bytes", self.max_message_bytes.to_string());
        line(
            "idempotency_ttl_secs",
            self.idempotency_ttl_secs.to_string(),
        );
        line(
            "revocation_refresh_secs",
            self.revocation_refresh_secs.to_string(),
        );
        if let Some(path) = &self.server_key_file {
            line("server_key_file", quote_path(path));
        }
        if let Some(at) = &self.created_at {
            line("created_at", quote(at));
        }
        if let Some(at) = &self.updated_at {
            line("updated_at", quote(at));
        }

        let mut section = |name: &str, entries: Vec<(&str, String)>| {
            out.push_str("\n[");
            out.push_str(name);
            out.push_str("]\n");
            for (key, value) in entries {
                out.push_str(key);
                out.push_str(" = ");
                out.push_str(&value);
                out.push('\n');
            }
        };
        section(
            "socket",
            vec![
                ("bind_addr", quote(&self.socket.bind_addr)),
                ("busy_poll_us", self.socket.busy_poll_us.to_string()),
            ],
        );
        section(
            "http",
            self.http
                .bind_addr
                .iter()
                .map(|addr| ("bind_addr", quote(addr)))
                .collect(),
        );
        let mut tenants = vec![
            ("multi_tenant", self.tenants.multi_tenant.to_string()),
            ("shard_count", self.tenants.shard_count.to_string()),
        ];
        if let Some(path) = &self.tenants.shard_map_path {
            tenants.push(("shard_map_path", quote_path(path)));
        }
        section("tenants", tenants);
        let mut auth = vec![
            ("issuer", quote(&self.auth.issuer)),
            ("audience", quote(&self.auth.audience)),
            ("default_ttl_secs", self.auth.default_ttl_secs.to_string()),
            ("clock_skew_secs", self.auth.clock_skew_secs.to_string()),
        ];
        if let Some(kid) = &self.auth.key_id {
            auth.push(("key_id", quote(kid)));
        }
        if let Some(path) = &self.auth.signing_key_file {
            auth.push(("signing_key_file", quote_path(path)));
        }
        section("auth", auth);
        let mut storage = vec![("backend", quote(&self.storage.backend))];
        if let Some(url) = &self.storage.url {
            storage.push(("url", quote(url)));
        }
        storage.push(("durability", quote(self.storage.durability.as_str())));
        section("storage", storage);
        let prune = &self.plugin_queue.prune;
        let mut prune_entries = vec![
            ("done_ttl_secs", prune.done_ttl_secs.to_string()),
            ("interval_secs", prune.interval_secs.to_string()),
        ];
        if let Some(max) = prune.max_done_jobs {
            prune_entries.push(("max_done_jobs", max.to_string()));
        }
        if self.plugin_queue.backoff_unit_ms != 1000 {
            section(
                "plugin_queue",
                vec![(
                    "backoff_unit_ms",
                    self.plugin_queue.backoff_unit_ms.to_string(),
                )],
            );
        }
        section("plugin_queue.prune", prune_entries);
        out
    }

    /// Writes [`Config::to_toml`] to `path` atomically (mode 0644).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        crate::fs::write_atomic(path, self.to_toml().as_bytes(), crate::fs::STATE_FILE_MODE)
            .map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The directory of secret files: `<data_dir>/secrets`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.data_dir.join("secrets")
    }

    /// The token signing key file: `[auth] signing_key_file`, else
    /// `<data_dir>/secrets/token_signing.key`.
    pub fn signing_key_path(&self) -> PathBuf {
        self.auth
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.secrets_dir().join("token_signing.key"))
    }

    /// The v2 server static key file: `server_key_file`, else
    /// `<data_dir>/secrets/server_static.key`.
    pub fn server_key_path(&self) -> PathBuf {
        self.server_key_file
            .clone()
            .unwrap_or_else(|| self.secrets_dir().join("server_static.key"))
    }

    /// The HTTP listener address: `[http] bind_addr`, else `127.0.0.1:<port>`.
    pub fn http_bind_addr(&self) -> String {
        self.http
            .bind_addr
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port))
    }

    /// The directory of token state (issued and revoked tokens): `<data_dir>/auth`.
    pub fn auth_state_dir(&self) -> PathBuf {
        self.data_dir.join("auth")
    }

    /// The directory of tenant metadata: `[tenants] shard_map_path`, else
    /// `<data_dir>/tenant_meta`.
    pub fn tenant_meta_dir(&self) -> PathBuf {
        self.tenants
            .shard_map_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tenant_meta"))
    }

    /// The embedded store's database file: `<data_dir>/store/events.redb`.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store").join("events.redb")
    }
}

/// What [`init_workspace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new workspace; the path of its config file.
    Created(PathBuf),
    /// The workspace existed and was left untouched; the path of its config file.
    AlreadyInitialized(PathBuf),
}

impl InitOutcome {
    /// The workspace's config file.
    pub fn config_path(&self) -> &Path {
        match self {
            InitOutcome::Created(path) | InitOutcome::AlreadyInitialized(path) => path,
        }
    }
}

/// `dbx init` without keys or tokens (the auth module creates those): creates
/// `<dir>/.dbx/config.toml` with the defaults and `created_at`/`updated_at`, and
/// `<dir>/.dbx/secrets/` with mode 0700. `data_dir` is written as `"."`, so the workspace can
/// be moved. When the config file exists nothing is changed.
pub fn init_workspace(dir: &Path) -> Result<InitOutcome, ConfigError> {
    let workspace = absolute(dir).join(WORKSPACE_DIR);
    let config_path = workspace.join(CONFIG_FILE);
    if config_path.exists() {
        return Ok(InitOutcome::AlreadyInitialized(config_path));
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    std::fs::create_dir_all(&workspace).map_err(io_error(&workspace))?;
    let secrets_dir = workspace.join("secrets");
    crate::fs::create_dirs(&secrets_dir, crate::fs::SECRET_DIR_MODE)
        .map_err(io_error(&secrets_dir))?;
    // A secrets directory left by an earlier, interrupted init may have a wider mode.
    crate::fs::set_path_mode(&secrets_dir, crate::fs::SECRET_DIR_MODE)
        .map_err(io_error(&secrets_dir))?;

    let mut config = Config::defaults(PathBuf::from("."));
    let now = now_rfc3339();
    config.created_at = Some(now.clone());
    config.updated_at = Some(now);
    let text = format!(
        "# dbx workspace configuration (02-server.md §15). Relative paths resolve against this\n\
         # file's directory. Keys live in files of mode 0600 under secrets/, never here.\n{}",
        config.to_toml()
    );
    crate::fs::write_atomic(&config_path, text.as_bytes(), crate::fs::STATE_FILE_MODE)
        .map_err(io_error(&config_path))?;
    Ok(InitOutcome::Created(config_path))
}

/// The current time as RFC 3339 UTC with whole seconds.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eventdbx_core::time::format_unix_nanos(secs.saturating_mul(1_000_000_000))
}

fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn restrict_name(mode: RestrictMode) -> &'static str {
    match mode {
        RestrictMode::Off => "off",
        RestrictMode::Default => "default",
        RestrictMode::Strict => "strict",
    }
}

/// `path` made absolute against the current directory, without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` resolved against `base` when relative, with `.` components removed.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })?;
    let mut root = Section {
        origin,
        prefix: String::new(),
        table,
    };
    let base_dir = resolve(base_dir, Path::new("."));
    let data_dir = match root.path("data_dir", &base_dir)? {
        Some(dir) => dir,
        None => base_dir.clone(),
    };
    let mut config = Config::defaults(data_dir);

    if let Some(port) = root.int::<u16>("port", "a port number 0-65535")? {
        config.port = port;
    }
    if let Some(domain) = root.string("domain")? {
        if domain.trim().is_empty() {
            return Err(root.invalid("domain", "must not be empty"));
        }
        config.domain = domain;
    }
    match root.take("restrict") {
        None => {}
        Some(Value::Boolean(flag)) => config.restrict = RestrictMode::from_bool(flag),
        Some(Value::String(mode)) => {
            config.restrict = match mode.trim().to_ascii_lowercase().as_str() {
                "off" | "false" | "0" | "no" | "none" | "unrestricted" | "dev" | "default"
                | "true" | "on" | "yes" | "1" | "strict" | "all" | "enforced" => {
                    RestrictMode::parse(&mode)
                }
                _ => {
                    return Err(root.invalid(
                        "restrict",
                        &format!("unknown mode {mode:?}; expected off, default or strict"),
                    ))
                }
            }
        }
        Some(other) => {
            return Err(root.invalid(
                "restrict",
                &format!(
                    "expected a string (off, default, strict) or a bool, found {}",
                    other.type_str()
                ),
            ))
        }
    }
    set(&mut config.list_page_size, root.u64("list_page_size")?);
    set(&mut config.page_limit, root.u64("page_limit")?);
    set(
        &mut config.verbose_responses,
        root.bool("verbose_responses")?,
    );
    set(
        &mut config.reference_default_depth,
        root.int("reference_default_depth", "a depth 0-4294967295")?,
    );
    set(
        &mut config.reference_max_depth,
        root.int("reference_max_depth", "a depth 0-4294967295")?,
    );
    if let Some(id) = root.u64("snowflake_worker_id")? {
        config.snowflake_worker_id = u16::try_from(id)
            .ok()
            .filter(|id| *id <= MAX_SNOWFLAKE_WORKER_ID)
            .ok_or_else(|| {
                root.invalid(
                    "snowflake_worker_id",
                    &format!("{id} is out of range; expected 0-{MAX_SNOWFLAKE_WORKER_ID}"),
                )
            })?;
    }
    if let Some(attempts) = root.int::<u32>("plugin_max_attempts", "a count 1-4294967295")? {
        config.plugin_max_attempts = root.at_least("plugin_max_attempts", attempts, 1);
    }
    let cache = root.u64("cache_threshold")?;
    let memory = root.u64("memory_threshold")?;
    if memory.is_some() && cache.is_some() {
        root.warn(
            "memory_threshold",
            "deprecated alias of cache_threshold ignored: cache_threshold is also set",
        );
    }
    set(&mut config.cache_threshold, cache.or(memory));
    config.snapshot_threshold = root.u64("snapshot_threshold")?;

    let plaintext = root.bool("allow_plaintext")?;
    let no_noise = root.bool("no_noise")?;
    if no_noise.is_some() {
        if plaintext.is_some() {
            root.warn(
                "no_noise",
                "deprecated alias of allow_plaintext ignored: allow_plaintext is also set",
            );
        } else {
            root.warn(
                "no_noise",
                "deprecated: read as allow_plaintext; rename the key",
            );
        }
    }
    set(&mut config.allow_plaintext, plaintext.or(no_noise));
    set(&mut config.accept_v1, root.bool("accept_v1")?);
    if let Some(max) = root.u64("max_message_bytes")? {
        if max == 0 {
            return Err(root.invalid("max_message_bytes", "must be at least 1"));
        }
        config.max_message_bytes = max;
    }
    set(
        &mut config.idempotency_ttl_secs,
        root.u64("idempotency_ttl_secs")?,
    );
    set(
        &mut config.revocation_refresh_secs,
        root.u64("revocation_refresh_secs")?,
    );
    config.server_key_file = root.path("server_key_file", &base_dir)?;
    config.created_at = root.string("created_at")?;
    config.updated_at = root.string("updated_at")?;
    if root.take("data_encryption_key").is_some() {
        root.warn(
            "data_encryption_key",
            "ignored: encryption at rest is not part of this server",
        );
    }

    if let Some(mut socket) = root.section("socket")? {
        set(&mut config.socket.bind_addr, socket.string("bind_addr")?);
        if let Some(micros) = socket.u64("busy_poll_us")? {
            config.socket.busy_poll_us = if micros > MAX_BUSY_POLL_US {
                socket.warn(
                    "busy_poll_us",
                    &format!("{micros} is above the maximum {MAX_BUSY_POLL_US}; using {MAX_BUSY_POLL_US}"),
                );
                MAX_BUSY_POLL_US
            } else {
                micros
            };
        }
        socket.finish();
    }
    if let Some(mut http) = root.section("http")? {
        config.http.bind_addr = http.string("bind_addr")?;
        http.finish();
    }
    if let Some(mut tenants) = root.section("tenants")? {
        set(
            &mut config.tenants.multi_tenant,
            tenants.bool("multi_tenant")?,
        );
        if let Some(count) = tenants.int::<u32>("shard_count", "a count 1-4294967295")? {
            config.tenants.shard_count = tenants.at_least("shard_count", count, 1);
        }
        config.tenants.shard_map_path = tenants.path("shard_map_path", &base_dir)?;
        tenants.finish();
    }
    if let Some(mut auth) = root.section("auth")? {
        for key in ["private_key", "public_key"] {
            if auth.table.contains_key(key) {
                return Err(ConfigError::SecretInConfig {
                    origin: origin.to_owned(),
                    key: auth.dotted(key),
                });
            }
        }
        set(&mut config.auth.issuer, auth.string("issuer")?);
        set(&mut config.auth.audience, auth.string("audience")?);
        if let Some(ttl) = auth.u64("default_ttl_secs")? {
            config.auth.default_ttl_secs =
                auth.at_least("default_ttl_secs", ttl, MIN_TOKEN_TTL_SECS);
        }
        match auth.take("clock_skew_secs") {
            None => {}
            Some(Value::Integer(skew)) => {
                let clamped = skew.clamp(0, MAX_CLOCK_SKEW_SECS as i64);
                if clamped != skew {
                    auth.warn(
                        "clock_skew_secs",
                        &format!("{skew} is outside 0-{MAX_CLOCK_SKEW_SECS}; using {clamped}"),
                    );
                }
                config.auth.clock_skew_secs = clamped.unsigned_abs();
            }
            Some(other) => {
                return Err(auth.invalid(
                    "clock_skew_secs",
                    &format!("expected an integer, found {}", other.type_str()),
                ))
            }
        }
        config.auth.key_id = auth.string("key_id")?;
        config.auth.signing_key_file = auth.path("signing_key_file", &base_dir)?;
        auth.finish();
    }
    if let Some(mut storage) = root.section("storage")? {
        if let Some(backend) = storage.string("backend")? {
            let backend = backend.trim().to_ascii_lowercase();
            if backend != "embedded" && backend != "postgres" {
                return Err(storage.invalid(
                    "backend",
                    &format!("unknown backend {backend:?}; expected embedded or postgres"),
                ));
            }
            config.storage.backend = backend;
        }
        config.storage.url = storage.string("url")?;
        if let Some(mode) = storage.string("durability")? {
            config.storage.durability = match mode.trim().to_ascii_lowercase().as_str() {
                "sync" | "fsync" => Durability::Fsync,
                "relaxed" => Durability::Relaxed,
                _ => {
                    return Err(storage.invalid(
                        "durability",
                        &format!("unknown mode {mode:?}; expected sync (or fsync) or relaxed"),
                    ))
                }
            };
        }
        storage.finish();
    }
    if let Some(mut queue) = root.section("plugin_queue")? {
        set(
            &mut config.plugin_queue.backoff_unit_ms,
            queue.u64("backoff_unit_ms")?,
        );
        if let Some(mut prune) = queue.section("prune")? {
            let target = &mut config.plugin_queue.prune;
            set(&mut target.done_ttl_secs, prune.u64("done_ttl_secs")?);
            if let Some(interval) = prune.u64("interval_secs")? {
                target.interval_secs =
                    prune.at_least("interval_secs", interval, MIN_PRUNE_INTERVAL_SECS);
            }
            target.max_done_jobs = prune.u64("max_done_jobs")?;
            prune.finish();
        }
        queue.finish();
    }
    root.finish();
    Ok(config)
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// One table of the file being read; keys are removed as they are read, so what is left at
/// [`Section::finish`] is unknown.
struct Section<'a> {
    origin: &'a str,
    /// Dotted name of the table with a trailing dot, empty for the root.
    prefix: String,
    table: Table,
}

impl<'a> Section<'a> {
    fn dotted(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn invalid(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::InvalidValue {
            origin: self.origin.to_owned(),
            key: self.dotted(key),
            message: message.to_owned(),
        }
    }

    fn warn(&self, key: &str, message: &str) {
        tracing::warn!(file = %self.origin, key = %self.dotted(key), "config: {message}");
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.invalid(
                key,
                &format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn path(&mut self, key: &str, base_dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(text) if text.is_empty() => Err(self.invalid(key, "must not be empty")),
            Some(text) => Ok(Some(resolve(base_dir, Path::new(&text)))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Boolean(flag)) => Ok(Some(flag)),
            Some(other) => Err(self.invalid(
                key,
                &format!("expected true or false, found {}", other.type_str()),
            )),
        }
    }

    fn u64(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.int(key, "a non-negative integer")
    }

    /// An integer that fits `T`; `expected` describes the range for the error message.
    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Integer(n)) => T::try_from(n).map(Some).map_err(|_| {
                self.invalid(key, &format!("{n} is out of range; expected {expected}"))
            }),
            Some(other) => Err(self.invalid(
                key,
                &format!("expected {expected}, found {}", other.type_str()),
            )),
        }
    }

    /// `value`, raised to `min` with a warning when smaller.
    fn at_least<T: PartialOrd + Copy + std::fmt::Display>(&self, key: &str, value: T, min: T) -> T {
        if value < min {
            self.warn(
                key,
                &format!("{value} is below the minimum {min}; using {min}"),
            );
            min
        } else {
            value
        }
    }

    fn section(&mut self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        let origin = self.origin;
        match self.take(key) {
            None => Ok(None),
            Some(Value::Table(table)) => Ok(Some(Section {
                origin,
                prefix: format!("{}{key}.", self.prefix),
                table,
            })),
            Some(other) => Err(self.invalid(
                key,
                &format!("expected a table, found {}", other.type_str()),
            )),
        }
    }

    /// Warns about every key not read.
    fn finish(self) {
        for key in self.table.keys() {
            self.warn(key, "unknown key ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_drops_current_dir_components() {
        assert_eq!(
            resolve(Path::new("/a/.dbx"), Path::new(".")),
            PathBuf::from("/a/.dbx")
        );
        assert_eq!(
            resolve(Path::new("/a/.dbx"), Path::new("./x/./y")),
            PathBuf::from("/a/.dbx/x/y")
        );
        assert_eq!(
            resolve(Path::new("/a/.dbx"), Path::new("/abs")),
            PathBuf::from("/abs")
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = Config::from_toml_str("[tenants]\nshard_count = \"x\"\n", Path::new("/w"));
        let message = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("`tenants.shard_count`"), "{message}");
        let err = Config::from_toml_str("port = 70000\n", Path::new("/w"));
        let message = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("`port`") && message.contains("70000"),
            "{message}"
        );
    }

    #[test]
    fn unknown_restrict_and_backend_are_errors() {
        assert!(Config::from_toml_str("restrict = \"loose\"\n", Path::new("/w")).is_err());
        assert!(
            Config::from_toml_str("[storage]\nbackend = \"sqlite\"\n", Path::new("/w")).is_err()
        );
        assert!(
            Config::from_toml_str("[storage]\ndurability = \"maybe\"\n", Path::new("/w")).is_err()
        );
    }
}
