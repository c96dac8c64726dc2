//! References (`docs/server.md`, "References") over real TCP: canonical values, strong and weak
//! integrity, references that never leave the tenant, `listReferrers`, resolution on get and list,
//! and the archive cascade (restrict and nullify).

use eventdbx_proto::message;
use eventdbx_proto::schema::control_capnp::control_response::payload::Which;
use serde_json::{json, Value};

use crate::support::*;

/// `person` (weak self-references through `manager`), `invoice` (a strong `customer` reference
/// to `person` with the given cascade, weak `memo` and `other`), and a hidden `secret` type.
fn schemas(cascade: &str) -> String {
    let schema = |name: &str, columns: Value, hidden: bool| {
        json!({"aggregate": name, "snapshot_threshold": null, "locked": false,
               "field_locks": [], "hidden": hidden, "hidden_fields": [],
               "column_types": columns,
               "events": {format!("{name}_created"): {"fields": []},
                          format!("{name}_updated"): {"fields": []}},
               "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"})
    };
    let weak = json!({"type": "text", "format": "reference", "reference": {"integrity": "weak"}});
    json!({
        "person": schema("person", json!({"name": "text", "manager": {"type": "text",
            "format": "reference",
            "reference": {"integrity": "weak", "aggregate_type": "person"}}}), false),
        "invoice": schema("invoice", json!({"total": "integer", "memo": weak, "other": weak,
            "customer": {"type": "text", "format": "reference",
                         "reference": {"aggregate_type": "person", "cascade": cascade}}}), false),
        "secret": schema("secret", json!({}), true),
    })
    .to_string()
}

fn setup(cascade: &str) -> (TestServer, Client) {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    assert_eq!(ok(c.replace_schemas(&schemas(cascade))), json!(3));
    ok(c.create("person", "p-1", "person_created", r#"{"name": "Ada"}"#));
    (server, c)
}

fn violation(reply: Reply) -> String {
    let error = err(reply);
    assert_eq!(error.code, "schema_violation", "{}", error.message);
    error
        .message
        .strip_prefix("schema violation: ")
        .unwrap_or(&error.message)
        .to_owned()
}

fn referrers(c: &mut Client, t: &str, i: &str) -> Reply {
    let token = c.token.clone();
    c.request(|p| {
        let mut r = p.init_list_referrers();
        r.set_token(token.as_str());
        r.set_aggregate_type(t);
        r.set_aggregate_id(i);
    })
}

/// `getAggregate` with `resolve`; the parsed `resolvedJson`.
fn get_resolved(c: &mut Client, t: &str, i: &str, depth: Option<u32>) -> Value {
    let token = c.token.clone();
    let bytes = c.call(|p| {
        let mut r = p.init_get_aggregate();
        r.set_token(token.as_str());
        r.set_aggregate_type(t);
        r.set_aggregate_id(i);
        r.set_resolve(true);
        if let Some(depth) = depth {
            r.set_resolve_depth(depth);
            r.set_has_resolve_depth(true);
        }
    });
    let decoded = message::decode_response(&bytes).expect("decode");
    let response = decoded.get().expect("root");
    match response.get_payload().which().expect("member") {
        Which::GetAggregate(r) => {
            let r = r.expect("get");
            assert!(r.get_found() && r.get_has_resolved_json());
            let text = r
                .get_resolved_json()
                .expect("text")
                .to_str()
                .expect("utf-8");
            serde_json::from_str(text).expect("resolved JSON")
        }
        _ => panic!("unexpected response"),
    }
}

/// `listAggregates` with `resolve` and a filter; the parsed `resolvedJson`.
fn list_resolved(c: &mut Client, filter: &str) -> Value {
    let token = c.token.clone();
    let bytes = c.call(|p| {
        let mut r = p.init_list_aggregates();
        r.set_token(token.as_str());
        r.set_filter(filter);
        r.set_has_filter(true);
        r.set_resolve(true);
    });
    let decoded = message::decode_response(&bytes).expect("decode");
    let response = decoded.get().expect("root");
    match response.get_payload().which().expect("member") {
        Which::ListAggregates(r) => {
            let r = r.expect("list");
            assert!(r.get_has_resolved_json());
            let text = r
                .get_resolved_json()
                .expect("text")
                .to_str()
                .expect("utf-8");
            serde_json::from_str(text).expect("resolved JSON")
        }
        _ => panic!("unexpected response"),
    }
}

fn customer(value: &str) -> String {
    json!({ "customer": value }).to_string()
}

#[test]
fn values_are_canonical_and_strong_references_checked() {
    let (server, mut c) = setup("restrict");
    assert_eq!(
        violation(c.create("invoice", "i-0", "invoice_created", &customer("person#p-2"))),
        "reference customer points to missing aggregate person#p-2"
    );
    let event = ok(c.apply("invoice", "i-1", "invoice_created", &customer("person#p-1")));
    assert_eq!(event["payload"]["customer"], "person#p-1");
    // The writer's own tenant as a legacy first segment is accepted and dropped.
    let event = ok(c.apply(
        "invoice",
        "i-2",
        "invoice_created",
        &customer("default#person#p-1"),
    ));
    assert_eq!(event["payload"]["customer"], "person#p-1");
    assert_eq!(
        ok(c.get("invoice", "i-2"))["aggregate"]["state"]["customer"],
        "person#p-1"
    );
    // `#id` is the writer's own type, which the rule refuses here.
    assert_eq!(
        violation(c.apply("invoice", "i-3", "invoice_created", &customer("#p-1"))),
        "reference customer must target aggregate type person"
    );
    for (value, message) in [
        ("person", "reference must be aggregate#id or #id"),
        ("person#", "reference segments cannot be empty"),
        ("a#b#c#d", "reference must be aggregate#id or #id"),
        ("", "reference value cannot be empty"),
    ] {
        assert_eq!(
            violation(c.apply("invoice", "i-3", "invoice_created", &customer(value))),
            message,
            "{value}"
        );
    }
    // References never leave the tenant.
    assert_eq!(
        violation(c.apply(
            "invoice",
            "i-3",
            "invoice_created",
            &customer("other#person#p-1")
        )),
        "reference customer must point into the same tenant"
    );
    // Weak references need only be well formed; `#id` becomes the writer's type.
    let event = ok(c.apply(
        "invoice",
        "i-4",
        "invoice_created",
        r##"{"memo": "ghost#g-1", "other": "#i-1"}"##,
    ));
    assert_eq!(event["payload"]["memo"], "ghost#g-1");
    assert_eq!(event["payload"]["other"], "invoice#i-1");
    // Schema rules still come first, before the reference checks.
    assert_eq!(
        violation(c.apply(
            "invoice",
            "i-3",
            "invoice_created",
            r#"{"customer": "person#p-9", "total": "x"}"#
        )),
        "field total must be an integer"
    );
    // A strong target the writer may not read.
    c.token = server.token_for(&ALL_ACTIONS, &["aggregate:invoice:*"], &[]);
    assert_eq!(
        violation(c.apply("invoice", "i-5", "invoice_created", &customer("person#p-1"))),
        "reference customer points to an aggregate the caller cannot access (person#p-1)"
    );
    // Patches are normalised too.
    c.token = server.admin_token();
    let event = ok(c.patch(
        "invoice",
        "i-4",
        "invoice_updated",
        r##"[{"op": "replace", "path": "/other", "value": "#i-2"}]"##,
    ));
    assert_eq!(event["payload"]["other"], "invoice#i-2");
    ok(c.verify("invoice", "i-4"));
}

#[test]
fn referrers_follow_current_state_and_restrict_archive() {
    let (server, mut c) = setup("restrict");
    ok(c.create("person", "p-10", "person_created", "{}"));
    ok(c.apply(
        "invoice",
        "inv-1",
        "invoice_created",
        &customer("person#p-1"),
    ));
    ok(c.apply(
        "invoice",
        "inv-2",
        "invoice_created",
        &customer("person#p-10"),
    ));
    // A later event that does not mention the field keeps the reference.
    ok(c.apply("invoice", "inv-1", "invoice_updated", r#"{"total": 5}"#));
    assert_eq!(
        ok(referrers(&mut c, "person", "p-1")),
        json!([{"aggregate_type": "invoice", "aggregate_id": "inv-1", "path": "customer"}])
    );
    assert_eq!(
        ok(referrers(&mut c, "person", "p-10")),
        json!([{"aggregate_type": "invoice", "aggregate_id": "inv-2", "path": "customer"}])
    );
    assert_eq!(
        err(referrers(&mut c, "person", "nope")).code,
        "aggregate_not_found"
    );
    ok(c.create("secret", "s-1", "secret_created", "{}"));
    assert_eq!(
        err(referrers(&mut c, "secret", "s-1")).code,
        "aggregate_not_found"
    );
    assert_eq!(
        err(referrers(&mut c, "person", "bad id!")).code,
        "invalid_schema"
    );
    let admin = c.token.clone();
    // Referrers the token may not read are left out; the target itself needs aggregate.read.
    c.token = server.token_for(&["aggregate.read"], &["aggregate:person:*"], &[]);
    assert_eq!(ok(referrers(&mut c, "person", "p-1")), json!([]));
    c.token = server.token_for(&["aggregate.read"], &["aggregate:invoice:*"], &[]);
    assert_eq!(err(referrers(&mut c, "person", "p-1")).code, "unauthorized");
    c.token = admin;
    // Restrict (and none) block the archive, naming the referrer.
    assert_eq!(
        violation(c.set_archived("person", "p-1", true, None)),
        "aggregate person:p-1 cannot be archived; referenced by default:invoice:inv-1 (customer)"
    );
    // `archived` appears only when true.
    assert!(ok(c.get("person", "p-1"))["aggregate"]
        .get("archived")
        .is_none());
    // Moving the reference away frees the target.
    ok(c.apply(
        "invoice",
        "inv-1",
        "invoice_updated",
        &customer("person#p-10"),
    ));
    assert_eq!(ok(referrers(&mut c, "person", "p-1")), json!([]));
    let archived = ok(c.set_archived("person", "p-1", true, None));
    assert_eq!(archived["archived"], true);
    // Archived targets stay valid strong targets and keep their referrers listed.
    ok(c.apply(
        "invoice",
        "inv-3",
        "invoice_created",
        &customer("person#p-1"),
    ));
    assert_eq!(
        ok(referrers(&mut c, "person", "p-1"))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn nullify_cascade_clears_referrers_with_the_archive() {
    let (_server, mut c) = setup("nullify");
    ok(c.apply(
        "invoice",
        "inv-1",
        "invoice_created",
        &customer("person#p-1"),
    ));
    ok(c.apply(
        "invoice",
        "inv-2",
        "invoice_created",
        r#"{"customer": "person#p-1", "total": 7}"#,
    ));
    let archived = ok(c.set_archived("person", "p-1", true, Some("left")));
    assert_eq!(archived["archived"], true);
    for id in ["inv-1", "inv-2"] {
        let invoice = ok(c.get("invoice", id))["aggregate"].clone();
        assert_eq!(invoice["state"]["customer"], Value::Null);
        assert_eq!(invoice["version"], 2);
        let events = ok(c.events("invoice", id, None, None, None))["events"].clone();
        let last = &events[1];
        assert_eq!(last["event_type"], "_ref_nullify");
        assert_eq!(last["metadata"]["note"], "auto-nullify due to person#p-1");
        assert!(last["metadata"]["issued_by"].is_null());
        ok(c.verify("invoice", id));
    }
    assert_eq!(
        ok(c.get("invoice", "inv-2"))["aggregate"]["state"]["total"],
        7
    );
    assert_eq!(ok(referrers(&mut c, "person", "p-1")), json!([]));
    // The archive can be repeated; restore brings the target back.
    ok(c.set_archived("person", "p-1", true, None));
    let restored = ok(c.set_archived("person", "p-1", false, None));
    assert!(restored.get("archived").is_none());
}

#[test]
fn resolve_reports_every_status() {
    let (server, mut c) = setup("none");
    ok(c.create(
        "person",
        "p-2",
        "person_created",
        r##"{"name": "Bob", "manager": "#p-1"}"##,
    ));
    ok(c.apply(
        "person",
        "p-1",
        "person_updated",
        r##"{"manager": "#p-2"}"##,
    ));
    ok(c.create("secret", "s-1", "secret_created", "{}"));
    ok(c.create(
        "invoice",
        "inv-1",
        "invoice_created",
        r#"{"customer": "person#p-1", "memo": "secret#s-1", "other": "person#ghost"}"#,
    ));
    // Missing and hidden targets are both `not_found`.
    let tree = get_resolved(&mut c, "invoice", "inv-1", None);
    let references = tree["references"].as_array().expect("references").clone();
    let status = |refs: &[Value], path: &str| {
        refs.iter()
            .find(|r| r["path"] == path)
            .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(tree["aggregate"]["aggregate_id"], "inv-1");
    assert_eq!(status(&references, "customer"), "ok");
    assert_eq!(status(&references, "memo"), "not_found", "hidden target");
    assert_eq!(status(&references, "other"), "not_found");
    let customer = references
        .iter()
        .find(|r| r["path"] == "customer")
        .expect("customer")
        .clone();
    assert_eq!(
        customer["reference"],
        json!({"aggregate_type": "person", "aggregate_id": "p-1"})
    );
    // Depth 2 (the default): inv-1 → p-1 → p-2, whose manager p-1 is a cycle.
    let p1 = &customer["resolved"];
    assert_eq!(p1["aggregate"]["aggregate_id"], "p-1");
    let p2 = &p1["references"][0];
    assert_eq!(p2["status"], "ok");
    assert_eq!(p2["resolved"]["references"][0]["status"], "cycle");
    assert!(p2["resolved"]["references"][0].get("resolved").is_none());
    // Depth 1: p-1's reference is past the last level.
    let shallow = get_resolved(&mut c, "invoice", "inv-1", Some(1));
    let p1 = &shallow["references"]
        .as_array()
        .expect("references")
        .iter()
        .find(|r| r["path"] == "customer")
        .expect("customer")["resolved"];
    assert_eq!(p1["references"][0]["status"], "depth_exceeded");
    // Depth 0: nothing is looked up.
    let flat = get_resolved(&mut c, "invoice", "inv-1", Some(0));
    let statuses: Vec<&Value> = flat["references"]
        .as_array()
        .expect("references")
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&json!("depth_exceeded"); 3]);
    // A target the token may not read is forbidden.
    c.token = server.token_for(
        &["aggregate.read"],
        &["aggregate:invoice:*", "aggregate:person:p-1"],
        &[],
    );
    let limited = get_resolved(&mut c, "invoice", "inv-1", None);
    let p1 = &limited["references"]
        .as_array()
        .expect("references")
        .iter()
        .find(|r| r["path"] == "customer")
        .expect("customer")["resolved"];
    assert_eq!(p1["references"][0]["status"], "forbidden");
    assert!(p1["references"][0].get("resolved").is_none());
    // list resolves one tree per item; an aggregate without references has no `references`.
    c.token = server.admin_token();
    let listed = list_resolved(&mut c, "aggregate_type = \"invoice\"");
    assert_eq!(
        listed,
        json!([get_resolved(&mut c, "invoice", "inv-1", None)])
    );
    let plain = list_resolved(&mut c, "aggregate_type = \"secret\"");
    assert_eq!(plain, json!([]));
    ok(c.create("person", "p-3", "person_created", "{}"));
    let lone = get_resolved(&mut c, "person", "p-3", None);
    assert!(lone.get("references").is_none());
}
