//! Tenants, quotas and schemas over the control port, and
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
fn schema_history_and_activation_roll_back_to_a_published_set() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.replace_schemas(ORDER_SCHEMA));
    let v1 = ok(c.schema_publish("default", Some("first"), true, false))["version_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A second set (order plus person), published and activated.
    let mut both: Value = serde_json::from_str(ORDER_SCHEMA).expect("order schema");
    let person: Value = serde_json::from_str(&person_schema(false)).expect("person schema");
    both["person"] = person["person"].clone();
    ok(c.replace_schemas(&both.to_string()));
    let v2 = ok(c.schema_publish("default", Some("second"), true, false))["version_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(v1, v2);
    assert!(ok(c.list_schemas())["person"].is_object());

    let history = ok(c.schema_history("default"));
    assert_eq!(history["active_version"], v2.as_str());
    let ids: Vec<&str> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [v1.as_str(), v2.as_str()]);
    assert_eq!(history["versions"][1]["parent"], v1.as_str());

    // Back to the first set: a rollback, and the person schema is gone at once.
    let rolled = ok(c.schema_activate("default", &v1, Some("oops")));
    assert_eq!(
        rolled,
        json!({"version_id": v1, "activated": true, "action": "rollback"})
    );
    let schemas = ok(c.list_schemas());
    assert!(schemas["order"].is_object());
    assert!(schemas.get("person").is_none(), "{schemas}");
    // Again: nothing to do.
    assert_eq!(
        ok(c.schema_activate("default", &v1, None))["activated"],
        false
    );
    // Forward again.
    assert_eq!(
        ok(c.schema_activate("default", &v2, None))["action"],
        "activate"
    );
    assert!(ok(c.list_schemas())["person"].is_object());
    let history = ok(c.schema_history("default"));
    let actions: Vec<(&str, &str)> = history["audit_log"]
        .as_array()
        .expect("audit log")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action"),
                e["version"].as_str().expect("version"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("publish", v1.as_str()),
            ("activate", v1.as_str()),
            ("publish", v2.as_str()),
            ("activate", v2.as_str()),
            ("rollback", v1.as_str()),
            ("activate", v2.as_str()),
        ]
    );
    assert_eq!(history["audit_log"][4]["reason"], "oops");

    // Unknown versions, unauthorised tokens and other tenants are refused; nothing changes.
    assert_eq!(
        err(c.schema_activate("default", "v20000101T000000000Z", None)).pair(),
        (
            "config",
            "configuration error: schema version 'v20000101T000000000Z' is not published for \
             tenant 'default'"
        )
    );
    c.token = server.token(&["aggregate.read"], &[]);
    assert_eq!(
        err(c.schema_activate("default", &v1, None)).code,
        "unauthorized"
    );
    assert_eq!(err(c.schema_history("default")).code, "unauthorized");
    c.token = server.token(&["tenant.manage"], &["acme"]);
    assert_eq!(
        err(c.schema_activate("default", &v1, None)).code,
        "unauthorized"
    );
    assert_eq!(
        ok(server.v2("default").schema_history("default"))["active_version"],
        v2.as_str()
    );
}

#[test]
fn schema_activation_refuses_a_tampered_version() {
    let server = TestServer::start(|_| {});
    let data_dir = server.data_dir();
    let mut c = server.v2("default");
    ok(c.replace_schemas(ORDER_SCHEMA));
    let v1 = ok(c.schema_publish("default", None, true, false))["version_id"]
        .as_str()
        .expect("id")
        .to_owned();
    ok(c.replace_schemas("{}"));
    let file = data_dir
        .join("tenants/default/schemas/versions")
        .join(format!("{v1}.json"));
    let text = std::fs::read_to_string(&file).expect("version file");
    std::fs::write(&file, text.replace("order_created", "order_kreated")).expect("tamper");
    let refused = err(c.schema_activate("default", &v1, None));
    assert_eq!(refused.code, "config");
    assert!(
        refused.message.contains("does not match its checksum"),
        "{}",
        refused.message
    );
    assert_eq!(ok(c.list_schemas()), json!({}));
}

#[test]
fn tenant_list_shows_the_tenants_a_token_may_manage() {
    let server = TestServer::start(|_| {});
    let mut default = server.v2("default");
    ok(default.create("order", "o-1", "order_created", "{}"));
    let mut acme = server.v2("acme");
    ok(acme.create("order", "o-1", "order_created", "{}"));
    ok(acme.create("order", "o-2", "order_created", "{}"));
    ok(default.tenant_assign("quiet", "5"));
    ok(default.quota_set("quiet", 7));

    let list = ok(default.tenant_list());
    let by_id = |id: &str| -> Value {
        list.as_array()
            .expect("array")
            .iter()
            .find(|t| t["tenant_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {list}"))
    };
    assert_eq!(by_id("acme")["events"], 2);
    assert_eq!(by_id("default")["events"], 1);
    assert!(by_id("acme")["storage_bytes"].as_u64().expect("bytes") > 0);
    let quiet = by_id("quiet");
    assert_eq!(
        (
            &quiet["shard_id"],
            &quiet["assigned"],
            &quiet["quota_mb"],
            &quiet["events"]
        ),
        (&json!("shard-0005"), &json!(true), &json!(7), &json!(0))
    );
    assert_eq!(by_id("acme")["assigned"], false);
    let ids: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["tenant_id"].as_str().expect("id"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);

    // A token limited to acme sees acme only; one without tenant.manage sees nothing.
    let acme_admin = server.token(&["tenant.manage"], &["acme"]);
    let mut scoped = connect_v2(server.addr, &acme_admin, "acme", None).expect("acme session");
    let scoped_list = ok(scoped.tenant_list());
    assert_eq!(scoped_list.as_array().map(Vec::len), Some(1));
    assert_eq!(scoped_list[0]["tenant_id"], "acme");
    default.token = server.token(&["aggregate.read"], &[]);
    assert_eq!(err(default.tenant_list()).code, "unauthorized");
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
