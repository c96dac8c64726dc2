//! The database handle every transaction begins from, and the engine's health: what happens
//! after an I/O error (`docs/storage.md`, "When the disk fails").
//!
//! After an I/O error (a full disk, a failing device) redb latches it: every later write
//! transaction fails with "Previous I/O error occurred" until the [`Database`] is closed and
//! opened again. So the first I/O error of a commit marks the handle *stale*, and the next
//! writer, before it begins a transaction, closes the database and opens the file again (the
//! same open as at startup, which recovers the file to its last commit). redb refuses reads on a
//! latched handle too, so a read that finds it stale reopens it the same way. While the open
//! fails, the file stays closed and each later write or read tries again.
//!
//! The store is *failing* from that first error until a commit succeeds again: [`Handle::health`]
//! reports it with the latest cause, and the start and the end are each logged once. So that a
//! store nobody writes to (a load balancer routing on `/health` stops sending writes) can still
//! find out that space returned, asking for its health while it fails runs a *probe* at most
//! every [`PROBE_INTERVAL`]: a durable commit of [`PROBE_BYTES`] in a table of its own, deleted
//! again by a second commit; its success ends the failure like any other commit's.
//!
//! Only a writer that holds the engine's write side (the group-commit leader in durable mode,
//! the open-transaction lock in relaxed mode) closes the database, so no write transaction is
//! alive when it does; a read transaction begun before the reopen fails with "database closed".

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};

use crate::{Result, StorageHealth, StoreError};

/// How often asking for the health of a failing store probes it.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// What a probe writes: enough fresh pages that a disk with no room for a write has no room for
/// it either.
pub(crate) const PROBE_BYTES: usize = 64 * 1024;
/// The probe's table: created and deleted by each probe, absent otherwise (a probe cut short
/// leaves it, and the next one deletes it).
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("health_probe");

/// Opens the database file and returns it with the highest Snowflake id it reserved: what
/// `RedbStore::open` runs, run again by a reopen.
pub(crate) type OpenDatabase = fn(&Path) -> Result<(Database, u64)>;

/// Why writes fail, from the first I/O error until a commit succeeds.
struct Failure {
    /// The latest error's text.
    cause: String,
    /// The text of the error that began it (what later errors name as their reason).
    origin: String,
    since: Instant,
    /// Failed commits and reopens since it began.
    failed: u64,
    /// The database saw the error and must be reopened before the next write.
    stale: bool,
}

pub(crate) struct Handle {
    path: PathBuf,
    open: OpenDatabase,
    /// `None` once a reopen closed the database and could not open it again.
    db: RwLock<Option<Database>>,
    failure: Mutex<Option<Failure>>,
    /// Whether `failure` is set: the commit path skips the lock when all is well.
    failing: AtomicBool,
    /// When the last probe began.
    probed: Mutex<Option<Instant>>,
}

impl Handle {
    pub(crate) fn new(path: PathBuf, open: OpenDatabase, db: Database) -> Self {
        Handle {
            path,
            open,
            db: RwLock::new(Some(db)),
            failure: Mutex::new(None),
            failing: AtomicBool::new(false),
            probed: Mutex::new(None),
        }
    }

    fn failure(&self) -> MutexGuard<'_, Option<Failure>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `begin` on the open database (a transaction outlives the call).
    pub(crate) fn with_db<T>(&self, begin: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        match db.as_ref() {
            Some(db) => begin(db),
            None => Err(StoreError::engine(format!(
                "the database is closed after an I/O error and reopens at the next request ({})",
                self.origin().unwrap_or_default()
            ))),
        }
    }

    /// Whether the next write must reopen the database first: an I/O error left it stale, or a
    /// reopen failed and left it closed.
    pub(crate) fn needs_reopen(&self) -> bool {
        if !self.failing.load(Ordering::Acquire) {
            return false;
        }
        // One lock at a time: a reopen holds the database's lock, then takes the failure's.
        let stale = self.failure().as_ref().is_some_and(|f| f.stale);
        stale || self.db.read().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Before a writer begins a write transaction: reopens the database if it
    /// [needs it](Self::needs_reopen). Returns the reopened file's id reservation, which
    /// replaces the one the writer kept in memory (relaxed commits since the last durable one
    /// did not survive). The caller holds the engine's write side: no write transaction is
    /// alive.
    pub(crate) fn prepare_write(&self) -> Result<Option<u64>> {
        if !self.failing.load(Ordering::Acquire) {
            return Ok(None);
        }
        let stale = self.failure().as_ref().is_some_and(|f| f.stale);
        let db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !stale && db.is_some() {
            return Ok(None);
        }
        self.reopen(db)
    }

    fn reopen(&self, mut db: RwLockWriteGuard<'_, Option<Database>>) -> Result<Option<u64>> {
        // Closes the file first: redb refuses to open a file this process still has open. A
        // latched error makes the close skip its final writes and leave the file to the open's
        // recovery.
        drop(db.take());
        if let Some(failure) = self.failure().as_mut() {
            failure.stale = false;
        }
        match (self.open)(&self.path) {
            Ok((reopened, reserved)) => {
                *db = Some(reopened);
                // Once per write while the disk stays full: the failure's own lines are enough.
                tracing::debug!(path = %self.path.display(), "storage: database reopened after an I/O error");
                Ok(Some(reserved))
            }
            Err(err) => {
                let err = StoreError::storage(
                    format!(
                        "cannot reopen the database after an I/O error ({})",
                        self.origin().unwrap_or_default()
                    ),
                    err,
                );
                self.fail(&err, false);
                Err(err)
            }
        }
    }

    /// Records the outcome of a commit: an I/O error makes the store failing (and the
    /// database stale); a success of a commit that reached the disk ends the failure.
    pub(crate) fn record(&self, result: &Result<()>, reached_disk: bool) {
        match result {
            Ok(()) if reached_disk && self.failing.load(Ordering::Acquire) => self.recovered(),
            Ok(()) => {}
            Err(err) if is_io_failure(err) => self.fail(err, true),
            Err(_) => {}
        }
    }

    /// Records a commit that failed before redb saw the error (the write-ahead log's append):
    /// the store is failing, but the database needs no reopen.
    pub(crate) fn record_unlatched(&self, result: &Result<()>) {
        if let Err(err) = result {
            if is_io_failure(err) {
                self.fail(err, false);
            }
        }
    }

    /// Records that the open database lost acknowledged writes it held (durable mode: a
    /// transaction of logged rounds that could not be rebuilt, `commit`): whatever the error,
    /// the database is reopened before the next read or write, which replays them from the log.
    pub(crate) fn record_stale(&self, err: &StoreError) {
        self.fail(err, true);
    }

    /// Records a failed commit or reopen; `stale` when the database saw the error.
    fn fail(&self, err: &StoreError, stale: bool) {
        let mut failure = self.failure();
        match failure.as_mut() {
            Some(failure) => {
                // A request that met the latch says only that an earlier error stopped the
                // database: the cause to report stays the earlier one (a full disk, say).
                if !is_latched(err) {
                    failure.cause = err.to_string();
                }
                failure.failed += 1;
                failure.stale |= stale;
            }
            None => {
                tracing::error!(
                    path = %self.path.display(),
                    cause = %err,
                    "storage failing: writes fail until the cause is fixed (free space, replace \
                     the device); the engine reopens the database at the next write, no restart needed"
                );
                *failure = Some(Failure {
                    cause: err.to_string(),
                    origin: err.to_string(),
                    since: Instant::now(),
                    failed: 1,
                    stale,
                });
                self.failing.store(true, Ordering::Release);
            }
        }
    }

    fn recovered(&self) {
        let mut failure = self.failure();
        if let Some(ended) = failure.take() {
            self.failing.store(false, Ordering::Release);
            tracing::warn!(
                path = %self.path.display(),
                failed_writes = ended.failed,
                failing_for = ?ended.since.elapsed(),
                last_cause = %ended.cause,
                "storage recovered: writes succeed again"
            );
        }
    }

    /// Whether a probe is due (failing, and none began in the last [`PROBE_INTERVAL`]); if so,
    /// it counts as begun.
    pub(crate) fn probe_due(&self) -> bool {
        if !self.failing.load(Ordering::Acquire) {
            return false;
        }
        let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if probed.is_some_and(|at| now.duration_since(at) < PROBE_INTERVAL) {
            return false;
        }
        *probed = Some(now);
        true
    }

    /// Writes [`PROBE_BYTES`] durably and deletes them again, recording the outcome. The caller
    /// holds the writer side and has reopened the database if it needed it.
    pub(crate) fn probe(&self) {
        let written = self.with_db(|db| {
            let mut txn = db.begin_write().map_err(commit_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|err| StoreError::storage("", err))?;
            txn.open_table(PROBE)
                .map_err(engine_error)?
                .insert("probe", &[0u8; PROBE_BYTES][..])
                .map_err(engine_error)?;
            txn.commit().map_err(commit_error)?;
            let mut txn = db.begin_write().map_err(commit_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|err| StoreError::storage("", err))?;
            txn.delete_table(PROBE).map_err(engine_error)?;
            txn.commit().map_err(commit_error)
        });
        self.record(&written, true);
    }

    /// What a relaxed flush answers when writes it should make durable were lost to the failure.
    pub(crate) fn lost_writes(&self) -> StoreError {
        StoreError::engine(format!(
            "relaxed writes acknowledged since the last durable commit were lost to an I/O error ({})",
            self.origin().unwrap_or_else(|| "since recovered".to_owned())
        ))
    }

    fn cause(&self) -> Option<String> {
        self.failure().as_ref().map(|f| f.cause.clone())
    }

    fn origin(&self) -> Option<String> {
        self.failure().as_ref().map(|f| f.origin.clone())
    }

    pub(crate) fn health(&self) -> StorageHealth {
        if !self.failing.load(Ordering::Acquire) {
            return StorageHealth::Ok;
        }
        match self.cause() {
            Some(cause) => StorageHealth::Degraded { cause },
            None => StorageHealth::Ok,
        }
    }
}

/// Whether `err` is the engine failing to read or write its file (as opposed to a domain rule,
/// a value too large, or a corrupt record): the errors after which redb must be reopened.
pub(crate) fn is_io_failure(err: &StoreError) -> bool {
    caused_by(err, &|err| {
        matches!(
            err.downcast_ref(),
            Some(redb::Error::Io(_) | redb::Error::PreviousIo)
        ) || err.downcast_ref::<Latched>().is_some()
            || err.downcast_ref::<std::io::Error>().is_some()
    })
}

/// Whether `err` is only [`Latched`] (or redb's own "previous I/O error"), not a cause.
fn is_latched(err: &StoreError) -> bool {
    caused_by(err, &|err| {
        err.downcast_ref::<Latched>().is_some()
            || matches!(err.downcast_ref(), Some(redb::Error::PreviousIo))
    })
}

/// Whether an error in the chain of sources of a storage error `err` (through store errors
/// nested in it) passes `test`.
fn caused_by(err: &StoreError, test: &dyn Fn(&(dyn Error + 'static)) -> bool) -> bool {
    let StoreError::Storage {
        source: Some(source),
        ..
    } = err
    else {
        return false;
    };
    let mut next: Option<&(dyn Error + 'static)> = Some(source.as_ref());
    while let Some(err) = next {
        if test(err) {
            return true;
        }
        if let Some(inner) = err.downcast_ref::<StoreError>() {
            return caused_by(inner, test);
        }
        next = err.source();
    }
    false
}

/// redb's "Previous I/O error occurred. Please close and re-open the database.", said in the
/// engine's terms: the close and reopen are the engine's job, not the caller's. A request that
/// raced the error (began before the reopen, or while a commit was reopening) gets this.
#[derive(Debug)]
pub(crate) struct Latched;

impl std::fmt::Display for Latched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the database stopped at an earlier I/O error (a full disk, a failing device) and is \
             reopened by the next request",
        )
    }
}

impl Error for Latched {}

/// An engine error, saying plainly when the disk is full or an earlier I/O error stopped the
/// database ([`Latched`]).
pub(crate) fn engine_error(err: impl Into<redb::Error>) -> StoreError {
    explained("", err.into())
}

/// An engine error of a commit (or of beginning one), as [`engine_error`] explains it.
pub(crate) fn commit_error(err: impl Into<redb::Error>) -> StoreError {
    explained("commit failed", err.into())
}

fn explained(doing: &'static str, err: redb::Error) -> StoreError {
    match &err {
        redb::Error::PreviousIo => StoreError::storage(doing, Latched),
        redb::Error::Io(io) if disk_full(io) => match doing {
            "" => StoreError::storage("the disk is full", err),
            _ => StoreError::storage(format!("{doing}, the disk is full"), err),
        },
        _ => StoreError::storage(doing, err),
    }
}

/// No space left on the device, or the user's disk quota exceeded.
fn disk_full(err: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    err.kind() == std::io::ErrorKind::StorageFull
        || err.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(err.raw_os_error(), Some(ENOSPC | EDQUOT))
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;

    fn io(kind: std::io::ErrorKind) -> redb::Error {
        redb::Error::Io(std::io::Error::from(kind))
    }

    #[test]
    fn a_full_disk_is_named_and_counts_as_an_io_failure() {
        let err = commit_error(io(std::io::ErrorKind::StorageFull));
        assert!(err.to_string().contains("the disk is full"), "{err}");
        assert!(is_io_failure(&err));
        let wrapped = StoreError::storage("cannot reopen", err);
        assert!(is_io_failure(&wrapped));
        let latched = engine_error(redb::Error::PreviousIo);
        assert!(is_io_failure(&latched));
        assert!(!latched.to_string().contains("re-open"), "{latched}");
        let insert = engine_error(io(std::io::ErrorKind::StorageFull));
        assert!(
            insert
                .to_string()
                .starts_with("storage error: the disk is full: "),
            "{insert}"
        );
    }

    fn open_file(path: &Path) -> Result<(Database, u64)> {
        let db = Database::create(path).map_err(|err| StoreError::storage("open", err))?;
        Ok((db, 7))
    }

    fn refuse_to_open(_: &Path) -> Result<(Database, u64)> {
        Err(StoreError::engine("the device is gone"))
    }

    fn handle(dir: &tempfile::TempDir, open: OpenDatabase) -> Handle {
        let path = dir.path().join("health.redb");
        let (db, _) = open_file(&path).expect("open");
        Handle::new(path, open, db)
    }

    fn disk_full() -> Result<()> {
        Err(commit_error(io(std::io::ErrorKind::StorageFull)))
    }

    #[test]
    fn an_io_error_degrades_until_a_commit_reaches_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = handle(&dir, open_file);
        assert_eq!(handle.health(), StorageHealth::Ok);
        assert_eq!(handle.prepare_write().expect("nothing to do"), None);
        handle.record(&disk_full(), true);
        let StorageHealth::Degraded { cause } = handle.health() else {
            panic!("degraded after an I/O error");
        };
        assert!(cause.contains("the disk is full"), "{cause}");
        assert!(handle.needs_reopen());
        // The reopen hands back the file's reservation, and the old handle is gone (redb would
        // refuse to open a file this process still has open).
        assert_eq!(handle.prepare_write().expect("reopen"), Some(7));
        assert!(!handle.needs_reopen());
        handle
            .with_db(|db| db.begin_read().map_err(commit_error))
            .expect("reads the reopened database");
        // Reopened is not recovered: only a commit that reached the disk says so.
        handle.record(&Ok(()), false);
        assert_ne!(handle.health(), StorageHealth::Ok);
        handle.record(&Ok(()), true);
        assert_eq!(handle.health(), StorageHealth::Ok);
    }

    #[test]
    fn a_failed_reopen_leaves_the_database_closed_and_is_tried_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = handle(&dir, refuse_to_open);
        handle.record(&disk_full(), true);
        let first = handle.prepare_write().expect_err("the open fails");
        let text = first.to_string();
        assert!(
            text.contains("cannot reopen") && text.contains("the disk is full"),
            "{text}"
        );
        let closed = handle
            .with_db(|_| Ok(()))
            .expect_err("closed until it reopens");
        assert!(closed.to_string().contains("the disk is full"), "{closed}");
        assert!(handle.needs_reopen());
        let again = handle
            .prepare_write()
            .expect_err("tried again, fails again");
        // Each failure names the error that began it, not the one before (no nesting).
        assert_eq!(again.to_string(), text);
        assert_ne!(handle.health(), StorageHealth::Ok);
    }

    #[test]
    fn other_engine_errors_are_no_io_failure() {
        assert!(!is_io_failure(&commit_error(redb::Error::ValueTooLarge(1))));
        assert!(!is_io_failure(&StoreError::engine("the store is closed")));
        assert!(!is_io_failure(&StoreError::Domain(
            eventdbx_core::CoreError::AggregateNotFound
        )));
    }
}
