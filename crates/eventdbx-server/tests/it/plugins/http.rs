//! HTTP plugins and publish targets (the numbered cases below are the acceptance items they
//! come from): payload modes, routing, broadcast, refusals before writing, background delivery
//! with retries and dead letters, `admin` queue retry, priority order after an outage, archive
//! and restore jobs, https endpoints with a private certificate authority.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::receiver::{
    event_id_of, http_exchange, http_plugin, scrape_metrics, targets, write_plugins, Receiver,
    TestCa,
};
use crate::support::{err, ok, TestServer, WriteOpts, PATIENCE};

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
    let deadline = Instant::now() + PATIENCE;
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
    // The first delivery is held unanswered: the write is acknowledged all the same (a write
    // held by delivery would never be).
    rx.hold();
    let created = ok(c.create("order", "o-1", "order_created", r#"{"a":1}"#));
    rx.release();
    let event_id = created["version"].clone();
    assert_eq!(event_id, json!(1));
    // Three attempts, about 1 and 2 units apart, then dead.
    let deadline = Instant::now() + PATIENCE;
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
    // Retries never come early; the upper bounds only catch a backoff in the wrong unit (a
    // loaded machine may add seconds, not minutes).
    assert!(
        gap1 >= Duration::from_millis(unit) && gap1 < Duration::from_millis(100 * unit),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(2 * unit) && gap2 < Duration::from_millis(100 * unit),
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
    let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
    let mut more = defs.clone();
    more.push(http_plugin(&rx, "late", "event-only", true));
    write_plugins(&server.data_dir(), &more);
    let deadline = Instant::now() + PATIENCE;
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
    // The first delivery attempt is held unanswered through all the writes: each is
    // acknowledged regardless (a write waiting on delivery never would be).
    rx.hold();
    let started = Instant::now();
    let mut expected: Vec<(usize, usize)> = Vec::new();
    for n in 0..100 {
        let priority = priorities[n % 3];
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
        let rank = 2 - n % 3; // high 0, normal 1, low 2
        expected.push((rank, n));
    }
    let total = started.elapsed();
    assert!(rx.delivered("sink").is_empty());
    rx.release();
    rx.status.store(200, Ordering::SeqCst);
    let got = rx.wait_for("sink", 100);
    expected.sort();
    let order: Vec<u64> = got
        .iter()
        .map(|r| r.body["event"]["payload"]["n"].as_u64().expect("n"))
        .collect();
    let wanted: Vec<u64> = expected.iter().map(|(_, n)| *n as u64).collect();
    assert_eq!(order, wanted, "high, normal, low, then oldest first");
    eprintln!("100 writes during the outage in {total:?}");
}

#[test]
fn https_endpoints_trust_the_configured_ca_and_fail_clearly_without_it() {
    let ca = TestCa::new("eventdbx test CA");
    let other = TestCa::new("another test CA");
    let rx = Receiver::start_https(&ca);
    let dir = tempfile::tempdir().expect("ca dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("ca file");
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, &other.pem).expect("other ca file");
    let missing_file = dir.path().join("missing.pem");
    let trusting = |name: &str, file: &std::path::Path| {
        let mut def = http_plugin(&rx, name, "all", true);
        def["config"]["ca_file"] = json!(file);
        def["config"]["headers"] = json!({"X-Test": "tls"});
        def
    };
    let defs = vec![
        trusting("secure", &ca_file),
        trusting("wrong-ca", &other_file),
        trusting("no-ca", &missing_file),
    ];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_max_attempts = 1000;
        config.plugin_queue.backoff_unit_ms = 20;
    });
    let mut c = server.v2("default");
    let admin = server.token(&["*.*"], &[]);

    // The receiver's certificate is signed by the configured authority: delivered over TLS.
    ok(c.create_with(
        "order",
        "o-1",
        "order_created",
        r#"{"status":"new"}"#,
        &targets(&[("secure", None, None)]),
    ));
    let got = rx.wait_for("secure", 1);
    assert_eq!(got[0].body["event"]["event_type"], json!("order_created"));
    assert_eq!(got[0].body["state"]["state"]["status"], json!("new"));
    assert_eq!(
        got[0].headers.get("x-test").map(String::as_str),
        Some("tls")
    );

    // Another authority: every attempt fails on the certificate and is retried; a CA file that
    // cannot be read fails each attempt with its path.
    let applied = ok(c.apply_with(
        "order",
        "o-1",
        "order_updated",
        r#"{"n":1}"#,
        &targets(&[("wrong-ca", None, None), ("no-ca", None, None)]),
    ));
    let missing = missing_file.display().to_string();
    for (plugin, cause) in [("wrong-ca", "certificate"), ("no-ca", missing.as_str())] {
        let deadline = Instant::now() + PATIENCE;
        let job = loop {
            let listed = ok(c.admin_as(&admin, "queue.list", json!({"plugin": plugin})));
            let job = listed["jobs"].as_array().and_then(|j| j.first()).cloned();
            if let Some(job) = job.filter(|j| j["attempts"].as_u64() >= Some(2)) {
                break job;
            }
            assert!(Instant::now() < deadline, "{plugin}: no retried job");
            std::thread::sleep(Duration::from_millis(20));
        };
        let error = job["last_error"].as_str().expect("last_error");
        assert!(error.contains("http plugin"), "{plugin}: {error}");
        eprintln!("{plugin}: {error}");
        assert!(error.contains(cause), "{plugin}: {error}");
    }
    assert!(
        rx.attempts("wrong-ca").is_empty(),
        "no request is sent to an endpoint whose certificate is not trusted"
    );
    // The server goes on serving.
    assert_eq!(ok(c.get("order", "o-1"))["aggregate"]["version"], json!(2));

    // Trusting the right authority, the job still pending is delivered on its next attempt.
    let fixed = vec![
        trusting("secure", &ca_file),
        trusting("wrong-ca", &ca_file),
        trusting("no-ca", &missing_file),
    ];
    write_plugins(&server.data_dir(), &fixed);
    let got = rx.wait_event("wrong-ca", &event_id_of(&applied));
    assert_eq!(got[0].body["event"]["payload"]["n"], json!(1));
}

#[test]
fn a_redirect_is_a_failed_delivery_and_is_not_followed() {
    let rx = Receiver::start();
    rx.status.store(307, Ordering::SeqCst);
    let defs = vec![http_plugin(&rx, "moved", "all", true)];
    let server = TestServer::start(|config| {
        write_plugins(&config.data_dir, &defs);
        config.plugin_max_attempts = 1;
    });
    let mut c = server.v2("default");
    let admin = server.token(&["*.*"], &[]);
    ok(c.create("order", "o-1", "order_created", "{}"));
    let deadline = Instant::now() + PATIENCE;
    let dead = loop {
        let listed = ok(c.admin_as(&admin, "queue.list", json!({"status": "dead"})));
        if let Some(job) = listed["jobs"].as_array().and_then(|j| j.first()).cloned() {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the redirected job never dead-lettered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        dead["last_error"],
        json!("http plugin request failed (307): redirect to /hook/elsewhere refused (redirects are not followed)")
    );
    assert_eq!(rx.attempts("moved").len(), 1);
    assert!(
        rx.attempts("elsewhere").is_empty(),
        "the redirect was followed"
    );
}

#[test]
fn health_answers_json_and_other_paths_and_methods_are_refused() {
    let server = TestServer::start(|_| {});
    let health = http_exchange(&server, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    let (head, body) = health.split_once("\r\n\r\n").expect("head and body");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).expect("health json");
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(body["durability"], json!("relaxed"));
    assert!(body["server_key_fingerprint"].is_string(), "{body}");

    let metrics = scrape_metrics(&server);
    assert!(
        metrics
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE eventdbx_requests_total counter\n"),
        "{metrics}"
    );

    let missing = http_exchange(&server, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.ends_with("\r\n\r\nnot found\n"), "{missing}");
    let posted = http_exchange(
        &server,
        b"POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    );
    assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");
    assert!(posted.ends_with("\r\n\r\nmethod not allowed\n"), "{posted}");
}
