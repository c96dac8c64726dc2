//! Issue 17's acceptance run: three `dbx` servers on one PostgreSQL database (one workspace's
//! `.dbx` copied to the others, so one token opens all three), 48 concurrent writers spread over
//! them, half of them on 8 shared hot aggregates with expected versions. One server is SIGKILLed
//! mid-run while it holds a claimed plugin job. Afterwards: every acknowledged event is stored
//! exactly once, each aggregate's versions are gapless, every failure a living server gave was
//! `version_conflict`, and the dead server's job was delivered by another after its lease.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use eventdbx_client::{Client, ClientConfig, EventsQuery, KnownV2Hosts, Write as ClientWrite};
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::Value;

use crate::workspace::{dbx_in, serve, text, Serving};

const WRITERS: usize = 48;
const HOT_AGGREGATES: usize = 8;
/// Acknowledged writes each writer makes (unless its server dies first).
const WRITES_EACH: usize = 10;
/// The SIGKILL comes once this many writes are acknowledged: mid-run.
const KILL_AFTER_ACKS: usize = WRITERS * WRITES_EACH / 3;
/// A safety net for the waits on conditions below, far beyond what a loaded machine needs.
const PATIENCE: Duration = Duration::from_secs(50);

/// An HTTP receiver that holds every request until [`Receiver::release`], so a server's
/// delivery is provably in flight (its job claimed) when the test acts; a request whose sender
/// is gone by then (the killed server) is not counted as delivered.
#[derive(Default)]
struct Receiver {
    state: Mutex<Received>,
    changed: Condvar,
}

#[derive(Default)]
struct Received {
    held: bool,
    in_flight: usize,
    bodies: Vec<Value>,
}

impl Receiver {
    fn start(listener: TcpListener) -> Arc<Receiver> {
        let receiver = Arc::new(Receiver::default());
        receiver.state.lock().expect("state").held = true;
        let shared = Arc::clone(&receiver);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let receiver = Arc::clone(&shared);
                std::thread::spawn(move || receiver.answer(stream));
            }
        });
        receiver
    }

    fn answer(&self, mut stream: TcpStream) {
        let Some(body) = read_request(&mut stream) else {
            return;
        };
        let mut state = self.state.lock().expect("state");
        state.in_flight += 1;
        self.changed.notify_all();
        while state.held {
            state = self.changed.wait(state).expect("state");
        }
        state.in_flight -= 1;
        // A sender that died while held has closed its end: its delivery did not happen.
        let mut probe = [0u8; 1];
        let _ = stream.set_nonblocking(true);
        if matches!(stream.peek(&mut probe), Ok(0)) {
            return;
        }
        state.bodies.push(body);
        drop(state);
        let _ = stream.set_nonblocking(false);
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    }

    /// Waits until `n` requests are held.
    fn wait_in_flight(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.state.lock().expect("state");
        while state.in_flight < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no delivery reached the receiver");
            state = self.changed.wait_timeout(state, left).expect("state").0;
        }
    }

    fn release(&self) {
        self.state.lock().expect("state").held = false;
        self.changed.notify_all();
    }

    fn bodies(&self) -> Vec<Value> {
        self.state.lock().expect("state").bodies.clone()
    }
}

/// One HTTP request's JSON body.
fn read_request(stream: &mut TcpStream) -> Option<Value> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
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
            return serde_json::from_slice(&data[end + 4..end + 4 + length]).ok();
        }
    }
}

/// A running server of the run: its process and ports.
struct Node {
    serving: Serving,
    port: u16,
}

fn start_node(dir: &Path) -> Node {
    let (serving, port, _, _) = serve(dir, "warn");
    Node { serving, port }
}

fn dbx_ok(dir: &Path, args: &[&str]) -> String {
    let output = dbx_in(dir).args(args).output().expect("dbx runs");
    assert!(
        output.status.success(),
        "dbx {args:?}: {}{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    text(&output.stdout)
}

/// Copies a workspace's `.dbx` (config, keys, token, plugin definitions) into a new directory.
fn copy_workspace(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join(".dbx"))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

fn client_config(token: &str, port: u16) -> ClientConfig {
    ClientConfig::new(token, "default")
        .port(port)
        .known_v2_hosts(KnownV2Hosts::Disabled)
}

/// What one writer saw: its acknowledged (aggregate, version, marker) and its failures.
#[derive(Default)]
struct Outcome {
    acked: Vec<(String, u64, String)>,
    conflicts: usize,
    /// Failures other than `version_conflict` (from a living server: none is expected).
    other_errors: Vec<String>,
}

fn aggregate_of(writer: usize) -> String {
    if writer < WRITERS / 2 {
        format!("hot-{}", writer % HOT_AGGREGATES)
    } else {
        format!("cold-{writer}")
    }
}

/// One writer: `WRITES_EACH` acknowledged appends, a hot writer with the version it read as
/// the expected version (a lost race is `version_conflict`, then it reads again). Stops at the
/// first failure that is not a conflict (its server died).
async fn writer(
    writer: usize,
    config: ClientConfig,
    acks: Arc<(AtomicUsize, std::sync::mpsc::SyncSender<()>)>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(client) = Client::connect(config).await else {
        outcome.other_errors.push("connect".into());
        return outcome;
    };
    let aggregate = aggregate_of(writer);
    let hot = writer < WRITERS / 2;
    let mut n = 0;
    while outcome.acked.len() < WRITES_EACH {
        n += 1;
        let marker = format!("w{writer}-{n}");
        let mut write = ClientWrite::apply(
            "account",
            aggregate.as_str(),
            "touched",
            format!(r#"{{"w":"{marker}"}}"#),
        );
        if hot {
            let found = match client.get("account", &aggregate).await {
                Ok(found) => found,
                Err(err) => {
                    outcome.other_errors.push(format!("get: {err}"));
                    return outcome;
                }
            };
            let state: Value =
                serde_json::from_str(found.json.as_deref().unwrap_or("{}")).unwrap_or_default();
            write = write.expected_version(state["version"].as_u64().unwrap_or(0));
        }
        match client.write(write).await {
            Ok(written) => {
                let event = written.value().ok().flatten().unwrap_or_default();
                let version = event["version"].as_u64().expect("the event's version");
                outcome.acked.push((aggregate.clone(), version, marker));
                acks.0.fetch_add(1, Ordering::AcqRel);
                let _ = acks.1.try_send(());
            }
            Err(err) if err.code() == "version_conflict" => outcome.conflicts += 1,
            Err(err) => {
                outcome.other_errors.push(format!("{err}"));
                return outcome;
            }
        }
    }
    outcome
}

/// Every stored event of one aggregate, in version order.
async fn stored_events(client: &Client, aggregate: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut query = EventsQuery::new("account", aggregate);
    query.take = Some(1000);
    loop {
        let page = client.events(&query).await.expect("events");
        let batch: Vec<Value> = serde_json::from_str(&page.events_json).expect("events json");
        events.extend(batch);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return events,
        }
    }
}

#[test]
fn three_servers_one_database_48_writers_and_a_sigkill() {
    let cluster = TestCluster::shared();
    let url = cluster.database("cli_scale_out");
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let first = dirs[0].path();
    dbx_ok(first, &["init", "--postgres", &url]);
    let config_path = first.join(".dbx/config.toml");
    let mut config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "bind_addr = \"127.0.0.1:6363\"",
            "bind_addr = \"127.0.0.1:0\"",
        )
        .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n");
    // A short lease so the dead server's job is taken over within the test.
    config.push_str("\n[plugin_queue]\nbackoff_unit_ms = 50\nlease_ms = 1500\n");
    std::fs::write(&config_path, config).expect("config");
    let token = std::fs::read_to_string(first.join(".dbx/cli.token"))
        .expect("token")
        .trim()
        .to_owned();

    // The plugin's endpoint, holding every delivery until released.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().expect("addr").port()
    );
    let receiver = Receiver::start(listener);

    // The first server alone: its plugin, then one write whose job only it can claim.
    let mut doomed = start_node(first);
    let port_arg = doomed.port.to_string();
    dbx_ok(
        first,
        &[
            "plugin",
            "add",
            "hook",
            "--kind",
            "http",
            "--endpoint",
            &endpoint,
            "--port",
            &port_arg,
        ],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(client_config(&token, doomed.port))
            .await
            .expect("connect");
        client
            .create("probe", "p-0", "created", "{}")
            .await
            .expect("create the probe");
        for writer in 0..WRITERS {
            let aggregate = aggregate_of(writer);
            if client
                .get("account", &aggregate)
                .await
                .expect("get")
                .json
                .is_none()
            {
                client
                    .create("account", &aggregate, "opened", "{}")
                    .await
                    .expect("create");
            }
        }
    });
    receiver.wait_in_flight(1);

    // The other two servers: copies of the workspace, each its own Snowflake worker id.
    for (n, dir) in dirs.iter().enumerate().skip(1) {
        copy_workspace(first, dir.path());
        dbx_ok(
            dir.path(),
            &["config", "--snowflake-worker-id", &n.to_string()],
        );
    }
    let survivors = [start_node(dirs[1].path()), start_node(dirs[2].path())];
    let ports = [doomed.port, survivors[0].port, survivors[1].port];

    let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(WRITERS * WRITES_EACH);
    let acks = Arc::new((AtomicUsize::new(0), ack_tx));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let config = client_config(&token, ports[w % 3]);
            runtime.spawn(writer(w, config, Arc::clone(&acks)))
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acks.0.load(Ordering::Acquire) < KILL_AFTER_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            ack_rx.recv_timeout(left).is_ok(),
            "writers stalled before the kill"
        );
    }
    doomed.serving.0.kill().expect("SIGKILL the first server");
    doomed.serving.0.wait().expect("reap it");
    receiver.release();

    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("writer task"));
        }
        outcomes
    });
    let mut acked: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut conflicts = 0;
    for (w, outcome) in outcomes.iter().enumerate() {
        conflicts += outcome.conflicts;
        if w % 3 != 0 {
            assert!(
                outcome.other_errors.is_empty() && outcome.acked.len() == WRITES_EACH,
                "writer {w} on a living server: {:?}",
                outcome.other_errors
            );
        }
        for (aggregate, version, marker) in &outcome.acked {
            acked
                .entry(aggregate.clone())
                .or_default()
                .push((*version, marker.clone()));
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();

    runtime.block_on(async {
        let reader = Client::connect(client_config(&token, ports[1]))
            .await
            .expect("connect");
        for (aggregate, writes) in &acked {
            let events = stored_events(&reader, aggregate).await;
            let versions: Vec<u64> = events
                .iter()
                .map(|e| e["version"].as_u64().expect("version"))
                .collect();
            let expected: Vec<u64> = (1..=events.len() as u64).collect();
            assert_eq!(versions, expected, "{aggregate}: versions gapless");
            let mut markers: HashMap<String, usize> = HashMap::new();
            for event in &events {
                if let Some(marker) = event["payload"]["w"].as_str() {
                    *markers.entry(marker.to_owned()).or_default() += 1;
                }
            }
            for (version, marker) in writes {
                let stored = &events[*version as usize - 1];
                assert_eq!(
                    stored["payload"]["w"],
                    marker.as_str(),
                    "{aggregate} v{version}: the acknowledged event"
                );
                assert_eq!(markers.get(marker), Some(&1), "{marker} stored once");
            }
        }
        // A stale expected version is refused as a conflict by every living server.
        for port in &ports[1..] {
            let client = Client::connect(client_config(&token, *port))
                .await
                .expect("connect");
            let refused = client
                .write(ClientWrite::apply("account", "hot-0", "touched", "{}").expected_version(1))
                .await
                .expect_err("a stale version");
            assert_eq!(refused.code(), "version_conflict", "{refused}");
        }
    });

    // The plugin: every job delivered, the dead server's one by another after its lease.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let open = cluster.sql(
            "cli_scale_out",
            "SELECT count(*) FROM plugin_jobs WHERE status <> 'done'",
        );
        if open.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs not delivered",
            open.trim()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe = cluster.sql(
        "cli_scale_out",
        "SELECT body::json->>'attempts' FROM plugin_jobs \
         WHERE body::json->>'aggregate_id' = 'p-0'",
    );
    let attempts: u32 = probe.trim().parse().expect("the probe's job");
    assert!(
        attempts >= 2,
        "the job the killed server held was taken over after its lease ({attempts} attempts)"
    );
    let delivered = receiver.bodies();
    let seen = |aggregate: &str, version: u64| {
        delivered
            .iter()
            .any(|b| b["event"]["aggregate_id"] == aggregate && b["event"]["version"] == version)
    };
    assert!(seen("p-0", 1), "the probe's event was delivered");
    for (aggregate, writes) in &acked {
        for (version, _) in writes {
            assert!(
                seen(aggregate, *version),
                "{aggregate} v{version} delivered"
            );
        }
    }
    eprintln!(
        "scale-out run: {total} acknowledged writes, {conflicts} version conflicts, {} deliveries",
        delivered.len()
    );
    drop(survivors);
}
