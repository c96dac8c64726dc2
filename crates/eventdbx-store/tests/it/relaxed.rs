//! Relaxed mode keeps consecutive writes in one open transaction (see the store's `commit`
//! module). These tests pin what that must not change: an acknowledged write is visible to every
//! later read at once, a refused write loses nothing, and closing makes everything durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use eventdbx_core::write::{request_digest, WriteKind};
use eventdbx_store::{Durability, EventStore, Idempotency, RedbStore, WriteRequest};
use serde_json::{json, Value};

use crate::conformance::{append_until_refused, request, T};

/// The engine itself: these tests reach behind the traits (open transaction, close).
fn relaxed(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("data.redb"), Durability::Relaxed).expect("open store")
}

fn append(t: &str, id: &str, payload: Value) -> WriteRequest {
    request(WriteKind::Append, t, id, payload)
}

fn version(store: &RedbStore, id: &str) -> u64 {
    store
        .get(T, "thing", id)
        .expect("get")
        .map_or(0, |aggregate| aggregate.version)
}

/// More writes than one open transaction holds, each followed by a different kind of read.
#[test]
fn every_read_sees_each_acknowledged_write_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let mut last_event = 0;
    for n in 0u64..600 {
        let id = format!("a-{}", n % 5);
        let outcome = store
            .write(T, append("thing", &id, json!({"n": n})))
            .expect("append");
        let expected = n / 5 + 1;
        assert_eq!(outcome.event.version, expected);
        // Writes between the reads stay in the open transaction; each read must commit it.
        if n % 7 == 0 {
            assert_eq!(version(&store, &id), expected, "get after write {n}");
        }
        if n % 11 == 0 {
            let page = store
                .events(T, "thing", &id, expected - 1, 10, None)
                .expect("events");
            assert_eq!(page.events.len(), 1, "events after write {n}");
            assert_eq!(page.events[0].payload, json!({"n": n}));
        }
        if n % 13 == 0 {
            let page = store
                .outbox(T, last_event, 1000, &|_, _| true)
                .expect("outbox");
            let ids: Vec<u64> = page.events.iter().map(|e| e.metadata.event_id).collect();
            assert_eq!(ids.last(), Some(&outcome.event.metadata.event_id));
            last_event = outcome.event.metadata.event_id;
        }
        if n % 17 == 0 {
            assert_eq!(store.usage(T).expect("usage").events, n + 1);
            store.verify(T, "thing", &id).expect("verify");
        }
    }
    assert_eq!(store.recalc_usage(T).expect("recalc").events, 600);
}

/// Readers on other threads never see less than what a writer had acknowledged before the
/// read began, while writers keep the open transaction busy.
#[test]
fn concurrent_readers_see_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(relaxed(&dir));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, acked) = (Arc::clone(&store), Arc::clone(&acked));
            thread::spawn(move || {
                for n in 0..400 {
                    let id = format!("w-{w}");
                    let v = store
                        .write(T, append("thing", &id, json!({"n": n})))
                        .expect("append")
                        .event
                        .version;
                    acked[w].store(v, Ordering::Release);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, acked, done) = (Arc::clone(&store), Arc::clone(&acked), Arc::clone(&done));
            thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    for (w, floor) in acked.iter().enumerate() {
                        let floor = floor.load(Ordering::Acquire);
                        let seen = version(&store, &format!("w-{w}"));
                        assert!(seen >= floor, "w-{w}: read {seen} after {floor} was acked");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().expect("reader") > 0);
    }
    for w in 0..4 {
        assert_eq!(version(&store, &format!("w-{w}")), 400);
        store.verify(T, "thing", &format!("w-{w}")).expect("verify");
    }
}

/// A write refused inside the open transaction (quota, a reused idempotency key with another
/// body, a stale expected version) leaves the writes before it, which are still uncommitted,
/// in place; closing and reopening keeps every acknowledged one.
#[test]
fn refused_writes_lose_nothing_of_the_open_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let keyed = |key: &str, payload: Value| {
        let body = payload.to_string();
        let mut write = append("thing", "k", payload);
        write.idempotency = Some(Idempotency {
            key: key.to_owned(),
            digest: request_digest(
                write.kind,
                &write.aggregate_type,
                &write.aggregate_id,
                &write.event_type,
                &body,
                None,
                None,
                None,
            ),
        });
        write
    };
    let first = store.write(T, keyed("k1", json!({"a": 1}))).expect("keyed");
    // The key's first result is only in the open transaction: the replay must find it there.
    let again = store
        .write(T, keyed("k1", json!({"a": 1})))
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.event, first.event);
    let err = store
        .write(T, keyed("k1", json!({"a": 2})))
        .expect_err("same key, other body");
    assert_eq!(err.code(), "idempotency_conflict");

    let mut stale = append("thing", "k", json!({"b": 1}));
    stale.expected_version = Some(7);
    assert_eq!(
        store.write(T, stale).expect_err("stale").code(),
        "version_conflict"
    );

    let (accepted, refused) = append_until_refused(&store, "thing", "q", 300, 4000);
    assert_eq!(refused.code(), "tenant_quota");
    // A write after the refusals joins the same transaction.
    store
        .write(T, append("thing", "k", json!({"c": 1})))
        .expect("after the refusals");
    assert_eq!(version(&store, "k"), 2);
    assert_eq!(version(&store, "q"), accepted);
    drop(store);

    let store = relaxed(&dir);
    assert_eq!(version(&store, "k"), 2);
    assert_eq!(version(&store, "q"), accepted);
    store.verify(T, "thing", "k").expect("verify k");
    store.verify(T, "thing", "q").expect("verify q");
    assert_eq!(store.usage(T).expect("usage").events, accepted + 2);
    assert_eq!(
        store.recalc_usage(T).expect("recalc"),
        store.usage(T).expect("usage")
    );
}
