//! Aggregates, events and snapshots through `dbx`, and the CLI data round trip.

use serde_json::json;

use crate::workspace::{text, Workspace};

#[test]
fn aggregates_events_and_snapshots_through_the_cli() {
    let ws = Workspace::start();

    let created = ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-1",
        "--event",
        "order_created",
        "--field",
        "status=open",
        "--field",
        "total=10",
        "--note",
        "first",
    ]);
    assert_eq!(created["aggregate_type"], "order", "{created}");
    assert_eq!(created["version"], 1, "{created}");
    assert_eq!(created["state"]["status"], "open", "{created}");
    assert_eq!(
        created["state"]["total"], "10",
        "--field values are strings"
    );

    let err = ws.fails(&[
        "aggregate",
        "create",
        "order",
        "o-1",
        "--event",
        "order_created",
    ]);
    assert!(err.contains("aggregate_exists"), "{err}");

    let applied = ws.json(&[
        "aggregate",
        "apply",
        "order",
        "o-1",
        "order_paid",
        "--payload",
        r#"{"status":"paid","amount":10}"#,
        "--metadata",
        r#"{"@actor":"jane"}"#,
    ]);
    assert_eq!(applied["version"], 2, "{applied}");
    let err = ws.fails(&[
        "aggregate",
        "apply",
        "order",
        "o-1",
        "order_paid",
        "--payload",
        "{}",
        "--expected-version",
        "1",
    ]);
    assert!(err.contains("version_conflict"), "{err}");

    let patched = ws.json(&[
        "aggregate",
        "patch",
        "order",
        "o-1",
        "order_tagged",
        "--patch",
        r#"[{"op":"add","path":"/tag","value":"vip"}]"#,
    ]);
    assert_eq!(patched["version"], 3, "{patched}");

    let got = ws.json(&["aggregate", "get", "order", "o-1"]);
    assert_eq!(got["version"], 3, "{got}");
    assert_eq!(got["state"]["status"], "paid");
    assert_eq!(got["state"]["tag"], "vip");
    let err = ws.fails(&["aggregate", "get", "order", "missing"]);
    assert!(err.contains("not found"), "{err}");

    let selected = ws.json(&["aggregate", "select", "order", "o-1", "status", "tag"]);
    assert_eq!(selected["status"], "paid", "{selected}");
    assert_eq!(selected["tag"], "vip", "{selected}");

    ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-2",
        "--event",
        "order_created",
        "--payload",
        r#"{"status":"open"}"#,
    ]);
    ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-3",
        "--event",
        "order_created",
        "--payload",
        r#"{"status":"open"}"#,
    ]);
    let page = ws.json(&["aggregate", "list", "--take", "2"]);
    assert_eq!(
        page["aggregates"].as_array().map(Vec::len),
        Some(2),
        "{page}"
    );
    let cursor = page["next_cursor"].as_str().expect("a next cursor");
    let rest = ws.json(&["aggregate", "list", "--take", "2", "--cursor", cursor]);
    assert_eq!(
        rest["aggregates"].as_array().map(Vec::len),
        Some(1),
        "{rest}"
    );
    let all = ws.json(&["aggregate", "list", "--take", "1", "--all"]);
    let ids: Vec<&str> = all["aggregates"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["aggregate_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{all}");
    assert!(all["next_cursor"].is_null());
    let open = ws.json(&["aggregate", "list", "--filter", r#"status = "open""#]);
    assert_eq!(
        open["aggregates"].as_array().map(Vec::len),
        Some(2),
        "{open}"
    );
    let err = ws.fails(&["aggregate", "list", "--filter", "status ="]);
    assert!(
        err.contains("invalid_schema") || err.contains("filter"),
        "{err}"
    );

    let events = ws.json(&["events", "order", "o-1"]);
    let events = events["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["event_type"], "order_created");
    assert_eq!(events[2]["event_type"], "order_tagged");
    let first = ws.json(&["events", "order", "o-1", "--take", "1"]);
    assert_eq!(first["events"].as_array().map(Vec::len), Some(1));
    assert!(first["next_cursor"].is_string(), "{first}");

    let verified = ws.json(&["aggregate", "verify", "order", "o-1"]);
    assert_eq!(
        verified["merkle_root"].as_str().map(str::len),
        Some(64),
        "{verified}"
    );
    let err = ws.fails(&["aggregate", "verify", "order", "missing"]);
    assert!(err.contains("aggregate_not_found"), "{err}");

    let referrers = ws.json(&["aggregate", "referrers", "order", "o-1"]);
    assert_eq!(referrers, json!([]));

    let archived = ws.json(&["aggregate", "archive", "order", "o-2", "--note", "done"]);
    assert_eq!(archived["archived"], true, "{archived}");
    let active = ws.json(&["aggregate", "list"]);
    assert_eq!(active["aggregates"].as_array().map(Vec::len), Some(2));
    let only = ws.json(&["aggregate", "list", "--archived-only"]);
    assert_eq!(only["aggregates"][0]["aggregate_id"], "o-2", "{only}");
    let every = ws.json(&["aggregate", "list", "--include-archived"]);
    assert_eq!(every["aggregates"].as_array().map(Vec::len), Some(3));
    let err = ws.fails(&[
        "aggregate",
        "apply",
        "order",
        "o-2",
        "order_paid",
        "--payload",
        "{}",
    ]);
    assert!(err.contains("aggregate_archived"), "{err}");
    let restored = ws.json(&["aggregate", "restore", "order", "o-2"]);
    assert_ne!(restored["archived"], true, "{restored}");
    let active = ws.json(&["aggregate", "list"]);
    assert_eq!(active["aggregates"].as_array().map(Vec::len), Some(3));

    let snapshot = ws.json(&[
        "snapshots",
        "create",
        "order",
        "o-1",
        "--comment",
        "nightly",
    ]);
    assert_eq!(snapshot["version"], 3, "{snapshot}");
    let snapshot_id = snapshot["snapshot_id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| snapshot["snapshot_id"].as_u64().map(|id| id.to_string()))
        .expect("snapshot id");
    let listed = ws.json(&["snapshots", "list", "order", "o-1"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let none = ws.json(&["snapshots", "list", "order", "o-1", "--version", "2"]);
    assert_eq!(none, json!([]));
    let got = ws.json(&["snapshots", "get", &snapshot_id]);
    assert_eq!(got["state"]["tag"], "vip", "{got}");
    let err = ws.fails(&["snapshots", "get", "12345"]);
    assert!(err.contains("not found"), "{err}");

    // Without --json: pretty JSON for documents.
    let output = ws.dbx(&["aggregate", "get", "order", "o-3"]);
    assert!(output.status.success());
    let pretty = text(&output.stdout);
    assert!(pretty.contains("\n  \"aggregate_id\": \"o-3\""), "{pretty}");
}

/// The CLI data round trip.
#[test]
fn cli_data_round_trip() {
    let ws = Workspace::start();
    let created = ws.json(&[
        "aggregate",
        "create",
        "invoice",
        "inv-1",
        "--event",
        "invoice_created",
        "--field",
        "status=open",
    ]);
    assert_eq!(created["version"], 1, "{created}");
    let applied = ws.json(&[
        "aggregate",
        "apply",
        "invoice",
        "inv-1",
        "invoice_paid",
        "--field",
        "status=paid",
    ]);
    assert_eq!(applied["version"], 2, "{applied}");
    let listed = ws.json(&["aggregate", "list"]);
    assert_eq!(listed["aggregates"][0]["aggregate_id"], "inv-1", "{listed}");
    let got = ws.json(&["aggregate", "get", "invoice", "inv-1", "--include-events"]);
    assert_eq!(got["aggregate"]["state"]["status"], "paid", "{got}");
    let events = got["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    // The aggregate as it was: rebuilt from its first events; the latest equals `get`.
    let at_one = ws.json(&["aggregate", "get", "invoice", "inv-1", "--version", "1"]);
    assert_eq!(
        (&at_one["version"], &at_one["state"]["status"]),
        (&json!(1), &json!("open")),
        "{at_one}"
    );
    let at_two = ws.json(&["aggregate", "get", "invoice", "inv-1", "--version", "2"]);
    assert_eq!(at_two, ws.json(&["aggregate", "get", "invoice", "inv-1"]));
    let err = ws.fails(&["aggregate", "get", "invoice", "inv-1", "--version", "3"]);
    assert!(err.contains("there is no version 3"), "{err}");
    let listed_events = ws.json(&["events", "invoice", "inv-1"]);
    assert_eq!(listed_events["events"].as_array().map(Vec::len), Some(2));
    let event_id = events[1]["metadata"]["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    let one = ws.json(&["events", "--event", &event_id]);
    assert_eq!(one["event_type"], "invoice_paid", "{one}");
    assert_eq!(one["metadata"]["event_id"], event_id.as_str());
    // The feed of one type, and of everything.
    let typed = ws.json(&["events", "invoice"]);
    assert_eq!(typed["events"].as_array().map(Vec::len), Some(2), "{typed}");
    let none = ws.json(&["events", "order"]);
    assert_eq!(none["events"], json!([]), "{none}");
    let missing = ws.fails(&["events", "--event", "12345"]);
    assert!(missing.contains("event 12345 not found"), "{missing}");
    let verified = ws.json(&["aggregate", "verify", "invoice", "inv-1"]);
    let root = verified["merkle_root"].as_str().expect("merkle root");
    assert_eq!(root.len(), 64, "{verified}");
}

#[test]
fn events_follow_prints_each_event_with_its_position() {
    let ws = Workspace::start();
    for id in ["o-1", "o-2"] {
        ws.json(&[
            "aggregate",
            "create",
            "order",
            id,
            "--event",
            "order_created",
        ]);
    }
    ws.json(&[
        "aggregate",
        "create",
        "person",
        "p-1",
        "--event",
        "person_created",
    ]);
    ws.json(&[
        "aggregate",
        "apply",
        "order",
        "o-1",
        "order_paid",
        "--payload",
        "{}",
    ]);
    let output = ws.dbx(&[
        "events",
        "--follow",
        "--from",
        "1",
        "--aggregate-type",
        "order",
        "--take",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<(u64, String, u64)> = text(&output.stdout)
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("one JSON per line");
            let id = event["aggregate_id"].as_str().expect("id").to_owned();
            (
                event["position"].as_u64().expect("position"),
                id,
                event["version"].as_u64().expect("v"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![(2, "o-2".to_owned(), 1), (4, "o-1".to_owned(), 2)]
    );
    let err = ws.fails(&["events", "--follow", "--from", "soon"]);
    assert!(
        err.contains("--from must be start, end or a position"),
        "{err}"
    );
}
