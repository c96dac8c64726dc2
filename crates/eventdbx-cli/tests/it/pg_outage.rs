//! Issue 17's outage run: PostgreSQL stopped (`pg_ctl stop -m fast`) for 5 s under a write
//! load through `dbx serve`, then started again on the same port. Requests during the outage
//! fail with `unavailable` (nothing was done, retriable: the client retries it) or, for a
//! write whose connection was lost at its COMMIT, with `storage` saying the outcome is unknown;
//! `/health` says `degraded` (503) with the cause, then `ok`; writes resume by themselves on the
//! same client connections; every acknowledged event is stored exactly once and no write
//! answered `unavailable` is stored. Clients with retries configured, the Rust client and the
//! Python SDK (`tests/peers/outage_client.py`, run with `EVENTDBX_TEST_PYTHON`), make safe calls
//! and a write during the outage: none surfaces an error, each is answered once the database is
//! back (`docs/errors.md`, `unavailable`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventdbx_client::{Client, ClientConfig, EventsQuery, KnownV2Hosts, ListQuery, RetryOptions};
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

/// A write's failure: code, message, `is_retriable()`, the write's marker.
type Failure = (String, String, bool, String);

/// Retries enough to outlast the outage and the restart (up to 50 s of waiting).
fn patient_retries() -> RetryOptions {
    RetryOptions {
        attempts: 200,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(250),
        jitter: false,
    }
}

/// The Python interpreter with the SDK installed: `EVENTDBX_TEST_PYTHON`, else the workspace's
/// `.venv` (which `scripts/test.sh` creates and installs the SDK into).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("EVENTDBX_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the SDK: set EVENTDBX_TEST_PYTHON or run scripts/setup.sh and \
         `pip install -e .` (crates/eventdbx-py/README.md)"
    );
    venv
}

/// The Python SDK's client process, talking one line at a time.
struct PythonClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PythonClient {
    fn start(port: u16, token: &str) -> PythonClient {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/outage_client.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(token)
            .env("EVENTDBX_KNOWN_V2_HOSTS", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = PythonClient {
            child,
            stdin,
            stdout,
        };
        client.expect_line("ready");
        client
    }

    /// The next line; on EOF, fails with the process's stderr (an SDK missing from
    /// `EVENTDBX_TEST_PYTHON`, a failed assertion of the script).
    fn line(&mut self) -> String {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let mut stderr = String::new();
            if let Some(mut err) = self.child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let status = self.child.wait().expect("python exits");
            panic!(
                "the Python client ended ({status}); it needs the SDK built from this tree in \
                 {} (`pip install -e .`):\n{stderr}",
                python().display()
            );
        }
        line.trim().to_owned()
    }

    fn expect_line(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected, "from the Python client");
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the Python client");
    }

    /// The final JSON line, and the process's clean exit.
    fn finish(mut self) -> Value {
        let results: Value = serde_json::from_str(&self.line()).expect("results JSON");
        let status = self.child.wait().expect("python exits");
        assert!(status.success(), "the Python client failed: {status}");
        results
    }
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Writers whose aggregate is created (before the outage, which their `create` must not meet).
    created: AtomicUsize,
    acks: AtomicUsize,
    errors: AtomicUsize,
    /// Acknowledged (aggregate, version, marker).
    acked: Mutex<Vec<(String, u64, String)>>,
    /// Every failure's code, message, retriability and marker.
    failures: Mutex<Vec<Failure>>,
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
                    marker,
                ));
                load.errors.fetch_add(1, Ordering::AcqRel);
                // Pacing, not synchronisation: a failed write is tried again a little later
                // rather than in a tight loop against a server that answers at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a retrying client did during the outage: a call without retries first (answered
/// `unavailable`: the database was down), then `get`, `list` and a write with retries, all
/// answered once the database is back.
struct PatientCalls {
    impatient: eventdbx_client::Error,
    found: bool,
    listed: usize,
    version: u64,
}

async fn patient_calls(impatient: Client, patient: Client) -> PatientCalls {
    let impatient = impatient
        .apply("order", "o-patient", "touched", r#"{"w":"impatient"}"#)
        .await
        .expect_err("the database is down");
    let found = patient
        .get("order", "o-patient")
        .await
        .expect("get is retried")
        .found();
    let page = patient
        .list(&ListQuery::new().take(10))
        .await
        .expect("list is retried");
    let listed = serde_json::from_str::<Vec<Value>>(&page.aggregates_json)
        .expect("aggregates")
        .len();
    let written = patient
        .apply("order", "o-patient", "touched", r#"{"w":"patient"}"#)
        .await
        .expect("the write is retried");
    let event = written.value().ok().flatten().unwrap_or_default();
    PatientCalls {
        impatient,
        found,
        listed,
        version: event["version"].as_u64().expect("version"),
    }
}

/// Every event of an aggregate, in version order.
async fn all_events(client: &Client, aggregate: &str) -> Vec<Value> {
    let mut query = EventsQuery::new("order", aggregate);
    query.take = Some(1000);
    let mut events: Vec<Value> = Vec::new();
    loop {
        let page = client.events(&query).await.expect("events");
        events.extend(serde_json::from_str::<Vec<Value>>(&page.events_json).expect("events json"));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    events
}

/// An outage failure is `unavailable` (retriable, nothing done) or, for a write whose
/// connection was lost at its COMMIT, `storage` with an unknown outcome (final).
fn assert_outage_failure(code: &str, message: &str, retriable: bool) {
    match code {
        "unavailable" => {
            assert!(message.starts_with("unavailable: "), "{message}");
            assert!(message.contains("(retry later)"), "{message}");
            assert!(retriable, "{message}");
        }
        "storage" => {
            assert!(message.contains("the outcome is unknown"), "{message}");
            assert!(!retriable, "{message}");
        }
        other => panic!("outage failure {other}: {message}"),
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
    let config = ClientConfig::new(token.clone(), "default")
        .port(port)
        .known_v2_hosts(KnownV2Hosts::Disabled);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Connected before the outage (a handshake checks the token, which may need the database).
    let (impatient, patient) = runtime.block_on(async {
        let impatient = Client::connect(config.clone()).await.expect("connect");
        let patient = Client::connect(config.clone().retry(patient_retries()))
            .await
            .expect("connect");
        impatient
            .create("order", "o-patient", "opened", "{}")
            .await
            .expect("create");
        (impatient, patient)
    });
    let mut python = PythonClient::start(port, &token);
    let load = Arc::new(Load::default());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let load = Arc::clone(&load);
            let config = config.clone();
            runtime.spawn(async move {
                let client = Client::connect(config).await.expect("connect");
                client
                    .create("order", &format!("o-{writer}"), "opened", "{}")
                    .await
                    .expect("create");
                load.created.fetch_add(1, Ordering::AcqRel);
                write_loop(writer, client, load).await;
            })
        })
        .collect();
    // Every writer's create first: one that a slow machine left pending would meet the outage
    // and fail, which this run does not test (its appends do).
    wait_count(
        &load.created,
        WRITERS,
        "writers did not create their aggregates",
    );
    wait_count(&load.acks, 40, "no writes before the outage");

    let stopped_at = Instant::now();
    cluster.stop();
    let errors_before = load.errors.load(Ordering::Acquire);
    let down = wait_health(&http, 503);
    assert_eq!(down["status"], "degraded", "{down}");
    let cause = down["storage_error"].as_str().unwrap_or_default();
    assert!(cause.contains("retry later"), "{down}");
    // The database is down: the retrying clients start their calls now.
    let patient = runtime.spawn(patient_calls(impatient, patient));
    python.send("go");
    python.expect_line("retrying");
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
    let patient = runtime.block_on(async {
        for task in tasks {
            task.await.expect("writer");
        }
        patient.await.expect("patient calls")
    });
    let from_python = python.finish();

    // What the clients without retries got during the outage: `unavailable` (or an unknown
    // outcome for a write caught at its COMMIT); never a wrong answer, never a closed session.
    let failures = load.failures.lock().expect("failures").clone();
    assert!(!failures.is_empty());
    for (code, message, retriable, _) in &failures {
        assert_outage_failure(code, message, *retriable);
    }
    assert!(
        failures.iter().any(|(code, ..)| code == "unavailable"),
        "{failures:?}"
    );
    let (code, message) = (patient.impatient.code(), patient.impatient.message());
    assert_eq!(code, "unavailable", "{message}");
    assert_outage_failure(code, message, patient.impatient.is_retriable());
    // The calls with retries met the outage and surfaced no error.
    assert!(patient.found);
    assert!(patient.listed >= 1);
    eprintln!(
        "outage: {} failures without retries, e.g. {:?}; the Python client: {from_python}",
        failures.len(),
        failures[0]
    );
    let impatient = &from_python["impatient_apply"];
    assert_eq!(impatient["ok"], false, "{impatient}");
    assert_eq!(impatient["class"], "EventDBXAPIError", "{impatient}");
    assert_eq!(impatient["code"], "unavailable", "{impatient}");
    assert_eq!(impatient["retriable"], true, "{impatient}");
    assert_eq!(
        from_python["met_the_outage"],
        serde_json::json!(["apply", "get", "list"]),
        "every Python call with retries was answered `unavailable` at least once"
    );
    assert_eq!(from_python["get"]["value"], true, "{from_python}");
    assert!(
        from_python["list"]["value"].as_u64() >= Some(1),
        "{from_python}"
    );
    let python_version = from_python["apply"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("the Python write surfaced an error: {from_python}"));

    // Nothing acknowledged was lost: every acknowledged event is stored once, versions gapless;
    // no write answered `unavailable` is stored.
    let mut acked = load.acked.lock().expect("acked").clone();
    acked.push(("o-patient".into(), patient.version, "patient".into()));
    let mut by_aggregate: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (aggregate, version, marker) in acked {
        by_aggregate
            .entry(aggregate)
            .or_default()
            .push((version, marker));
    }
    let mut not_stored: Vec<(String, &str)> = failures
        .iter()
        .filter(|(code, ..)| code == "unavailable")
        .map(|(.., marker)| (marker.clone(), "w"))
        .collect();
    not_stored.push(("impatient".into(), "w"));
    not_stored.push(("impatient".into(), "py"));
    runtime.block_on(async {
        let client = Client::connect(config.clone()).await.expect("connect");
        let mut markers: HashMap<(String, &str), usize> = HashMap::new();
        for aggregate in ["o-patient", "py-1"]
            .into_iter()
            .map(str::to_owned)
            .chain(by_aggregate.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let events = all_events(&client, &aggregate).await;
            let versions: Vec<u64> = events
                .iter()
                .filter_map(|e| e["version"].as_u64())
                .collect();
            assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
            for event in &events {
                for field in ["w", "py"] {
                    if let Some(marker) = event["payload"][field].as_str() {
                        *markers.entry((marker.to_owned(), field)).or_default() += 1;
                    }
                }
            }
            for (version, marker) in by_aggregate.get(&aggregate).into_iter().flatten() {
                assert_eq!(
                    events[*version as usize - 1]["payload"]["w"],
                    marker.as_str()
                );
                assert_eq!(markers.get(&(marker.clone(), "w")), Some(&1), "{marker}");
            }
            if aggregate == "py-1" {
                assert_eq!(
                    events[python_version as usize - 1]["payload"]["py"],
                    "patient"
                );
            }
        }
        assert_eq!(markers.get(&("patient".to_owned(), "py")), Some(&1));
        for key in &not_stored {
            assert_eq!(
                markers.get(&(key.0.clone(), key.1)),
                None,
                "{key:?} was stored"
            );
        }
    });
}
