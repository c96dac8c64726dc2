//! The `process` plugin runner against a real child: the `eventdbx-echo-plugin` binary, installed
//! into a temporary plugin registry and found with `resolve_binary`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eventdbx_proto::plugin::{PluginEvent, NULL_JSON};
use eventdbx_server::plugins::process::{
    current_target, resolve_binary, ProcessPlugin, ProcessSpec, SHUTDOWN_GRACE,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::PATIENCE;

const ECHO: &str = env!("CARGO_BIN_EXE_eventdbx-echo-plugin");
const NAME: &str = "echo";
const VERSION: &str = "1.0.0";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary registry with the echo plugin installed, and the file it echoes into.
struct Registry {
    dir: TempDir,
}

impl Registry {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        install(dir.path(), NAME, VERSION);
        Registry { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("echo.jsonl")
    }

    /// A spec for the installed plugin with `env` added to the echo file's variable.
    fn spec(&self, env: &[(&str, &str)]) -> ProcessSpec {
        let binary = resolve_binary(self.dir.path(), NAME, VERSION).expect("installed");
        let mut vars = BTreeMap::from([(
            "EVENTDBX_ECHO_PLUGIN_OUT".to_owned(),
            self.out().to_string_lossy().into_owned(),
        )]);
        for (key, value) in env {
            vars.insert((*key).to_owned(), (*value).to_owned());
        }
        ProcessSpec {
            name: NAME.into(),
            version: VERSION.into(),
            args: vec!["--flag".into(), "two words".into()],
            env: vars,
            working_dir: Some(self.dir.path().to_path_buf()),
            binary,
        }
    }

    /// The lines of the echo file, parsed.
    fn echoed(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.out()).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("the echo plugin writes JSON lines"))
            .collect()
    }
}

/// Copies the echo binary to `<dir>/<name>/<version>/<target>/<name>` (the registry layout).
fn install(dir: &Path, name: &str, version: &str) -> PathBuf {
    let target_dir = dir.join(name).join(version).join(current_target());
    std::fs::create_dir_all(&target_dir).expect("registry dirs");
    let path = target_dir.join(name);
    std::fs::copy(ECHO, &path).expect("install the echo plugin");
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A full event: every field set, state entries holding JSON texts of typed values.
fn full_event(sequence: u64) -> PluginEvent {
    PluginEvent {
        sequence,
        aggregate_type: "order".into(),
        aggregate_id: format!("o-{sequence}"),
        event_type: "order_placed".into(),
        event_version: 3,
        event_id: "7215112345678901234".into(),
        created_at_epoch_micros: 1_764_000_000_123_456,
        payload_json: r#"{"total":12.5,"note":"a \"quoted\"\nline"}"#.into(),
        metadata_json: r#"{"@actor":"svc"}"#.into(),
        hash: "9f86d081884c7d65".into(),
        merkle_root: "e3b0c44298fc1c14".into(),
        state_version: 3,
        state_archived: false,
        state_merkle_root: "5feceb66ffc86f38".into(),
        state_entries: vec![
            ("total".into(), "12.5".into()),
            ("status".into(), r#""placed""#.into()),
            ("tags".into(), r#"["a","b"]"#.into()),
            ("paid".into(), "false".into()),
        ],
        schema_json: r#"{"aggregate":"order","events":{}}"#.into(),
        extensions_json: r#"{"trace":"t-1"}"#.into(),
    }
}

/// The shape of a job in each payload mode (`docs/plugins.md`; excluded parts empty).
fn mode_shapes() -> Vec<(&'static str, PluginEvent)> {
    let no_state = |event: PluginEvent| PluginEvent {
        state_entries: Vec::new(),
        state_merkle_root: String::new(),
        state_version: 0,
        ..event
    };
    let no_schema = |event: PluginEvent| PluginEvent {
        schema_json: NULL_JSON.into(),
        ..event
    };
    let no_payload = |event: PluginEvent| PluginEvent {
        payload_json: NULL_JSON.into(),
        ..event
    };
    vec![
        ("all", full_event(1)),
        ("event-only", no_schema(no_state(full_event(2)))),
        ("state-only", no_schema(no_payload(full_event(3)))),
        ("schema-only", no_state(no_payload(full_event(4)))),
        ("event-and-schema", no_state(full_event(5))),
        (
            "extensions-only",
            no_schema(no_state(no_payload(full_event(6)))),
        ),
        (
            "archived, empty texts",
            PluginEvent {
                sequence: 7,
                state_archived: true,
                extensions_json: NULL_JSON.into(),
                ..PluginEvent::default()
            },
        ),
    ]
}

/// Every field of `event` as the echo plugin wrote it.
fn assert_echoed(line: &Value, event: &PluginEvent, what: &str) {
    let text = |field: &str| {
        line[field]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {field}"))
    };
    assert_eq!(line["sequence"].as_u64(), Some(event.sequence), "{what}");
    assert_eq!(text("aggregate_type"), event.aggregate_type, "{what}");
    assert_eq!(text("aggregate_id"), event.aggregate_id, "{what}");
    assert_eq!(text("event_type"), event.event_type, "{what}");
    assert_eq!(
        line["event_version"].as_u64(),
        Some(event.event_version),
        "{what}"
    );
    assert_eq!(text("event_id"), event.event_id, "{what}");
    assert_eq!(
        line["created_at_epoch_micros"].as_i64(),
        Some(event.created_at_epoch_micros),
        "{what}"
    );
    assert_eq!(text("payload_json"), event.payload_json, "{what}");
    assert_eq!(text("metadata_json"), event.metadata_json, "{what}");
    assert_eq!(text("hash"), event.hash, "{what}");
    assert_eq!(text("merkle_root"), event.merkle_root, "{what}");
    assert_eq!(
        line["state_version"].as_u64(),
        Some(event.state_version),
        "{what}"
    );
    assert_eq!(
        line["state_archived"].as_bool(),
        Some(event.state_archived),
        "{what}"
    );
    assert_eq!(text("state_merkle_root"), event.state_merkle_root, "{what}");
    let entries: Vec<(String, String)> = line["state_entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: state_entries"))
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("key").to_owned(),
                pair[1].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    assert_eq!(entries, event.state_entries, "{what}");
    assert_eq!(text("schema_json"), event.schema_json, "{what}");
    assert_eq!(text("extensions_json"), event.extensions_json, "{what}");
}

/// Kills `pid` with SIGKILL and waits until it is dead (a zombie or gone).
fn kill_9(pid: u32) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a process id");
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .unwrap_or_else(|err| panic!("SIGKILL {pid}: {err}"));
    // Only a safety net: the kernel reaps a SIGKILLed process on its own schedule.
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z')) =>
            {
                return
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    panic!("process {pid} still alive long after kill -9");
}

#[test]
fn resolve_binary_follows_the_registry_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let installed = install(dir.path(), "search", "0.3.1");
    let expected = dir
        .path()
        .join("search/0.3.1")
        .join(current_target())
        .join("search");
    assert_eq!(installed, expected);
    assert_eq!(
        resolve_binary(dir.path(), "search", "0.3.1").expect("resolves"),
        expected
    );

    let missing = resolve_binary(dir.path(), "search", "0.4.0").expect_err("other version");
    assert!(
        missing.contains("'search' version '0.4.0' is not installed for"),
        "{missing}"
    );
    assert!(missing.contains(&current_target()), "{missing}");
    assert!(missing.contains("search/0.4.0"), "{missing}");

    // A directory where the binary should be.
    let target_dir = dir.path().join("dirplug/1").join(current_target());
    std::fs::create_dir_all(target_dir.join("dirplug")).expect("dirs");
    let not_file = resolve_binary(dir.path(), "dirplug", "1").expect_err("a directory");
    assert!(not_file.contains("is not a regular file"), "{not_file}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain/1").join(current_target());
        std::fs::create_dir_all(&plain).expect("dirs");
        std::fs::write(plain.join("plain"), b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(plain.join("plain"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let not_exec = resolve_binary(dir.path(), "plain", "1").expect_err("not executable");
        assert!(not_exec.contains("is not executable"), "{not_exec}");
    }
}

#[test]
fn every_mode_shape_arrives_field_for_field_through_one_child() {
    let registry = Registry::new();
    let runtime = runtime();
    let shapes = mode_shapes();
    let (pids, plugin_dropped) = runtime.block_on(async {
        let mut plugin = ProcessPlugin::new("search-index", registry.spec(&[]));
        assert_eq!(plugin.child_id(), None, "the child starts lazily");
        let mut pids = Vec::new();
        for (mode, event) in &shapes {
            plugin
                .deliver(event, TIMEOUT)
                .await
                .unwrap_or_else(|err| panic!("{mode}: {err}"));
            pids.push(plugin.child_id().expect("a running child"));
        }
        plugin.shutdown().await;
        (pids, plugin.child_id().is_none())
    });
    assert!(plugin_dropped, "shutdown leaves no child");
    assert!(
        pids.iter().all(|pid| *pid == pids[0]),
        "one long-lived child: {pids:?}"
    );

    let lines = registry.echoed();
    assert_eq!(lines.len(), shapes.len());
    let cwd = registry
        .dir
        .path()
        .canonicalize()
        .expect("canonical temp dir");
    for (line, (mode, event)) in lines.iter().zip(&shapes) {
        assert_echoed(line, event, mode);
        assert_eq!(line["plugin"], "search-index", "init names the plugin");
        assert_eq!(line["version"], VERSION);
        assert_eq!(line["target"], current_target().as_str());
        assert_eq!(line["inits"], 1, "init is sent once per child, first");
        assert_eq!(line["pid"].as_u64(), Some(u64::from(pids[0])));
        assert_eq!(line["answer"], "ack");
        assert_eq!(line["args"], serde_json::json!(["--flag", "two words"]));
        assert_eq!(
            Path::new(line["cwd"].as_str().expect("cwd")),
            cwd,
            "working_dir is applied"
        );
    }
    // Excluded parts are empty, as sent.
    assert_eq!(lines[1]["state_entries"], serde_json::json!([]));
    assert_eq!(lines[1]["schema_json"], "null");
    assert_eq!(lines[2]["payload_json"], "null");
}

#[test]
fn an_error_envelope_is_an_err_and_the_child_stays() {
    let registry = Registry::new();
    let runtime = runtime();
    runtime.block_on(async {
        let mut plugin = ProcessPlugin::new(
            "echo",
            registry.spec(&[("EVENTDBX_ECHO_PLUGIN_FAIL_SEQ", "2")]),
        );
        plugin
            .deliver(&full_event(1), TIMEOUT)
            .await
            .expect("ack 1");
        let pid = plugin.child_id();
        let err = plugin
            .deliver(&full_event(2), TIMEOUT)
            .await
            .expect_err("error envelope");
        assert!(err.contains("configured to fail sequence 2"), "{err}");
        assert!(err.contains("'echo'") && err.contains("event 2"), "{err}");
        plugin
            .deliver(&full_event(3), TIMEOUT)
            .await
            .expect("ack 3");
        assert_eq!(
            plugin.child_id(),
            pid,
            "the child answered: kept, not restarted"
        );
        plugin.shutdown().await;
    });
    let answers: Vec<(u64, String)> = registry
        .echoed()
        .iter()
        .map(|line| {
            (
                line["sequence"].as_u64().expect("sequence"),
                line["answer"].as_str().expect("answer").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [(1, "ack".into()), (2, "error".into()), (3, "ack".into())]
    );
}

#[test]
fn a_killed_child_is_restarted_and_a_cut_delivery_fails() {
    let registry = Registry::new();
    let runtime = runtime();
    runtime.block_on(async {
        let mut plugin = ProcessPlugin::new(
            "echo",
            registry.spec(&[("EVENTDBX_ECHO_PLUGIN_HANG_SEQ", "3")]),
        );
        plugin
            .deliver(&full_event(1), TIMEOUT)
            .await
            .expect("ack 1");
        let first = plugin.child_id().expect("child");

        // Killed between deliveries: the next delivery starts a new child and succeeds.
        kill_9(first);
        plugin
            .deliver(&full_event(2), TIMEOUT)
            .await
            .expect("delivered through a new child");
        let second = plugin.child_id().expect("child");
        assert_ne!(second, first);

        // Killed while event 3 waits for its answer (the child has recorded it): that delivery
        // is an Err (the queue retries it), long before its timeout.
        let out = registry.out();
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while !echoed_sequence(&out, 3) {
                assert!(Instant::now() < deadline, "event 3 never reached the child");
                std::thread::sleep(Duration::from_millis(5));
            }
            kill_9(second);
        });
        let patient = Duration::from_secs(600);
        let started = Instant::now();
        let err = plugin
            .deliver(&full_event(3), patient)
            .await
            .expect_err("the child died mid-delivery");
        killer.join().expect("killer thread");
        assert!(
            started.elapsed() < patient / 2,
            "noticed the death, not the timeout"
        );
        assert!(err.contains("before answering event 3"), "{err}");
        assert!(err.contains("killed by signal 9"), "{err}");
        assert_eq!(plugin.child_id(), None, "the dead child is dropped");

        plugin
            .deliver(&full_event(4), TIMEOUT)
            .await
            .expect("ack 4");
        let third = plugin.child_id().expect("child");
        assert!(third != first && third != second);
        plugin.shutdown().await;
    });
    let seen: Vec<(u64, u64, String)> = registry
        .echoed()
        .iter()
        .map(|line| {
            (
                line["sequence"].as_u64().expect("sequence"),
                line["inits"].as_u64().expect("inits"),
                line["answer"].as_str().expect("answer").to_owned(),
            )
        })
        .collect();
    // Every child got its own init; event 3 reached the child but was never acknowledged.
    assert_eq!(
        seen,
        [
            (1, 1, "ack".into()),
            (2, 1, "ack".into()),
            (3, 1, "none".into()),
            (4, 1, "ack".into())
        ]
    );
}

#[test]
fn a_child_that_exits_at_once_fails_with_growing_delays() {
    let registry = Registry::new();
    let runtime = runtime();
    let durations = runtime.block_on(async {
        let mut plugin = ProcessPlugin::new(
            "echo",
            registry.spec(&[("EVENTDBX_ECHO_PLUGIN_EXIT_CODE", "3")]),
        );
        let mut durations = Vec::new();
        for sequence in 1..=5 {
            let started = Instant::now();
            let err = plugin
                .deliver(&full_event(sequence), TIMEOUT)
                .await
                .expect_err("the child exits at once");
            durations.push(started.elapsed());
            assert!(err.contains("exited with code 3"), "{err}");
            assert_eq!(plugin.child_id(), None);
        }
        durations
    });
    // Restart delays before attempts 2..5: 100, 200, 400, 800 ms, and so no busy loop. Only
    // lower bounds: scheduling adds time, never removes it.
    for (attempt, expected_ms) in [(1, 100u64), (2, 200), (3, 400), (4, 800)] {
        assert!(
            durations[attempt] >= Duration::from_millis(expected_ms * 9 / 10),
            "attempt {}: {:?} (all: {durations:?})",
            attempt + 1,
            durations[attempt]
        );
    }
    assert!(registry.echoed().is_empty(), "nothing was delivered");
}

#[test]
fn a_silent_child_times_out_and_is_replaced() {
    let registry = Registry::new();
    let runtime = runtime();
    runtime.block_on(async {
        let mut plugin = ProcessPlugin::new(
            "echo",
            registry.spec(&[("EVENTDBX_ECHO_PLUGIN_HANG_SEQ", "1")]),
        );
        let started = Instant::now();
        let err = plugin
            .deliver(&full_event(1), Duration::from_millis(300))
            .await
            .expect_err("never answered");
        let waited = started.elapsed();
        assert!(err.contains("did not answer event 1 within 300ms"), "{err}");
        assert!(
            // The upper bound only catches a hang, whatever the load.
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(60),
            "{waited:?}"
        );
        assert_eq!(plugin.child_id(), None, "a hung child is dropped");
        plugin
            .deliver(&full_event(2), TIMEOUT)
            .await
            .expect("ack 2");
        plugin.shutdown().await;
    });
    let pids: Vec<u64> = registry
        .echoed()
        .iter()
        .map(|line| line["pid"].as_u64().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids[0], pids[1], "event 2 went to a new child");
}

#[test]
fn shutdown_closes_stdin_and_the_child_exits_on_its_own() {
    let registry = Registry::new();
    let runtime = runtime();
    runtime.block_on(async {
        let mut plugin = ProcessPlugin::new("echo", registry.spec(&[]));
        plugin.deliver(&full_event(1), TIMEOUT).await.expect("ack");
        let pid = plugin.child_id().expect("child");
        let started = Instant::now();
        plugin.shutdown().await;
        // Killing takes the whole grace period first; an exit of its own comes before it.
        assert!(
            started.elapsed() < SHUTDOWN_GRACE,
            "the child exits at end of input, without waiting for the kill"
        );
        assert_eq!(plugin.child_id(), None);
        // Reaped by shutdown: no process (nor zombie) left with that pid.
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || pid_reused(pid));
        plugin.shutdown().await; // a second shutdown is a no-op
    });
}

/// Whether the echo file at `out` records event `sequence` (the child got it).
fn echoed_sequence(out: &Path, sequence: u64) -> bool {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .any(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|v| v["sequence"].as_u64() == Some(sequence))
        })
}

/// True when `pid` now belongs to a process other than an echo plugin (the pid was reused).
fn pid_reused(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| !cmdline.contains(NAME))
        .unwrap_or(true)
}

#[test]
fn a_missing_binary_is_an_err_not_a_panic() {
    let runtime = runtime();
    runtime.block_on(async {
        let spec = ProcessSpec {
            name: "ghost".into(),
            version: "1".into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            binary: PathBuf::from("/nonexistent/eventdbx/ghost"),
        };
        let mut plugin = ProcessPlugin::new("ghost", spec);
        let err = plugin
            .deliver(&full_event(1), TIMEOUT)
            .await
            .expect_err("cannot start");
        assert!(
            err.contains("cannot start /nonexistent/eventdbx/ghost"),
            "{err}"
        );
        assert_eq!(plugin.child_id(), None);
    });
}

/// Records every tracing event as `(target, "field=value …")`.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

struct Render(String);

impl tracing::field::Visit for Render {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut rendered = Render(String::new());
        event.record(&mut rendered);
        self.0
            .lock()
            .expect("capture lock")
            .push((event.metadata().target().to_owned(), rendered.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn stderr_is_logged_at_the_plugin_target_and_env_values_never_are() {
    const SECRET: &str = "s3cr3t-token-value";
    let registry = Registry::new();
    let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(records.clone()));
    // One thread: the stderr task runs where the scoped subscriber is installed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut plugin = ProcessPlugin::new(
            "echo",
            registry.spec(&[
                ("EVENTDBX_ECHO_PLUGIN_FAIL_SEQ", "2"),
                ("PLUGIN_API_KEY", SECRET),
            ]),
        );
        plugin.deliver(&full_event(1), TIMEOUT).await.expect("ack");
        plugin
            .deliver(&full_event(2), TIMEOUT)
            .await
            .expect_err("error envelope");
        let _ = format!("{plugin:?}");
        // Shutdown waits for the stderr task to log what is left.
        plugin.shutdown().await;
    });
    let records = records.lock().expect("capture lock").clone();
    let stderr_lines: Vec<&String> = records
        .iter()
        .filter(|(target, fields)| {
            target == "eventdbx.plugin.process" && fields.contains("message=stderr: ")
        })
        .map(|(_, fields)| fields)
        .collect();
    assert!(
        stderr_lines
            .iter()
            .any(|fields| fields.contains("echo plugin: event 1 (ack)")),
        "{records:#?}"
    );
    assert!(
        stderr_lines
            .iter()
            .any(|fields| fields.contains("echo plugin: event 2 (error)")),
        "{records:#?}"
    );
    assert!(
        stderr_lines
            .iter()
            .all(|fields| fields.contains("plugin=echo") && fields.contains("pid=")),
        "{stderr_lines:#?}"
    );
    assert!(
        records.iter().all(|(_, fields)| !fields.contains(SECRET)),
        "an env value reached the logs: {records:#?}"
    );
}

#[test]
fn text_on_stdout_is_an_err_and_the_child_is_replaced() {
    let runtime = runtime();
    runtime.block_on(async {
        // A "plugin" that prints a line on stdout, then reads its input forever.
        let spec = ProcessSpec {
            name: "chatty".into(),
            version: "1".into(),
            args: vec!["-c".into(), "echo 'ready!'; exec cat > /dev/null".into()],
            env: BTreeMap::new(),
            working_dir: None,
            binary: PathBuf::from("/bin/sh"),
        };
        let mut plugin = ProcessPlugin::new("chatty", spec);
        let err = plugin
            .deliver(&full_event(1), TIMEOUT)
            .await
            .expect_err("not an envelope");
        assert!(
            err.contains("wrote an unreadable message on stdout"),
            "{err}"
        );
        assert_eq!(plugin.child_id(), None, "an out-of-step child is dropped");
    });
}
