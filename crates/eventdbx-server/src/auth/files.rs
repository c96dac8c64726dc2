//! The authority's files in its own error type: secrets (the signing key, the token-id
//! registry, the ledger) through [`crate::fs`]'s owner-only reader and atomic writer, and
//! plain state files that may be missing.

use std::io;
use std::path::Path;

use super::AuthError;
use crate::fs::{SecretError, SECRET_DIR_MODE};

/// Creates `dir` (and its parents) when missing; a directory this module creates gets mode 0700.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    crate::fs::create_dirs(dir, SECRET_DIR_MODE)
        .map_err(|e| storage(format!("cannot create directory {}", dir.display()), &e))
}

/// Writes `bytes` to `path` atomically with mode 0600, its missing directories with 0700.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    crate::fs::write_secret(path, bytes)
        .map_err(|e| storage(format!("cannot write {}", path.display()), &e))
}

/// Reads a secret file that may be missing, refusing one that group or others may access.
pub(crate) fn read_private(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    crate::fs::read_secret_if_present(path).map_err(|err| match err {
        SecretError::Io { source, .. } => {
            storage(format!("cannot read {}", path.display()), &source)
        }
        refused => AuthError::Config(refused.to_string()),
    })
}

/// Reads a file that may be missing.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage(format!("cannot read {}", path.display()), &e)),
    }
}

fn storage(context: String, err: &io::Error) -> AuthError {
    AuthError::Storage(format!("{context}: {err}"))
}
