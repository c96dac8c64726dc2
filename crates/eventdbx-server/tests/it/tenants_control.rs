//! Tenants, quotas and schemas over the control port (`04-acceptance.md` section D), and
//! cross-tenant isolation.

use serde_json::{json, Value};

use crate::support::*;

fn person_schema(locked: bool) -> String {
    format!(
        r#"{{"person": {{"aggregate": "person", "snapshot_threshold": null, "locked": {locked},
  "field_locks": [], "hidden": false, "hidden_fields": [],
  "column_types": {{"email": {{"type": "text", "required": true, "format": "email"}}}},
  "events": {{"person_registered": {{"fields": ["email", "first_name"]}}}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}}}"#
    )
}

#[test]
fn tenant_admin_flow() {
    let server = TestServer::start(|_| {});
    let manage = server.token(&["tenant.manage"], &[]);
    let mut c = connect_v2(server.addr, &manage, "default", None).expect("session");
    let first = ok(c.tenant_assign("default", "shard-0007"));
    assert_eq!(first, json!({"changed": true, "shard_id": "shard-0007"}));
    let again = ok(c.tenant_assign("default", "shard-0007"));
    assert_eq!(again["changed"], false);
    assert_eq!(ok(c.tenant_unassign("default"))["changed"], true);
    assert_eq!(ok(c.tenant_unassign("default"))["changed"], false);
    assert_eq!(
        ok(c.quota_set("default", 5)),
        json!({"changed": true, "quota_mb": 5, "has_quota": true})
    );
    assert_eq!(ok(c.quota_clear("default"))["changed"], true);
    assert_eq!(ok(c.quota_clear("default"))["changed"], false);
    let empty = ok(c.quota_recalc("default"))["storage_bytes"]
        .as_u64()
        .expect("bytes");

    // Usage grows with what is written.
    let mut writer = server.v2("default");
    ok(writer.create(
        "order",
        "o-1",
        "order_created",
        &format!(r#"{{"blob":"{}"}}"#, "x".repeat(10_000)),
    ));
    let used = ok(c.quota_recalc("default"))["storage_bytes"]
        .as_u64()
        .expect("bytes");
    assert!(used >= empty + 10_000, "{empty} -> {used}");
}

#[test]
fn shard_ids_are_validated() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    assert_eq!(
        ok(c.tenant_assign("fresh", "3")),
        json!({"changed": true, "shard_id": "shard-0003"})
    );
    assert_eq!(
        err(c.tenant_assign("fresh", "shard-0099")).pair(),
        (
            "config",
            "configuration error: shard 'shard-0099' exceeds configured shard-count (16)"
        )
    );
    // A tenant holding data stays where it is.
    let mut acme = server.v2("acme");
    ok(acme.create("order", "o-1", "order_created", "{}"));
    let error = err(c.tenant_assign("acme", "shard-0002"));
    assert_eq!(error.code, "config");
    assert_eq!(
        error.message,
        "configuration error: tenant 'acme' already holds data in shard 'shard-0009'"
    );
    // And its data is still there.
    assert_eq!(ok(acme.get("order", "o-1"))["found"], true);
}

#[test]
fn tenant_admin_needs_manage_and_the_target_tenant() {
    let server = TestServer::start(|_| {});
    let reader = server.token(&["aggregate.read"], &[]);
    let acme = server.token(&["tenant.manage"], &["acme"]);
    let mut c = server.v2("default");
    for token in [reader, acme.clone()] {
        c.token = token;
        assert_eq!(
            err(c.tenant_reload("other")).pair(),
            ("unauthorized", "unauthorized")
        );
        assert_eq!(err(c.quota_set("other", 1)).code, "unauthorized");
    }
    // The admin token may act on another tenant than the session's.
    let mut acme_session = connect_v2(server.addr, &acme, "acme", None).expect("acme");
    assert_eq!(ok(acme_session.tenant_reload("acme"))["reloaded"], true);
}

#[test]
fn quota_blocks_writes_and_snapshots_until_cleared() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.create("order", "keep", "order_created", "{}"));
    ok(c.quota_set("default", 1));
    let blob = format!(r#"{{"blob":"{}"}}"#, "q".repeat(255 * 1024));
    let mut failure = None;
    for n in 0..10 {
        match c.create("order", &format!("o-{n}"), "order_created", &blob) {
            Ok(_) => continue,
            Err(error) => {
                failure = Some((n, error));
                break;
            }
        }
    }
    let (n, error) = failure.expect("a write fails within 10");
    assert!(
        n >= 3,
        "1 MB holds about four 256 KiB writes, failed at {n}"
    );
    assert_eq!(
        error.pair(),
        (
            "tenant_quota",
            "tenant quota exceeded: tenant 'default' reached storage quota (1 MB)"
        )
    );
    assert_eq!(
        err(c.apply("order", "keep", "x", "{}")).code,
        "tenant_quota"
    );
    // 50. Snapshots too; archive still works.
    assert_eq!(
        err(c.create_snapshot("order", "keep", None)).code,
        "tenant_quota"
    );
    assert_eq!(
        ok(c.set_archived("order", "keep", true, None))["archived"],
        true
    );
    // Clearing lifts it at once.
    assert_eq!(ok(c.quota_clear("default"))["changed"], true);
    ok(c.create("order", "after", "order_created", &blob));
    ok(c.create_snapshot("order", "after", Some("fine")));
}

#[test]
fn schema_publish_is_versioned_and_skips_identical_sets() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.replace_schemas(ORDER_SCHEMA));
    let first = ok(c.schema_publish("default", Some("init"), true, false));
    let id = first["version_id"].as_str().expect("id").to_owned();
    let (stamp, suffix) = id.split_at(id.find('Z').expect("Z") + 1);
    assert!(
        stamp.len() == 20
            && stamp.starts_with('v')
            && stamp.as_bytes()[9] == b'T'
            && stamp[1..9].bytes().all(|b| b.is_ascii_digit())
            && stamp[10..19].bytes().all(|b| b.is_ascii_digit())
            && (suffix.is_empty()
                || (suffix.len() == 3
                    && suffix.starts_with('-')
                    && suffix[1..].bytes().all(|b| b.is_ascii_digit()))),
        "{id} matches ^v\\d{{8}}T\\d{{9}}Z(-\\d{{2}})?$"
    );
    assert_eq!(first["activated"], true);
    assert_eq!(first["skipped"], false);
    let second = ok(c.schema_publish("default", Some("init"), true, false));
    assert_eq!(second["skipped"], true);
    assert_eq!(second["version_id"], id.as_str());
    // Forced: a new version.
    let forced = ok(c.schema_publish("default", None, false, true));
    assert_eq!(forced["skipped"], false);
    assert_ne!(forced["version_id"], id.as_str());
}

#[test]
fn replace_schemas_is_validated_and_takes_effect() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    let before = ok(c.list_schemas());
    let bad = ORDER_SCHEMA.replace(
        r#""column_types": {}"#,
        r#""column_types": {"total": "decimal(x)"}"#,
    );
    assert_ne!(bad, ORDER_SCHEMA);
    assert_eq!(err(c.replace_schemas(&bad)).code, "invalid_schema");
    assert_eq!(ok(c.list_schemas()), before);
    assert_eq!(err(c.replace_schemas("{not json")).code, "serialization");

    // Without a schema anything goes; with it, undefined events are refused.
    ok(c.create("order", "o-1", "anything", "{}"));
    assert_eq!(ok(c.replace_schemas(ORDER_SCHEMA)), json!(1));
    let schemas = ok(c.list_schemas());
    assert!(schemas["order"]["events"]["order_created"].is_object());
    assert_eq!(
        err(c.apply("order", "o-1", "anything", "{}")).pair(),
        (
            "schema_violation",
            "schema violation: event anything is not defined for aggregate order"
        )
    );
    ok(c.apply("order", "o-1", "order_created", "{}"));
    // Schema actions are authorised.
    c.token = server.token(&["aggregate.read"], &[]);
    assert_eq!(err(c.replace_schemas("{}")).code, "unauthorized");
    assert_eq!(err(c.list_schemas()).code, "unauthorized");
}

#[test]
fn schema_rules_have_the_spec_messages() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.replace_schemas(&person_schema(false)));
    let cases = [
        (
            "person_registered",
            r#"{"first_name":"Ann"}"#,
            "missing required field email for event person_registered",
        ),
        (
            "person_registered",
            r#"{"email":"ann@example.com","first_name":"Ann","nick":"a"}"#,
            "field nick is not permitted for event person_registered",
        ),
        (
            "person_registered",
            r#"{"email":"x","first_name":"Ann"}"#,
            "field email must be a valid email address",
        ),
        (
            "person_deleted",
            r#"{"email":"ann@example.com"}"#,
            "event person_deleted is not defined for aggregate person",
        ),
    ];
    for (event_type, payload, message) in cases {
        let error = err(c.create("person", "p-1", event_type, payload));
        assert_eq!(
            error.pair(),
            (
                "schema_violation",
                format!("schema violation: {message}").as_str()
            ),
            "{event_type} {payload}"
        );
    }
    let valid = r#"{"email":"ann@example.com","first_name":"Ann"}"#;
    ok(c.create("person", "p-1", "person_registered", valid));
    ok(c.replace_schemas(&person_schema(true)));
    assert_eq!(
        err(c.apply("person", "p-1", "person_registered", valid)).pair(),
        (
            "schema_violation",
            "schema violation: aggregate person is locked for updates"
        )
    );
    assert_eq!(ok(c.get("person", "p-1"))["aggregate"]["version"], 1);
}

#[test]
fn strict_restrict_requires_a_schema() {
    let server = TestServer::start(|config| {
        config.restrict = eventdbx_core::schema::RestrictMode::Strict;
    });
    let mut c = server.v2("default");
    assert_eq!(
        err(c.apply("widget", "w-1", "made", "{}")).pair(),
        (
            "schema_violation",
            "schema violation: aggregate widget requires a schema before events can be \
             appended when restrict=strict"
        )
    );
    ok(c.replace_schemas(ORDER_SCHEMA));
    ok(c.create("order", "o-1", "order_created", "{}"));
}

#[test]
fn tenants_are_isolated() {
    let server = TestServer::start(|_| {});
    let token_a = server.token(&ALL_ACTIONS, &["tenant-a"]);
    let token_b = server.token(&ALL_ACTIONS, &["tenant-b"]);
    // A token for tenant A cannot open tenant B, on either protocol.
    assert_eq!(
        connect_v1(server.addr, &token_a, "tenant-b", false).err(),
        Some("token does not grant access to tenant 'tenant-b'".into())
    );
    assert!(connect_v2(server.addr, &token_a, "tenant-b", None).is_err());

    let mut a = connect_v2(server.addr, &token_a, "tenant-a", None).expect("a");
    let mut b = connect_v1(server.addr, &token_b, "tenant-b", false).expect("b");
    ok(a.replace_schemas(ORDER_SCHEMA));
    ok(a.create("order", "o-1", "order_created", r#"{"secret":1}"#));
    let snapshot = ok(a.create_snapshot("order", "o-1", None));
    let snapshot_id: u64 = snapshot["snapshot_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("snapshot id");

    // Tenant B sees none of it.
    assert_eq!(ok(b.get("order", "o-1"))["found"], false);
    assert_eq!(ok(b.list(&ListOpts::default()))["aggregates"], json!([]));
    assert_eq!(
        ok(b.events("order", "o-1", None, None, None))["events"],
        json!([])
    );
    assert_eq!(ok(b.outbox(None, None))["events"], json!([]));
    assert_eq!(ok(b.list_snapshots(None, None)), json!([]));
    assert_eq!(ok(b.get_snapshot(snapshot_id))["found"], false);
    assert_eq!(ok(b.list_schemas()), json!({}));
    assert_eq!(err(b.verify("order", "o-1")).code, "aggregate_not_found");
    // B can write the same key without colliding.
    ok(b.create("order", "o-1", "order_created", r#"{"other":2}"#));
    let state = &ok(a.get("order", "o-1"))["aggregate"]["state"];
    assert_eq!(state, &json!({"secret": 1}));

    // A per-request token bound to another tenant is unauthorized in this session.
    a.token = token_b.clone();
    for reply in [
        a.get("order", "o-1"),
        a.list(&ListOpts::default()),
        a.apply("order", "o-1", "order_created", "{}"),
        a.outbox(None, None),
    ] {
        assert_eq!(err(reply).pair(), ("unauthorized", "unauthorized"));
    }
    a.token = token_a;
    let events: Vec<Value> = ok(a.events("order", "o-1", None, None, None))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 1);
}
