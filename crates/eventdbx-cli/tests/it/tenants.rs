//! `dbx tenant` commands, and a bad token refused.

use serde_json::{json, Value};

use crate::workspace::{dbx_in, text, Workspace};

#[test]
fn tenant_commands_and_a_bad_token() {
    let ws = Workspace::start();
    ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-1",
        "--event",
        "order_created",
        "--payload",
        r#"{"status":"open"}"#,
    ]);

    let assigned = ws.json(&["tenant", "assign", "acme", "3"]);
    assert_eq!(
        assigned,
        json!({"tenant_id": "acme", "shard_id": "shard-0003", "changed": true})
    );
    let again = ws.json(&["tenant", "assign", "acme", "3"]);
    assert_eq!(again["changed"], false);
    let err = ws.fails(&["tenant", "assign", "acme", "not a shard"]);
    assert!(err.contains("config"), "{err}");
    let unassigned = ws.json(&["tenant", "unassign", "acme"]);
    assert_eq!(unassigned["changed"], true);

    let quota = ws.json(&["tenant", "quota", "set", "default", "100"]);
    assert_eq!(
        quota,
        json!({"tenant_id": "default", "quota_mb": 100, "changed": true})
    );
    let output = ws.dbx(&["tenant", "quota", "recalc", "default", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let recalc: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(
        recalc["storage_bytes"].as_u64().is_some_and(|b| b > 0),
        "{recalc}"
    );
    let progress = text(&output.stderr);
    assert!(
        progress.contains("recalculating storage of tenant default"),
        "{progress}"
    );
    let cleared = ws.json(&["tenant", "quota", "clear", "default"]);
    assert_eq!(cleared["changed"], true);
    let reloaded = ws.json(&["tenant", "reload", "default"]);
    assert!(reloaded["reloaded"].is_boolean(), "{reloaded}");

    // The tenant list: default holds the order; acme was assigned (and unassigned) only.
    let listed = ws.json(&["tenant", "list"]);
    let default = listed
        .as_array()
        .and_then(|all| all.iter().find(|t| t["tenant_id"] == "default"))
        .unwrap_or_else(|| panic!("default not listed: {listed}"));
    assert_eq!(default["events"], 1, "{listed}");
    let output = ws.dbx(&["tenant", "list"]);
    let table = text(&output.stdout);
    assert!(
        table.starts_with("tenant ") && table.lines().any(|l| l.starts_with("default ")),
        "{table}"
    );

    // Human output.
    let output = ws.dbx(&["tenant", "quota", "clear", "default"]);
    assert_eq!(text(&output.stdout), "tenant default had no quota\n");

    // A bad token: non-zero exit and a clear message, from --token and from EVENTDBX_TOKEN.
    let output = ws.dbx(&["aggregate", "get", "order", "o-1", "--token", "not-a-token"]);
    assert!(!output.status.success());
    let err = text(&output.stderr);
    assert!(err.contains("rejected the token"), "{err}");
    let output = dbx_in(ws.dir.path())
        .args(["aggregate", "list", "--port", &ws.port.to_string()])
        .env("EVENTDBX_TOKEN", "eyJhbGciOiJFZERTQSJ9.e30.c2ln")
        .output()
        .expect("dbx");
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("rejected the token"),
        "{}",
        text(&output.stderr)
    );

    // A token without tenant.manage cannot administer tenants.
    let output = dbx_in(ws.dir.path())
        .args([
            "token",
            "generate",
            "--group",
            "ops",
            "--user",
            "reader",
            "--action",
            "aggregate.read",
        ])
        .output()
        .expect("dbx token generate");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let reader = text(&output.stdout).trim().to_owned();
    // A token issued while the server runs works at once, over the default v2.
    let got = ws.json(&["aggregate", "get", "order", "o-1", "--token", &reader]);
    assert_eq!(got["aggregate_id"], "o-1");
    let err = ws.fails(&["tenant", "reload", "default", "--token", &reader]);
    assert!(err.contains("unauthorized"), "{err}");

    // Nobody listening: a clear message.
    let output = dbx_in(ws.dir.path())
        .args(["aggregate", "list", "--port", "1"])
        .output()
        .expect("dbx");
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("cannot reach the server"),
        "{}",
        text(&output.stderr)
    );
}
