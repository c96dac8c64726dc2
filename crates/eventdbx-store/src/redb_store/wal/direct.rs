//! Direct log writes (`docs/storage.md`, "Write-ahead log", "The file"): a record is written
//! through a second descriptor of the log opened with `O_DIRECT | O_DSYNC`, one `pwrite` that
//! bypasses the page cache and returns once the data is durable, instead of a buffered `pwrite`
//! and an `fdatasync`.
//!
//! `O_DIRECT` needs the buffer's address, the file offset and the length aligned; [`BLOCK`]
//! covers devices of 512-byte and 4 KiB sectors. A record is written as the aligned blocks that
//! cover it: the first carries the bytes of the records before it in that block (kept in the
//! window, rewritten with identical bytes), the last is zero after the record. Records stay
//! contiguous, so the file reads exactly as the buffered path writes it.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::HEADER;

/// The alignment of a direct write's buffer, offset and length.
pub(super) const BLOCK: usize = 4096;

/// The log's descriptor for direct writes, and the aligned buffer holding the tail block.
#[derive(Debug)]
pub(super) struct Direct {
    file: File,
    /// Over-allocated by one block: the aligned window starts at [`aligned_start`]. Its first
    /// `end % BLOCK` bytes (`end` the log's end) are the file's bytes of the block `end` lies in.
    memory: Vec<u8>,
    /// A direct write succeeded: an `EINVAL` no longer means that the filesystem refuses them.
    proven: bool,
    /// The next write's failure, for the tests: (errno, whether the bytes are written first).
    #[cfg(test)]
    pub(super) fail_next: Option<(i32, bool)>,
}

/// Where the `BLOCK`-aligned window of `memory` starts.
fn aligned_start(memory: &[u8]) -> usize {
    (BLOCK - memory.as_ptr() as usize % BLOCK) % BLOCK
}

impl Direct {
    /// Opens the log at `path` for direct, synchronous writes. The file must exist.
    pub(super) fn open(path: &Path) -> io::Result<Direct> {
        let flags = rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC;
        let file = File::options()
            .write(true)
            .custom_flags(flags.bits() as i32)
            .open(path)?;
        Ok(Direct {
            file,
            memory: vec![0; 16 * BLOCK],
            proven: false,
            #[cfg(test)]
            fail_next: None,
        })
    }

    /// Whether `err`, from a write, says that this filesystem refuses direct writes: `EINVAL`
    /// before any direct write succeeded (a filesystem that opens the file with `O_DIRECT` and
    /// refuses the write, or one whose alignment exceeds [`BLOCK`]).
    pub(super) fn refused(&self, err: &io::Error) -> bool {
        !self.proven && err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
    }

    /// The window, at least `len` bytes, its first `head` bytes kept when it must grow.
    fn window(&mut self, head: usize, len: usize) -> &mut [u8] {
        if self.memory.len() < len + BLOCK {
            let mut memory = vec![0; (len + BLOCK).next_power_of_two()];
            let (from, to) = (aligned_start(&self.memory), aligned_start(&memory));
            memory[to..to + head].copy_from_slice(&self.memory[from..from + head]);
            self.memory = memory;
        }
        let start = aligned_start(&self.memory);
        &mut self.memory[start..start + len]
    }

    /// Writes the record `header` + `body` at `at` (the log's end) and returns once it is
    /// durable. The preallocated file must cover `at` plus the record rounded up to [`BLOCK`].
    pub(super) fn write(&mut self, at: u64, header: &[u8; HEADER], body: &[u8]) -> io::Result<()> {
        let head = (at % BLOCK as u64) as usize;
        let total = head + HEADER + body.len();
        let padded = total.next_multiple_of(BLOCK);
        let window = self.window(head, padded);
        window[head..head + HEADER].copy_from_slice(header);
        window[head + HEADER..total].copy_from_slice(body);
        window[total..padded].fill(0);
        self.write_window(at - head as u64, padded)?;
        self.proven = true;
        // The block the record ends in becomes the tail block.
        let keep = total - total % BLOCK;
        let start = aligned_start(&self.memory);
        self.memory.copy_within(start + keep..start + total, start);
        Ok(())
    }

    /// Zeroes the header of the record whose write at `at` failed (the records before it in
    /// its block rewritten as they are), so that it is not replayed should it have reached the
    /// disk.
    pub(super) fn zero_header(&mut self, at: u64) -> io::Result<()> {
        let head = (at % BLOCK as u64) as usize;
        let padded = (head + HEADER).next_multiple_of(BLOCK);
        self.window(head, padded)[head..].fill(0);
        self.write_window(at - head as u64, padded)
    }

    fn write_window(&mut self, offset: u64, len: usize) -> io::Result<()> {
        let start = aligned_start(&self.memory);
        let bytes = &self.memory[start..start + len];
        #[cfg(test)]
        if let Some((errno, written)) = self.fail_next.take() {
            if written {
                self.file.write_all_at(bytes, offset)?;
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.write_all_at(bytes, offset)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{scan, Io, Log, GROWTH, HEADER};
    use super::{Direct, BLOCK};

    /// Bodies of these sizes, of bytes that are never zero (a zeroed byte of a record shows).
    fn bodies(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j) % 255 + 1) as u8).collect())
            .collect()
    }

    fn create(dir: &Path, name: &str, io: Io) -> (PathBuf, Log) {
        let path = dir.join(name);
        let log = Log::create_empty(&path, 1, io).expect("create");
        (path, log)
    }

    /// The records after `checkpoint`, the chain whole (no torn record).
    fn read_back(path: &Path, checkpoint: u64) -> Vec<(u64, Vec<u8>)> {
        let scan = scan(path, checkpoint).expect("scan");
        assert!(scan.torn.is_none(), "{:?}", scan.torn);
        scan.records
    }

    fn numbered(first: u64, bodies: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
        (first..).zip(bodies.iter().cloned()).collect()
    }

    /// Whether the filesystem of `dir` takes a direct write where the log would make one.
    fn takes_direct_writes(dir: &Path) -> bool {
        let path = dir.join("probe");
        std::fs::write(&path, vec![0u8; BLOCK]).expect("probe file");
        Direct::open(&path)
            .and_then(|mut direct| direct.write(0, &[1; HEADER], b"probe"))
            .is_ok()
    }

    /// A log in `dir` that writes directly: the temporary directory's filesystem must take
    /// direct writes (ext4 and xfs do, tmpfs from Linux 6.6).
    fn direct_log(dir: &Path) -> (PathBuf, Log) {
        let (path, log) = create(dir, "d.redb-wal", Io::Direct);
        assert!(
            log.writes_directly(),
            "{} refuses O_DIRECT: run the tests where it is supported",
            dir.display()
        );
        (path, log)
    }

    #[test]
    fn the_log_writes_directly_where_the_filesystem_takes_direct_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let supported = takes_direct_writes(dir.path());
        let (path, mut log) = create(dir.path(), "d.redb-wal", Io::Direct);
        log.append(b"one").expect("append");
        assert_eq!(
            log.writes_directly(),
            supported,
            "direct writes: {supported}"
        );
        assert_eq!(read_back(&path, 0), vec![(1, b"one".to_vec())]);
        let (_, buffered) = create(dir.path(), "b.redb-wal", Io::Buffered);
        assert!(!buffered.writes_directly());
    }

    #[test]
    fn records_across_block_boundaries_read_back_as_the_buffered_path_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 34 + 4,062 bytes end on the first block's end; an empty record starts the next; then
        // a record over three blocks, one that fills a block from an unaligned start, many
        // small ones, and a header cut by a block's end.
        let mut sizes = vec![10, 4096 - 34 - HEADER, 0, 9000, 4096 - HEADER];
        sizes.extend(std::iter::repeat_n(13, 150));
        sizes.extend([4090, 1, 4100, 7]);
        let bodies = bodies(&sizes);
        let (direct_path, mut direct) = direct_log(dir.path());
        let (buffered_path, mut buffered) = create(dir.path(), "b.redb-wal", Io::Buffered);
        for body in &bodies {
            direct.append(body).expect("direct append");
            buffered.append(body).expect("buffered append");
        }
        assert!(direct.writes_directly());
        assert_eq!(read_back(&direct_path, 0), numbered(1, &bodies));
        let (a, b) = (
            std::fs::read(&direct_path).expect("read"),
            std::fs::read(&buffered_path).expect("read"),
        );
        assert!(
            a == b,
            "the direct log's bytes differ from the buffered log's"
        );
    }

    #[test]
    fn many_small_records_share_one_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        let bodies = bodies(&[8; 120]);
        for body in &bodies {
            log.append(body).expect("append");
        }
        assert!(log.len() < BLOCK as u64, "{} bytes", log.len());
        assert_eq!(read_back(&path, 0), numbered(1, &bodies));
    }

    #[test]
    fn a_record_larger_than_a_growth_chunk_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        let bodies = bodies(&[100, 2 * GROWTH as usize + 123, 50]);
        for body in &bodies {
            log.append(body).expect("append");
        }
        assert_eq!(read_back(&path, 0), numbered(1, &bodies));
        let len = std::fs::metadata(&path).expect("metadata").len();
        assert_eq!(len, 3 * GROWTH, "the file grew in whole chunks");
    }

    #[test]
    fn a_restarted_log_reads_back_what_it_wrote_after_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        for body in bodies(&[3000; 5]) {
            log.append(&body).expect("append");
        }
        log.restart(5);
        let after = bodies(&[100, 200]);
        for body in &after {
            log.append(body).expect("append after the checkpoint");
        }
        assert_eq!(read_back(&path, 5), numbered(6, &after));
        log.restart(7);
        let longer = bodies(&[5000, 9]);
        for body in &longer {
            log.append(body)
                .expect("append after the second checkpoint");
        }
        assert_eq!(read_back(&path, 7), numbered(8, &longer));
        log.truncate().expect("truncate");
        log.append(b"after truncate")
            .expect("append after truncate");
        assert_eq!(read_back(&path, 9), vec![(10, b"after truncate".to_vec())]);
    }

    #[test]
    fn a_failed_direct_write_zeroes_its_header_and_the_next_append_takes_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        // The failed record's header starts 6 bytes before a block's end: its zeroing rewrites
        // two blocks.
        let before = bodies(&[BLOCK - HEADER - 6]);
        log.append(&before[0]).expect("append");
        let at = log.len();
        assert_eq!(at, BLOCK as u64 - 6);
        // The write reaches the disk and is then reported failed (EIO).
        log.direct.as_mut().expect("direct").fail_next = Some((5, true));
        let err = log
            .append(b"reported failed")
            .expect_err("the injected failure");
        assert!(err.to_string().contains("cannot append to"), "{err}");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes[at as usize..at as usize + HEADER], [0u8; HEADER]);
        assert_eq!(read_back(&path, 0), numbered(1, &before));
        assert_eq!(log.len(), at, "nothing counts as appended");
        log.append(b"next").expect("append after the failure");
        let mut expected = numbered(1, &before);
        expected.push((2, b"next".to_vec()));
        assert_eq!(read_back(&path, 0), expected);
    }

    #[test]
    fn a_filesystem_that_refuses_to_open_for_direct_writes_gets_buffered_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = create(dir.path(), "r.redb-wal", Io::DirectRefused);
        assert!(!log.writes_directly());
        let bodies = bodies(&[10, 5000, 20]);
        for body in &bodies {
            log.append(body).expect("append");
        }
        assert_eq!(read_back(&path, 0), numbered(1, &bodies));
    }

    #[test]
    fn a_first_direct_write_refused_with_einval_is_written_buffered_from_then_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        log.direct.as_mut().expect("direct").fail_next = Some((22, false));
        let bodies = bodies(&[10, 5000]);
        log.append(&bodies[0])
            .expect("the refused write, written buffered");
        assert!(
            !log.writes_directly(),
            "the log writes buffered from now on"
        );
        log.append(&bodies[1]).expect("append");
        assert_eq!(read_back(&path, 0), numbered(1, &bodies));
    }

    #[test]
    fn einval_after_a_direct_write_succeeded_fails_the_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = direct_log(dir.path());
        log.append(b"one").expect("append");
        log.direct.as_mut().expect("direct").fail_next = Some((22, false));
        log.append(b"refused")
            .expect_err("a proven direct log fails the write");
        assert!(log.writes_directly());
        log.append(b"two").expect("append");
        assert_eq!(
            read_back(&path, 0),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
    }
}
