//! Reading config text into a [`Config`]. Serde derives the shape of the file ([`ConfigFile`]);
//! `serde_path_to_error` names the key whose value has the wrong type, `serde_ignored` reports
//! the keys nothing reads (warned about and dropped, as Cargo does with its manifests). Then
//! documented ranges are clamped with a warning, aliases resolved and key material refused.

use std::fmt;
use std::path::{Path, PathBuf};

use eventdbx_core::schema::RestrictMode;
use eventdbx_core::snowflake::MAX_WORKER_ID;
use eventdbx_store::Durability;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::paths::resolve;
use super::{
    Config, ConfigError, MAX_BUSY_POLL_US, MIN_ANSWER_TIMEOUT_MS, MIN_CHECKPOINT_BYTES,
    MIN_MESSAGE_BUDGET_BYTES, MIN_MESSAGE_TIMEOUT_MS, MIN_PRUNE_INTERVAL_SECS,
};
use crate::auth::{MAX_CLOCK_SKEW_SECS, MIN_TTL_SECS};

/// The file as written: every key optional, so an absent key keeps the default of
/// [`Config::defaults`]. Aliases and reference-only keys are here too, to be recognised.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigFile {
    port: Option<u16>,
    data_dir: Option<String>,
    domain: Option<String>,
    restrict: Option<RestrictSetting>,
    list_page_size: Option<u64>,
    page_limit: Option<u64>,
    verbose_responses: Option<bool>,
    reference_default_depth: Option<u32>,
    reference_max_depth: Option<u32>,
    snowflake_worker_id: Option<u64>,
    plugin_max_attempts: Option<u32>,
    cache_threshold: Option<u64>,
    /// The reference's name of `cache_threshold`.
    memory_threshold: Option<u64>,
    snapshot_threshold: Option<u64>,
    allow_plaintext: Option<bool>,
    /// The reference's name of `allow_plaintext`.
    no_noise: Option<bool>,
    accept_v1: Option<bool>,
    max_message_bytes: Option<u64>,
    idempotency_ttl_secs: Option<u64>,
    revocation_refresh_secs: Option<u64>,
    server_key_file: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    /// The reference's encryption at rest, which this server does not have.
    data_encryption_key: Option<IgnoredAny>,
    socket: SocketFile,
    http: HttpFile,
    tenants: TenantsFile,
    auth: AuthFile,
    storage: StorageFile,
    plugin_queue: PluginQueueFile,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SocketFile {
    bind_addr: Option<String>,
    busy_poll_us: Option<u64>,
    message_budget_bytes: Option<u64>,
    message_timeout_ms: Option<u64>,
    answer_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HttpFile {
    bind_addr: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TenantsFile {
    multi_tenant: Option<bool>,
    shard_count: Option<u32>,
    shard_map_path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthFile {
    issuer: Option<String>,
    audience: Option<String>,
    default_ttl_secs: Option<u64>,
    /// Signed so that a negative value is clamped to 0, like one above the maximum.
    clock_skew_secs: Option<i64>,
    key_id: Option<String>,
    signing_key_file: Option<String>,
    /// Key material: refused, whatever its value.
    private_key: Option<IgnoredAny>,
    public_key: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StorageFile {
    backend: Option<String>,
    url: Option<String>,
    durability: Option<String>,
    pool_size: Option<u32>,
    statement_timeout_ms: Option<u64>,
    sync_interval_ms: Option<u64>,
    checkpoint_bytes: Option<u64>,
    wal_direct_io: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PluginQueueFile {
    backoff_unit_ms: Option<u64>,
    lease_ms: Option<u64>,
    prune: PruneFile,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PruneFile {
    done_ttl_secs: Option<u64>,
    interval_secs: Option<u64>,
    max_done_jobs: Option<u64>,
}

/// `restrict`: a mode name or a bool (`true` is `default`, `false` is `off`).
struct RestrictSetting(RestrictMode);

impl<'de> Deserialize<'de> for RestrictSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeOrFlag;
        impl Visitor<'_> for ModeOrFlag {
            type Value = RestrictSetting;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (off, default, strict) or a bool")
            }

            fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
                Ok(RestrictSetting(RestrictMode::from_bool(flag)))
            }

            fn visit_str<E: de::Error>(self, mode: &str) -> Result<Self::Value, E> {
                match mode.trim().to_ascii_lowercase().as_str() {
                    "off" | "false" | "0" | "no" | "none" | "unrestricted" | "dev" | "default"
                    | "true" | "on" | "yes" | "1" | "strict" | "all" | "enforced" => {
                        Ok(RestrictSetting(RestrictMode::parse(mode)))
                    }
                    _ => Err(E::custom(format!(
                        "unknown mode {mode:?}; expected off, default or strict"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(ModeOrFlag)
    }
}

pub(super) fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
    let (file, unknown) = read(text, origin)?;
    let keys = Keys { origin };
    for key in &unknown {
        keys.warn(key, "unknown key ignored");
    }
    keys.build(file, base_dir)
}

/// The file's keys, typed, and the dotted names of the keys nothing reads.
fn read(text: &str, origin: &str) -> Result<(ConfigFile, Vec<String>), ConfigError> {
    let syntax_error = |err: toml::de::Error| ConfigError::Parse {
        origin: origin.to_owned(),
        message: err.message().to_owned(),
    };
    let document = toml::de::Deserializer::parse(text).map_err(syntax_error)?;
    let mut unknown = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path| unknown.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(document, &mut note_unknown);
    let file = serde_path_to_error::deserialize(tracked).map_err(|err| {
        let key = err.path().to_string();
        let message = err.inner().message().to_owned();
        // No key: the error is about the text as a whole.
        if key == "." {
            ConfigError::Parse {
                origin: origin.to_owned(),
                message,
            }
        } else {
            ConfigError::InvalidValue {
                origin: origin.to_owned(),
                key,
                message,
            }
        }
    })?;
    Ok((file, unknown))
}

/// Turns the file into a [`Config`]; names `origin` in errors and warnings.
struct Keys<'a> {
    origin: &'a str,
}

impl Keys<'_> {
    fn invalid(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::InvalidValue {
            origin: self.origin.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }

    fn warn(&self, key: &str, message: &str) {
        tracing::warn!(file = %self.origin, key = %key, "config: {message}");
    }

    fn path(
        &self,
        key: &str,
        text: Option<String>,
        base_dir: &Path,
    ) -> Result<Option<PathBuf>, ConfigError> {
        match text {
            None => Ok(None),
            Some(text) if text.is_empty() => Err(self.invalid(key, "must not be empty")),
            Some(text) => Ok(Some(resolve(base_dir, Path::new(&text)))),
        }
    }

    /// `value`, raised to `min` with a warning when smaller.
    fn at_least<T: PartialOrd + Copy + fmt::Display>(&self, key: &str, value: T, min: T) -> T {
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

    /// The preferred key's value, else its deprecated alias's, with a warning for the alias.
    fn alias<T>(
        &self,
        (key, value): (&str, Option<T>),
        (alias, old): (&str, Option<T>),
    ) -> Option<T> {
        match (&value, &old) {
            (Some(_), Some(_)) => self.warn(
                alias,
                &format!("deprecated alias of {key} ignored: {key} is also set"),
            ),
            (None, Some(_)) => {
                self.warn(alias, &format!("deprecated: read as {key}; rename the key"))
            }
            _ => {}
        }
        value.or(old)
    }

    fn build(&self, file: ConfigFile, base_dir: &Path) -> Result<Config, ConfigError> {
        let base_dir = resolve(base_dir, Path::new("."));
        let data_dir = self
            .path("data_dir", file.data_dir, &base_dir)?
            .unwrap_or_else(|| base_dir.clone());
        let mut config = Config::defaults(data_dir);

        set(&mut config.port, file.port);
        if let Some(domain) = file.domain {
            if domain.trim().is_empty() {
                return Err(self.invalid("domain", "must not be empty"));
            }
            config.domain = domain;
        }
        set(&mut config.restrict, file.restrict.map(|r| r.0));
        set(&mut config.list_page_size, file.list_page_size);
        set(&mut config.page_limit, file.page_limit);
        set(&mut config.verbose_responses, file.verbose_responses);
        set(
            &mut config.reference_default_depth,
            file.reference_default_depth,
        );
        set(&mut config.reference_max_depth, file.reference_max_depth);
        if let Some(id) = file.snowflake_worker_id {
            config.snowflake_worker_id = u16::try_from(id)
                .ok()
                .filter(|id| *id <= MAX_WORKER_ID)
                .ok_or_else(|| {
                self.invalid(
                    "snowflake_worker_id",
                    &format!("{id} is out of range; expected 0-{MAX_WORKER_ID}"),
                )
            })?;
        }
        if let Some(attempts) = file.plugin_max_attempts {
            config.plugin_max_attempts = self.at_least("plugin_max_attempts", attempts, 1);
        }
        set(
            &mut config.cache_threshold,
            self.alias(
                ("cache_threshold", file.cache_threshold),
                ("memory_threshold", file.memory_threshold),
            ),
        );
        config.snapshot_threshold = file.snapshot_threshold;
        set(
            &mut config.allow_plaintext,
            self.alias(
                ("allow_plaintext", file.allow_plaintext),
                ("no_noise", file.no_noise),
            ),
        );
        set(&mut config.accept_v1, file.accept_v1);
        if let Some(max) = file.max_message_bytes {
            if max == 0 {
                return Err(self.invalid("max_message_bytes", "must be at least 1"));
            }
            config.max_message_bytes = max;
        }
        set(&mut config.idempotency_ttl_secs, file.idempotency_ttl_secs);
        set(
            &mut config.revocation_refresh_secs,
            file.revocation_refresh_secs,
        );
        config.server_key_file = self.path("server_key_file", file.server_key_file, &base_dir)?;
        config.created_at = file.created_at;
        config.updated_at = file.updated_at;
        if file.data_encryption_key.is_some() {
            self.warn(
                "data_encryption_key",
                "ignored: encryption at rest is not part of this server",
            );
        }

        set(&mut config.socket.bind_addr, file.socket.bind_addr);
        if let Some(micros) = file.socket.busy_poll_us {
            config.socket.busy_poll_us = if micros > MAX_BUSY_POLL_US {
                self.warn(
                    "socket.busy_poll_us",
                    &format!("{micros} is above the maximum {MAX_BUSY_POLL_US}; using {MAX_BUSY_POLL_US}"),
                );
                MAX_BUSY_POLL_US
            } else {
                micros
            };
        }
        if let Some(bytes) = file.socket.message_budget_bytes {
            config.socket.message_budget_bytes = self.at_least(
                "socket.message_budget_bytes",
                bytes,
                MIN_MESSAGE_BUDGET_BYTES,
            );
        }
        if let Some(millis) = file.socket.message_timeout_ms {
            config.socket.message_timeout_ms =
                self.at_least("socket.message_timeout_ms", millis, MIN_MESSAGE_TIMEOUT_MS);
        }
        if let Some(millis) = file.socket.answer_timeout_ms {
            config.socket.answer_timeout_ms =
                self.at_least("socket.answer_timeout_ms", millis, MIN_ANSWER_TIMEOUT_MS);
        }
        config.http.bind_addr = file.http.bind_addr;

        let tenants = file.tenants;
        set(&mut config.tenants.multi_tenant, tenants.multi_tenant);
        if let Some(count) = tenants.shard_count {
            config.tenants.shard_count = self.at_least("tenants.shard_count", count, 1);
        }
        config.tenants.shard_map_path =
            self.path("tenants.shard_map_path", tenants.shard_map_path, &base_dir)?;

        let auth = file.auth;
        for (key, material) in [
            ("auth.private_key", &auth.private_key),
            ("auth.public_key", &auth.public_key),
        ] {
            if material.is_some() {
                return Err(ConfigError::SecretInConfig {
                    origin: self.origin.to_owned(),
                    key: key.to_owned(),
                });
            }
        }
        set(&mut config.auth.issuer, auth.issuer);
        set(&mut config.auth.audience, auth.audience);
        if let Some(ttl) = auth.default_ttl_secs {
            config.auth.default_ttl_secs =
                self.at_least("auth.default_ttl_secs", ttl, MIN_TTL_SECS);
        }
        if let Some(skew) = auth.clock_skew_secs {
            let clamped = skew.clamp(0, MAX_CLOCK_SKEW_SECS as i64);
            if clamped != skew {
                self.warn(
                    "auth.clock_skew_secs",
                    &format!("{skew} is outside 0-{MAX_CLOCK_SKEW_SECS}; using {clamped}"),
                );
            }
            config.auth.clock_skew_secs = clamped.unsigned_abs();
        }
        config.auth.key_id = auth.key_id;
        config.auth.signing_key_file =
            self.path("auth.signing_key_file", auth.signing_key_file, &base_dir)?;

        let storage = file.storage;
        if let Some(backend) = storage.backend {
            let backend = backend.trim().to_ascii_lowercase();
            if backend != "embedded" && backend != "postgres" {
                return Err(self.invalid(
                    "storage.backend",
                    &format!("unknown backend {backend:?}; expected embedded or postgres"),
                ));
            }
            config.storage.backend = backend;
        }
        config.storage.url = storage.url;
        if let Some(size) = storage.pool_size {
            config.storage.pool_size = self.at_least("storage.pool_size", size, 1);
        }
        set(
            &mut config.storage.statement_timeout_ms,
            storage.statement_timeout_ms,
        );
        if let Some(ms) = storage.sync_interval_ms {
            config.storage.sync_interval_ms =
                self.at_least("storage.sync_interval_ms", ms, super::MIN_SYNC_INTERVAL_MS);
        }
        if let Some(bytes) = storage.checkpoint_bytes {
            config.storage.checkpoint_bytes =
                self.at_least("storage.checkpoint_bytes", bytes, MIN_CHECKPOINT_BYTES);
        }
        set(&mut config.storage.wal_direct_io, storage.wal_direct_io);
        if let Some(mode) = storage.durability {
            config.storage.durability = match mode.trim().to_ascii_lowercase().as_str() {
                "sync" | "fsync" => Durability::Fsync,
                "relaxed" => Durability::Relaxed,
                _ => {
                    return Err(self.invalid(
                        "storage.durability",
                        &format!("unknown mode {mode:?}; expected sync (or fsync) or relaxed"),
                    ))
                }
            };
        }

        let queue = file.plugin_queue;
        set(
            &mut config.plugin_queue.backoff_unit_ms,
            queue.backoff_unit_ms,
        );
        if let Some(lease) = queue.lease_ms {
            config.plugin_queue.lease_ms = self.at_least("plugin_queue.lease_ms", lease, 1);
        }
        let prune = &mut config.plugin_queue.prune;
        set(&mut prune.done_ttl_secs, queue.prune.done_ttl_secs);
        if let Some(interval) = queue.prune.interval_secs {
            prune.interval_secs = self.at_least(
                "plugin_queue.prune.interval_secs",
                interval,
                MIN_PRUNE_INTERVAL_SECS,
            );
        }
        prune.max_done_jobs = queue.prune.max_done_jobs;
        Ok(config)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        Config::from_toml_str(text, Path::new("/w"))
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn wrong_types_name_the_key() {
        let text = message("[tenants]\nshard_count = \"x\"\n");
        assert!(text.contains("`tenants.shard_count`"), "{text}");
        let text = message("port = 70000\n");
        assert!(text.contains("`port`") && text.contains("70000"), "{text}");
        let text = message("[socket]\nbusy_poll_us = \"fast\"\n");
        assert!(text.contains("`socket.busy_poll_us`"), "{text}");
        let text = message("restrict = 3\n");
        assert!(
            text.contains("`restrict`") && text.contains("off, default, strict"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() -> Result<(), ConfigError> {
        let text = "some_future_key = 1\nno_noise = true\n[socket]\nbind_adr = \"x\"\n\
                    [plugins]\nx = 1\n[plugin_queue.prune]\nkeep = 2\n";
        let (_, mut unknown) = read(text, "config text")?;
        unknown.sort();
        assert_eq!(
            unknown,
            [
                "plugin_queue.prune.keep",
                "plugins",
                "socket.bind_adr",
                "some_future_key",
            ]
        );
        Ok(())
    }

    #[test]
    fn a_syntax_error_is_a_parse_error() {
        assert!(matches!(
            Config::from_toml_str("port = \n", Path::new("/w")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn unknown_restrict_and_backend_are_errors() {
        assert!(message("restrict = \"loose\"\n").contains("unknown mode \"loose\""));
        assert!(message("[storage]\nbackend = \"sqlite\"\n").contains("`storage.backend`"));
        assert!(message("[storage]\ndurability = \"maybe\"\n").contains("`storage.durability`"));
    }
}
