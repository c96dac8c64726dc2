//! A [`Config`] written back as TOML that [`Config::from_toml_str`] reads to an equal value:
//! the serde derive on [`Config`] gives the shape, these functions the few values whose text
//! differs from their Rust form.

use eventdbx_core::plugin::RetryPolicy;
use eventdbx_core::schema::RestrictMode;
use eventdbx_store::Durability;
use serde::Serializer;

use super::{Config, ConfigError};

impl Config {
    /// Writes the config as TOML that [`Config::from_toml_str`] reads back to an equal value.
    /// Unset optional keys are left out. The config holds no key material, so neither does
    /// the text: secrets stay in their files, named only by path.
    ///
    /// Fails only for a config no file could hold: a path that is not UTF-8, or a number
    /// above `i64::MAX`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|err| ConfigError::Render {
            message: err.to_string(),
        })
    }
}

pub(super) fn restrict<S: Serializer>(mode: &RestrictMode, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(match mode {
        RestrictMode::Off => "off",
        RestrictMode::Default => "default",
        RestrictMode::Strict => "strict",
    })
}

pub(super) fn durability<S: Serializer>(mode: &Durability, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(mode.as_str())
}

pub(super) fn is_default_backoff(unit_ms: &u64) -> bool {
    *unit_ms == RetryPolicy::default().backoff_unit_ms
}

pub(super) fn is_default_lease(lease_ms: &u64) -> bool {
    *lease_ms == eventdbx_core::plugin::PROCESSING_DEADLINE_MS
}

pub(super) fn is_default_pool_size(size: &u32) -> bool {
    *size == super::DEFAULT_POOL_SIZE
}

pub(super) fn is_default_checkpoint_bytes(bytes: &u64) -> bool {
    *bytes == eventdbx_store::DEFAULT_CHECKPOINT_BYTES
}

pub(super) fn is_false(value: &bool) -> bool {
    !*value
}

pub(super) fn is_default_statement_timeout(ms: &u64) -> bool {
    *ms == super::DEFAULT_STATEMENT_TIMEOUT_MS
}

pub(super) fn is_default_sync_interval(ms: &u64) -> bool {
    *ms == super::DEFAULT_SYNC_INTERVAL_MS
}
