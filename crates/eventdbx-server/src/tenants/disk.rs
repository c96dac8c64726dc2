//! The files behind tenant metadata: JSON replaced atomically, and read back.
//!
//! A replace writes a temporary file beside the target, flushes it to disk, renames it over the
//! target and flushes the directory, so a reader or a crash sees either the old or the new
//! content, never a torn file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use eventdbx_core::CoreError;

/// Distinguishes the temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably, creating its directory if needed.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    write_atomic_io(path, bytes).map_err(|err| io_error("write", path, &err))
}

fn write_atomic_io(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(err) = written {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    // The new content is already visible; a failed directory flush only weakens durability
    // across a crash, so memory must follow the file rather than report a failure.
    if let Err(err) = sync_dir(dir) {
        tracing::warn!(path = %path.display(), error = %err, "cannot flush directory after replace");
    }
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
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

/// A stored file whose content cannot be decoded.
pub(super) fn corrupt(path: &Path, err: &impl std::fmt::Display) -> CoreError {
    CoreError::Config(format!("cannot load {}: {err}", path.display()))
}
