//! Secret files (token signing key, server static key) and atomic writes of state files.
//!
//! Secrets never live in `config.toml` (`00-decisions.md`, `02-server.md` §10.1): each one is a
//! file of mode 0600 in a directory of mode 0700, and the server refuses to read one that group
//! or others may read or write. Every write goes to a temporary file in the same directory, is
//! fsynced, renamed over the target and the directory is fsynced, so a crash leaves either the
//! old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Mode of a secret file.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of a directory created to hold secret files.
pub const SECRET_DIR_MODE: u32 = 0o700;

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("cannot read secret file {}: {source}", path.display())]
    Io {
        /// The secret file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "secret file {} has mode {mode:04o}: group or others may access it; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names a directory or another non-regular file.
    #[error("secret file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
}

/// Writes a secret: creates missing parent directories with mode 0700, then writes `bytes`
/// atomically to `path` with mode 0600 ([`write_atomic`]).
///
/// Existing parent directories keep their mode; only the ones created here are 0700.
pub fn write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = parent_dir(path) {
        create_dirs(parent, SECRET_DIR_MODE)?;
    }
    write_atomic(path, bytes, SECRET_FILE_MODE)
}

/// Reads a secret file, refusing one that group or others may read or write (mode bits
/// `0o077`) or that is not a regular file. The mode is checked on the opened file, so a file
/// swapped in between the check and the read is still checked.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let io_error = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if let Some(mode) = group_or_other_access(&metadata) {
        return Err(SecretError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically with permission bits `mode`: a temporary file in the
/// same directory (created with `mode`, never wider), fsync, rename over `path`, fsync of the
/// directory. Missing parent directories are created with the process's default mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = parent_dir(path);
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(suffix)
    ));
    let temp = match dir {
        Some(dir) => dir.join(&temp_name),
        None => PathBuf::from(&temp_name),
    };
    let result = write_then_rename(&temp, path, bytes, mode);
    if result.is_err() {
        // Best effort: the temporary file is garbage whether or not this succeeds.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir.unwrap_or(Path::new(".")))
}

fn write_then_rename(temp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_create_mode(&mut options, mode);
    let mut file = options.open(temp)?;
    // The umask may have narrowed `mode`; set it exactly so a state file gets what was asked.
    set_mode(&file, mode)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

/// `path`'s parent, or `None` when it is relative with a single component.
fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Creates `dir` and its missing ancestors with permission bits `mode`.
pub(crate) fn create_dirs(dir: &Path, mode: u32) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

#[cfg(unix)]
fn set_create_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_create_mode(_options: &mut OpenOptions, _mode: u32) {}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Sets the permission bits of an existing directory or file.
#[cfg(unix)]
pub(crate) fn set_path_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Sets the permission bits of an existing directory or file (no-op off Unix).
#[cfg(not(unix))]
pub(crate) fn set_path_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// The permission bits when group or others have any access, `None` otherwise.
#[cfg(unix)]
fn group_or_other_access(metadata: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_other_access(_metadata: &fs::Metadata) -> Option<u32> {
    None
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for fsync off Unix; the rename is as durable as the platform
/// makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o644)?;
        write_atomic(&path, b"two", 0o644)?;
        assert_eq!(fs::read(&path)?, b"two");
        let names: Vec<_> = fs::read_dir(dir.path())?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        Ok(())
    }

    #[test]
    fn read_secret_refuses_a_directory() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let result = read_secret(dir.path());
        // Opening a directory succeeds on Unix; the metadata check then refuses it.
        assert!(matches!(
            result,
            Err(SecretError::NotAFile { .. } | SecretError::Io { .. })
        ));
        Ok(())
    }
}
