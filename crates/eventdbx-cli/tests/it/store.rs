//! A damaged store file from the operator's side: `dbx serve` refuses it cleanly (the file and
//! the recovery commands named, no panic, a non-zero exit), `dbx store check` says it is
//! damaged (exit status 2) and `dbx store recover` puts the last good state back, keeping the
//! damaged file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::redb_store::recover;
use eventdbx_store::{Durability, EventStore, RedbStore, WriteRequest};
use serde_json::json;

fn dbx(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbx"))
        .current_dir(dir)
        .env_remove("EVENTDBX_CONFIG")
        .args(args)
        .output()
        .expect("dbx runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A new store in place of the workspace's empty one: eight aggregates, 25 events.
fn fill(path: &Path) {
    std::fs::remove_file(path).expect("remove the empty store");
    let store = RedbStore::open(path, Durability::Fsync).expect("open the store");
    for i in 0..8 {
        for n in 0..(if i == 0 { 4 } else { 3 }) {
            let kind = if n == 0 {
                WriteKind::Create
            } else {
                WriteKind::Append
            };
            let body = WriteBody::Payload(json!({"n": n, "text": "z".repeat(200)}));
            let request = WriteRequest::new(kind, "order", format!("o-{i}"), "changed", body);
            store.write("default", request).expect("write");
        }
    }
    store.close();
}

/// The damaged bytes of `path` with one page's type byte flipped, chosen (on copies) so that
/// the open refuses it and `recover` can put the commit before back. Whether the latest commit
/// has a page of its own depends on where redb placed it: another commit is made until one has.
fn damage_a_recoverable_page(path: &Path, scratch: &Path) -> Vec<u8> {
    let copy: PathBuf = scratch.join("copy.redb");
    for round in 0..8 {
        if round > 0 {
            let store = RedbStore::open(path, Durability::Fsync).expect("open the store");
            let body = WriteBody::Payload(json!({"round": round}));
            let request = WriteRequest::new(WriteKind::Append, "order", "o-1", "changed", body);
            store.write("default", request).expect("write");
            store.close();
        }
        let original = std::fs::read(path).expect("read");
        for page in 1..original.len() / 4096 {
            let mut bytes = original.clone();
            bytes[page * 4096] ^= 0xFF;
            std::fs::write(&copy, &bytes).expect("write copy");
            if RedbStore::open(&copy, Durability::Fsync).is_ok() {
                continue;
            }
            if recover(&copy).expect("recover runs").damaged_file.is_some() {
                return bytes;
            }
        }
    }
    panic!("no page of the latest commit alone");
}

#[test]
fn a_damaged_store_is_refused_by_serve_checked_and_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path(), &["init"]);
    assert!(init.status.success(), "{}", text(&init));
    let store = dir.path().join(".dbx/store/events.redb");
    fill(&store);

    let check = dbx(dir.path(), &["store", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        text(&check).contains("8 aggregates verified (0 damaged), 25 events"),
        "{}",
        text(&check)
    );

    let damaged = damage_a_recoverable_page(&store, scratch.path());
    std::fs::write(&store, &damaged).expect("damage the store");

    let serve = dbx(dir.path(), &["serve"]);
    let said = text(&serve);
    assert_eq!(serve.status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(said.contains(&store.display().to_string()), "{said}");
    assert!(
        said.contains("dbx store check") && said.contains("dbx store recover"),
        "{said}"
    );

    let check = dbx(dir.path(), &["store", "check"]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(text(&check).contains("DAMAGED"), "{}", text(&check));
    assert_eq!(
        std::fs::read(&store).expect("read"),
        damaged,
        "check is read-only"
    );

    let recovered = dbx(dir.path(), &["store", "recover"]);
    assert_eq!(recovered.status.code(), Some(0), "{}", text(&recovered));
    let kept: Vec<_> = std::fs::read_dir(store.parent().expect("dir"))
        .expect("list")
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("events.redb.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");
    assert_eq!(std::fs::read(kept[0].path()).expect("read"), damaged);

    let check = dbx(dir.path(), &["store", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}
