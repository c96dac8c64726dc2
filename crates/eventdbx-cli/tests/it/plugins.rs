//! `dbx plugin …` and `dbx queue …` against a real `dbx serve`, and the durable outbox across a
//! SIGKILL of the server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace::{text, Workspace};

/// An HTTP receiver on `listener` that answers 200 and records every JSON body.
fn receive(listener: TcpListener) -> Arc<Mutex<Vec<Value>>> {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let body = serde_json::from_slice(&data[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    sink.lock().expect("bodies").push(body);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    break;
                }
            }
        }
    });
    bodies
}

/// How long a poll for a delivery or a job state goes on before the test gives up: only a
/// safety net, far beyond what a loaded machine needs.
const PATIENCE: Duration = Duration::from_secs(120);

/// Starts listening on the reserved port (a blocking listener for [`receive`]).
fn listen(reserved: tokio::net::TcpSocket) -> TcpListener {
    // Registering the listener needs a reactor; it is handed back as a plain std listener.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(async { reserved.listen(16) })
        .expect("listen")
        .into_std()
        .expect("std listener");
    listener.set_nonblocking(false).expect("blocking");
    listener
}

#[test]
fn plugin_and_queue_commands_and_jobs_survive_sigkill() {
    let mut ws = Workspace::start();
    // A fast retry schedule for the test only (the default unit is 1 s).
    let config_path = ws.dir.path().join(".dbx/config.toml");
    let mut config = std::fs::read_to_string(&config_path).expect("config");
    config.push_str("\n[plugin_queue]\nbackoff_unit_ms = 100\n");
    std::fs::write(&config_path, config).expect("config");
    ws.kill_and_restart();

    // An endpoint nobody listens on yet: its port is bound but not listening, so connections
    // are refused and nothing else can take the port before the endpoint comes up.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let endpoint = format!("http://127.0.0.1:{port}/hook");
    let added = ws.json(&[
        "plugin",
        "add",
        "hook",
        "--kind",
        "http",
        "--endpoint",
        &endpoint,
        "--header",
        "Authorization=Bearer secret-value",
    ]);
    assert_eq!(added["name"], "hook");
    let listed = ws.dbx(&["plugin", "list"]);
    assert!(listed.status.success());
    let listing = text(&listed.stdout);
    assert!(
        listing.contains("hook") && listing.contains("http"),
        "{listing}"
    );
    let listed = ws.json(&["plugin", "list"]);
    assert_eq!(
        listed[0]["config"]["headers"]["Authorization"],
        "<redacted>"
    );
    assert!(!listed.to_string().contains("secret-value"));
    let refused = ws.fails(&["plugin", "enable", "nope"]);
    assert!(
        refused.contains("plugin 'nope' is not configured"),
        "{refused}"
    );
    let test = ws.fails(&["plugin", "test", "hook"]);
    assert!(test.contains("plugin test failed"), "{test}");

    // A write while the endpoint is down is acknowledged; its job waits (still pending below: a
    // write that waited on delivery would have seen it fail for good first).
    let created = ws.json(&[
        "aggregate",
        "create",
        "order",
        "o-93",
        "--event",
        "order_created",
        "--field",
        "status=new",
    ]);
    assert_eq!(created["aggregate_id"], "o-93");
    let queued = ws.json(&["queue", "list", "--plugin", "hook"]);
    assert_eq!(queued["jobs"].as_array().map(Vec::len), Some(1), "{queued}");
    let event_id = queued["jobs"][0]["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        queued["counts"]["pending"].as_u64().unwrap_or(0)
            + queued["counts"]["processing"].as_u64().unwrap_or(0),
        1
    );

    // SIGKILL with the job pending; restart; bring the endpoint up.
    ws.kill_and_restart();
    let bodies = receive(listen(reserved));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = bodies.lock().expect("bodies").clone();
        if let Some(body) = got.first() {
            assert_eq!(body["event"]["metadata"]["event_id"], event_id.as_str());
            assert_eq!(body["event"]["aggregate_id"], "o-93");
            assert_eq!(body["tenant"], "default");
            // At-least-once: any duplicate carries the same event id.
            assert!(got
                .iter()
                .all(|b| b["event"]["metadata"]["event_id"] == event_id.as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not delivered after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let done = ws.json(&["queue", "list", "--status", "done"]);
        if done["jobs"].as_array().is_some_and(|j| j.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "job not marked done: {done}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A replay through the CLI delivers it again.
    let before = bodies.lock().expect("bodies").len();
    let replayed = ws.json(&["plugin", "replay", "hook", "--event-id", &event_id]);
    assert_eq!(replayed["replayed"], 1);
    let deadline = Instant::now() + PATIENCE;
    while bodies.lock().expect("bodies").len() <= before {
        assert!(Instant::now() < deadline, "replay not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + PATIENCE;
    while ws.json(&["queue", "list", "--status", "done"])["jobs"]
        .as_array()
        .is_none_or(|j| j.len() != 1)
    {
        assert!(Instant::now() < deadline, "replayed job not done");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ws.json(&["queue", "clear-done"])["removed"], 1);
    assert_eq!(ws.json(&["plugin", "disable", "hook"])["enabled"], false);
    assert_eq!(ws.json(&["plugin", "remove", "hook"])["removed"], true);
    assert!(ws
        .json(&["plugin", "list"])
        .as_array()
        .is_some_and(Vec::is_empty));
    assert!(ws.json(&["queue", "retry"])["retried"] == 0);
}
