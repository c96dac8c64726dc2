//! The control-protocol commands of `dbx`, run as the real binary against a real `dbx serve`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};

#[path = "cli_plugins/mod.rs"]
mod cli_plugins;

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh `dbx init` workspace with `dbx serve` running on ephemeral ports.
struct Workspace {
    dir: tempfile::TempDir,
    port: u16,
    _serving: Serving,
}

fn dbx_in(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbx"));
    command
        .current_dir(dir)
        .env_remove("EVENTDBX_CONFIG")
        .env_remove("EVENTDBX_TOKEN")
        .env("EVENTDBX_LOG", "warn");
    command
}

impl Workspace {
    fn start() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let init = dbx_in(dir.path()).arg("init").output().expect("dbx init");
        assert!(init.status.success(), "{}", text(&init.stderr));
        let config_path = dir.path().join(".dbx/config.toml");
        let config = std::fs::read_to_string(&config_path)
            .expect("config")
            .replace(
                "bind_addr = \"127.0.0.1:6363\"",
                "bind_addr = \"127.0.0.1:0\"",
            )
            .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n");
        assert_eq!(config.matches("127.0.0.1:0").count(), 2, "{config}");
        std::fs::write(&config_path, config).expect("write config");

        let (serving, port, _, _) = serve(dir.path(), "warn");
        Workspace {
            dir,
            port,
            _serving: serving,
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same workspace.
    fn kill_and_restart(&mut self) {
        self._serving.0.kill().expect("SIGKILL dbx serve");
        self._serving.0.wait().expect("reap dbx serve");
        let (serving, port, _, _) = serve(self.dir.path(), "warn");
        self._serving = serving;
        self.port = port;
    }

    /// `dbx <args> --port <port>`: the config's bind address is :0, so the port is passed.
    fn dbx(&self, args: &[&str]) -> Output {
        dbx_in(self.dir.path())
            .args(args)
            .arg("--port")
            .arg(self.port.to_string())
            .output()
            .expect("dbx runs")
    }

    /// Runs with `--json`, expects success, parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.dbx(&with_json);
        assert!(
            output.status.success(),
            "dbx {args:?} failed: {}{}",
            text(&output.stderr),
            text(&output.stdout)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("dbx {args:?}: {err}: {}", text(&output.stdout)))
    }

    /// Runs, expects failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.dbx(args);
        assert!(
            !output.status.success(),
            "dbx {args:?} should fail: {}",
            text(&output.stdout)
        );
        text(&output.stderr)
    }
}

/// Starts `dbx serve` in `dir` with `EVENTDBX_LOG=log`; returns it, its control port, its
/// banner (stdout) and, when `log` is `info`, its startup log (stderr) up to "server opened".
fn serve(dir: &Path, log: &str) -> (Serving, u16, String, String) {
    let mut child = dbx_in(dir)
        .env("EVENTDBX_LOG", log)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(if log == "info" {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("dbx serve");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take();
    let serving = Serving(child);
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("serve prints its addresses");
    let control = banner
        .split("control ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("control address in the banner: {banner}"));
    let port = control
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("control port in {control}"));
    let mut log_lines = String::new();
    if let Some(stderr) = stderr {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        // The startup lines are written before the banner.
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            log_lines.push_str(&line);
            if line.contains("server opened") {
                break;
            }
            line.clear();
        }
    }
    (serving, port, banner, log_lines)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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

/// 04-acceptance 99: the CLI data round trip.
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

/// 04-acceptance 94: 1,000 concurrent `apply` calls; SIGKILL right after the last
/// acknowledgement; after a restart every acknowledged event is there, versions gap-free. Then,
/// with `durability = "relaxed"`, the startup log and `/health` say so.
#[test]
fn acknowledged_writes_survive_sigkill_of_the_server() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use eventdbx_client::{Client, ClientConfig};

    const AGGREGATES: usize = 20;
    const APPLIES: usize = 1_000;
    let mut ws = Workspace::start();
    let token = std::fs::read_to_string(ws.dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();
    let config = |port: u16| {
        ClientConfig::new(token.clone(), "default")
            .port(port)
            .request_timeout(std::time::Duration::from_secs(30))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked: BTreeMap<String, u64> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(Arc::new(
                Client::connect(config(ws.port)).await.expect("connect"),
            ));
        }
        for n in 0..AGGREGATES {
            clients[0]
                .create("account", &format!("acct-{n}"), "opened", "{}")
                .await
                .expect("create");
        }
        let mut tasks = Vec::new();
        for i in 0..APPLIES {
            let client = Arc::clone(&clients[i % clients.len()]);
            tasks.push(tokio::spawn(async move {
                let id = format!("acct-{}", i % AGGREGATES);
                let written = client
                    .apply("account", &id, "deposited", &format!("{{\"n\": {i}}}"))
                    .await
                    .expect("apply");
                let event = written.value().expect("json").expect("verbose event");
                (id, event["version"].as_u64().expect("version"))
            }));
        }
        let mut acked = BTreeMap::new();
        for task in tasks {
            let (id, version) = task.await.expect("task");
            let highest = acked.entry(id).or_insert(0);
            *highest = (*highest).max(version);
        }
        acked
    });
    ws.kill_and_restart();
    let total: u64 = runtime.block_on(async {
        let client = Client::connect(config(ws.port)).await.expect("reconnect");
        let mut total = 0;
        for (id, acked_version) in &acked {
            let found = client.get("account", id).await.expect("get");
            let aggregate: Value =
                serde_json::from_str(found.json.as_deref().expect("exists")).expect("json");
            let version = aggregate["version"].as_u64().expect("version");
            assert!(
                version >= *acked_version,
                "{id}: {version} < acked {acked_version}"
            );
            let mut query = eventdbx_client::EventsQuery::new("account", id);
            query.take = Some(1_000);
            let page = client.events(&query).await.expect("events");
            let versions: Vec<u64> = page
                .events()
                .expect("events json")
                .iter()
                .map(|e| e["version"].as_u64().expect("version"))
                .collect();
            assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{id}");
            total += version - 1;
        }
        total
    });
    assert_eq!(
        total, APPLIES as u64,
        "every acknowledged apply is stored once"
    );

    // Relaxed: the startup log and /health report it.
    drop(ws._serving);
    let config_path = ws.dir.path().join(".dbx/config.toml");
    let config_text = std::fs::read_to_string(&config_path).expect("config");
    assert!(
        config_text.contains("durability = \"fsync\""),
        "{config_text}"
    );
    let relaxed = config_text.replace("durability = \"fsync\"", "durability = \"relaxed\"");
    std::fs::write(&config_path, relaxed).expect("config");
    let (serving, _port, banner, log) = serve(ws.dir.path(), "info");
    ws._serving = serving;
    assert!(banner.contains("durability relaxed"), "banner: {banner}");
    assert!(
        log.contains("relaxed") && log.contains("durability"),
        "startup log: {log}"
    );
    let http = banner
        .split("http ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("http address in the banner")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&http).expect("connect to the HTTP port");
    std::io::Write::write_all(&mut stream, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).expect("response");
    assert!(body.contains("\"durability\":\"relaxed\""), "{body}");
}
