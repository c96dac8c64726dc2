//! Plugins and publish targets (`04-acceptance.md` G, items 85–92) against a real server and a
//! real HTTP receiver on `127.0.0.1:0`: payload modes, routing, broadcast, refusals before
//! writing, background delivery with retries and dead letters, `admin` queue retry, priority
//! order after an outage, archive and restore jobs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{err, ok, TestServer, WriteOpts};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
    status: u16,
    at: Instant,
}

/// A tiny HTTP/1.1 receiver answering every request with the current status.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let status = Arc::new(AtomicU16::new(200));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (status2, log2) = (Arc::clone(&status), Arc::clone(&log));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = stream.read(&mut buf) else {
                        break (None, Vec::new());
                    };
                    if n == 0 {
                        break (None, Vec::new());
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        break (Some(head), data[end + 4..end + 4 + length].to_vec());
                    }
                };
                let Some(head) = head else { continue };
                let mut lines = head.lines();
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("")
                    .to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let code = status2.load(Ordering::SeqCst);
                log2.lock().expect("log").push(Received {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    status: code,
                    at: Instant::now(),
                });
                let text = if code == 200 {
                    "ok"
                } else {
                    "receiver says no"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Receiver { port, status, log }
    }

    fn endpoint(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hook/{name}", self.port)
    }

    /// Successful deliveries to `/hook/<name>`.
    fn delivered(&self, name: &str) -> Vec<Received> {
        let path = format!("/hook/{name}");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path && r.status == 200)
            .cloned()
            .collect()
    }

    /// Waits for a successful delivery to `/hook/<name>` of the event (or change) `event_id`;
    /// returns every such delivery.
    fn wait_event(&self, name: &str, event_id: &str) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Received> = self
                .delivered(name)
                .into_iter()
                .filter(|r| {
                    r.body["event"]["metadata"]["event_id"].as_str() == Some(event_id)
                        || r.body["event_id"].as_str() == Some(event_id)
                })
                .collect();
            if !got.is_empty() {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: event {event_id} never delivered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn attempts(&self, name: &str) -> Vec<Received> {
        let path = format!("/hook/{name}");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `/hook/<name>` has `n` successful deliveries.
    fn wait_for(&self, name: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.delivered(name);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {n} deliveries",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn http_plugin(rx: &Receiver, name: &str, mode: &str, emit: bool) -> Value {
    json!({"enabled": true, "emit_events": emit, "name": name, "payload_mode": mode,
           "config": {"type": "http", "endpoint": rx.endpoint(name), "headers": {}}})
}

fn write_plugins(data_dir: &std::path::Path, defs: &[Value]) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(
        data_dir.join("plugins.json"),
        serde_json::to_string_pretty(&Value::Array(defs.to_vec())).expect("json"),
    )
    .expect("write plugins.json");
}

fn targets<'a>(list: &[(&'a str, Option<&'a str>, Option<&'a str>)]) -> WriteOpts<'a> {
    WriteOpts {
        targets: Some(list.to_vec()),
        ..WriteOpts::default()
    }
}

fn event_id_of(reply: &Value) -> String {
    reply["metadata"]["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

#[test]
fn payload_modes_routing_broadcast_and_refusals() {
    let rx = Receiver::start();
    let mut regression = http_plugin(&rx, "http-regression", "all", true);
    regression["config"]["headers"] = json!({"X-Test": "ok"});
    let defs = vec![
        regression,
        http_plugin(&rx, "a", "event-only", true),
        http_plugin(&rx, "b", "all", false),
        http_plugin(&rx, "webhook", "all", true),
        http_plugin(&rx, "analytics-engine", "all", true),
        http_plugin(&rx, "fraud-worker", "all", true),
        http_plugin(&rx, "ext", "extensions-only", true),
    ];
    let server = TestServer::start(|config| write_plugins(&config.data_dir, &defs));
    let mut c = server.v2("default");

    // 90: create publishes; `async` = the plugin's own mode (all).
    let created = ok(c.create_with(
        "order",
        "order-123",
        "order_created",
        r#"{"status":"new"}"#,
        &targets(&[("webhook", Some("async"), None)]),
    ));
    assert_eq!(created["version"], json!(1));
    let got = rx.wait_for("webhook", 1);
    assert_eq!(got[0].body["event"]["event_type"], json!("order_created"));
    assert_eq!(got[0].body["state"]["state"]["status"], json!("new"));
    assert_eq!(got[0].body["tenant"], json!("default"));
    assert!(
        rx.attempts("a").is_empty(),
        "a named target is not a broadcast"
    );

    // 85: http payload with the configured header, no schema key without a schema.
    let applied = ok(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        r#"{"status":"paid"}"#,
        &WriteOpts {
            note: Some("regression"),
            targets: Some(vec![("http-regression", None, None)]),
            ..WriteOpts::default()
        },
    ));
    let got = rx.wait_event("http-regression", &event_id_of(&applied));
    let hit = &got[0];
    assert_eq!(hit.headers.get("x-test").map(String::as_str), Some("ok"));
    assert_eq!(
        hit.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body = &hit.body;
    assert_eq!(body["event"]["aggregate_type"], json!("order"));
    assert_eq!(body["event"]["aggregate_id"], json!("order-123"));
    assert_eq!(body["event"]["metadata"]["note"], json!("regression"));
    let event_id = body["event"]["metadata"]["event_id"]
        .as_str()
        .expect("decimal string");
    assert!(event_id.parse::<u64>().is_ok());
    assert_eq!(event_id, event_id_of(&applied));
    assert_eq!(body["state"]["state"]["status"], json!("paid"));
    assert_eq!(body["state"]["version"], json!(2));
    assert!(body.get("schema").is_none(), "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["event", "state", "tenant"]);

    // 86: unknown and disabled plugins are refused before anything is written.
    let admin = server.token(&["*.*"], &[]);
    let jobs_before = ok(c.admin_as(&admin, "queue.list", json!({})))["jobs"]
        .as_array()
        .expect("jobs")
        .len();
    let refused = err(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        "{}",
        &targets(&[("nope", None, None)]),
    ));
    assert_eq!(
        refused.pair(),
        (
            "invalid_schema",
            "invalid schema: plugin 'nope' is not configured"
        )
    );
    let refused = err(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        "{}",
        &targets(&[("b", None, None)]),
    ));
    assert_eq!(refused.message, "invalid schema: plugin 'b' is disabled");
    assert_eq!(
        ok(c.get("order", "order-123"))["aggregate"]["version"],
        json!(2)
    );
    let jobs_after = ok(c.admin_as(&admin, "queue.list", json!({})))["jobs"]
        .as_array()
        .expect("jobs")
        .len();
    assert_eq!(jobs_before, jobs_after, "no job queued by refused writes");

    // 87: target validation messages; `async` accepted.
    for (target, message) in [
        (
            ("", None, None),
            "invalid schema: publish target plugin cannot be empty",
        ),
        (
            ("a", Some("bogus"), None),
            "invalid schema: invalid publish mode 'bogus'",
        ),
        (
            ("a", None, Some("urgent")),
            "invalid schema: invalid publish priority 'urgent'",
        ),
    ] {
        let refused = err(c.apply_with(
            "order",
            "order-123",
            "order_status_updated",
            "{}",
            &targets(&[target]),
        ));
        assert_eq!(refused.message, message);
    }

    // 88: broadcast, without targets and with an empty list: only `a`, in its mode.
    let first = ok(c.apply("order", "order-123", "order_status_updated", r#"{"n":1}"#));
    let second = ok(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        r#"{"n":2}"#,
        &targets(&[]),
    ));
    for reply in [&first, &second] {
        let got = rx.wait_event("a", &event_id_of(reply));
        assert_eq!(got.len(), 1);
        assert!(got[0].body.get("state").is_none(), "event-only");
        assert!(got[0].body["event"].is_object());
        // Every other emitting plugin got it too, in its own mode.
        let all = rx.wait_event("fraud-worker", &event_id_of(reply));
        assert!(all[0].body["state"].is_object());
    }
    assert!(
        rx.attempts("b").is_empty(),
        "emit_events = false never broadcast"
    );

    // 89: routing and modes with a schema; duplicates delivered once.
    ok(c.replace_schemas(crate::support::ORDER_SCHEMA));
    let routed = ok(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        r#"{"status":"shipped"}"#,
        &targets(&[
            ("analytics-engine", Some("event-only"), None),
            ("fraud-worker", Some("all"), Some("high")),
            ("Analytics-Engine", Some("all"), None),
        ]),
    ));
    let analytics = rx.wait_event("analytics-engine", &event_id_of(&routed));
    let keys: Vec<&str> = analytics[0]
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["event", "tenant"]);
    let fraud = rx.wait_event("fraud-worker", &event_id_of(&routed));
    assert_eq!(
        fraud[0].body["event"]["metadata"]["event_id"],
        json!(event_id_of(&routed))
    );
    assert_eq!(fraud[0].body["state"]["state"]["status"], json!("shipped"));
    assert!(
        fraud[0].body["schema"]["events"].is_object(),
        "{}",
        fraud[0].body
    );

    // 92: extensions-only keeps extensions, nulls the payload, no state or schema.
    let extended = ok(c.apply_with(
        "order",
        "order-123",
        "order_status_updated",
        r#"{"status":"x"}"#,
        &WriteOpts {
            metadata: Some(r#"{"@trace": 1}"#),
            targets: Some(vec![("ext", None, None)]),
            ..WriteOpts::default()
        },
    ));
    let ext = rx.wait_event("ext", &event_id_of(&extended));
    let body = &ext[0].body;
    assert_eq!(body["event"]["payload"], Value::Null);
    assert_eq!(body["event"]["extensions"], json!({"@trace": 1}));
    assert!(body.get("state").is_none() && body.get("schema").is_none());

    // Archive and restore (ours): jobs with the state after the change and the action.
    ok(c.set_archived_with("order", "order-123", true, &[("webhook", None, None)]));
    ok(c.set_archived_with("order", "order-123", false, &[("webhook", None, None)]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let actions = loop {
        let actions: Vec<Value> = rx
            .delivered("webhook")
            .into_iter()
            .filter(|r| r.body.get("action").is_some())
            .map(|r| r.body)
            .collect();
        if actions.len() >= 2 {
            break actions;
        }
        assert!(Instant::now() < deadline, "archive jobs not delivered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(actions[0]["action"], json!("archive"));
    assert_eq!(actions[0]["state"]["archived"], json!(true));
    assert_eq!(actions[1]["action"], json!("restore"));
    assert_eq!(actions[1]["aggregate_id"], json!("order-123"));
    assert!(actions[0].get("event").is_none());
    assert_eq!(
        rx.wait_event("analytics-engine", &event_id_of(&routed))
            .len(),
        1,
        "a duplicate target is delivered once"
    );
}

#[test]
fn failing_endpoint_retries_with_backoff_dead_letters_and_admin_retry_redelivers() {
    let rx = Receiver::start();
    rx.status.store(500, Ordering::SeqCst);
    let defs = vec![http_plugin(&rx, "hook", "all", true)];
    let unit = 200;
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_max_attempts = 3;
        config.plugin_queue.backoff_unit_ms = unit;
    });
    let mut c = server.v2("default");
    let admin = server.token(&["*.*"], &[]);
    let started = Instant::now();
    let created = ok(c.create("order", "o-1", "order_created", r#"{"a":1}"#));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "write not held by delivery"
    );
    let event_id = created["version"].clone();
    assert_eq!(event_id, json!(1));
    // Three attempts, about 1 and 2 units apart, then dead.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let listed = ok(c.admin_as(&admin, "queue.list", json!({"status": "dead"})));
        if let Some(job) = listed["jobs"].as_array().and_then(|j| j.first()).cloned() {
            break job;
        }
        assert!(Instant::now() < deadline, "job never dead-lettered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let attempts = rx.attempts("hook");
    assert_eq!(attempts.len(), 3);
    let gap1 = attempts[1].at - attempts[0].at;
    let gap2 = attempts[2].at - attempts[1].at;
    assert!(
        gap1 >= Duration::from_millis(unit) && gap1 < Duration::from_millis(6 * unit),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(2 * unit) && gap2 < Duration::from_millis(8 * unit),
        "{gap2:?}"
    );
    assert_eq!(dead["attempts"], json!(3));
    assert_eq!(
        dead["last_error"],
        json!("http plugin request failed (500): receiver says no")
    );
    // Nothing happens by itself after the dead letter.
    std::thread::sleep(Duration::from_millis(4 * unit));
    assert_eq!(rx.attempts("hook").len(), 3);
    // The endpoint recovers; a retry (by event id) delivers it with no further write.
    rx.status.store(200, Ordering::SeqCst);
    let retried = ok(c.admin_as(&admin, "queue.retry", json!({"event_id": dead["event_id"]})));
    assert_eq!(retried["retried"], json!(1));
    let got = rx.wait_for("hook", 1);
    assert_eq!(
        got[0].body["event"]["metadata"]["event_id"],
        dead["event_id"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = ok(c.admin_as(&admin, "queue.list", json!({"status": "done"})));
        if listed["jobs"].as_array().is_some_and(|j| j.len() == 1) {
            assert_eq!(listed["counts"]["dead"], json!(0));
            break;
        }
        assert!(Instant::now() < deadline, "job never done");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A replay delivers the done job again (same event id).
    let replayed = ok(c.admin_as(
        &admin,
        "plugin.replay",
        json!({"name": "hook", "event_id": dead["event_id"]}),
    ));
    assert_eq!(replayed["replayed"], json!(1));
    let got = rx.wait_for("hook", 2);
    assert_eq!(
        got[1].body["event"]["metadata"]["event_id"],
        dead["event_id"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(c.admin_as(&admin, "queue.list", json!({"status": "done"})))["jobs"]
        .as_array()
        .is_none_or(|j| j.len() != 1)
    {
        assert!(Instant::now() < deadline, "replayed job never done");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Prometheus counters on /metrics.
    let metrics = scrape_metrics(&server);
    for line in [
        "eventdbx_plugin_jobs_delivered_total 2",
        "eventdbx_plugin_jobs_retried_total 2",
        "eventdbx_plugin_jobs_dead_lettered_total 1",
        "eventdbx_plugin_jobs_dead 0",
        "eventdbx_plugin_jobs_pending 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // The plugins file is reloaded when it changes (no restart, no admin request).
    let refused = err(c.apply_with(
        "order",
        "o-1",
        "order_updated",
        "{}",
        &targets(&[("late", None, None)]),
    ));
    assert_eq!(
        refused.message,
        "invalid schema: plugin 'late' is not configured"
    );
    std::thread::sleep(Duration::from_millis(20));
    let mut more = defs.clone();
    more.push(http_plugin(&rx, "late", "event-only", true));
    write_plugins(&server.data_dir(), &more);
    let deadline = Instant::now() + Duration::from_secs(10);
    let late = loop {
        match c.apply_with(
            "order",
            "o-1",
            "order_updated",
            r#"{"late":true}"#,
            &targets(&[("late", None, None)]),
        ) {
            Ok(reply) => break reply,
            Err(e) => {
                assert_eq!(e.code, "invalid_schema");
                assert!(
                    Instant::now() < deadline,
                    "plugins.json change not picked up"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    rx.wait_event("late", &event_id_of(&late));
    // Admin requests need a root/admin token: the session's tenant-wide token is refused.
    let refused = err(c.admin("queue.list", json!({})));
    assert_eq!(refused.code, "unauthorized");
}

#[test]
fn a_hundred_writes_during_an_outage_all_arrive_in_priority_order() {
    let rx = Receiver::start();
    rx.status.store(503, Ordering::SeqCst);
    let defs = vec![http_plugin(&rx, "sink", "event-only", true)];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_max_attempts = 1000;
        config.plugin_queue.backoff_unit_ms = 20;
    });
    let mut c = server.v2("default");
    let priorities = ["low", "normal", "high"];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut expected: Vec<(usize, usize)> = Vec::new();
    for n in 0..100 {
        let priority = priorities[n % 3];
        let one = Instant::now();
        let opts = targets(&[("sink", None, Some(priority))]);
        if n == 0 {
            ok(c.create_with("order", "o-1", "order_created", r#"{"n":0}"#, &opts));
        } else {
            ok(c.apply_with(
                "order",
                "o-1",
                "order_updated",
                &format!(r#"{{"n":{n}}}"#),
                &opts,
            ));
        }
        slowest = slowest.max(one.elapsed());
        let rank = 2 - n % 3; // high 0, normal 1, low 2
        expected.push((rank, n));
    }
    let total = started.elapsed();
    assert!(
        slowest < Duration::from_secs(3),
        "slowest write {slowest:?}"
    );
    assert!(rx.delivered("sink").is_empty());
    rx.status.store(200, Ordering::SeqCst);
    let got = rx.wait_for("sink", 100);
    expected.sort();
    let order: Vec<u64> = got
        .iter()
        .map(|r| r.body["event"]["payload"]["n"].as_u64().expect("n"))
        .collect();
    let wanted: Vec<u64> = expected.iter().map(|(_, n)| *n as u64).collect();
    assert_eq!(order, wanted, "high, normal, low, then oldest first");
    eprintln!("100 writes during the outage in {total:?} (slowest {slowest:?})");
}

/// Reads the echo plugin's JSON lines.
fn echoed(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_echoed(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = echoed(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events echoed",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_process_plugin_gets_every_mode_and_survives_a_killed_child() {
    use eventdbx_server::plugins::process::current_target;
    let scratch = tempfile::tempdir().expect("scratch");
    let out = scratch.path().join("echo.jsonl");
    let defs = vec![json!({"enabled": true, "emit_events": true, "name": "echo",
        "payload_mode": "all",
        "config": {"type": "process", "name": "echo", "version": "1.0.0", "args": [],
                   "env": {"EVENTDBX_ECHO_PLUGIN_OUT": out.display().to_string()}}})];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        let bin = config
            .data_dir
            .join("plugins/echo/1.0.0")
            .join(current_target());
        std::fs::create_dir_all(&bin).expect("registry");
        std::fs::copy(env!("CARGO_BIN_EXE_eventdbx-echo-plugin"), bin.join("echo"))
            .expect("install echo plugin");
        config.plugin_queue.backoff_unit_ms = 100;
    });
    let mut c = server.v2("default");
    ok(c.replace_schemas(crate::support::ORDER_SCHEMA));
    ok(c.create("order", "o-1", "order_created", r#"{"status":"new"}"#));
    let modes = [
        "all",
        "event-only",
        "state-only",
        "schema-only",
        "event-and-schema",
        "extensions-only",
    ];
    let mut ids = Vec::new();
    for mode in modes {
        let reply = ok(c.apply_with(
            "order",
            "o-1",
            "order_status_updated",
            &format!(r#"{{"mode":"{mode}"}}"#),
            &WriteOpts {
                metadata: Some(r#"{"@trace": 7}"#),
                targets: Some(vec![("echo", Some(mode), None)]),
                ..WriteOpts::default()
            },
        ));
        ids.push(event_id_of(&reply));
    }
    let lines = wait_echoed(&out, 1 + modes.len());
    let by_id = |id: &str| -> Value {
        lines
            .iter()
            .find(|l| l["event_id"].as_str() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("event {id} not echoed"))
    };
    for (mode, id) in modes.iter().zip(&ids) {
        let line = by_id(id);
        let payload = line["payload_json"].as_str().expect("payload_json");
        let state = line["state_entries"].as_array().expect("entries");
        let schema = line["schema_json"].as_str().expect("schema_json");
        let (has_payload, has_state, has_schema) = match *mode {
            "all" => (true, true, true),
            "event-only" => (true, false, false),
            "state-only" => (false, true, false),
            "schema-only" => (false, false, true),
            "event-and-schema" => (true, false, true),
            _ => (false, false, false),
        };
        assert_eq!(payload != "null", has_payload, "{mode}: {line}");
        assert_eq!(!state.is_empty(), has_state, "{mode}: {line}");
        assert_eq!(schema != "null", has_schema, "{mode}: {line}");
        if *mode == "extensions-only" {
            assert!(line["extensions_json"]
                .as_str()
                .expect("ext")
                .contains("@trace"));
        }
    }
    // Kill the child: the server starts another and loses no job.
    let pid = lines[0]["pid"].as_u64().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut after = Vec::new();
    for n in 0..3 {
        let reply = ok(c.apply_with(
            "order",
            "o-1",
            "order_status_updated",
            &format!(r#"{{"after":{n}}}"#),
            &targets(&[("echo", None, None)]),
        ));
        after.push(event_id_of(&reply));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = echoed(&out);
        let seen: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["event_id"].as_str())
            .collect();
        if after.iter().all(|id| seen.contains(&id.as_str())) {
            let new_pid = lines
                .iter()
                .find(|l| l["event_id"].as_str() == Some(after[0].as_str()))
                .and_then(|l| l["pid"].as_u64());
            assert_ne!(new_pid, Some(pid), "a new child delivered after the kill");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs lost after the child was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics` from the server's HTTP listener, run for this one request.
fn scrape_metrics(server: &TestServer) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let serving = server.server().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serving
                .serve_http(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve http");
        });
    });
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let _ = stop.send(());
    thread.join().expect("http thread");
    response
}

#[test]
fn a_tcp_plugin_writes_json_lines_on_a_kept_alive_connection_and_reconnects() {
    use std::io::BufRead;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp receiver");
    let port = listener.local_addr().expect("addr").port();
    // Each accepted connection's lines, in order.
    let connections: Arc<Mutex<Vec<Vec<Value>>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let index = {
                let mut all = seen.lock().expect("lines");
                all.push(Vec::new());
                all.len() - 1
            };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                let mut line = String::new();
                // The second connection is closed by the receiver after one line.
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let value: Value = serde_json::from_str(line.trim()).expect("json line");
                    seen.lock().expect("lines")[index].push(value);
                    line.clear();
                    if index == 0 && seen.lock().expect("lines")[0].len() == 3 {
                        return; // drop the first connection after three jobs
                    }
                }
            });
        }
    });
    let defs = vec![
        json!({"enabled": true, "name": "stream", "payload_mode": "event-only",
        "config": {"type": "tcp", "host": "127.0.0.1", "port": port}}),
    ];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_queue.backoff_unit_ms = 50;
    });
    let mut c = server.v2("default");
    ok(c.create("order", "o-1", "order_created", r#"{"n":0}"#));
    for n in 1..3 {
        ok(c.apply("order", "o-1", "order_updated", &format!(r#"{{"n":{n}}}"#)));
    }
    let wait = |total: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = connections.lock().expect("lines").clone();
            if all.iter().map(Vec::len).sum::<usize>() >= total {
                return all;
            }
            assert!(Instant::now() < deadline, "tcp lines missing: {all:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let all = wait(3);
    assert_eq!(all.len(), 1, "one kept-alive connection for the first jobs");
    let ns: Vec<u64> = all[0]
        .iter()
        .map(|v| v["event"]["payload"]["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(ns, [0, 1, 2]);
    assert_eq!(all[0][0]["tenant"], json!("default"));
    assert!(all[0][0].get("state").is_none(), "event-only");
    // The receiver dropped that connection: later jobs arrive on a new one (a write into the
    // dead socket may be lost by TCP, which at-least-once turns into a retry only on error; so
    // send until one arrives on a new connection).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 3;
    loop {
        ok(c.apply("order", "o-1", "order_updated", &format!(r#"{{"n":{n}}}"#)));
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
        let all = connections.lock().expect("lines").clone();
        if all.len() >= 2 && !all[1].is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect: {all:?}");
    }
}

#[test]
fn a_process_plugin_installed_late_gets_the_jobs_that_waited() {
    use eventdbx_server::plugins::process::current_target;
    let scratch = tempfile::tempdir().expect("scratch");
    let out = scratch.path().join("late.jsonl");
    let defs = vec![
        json!({"enabled": true, "name": "late", "payload_mode": "event-only",
        "config": {"type": "process", "name": "late", "version": "2.0.0",
                   "env": {"EVENTDBX_ECHO_PLUGIN_OUT": out.display().to_string()}}}),
    ];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_queue.backoff_unit_ms = 50;
        config.plugin_max_attempts = 1000;
    });
    let mut c = server.v2("default");
    let admin = server.token(&["*.*"], &[]);
    ok(c.create("order", "o-1", "order_created", "{}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = ok(c.admin_as(&admin, "queue.list", json!({"plugin": "late"})));
        let error = listed["jobs"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if error.contains("is not installed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no install error recorded: {listed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Installing the binary is enough: the waiting job is delivered on its next retry.
    let bin = server
        .data_dir()
        .join("plugins/late/2.0.0")
        .join(current_target());
    std::fs::create_dir_all(&bin).expect("registry");
    std::fs::copy(env!("CARGO_BIN_EXE_eventdbx-echo-plugin"), bin.join("late")).expect("install");
    let lines = wait_echoed(&out, 1);
    assert_eq!(lines[0]["aggregate_id"], json!("o-1"));
}
