//! A full disk: the engine on a real, small tmpfs runs out of space, fails the write with the
//! cause, reports degraded health, and writes again once space returns, without a restart and
//! without losing an acknowledged write (`docs/storage.md`, "When the disk fails").
//!
//! A tmpfs needs a mount, so the test re-runs this binary as a child in its own user and mount
//! namespace (`unshare -rm`, which works for root and, where user namespaces are allowed, for
//! anyone): the child mounts the tmpfs, so nothing is left mounted whatever happens to it. The
//! child selects the `#[ignore]`d [`child_fills_the_disk`] test and finds its durability in an
//! environment variable; the parent only checks that it succeeded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::Command;

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EventStore, RedbStore, StorageHealth, WriteRequest};
use serde_json::json;

/// `fsync` or `relaxed` in the child; its absence makes [`child_fills_the_disk`] a no-op.
const DURABILITY_ENV: &str = "EVENTDBX_FULL_DISK_DURABILITY";
const TENANT: &str = "default";
const AGGREGATE_TYPE: &str = "account";
const AGGREGATES: usize = 4;
/// Bounds the writes it takes to fill what the filler left (a few hundred KiB at 8 KiB each).
const MAX_WRITES_TO_FILL: usize = 20_000;
/// Bounds the writes tried after space returns: the first one is expected to succeed.
const MAX_WRITES_TO_RECOVER: usize = 50;

fn run_child(durability: Durability) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .args(["-rm", "--"])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "full_disk::child_fills_the_disk",
            "--nocapture",
        ])
        .env(DURABILITY_ENV, durability.as_str())
        .output()
        .unwrap_or_else(|err| {
            panic!("this test needs `unshare` (util-linux) to mount a tmpfs: {err}")
        });
    assert!(
        output.status.success(),
        "the full-disk child failed ({}); if `unshare -rm` itself failed, run as root or allow \
         unprivileged user namespaces (kernel.unprivileged_userns_clone=1)\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn durable_writes_recover_when_space_returns() {
    run_child(Durability::Fsync);
}

#[test]
fn relaxed_writes_recover_when_space_returns() {
    run_child(Durability::Relaxed);
}

fn append(store: &RedbStore, id: &str, version: u64, pad: &str) -> eventdbx_store::Result<u64> {
    let kind = if version == 0 {
        WriteKind::Create
    } else {
        WriteKind::Append
    };
    let mut request = WriteRequest::new(
        kind,
        AGGREGATE_TYPE,
        id,
        "deposited",
        WriteBody::Payload(json!({ "version": version + 1, "pad": pad })),
    );
    if version > 0 {
        request.expected_version = Some(version);
    }
    store
        .write(TENANT, request)
        .map(|outcome| outcome.event.version)
}

/// The aggregate's version as stored: a relaxed write whose flush failed may or may not have
/// been kept, so the next write expects what is there.
fn stored_version(store: &RedbStore, id: &str) -> u64 {
    store
        .get(TENANT, AGGREGATE_TYPE, id)
        .expect("reads work")
        .map_or(0, |a| a.version)
}

/// Writers and readers at once, one thread per aggregate, while the disk is full: every failure
/// is a storage error, and none is redb's latched "Previous I/O error" (each write reopens what
/// an earlier one left stale; a read may race a reopen and find its transaction closed). Nothing
/// deadlocks. Returns the highest version each thread had acknowledged (a small write may still
/// fit in pages the file already holds); in relaxed mode none counts, since a flush tells only the
/// first of several flushing threads that a loss happened.
fn hammer_while_full<'i>(store: &RedbStore, ids: &'i [String], pad: &str) -> Vec<(&'i str, u64)> {
    const ATTEMPTS: usize = 10;
    let check = |err: &eventdbx_store::StoreError| {
        let text = err.to_string();
        assert_eq!(err.code(), "storage", "{text}");
        assert!(
            !text.contains("Previous I/O") && !text.contains("re-open"),
            "a concurrent request while full: {text}"
        );
    };
    std::thread::scope(|scope| {
        let threads: Vec<_> = ids
            .iter()
            .map(|id| {
                scope.spawn(move || {
                    let mut acked = 0;
                    for _ in 0..ATTEMPTS {
                        let version = match store.get(TENANT, AGGREGATE_TYPE, id) {
                            Ok(found) => found.map_or(0, |a| a.version),
                            Err(err) => {
                                check(&err);
                                continue;
                            }
                        };
                        match append(store, id, version, pad)
                            .and_then(|v| store.flush().map(|()| v))
                        {
                            Ok(version) if store.durability() == Durability::Fsync => {
                                acked = version
                            }
                            Ok(_) => {}
                            Err(err) => check(&err),
                        }
                    }
                    (id.as_str(), acked)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a writer thread does not panic"))
            .collect()
    })
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut filler = File::create(path).expect("create the filler file");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(28) || err.kind() == ErrorKind::StorageFull => {
                break
            }
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
}

/// The child: in its own mount namespace, on a 4 MiB tmpfs.
#[test]
#[ignore = "run by the full-disk tests in a mount namespace"]
fn child_fills_the_disk() {
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("fsync") => Durability::Fsync,
        Ok("relaxed") => Durability::Relaxed,
        _ => return,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "mount a tmpfs on {}",
        dir.path().display()
    );
    let store = RedbStore::open(dir.path().join("events.redb"), durability).expect("open");
    let ids: Vec<String> = (0..AGGREGATES).map(|n| format!("acct-{n}")).collect();
    let mut acked: BTreeMap<&str, u64> = ids.iter().map(|id| (id.as_str(), 0)).collect();
    let pad = "x".repeat(8 * 1024);
    for id in &ids {
        let version = append(&store, id, 0, &pad).expect("a write before the disk fills");
        acked.insert(id, version);
    }
    store.flush().expect("flush");
    fill(&dir.path().join("filler"));

    // Write until the disk is full; every acknowledged write is remembered.
    let mut failure = None;
    for turn in 0..MAX_WRITES_TO_FILL {
        let id = ids[turn % ids.len()].as_str();
        let written = append(&store, id, acked[id], &pad).and_then(|v| store.flush().map(|()| v));
        match written {
            Ok(version) => {
                acked.insert(id, version);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let failure = failure.expect("the disk fills up");
    assert_eq!(failure.code(), "storage", "{failure}");
    assert!(
        failure.to_string().contains("No space left on device"),
        "the first failure names the cause: {failure}"
    );
    // Later writes while the disk is full fail with the cause too, never redb's "close and
    // re-open" (which the engine now does itself).
    for (turn, id) in ids.iter().enumerate() {
        let err = append(&store, id, stored_version(&store, id), &pad)
            .and_then(|v| store.flush().map(|()| v))
            .expect_err("no space yet");
        let text = err.to_string();
        assert!(
            text.contains("No space left on device") && !text.contains("re-open"),
            "write {turn} while full: {text}"
        );
    }
    for (id, version) in hammer_while_full(&store, &ids, &pad) {
        let known = acked.get_mut(id).expect("known id");
        *known = (*known).max(version);
    }
    let StorageHealth::Degraded { cause } = store.health() else {
        panic!("health is degraded while writes fail: {:?}", store.health());
    };
    assert!(cause.contains("No space left on device"), "{cause}");
    for id in &ids {
        let aggregate = store
            .get(TENANT, AGGREGATE_TYPE, id)
            .expect("reads work while the disk is full")
            .expect("the aggregate exists");
        assert!(
            aggregate.version >= acked[id.as_str()],
            "{id}: every ack kept"
        );
    }

    // A relaxed flush reports a loss to the first flush after it: the hammer's, to this one.
    let _ = store.flush();
    std::fs::remove_file(dir.path().join("filler")).expect("free the space");
    let mut recovered_after = None;
    for attempt in 1..=MAX_WRITES_TO_RECOVER {
        let id = ids[0].as_str();
        let written = append(&store, id, stored_version(&store, id), &pad)
            .and_then(|v| store.flush().map(|()| v));
        if let Ok(version) = written {
            acked.insert(id, version);
            recovered_after = Some(attempt);
            break;
        }
    }
    let attempts = recovered_after.expect("writes succeed again once space returns");
    assert_eq!(attempts, 1, "the first write after space returns succeeds");
    assert_eq!(store.health(), StorageHealth::Ok);
    for id in &ids[1..] {
        let version =
            append(&store, id, stored_version(&store, id), &pad).expect("write after recovery");
        acked.insert(id, version);
    }
    store.flush().expect("flush after recovery");

    for id in &ids {
        let aggregate = store
            .get(TENANT, AGGREGATE_TYPE, id)
            .expect("get")
            .expect("exists");
        assert_eq!(
            aggregate.version,
            acked[id.as_str()],
            "{id}: every ack kept, in order"
        );
        let page = store
            .events(TENANT, AGGREGATE_TYPE, id, 0, 100_000, None)
            .expect("events");
        let versions: Vec<u64> = page.events.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=aggregate.version).collect::<Vec<_>>(),
            "{id}: gapless"
        );
        let root = store.verify(TENANT, AGGREGATE_TYPE, id).expect("verify");
        assert_eq!(root, aggregate.merkle_root, "{id}");
    }
    drop(store);
    // And the file opens again as it is.
    let store = RedbStore::open(dir.path().join("events.redb"), durability).expect("reopen");
    for id in &ids {
        let aggregate = store.get(TENANT, AGGREGATE_TYPE, id).expect("get");
        assert_eq!(aggregate.map(|a| a.version), Some(acked[id.as_str()]));
    }
}
