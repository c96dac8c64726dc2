//! The reverse reference index: maintained in the write's commit from the source's current
//! state, exact keys, tenant isolation, persistence, and the archive cascade (nullify and
//! restrict) as one commit.

use std::sync::Arc;

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_core::CoreError;
use eventdbx_store::{
    EventStore, ReferenceLink, ReferenceScan, Referrer, StoreError, WriteRequest,
};
use serde_json::{json, Value};

use super::{open, T};

/// The references of a state: every top-level string of the form `type#id` (a stand-in for
/// the server's schema-driven scan).
pub(crate) fn scan() -> ReferenceScan {
    Arc::new(|aggregate| {
        aggregate
            .state
            .iter()
            .filter_map(|(path, value)| {
                let (t, i) = value.as_str()?.split_once('#')?;
                Some(ReferenceLink {
                    path: path.clone(),
                    target_type: t.to_owned(),
                    target_id: i.to_owned(),
                })
            })
            .collect()
    })
}

fn write(store: &dyn EventStore, tenant: &str, t: &str, id: &str, payload: Value) {
    let mut request = WriteRequest::new(
        WriteKind::Append,
        t,
        id,
        "thing.changed",
        WriteBody::Payload(payload),
    );
    request.references = Some(scan());
    store.write(tenant, request).expect("write");
}

fn referrer(t: &str, id: &str, path: &str) -> Referrer {
    Referrer {
        aggregate_type: t.into(),
        aggregate_id: id.into(),
        path: path.into(),
    }
}

fn referrers(store: &dyn EventStore, tenant: &str, t: &str, id: &str) -> Vec<Referrer> {
    store.referrers(tenant, t, id).expect("referrers")
}

#[test]
fn index_follows_the_current_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(&*store, T, "person", "p-1", json!({"name": "Ada"}));
    write(&*store, T, "person", "p-10", json!({"name": "Bob"}));
    write(
        &*store,
        T,
        "invoice",
        "i-1",
        json!({"customer": "person#p-1"}),
    );
    write(
        &*store,
        T,
        "invoice",
        "i-2",
        json!({"customer": "person#p-10", "payer": "person#p-1"}),
    );
    assert_eq!(
        referrers(&*store, T, "person", "p-1"),
        [
            referrer("invoice", "i-1", "customer"),
            referrer("invoice", "i-2", "payer")
        ]
    );
    // Exact keys: p-1 never sees p-10's referrers.
    assert_eq!(
        referrers(&*store, T, "person", "p-10"),
        [referrer("invoice", "i-2", "customer")]
    );
    // A later event that does not mention the field keeps it.
    write(&*store, T, "invoice", "i-1", json!({"total": 3}));
    assert_eq!(referrers(&*store, T, "person", "p-1").len(), 2);
    // A changed value moves it; null removes it.
    write(
        &*store,
        T,
        "invoice",
        "i-1",
        json!({"customer": "person#p-10"}),
    );
    write(&*store, T, "invoice", "i-2", json!({"payer": null}));
    assert!(referrers(&*store, T, "person", "p-1").is_empty());
    assert_eq!(
        referrers(&*store, T, "person", "p-10"),
        [
            referrer("invoice", "i-1", "customer"),
            referrer("invoice", "i-2", "customer")
        ]
    );
    // A write without a scan leaves the entries alone.
    let plain = WriteRequest::new(
        WriteKind::Append,
        "invoice",
        "i-1",
        "thing.changed",
        WriteBody::Payload(json!({"customer": "person#p-1"})),
    );
    store.write(T, plain).expect("plain write");
    assert_eq!(referrers(&*store, T, "person", "p-10").len(), 2);
    // Unknown targets have no referrers.
    assert!(referrers(&*store, T, "person", "nope").is_empty());
}

#[test]
fn index_is_per_tenant_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        write(
            &*store,
            "a",
            "invoice",
            "i-1",
            json!({"customer": "person#p-1"}),
        );
        write(
            &*store,
            "b",
            "invoice",
            "i-9",
            json!({"customer": "person#p-1"}),
        );
    }
    let store = open(&dir);
    assert_eq!(
        referrers(&*store, "a", "person", "p-1"),
        [referrer("invoice", "i-1", "customer")]
    );
    assert_eq!(
        referrers(&*store, "b", "person", "p-1"),
        [referrer("invoice", "i-9", "customer")]
    );
    assert!(referrers(&*store, "c", "person", "p-1").is_empty());
}

#[test]
fn prepare_rewrites_the_payload_before_sealing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut request = WriteRequest::new(
        WriteKind::Create,
        "invoice",
        "i-1",
        "invoice.created",
        WriteBody::Payload(json!({"customer": "#p-1"})),
    );
    request.prepare = Some(Arc::new(|_, payload: &mut Value| {
        payload["customer"] = json!("person#p-1");
        Ok(())
    }));
    request.references = Some(scan());
    let outcome = store.write(T, request).expect("create");
    assert_eq!(outcome.event.payload, json!({"customer": "person#p-1"}));
    assert_eq!(
        store.verify(T, "invoice", "i-1").expect("verify"),
        outcome.aggregate.merkle_root
    );
    let mut refused = WriteRequest::new(
        WriteKind::Append,
        "invoice",
        "i-1",
        "invoice.changed",
        WriteBody::Payload(json!({"customer": "x"})),
    );
    refused.prepare = Some(Arc::new(|_, _: &mut Value| {
        Err(CoreError::SchemaViolation("no".into()).into())
    }));
    assert!(store.write(T, refused).is_err());
    let aggregate = store
        .get(T, "invoice", "i-1")
        .expect("get")
        .expect("exists");
    assert_eq!(aggregate.version, 1);
}

#[test]
fn archive_is_blocked_by_referrers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(&*store, T, "person", "p-1", json!({"name": "Ada"}));
    write(
        &*store,
        T,
        "invoice",
        "i-1",
        json!({"customer": "person#p-1"}),
    );
    let err = store
        .archive(T, "person", "p-1", None, &|_| false)
        .expect_err("blocked");
    let StoreError::Domain(err) = err else {
        panic!("expected a domain error, got {err:?}");
    };
    assert_eq!(err.code(), "schema_violation");
    assert_eq!(
        err.to_string(),
        "schema violation: aggregate person:p-1 cannot be archived; referenced by \
         default:invoice:i-1 (customer)"
    );
    // set_archived refuses too; nothing changed.
    assert!(store.set_archived(T, "person", "p-1", true, None).is_err());
    assert!(
        !store
            .get(T, "person", "p-1")
            .expect("get")
            .expect("exists")
            .archived
    );
    assert_eq!(
        store
            .get(T, "invoice", "i-1")
            .expect("get")
            .expect("exists")
            .version,
        1
    );
    assert!(matches!(
        store.archive(T, "person", "nope", None, &|_| true),
        Err(StoreError::Domain(CoreError::AggregateNotFound))
    ));
}

#[test]
fn nullify_cascade_commits_with_the_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(
        &*store,
        T,
        "person",
        "p-1",
        json!({"name": "Ada", "self": "person#p-1"}),
    );
    write(
        &*store,
        T,
        "invoice",
        "i-1",
        json!({"customer": "person#p-1", "n": 1}),
    );
    write(
        &*store,
        T,
        "invoice",
        "i-2",
        json!({"customer": "person#p-1", "payer": "person#p-1"}),
    );
    write(
        &*store,
        T,
        "invoice",
        "i-3",
        json!({"customer": "person#p-2"}),
    );
    let archived = store
        .archive(T, "person", "p-1", Some(" gone "), &|_| true)
        .expect("archive");
    assert!(archived.archived);
    assert_eq!(archived.state.get("self"), Some(&Value::Null));
    assert!(referrers(&*store, T, "person", "p-1").is_empty());
    for (id, version) in [("i-1", 2), ("i-2", 2)] {
        let invoice = store.get(T, "invoice", id).expect("get").expect("exists");
        assert_eq!(invoice.version, version);
        assert_eq!(invoice.state.get("customer"), Some(&Value::Null));
        let events = store
            .events(T, "invoice", id, 1, 10, None)
            .expect("events")
            .events;
        let event = &events[0];
        assert_eq!(event.event_type, "_ref_nullify");
        assert_eq!(
            event.metadata.note.as_deref(),
            Some("auto-nullify due to person#p-1")
        );
        assert!(event.metadata.issued_by.is_none());
        store.verify(T, "invoice", id).expect("verifies");
    }
    let i2 = store
        .get(T, "invoice", "i-2")
        .expect("get")
        .expect("exists");
    assert_eq!(i2.state.get("payer"), Some(&Value::Null));
    let i1 = store
        .get(T, "invoice", "i-1")
        .expect("get")
        .expect("exists");
    assert_eq!(i1.state.get("n"), Some(&json!(1)));
    // Unrelated references stay.
    assert_eq!(
        referrers(&*store, T, "person", "p-2"),
        [referrer("invoice", "i-3", "customer")]
    );
    store.verify(T, "person", "p-1").expect("target verifies");
    // The outbox holds the referrers' nullify events but none of the archived target's.
    let outbox = store.outbox(T, 0, 100, &|_, _| true).expect("outbox");
    let nullified: Vec<&str> = outbox
        .events
        .iter()
        .filter(|e| e.event_type == "_ref_nullify")
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(nullified, ["i-1", "i-2"]);
    // Restoring brings back every event of the target, its own nullify event included.
    store
        .set_archived(T, "person", "p-1", false, None)
        .expect("restore");
    let outbox = store.outbox(T, 0, 100, &|_, _| true).expect("outbox");
    assert_eq!(
        outbox
            .events
            .iter()
            .filter(|e| e.aggregate_id == "p-1")
            .count(),
        2
    );
}
