//! `dbx init && dbx serve` on a fresh directory gives a working server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{StreamMessageReader, MAX_MESSAGE_BYTES};

fn dbx(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbx"));
    command.current_dir(dir).env_remove("EVENTDBX_CONFIG");
    command
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hello_response(stream: &mut TcpStream) -> HelloResponse {
    let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream.read_exact(&mut buf).expect("hello response");
        reader.feed(&buf).expect("valid stream message");
    }
    HelloResponse::decode(reader.message().expect("complete")).expect("decodes")
}

#[test]
fn init_then_serve_gives_a_working_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path()).arg("init").output().expect("dbx init runs");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let again = dbx(dir.path())
        .arg("init")
        .output()
        .expect("dbx init runs twice");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already initialized"));

    // Ephemeral ports, so the test never collides with anything on the machine.
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

    let mut child = dbx(dir.path())
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbx serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let _serving = Serving(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("serve prints its addresses");
    let control = line
        .split("control ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("control address in the banner")
        .to_owned();
    let http = line
        .split("http ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("http address in the banner")
        .to_owned();

    // The bootstrap token written by init opens a session.
    let token = std::fs::read_to_string(dir.path().join(".dbx/cli.token")).expect("cli.token");
    let mut stream = TcpStream::connect(&control).expect("connect to the control port");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let hello = Hello {
        protocol_version: 1,
        token: token.trim().to_owned(),
        tenant_id: "default".into(),
        no_noise: false,
    };
    stream.write_all(&hello.encode()).expect("send hello");
    let response = hello_response(&mut stream);
    assert!(response.accepted, "{}", response.message);
    assert!(response.capabilities.iter().any(|c| c == "idempotency_key"));

    // A forged token is refused with the spec's message.
    let mut stream = TcpStream::connect(&control).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let forged = Hello {
        token: "eyJhbGciOiJFZERTQSJ9.e30.c2ln".into(),
        ..hello
    };
    stream.write_all(&forged.encode()).expect("send hello");
    let response = hello_response(&mut stream);
    assert!(!response.accepted);
    assert_eq!(response.message, "invalid control token");

    // Health over HTTP.
    let mut http_stream = TcpStream::connect(&http).expect("connect to the HTTP port");
    http_stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    http_stream.read_to_string(&mut body).expect("response");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"durability\":\"fsync\""), "{body}");
}

fn output_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory after `dbx init`.
fn initialized() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path()).arg("init").output().expect("dbx init");
    assert!(init.status.success(), "{}", output_text(&init.stderr));
    dir
}

/// The bootstrap token's lifetime as recorded by `dbx token list --json`.
fn bootstrap_ttl(dir: &std::path::Path) -> u64 {
    let listed = dbx(dir)
        .args(["token", "list", "--json"])
        .output()
        .expect("dbx token list");
    assert!(listed.status.success(), "{}", output_text(&listed.stderr));
    let records: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json list");
    let bootstrap = records
        .as_array()
        .and_then(|all| all.iter().find(|r| r["subject"] == "cli:bootstrap"))
        .unwrap_or_else(|| panic!("no cli:bootstrap token in {records}"));
    let issued = bootstrap["issued_at"].as_u64().expect("issued_at");
    let expires = bootstrap["expires_at"].as_u64().expect("expires_at");
    expires - issued
}

/// `dbx init`, init again, `--ttl 10d`, discovery from nested directories, and
/// the error outside any workspace.
#[test]
fn workspace_init_ttl_and_discovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path()).arg("init").output().expect("dbx init");
    assert!(init.status.success(), "{}", output_text(&init.stderr));
    for file in [".dbx", ".dbx/config.toml", ".dbx/cli.token"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    assert_eq!(bootstrap_ttl(dir.path()), 86_400);
    let again = dbx(dir.path()).arg("init").output().expect("init again");
    assert!(output_text(&again.stdout).contains("already initialized"));

    let other = tempfile::tempdir().expect("tempdir");
    let init = dbx(other.path())
        .args(["init", "--ttl", "10d"])
        .output()
        .expect("dbx init --ttl 10d");
    assert!(init.status.success(), "{}", output_text(&init.stderr));
    assert_eq!(bootstrap_ttl(other.path()), 864_000);
    let bad = dbx(other.path())
        .args(["token", "bootstrap", "--stdout", "--ttl", "ten days"])
        .output()
        .expect("bad ttl");
    assert!(!bad.status.success());
    assert!(
        output_text(&bad.stderr).contains("invalid ttl"),
        "{}",
        output_text(&bad.stderr)
    );

    // Discovery upwards from a nested directory.
    let nested = dir.path().join("a/b/c");
    std::fs::create_dir_all(&nested).expect("nested dirs");
    let config = dbx(&nested).arg("config").output().expect("dbx config");
    assert!(config.status.success(), "{}", output_text(&config.stderr));
    assert!(output_text(&config.stdout).contains("bind_addr"));

    // Outside any workspace: a clear error naming the fix, for local and remote commands.
    let outside = tempfile::tempdir().expect("tempdir");
    for args in [
        &["config"][..],
        &["aggregate", "list"][..],
        &["token", "list"][..],
    ] {
        let out = dbx(outside.path())
            .args(args)
            .env_remove("EVENTDBX_TOKEN")
            .env_remove("EVENTDBX_AUTO_INIT")
            .output()
            .expect("dbx outside");
        assert!(!out.status.success(), "{args:?}");
        let err = output_text(&out.stderr);
        assert!(err.contains("Run `dbx init`"), "{args:?}: {err}");
    }
}

/// The bootstrap token is listed with its subject; a generated token's JSON
/// carries its claims.
#[test]
fn token_list_and_generate() {
    let dir = initialized();
    let listed = dbx(dir.path())
        .args(["token", "list"])
        .output()
        .expect("list");
    assert!(
        output_text(&listed.stdout).contains("subject=cli:bootstrap"),
        "{}",
        output_text(&listed.stdout)
    );
    let generated = dbx(dir.path())
        .args([
            "token",
            "generate",
            "--group",
            "g",
            "--user",
            "u",
            "--action",
            "aggregate.read",
            "--json",
        ])
        .output()
        .expect("generate");
    assert!(
        generated.status.success(),
        "{}",
        output_text(&generated.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&generated.stdout).expect("json");
    let claims = &value["claims"];
    assert_eq!(
        (
            &claims["group"],
            &claims["user"],
            &claims["actions"],
            &claims["tenants"]
        ),
        (
            &serde_json::json!("g"),
            &serde_json::json!("u"),
            &serde_json::json!(["aggregate.read"]),
            &serde_json::json!([])
        ),
        "{value}"
    );
    assert_eq!(
        value["token"].as_str().map(|t| t.split('.').count()),
        Some(3)
    );
}

/// `dbx serve destroy` removes `.dbx` only (an external data directory
/// stays), asks for confirmation without `--yes`, and later commands say to run `dbx init`.
#[test]
fn serve_destroy_removes_the_workspace_only() {
    let dir = initialized();
    let external = tempfile::tempdir().expect("external data dir");
    std::fs::write(external.path().join("keep.me"), b"data").expect("marker");
    let config_path = dir.path().join(".dbx/config.toml");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "data_dir = \".\"",
            &format!("data_dir = {:?}", external.path().display().to_string()),
        );
    assert!(config.contains(&external.path().display().to_string()));
    std::fs::write(&config_path, config).expect("config");

    // Without --yes, anything but `destroy` keeps everything.
    let mut refused = dbx(dir.path())
        .args(["serve", "destroy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("destroy");
    refused
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"no\n")
        .expect("answer");
    let refused = refused.wait_with_output().expect("destroy exits");
    assert!(!refused.status.success());
    assert!(output_text(&refused.stderr).contains("not confirmed"));
    assert!(dir.path().join(".dbx/config.toml").exists());

    let destroyed = dbx(dir.path())
        .args(["serve", "destroy", "--yes", "--json"])
        .output()
        .expect("destroy --yes");
    assert!(
        destroyed.status.success(),
        "{}",
        output_text(&destroyed.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&destroyed.stdout).expect("json");
    assert_eq!(
        report["data_dir_kept"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(external.path().to_path_buf()),
        "{report}"
    );
    assert!(!dir.path().join(".dbx").exists());
    assert!(external.path().join("keep.me").exists());
    let after = dbx(dir.path())
        .arg("config")
        .output()
        .expect("config after");
    assert!(output_text(&after.stderr).contains("Run `dbx init`"));
}

/// `dbx … | head`: a reader that goes away ends the command quietly with the status a shell
/// shows for SIGPIPE, not with a panic and a backtrace.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = initialized();
    for args in [&["config"][..], &["token", "list", "--json"][..]] {
        // A pipe whose read end is closed before the command starts: its first write fails.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = dbx(dir.path())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run dbx");
        let stderr = output_text(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `dbx stop` asks the server to shut down with SIGTERM (sent through rustix, no `kill`
/// command): the server finishes cleanly, so it exits with status 0 rather than being killed,
/// and the pid file is removed.
#[test]
fn stop_shuts_the_server_down_with_sigterm() {
    let mut ws = crate::workspace::Workspace::start();
    let pid_file = ws.dir.path().join(".dbx/eventdbx.pid");
    std::fs::write(&pid_file, ws._serving.0.id().to_string()).expect("pid file");
    let stop = dbx(ws.dir.path())
        .arg("stop")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbx stop");
    // Reaping the server here lets `dbx stop` see it gone.
    let status = ws._serving.0.wait().expect("server exits");
    let stopped = stop.wait_with_output().expect("dbx stop ends");
    assert!(
        status.success(),
        "the server was not shut down cleanly: {status}"
    );
    assert!(stopped.status.success(), "{}", output_text(&stopped.stderr));
    assert_eq!(output_text(&stopped.stdout), "stopped\n");
    assert!(!pid_file.exists());
}
