//! `dbx store check` and `dbx store recover` on the library side
//! (`eventdbx_store::redb_store::{check, recover}`): a check never writes to the file and
//! refuses a file a store holds open; a file whose latest commit is damaged is refused at open,
//! reported by the check, and recovered to the commit before it, the damaged file kept beside
//! the new one.

use std::path::Path;

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::redb_store::{check, recover};
use eventdbx_store::{Durability, EventStore, RedbStore, WriteRequest};
use serde_json::json;

const T: &str = "default";

fn append(store: &RedbStore, id: &str, n: u64) {
    let kind = if n == 0 {
        WriteKind::Create
    } else {
        WriteKind::Append
    };
    let payload = json!({"n": n, "text": "y".repeat(300)});
    let request = WriteRequest::new(
        kind,
        "order",
        id,
        "order.changed",
        WriteBody::Payload(payload),
    );
    store.write(T, request).expect("write");
}

/// Ten aggregates of three events, then one more event on `o-0` in a commit of its own.
fn build(path: &Path) {
    let store = RedbStore::open(path, Durability::Fsync).expect("open");
    for i in 0..10 {
        for n in 0..3 {
            append(&store, &format!("o-{i}"), n);
        }
    }
    append(&store, "o-0", 3);
    store.close();
}

#[test]
fn check_reports_a_clean_file_and_never_writes_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.redb");
    build(&path);
    let before = std::fs::read(&path).expect("read");
    let report = check(&path).expect("check runs");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        (report.tenants, report.aggregates, report.events),
        (1, 10, 31)
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "check wrote to the file"
    );

    let store = RedbStore::open(&path, Durability::Fsync).expect("open");
    let err = check(&path).expect_err("a file a store holds is refused");
    assert!(err.to_string().contains("already open"), "{err}");
    drop(store);
    let report = recover(&path).expect("recover runs");
    assert!(report.nothing_to_do && !report.rolled_back, "{report:?}");
}

#[test]
fn a_damaged_latest_commit_is_refused_then_recovered_to_the_commit_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine.redb");
    build(&pristine);
    let path = dir.path().join("events.redb");
    // A page of the latest commit only: damaging it is refused at open and reported by the
    // check, and the commit before it is intact. Pages both commits share cannot be recovered
    // this way (`recover` then changes nothing: checked on the way). Whether the latest commit
    // has such a page depends on where redb placed it (not when it grew the file): another
    // commit is made until one has.
    let mut recovered = None;
    for round in 0..8 {
        if round > 0 {
            let store = RedbStore::open(&pristine, Durability::Fsync).expect("open");
            append(&store, "o-9", 2 + round);
            store.close();
        }
        let original = std::fs::read(&pristine).expect("read");
        recovered = find_recoverable(&original, &path).map(|found| (found, 31 + round));
        if recovered.is_some() {
            break;
        }
    }
    let ((report, damaged), written) =
        recovered.expect("some page belongs to the latest commit only");
    // The latest commit of a cleanly closed file is the one redb makes when closing (its
    // allocator state only): rolling it back loses no event.
    assert_eq!(report.check.events, written);
    let aside = report.damaged_file.expect("the damaged file is kept");
    assert_eq!(std::fs::read(&aside).expect("kept"), damaged);

    let store = RedbStore::open(&path, Durability::Fsync).expect("the recovered file opens");
    for i in 0..10 {
        store
            .verify(T, "order", &format!("o-{i}"))
            .expect("verifies");
    }
    drop(store);
    assert!(check(&path).expect("check").is_clean());
}

/// The first page of `original` whose damage `recover` undoes (at `path`), with the recovery's
/// report and the damaged bytes; every other refused page must leave the file unchanged.
fn find_recoverable(
    original: &[u8],
    path: &Path,
) -> Option<(eventdbx_store::redb_store::RecoverReport, Vec<u8>)> {
    for page in 1..original.len() / 4096 {
        let mut damaged = original.to_vec();
        damaged[page * 4096] ^= 0xFF;
        std::fs::write(path, &damaged).expect("write");
        let Err(err) = RedbStore::open(path, Durability::Fsync) else {
            continue;
        };
        assert!(err.is_damaged(), "{err}");
        let report = check(path).expect("check runs");
        assert!(report.refused.is_some(), "{report:?}");
        assert_eq!(std::fs::read(path).expect("read"), damaged, "check wrote");
        let report = recover(path).expect("recover runs");
        if report.damaged_file.is_none() {
            assert!(!report.check.is_clean(), "{report:?}");
            assert_eq!(std::fs::read(path).expect("read"), damaged, "recover wrote");
            continue;
        }
        assert!(report.rolled_back && report.check.is_clean(), "{report:?}");
        return Some((report, damaged));
    }
    None
}

/// Damage that appears under an open store (the pages of its file overwritten on disk after
/// the open checked them) is answered with `integrity_violation` errors, never a panic, and
/// once seen, every later request of the store is refused too.
#[test]
fn damage_found_while_serving_fences_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.redb");
    build(&path);
    let store = RedbStore::open(&path, Durability::Fsync).expect("open");
    // Every page's type byte, behind the engine's back; what it has cached stays good.
    let mut bytes = std::fs::read(&path).expect("read");
    for page in 1..bytes.len() / 4096 {
        bytes[page * 4096] ^= 0xFF;
    }
    std::fs::write(&path, &bytes).expect("damage");
    let mut first = None;
    for i in 0..10 {
        let id = format!("o-{i}");
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.verify(T, "order", &id)
        }))
        .expect("no panic escapes the store");
        if let Err(err) = read {
            first.get_or_insert(err);
        }
    }
    let Some(err) = first else {
        panic!("the engine read no damaged page (all cached)");
    };
    assert!(err.is_damaged(), "{err}");
    assert_eq!(err.code(), "integrity_violation");
    let later = store
        .get(T, "order", "o-0")
        .expect_err("refused after damage");
    assert!(later.is_damaged(), "{later}");
    assert!(later.to_string().contains("refused since"), "{later}");
}
