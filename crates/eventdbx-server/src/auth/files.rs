//! Owner-only files written atomically: a temporary file in the same directory, fsync, rename
//! over the target, fsync of the directory. A crash leaves either the old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::AuthError;

/// Creates `dir` (and its parents) when missing; a directory this module creates gets mode 0700.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| storage(format!("cannot create directory {}", dir.display()), e))
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    ensure_private_dir(dir)?;
    let temp = temp_path(path);
    let result = write_temp_and_rename(&temp, path, bytes);
    if result.is_err() {
        // Best effort: a leftover temporary file holds nothing the target would not.
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| storage(format!("cannot write {}", path.display()), e))?;
    sync_dir(dir).map_err(|e| storage(format!("cannot sync {}", dir.display()), e))
}

fn write_temp_and_rename(temp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    // A fixed suffix would only risk a clash with a concurrent writer, so a failed random
    // source is not fatal here.
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}.tmp"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Reads a secret file, refusing one that group or others may access.
pub(crate) fn read_private(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(format!("cannot read {}", path.display()), e)),
    };
    check_owner_only(path, &meta)?;
    read_optional(path)
}

/// Reads a file that may be missing.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage(format!("cannot read {}", path.display()), e)),
    }
}

#[cfg(unix)]
fn check_owner_only(path: &Path, meta: &fs::Metadata) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::Config(format!(
            "secret file {} has mode {mode:04o}: it must not be accessible by group or others \
             (run `chmod 600 {}`)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _meta: &fs::Metadata) -> Result<(), AuthError> {
    Ok(())
}

fn storage(context: String, err: io::Error) -> AuthError {
    AuthError::Storage(format!("{context}: {err}"))
}
