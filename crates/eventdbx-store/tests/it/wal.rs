//! The write-ahead log of durable mode (`docs/storage.md`, "Write-ahead log"): a crash image
//! (the database file and the log copied while the store is open, which is what a kill leaves:
//! the log's records are synced, the batches they hold are in the file only up to the last
//! checkpoint) opens with every acknowledged write; a torn or damaged final record is dropped
//! and everything before it kept; a damaged record followed by valid ones is refused.

use std::path::{Path, PathBuf};

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::redb_store::check;
use eventdbx_store::{Durability, EmbeddedOptions, EventStore, RedbStore, WriteRequest};
use serde_json::json;

const T: &str = "default";
const AGGREGATES: usize = 3;
const EVENTS_EACH: u64 = 4;

/// No checkpoint in these tests: every write after the open lives in the log only.
fn never_checkpoint() -> EmbeddedOptions {
    EmbeddedOptions {
        checkpoint_bytes: u64::MAX,
        ..EmbeddedOptions::default()
    }
}

fn wal_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("a file name").to_os_string();
    name.push("-wal");
    path.with_file_name(name)
}

fn write(store: &RedbStore, id: &str, version: u64) {
    let kind = if version == 1 {
        WriteKind::Create
    } else {
        WriteKind::Append
    };
    let mut request = WriteRequest::new(
        kind,
        "order",
        id,
        "changed",
        WriteBody::Payload(json!({ "version": version, "text": "w".repeat(200) })),
    );
    if version > 1 {
        request.expected_version = Some(version - 1);
    }
    let outcome = store.write(T, request).expect("write");
    assert_eq!(outcome.event.version, version);
}

/// Writes `AGGREGATES` x `EVENTS_EACH` events one at a time (one log record each, the last one
/// `o-{AGGREGATES - 1}` at version `EVENTS_EACH`), copies the database and its log into
/// `image` while the store is open, then closes the store. Returns the image's database path.
fn crash_image(dir: &Path) -> PathBuf {
    let live = dir.join("live.redb");
    let image = dir.join("image.redb");
    let store = RedbStore::open_with_options(&live, Durability::Fsync, 0, never_checkpoint())
        .expect("open");
    for version in 1..=EVENTS_EACH {
        for n in 0..AGGREGATES {
            write(&store, &format!("o-{n}"), version);
        }
    }
    std::fs::copy(&live, &image).expect("copy the database file");
    std::fs::copy(wal_of(&live), wal_of(&image)).expect("copy the log");
    drop(store);
    image
}

/// (offset, length) of each record of the log at `path`: magic, body length (u32 LE), LSN,
/// checksum, body.
fn records(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read the log");
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.get(at..at + 4) == Some(&b"DBXW"[..]) {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        out.push((at, 24 + len));
        at += 24 + len;
    }
    out
}

/// The versions of each aggregate, after checking each one's events and verify.
fn versions(store: &RedbStore) -> Vec<u64> {
    (0..AGGREGATES)
        .map(|n| {
            let id = format!("o-{n}");
            let Some(aggregate) = store.get(T, "order", &id).expect("get") else {
                return 0;
            };
            let page = store.events(T, "order", &id, 0, 100, None).expect("events");
            let stored: Vec<u64> = page.events.iter().map(|e| e.version).collect();
            assert_eq!(stored, (1..=aggregate.version).collect::<Vec<_>>(), "{id}");
            let root = store.verify(T, "order", &id).expect("verify");
            assert_eq!(root, aggregate.merkle_root, "{id}");
            aggregate.version
        })
        .collect()
}

fn all_written() -> Vec<u64> {
    vec![EVENTS_EACH; AGGREGATES]
}

/// All but the last write: `o-{AGGREGATES - 1}` one version short.
fn all_but_the_last() -> Vec<u64> {
    let mut expected = all_written();
    expected[AGGREGATES - 1] -= 1;
    expected
}

#[test]
fn a_crash_image_replays_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = crash_image(dir.path());
    let logged = records(&wal_of(&image));
    assert_eq!(
        logged.len(),
        AGGREGATES * EVENTS_EACH as usize,
        "{logged:?}"
    );
    let report = check(&image).expect("check");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.events, AGGREGATES as u64 * EVENTS_EACH, "{report:?}");
    let store = RedbStore::open(&image, Durability::Fsync).expect("open the image");
    assert_eq!(versions(&store), all_written());
    // The replay was checkpointed and the log emptied: writes go on from there.
    assert_eq!(std::fs::metadata(wal_of(&image)).expect("log").len(), 0);
    write(&store, "o-0", EVENTS_EACH + 1);
    drop(store);
    let store = RedbStore::open(&image, Durability::Relaxed).expect("reopen");
    assert_eq!(versions(&store)[0], EVENTS_EACH + 1);
}

#[test]
fn a_final_record_cut_short_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = crash_image(dir.path());
    let log = wal_of(&image);
    let &(at, len) = records(&log).last().expect("records");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open the log");
    file.set_len((at + len / 2) as u64)
        .expect("cut the last record");
    drop(file);
    let store = RedbStore::open(&image, Durability::Fsync).expect("a torn tail opens");
    assert_eq!(versions(&store), all_but_the_last());
    // The dropped write's version is free again, and taken by the next write.
    write(&store, &format!("o-{}", AGGREGATES - 1), EVENTS_EACH);
    assert_eq!(versions(&store), all_written());
}

#[test]
fn a_final_record_failing_its_checksum_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = crash_image(dir.path());
    let log = wal_of(&image);
    let &(at, len) = records(&log).last().expect("records");
    let mut bytes = std::fs::read(&log).expect("read");
    bytes[at + len - 7] ^= 0x01;
    std::fs::write(&log, &bytes).expect("flip a byte of the last record");
    let store = RedbStore::open(&image, Durability::Fsync).expect("a damaged tail opens");
    assert_eq!(versions(&store), all_but_the_last());
}

#[test]
fn a_damaged_record_followed_by_valid_ones_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = crash_image(dir.path());
    let log = wal_of(&image);
    let logged = records(&log);
    let mut bytes = std::fs::read(&log).expect("read");
    let original = bytes.clone();
    // A byte of the body, then one of the length, of a record in the middle.
    for offset in [logged[4].0 + 30, logged[4].0 + 5] {
        bytes.clone_from(&original);
        bytes[offset] ^= 0x40;
        std::fs::write(&log, &bytes).expect("damage a record");
        let err = RedbStore::open(&image, Durability::Fsync).expect_err("refused");
        assert!(err.is_damaged(), "{err}");
        assert_eq!(err.code(), "integrity_violation");
        let text = err.to_string();
        assert!(
            text.contains("write-ahead log") && text.contains("-wal"),
            "names the log: {text}"
        );
        // Nothing of the log was replayed, nor was it emptied.
        assert_eq!(std::fs::read(&log).expect("read"), bytes);
        let report = check(&image).expect("check runs");
        assert!(!report.is_clean(), "check reports it: {report:?}");
    }
}
