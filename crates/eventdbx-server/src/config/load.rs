//! Reading config text into a [`Config`]: every key typed and validated, documented ranges
//! clamped with a warning, unknown keys warned about, key material refused.

use std::path::{Path, PathBuf};

use eventdbx_core::schema::RestrictMode;
use eventdbx_core::snowflake::MAX_WORKER_ID;
use eventdbx_store::Durability;
use toml::{Table, Value};

use super::paths::resolve;
use super::{Config, ConfigError, MAX_BUSY_POLL_US, MIN_PRUNE_INTERVAL_SECS};
use crate::auth::{MAX_CLOCK_SKEW_SECS, MIN_TTL_SECS};

pub(super) fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
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
            .filter(|id| *id <= MAX_WORKER_ID)
            .ok_or_else(|| {
                root.invalid(
                    "snowflake_worker_id",
                    &format!("{id} is out of range; expected 0-{MAX_WORKER_ID}"),
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
            config.auth.default_ttl_secs = auth.at_least("default_ttl_secs", ttl, MIN_TTL_SECS);
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
