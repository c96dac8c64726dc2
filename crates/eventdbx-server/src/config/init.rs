//! `dbx init` without the keys and tokens: a workspace directory with the default config and
//! an empty, owner-only secrets directory; with `--postgres URL`, configured for the
//! PostgreSQL engine (`docs/configuration.md`, `[storage]`).

use std::path::{Path, PathBuf};

use super::paths::absolute;
use super::{Config, ConfigError, CONFIG_FILE, WORKSPACE_DIR};

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

/// Which engine a new workspace stores in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStorage {
    /// The embedded engine, in the data directory (the default).
    Embedded,
    /// PostgreSQL at this URL (`dbx init --postgres URL`).
    Postgres(String),
}

/// `dbx init` without keys or tokens (the auth module creates those): creates
/// `<dir>/.dbx/config.toml` with the defaults and `created_at`/`updated_at`, and
/// `<dir>/.dbx/secrets/` with mode 0700. `data_dir` is written as `"."`, so the workspace can
/// be moved. When the config file exists nothing is changed.
pub fn init_workspace(dir: &Path) -> Result<InitOutcome, ConfigError> {
    init_workspace_with(dir, &InitStorage::Embedded)
}

/// [`init_workspace`] with the engine to configure. A PostgreSQL URL is written to
/// `[storage] url` only when it carries no password: config.toml is not a secret file, so a
/// URL with a password is left out and must reach the server through `DBX_POSTGRES_URL`
/// ([`postgres_url_has_password`] tells the caller to say so).
pub fn init_workspace_with(dir: &Path, storage: &InitStorage) -> Result<InitOutcome, ConfigError> {
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
    if let InitStorage::Postgres(url) = storage {
        config.storage.backend = "postgres".to_owned();
        config.storage.url = (!postgres_url_has_password(url)).then(|| url.clone());
    }
    let now = eventdbx_core::time::now_rfc3339();
    config.created_at = Some(now.clone());
    config.updated_at = Some(now);
    let text = format!(
        "# dbx workspace configuration (docs/configuration.md). Relative paths resolve against\n\
         # this file's directory. Keys live in files of mode 0600 under secrets/, never here.\n{}",
        config.to_toml()?
    );
    crate::fs::write_atomic(&config_path, text.as_bytes(), crate::fs::STATE_FILE_MODE)
        .map_err(io_error(&config_path))?;
    Ok(InitOutcome::Created(config_path))
}

/// Whether a PostgreSQL URL (`postgres://user:secret@host/db`) or key/value string
/// (`host=db password=secret`) carries a password.
pub fn postgres_url_has_password(url: &str) -> bool {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let credentials = authority.rsplit_once('@').map(|(c, _)| c);
        let in_query = rest
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("password=")));
        return credentials.is_some_and(|c| c.contains(':')) || in_query;
    }
    url.split_whitespace()
        .any(|pair| pair.trim_start().starts_with("password="))
}

#[cfg(test)]
mod tests {
    use super::{init_workspace_with, postgres_url_has_password, InitStorage};
    use crate::config::Config;

    #[test]
    fn a_postgres_workspace_names_its_backend_and_keeps_passwords_out_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = "postgres://dbx@db.internal:5432/events";
        let outcome =
            init_workspace_with(dir.path(), &InitStorage::Postgres(url.into())).expect("init");
        let config = Config::load(outcome.config_path()).expect("load");
        assert_eq!(config.storage.backend, "postgres");
        assert_eq!(config.storage.url.as_deref(), Some(url));

        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "postgres://dbx:s3cret@db.internal:5432/events";
        let outcome =
            init_workspace_with(dir.path(), &InitStorage::Postgres(secret.into())).expect("init");
        let text = std::fs::read_to_string(outcome.config_path()).expect("read");
        assert!(!text.contains("s3cret"), "{text}");
        let config = Config::load(outcome.config_path()).expect("load");
        assert_eq!(config.storage.backend, "postgres");
        assert_eq!(config.storage.url, None);
    }

    #[test]
    fn passwords_are_found_in_both_url_forms() {
        assert!(postgres_url_has_password("postgres://dbx:pw@db/events"));
        assert!(postgres_url_has_password(
            "postgresql://dbx@db/events?password=pw"
        ));
        assert!(postgres_url_has_password("host=db user=dbx password=pw"));
        assert!(!postgres_url_has_password("postgres://dbx@db:5432/events"));
        assert!(!postgres_url_has_password("postgres://db/events?user=dbx"));
        assert!(!postgres_url_has_password("host=db user=dbx dbname=events"));
    }
}
