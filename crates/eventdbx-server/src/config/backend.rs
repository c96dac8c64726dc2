//! Which storage engine a config selects (`[storage] backend`), and opening it: the embedded
//! engine in `<data_dir>`, or PostgreSQL at `[storage] url` (or `DBX_POSTGRES_URL`) with the
//! configured pool size and statement timeout. On PostgreSQL the server also keeps its control
//! state (tokens, tenants, plugin definitions) in the database's control documents, shared by
//! every server on it (`docs/storage.md`, "Several servers").

use std::sync::Arc;
use std::time::Duration;

use eventdbx_store::documents::ControlDocuments;
use eventdbx_store::{Storage, StoreError};
use eventdbx_store_postgres::PostgresConfig;

use super::Config;

/// The environment variable that gives (and overrides) the `postgres` backend's URL, so a
/// password need not be written in the config file.
pub const POSTGRES_URL_ENV: &str = "DBX_POSTGRES_URL";

/// The store of a config could not be opened.
#[derive(Debug)]
pub struct StorageOpenError {
    /// Where: the database file, or the PostgreSQL URL without its password.
    pub location: String,
    /// Why.
    pub source: StoreError,
}

impl Config {
    /// Opens the configured engine. `DBX_POSTGRES_URL`, when set, is the `postgres` URL.
    pub fn open_storage(&self) -> Result<Storage, StorageOpenError> {
        self.open_storage_shared().map(|(storage, _)| storage)
    }

    /// [`Config::open_storage`], with the control documents the servers of a shared database
    /// keep their control state in: `None` for the embedded engine, whose server keeps files in
    /// its data directory.
    pub fn open_storage_shared(
        &self,
    ) -> Result<(Storage, Option<Arc<dyn ControlDocuments>>), StorageOpenError> {
        if self.storage.backend != "postgres" {
            let path = self.store_path();
            let options = eventdbx_store::EmbeddedOptions {
                checkpoint_bytes: self.storage.checkpoint_bytes,
                wal_direct_io: self.storage.wal_direct_io,
            };
            let storage = eventdbx_store::open_embedded_with(
                &path,
                self.storage.durability,
                self.snowflake_worker_id,
                options,
            )
            .map_err(|source| StorageOpenError {
                location: path.display().to_string(),
                source,
            })?;
            return Ok((storage, None));
        }
        let url = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
            .or_else(|| self.storage.url.clone())
            .ok_or_else(|| StorageOpenError {
                location: "postgres".to_owned(),
                source: StoreError::engine(format!(
                    "[storage] backend is postgres but neither [storage] url nor \
                     {POSTGRES_URL_ENV} gives the database URL"
                )),
            })?;
        let config = PostgresConfig {
            url: url.clone(),
            pool_size: self.storage.pool_size.max(1) as usize,
            statement_timeout: (self.storage.statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.storage.statement_timeout_ms)),
            durability: self.storage.durability,
            worker_id: self.snowflake_worker_id,
        };
        let (storage, documents) =
            eventdbx_store_postgres::open_postgres_shared(&config).map_err(|source| {
                StorageOpenError {
                    location: redact_password(&url),
                    source,
                }
            })?;
        Ok((storage, Some(documents)))
    }

    /// How often a server of a shared database polls the control documents.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(
            self.storage
                .sync_interval_ms
                .max(super::MIN_SYNC_INTERVAL_MS),
        )
    }
}

/// A URL fit for a log line: `postgres://user:secret@host/db` becomes
/// `postgres://user:***@host/db`; a key/value string loses its `password=` value.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((credentials, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = credentials.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::redact_password;
    use crate::config::{Config, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT_MS};

    #[test]
    fn checkpoint_bytes_loads_clamps_and_renders_only_when_changed() {
        let text = "[storage]\ncheckpoint_bytes = 65536\n";
        let config = Config::from_toml_str(text, Path::new("/w")).expect("config");
        assert_eq!(config.storage.checkpoint_bytes, 65_536);
        let rendered = config.to_toml().expect("render");
        assert!(rendered.contains("checkpoint_bytes = 65536"), "{rendered}");
        let again = Config::from_toml_str(&rendered, Path::new("/w")).expect("reload");
        assert_eq!(again, config, "{rendered}");
        let zero = Config::from_toml_str("[storage]\ncheckpoint_bytes = 0\n", Path::new("/w"))
            .expect("config");
        assert_eq!(zero.storage.checkpoint_bytes, 1, "raised to the minimum");
        let defaults = Config::defaults("/w".into());
        assert_eq!(
            defaults.storage.checkpoint_bytes,
            eventdbx_store::DEFAULT_CHECKPOINT_BYTES
        );
        let text = defaults.to_toml().expect("render");
        assert!(!text.contains("checkpoint_bytes"), "{text}");
    }

    #[test]
    fn wal_direct_io_loads_and_renders_only_when_changed() {
        let config = Config::from_toml_str("[storage]\nwal_direct_io = true\n", Path::new("/w"))
            .expect("config");
        assert!(config.storage.wal_direct_io);
        let rendered = config.to_toml().expect("render");
        assert!(rendered.contains("wal_direct_io = true"), "{rendered}");
        let again = Config::from_toml_str(&rendered, Path::new("/w")).expect("reload");
        assert_eq!(again, config, "{rendered}");
        let defaults = Config::defaults("/w".into());
        assert!(!defaults.storage.wal_direct_io);
        let text = defaults.to_toml().expect("render");
        assert!(!text.contains("wal_direct_io"), "{text}");
    }

    #[test]
    fn postgres_keys_load_clamp_and_render_back() {
        let text = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://dbx@db/events\"\n\
                    pool_size = 0\nstatement_timeout_ms = 0\n";
        let config = Config::from_toml_str(text, Path::new("/w")).expect("config");
        assert_eq!(config.storage.backend, "postgres");
        assert_eq!(
            config.storage.url.as_deref(),
            Some("postgres://dbx@db/events")
        );
        assert_eq!(config.storage.pool_size, 1, "raised to the minimum");
        assert_eq!(config.storage.statement_timeout_ms, 0, "0 means no limit");
        let rendered = config.to_toml().expect("render");
        let again = Config::from_toml_str(&rendered, Path::new("/w")).expect("reload");
        assert_eq!(again, config, "{rendered}");
        // Defaults are not written, so existing files and `dbx config` output do not change.
        let defaults = Config::defaults("/w".into());
        assert_eq!(defaults.storage.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(
            defaults.storage.statement_timeout_ms,
            DEFAULT_STATEMENT_TIMEOUT_MS
        );
        let text = defaults.to_toml().expect("render");
        assert!(
            !text.contains("pool_size") && !text.contains("statement_timeout_ms"),
            "{text}"
        );
    }

    #[test]
    fn the_postgres_backend_without_a_url_says_where_to_give_one() {
        if std::env::var_os(super::POSTGRES_URL_ENV).is_some() {
            // The environment gives a URL: this case cannot arise here.
            return;
        }
        let mut config = Config::defaults("/w".into());
        config.storage.backend = "postgres".into();
        let err = config.open_storage().expect_err("no url");
        let text = err.source.to_string();
        assert!(
            text.contains("[storage] url") && text.contains("DBX_POSTGRES_URL"),
            "{text}"
        );
    }

    #[test]
    fn passwords_never_reach_the_error_text() {
        assert_eq!(
            redact_password("postgres://dbx:s3cret@db.internal:5432/events"),
            "postgres://dbx:***@db.internal:5432/events"
        );
        assert_eq!(
            redact_password("postgres://dbx@db.internal/events"),
            "postgres://dbx@db.internal/events"
        );
        assert_eq!(
            redact_password("host=db user=dbx password=s3cret dbname=events"),
            "host=db user=dbx password=*** dbname=events"
        );
    }
}
