//! Every file and directory the server uses, derived from a [`Config`], and the path
//! arithmetic of loading one (relative paths resolve against the config file's directory).

use std::path::{Component, Path, PathBuf};

use super::{Config, CONFIG_FILE, WORKSPACE_DIR};

impl Config {
    /// Finds the config file: `.dbx/config.toml` in `start` or the nearest ancestor that has
    /// one. A relative `start` is taken from the current directory.
    pub fn discover(start: &Path) -> Option<PathBuf> {
        absolute(start)
            .ancestors()
            .map(|dir| dir.join(WORKSPACE_DIR).join(CONFIG_FILE))
            .find(|candidate| candidate.is_file())
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
/// `path` made absolute against the current directory, without touching the file system.
pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` resolved against `base` when relative, with `.` components removed.
pub(super) fn resolve(base: &Path, path: &Path) -> PathBuf {
    base.join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
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
}
