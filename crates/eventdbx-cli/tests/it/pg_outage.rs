//! Issue 17's outage run: PostgreSQL stopped (`pg_ctl stop -m fast`) for 5 s under a write
//! load through `dbx serve`, then started again on the same port. Requests during the outage
//! fail with `storage` and a message that says to retry later; `/health` says `degraded` (503)
//! with the cause, then `ok`; writes resume by themselves on the same client connections; every
//! acknowledged event is stored exactly once.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventdbx_client::{Client, ClientConfig, EventsQuery, KnownV2Hosts};
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::Value;

use crate::workspace::{dbx_in, serve, text};

const WRITERS: usize = 4;
/// How long the database stays down: the outage the issue names, not a synchronisation.
const OUTAGE: Duration = Duration::from_secs(5);
/// A safety net for the waits on conditions below.
const PATIENCE: Duration = Duration::from_secs(40);

/// `GET /health`: the status code and the JSON body.
fn health(http: &str) -> (u16, Value) {
    let Ok(mut stream) = std::net::TcpStream::connect(http) else {
        return (0, Value::Null);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET /health HTTP/1.1\r\nhost: {http}\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// Polls `/health` until it answers `status`.
fn wait_health(http: &str, status: u16) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, body) = health(http);
        if code == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {code} {body}, waiting for {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Blocks until `counter` reaches `target`.
fn wait_count(counter: &AtomicUsize, target: usize, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::Acquire) < target {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    acks: AtomicUsize,
    errors: AtomicUsize,
    /// Acknowledged (aggregate, version, marker).
    acked: Mutex<Vec<(String, u64, String)>>,
    /// Every failure's code and message.
    failures: Mutex<Vec<(String, String, bool)>>,
}

async fn write_loop(writer: usize, client: Client, load: Arc<Load>) {
    let aggregate = format!("o-{writer}");
    let mut n = 0;
    while !load.stop.load(Ordering::Acquire) {
        n += 1;
        let marker = format!("w{writer}-{n}");
        match client
            .apply(
                "order",
                &aggregate,
                "touched",
                &format!(r#"{{"w":"{marker}"}}"#),
            )
            .await
        {
            Ok(written) => {
                let event = written.value().ok().flatten().unwrap_or_default();
                let version = event["version"].as_u64().expect("version");
                load.acked
                    .lock()
                    .expect("acked")
                    .push((aggregate.clone(), version, marker));
                load.acks.fetch_add(1, Ordering::AcqRel);
            }
            Err(err) => {
                load.failures.lock().expect("failures").push((
                    err.code().to_owned(),
                    err.message().to_owned(),
                    err.is_retriable(),
                ));
                load.errors.fetch_add(1, Ordering::AcqRel);
                // Pacing, not synchronisation: a failed write is tried again a little later
                // rather than in a tight loop against a server that answers at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[test]
fn postgres_stopped_for_five_seconds_under_load() {
    let cluster = TestCluster::private();
    let url = cluster.database("outage");
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx_in(dir.path())
        .args(["init", "--postgres", &url])
        .output()
        .expect("dbx init");
    assert!(init.status.success(), "{}", text(&init.stderr));
    let config_path = dir.path().join(".dbx/config.toml");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "bind_addr = \"127.0.0.1:6363\"",
            "bind_addr = \"127.0.0.1:0\"",
        )
        .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n");
    std::fs::write(&config_path, config).expect("config");
    let token = std::fs::read_to_string(dir.path().join(".dbx/cli.token"))
        .expect("token")
        .trim()
        .to_owned();
    let (_serving, port, banner, _) = serve(dir.path(), "warn");
    let http = banner
        .split("http ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("http address in {banner}"))
        .to_owned();
    assert_eq!(wait_health(&http, 200)["status"], "ok");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = Arc::new(Load::default());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let load = Arc::clone(&load);
            let config = ClientConfig::new(token.clone(), "default")
                .port(port)
                .known_v2_hosts(KnownV2Hosts::Disabled);
            runtime.spawn(async move {
                let client = Client::connect(config).await.expect("connect");
                client
                    .create("order", &format!("o-{writer}"), "opened", "{}")
                    .await
                    .expect("create");
                write_loop(writer, client, load).await;
            })
        })
        .collect();
    wait_count(&load.acks, 40, "no writes before the outage");

    let stopped_at = Instant::now();
    cluster.stop();
    let errors_before = load.errors.load(Ordering::Acquire);
    let down = wait_health(&http, 503);
    assert_eq!(down["status"], "degraded", "{down}");
    let cause = down["storage_error"].as_str().unwrap_or_default();
    assert!(cause.contains("retry later"), "{down}");
    wait_count(
        &load.errors,
        errors_before + WRITERS,
        "writes kept succeeding with the database down",
    );
    std::thread::sleep(OUTAGE.saturating_sub(stopped_at.elapsed()));
    let acks_down = load.acks.load(Ordering::Acquire);
    cluster.restart();

    assert_eq!(wait_health(&http, 200)["status"], "ok");
    wait_count(
        &load.acks,
        acks_down + 40,
        "writes did not resume after the database came back",
    );
    load.stop.store(true, Ordering::Release);
    runtime.block_on(async {
        for task in tasks {
            task.await.expect("writer");
        }
    });

    // What the client got during the outage: `storage`, saying to retry later; never a
    // wrong answer, never a closed session.
    let failures = load.failures.lock().expect("failures").clone();
    assert!(!failures.is_empty());
    for (code, message, _) in &failures {
        assert_eq!(code, "storage", "{message}");
        assert!(message.contains("(retry later)"), "{message}");
    }
    let sample = &failures[0];
    eprintln!(
        "outage: {} failures, e.g. code {:?}, message {:?}, client is_retriable() = {}",
        failures.len(),
        sample.0,
        sample.1,
        sample.2
    );

    // Nothing acknowledged was lost: every acknowledged event is stored once, versions gapless.
    let acked = load.acked.lock().expect("acked").clone();
    let mut by_aggregate: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (aggregate, version, marker) in acked {
        by_aggregate
            .entry(aggregate)
            .or_default()
            .push((version, marker));
    }
    runtime.block_on(async {
        let client = Client::connect(
            ClientConfig::new(token.clone(), "default")
                .port(port)
                .known_v2_hosts(KnownV2Hosts::Disabled),
        )
        .await
        .expect("connect");
        for (aggregate, writes) in &by_aggregate {
            let mut query = EventsQuery::new("order", aggregate.as_str());
            query.take = Some(1000);
            let mut events: Vec<Value> = Vec::new();
            loop {
                let page = client.events(&query).await.expect("events");
                events.extend(
                    serde_json::from_str::<Vec<Value>>(&page.events_json).expect("events json"),
                );
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
            let versions: Vec<u64> = events
                .iter()
                .filter_map(|e| e["version"].as_u64())
                .collect();
            assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
            let mut markers: HashMap<&str, usize> = HashMap::new();
            for event in &events {
                if let Some(marker) = event["payload"]["w"].as_str() {
                    *markers.entry(marker).or_default() += 1;
                }
            }
            for (version, marker) in writes {
                assert_eq!(
                    events[*version as usize - 1]["payload"]["w"],
                    marker.as_str()
                );
                assert_eq!(markers.get(marker.as_str()), Some(&1), "{marker}");
            }
        }
    });
}
