//! Every file the server (and `dbx`) writes, and every secret file it reads, goes through here.
//!
//! [`write_atomic`] writes to a temporary file in the same directory, fsyncs it, renames it over
//! the target and fsyncs the directory, so a reader or a crash sees either the old file or the
//! new one, never a torn one; a failed write removes its temporary file.
//!
//! Secrets (token signing key, server static key, token files) never live in `config.toml`:
//! each one is a file of mode 0600 in a directory of mode 0700 ([`write_secret`]), and
//! [`read_secret`] refuses one that group or others may read or write, or that is not a regular
//! file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a secret file.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of a directory created to hold secret files.
pub const SECRET_DIR_MODE: u32 = 0o700;
/// Mode of a state file anyone on the machine may read (configuration, tenant metadata).
pub const STATE_FILE_MODE: u32 = 0o644;

/// Distinguishes the temporary files of concurrent writers in one process; the process id
/// distinguishes processes, and `create_new` refuses a clash rather than sharing a file.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

/// [`read_secret`], with a missing file as `None` (a key or registry not created yet).
pub fn read_secret_if_present(path: &Path) -> Result<Option<Vec<u8>>, SecretError> {
    match read_secret(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes `bytes` to `path` atomically with permission bits `mode`: a temporary file in the
/// same directory (created with `mode`, never wider), fsync, rename over `path`, fsync of the
/// directory. Missing parent directories are created with the process's default mode.
///
/// The rename is the commit point: once it is done every reader sees the new content, so a
/// failed directory fsync after it (which only weakens durability across a power loss) is
/// logged, not returned; returning it would let a caller's memory disagree with the file.
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
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
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
    let dir = dir.unwrap_or(Path::new("."));
    if let Err(err) = sync_dir(dir) {
        tracing::warn!(path = %path.display(), error = %err, "cannot flush directory after replace");
    }
    Ok(())
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
pub fn create_dirs(dir: &Path, mode: u32) -> io::Result<()> {
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
pub fn set_path_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Sets the permission bits of an existing directory or file (no-op off Unix).
#[cfg(not(unix))]
pub fn set_path_mode(_path: &Path, _mode: u32) -> io::Result<()> {
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

    fn names_in(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", STATE_FILE_MODE)?;
        write_atomic(&path, b"two", STATE_FILE_MODE)?;
        assert_eq!(fs::read(&path)?, b"two");
        assert_eq!(names_in(dir.path())?, ["state.json"]);
        Ok(())
    }

    #[test]
    fn write_atomic_creates_missing_directories() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"x", STATE_FILE_MODE)?;
        assert_eq!(fs::read(&path)?, b"x");
        Ok(())
    }

    #[test]
    fn a_failed_write_removes_its_temp_file_and_keeps_the_target() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // A non-empty directory cannot be replaced by a rename: the write fails after the
        // temporary file was written.
        let target = dir.path().join("occupied");
        fs::create_dir(&target)?;
        fs::write(target.join("inside"), b"kept")?;
        assert!(write_atomic(&target, b"new", STATE_FILE_MODE).is_err());
        assert_eq!(names_in(dir.path())?, ["occupied"]);
        assert_eq!(fs::read(target.join("inside"))?, b"kept");
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_sets_exactly_the_mode_asked_for() -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let mode_of = |path: &Path| -> io::Result<u32> {
            Ok(fs::metadata(path)?.permissions().mode() & 0o777)
        };
        let path = dir.path().join("file");
        write_atomic(&path, b"secret", SECRET_FILE_MODE)?;
        assert_eq!(mode_of(&path)?, 0o600);
        // A replace takes the new mode, not the old file's.
        write_atomic(&path, b"public", 0o664)?;
        assert_eq!(mode_of(&path)?, 0o664);
        let nested = dir.path().join("keys/server.key");
        write_secret(&nested, b"k")?;
        assert_eq!(mode_of(&nested)?, 0o600);
        assert_eq!(mode_of(&dir.path().join("keys"))?, 0o700);
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

    #[cfg(unix)]
    #[test]
    fn read_secret_if_present_is_none_only_for_a_missing_file() -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        assert!(read_secret_if_present(&path)
            .map_err(io::Error::other)?
            .is_none());
        write_secret(&path, b"k")?;
        assert_eq!(
            read_secret_if_present(&path).map_err(io::Error::other)?,
            Some(b"k".to_vec())
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
        assert!(matches!(
            read_secret_if_present(&path),
            Err(SecretError::TooOpen { mode: 0o640, .. })
        ));
        Ok(())
    }
}
