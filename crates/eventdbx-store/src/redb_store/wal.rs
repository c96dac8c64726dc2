//! The write-ahead log of durable mode (`docs/storage.md`, "Write-ahead log"): one record per
//! group commit, appended and made durable with one `fdatasync` before any write of the batch
//! is acknowledged. The batch itself is committed to redb without a sync; a *checkpoint* (a
//! durable redb commit recording the last record it holds) runs once the log has grown past a
//! threshold, and the log then starts over. At open the records after the checkpoint are
//! replayed.
//!
//! A record: `magic "DBXW", body length: u32, lsn: u64, checksum: 8 bytes, body`, integers
//! little-endian; the checksum is the first 8 bytes of SHA-256 over the length, the LSN and the
//! body. LSNs are consecutive across the whole life of the store, so the log needs no header:
//! a record belongs to the log when it continues the chain, and the chain ends at the first
//! record that does not (a torn write, zeros, or an older record the restarted log did not
//! overwrite, whose LSN is at or below the checkpoint).
//!
//! Only the last record can be torn: each is synced before the next is written. So a break in
//! the chain followed anywhere by a valid record newer than the chain is damage, not a crash,
//! and is refused.
//!
//! The file grows in zeroed, synced chunks and is then overwritten in place: an overwrite plus
//! `fdatasync` does not change the file's size, so the sync writes no metadata (on this machine
//! about half the cost of an append plus `fdatasync`). With [`Io::Direct`] (`[storage]
//! wal_direct_io = true`) and where the filesystem allows it, records are written with
//! `O_DIRECT | O_DSYNC` instead, one system call ([`direct`]); otherwise with a buffered
//! `pwrite` and `fdatasync`.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{Result, StoreError};

mod direct;

use direct::Direct;

const MAGIC: &[u8; 4] = b"DBXW";
const HEADER: usize = 24;
/// The file grows by this much at a time (zeros written and synced once).
const GROWTH: u64 = 1024 * 1024;

/// The log file of the database file `db`: `<file name>-wal` beside it.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-wal");
    db.with_file_name(name)
}

fn checksum(lsn: u64, body: &[u8]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    hasher.update((body.len() as u32).to_le_bytes());
    hasher.update(lsn.to_le_bytes());
    hasher.update(body);
    let digest = hasher.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The record at `at` in `bytes`, if a whole, valid one starts there: (LSN, body, end).
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let end = at.checked_add(HEADER)?.checked_add(len)?;
    let body = bytes.get(at + HEADER..end)?;
    (header[16..24] == checksum(lsn, body)).then_some((lsn, body, end))
}

/// What a log holds after a checkpoint.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The records after the checkpoint, in order: (LSN, body).
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    /// The last LSN the log and the checkpoint account for.
    pub(crate) last_lsn: u64,
    /// Why the chain ended before the end of the file, when something other than zeros or
    /// older records follows it: a torn or damaged final record, dropped.
    pub(crate) torn: Option<String>,
}

/// Reads the log at `path` (missing: empty) against the store's `checkpoint`. A record that
/// fails its checksum and is followed by a valid newer one is damage: refused as
/// [`StoreError::Damaged`], naming the log.
pub(crate) fn scan(path: &Path, checkpoint: u64) -> Result<Scan> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(StoreError::storage(
                format!("cannot read the write-ahead log {}", path.display()),
                err,
            ))
        }
    };
    scan_bytes(&bytes, checkpoint).map_err(|detail| StoreError::Damaged {
        file: path.display().to_string(),
        detail: format!("a write-ahead log record is damaged: {detail}"),
    })
}

fn scan_bytes(bytes: &[u8], checkpoint: u64) -> std::result::Result<Scan, String> {
    let mut scan = Scan {
        last_lsn: checkpoint,
        ..Scan::default()
    };
    let mut at = 0;
    let mut expected: Option<u64> = None;
    while let Some((lsn, body, end)) = record_at(bytes, at) {
        let continues = match expected {
            Some(next) => lsn == next,
            // The first record may be older than the checkpoint (a log that started over after
            // it, or one the checkpoint already covers); it may not leave a gap.
            None => lsn <= checkpoint.saturating_add(1),
        };
        if !continues {
            break;
        }
        if lsn > checkpoint {
            scan.records.push((lsn, body.to_vec()));
        }
        scan.last_lsn = scan.last_lsn.max(lsn);
        expected = Some(lsn + 1);
        at = end;
    }
    let rest = &bytes[at..];
    if rest.iter().all(|&b| b == 0) {
        return Ok(scan);
    }
    // Something follows the chain. Newer than the chain and valid: a record in the middle was
    // damaged (records are synced one at a time, so a crash tears only the last one).
    let mut from = at;
    while let Some(found) = find_magic(bytes, from) {
        if let Some((lsn, _, _)) = record_at(bytes, found) {
            if lsn > scan.last_lsn {
                return Err(format!(
                    "the record at byte {at} is unreadable but record {lsn} at byte {found} \
                     follows it (records up to {} read)",
                    scan.last_lsn
                ));
            }
        }
        from = found + 1;
    }
    if record_at(bytes, at).is_none() && rest.starts_with(MAGIC) {
        scan.torn = Some(format!(
            "the final record at byte {at} is torn or fails its checksum; dropped"
        ));
    }
    Ok(scan)
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|p| p + from)
}

/// How the log writes its records (`[storage] wal_direct_io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    /// `O_DIRECT | O_DSYNC` where the filesystem allows it, else as [`Io::Buffered`].
    Direct,
    /// A buffered `pwrite` and `fdatasync`.
    Buffered,
    /// [`Io::Direct`] on a filesystem that refuses to open the file with `O_DIRECT`.
    #[cfg(test)]
    DirectRefused,
}

/// The log a durable store appends to.
#[derive(Debug)]
pub(crate) struct Log {
    path: PathBuf,
    /// Grows, empties and (without `direct`) writes and syncs the file.
    file: File,
    /// Writes the records when the filesystem allows direct writes.
    direct: Option<Direct>,
    /// Where the next record goes.
    end: u64,
    /// Bytes of the file already written (zeros or records) and synced: overwritten in place.
    allocated: u64,
    /// The LSN of the next record.
    next_lsn: u64,
    /// The last LSN a checkpoint recorded.
    checkpointed: u64,
    /// The last growth failed (a full disk): every append grows first until one succeeds, so
    /// that the store fails every write until space returns, not only those that do not fit
    /// what is left of the last chunk.
    short_of_space: bool,
    buffer: Vec<u8>,
}

fn io_error(path: &Path, doing: &str, err: std::io::Error) -> StoreError {
    let disk_full = matches!(err.raw_os_error(), Some(28 | 122))
        || err.kind() == std::io::ErrorKind::StorageFull;
    let context = if disk_full {
        format!(
            "commit failed, the disk is full ({doing} {})",
            path.display()
        )
    } else {
        format!("commit failed ({doing} {})", path.display())
    };
    StoreError::storage(context, err)
}

impl Log {
    /// Opens the log at `path` empty, the next record numbered `next_lsn`: the store has
    /// replayed and checkpointed everything it held. Creating the file syncs its directory, so
    /// the file itself survives a power loss.
    pub(crate) fn create_empty(path: &Path, next_lsn: u64, io: Io) -> Result<Self> {
        let existed = path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| io_error(path, "cannot open", err))?;
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|err| io_error(path, "cannot empty", err))?;
        if !existed {
            sync_parent(path).map_err(|err| io_error(path, "cannot sync the directory of", err))?;
        }
        // Any failure to open for direct writes leaves the buffered path, which opened.
        let opened = match io {
            Io::Buffered => None,
            Io::Direct => Some(Direct::open(path)),
            #[cfg(test)]
            Io::DirectRefused => Some(Err(std::io::Error::from_raw_os_error(22))),
        };
        let direct = opened.and_then(|opened| opened.inspect_err(|err| refused(path, err)).ok());
        Ok(Log {
            path: path.to_path_buf(),
            file,
            direct,
            end: 0,
            allocated: 0,
            next_lsn,
            checkpointed: next_lsn.saturating_sub(1),
            short_of_space: false,
            buffer: Vec::new(),
        })
    }

    /// Bytes appended since the log last started over.
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// The LSN of the last record appended (the checkpoint's when none was).
    pub(crate) fn last_lsn(&self) -> u64 {
        self.next_lsn.saturating_sub(1)
    }

    /// Appends one record holding `body` and syncs it; returns its LSN. On failure nothing
    /// counts as appended, and the record's header is zeroed (best effort) so that a record
    /// whose write was reported failed is not replayed after a crash.
    pub(crate) fn append(&mut self, body: &[u8]) -> Result<u64> {
        let lsn = self.next_lsn;
        let len = u32::try_from(body.len())
            .map_err(|_| StoreError::engine("a batch too large for one log record (4 GiB)"))?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..16].copy_from_slice(&lsn.to_le_bytes());
        header[16..].copy_from_slice(&checksum(lsn, body));
        let at = self.end;
        let needed = at + (HEADER + body.len()) as u64;
        // `allocated` is a multiple of `GROWTH`, so it covers the blocks a direct write covers.
        if needed > self.allocated || self.short_of_space {
            self.grow(needed.max(self.allocated + 1))?;
        }
        match self.write_direct(at, &header, body) {
            Some(written) => written?,
            None => self.write_buffered(at, &header, body)?,
        }
        self.end = needed;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Writes a record with [`Direct`]: `None` without it, or when its first write says that
    /// the filesystem refuses direct writes (the log then writes buffered from now on).
    fn write_direct(&mut self, at: u64, header: &[u8; HEADER], body: &[u8]) -> Option<Result<()>> {
        let direct = self.direct.as_mut()?;
        match direct.write(at, header, body) {
            Ok(()) => Some(Ok(())),
            Err(err) if direct.refused(&err) => {
                refused(&self.path, &err);
                self.direct = None;
                None
            }
            Err(err) => {
                if direct.zero_header(at).is_err() {
                    let _ = self.zero_header_buffered(at);
                }
                Some(Err(io_error(&self.path, "cannot append to", err)))
            }
        }
    }

    fn write_buffered(&mut self, at: u64, header: &[u8; HEADER], body: &[u8]) -> Result<()> {
        self.buffer.clear();
        self.buffer.extend_from_slice(header);
        self.buffer.extend_from_slice(body);
        let written = self
            .file
            .write_all_at(&self.buffer, at)
            .map_err(|err| io_error(&self.path, "cannot append to", err))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|err| io_error(&self.path, "cannot sync", err))
            });
        if written.is_err() {
            let _ = self.zero_header_buffered(at);
        }
        written
    }

    fn zero_header_buffered(&self, at: u64) -> std::io::Result<()> {
        self.file
            .write_all_at(&[0u8; HEADER], at)
            .and_then(|()| self.file.sync_data())
    }

    /// Whether records are written with `O_DIRECT | O_DSYNC`.
    #[cfg(test)]
    pub(crate) fn writes_directly(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether a checkpoint recorded every record appended.
    pub(crate) fn is_checkpointed(&self) -> bool {
        self.checkpointed == self.last_lsn()
    }

    /// Starts over at the beginning of the file once a checkpoint recorded `lsn`, the last
    /// record: older records are overwritten in place; those not overwritten are at or below
    /// the checkpoint and end the chain.
    pub(crate) fn restart(&mut self, lsn: u64) {
        self.checkpointed = lsn;
        self.end = 0;
    }

    /// Empties the file (at close, after the last checkpoint).
    pub(crate) fn truncate(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|err| io_error(&self.path, "cannot empty", err))?;
        self.end = 0;
        self.allocated = 0;
        Ok(())
    }

    fn grow(&mut self, needed: u64) -> Result<()> {
        let grown = self.zero_fill(needed);
        self.short_of_space = grown.is_err();
        grown
    }

    /// Grows the file with zeros written and synced through the page cache, before any
    /// direct write lands in them: a direct write then overwrites written blocks (no unwritten
    /// extent to convert, so no journal commit), and the kernel writes back and drops the cached
    /// pages of the range it writes, so the two descriptors never see different bytes.
    fn zero_fill(&mut self, needed: u64) -> Result<()> {
        let target = needed.div_ceil(GROWTH) * GROWTH;
        let zeros = vec![0u8; 64 * 1024];
        let mut at = self.allocated;
        while at < target {
            let take = (target - at).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..take], at)
                .map_err(|err| io_error(&self.path, "cannot grow", err))?;
            at += take as u64;
        }
        self.file
            .sync_data()
            .map_err(|err| io_error(&self.path, "cannot sync", err))?;
        self.allocated = target;
        Ok(())
    }
}

/// Says once per log that it writes buffered although direct writes were asked for.
fn refused(path: &Path, err: &std::io::Error) {
    tracing::info!(
        log = %path.display(),
        "storage: the filesystem refuses direct writes ({err}); the write-ahead log is written \
         with buffered writes and fdatasync"
    );
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(records: &[&[u8]], first_lsn: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.redb-wal");
        let mut log = Log::create_empty(&path, first_lsn, Io::Direct).expect("create");
        for body in records {
            log.append(body).expect("append");
        }
        (dir, path)
    }

    #[test]
    fn records_after_the_checkpoint_are_read_back_in_order() {
        let (_dir, path) = log_with(&[b"one", b"two", b"three"], 5);
        let scan = scan(&path, 5).expect("scan");
        let bodies: Vec<(u64, &[u8])> = scan
            .records
            .iter()
            .map(|(l, b)| (*l, b.as_slice()))
            .collect();
        assert_eq!(bodies, vec![(6, &b"two"[..]), (7, &b"three"[..])]);
        assert_eq!(scan.last_lsn, 7);
        assert!(scan.torn.is_none());
    }

    #[test]
    fn a_log_that_leaves_a_gap_after_the_checkpoint_is_refused() {
        let (_dir, path) = log_with(&[b"one"], 9);
        let err = scan(&path, 5).expect_err("records 6 to 8 are missing");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn a_restarted_log_ends_at_the_older_records_it_did_not_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.redb-wal");
        let mut log = Log::create_empty(&path, 1, Io::Direct).expect("create");
        for body in [&[7u8; 300][..], &[8u8; 300][..], &[9u8; 300][..]] {
            log.append(body).expect("append");
        }
        log.restart(3);
        log.append(b"four").expect("append after the checkpoint");
        let scan = scan(&path, 3).expect("scan");
        assert_eq!(scan.records, vec![(4, b"four".to_vec())]);
        assert_eq!(scan.last_lsn, 4);
    }
}
