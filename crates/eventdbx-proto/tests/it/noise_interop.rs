//! v1 Noise against an independent implementation: the pure-Python `noiseprotocol` package,
//! over real loopback TCP with the control protocol's frames.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventdbx_proto::frame::{self, V1_MAX_NOISE_FRAME};
use eventdbx_proto::noise::v1;
use eventdbx_proto::ProtoError;

/// The Python interpreter that has `noiseprotocol`: `EVENTDBX_TEST_PYTHON`, else the
/// workspace's `.venv` (which the README's commands and `.ci/run` create).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("EVENTDBX_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = crate::manifest_dir().join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with noiseprotocol: run `scripts/setup-venv.sh` or set EVENTDBX_TEST_PYTHON"
    );
    venv
}

struct Peer {
    child: Child,
    stream: TcpStream,
}

fn spawn_peer(role: &str, token: &str, prologue: &[u8]) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let script = crate::manifest_dir().join("tests/peers/noise_peer.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .arg(port.to_string())
        .arg(role)
        .arg(token);
    if !prologue.is_empty() {
        command.arg(hex::encode(prologue));
    }
    let child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python noise peer");
    let (stream, _) = listener.accept().expect("python peer connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    Peer { child, stream }
}

impl Peer {
    fn send(&mut self, payload: &[u8]) {
        let framed = frame::encode(payload, V1_MAX_NOISE_FRAME).expect("frame fits");
        self.stream.write_all(&framed).expect("write frame");
    }

    /// Reads one frame; `None` on EOF or reset (how a failed handshake shows up).
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).ok()?;
        let len = frame::payload_len(header, V1_MAX_NOISE_FRAME).expect("length within limit");
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    /// Waits for the peer and returns its exit code and stderr.
    fn finish(mut self) -> (i32, String) {
        drop(self.stream);
        let status = self.child.wait().expect("python peer exits");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("read stderr");
        }
        (status.code().unwrap_or(-1), stderr)
    }
}

#[test]
fn our_initiator_with_python_responder() {
    let mut peer = spawn_peer("responder", "  tok\n", &[]);
    let mut client = v1::Initiator::new("tok").expect("initiator");
    let msg1 = client.write_message1().expect("msg1");
    assert_eq!(msg1.len(), 48);
    peer.send(&msg1);
    let msg2 = peer.recv().expect("python answers msg2");
    assert_eq!(msg2.len(), 48);
    let mut session = client.read_message2(&msg2).expect("msg2 authenticates");
    for size in [1usize, 1000, 65_519] {
        let request: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        peer.send(&session.sealer.seal(&request).expect("seal"));
        let reply = session
            .opener
            .open(&peer.recv().expect("reply"))
            .expect("open reply");
        let expected: Vec<u8> = request.iter().rev().copied().collect();
        assert_eq!(reply, expected);
    }
    let (code, stderr) = peer.finish();
    assert_eq!(code, 0, "python responder failed: {stderr}");
}

#[test]
fn python_initiator_with_our_responder() {
    let mut peer = spawn_peer("initiator", "tok", &[]);
    let mut server = v1::Responder::new("\ttok ").expect("responder");
    server
        .read_message1(&peer.recv().expect("msg1"))
        .expect("msg1 authenticates");
    let (msg2, mut session) = server.write_message2().expect("msg2");
    peer.send(&msg2);
    for _ in 0..3 {
        let request = session
            .opener
            .open(&peer.recv().expect("request"))
            .expect("open");
        let reply: Vec<u8> = request.iter().rev().copied().collect();
        peer.send(&session.sealer.seal(&reply).expect("seal"));
    }
    let (code, stderr) = peer.finish();
    assert_eq!(code, 0, "python initiator failed: {stderr}");
}

#[test]
fn wrong_token_fails_with_a_typed_error_on_our_side() {
    let mut peer = spawn_peer("initiator", "not-the-token", &[]);
    let mut server = v1::Responder::new("tok").expect("responder");
    let err = server
        .read_message1(&peer.recv().expect("msg1"))
        .expect_err("must not authenticate");
    assert!(matches!(err, ProtoError::Handshake(_)), "{err:?}");
    let (code, _) = peer.finish();
    assert_eq!(code, 3, "python saw the handshake fail too");
}

#[test]
fn wrong_token_fails_on_the_python_side() {
    let mut peer = spawn_peer("responder", "not-the-token", &[]);
    let mut client = v1::Initiator::new("tok").expect("initiator");
    peer.send(&client.write_message1().expect("msg1"));
    assert!(
        peer.recv().is_none(),
        "a responder with another PSK must not answer"
    );
    let (code, stderr) = peer.finish();
    assert_eq!(code, 3, "python must report a handshake failure: {stderr}");
}

#[test]
fn non_empty_prologue_fails_both_ways() {
    // The reference Python SDK 0.1.8 used this prologue and could never connect.
    let prologue = b"eventdbx-control";
    let mut peer = spawn_peer("initiator", "tok", prologue);
    let mut server = v1::Responder::new("tok").expect("responder");
    let err = server
        .read_message1(&peer.recv().expect("msg1"))
        .expect_err("prologue mismatch");
    assert!(matches!(err, ProtoError::Handshake(_)), "{err:?}");
    assert_eq!(peer.finish().0, 3);

    let mut peer = spawn_peer("responder", "tok", &[]);
    let mut client = v1::Initiator::with_prologue("tok", prologue).expect("initiator");
    peer.send(&client.write_message1().expect("msg1"));
    assert!(peer.recv().is_none());
    assert_eq!(peer.finish().0, 3);
}
