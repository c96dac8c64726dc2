//! The redb engine's on-disk layout: tampering with the database file itself is detected by
//! `verify` (events rewritten with redb directly, as an attacker with file access would), also in
//! long histories verified on two threads, and so is a damaged aggregate record (its state,
//! extensions, timestamps or Merkle frontier no longer what its events fold into).
//! Engine-independent behaviour is in `conformance`.

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EventStore, RedbStore, WriteRequest};
use redb::ReadableTable as _;
use serde_json::{json, Value};

use crate::conformance::{append, domain, T};

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

/// Flips one bit of the byte at the first occurrence of `needle` (plus `offset`) in the stored
/// aggregate record of `order:o-1`, as a failing disk or an attacker with file access would.
fn flip_in_aggregate_record(path: &std::path::Path, needle: &str, offset: usize) {
    let aggregates: redb::TableDefinition<(&str, &str, &str), &[u8]> =
        redb::TableDefinition::new("aggregates");
    let db = redb::Database::create(path).expect("open file");
    let txn = db.begin_write().expect("txn");
    {
        let mut table = txn.open_table(aggregates).expect("aggregates table");
        let key = (T, "order", "o-1");
        let mut record = table
            .get(key)
            .expect("get")
            .expect("record exists")
            .value()
            .to_vec();
        let at = record
            .windows(needle.len())
            .position(|window| window == needle.as_bytes())
            .expect("needle in the record")
            + offset;
        record[at] ^= 0x01;
        table.insert(key, record.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn verify_detects_a_flipped_byte_in_the_stored_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    {
        let store = RedbStore::open(&path, Durability::Fsync).expect("open");
        for n in 0..5 {
            append(
                &store,
                T,
                "order",
                "o-1",
                json!({"amount": n, "item": "pen"}),
            );
        }
        store.verify(T, "order", "o-1").expect("intact");
    }
    // `"amount":4` becomes `"amount":5`: a value no event ever wrote.
    flip_in_aggregate_record(&path, "\"amount\":4", "\"amount\":".len());
    {
        let store = RedbStore::open(&path, Durability::Fsync).expect("reopen");
        let served = store.get(T, "order", "o-1").expect("get").expect("exists");
        assert_eq!(
            served.state["amount"],
            json!(5),
            "the flip reached the record"
        );
    }
    let err = verify_error(&path);
    assert!(err.contains("state") && err.contains("amount"), "{err}");
}

/// Each part of the record that verify rebuilds from the events names itself when damaged.
#[test]
fn verify_names_the_damaged_part_of_an_aggregate_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine.redb");
    {
        let store = RedbStore::open(&pristine, Durability::Fsync).expect("open");
        for n in 0..5 {
            let mut request = crate::conformance::request(
                WriteKind::Append,
                "order",
                "o-1",
                json!({"amount": n}),
            );
            let mut metadata = serde_json::Map::new();
            metadata.insert("@source".into(), json!("till-7"));
            request.extensions = Some(metadata);
            store.write(T, request).expect("append");
        }
        store.verify(T, "order", "o-1").expect("intact");
    }
    let cases = [
        // "till-7" becomes "till-6".
        ("extensions", "\"till-7", "\"till-".len(), "extensions"),
        // The year of created_at moves from 2xxx to 3xxx.
        (
            "created",
            "\"created_at\":\"",
            "\"created_at\":\"".len(),
            "created_at",
        ),
        // A digit of the largest subtree's digest.
        (
            "frontier",
            "\"frontier\":[[4,\"",
            "\"frontier\":[[4,\"".len(),
            "frontier",
        ),
    ];
    for (name, needle, offset, named) in cases {
        let path = dir.path().join(format!("{name}.redb"));
        std::fs::copy(&pristine, &path).expect("copy");
        flip_in_aggregate_record(&path, needle, offset);
        let err = verify_error(&path);
        assert!(err.contains(named), "{name}: {err}");
    }
}

/// Every kind of event and record change the engine makes folds back into the stored record:
/// creates, appends with metadata, patches, snapshots, reference nullifications, archive and
/// restore.
#[test]
fn verify_rebuilds_the_state_of_an_untouched_aggregate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path().join("data.redb"), Durability::Fsync).expect("open");
    let write = |kind: WriteKind, t: &str, id: &str, body: WriteBody| {
        let mut request = WriteRequest::new(kind, t, id, "thing.changed", body);
        request.references = Some(crate::conformance::references::scan());
        request.snapshot_threshold = Some(2);
        let mut metadata = serde_json::Map::new();
        metadata.insert("@createdBy".into(), json!(format!("{kind:?}")));
        request.extensions = Some(metadata);
        store.write(T, request).expect("write");
    };
    let verified = |archived: bool| {
        let root = store.verify(T, "order", "o-1").expect("verifies");
        let aggregate = store.get(T, "order", "o-1").expect("get").expect("exists");
        assert_eq!(
            (root, aggregate.archived),
            (aggregate.merkle_root, archived)
        );
    };
    write(
        WriteKind::Create,
        "person",
        "p-1",
        WriteBody::Payload(json!({"name": "Ada"})),
    );
    write(
        WriteKind::Create,
        "order",
        "o-1",
        WriteBody::Payload(json!({"customer": "person#p-1", "lines": {"a": 1}, "n": 0})),
    );
    verified(false);
    for n in 1..=3 {
        write(
            WriteKind::Append,
            "order",
            "o-1",
            WriteBody::Payload(json!({"n": n, "total": n * 10})),
        );
    }
    write(
        WriteKind::Patch,
        "order",
        "o-1",
        WriteBody::Patch(
            r#"[{"op":"replace","path":"/lines/a","value":2},{"op":"add","path":"/lines/b","value":[1,2]}]"#
                .into(),
        ),
    );
    store
        .create_snapshot(T, "order", "o-1", Some("by hand"))
        .expect("snapshot");
    verified(false);
    store
        .archive(T, "person", "p-1", None, &|_| true)
        .expect("archive the referenced person");
    let events = store
        .events(T, "order", "o-1", 5, 10, None)
        .expect("events")
        .events;
    assert_eq!(events[0].event_type, "_ref_nullify");
    verified(false);
    store
        .set_archived(T, "order", "o-1", true, Some("closed"))
        .expect("archive");
    verified(true);
    store
        .set_archived(T, "order", "o-1", false, None)
        .expect("restore");
    verified(false);
    write(
        WriteKind::Append,
        "order",
        "o-1",
        WriteBody::Payload(json!({"n": 4})),
    );
    verified(false);
}

// ---- Keyset paging ----
