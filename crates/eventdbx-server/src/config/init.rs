//! `dbx init` without the keys and tokens: a workspace directory with the default config and
//! an empty, owner-only secrets directory.

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
