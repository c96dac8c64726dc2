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
        .set_read_timeout(Some(Duration::from_secs(10)))
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
        .set_read_timeout(Some(Duration::from_secs(10)))
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
