//! The redb engine against the acceptance list of the event store: atomic create, expected
//! versions, idempotency, isolation, archive/restore, snapshots, outbox order, quotas, usage,
//! keyset paging under concurrent inserts, and tamper detection in the database file itself.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::cursor::{AggregateCursor, ListOrder, PagePlan};
use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::sort::SortSpec;
use eventdbx_core::query::{AggregateView, Scope};
use eventdbx_core::write::{request_digest, WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{
    Durability, EventStore, Idempotency, ListQuery, RedbStore, StoreError, WriteRequest,
};
use redb::ReadableTable as _;
use serde_json::{json, Value};

pub(crate) const T: &str = "default";

fn open(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("data.redb"), Durability::Fsync).expect("open store")
}

pub(crate) fn relaxed(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("data.redb"), Durability::Relaxed).expect("open store")
}

pub(crate) fn request(kind: WriteKind, t: &str, id: &str, payload: Value) -> WriteRequest {
    WriteRequest::new(kind, t, id, "thing.changed", WriteBody::Payload(payload))
}

fn append(store: &RedbStore, tenant: &str, t: &str, id: &str, payload: Value) -> u64 {
    store
        .write(tenant, request(WriteKind::Append, t, id, payload))
        .expect("append")
        .event
        .version
}

fn domain(err: StoreError) -> CoreError {
    match err {
        StoreError::Domain(err) => err,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

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
        &store,
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
    let store = Arc::new(open(&dir));
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
    append(&store, T, "order", "o-1", json!({"a": 1}));
    append(&store, T, "order", "o-1", json!({"a": 2}));
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
    let store = Arc::new(open(&dir));
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
    append(&store, "acme", "order", "o-1", json!({"tenant": "acme"}));
    append(&store, "acme", "order", "o-10", json!({"n": 10}));
    append(&store, "acme", "order", "o-10", json!({"n": 11}));
    append(
        &store,
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
    append(&store, "acme", "invoice", "i-1", json!({}));
    append(&store, "acme", "zebra", "z-1", json!({}));
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
    append(&store, T, "order", "o-1", json!({"a": 1}));
    append(&store, T, "order", "o-2", json!({"b": 1}));
    append(&store, T, "order", "o-1", json!({"a": 2}));
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
    assert_eq!(append(&store, T, "order", "o-1", json!({"a": 3})), 3);
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

/// Appends `blob_len`-byte payloads to one aggregate under a tenant quota of `quota` bytes
/// until a write is refused: the writes accepted and the refusal.
pub(crate) fn append_until_refused(
    store: &RedbStore,
    t: &str,
    id: &str,
    blob_len: usize,
    quota: u64,
) -> (u64, StoreError) {
    let mut accepted = 0;
    loop {
        let mut write = request(
            WriteKind::Append,
            t,
            id,
            json!({"blob": "x".repeat(blob_len)}),
        );
        write.quota_bytes = Some(quota);
        match store.write(T, write) {
            Ok(_) => accepted += 1,
            Err(err) => return (accepted, err),
        }
        assert!(accepted < 100, "quota never enforced");
    }
}

#[test]
fn quota_is_enforced_and_usage_recounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let quota = 1500;
    let (accepted, err) = append_until_refused(&store, "order", "o-1", 200, quota);
    assert_eq!(err.code(), "tenant_quota");
    assert!(accepted >= 2);
    let usage = store.usage(T).expect("usage");
    assert!(usage.bytes >= quota);
    assert_eq!(store.recalc_usage(T).expect("recalc"), usage);
    assert_eq!(usage.events, accepted);
}

/// Rewrites stored events with redb directly, as an attacker with file access would:
/// `change(version, event)` edits an event in place (`false` deletes it).
fn tamper(path: &std::path::Path, versions: &[u64], change: impl Fn(u64, &mut Value) -> bool) {
    let events: redb::TableDefinition<(&str, &str, &str, u64), &[u8]> =
        redb::TableDefinition::new("events");
    let db = redb::Database::create(path).expect("open file");
    let txn = db.begin_write().expect("txn");
    {
        let mut table = txn.open_table(events).expect("events table");
        for &version in versions {
            let key = (T, "order", "o-1", version);
            let original = table
                .get(key)
                .expect("get")
                .expect("event exists")
                .value()
                .to_vec();
            let mut event: Value = serde_json::from_slice(&original).expect("json");
            if change(version, &mut event) {
                let tampered = serde_json::to_vec(&event).expect("json");
                table.insert(key, tampered.as_slice()).expect("insert");
            } else {
                table.remove(key).expect("remove");
            }
        }
    }
    txn.commit().expect("commit");
}

fn verify_error(path: &std::path::Path) -> String {
    let store = RedbStore::open(path, Durability::Fsync).expect("reopen");
    let err = domain(
        store
            .verify(T, "order", "o-1")
            .expect_err("tampering detected"),
    );
    assert_eq!(err.code(), "integrity_violation");
    err.to_string()
}

#[test]
fn verify_detects_an_event_altered_in_the_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    {
        let store = RedbStore::open(&path, Durability::Fsync).expect("open");
        for n in 0..5 {
            append(&store, T, "order", "o-1", json!({"amount": n}));
        }
        store.verify(T, "order", "o-1").expect("intact");
    }
    tamper(&path, &[3], |_, event| {
        event["payload"]["amount"] = json!(1_000_000);
        true
    });
    let err = verify_error(&path);
    assert!(err.contains("event 3"), "{err}");
}

/// Long histories verify in two stages on two threads; the first failure in history order
/// must still be the one reported, whichever stage finds it.
#[test]
fn verify_of_a_long_history_reports_the_first_tampered_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine.redb");
    let root = {
        let store = RedbStore::open(&pristine, Durability::Relaxed).expect("open");
        for n in 0..3000 {
            append(&store, T, "order", "o-1", json!({"amount": n}));
        }
        let root = store.verify(T, "order", "o-1").expect("intact");
        let aggregate = store.get(T, "order", "o-1").expect("get").expect("exists");
        assert_eq!(root, aggregate.merkle_root);
        root
    };
    let case = |name: &str, versions: &[u64], change: &dyn Fn(u64, &mut Value) -> bool| {
        let path = dir.path().join(format!("{name}.redb"));
        std::fs::copy(&pristine, &path).expect("copy");
        tamper(&path, versions, change);
        verify_error(&path)
    };
    let payload = |_: u64, event: &mut Value| {
        event["payload"]["amount"] = json!(-1);
        true
    };
    let stored_root = |_: u64, event: &mut Value| {
        event["merkle_root"] = json!("00".repeat(32));
        true
    };
    let err = case("payload", &[2500], &payload);
    assert!(
        err.contains("event 2500") && err.contains("does not match its hash"),
        "{err}"
    );
    let err = case("root", &[1000], &stored_root);
    assert!(
        err.contains("merkle root mismatch") && err.contains("at event 1000"),
        "{err}"
    );
    let err = case("root-first", &[1700, 2600], &|v, e| {
        if v == 1700 {
            stored_root(v, e)
        } else {
            payload(v, e)
        }
    });
    assert!(
        err.contains("at event 1700"),
        "the earlier root wins: {err}"
    );
    // The bad root sits in the batch the decoding stage had not handed over yet.
    let err = case("root-just-before", &[2599, 2600], &|v, e| {
        if v == 2599 {
            stored_root(v, e)
        } else {
            payload(v, e)
        }
    });
    assert!(
        err.contains("at event 2599"),
        "the earlier root wins: {err}"
    );
    let err = case("payload-first", &[1100, 2900], &|v, e| {
        if v == 1100 {
            payload(v, e)
        } else {
            stored_root(v, e)
        }
    });
    assert!(
        err.contains("event 1100") && err.contains("does not match its hash"),
        "{err}"
    );
    let err = case("deleted", &[2222], &|_, _| false);
    assert!(err.contains("expected version 2222"), "{err}");
    // The untouched copy still verifies to the same root.
    let store = RedbStore::open(&pristine, Durability::Fsync).expect("reopen");
    assert_eq!(store.verify(T, "order", "o-1").expect("intact"), root);
}

// ---- Keyset paging ----

const SORTS: &[&str] = &[
    "",
    "aggregate_type",
    "aggregate_id:desc",
    "created_at",
    "created_at:desc",
    "updated_at",
    "updated_at:desc",
    "version:desc",
    "created_at:desc,aggregate_id:asc",
    "updated_at:asc,aggregate_id:desc",
    "archived:desc,created_at:asc",
    "archived,aggregate_type:desc,aggregate_id:asc",
    "aggregate_type:asc,version:desc",
    "version:asc,aggregate_id:desc,aggregate_type:asc",
];

fn plan(
    sort: Option<&SortSpec>,
    cursor: Option<&str>,
    scope: Scope,
    store: &RedbStore,
) -> PagePlan {
    let cursor = cursor.map(|c| AggregateCursor::decode(c).expect("our cursor decodes"));
    let found: Option<Aggregate> = match &cursor {
        Some(AggregateCursor::Shorthand {
            aggregate_type,
            aggregate_id,
        }) => store.get(T, aggregate_type, aggregate_id).expect("get"),
        _ => None,
    };
    PagePlan::new(sort, cursor.as_ref(), scope, |_, _| {
        found.as_ref().map(view)
    })
    .expect("plan")
}

fn view(aggregate: &Aggregate) -> AggregateView<'_> {
    aggregate.view()
}

/// Pages through `sort` with varying page sizes, inserting new aggregates between pages;
/// returns the (type, id) sequence seen.
fn page_through(
    store: &RedbStore,
    sort: &str,
    scope: Scope,
    seed: &mut u64,
    insert_between: bool,
) -> Vec<(String, String)> {
    let spec = (!sort.is_empty()).then(|| SortSpec::parse(sort).expect("sort parses"));
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut inserted = 0;
    loop {
        let take = 1 + (next(seed) % 7) as usize;
        let query = ListQuery {
            plan: plan(spec.as_ref(), cursor.as_deref(), scope, store),
            scope,
            filter: None,
            known_types: vec![],
            take,
        };
        let page = store.list(T, &query, &Some).expect("list");
        // Each page is in order and strictly after the previous one.
        let order: &ListOrder = &page.order;
        let keys: Vec<_> = page.items.iter().map(|a| order.key_of(&view(a))).collect();
        assert!(
            keys.windows(2).all(|w| order.compare(&w[0], &w[1]).is_lt()),
            "page out of order for {sort:?}"
        );
        seen.extend(
            page.items
                .iter()
                .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone())),
        );
        if !page.full {
            break;
        }
        let last = page.items.last().expect("full page has items");
        cursor = Some(page.order.cursor_after(&view(last)).to_string());
        if insert_between && inserted < 5 {
            inserted += 1;
            let id = format!("late-{}-{}", sort.len(), next(seed) % 1_000_000);
            append(
                store,
                T,
                if next(seed).is_multiple_of(2) {
                    "alpha"
                } else {
                    "zeta"
                },
                &id,
                json!({"late": true}),
            );
        }
    }
    seen
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn every_sort_pages_every_item_exactly_once_while_inserts_happen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let types = ["alpha", "beta", "zeta"];
    for n in 0..60 {
        let t = types[n % 3];
        let id = format!("{}-{}", ["a", "B", "c-1", "c"][n % 4], n);
        for _ in 0..=(next(&mut seed) % 3) {
            append(&store, T, t, &id, json!({"n": n}));
        }
        if n % 5 == 0 {
            store.set_archived(T, t, &id, true, None).expect("archive");
        }
    }
    let everything: Vec<Aggregate> = {
        let query = ListQuery {
            plan: plan(None, None, Scope::ActiveAndArchived, &store),
            scope: Scope::ActiveAndArchived,
            filter: None,
            known_types: vec![],
            take: 10_000,
        };
        store.list(T, &query, &Some).expect("list all").items
    };
    assert_eq!(everything.len(), 60);
    for scope in [Scope::Active, Scope::ActiveAndArchived, Scope::ArchivedOnly] {
        let present: HashSet<(String, String)> = everything
            .iter()
            .filter(|a| scope.contains(a.archived))
            .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone()))
            .collect();
        for sort in SORTS {
            if scope == Scope::ActiveAndArchived || !sort.starts_with("archived") {
                let seen = page_through(&store, sort, scope, &mut seed, true);
                let unique: HashSet<_> = seen.iter().cloned().collect();
                assert_eq!(
                    unique.len(),
                    seen.len(),
                    "{sort:?} {scope:?} repeated an item"
                );
                assert!(
                    present.is_subset(&unique),
                    "{sort:?} {scope:?} skipped an item present throughout"
                );
            }
        }
    }
    // Without writes, paging equals one big sorted page, for every sort.
    for sort in SORTS {
        let spec = (!sort.is_empty()).then(|| SortSpec::parse(sort).expect("sort"));
        let query = ListQuery {
            plan: plan(spec.as_ref(), None, Scope::ActiveAndArchived, &store),
            scope: Scope::ActiveAndArchived,
            filter: None,
            known_types: vec![],
            take: 10_000,
        };
        let whole: Vec<(String, String)> = store
            .list(T, &query, &Some)
            .expect("list")
            .items
            .iter()
            .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone()))
            .collect();
        let paged = page_through(&store, sort, Scope::ActiveAndArchived, &mut seed, false);
        assert_eq!(paged, whole, "{sort:?}");
    }
}

#[test]
fn the_readme_sort_pages_with_the_shorthand_cursor_and_filters_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    for n in 0..12 {
        // Distinct creation milliseconds, so "newest first" is one answer.
        thread::sleep(std::time::Duration::from_millis(2));
        let t = if n % 2 == 0 { "person" } else { "order" };
        append(
            &store,
            T,
            t,
            &format!("p-{n:02}"),
            json!({"last_name": if n % 3 == 0 { "Smith" } else { "Jones" }}),
        );
    }
    let spec = SortSpec::parse("created_at:desc,aggregate_id:asc").expect("sort");
    let filter =
        Filter::parse("person.archived = false AND person.last_name LIKE 'S%'").expect("filter");
    let query = ListQuery {
        plan: plan(Some(&spec), None, Scope::Active, &store),
        scope: Scope::Active,
        filter: Some(filter.clone()),
        known_types: vec!["person".into(), "order".into()],
        take: 10,
    };
    let page = store.list(T, &query, &Some).expect("list");
    let ids: Vec<&str> = page.items.iter().map(|a| a.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["p-06", "p-00"], "newest first, only persons named S*");
    let query = ListQuery {
        filter: None,
        take: 3,
        ..query
    };
    let first = store.list(T, &query, &Some).expect("first page");
    let last = first.items.last().expect("item");
    let shorthand = format!("ts:{}:{}", last.aggregate_type, last.aggregate_id);
    let query = ListQuery {
        plan: plan(Some(&spec), Some(&shorthand), Scope::Active, &store),
        ..query
    };
    let second = store.list(T, &query, &Some).expect("second page");
    let ids: Vec<&str> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|a| a.aggregate_id.as_str())
        .collect();
    assert_eq!(ids, ["p-11", "p-10", "p-09", "p-08", "p-07", "p-06"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// The same property with random stores, sorts, scopes and page sizes.
    #[test]
    fn paging_property(
        seed in 1u64..u64::MAX,
        sort in 0..SORTS.len(),
        scope in 0usize..3,
        count in 1usize..40,
    ) {
        let scope = [Scope::Active, Scope::ActiveAndArchived, Scope::ArchivedOnly][scope];
        let sort = SORTS[sort];
        proptest::prop_assume!(scope == Scope::ActiveAndArchived || !sort.starts_with("archived"));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = relaxed(&dir);
        let mut seed = seed;
        let mut present = HashSet::new();
        for n in 0..count {
            let t = ["alpha", "beta", "zeta"][(next(&mut seed) % 3) as usize];
            let id = format!("x{}-{n}", next(&mut seed) % 5);
            for _ in 0..=(next(&mut seed) % 3) {
                append(&store, T, t, &id, json!({"n": n}));
            }
            let archived = next(&mut seed).is_multiple_of(4);
            if archived {
                store.set_archived(T, t, &id, true, None).expect("archive");
            }
            if scope.contains(archived) {
                present.insert((t.to_owned(), id));
            }
        }
        let seen = page_through(&store, sort, scope, &mut seed, true);
        let unique: HashSet<_> = seen.iter().cloned().collect();
        proptest::prop_assert_eq!(unique.len(), seen.len(), "repeated an item");
        proptest::prop_assert!(present.is_subset(&unique), "skipped an item");
    }
}
