//! Process and TCP plugins against a real server: every payload mode through a child process
//! that survives being killed, a process plugin installed late, and JSON lines over a kept-alive
//! TCP connection that reconnects.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::receiver::{event_id_of, targets, write_plugins};
use crate::support::{ok, TestServer, WriteOpts, PATIENCE};

/// Reads the echo plugin's JSON lines.
fn echoed(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_echoed(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
        let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
    let deadline = Instant::now() + PATIENCE;
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
