//! `dbx schema`: `.dbx` files validated offline and applied to a live server.

use serde_json::{json, Value};

use crate::workspace::{dbx_in, text, Workspace};

#[test]
fn schema_dbx_is_validated_offline_and_applied_live() {
    let ws = Workspace::start();
    let schema = "# one aggregate\naggregate order {\n  field status { type = \"text\" rules = {\"required\": true} }\n  event order_created { fields = [\"status\"] }\n}\n";
    std::fs::write(ws.dir.path().join("schema.dbx"), schema).expect("schema.dbx");

    // Scenario 55: validate, with the file named and found upwards.
    let valid = ws.json(&["schema", "validate", "schema.dbx"]);
    assert_eq!(
        valid,
        json!({"valid": true, "aggregate_count": 1, "aggregates": ["order"]})
    );
    let nested = ws.dir.path().join("sub/dir");
    std::fs::create_dir_all(&nested).expect("nested dir");
    let output = dbx_in(&nested)
        .args(["schema", "validate", "--json"])
        .output()
        .expect("dbx");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let found: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(found["aggregates"], json!(["order"]));

    std::fs::write(
        ws.dir.path().join("bad.dbx"),
        "aggregate order {\n  field status { }\n}\n",
    )
    .expect("bad.dbx");
    let output = ws.dbx(&["schema", "validate", "bad.dbx", "--json"]);
    assert!(!output.status.success());
    let invalid: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(invalid["valid"], false, "{invalid}");
    assert!(
        invalid["error"]
            .as_str()
            .is_some_and(|e| e.contains("must define type")),
        "{invalid}"
    );

    // Before: no schema, so anything goes.
    ws.json(&[
        "aggregate",
        "apply",
        "order",
        "o-0",
        "anything",
        "--payload",
        "{}",
    ]);

    // Apply schema.dbx (found upwards) to the running server; it takes effect at once.
    let applied = ws.json(&["schema", "apply"]);
    assert_eq!(applied, json!({"applied": 1, "aggregates": ["order"]}));
    let err = ws.fails(&[
        "aggregate",
        "apply",
        "order",
        "o-1",
        "anything",
        "--payload",
        "{}",
    ]);
    assert!(err.contains("schema_violation"), "{err}");
    assert!(
        err.contains("event anything is not defined for aggregate order"),
        "{err}"
    );
    let err = ws.fails(&[
        "aggregate",
        "create",
        "order",
        "o-1",
        "--event",
        "order_created",
    ]);
    assert!(
        err.contains("missing required field status for event order_created"),
        "{err}"
    );
    ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-1",
        "--event",
        "order_created",
        "--field",
        "status=open",
    ]);

    let shown = ws.json(&["schema", "show"]);
    assert!(
        shown["order"]["events"]["order_created"].is_object(),
        "{shown}"
    );
    let one = ws.json(&["schema", "show", "order"]);
    assert_eq!(one["aggregate"], "order", "{one}");
    let err = ws.fails(&["schema", "show", "nothing"]);
    assert!(err.contains("no schema for aggregate nothing"), "{err}");

    // A JSON schema map replaces it; an invalid one is refused and changes nothing.
    let mut map = shown.clone();
    map["order"]["events"]["order_shipped"] = json!({"fields": []});
    let json_path = ws.dir.path().join("schemas.json");
    std::fs::write(&json_path, map.to_string()).expect("schemas.json");
    let applied = ws.json(&["schema", "apply", "--file", "schemas.json"]);
    assert_eq!(applied["applied"], 1);
    let shown = ws.json(&["schema", "show", "order"]);
    assert!(shown["events"]["order_shipped"].is_object(), "{shown}");
    let err = ws.fails(&["schema", "apply", "--file", "bad.dbx"]);
    assert!(err.contains("must define type"), "{err}");

    let published = ws.json(&["schema", "publish", "--reason", "test", "--activate"]);
    assert_eq!(published["activated"], true, "{published}");
    assert_eq!(published["skipped"], false, "{published}");
    let again = ws.json(&["schema", "publish"]);
    assert_eq!(again["skipped"], true, "{again}");

    // A second version without order_shipped, then history and a rollback to the first.
    let first = published["version_id"].as_str().expect("id").to_owned();
    map["order"]["events"]
        .as_object_mut()
        .expect("events")
        .remove("order_shipped");
    std::fs::write(&json_path, map.to_string()).expect("schemas.json");
    ws.json(&["schema", "apply", "--file", "schemas.json"]);
    let second = ws.json(&[
        "schema",
        "publish",
        "--activate",
        "--reason",
        "drop shipped",
    ]);
    let second = second["version_id"].as_str().expect("id").to_owned();
    let history = ws.json(&["schema", "history"]);
    assert_eq!(history["active_version"], second.as_str(), "{history}");
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(2));
    let output = ws.dbx(&["schema", "history"]);
    let table = text(&output.stdout);
    assert!(
        table.contains(&format!("* {second}")) && table.contains(&format!("  {first}")),
        "{table}"
    );
    assert!(table.contains("reason: drop shipped"), "{table}");
    let rolled = ws.json(&["schema", "activate", &first, "--reason", "back"]);
    assert_eq!(
        rolled,
        json!({"tenant_id": "default", "version_id": first, "activated": true, "action": "rollback"})
    );
    let shown = ws.json(&["schema", "show", "order"]);
    assert!(shown["events"]["order_shipped"].is_object(), "{shown}");
    let output = ws.dbx(&["schema", "activate", &first]);
    assert_eq!(
        text(&output.stdout),
        format!("version {first} is already active; nothing changed\n")
    );
    let err = ws.fails(&["schema", "activate", "v19990101T000000000Z"]);
    assert!(err.contains("is not published"), "{err}");
}
