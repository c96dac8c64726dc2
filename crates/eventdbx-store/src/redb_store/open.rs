//! Opening the database file: always with redb's integrity check (every page of the committed
//! trees checksummed, the allocator rebuilt from them), inside the panic fence of
//! [`super::guard`], and with a repair policy that never falls back silently to an older
//! commit. Also the copy-on-write view of a file that `dbx store check` and `dbx store recover`
//! open without writing a byte of it. Why: `docs/storage.md`, "Damaged files and recovery".

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

use super::guard::{catch_engine_panic, EngineGuard};
use crate::{Result, StoreError};

/// What an open may do when the latest commit does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Refuse when the file was closed cleanly: then the latest commit was complete, so its
    /// failing checksum is damage, and rolling back would silently drop acknowledged writes.
    /// A file a crash left open may roll back: its latest commit can be the torn one that was
    /// being written, never acknowledged (redb's crash recovery).
    Refuse,
    /// Let redb roll back to the previous commit (`dbx store recover`, explicitly asked for).
    Allow,
}

/// redb reports a repair's stages through its callback: 0.3 is reached only when the primary
/// commit's trees failed their checksums and the repair is about to fall back to the secondary.
fn is_fallback_stage(progress: f64) -> bool {
    (0.25..0.35).contains(&progress)
}

/// redb's file header: a 9-byte magic number, then flags, of which this one is set while the
/// file is open and cleared by a clean close (redb's documented file format).
const MAGIC_LEN: usize = 9;
const RECOVERY_REQUIRED: u8 = 2;
/// Set when the latest commit was made in two phases: redb then trusts it and never falls back
/// to the commit before it.
const TWO_PHASE_COMMIT: u8 = 4;

/// Whether the file at `path` is a redb file that was not closed cleanly (a crash, a kill).
fn left_open_by_a_crash(path: &Path) -> bool {
    let mut head = [0u8; MAGIC_LEN + 1];
    let read = File::open(path).and_then(|mut file| {
        use std::io::Read as _;
        file.read_exact(&mut head)
    });
    read.is_ok() && head[..4] == *b"redb" && head[MAGIC_LEN] & RECOVERY_REQUIRED != 0
}

/// An opened database and whether redb fell back to the previous commit to open it.
pub(crate) struct Opened {
    pub(crate) db: Database,
    pub(crate) fell_back: bool,
}

/// Opens (or creates) `path` with the integrity check, in the file itself (`overlay` `None`) or
/// through a copy-on-write view of it.
pub(crate) fn open_database(
    guard: &EngineGuard,
    path: &Path,
    fallback: Fallback,
    overlay: Option<Arc<Overlay>>,
) -> Result<Opened> {
    let fallback = if left_open_by_a_crash(path) {
        Fallback::Allow
    } else {
        fallback
    };
    let fell_back = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&fell_back);
    let mut builder = Builder::new();
    builder
        .set_check_integrity_on_open(true)
        .set_repair_callback(move |session| {
            if is_fallback_stage(session.progress()) {
                seen.store(true, Ordering::SeqCst);
                if fallback == Fallback::Refuse {
                    session.abort();
                }
            }
        });
    let opened = catch_engine_panic(|| match overlay {
        Some(overlay) => builder.create_with_backend(SharedOverlay(overlay)),
        None => builder.create(path),
    });
    match opened {
        Ok(Ok(db)) => Ok(Opened {
            db,
            fell_back: fell_back.load(Ordering::SeqCst),
        }),
        Ok(Err(DatabaseError::RepairAborted)) => Err(guard
            .damaged("its latest commit fails its checksums; the previous commit may be intact")),
        Ok(Err(DatabaseError::Storage(redb::StorageError::Corrupted(detail)))) => {
            Err(guard.damaged(detail))
        }
        // What redb says of a header it cannot read (a bad magic number, an impossible page
        // size): the file is there and is not a database any more.
        Ok(Err(DatabaseError::Storage(redb::StorageError::Io(err))))
            if err.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(guard.damaged(format!("its header does not read as a database: {err}")))
        }
        Ok(Err(err)) => Err(StoreError::storage(
            format!("cannot open the database file {}", path.display()),
            err,
        )),
        Err(panic) => Err(guard.damaged(format!("the engine panicked opening it: {panic}"))),
    }
}

/// Bytes of the overlay's unit of copy-on-write.
const BLOCK: u64 = 4096;

/// A view of a database file where every write lands in memory: reads see the file with those
/// writes applied, the file itself is never written. redb's open commits (the integrity check
/// rebuilds and stores the allocator state), so a read-only check needs somewhere to put that.
/// Locks go to the real file, so a file a running server holds is refused as in use.
#[derive(Debug)]
pub(crate) struct Overlay {
    file: FileBackend,
    state: Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    /// Bytes of the file at or past this offset read as zero (the view was shrunk over them).
    file_end: u64,
    len: u64,
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// A view of the existing, non-empty file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Arc<Self>> {
        let cannot = |err| StoreError::storage(format!("cannot open {}", path.display()), err);
        // Read and write access for the byte-range locks only; nothing is written through it.
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        if len == 0 {
            return Err(StoreError::engine(format!("{} is empty", path.display())));
        }
        let file = FileBackend::new(file).map_err(|err| StoreError::storage("", err))?;
        Ok(Arc::new(Overlay {
            file,
            state: Mutex::new(OverlayState {
                file_end: len,
                len,
                blocks: BTreeMap::new(),
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OverlayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One block as the view has it: the overlay's copy, else the file's bytes, zero past them.
    fn load(&self, state: &OverlayState, block: u64, out: &mut [u8]) -> std::io::Result<()> {
        if let Some(bytes) = state.blocks.get(&block) {
            out.copy_from_slice(bytes);
            return Ok(());
        }
        out.fill(0);
        let start = block * BLOCK;
        let end = (start + BLOCK).min(state.file_end);
        if end > start {
            self.file
                .read(start, &mut out[..usize::try_from(end - start).unwrap_or(0)])?;
        }
        Ok(())
    }

    /// Clears, in the view only, the header flag that forbids redb to fall back to the previous
    /// commit, so that `recover` can open that commit when the latest one is damaged (redb
    /// still checksums every page of it before it is used).
    pub(crate) fn allow_rollback(&self) -> std::io::Result<()> {
        let mut state = self.state();
        let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
        self.load(&state, 0, &mut block)?;
        block[MAGIC_LEN] &= !TWO_PHASE_COMMIT;
        state.blocks.insert(0, block);
        Ok(())
    }

    /// Writes the view (the file with every overlay write) to `out`.
    pub(crate) fn write_to(&self, out: &mut File) -> std::io::Result<()> {
        let state = self.state();
        let mut block = vec![0u8; BLOCK as usize];
        let mut offset = 0;
        while offset < state.len {
            self.load(&state, offset / BLOCK, &mut block)?;
            let take = usize::try_from((state.len - offset).min(BLOCK)).unwrap_or(0);
            out.write_all(&block[..take])?;
            offset += BLOCK;
        }
        out.flush()
    }
}

/// The [`Overlay`] handed to redb (which takes its backend by value and closes it on drop)
/// while the caller keeps a handle to write the result out.
#[derive(Debug)]
struct SharedOverlay(Arc<Overlay>);

fn io_error(text: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, text)
}

impl StorageBackend for SharedOverlay {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let overlay = &self.0;
        let state = overlay.state();
        let end = offset + out.len() as u64;
        if end > state.len {
            return Err(io_error("read past the end of the database"));
        }
        let mut block = vec![0u8; BLOCK as usize];
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            overlay.load(&state, index, &mut block)?;
            let from = usize::try_from(at - index * BLOCK).unwrap_or(0);
            let take = usize::try_from((BLOCK - (at - index * BLOCK)).min(end - at)).unwrap_or(0);
            let dest = usize::try_from(at - offset).unwrap_or(0);
            out[dest..dest + take].copy_from_slice(&block[from..from + take]);
            at += take as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.0.state();
        if len < state.len {
            state.file_end = state.file_end.min(len);
            let first_gone = len.div_ceil(BLOCK);
            state.blocks.retain(|&index, _| index < first_gone);
            if !len.is_multiple_of(BLOCK) {
                let index = len / BLOCK;
                if let Some(bytes) = state.blocks.get_mut(&index) {
                    bytes[usize::try_from(len % BLOCK).unwrap_or(0)..].fill(0);
                }
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let overlay = &self.0;
        let mut state = overlay.state();
        let end = offset + data.len() as u64;
        if end > state.len {
            return Err(io_error("write past the end of the database"));
        }
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let mut block = match state.blocks.remove(&index) {
                Some(block) => block,
                None => {
                    let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
                    overlay.load(&state, index, &mut block)?;
                    block
                }
            };
            let from = usize::try_from(at - index * BLOCK).unwrap_or(0);
            let take = usize::try_from((BLOCK - (at - index * BLOCK)).min(end - at)).unwrap_or(0);
            let src = usize::try_from(at - offset).unwrap_or(0);
            block[from..from + take].copy_from_slice(&data[src..src + take]);
            state.blocks.insert(index, block);
            at += take as u64;
        }
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.query_lock_range(start, end)
    }
}
