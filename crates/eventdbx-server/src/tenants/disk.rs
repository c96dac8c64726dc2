//! The files behind tenant metadata: JSON replaced atomically (through [`crate::fs`], so a
//! reader or a crash sees either the old or the new content, never a torn file), and read back,
//! with failures in the tenants' error type.

use std::fs;
use std::io;
use std::path::Path;

use eventdbx_core::CoreError;

use crate::fs::{write_atomic as write_file_atomic, STATE_FILE_MODE};

/// Replaces `path` with `bytes` atomically and durably, creating its directory if needed.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    write_file_atomic(path, bytes, STATE_FILE_MODE).map_err(|err| io_error("write", path, &err))
}

/// The file's text, or `None` when it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, CoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("read", path, &err)),
    }
}

/// Whether `path` exists (an unreadable directory counts as absent).
pub(super) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// A file-system failure: code `io`, naming the file.
pub(super) fn io_error(action: &str, path: &Path, err: &io::Error) -> CoreError {
    CoreError::Io(format!("cannot {action} {}: {err}", path.display()))
}

/// A stored file (or shared document, `what` names it) whose content cannot be decoded.
pub(super) fn corrupt(what: &str, err: &impl std::fmt::Display) -> CoreError {
    CoreError::Config(format!("cannot load {what}: {err}"))
}
