//! The reference control flows (writes, reads, snapshots, archive) over real sockets.

use serde_json::{json, Value};

use crate::support::*;

const CREATED: &str =
    r#"{"status":"created","firstName":"John","address":{"street":"123 Main","zipCode":"94107"}}"#;

fn items(reply: &Value, key: &str) -> Vec<Value> {
    reply[key].as_array().cloned().unwrap_or_default()
}

/// Section B: Noise v1, then a plaintext session.
#[test]
fn reference_control_flow_one() {
    let server = TestServer::start(|config| config.allow_plaintext = true);
    let mut c = server.v1("default");
    assert_eq!(ok(c.replace_schemas(ORDER_SCHEMA)), 1);

    // 29. Empty list.
    let empty = ok(c.list(&ListOpts::default()));
    assert_eq!(empty, json!({"aggregates": [], "next_cursor": null}));

    // 30. Append creates.
    let event = ok(c.apply("order", "order-1", "order_created", CREATED));
    assert_eq!(event["aggregate_type"], "order");
    assert_eq!(event["aggregate_id"], "order-1");
    assert_eq!(event["version"], 1);
    assert_eq!(event["event_type"], "order_created");
    assert_eq!(event["event_type_raw"], "order_created");
    assert_eq!(
        event["metadata"]["issued_by"],
        json!({"group": "ops", "user": "jane"})
    );
    assert_eq!(
        event["payload"],
        serde_json::from_str::<Value>(CREATED).expect("json")
    );

    // 31. List.
    let listed = ok(c.list(&ListOpts {
        take: Some(10),
        ..ListOpts::default()
    }));
    let aggregates = items(&listed, "aggregates");
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0]["aggregate_type"], "order");
    assert_eq!(aggregates[0]["version"], 1);

    // 32. Filter.
    let filtered = ok(c.list(&ListOpts {
        filter: Some(r#"aggregate_id = "order-1""#),
        ..ListOpts::default()
    }));
    assert_eq!(items(&filtered, "aggregates").len(), 1);
    let none = ok(c.list(&ListOpts {
        filter: Some(r#"aggregate_id = "order-2""#),
        ..ListOpts::default()
    }));
    assert_eq!(items(&none, "aggregates").len(), 0);

    // 33. Get.
    let got = ok(c.get("order", "order-1"));
    assert_eq!(got["found"], true);
    assert_eq!(got["aggregate"]["state"]["status"], "created");

    // 34. Events.
    let events = ok(c.events("order", "order-1", Some(25), None, None));
    let list = items(&events, "events");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["event_type"], "order_created");

    // 35. Outbox.
    let outbox = ok(c.outbox(None, Some(25)));
    let list = items(&outbox, "events");
    assert_eq!(list.len(), 1);
    let next = outbox["next_after_event_id"].as_u64().expect("checkpoint");
    assert_eq!(list[0]["metadata"]["event_id"], next.to_string());
    let rest = ok(c.outbox(Some(next), Some(25)));
    assert_eq!(items(&rest, "events").len(), 0);

    // 36. Verify.
    let root = ok(c.verify("order", "order-1"));
    assert_eq!(root, event["merkle_root"]);
    assert!(root
        .as_str()
        .is_some_and(|r| r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit())));

    // 37. Missing aggregate.
    assert_eq!(
        ok(c.get("inventory", "sku-1")),
        json!({"found": false, "aggregate": null})
    );

    // 38. Bad per-request token.
    let token = std::mem::replace(&mut c.token, "invalid-token".into());
    let error = err(c.apply("order", "order-1", "order_status_updated", "{}"));
    assert_eq!(
        error.pair(),
        ("invalid_token", "token not found or inactive")
    );
    c.token = token;

    // 39. Plaintext session.
    let mut plain =
        connect_v1(server.addr, &server.admin_token(), "default", true).expect("plaintext");
    assert!(plain.hello.no_noise);
    assert_eq!(ok(plain.tenant_reload("default"))["reloaded"], true);
    assert_eq!(ok(plain.get("order", "order-1"))["found"], true);
}

/// Section C: patch, select, archive, restore (over v2 here; v1 is section B).
#[test]
fn reference_control_flow_two() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    assert_eq!(ok(c.replace_schemas(ORDER_SCHEMA)), 1);
    ok(c.apply("order", "order-1", "order_created", CREATED));

    // 40. Patch needs an aggregate.
    let patch = r#"[{"op":"replace","path":"/firstName","value":"Jane"},
                    {"op":"add","path":"/age","value":30},
                    {"op":"remove","path":"/address/zipCode"}]"#;
    let error = err(c.patch("order", "order-unknown", "order_status_updated", patch));
    assert_eq!(error.code, "aggregate_not_found");

    // 41. Patch.
    let event = ok(c.patch("order", "order-1", "order_status_updated", patch));
    assert_eq!(event["version"], 2);
    assert_eq!(event["payload"]["firstName"], "Jane");
    assert_eq!(event["payload"]["age"], 30);
    assert_eq!(event["payload"]["address"], json!({"street": "123 Main"}));
    let events = ok(c.events("order", "order-1", None, None, None));
    let list = items(&events, "events");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["payload"], event["payload"]);

    // 42. Typed state after patch.
    let state = ok(c.get("order", "order-1"))["aggregate"]["state"].clone();
    assert_eq!(state["firstName"], "Jane");
    assert_eq!(state["age"], json!(30));
    assert_eq!(state["address"], json!({"street": "123 Main"}));
    assert_eq!(state["status"], "created");

    // 43. Select.
    let selected = ok(c.select(
        "order",
        "order-1",
        &["firstName", "address.street", "address.zipCode"],
    ));
    assert_eq!(selected["found"], true);
    assert_eq!(
        selected["selection"],
        json!({"firstName": "Jane", "address.street": "123 Main", "address.zipCode": null})
    );

    // 44. Archive.
    let archived = ok(c.set_archived("order", "order-1", true, Some("closed via control")));
    assert_eq!(archived["archived"], true);
    assert_eq!(
        items(&ok(c.list(&ListOpts::default())), "aggregates").len(),
        0
    );
    let only = ok(c.list(&ListOpts {
        archived_only: true,
        ..ListOpts::default()
    }));
    let list = items(&only, "aggregates");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["archived"], true);
    let error = err(c.apply("order", "order-1", "order_status_updated", "{}"));
    assert_eq!(error.code, "aggregate_archived");
    assert_eq!(
        error.message,
        "aggregate is archived and cannot accept new events"
    );
    let error = err(c.patch("order", "order-1", "order_status_updated", patch));
    assert_eq!(error.code, "aggregate_archived");
    let error = err(c.create("order", "order-1", "order_created", "{}"));
    assert_eq!(
        error.pair(),
        (
            "aggregate_exists",
            "aggregate order::order-1 already exists"
        )
    );
    let events = ok(c.events("order", "order-1", None, None, None));
    assert_eq!(items(&events, "events").len(), 0);
    let got = ok(c.get("order", "order-1"));
    assert_eq!(got["found"], true);
    assert_eq!(got["aggregate"]["archived"], true);

    // 45. Restore.
    let restored = ok(c.set_archived("order", "order-1", false, None));
    assert!(restored.get("archived").is_none(), "{restored}");
    let list = items(&ok(c.list(&ListOpts::default())), "aggregates");
    assert_eq!(list.len(), 1);
    assert!(list[0].get("archived").is_none());
    let event = ok(c.apply(
        "order",
        "order-1",
        "order_status_updated",
        r#"{"status":"paid"}"#,
    ));
    assert_eq!(event["version"], 3);
}
