//! Writes and reads every engine must get right: atomic create, expected versions, idempotency,
//! tenant and id isolation, archive/restore, snapshots, outbox order, quotas and usage.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use eventdbx_core::query::filter::Filter;
use eventdbx_core::write::{request_digest, WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{Idempotency, WriteRequest};
use serde_json::{json, Value};

use super::{append, append_until_refused, domain, open, relaxed, request, T};

#[test]
fn writes_keep_json_types_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let created = store
        .write(
            T,
            request(
                WriteKind::Create,
                "order",
                "o-1",
                json!({"age": 30, "zip": "0123"}),
            ),
        )
        .expect("create");
    assert_eq!(created.event.version, 1);
    assert_eq!(created.event.event_type, "thing_changed");
    assert_eq!(
        created.event.event_type_raw.as_deref(),
        Some("thing.changed")
    );
    append(
        &*store,
        T,
        "order",
        "o-1",
        json!({"address": {"street": "1 Main"}, "n": null}),
    );
    let patch = WriteRequest::new(
        WriteKind::Patch,
        "order",
        "o-1",
        "order.patched",
        WriteBody::Patch(r#"[{"op":"replace","path":"/address/street","value":"2 Main"}]"#.into()),
    );
    let patched = store.write(T, patch).expect("patch");
    assert_eq!(
        patched.event.payload,
        json!({"address": {"street": "2 Main"}})
    );
    let aggregate = store.get(T, "order", "o-1").expect("get").expect("exists");
    assert_eq!(
        Value::Object(aggregate.state.clone()),
        json!({"age": 30, "zip": "0123", "address": {"street": "2 Main"}, "n": null})
    );
    assert_eq!(aggregate.version, 3);
    assert_eq!(
        store.verify(T, "order", "o-1").expect("verify"),
        aggregate.merkle_root
    );
    let page = store
        .events(T, "order", "o-1", 1, 10, None)
        .expect("events");
    assert_eq!(
        page.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 3]
    );
    let filter = Filter::parse("event_type = \"order_patched\"").expect("filter");
    let page = store
        .events(T, "order", "o-1", 0, 10, Some(&filter))
        .expect("events");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].version, 3);
}

#[test]
fn racing_creates_give_exactly_one_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store.write(
                    T,
                    request(WriteKind::Create, "order", "race", json!({"writer": n})),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|handle| handle.join().expect("thread"))
        .collect();
    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "{results:?}");
    for result in results.into_iter().filter_map(Result::err) {
        assert_eq!(result.code(), "aggregate_exists");
        assert_eq!(result.to_string(), "aggregate order::race already exists");
    }
    assert_eq!(
        store
            .get(T, "order", "race")
            .expect("get")
            .expect("exists")
            .version,
        1
    );
}

#[test]
fn stale_expected_version_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    append(&*store, T, "order", "o-1", json!({"a": 1}));
    append(&*store, T, "order", "o-1", json!({"a": 2}));
    let mut stale = request(WriteKind::Append, "order", "o-1", json!({"a": 3}));
    stale.expected_version = Some(1);
    let err = domain(store.write(T, stale).expect_err("stale"));
    assert_eq!(
        err,
        CoreError::VersionConflict {
            expected: 1,
            current: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "version conflict: expected version 1, current version 2"
    );
    let mut fresh = request(WriteKind::Append, "order", "o-1", json!({"a": 3}));
    fresh.expected_version = Some(2);
    assert_eq!(store.write(T, fresh).expect("current").event.version, 3);
    let mut must_not_exist = request(WriteKind::Append, "order", "o-2", json!({}));
    must_not_exist.expected_version = Some(0);
    store
        .write(T, must_not_exist.clone())
        .expect("new aggregate");
    assert_eq!(
        domain(store.write(T, must_not_exist).expect_err("exists now")).code(),
        "version_conflict"
    );
}

fn with_key(mut write: WriteRequest, key: &str, body: &str) -> WriteRequest {
    write.idempotency = Some(Idempotency {
        key: key.to_owned(),
        digest: request_digest(
            write.kind,
            &write.aggregate_type,
            &write.aggregate_id,
            &write.event_type,
            body,
            None,
            None,
            None,
        ),
    });
    write
}

#[test]
fn a_repeated_idempotency_key_writes_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let first = store
        .write(
            T,
            with_key(
                request(WriteKind::Append, "order", "o-1", json!({"a": 1})),
                "k1",
                "{\"a\":1}",
            ),
        )
        .expect("first");
    let again = store
        .write(
            T,
            with_key(
                request(WriteKind::Append, "order", "o-1", json!({"a": 1})),
                "k1",
                "{\"a\":1}",
            ),
        )
        .expect("replay");
    assert!(again.replayed && !first.replayed);
    assert_eq!(again.event, first.event);
    assert_eq!(
        store
            .get(T, "order", "o-1")
            .expect("get")
            .expect("exists")
            .version,
        1
    );
    let err = store
        .write(
            T,
            with_key(
                request(WriteKind::Append, "order", "o-1", json!({"a": 2})),
                "k1",
                "{\"a\":2}",
            ),
        )
        .expect_err("different request");
    assert_eq!(err.code(), "idempotency_conflict");
    assert_eq!(
        err.to_string(),
        "idempotency key 'k1' was already used for a different request"
    );

    // Concurrent writes with one key produce one event.
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store
                    .write(
                        T,
                        with_key(
                            request(WriteKind::Append, "order", "o-2", json!({"b": 1})),
                            "k2",
                            "{\"b\":1}",
                        ),
                    )
                    .expect("write or replay")
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
    assert_eq!(
        store
            .get(T, "order", "o-2")
            .expect("get")
            .expect("exists")
            .version,
        1
    );
    assert_eq!(store.usage(T).expect("usage").events, 2);
}

#[test]
fn tenants_and_exact_ids_are_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    append(&*store, "acme", "order", "o-1", json!({"tenant": "acme"}));
    append(&*store, "acme", "order", "o-10", json!({"n": 10}));
    append(&*store, "acme", "order", "o-10", json!({"n": 11}));
    append(
        &*store,
        "globex",
        "order",
        "o-1",
        json!({"tenant": "globex"}),
    );
    store
        .create_snapshot("acme", "order", "o-10", None)
        .expect("snapshot o-10");

    let acme = store
        .get("acme", "order", "o-1")
        .expect("get")
        .expect("exists");
    assert_eq!(acme.state["tenant"], json!("acme"));
    assert!(store.get("initech", "order", "o-1").expect("get").is_none());
    let events = store
        .events("acme", "order", "o-1", 0, 100, None)
        .expect("events");
    assert_eq!(events.events.len(), 1, "o-1 never sees o-10's events");
    assert!(store
        .list_snapshots("acme", Some("order"), Some("o-1"), None)
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .list_snapshots("acme", Some("order"), None, None)
            .expect("list")
            .len(),
        1
    );
    assert!(store
        .list_snapshots("globex", None, None, None)
        .expect("list")
        .is_empty());
    let outbox = store
        .outbox("globex", 0, 100, &|_, _| true)
        .expect("outbox");
    assert_eq!(outbox.events.len(), 1);
    assert_eq!(store.usage("acme").expect("usage").events, 3);
    assert_eq!(store.aggregate_types("acme").expect("types"), ["order"]);
    append(&*store, "acme", "invoice", "i-1", json!({}));
    append(&*store, "acme", "zebra", "z-1", json!({}));
    assert_eq!(
        store.aggregate_types("acme").expect("types"),
        ["invoice", "order", "zebra"]
    );
    assert!(store.aggregate_types("initech").expect("types").is_empty());
    assert_eq!(store.usage("globex").expect("usage").events, 1);
    assert_eq!(
        domain(
            store
                .verify("globex", "order", "o-10")
                .expect_err("other tenant")
        ),
        CoreError::AggregateNotFound
    );
}

#[test]
fn archive_and_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    append(&*store, T, "order", "o-1", json!({"a": 1}));
    append(&*store, T, "order", "o-2", json!({"b": 1}));
    append(&*store, T, "order", "o-1", json!({"a": 2}));
    let before: Vec<u64> = store
        .outbox(T, 0, 100, &|_, _| true)
        .expect("outbox")
        .events
        .iter()
        .map(|e| e.metadata.event_id)
        .collect();
    assert_eq!(before.len(), 3);

    let archived = store
        .set_archived(T, "order", "o-1", true, Some(" done "))
        .expect("archive");
    assert!(archived.archived);
    assert_eq!(
        domain(
            store
                .write(T, request(WriteKind::Append, "order", "o-1", json!({})))
                .expect_err("archived")
        ),
        CoreError::AggregateArchived
    );
    assert_eq!(
        domain(
            store
                .write(T, request(WriteKind::Create, "order", "o-1", json!({})))
                .expect_err("exists")
        )
        .code(),
        "aggregate_exists"
    );
    assert!(store
        .events(T, "order", "o-1", 0, 100, None)
        .expect("events")
        .events
        .is_empty());
    assert_eq!(
        store
            .outbox(T, 0, 100, &|_, _| true)
            .expect("outbox")
            .events
            .len(),
        1
    );
    store
        .verify(T, "order", "o-1")
        .expect("verify works while archived");
    store
        .set_archived(T, "order", "o-1", true, None)
        .expect("archiving again is not an error");

    let restored = store
        .set_archived(T, "order", "o-1", false, None)
        .expect("restore");
    assert!(!restored.archived);
    let after: Vec<u64> = store
        .outbox(T, 0, 100, &|_, _| true)
        .expect("outbox")
        .events
        .iter()
        .map(|e| e.metadata.event_id)
        .collect();
    assert_eq!(
        after, before,
        "outbox entries come back with their original ids"
    );
    assert_eq!(append(&*store, T, "order", "o-1", json!({"a": 3})), 3);
    assert_eq!(
        domain(
            store
                .set_archived(T, "order", "nope", true, None)
                .expect_err("unknown")
        ),
        CoreError::AggregateNotFound
    );
}

#[test]
fn snapshots_manual_automatic_and_unique() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    for n in 0..6 {
        let mut write = request(WriteKind::Append, "order", "o-1", json!({"n": n}));
        write.snapshot_threshold = Some(3);
        let outcome = store.write(T, write).expect("append");
        assert_eq!(
            outcome.snapshot.is_some(),
            outcome.event.version.is_multiple_of(3)
        );
    }
    let automatic = store
        .list_snapshots(T, Some("order"), Some("o-1"), None)
        .expect("list");
    assert_eq!(
        automatic.iter().map(|s| s.version).collect::<Vec<_>>(),
        [3, 6]
    );
    assert_eq!(automatic[0].comment.as_deref(), Some("auto snapshot v3"));
    let ids: HashSet<u64> = (0..50)
        .map(|_| {
            store
                .create_snapshot(T, "order", "o-1", Some("  "))
                .expect("snapshot")
                .snapshot_id
        })
        .collect();
    assert_eq!(ids.len(), 50, "ids are unique within one millisecond");
    let one = store
        .get_snapshot(T, *ids.iter().next().expect("id"))
        .expect("get")
        .expect("found");
    assert_eq!(one.comment, None);
    assert_eq!(one.state["n"], json!(5));
    assert_eq!(
        store
            .list_snapshots(T, None, None, Some(3))
            .expect("by version")
            .len(),
        1
    );
    assert!(store.get_snapshot(T, 1).expect("get").is_none());
    assert_eq!(
        domain(
            store
                .create_snapshot(T, "order", "missing", None)
                .expect_err("missing")
        ),
        CoreError::AggregateNotFound
    );
}

#[test]
fn outbox_is_the_global_event_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let mut written = Vec::new();
    for n in 0..30 {
        let id = format!("a-{}", n % 7);
        written.push(
            store
                .write(T, request(WriteKind::Append, "thing", &id, json!({"n": n})))
                .expect("append")
                .event
                .metadata
                .event_id,
        );
    }
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.outbox(T, after, 4, &|_, _| true).expect("outbox");
        read.extend(page.events.iter().map(|e| e.metadata.event_id));
        match page.events.last() {
            Some(last) if page.full => after = last.metadata.event_id,
            _ => break,
        }
    }
    assert_eq!(read, written);
    assert!(store
        .outbox(T, 0, 100, &|t, _| t != "thing")
        .expect("outbox")
        .events
        .is_empty());
}

#[test]
fn quota_is_enforced_and_usage_recounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let quota = 1500;
    let (accepted, err) = append_until_refused(&*store, "order", "o-1", 200, quota);
    assert_eq!(err.code(), "tenant_quota");
    assert!(accepted >= 2);
    let usage = store.usage(T).expect("usage");
    assert!(usage.bytes >= quota);
    assert_eq!(store.recalc_usage(T).expect("recalc"), usage);
    assert_eq!(usage.events, accepted);
}
