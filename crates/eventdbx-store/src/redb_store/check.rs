//! `dbx store check` and `dbx store recover`: what a damaged file still holds, and putting the
//! last good state back in its place. Both open the file through the copy-on-write
//! [`Overlay`], so neither writes a byte of it; `recover` writes a new file beside it and keeps
//! the damaged one, renamed. `docs/storage.md`, "Damaged files and recovery".

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use eventdbx_core::CoreError;
use redb::{ReadableTable, ReadableTableMetadata};

use super::guard::{catch_engine_panic, EngineGuard};
use super::open::{open_database, Fallback, Overlay};
use super::tables::{storage, AGGREGATES, EVENTS};
use super::{usage, verify, RedbStore};
use crate::{Durability, EventStore as _, Result, StoreError};

/// An aggregate that failed `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateDamage {
    /// Its tenant.
    pub tenant: String,
    /// Its type.
    pub aggregate_type: String,
    /// Its id.
    pub aggregate_id: String,
    /// What verify found.
    pub error: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// The database file.
    pub file: String,
    /// Why the engine refuses to open the file (nothing else was read then).
    pub refused: Option<String>,
    /// A failure reading the file's tables after it opened (the counts below stop there).
    pub unreadable: Option<String>,
    /// Tenants holding data.
    pub tenants: u64,
    /// Aggregates verified (those in `damaged` included).
    pub aggregates: u64,
    /// Stored events.
    pub events: u64,
    /// Aggregates whose verify failed.
    pub damaged: Vec<AggregateDamage>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.refused.is_none() && self.unreadable.is_none() && self.damaged.is_empty()
    }
}

/// What [`recover`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoverReport {
    /// The file was not damaged: nothing was changed.
    pub nothing_to_do: bool,
    /// The latest commit failed its checksums and the file was rolled back to the commit
    /// before it (that commit's writes are lost).
    pub rolled_back: bool,
    /// Where the damaged file now is (kept, never deleted), when it was replaced.
    pub damaged_file: Option<PathBuf>,
    /// The check of the state now in place (or of the state that could not be put in place).
    pub check: CheckReport,
}

/// Checks the file at `path` without writing to it: the engine's integrity check (every page
/// of the committed trees against its checksum), then `verify` of every aggregate of every
/// tenant. An error only when the check itself cannot run (no such file, a server holds it).
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
    let path = path.as_ref();
    let overlay = Overlay::open(path)?;
    let guard = EngineGuard::new(path.display().to_string());
    let mut report = CheckReport {
        file: path.display().to_string(),
        ..CheckReport::default()
    };
    match open_database(&guard, path, Fallback::Refuse, Some(overlay)) {
        Ok(opened) => match RedbStore::from_database(
            path,
            opened.db,
            guard,
            Durability::Fsync,
            0,
            super::never_reopen,
            super::Logging::ReadOnly,
        ) {
            Ok(store) => inspect(&store, &mut report),
            Err(err) => report.unreadable = Some(detail(&err)),
        },
        Err(err) if err.is_damaged() => report.refused = Some(detail(&err)),
        Err(err) => return Err(err),
    }
    Ok(report)
}

/// Puts the last good state of the file at `path` in its place: when the latest commit fails
/// its checksums, the commit before it (redb keeps both), if that one and every aggregate in it
/// verify. The recovered file is written beside the damaged one, which is renamed to
/// `<name>.damaged-<unix seconds>` and kept. A file that is not damaged is left alone; a state
/// that cannot be recovered is reported (`check`) and nothing is changed.
pub fn recover(path: impl AsRef<Path>) -> Result<RecoverReport> {
    let path = path.as_ref();
    let overlay = Overlay::open(path)?;
    let guard = EngineGuard::new(path.display().to_string());
    let mut check = CheckReport {
        file: path.display().to_string(),
        ..CheckReport::default()
    };
    let unchanged = |check, rolled_back| RecoverReport {
        nothing_to_do: false,
        rolled_back,
        damaged_file: None,
        check,
    };
    overlay
        .allow_rollback()
        .map_err(|err| StoreError::storage("cannot read the file header", err))?;
    let opened = match open_database(&guard, path, Fallback::Allow, Some(overlay.clone())) {
        Ok(opened) => opened,
        Err(err) if err.is_damaged() => {
            check.refused = Some(detail(&err));
            return Ok(unchanged(check, false));
        }
        Err(err) => return Err(err),
    };
    let rolled_back = opened.fell_back;
    match RedbStore::from_database(
        path,
        opened.db,
        guard,
        Durability::Fsync,
        0,
        super::never_reopen,
        super::Logging::ReadOnly,
    ) {
        Ok(store) => {
            inspect(&store, &mut check);
            store.close();
        }
        Err(err) => check.unreadable = Some(detail(&err)),
    }
    if !check.is_clean() {
        return Ok(unchanged(check, rolled_back));
    }
    if !rolled_back {
        return Ok(RecoverReport {
            nothing_to_do: true,
            rolled_back,
            damaged_file: None,
            check,
        });
    }
    let damaged_file = replace(path, &overlay)?;
    Ok(RecoverReport {
        nothing_to_do: false,
        rolled_back,
        damaged_file: Some(damaged_file),
        check,
    })
}

/// Writes the overlay's view next to `path`, fsyncs it, renames `path` aside and the new file
/// into its place. Returns where the damaged file went.
fn replace(path: &Path, overlay: &Overlay) -> Result<PathBuf> {
    let io = |what: &'static str| move |err| StoreError::storage(what, err);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| StoreError::engine("the store path has no file name"))?;
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let fresh = path.with_file_name(format!("{name}.recovering"));
    let aside = path.with_file_name(format!("{name}.damaged-{seconds}"));
    let mut out = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&fresh)
        .map_err(io("cannot create the recovered file"))?;
    overlay
        .write_to(&mut out)
        .and_then(|()| out.sync_all())
        .map_err(io("cannot write the recovered file"))?;
    drop(out);
    std::fs::rename(path, &aside).map_err(io("cannot rename the damaged file aside"))?;
    std::fs::rename(&fresh, path).map_err(io("cannot move the recovered file in place"))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync the data directory"))?;
    }
    Ok(aside)
}

/// The text of a failure, without the pointer to these very commands.
fn detail(err: &StoreError) -> String {
    match err {
        StoreError::Damaged { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Runs one engine read for the check: a panic or an error becomes its text, and (unlike the
/// serving guard) nothing is marked, so the check goes on with the next aggregate.
fn attempt<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    match catch_engine_panic(f) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(detail(&err)),
        Err(panic) => Err(format!("the engine panicked: {panic}")),
    }
}

type AggregateKey = (String, String, String);

/// Counts and verifies everything the opened store holds into `report`.
fn inspect(store: &RedbStore, report: &mut CheckReport) {
    let listing = attempt(|| {
        let read = store.read()?;
        let events = read
            .open_table(EVENTS)
            .map_err(storage)?
            .len()
            .map_err(storage)?;
        let table = read.open_table(AGGREGATES).map_err(storage)?;
        let mut keys: Vec<AggregateKey> = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, _) = row.map_err(storage)?;
            let (tenant, aggregate_type, aggregate_id) = key.value();
            keys.push((tenant.into(), aggregate_type.into(), aggregate_id.into()));
        }
        let tenants = usage::tenants(store)?.len() as u64;
        Ok((events, keys, tenants))
    });
    let (events, keys, tenants) = match listing {
        Ok(listing) => listing,
        Err(err) => {
            report.unreadable = Some(err);
            return;
        }
    };
    report.events = events;
    report.tenants = tenants;
    for (tenant, aggregate_type, aggregate_id) in keys {
        match attempt(|| verify::verify(store, &tenant, &aggregate_type, &aggregate_id)) {
            Ok(_) => report.aggregates += 1,
            // A record at version 0 holds no event yet (nothing to verify).
            Err(err) if err == CoreError::AggregateNotFound.to_string() => {}
            Err(error) => {
                report.aggregates += 1;
                report.damaged.push(AggregateDamage {
                    tenant,
                    aggregate_type,
                    aggregate_id,
                    error,
                });
            }
        }
    }
}
