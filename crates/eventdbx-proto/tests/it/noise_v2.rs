//! Protocol v2 over real loopback TCP: the token never appears on the wire, pinning fails
//! closed, large messages are chunked, several requests can be in flight, and the test
//! vectors of `docs/protocol.md` are what the code produces.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use eventdbx_proto::frame;
use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::noise::v2::{
    self, ChunkedSession, Fingerprint, FixedKeys, Initiator, Responder, StaticKeypair, TokenId,
};
use eventdbx_proto::ProtoError;
use proptest::prelude::*;

/// A token shaped like the server's JWTs.
const TOKEN: &str =
    "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJldmVudGRieDovL3Rlc3QiLCJzdWIiOiJ\
qYW5lIiwianRpIjoiOTlhYmMifQ.c2lnbmF0dXJlLWJ5dGVzLWZvci10aGUtdGVzdC1vbmx5LW5vdC1yZWFs";

/// A stream that records every byte written through it.
struct Recorder {
    stream: TcpStream,
    sent: Vec<u8>,
}

impl Recorder {
    fn new(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Recorder {
            stream,
            sent: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sent.extend_from_slice(bytes);
        self.stream.write_all(bytes).expect("write");
    }

    fn send_frame(&mut self, payload: &[u8]) {
        self.send(&frame::encode(payload, v2::FRAME_LIMIT).expect("frame fits"));
    }

    fn recv_frame(&mut self) -> Option<Vec<u8>> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).ok()?;
        let len = frame::payload_len(header, v2::FRAME_LIMIT).expect("frame within limit");
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    fn recv_message(&mut self, session: &mut ChunkedSession) -> Vec<u8> {
        loop {
            let payload = self.recv_frame().expect("frame");
            if let Some(message) = session.opener.open_frame(&payload).expect("chunk opens") {
                return message;
            }
        }
    }
}

/// The v2 hello: no token (an explicit empty text), tenant `default`.
fn v2_hello() -> Vec<u8> {
    Hello {
        protocol_version: v2::PROTOCOL_VERSION,
        tenant_id: "default".into(),
        ..Hello::default()
    }
    .encode()
}

fn hello_response() -> Vec<u8> {
    HelloResponse::ok(false).encode()
}

fn read_stream_message(stream: &mut TcpStream) -> Result<Vec<u8>, ProtoError> {
    let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream
            .read_exact(&mut buf)
            .map_err(|_| ProtoError::Truncated("stream message"))?;
        reader.feed(&buf)?;
    }
    reader
        .into_message()
        .ok_or(ProtoError::Truncated("stream message"))
}

fn connect() -> (Recorder, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (Recorder::new(client), Recorder::new(server))
}

/// Server behaviour for the tests: which tokens it knows, and what it does after the handshake.
#[derive(Clone, Copy)]
enum Serve {
    /// Echo each logical message, reversed.
    Echo { messages: usize },
    /// Answer `n` requests in the reverse order of arrival (each answer prefixed by its id).
    Reverse { messages: usize },
    /// Reject the token after the handshake.
    Reject,
}

fn run_server(
    mut wire: Recorder,
    key: StaticKeypair,
    known: &str,
    serve: Serve,
) -> (Vec<u8>, Result<(), ProtoError>) {
    let outcome = (|| {
        let hello = read_stream_message(&mut wire.stream)?;
        let decoded = Hello::decode(&hello)?;
        assert_eq!((decoded.protocol_version, decoded.token.as_str()), (2, ""));
        let response = hello_response();
        wire.send(&response);
        let prologue = v2::prologue(&hello, &response);
        let mut responder = Responder::new(&key, v2::DEFAULT_MAX_MESSAGE, &prologue)?;
        let id =
            responder.read_message1(&wire.recv_frame().ok_or(ProtoError::Truncated("msg1"))?)?;
        let psk = (id == TokenId::of(known)?)
            .then(|| v2::psk(known))
            .transpose()?;
        let msg2 = responder.write_message2(psk.as_ref())?;
        wire.send_frame(&msg2);
        let pending =
            responder.read_message3(&wire.recv_frame().ok_or(ProtoError::Truncated("msg3"))?)?;
        assert_eq!(pending.token(), known.trim());
        if let Serve::Reject = serve {
            let verdict = pending.reject("token has been revoked")?;
            wire.send(&verdict);
            return Ok(());
        }
        let (verdict, mut session) = pending.accept()?;
        wire.send(&verdict);
        match serve {
            Serve::Echo { messages } => {
                for _ in 0..messages {
                    let request = wire.recv_message(&mut session);
                    let reply: Vec<u8> = request.iter().rev().copied().collect();
                    let sealed = session.sealer.seal_message(&reply)?;
                    wire.send(&sealed);
                }
            }
            Serve::Reverse { messages } => {
                let requests: Vec<Vec<u8>> = (0..messages)
                    .map(|_| wire.recv_message(&mut session))
                    .collect();
                for request in requests.iter().rev() {
                    let sealed = session.sealer.seal_message(request)?;
                    wire.send(&sealed);
                }
            }
            Serve::Reject => {}
        }
        Ok(())
    })();
    (wire.sent, outcome)
}

fn client_handshake(
    wire: &mut Recorder,
    token: &str,
    pinned: Option<Fingerprint>,
) -> Result<ChunkedSession, ProtoError> {
    let hello = v2_hello();
    wire.send(&hello);
    let response = read_stream_message(&mut wire.stream)?;
    assert!(HelloResponse::decode(&response)?.accepted);
    let prologue = v2::prologue(&hello, &response);
    let mut initiator = Initiator::new(token, pinned, v2::DEFAULT_MAX_MESSAGE, &prologue)?;
    wire.send_frame(&initiator.write_message1()?);
    let msg2 = wire.recv_frame().ok_or(ProtoError::Truncated("msg2"))?;
    initiator.read_message2(&msg2)?;
    let (msg3, awaiting) = initiator.write_message3()?;
    wire.send_frame(&msg3);
    let verdict = wire.recv_frame().ok_or_else(|| {
        ProtoError::Handshake("server closed the connection (wrong token?)".into())
    })?;
    awaiting.read_verdict(&verdict)
}

fn forms_of(secret: &[u8]) -> Vec<Vec<u8>> {
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut forms = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
    ];
    forms.extend(
        engines
            .iter()
            .map(|engine| engine.encode(secret).into_bytes()),
    );
    forms
}

fn contains_window(haystack: &[u8], needle: &[u8], window: usize) -> bool {
    needle
        .windows(window.min(needle.len()))
        .any(|w| haystack.windows(w.len()).any(|h| h == w))
}

#[test]
fn token_never_appears_on_the_wire() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Echo { messages: 3 }));
    let mut session = client_handshake(&mut client_wire, TOKEN, None).expect("handshake");
    for request in [&b"first request"[..], TOKEN.as_bytes(), &[0x42; 70_000][..]] {
        let sealed = session.sealer.seal_message(request).expect("seal");
        client_wire.send(&sealed);
        let reply = client_wire.recv_message(&mut session);
        assert_eq!(reply, request.iter().rev().copied().collect::<Vec<_>>());
    }
    let (server_sent, outcome) = server.join().expect("server thread");
    outcome.expect("server side succeeded");

    let mut secrets = forms_of(TOKEN.as_bytes());
    secrets.extend(forms_of(&v2::psk(TOKEN).expect("psk")));
    secrets.extend(forms_of(
        &eventdbx_proto::noise::v1::psk(TOKEN).expect("v1 psk"),
    ));
    for (side, bytes) in [("client", &client_wire.sent), ("server", &server_sent)] {
        assert!(
            bytes.len() > 70_000,
            "{side} capture holds the whole exchange"
        );
        for secret in &secrets {
            // No 12-byte window of any form of the token (or its PSKs) is on the wire.
            assert!(
                !contains_window(bytes, secret, 12),
                "{side} leaked a form of the token"
            );
        }
    }
}

#[test]
fn pinned_wrong_key_fails_closed_before_the_token_is_sent() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let expected = key.fingerprint();
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Echo { messages: 0 }));
    let impostor_pin = StaticKeypair::generate().expect("other key").fingerprint();
    let err =
        client_handshake(&mut client_wire, TOKEN, Some(impostor_pin)).expect_err("pin mismatch");
    match &err {
        ProtoError::ServerKeyMismatch { pinned, presented } => {
            assert_eq!(pinned, &impostor_pin.to_string());
            assert_eq!(presented, &expected.to_string());
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    // The client sent only msg1 (4-byte header + 65 bytes) and then nothing: no msg3, no token.
    assert_eq!(client_wire.sent.len(), v2_hello().len() + 4 + 65);
    drop(client_wire);
    let (_, outcome) = server.join().expect("server thread");
    assert!(
        matches!(outcome, Err(ProtoError::Truncated("msg3"))),
        "{outcome:?}"
    );
}

#[test]
fn pinned_right_key_connects() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let pin: Fingerprint = key
        .fingerprint()
        .to_string()
        .to_uppercase()
        .replace("SHA256:", "sha256:")
        .parse()
        .expect("parse pin");
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Echo { messages: 1 }));
    let mut session = client_handshake(&mut client_wire, TOKEN, Some(pin)).expect("handshake");
    assert_eq!(session.server_fingerprint, Some(pin));
    client_wire.send(&session.sealer.seal_message(b"ping").expect("seal"));
    assert_eq!(client_wire.recv_message(&mut session), b"gnip");
    server.join().expect("server thread").1.expect("server ok");
}

#[test]
fn wrong_token_fails_the_handshake() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Echo { messages: 0 }));
    let err =
        client_handshake(&mut client_wire, "some-other-token", None).expect_err("wrong token");
    assert!(matches!(err, ProtoError::Handshake(_)), "{err:?}");
    let (_, outcome) = server.join().expect("server thread");
    assert!(
        matches!(outcome, Err(ProtoError::Handshake(_))),
        "{outcome:?}"
    );
}

#[test]
fn server_rejection_reaches_the_client() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let server = thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Reject));
    let err = client_handshake(&mut client_wire, TOKEN, None).expect_err("rejected");
    assert!(
        matches!(&err, ProtoError::Rejected(reason) if reason == "token has been revoked"),
        "{err:?}"
    );
    server.join().expect("server thread").1.expect("server ok");
}

#[test]
fn one_mebibyte_request_and_response_round_trip() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Echo { messages: 1 }));
    let mut session = client_handshake(&mut client_wire, TOKEN, None).expect("handshake");
    let request: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sealed = session.sealer.seal_message(&request).expect("seal 1 MiB");
    assert!(
        sealed.len() > request.len() + 16 * 16,
        "split into several chunks"
    );
    client_wire.send(&sealed);
    let reply = client_wire.recv_message(&mut session);
    assert_eq!(reply.len(), request.len());
    assert!(reply.iter().eq(request.iter().rev()));
    server.join().expect("server thread").1.expect("server ok");
}

#[test]
fn several_requests_in_flight_are_answered_out_of_order() {
    let (mut client_wire, server_wire) = connect();
    let key = StaticKeypair::generate().expect("key");
    let server =
        thread::spawn(move || run_server(server_wire, key, TOKEN, Serve::Reverse { messages: 4 }));
    let mut session = client_handshake(&mut client_wire, TOKEN, None).expect("handshake");
    for id in 1u64..=4 {
        let mut request = id.to_be_bytes().to_vec();
        request.resize(usize::try_from(id).expect("small") * 40_000, id as u8);
        let sealed = session.sealer.seal_message(&request).expect("seal");
        client_wire.send(&sealed);
    }
    let ids: Vec<u64> = (0..4)
        .map(|_| {
            let reply = client_wire.recv_message(&mut session);
            u64::from_be_bytes(reply[..8].try_into().expect("id prefix"))
        })
        .collect();
    assert_eq!(ids, [4, 3, 2, 1]);
    server.join().expect("server thread").1.expect("server ok");
}

#[test]
fn messages_over_the_peer_maximum_are_refused_before_sending() {
    let key = StaticKeypair::generate().expect("key");
    let prologue = v2::prologue(&v2_hello(), &hello_response());
    let mut client = Initiator::new(TOKEN, None, 1024 * 1024, &prologue).expect("initiator");
    let mut server = Responder::new(&key, 2 * 1024 * 1024, &prologue).expect("responder");
    server
        .read_message1(&client.write_message1().expect("msg1"))
        .expect("msg1");
    client
        .read_message2(
            &server
                .write_message2(Some(&v2::psk(TOKEN).expect("psk")))
                .expect("msg2"),
        )
        .expect("msg2");
    let (msg3, awaiting) = client.write_message3().expect("msg3");
    let (verdict, mut server_session) = server
        .read_message3(&msg3)
        .expect("msg3")
        .accept()
        .expect("accept");
    let mut client_session = awaiting
        .read_verdict(frame::decode_exact(&verdict, v2::FRAME_LIMIT).expect("frame"))
        .expect("verdict");
    assert_eq!(client_session.sealer.peer_max(), 2 * 1024 * 1024);
    assert_eq!(server_session.sealer.peer_max(), 1024 * 1024);
    let err = server_session
        .sealer
        .seal_message(&vec![0u8; 1024 * 1024 + 1])
        .expect_err("too large");
    assert!(matches!(
        err,
        ProtoError::MessageTooLarge {
            len: 1_048_577,
            limit: 1_048_576
        }
    ));
    // The refusal left the session in step.
    let sealed = server_session
        .sealer
        .seal_message(b"still fine")
        .expect("seal");
    let mut rest = &sealed[..];
    let mut got = None;
    while let Some((payload, used)) = frame::split(rest, v2::FRAME_LIMIT).expect("frame") {
        got = client_session.opener.open_frame(payload).expect("open");
        rest = &rest[used..];
    }
    assert_eq!(got.as_deref(), Some(&b"still fine"[..]));
}

/// Both ends of a v2 session, handshake done in memory.
fn session_pair(max_message: usize) -> (ChunkedSession, ChunkedSession) {
    let prologue = v2::prologue(&v2_hello(), &hello_response());
    let server_key = StaticKeypair::generate().expect("key");
    let mut server = Responder::new(&server_key, max_message, &prologue).expect("responder");
    let mut client = Initiator::new(TOKEN, None, max_message, &prologue).expect("initiator");
    server
        .read_message1(&client.write_message1().expect("msg1"))
        .expect("msg1");
    client
        .read_message2(
            &server
                .write_message2(Some(&v2::psk(TOKEN).expect("psk")))
                .expect("msg2"),
        )
        .expect("msg2");
    let (msg3, awaiting) = client.write_message3().expect("msg3");
    let (verdict, server_session) = server
        .read_message3(&msg3)
        .expect("msg3")
        .accept()
        .expect("accept");
    let client_session = awaiting
        .read_verdict(frame::decode_exact(&verdict, v2::FRAME_LIMIT).expect("frame"))
        .expect("verdict");
    (client_session, server_session)
}

#[test]
fn the_length_of_a_message_under_way_is_known_from_its_first_chunk() {
    let (mut client, mut server) = session_pair(v2::DEFAULT_MAX_MESSAGE);
    let len = 300_000;
    let sealed = client.sealer.seal_message(&vec![7u8; len]).expect("seal");
    let mut rest = &sealed[..];
    let mut message = None;
    let mut announced = None;
    while let Some((payload, used)) = frame::split(rest, v2::FRAME_LIMIT).expect("frame") {
        message = server.opener.open_frame(payload).expect("open");
        announced = announced.or(server.opener.pending_len());
        rest = &rest[used..];
    }
    assert_eq!(announced, Some(len), "known once the first chunk is open");
    assert_eq!(
        server.opener.pending_len(),
        None,
        "nothing under way once it is whole"
    );
    assert_eq!(message.expect("whole message").len(), len);
}

/// Builds the deterministic handshake of `docs/protocol.md` and returns `(name, hex)` lines.
fn test_vectors() -> Vec<(&'static str, String)> {
    let server_key = StaticKeypair::from_private([0x11; 32]);
    let keys = FixedKeys {
        static_private: [0x22; 32],
        ephemeral_private: [0x33; 32],
    };
    let hello = b"\x00\x00\x00\x00\x05\x00\x00\x00";
    let response = b"\x00\x00\x00\x00\x04\x00\x00\x00";
    let prologue = v2::prologue(hello, response);
    let token = "tok";
    let mut client =
        Initiator::with_fixed_keys(token, None, v2::DEFAULT_MAX_MESSAGE, &prologue, keys)
            .expect("initiator");
    let mut server = Responder::with_fixed_ephemeral(
        &server_key,
        v2::DEFAULT_MAX_MESSAGE,
        &prologue,
        [0x44; 32],
    )
    .expect("responder");
    let msg1 = client.write_message1().expect("msg1");
    let id = server.read_message1(&msg1).expect("read msg1");
    let msg2 = server
        .write_message2(Some(&v2::psk(token).expect("psk")))
        .expect("msg2");
    client.read_message2(&msg2).expect("read msg2");
    let (msg3, awaiting) = client.write_message3().expect("msg3");
    let (verdict, mut server_session) = server
        .read_message3(&msg3)
        .expect("read msg3")
        .accept()
        .expect("accept");
    let mut client_session = awaiting
        .read_verdict(frame::decode_exact(&verdict, v2::FRAME_LIMIT).expect("frame"))
        .expect("verdict");
    let request = client_session.sealer.seal_message(b"hello").expect("seal");
    let (payload, _) = frame::split(&request, v2::FRAME_LIMIT)
        .expect("ok")
        .expect("frame");
    assert_eq!(
        server_session
            .opener
            .open_frame(payload)
            .expect("open")
            .as_deref(),
        Some(&b"hello"[..])
    );
    vec![
        ("prologue", hex::encode(&prologue)),
        ("token_id", id.to_string()),
        ("psk", hex::encode(v2::psk(token).expect("psk"))),
        ("server_public", hex::encode(server_key.public_key())),
        ("fingerprint", server_key.fingerprint().to_string()),
        ("msg1", hex::encode(&msg1)),
        ("msg2", hex::encode(&msg2)),
        ("msg3", hex::encode(&msg3)),
        ("verdict_frame", hex::encode(&verdict)),
        ("first_request_frame", hex::encode(&request)),
    ]
}

#[test]
fn docs_hold_the_test_vectors_the_code_produces() {
    let docs = std::fs::read_to_string(crate::manifest_dir().join("../../docs/protocol.md"))
        .unwrap_or_default();
    let lines: Vec<String> = test_vectors()
        .into_iter()
        .map(|(name, value)| format!("{name:<20} = {value}"))
        .collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|line| !docs.contains(line.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md lacks or disagrees on {} vector lines; the code produces:\n{}",
        missing.len(),
        lines.join("\n")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_handshake_and_transport_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let key = StaticKeypair::from_private([7; 32]);
        let mut server = Responder::new(&key, 1 << 20, b"").expect("responder");
        let _ = server.read_message1(&bytes);
        let mut client = Initiator::new("tok", None, 1 << 20, b"").expect("initiator");
        let _ = client.write_message1().expect("msg1");
        prop_assert!(client.read_message2(&bytes).is_err());
        let mut v1_server = eventdbx_proto::noise::v1::Responder::new("tok").expect("v1");
        prop_assert!(v1_server.read_message1(&bytes).is_err());
        let _ = frame::split(&bytes, v2::FRAME_LIMIT);
        let _ = frame::decode_exact(&bytes, v2::FRAME_LIMIT);
        let _ = String::from_utf8_lossy(&bytes).parse::<Fingerprint>();
    }

    #[test]
    fn hostile_bytes_after_the_handshake_never_panic(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)
    ) {
        let key = StaticKeypair::from_private([7; 32]);
        let mut client = Initiator::new("tok", None, 1 << 20, b"").expect("initiator");
        let mut server = Responder::new(&key, 1 << 20, b"").expect("responder");
        server.read_message1(&client.write_message1().expect("msg1")).expect("read msg1");
        client.read_message2(&server.write_message2(Some(&v2::psk("tok").expect("psk"))).expect("msg2")).expect("read msg2");
        prop_assert!(server.read_message3(&frames[0]).is_err());
        let (_, awaiting) = client.write_message3().expect("msg3");
        prop_assert!(awaiting.read_verdict(&frames[0]).is_err());
    }

    #[test]
    fn garbage_ciphertext_in_established_sessions_is_a_typed_error(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)
    ) {
        let key = StaticKeypair::from_private([7; 32]);
        let mut client = Initiator::new("tok", None, 1 << 20, b"").expect("initiator");
        let mut server = Responder::new(&key, 1 << 20, b"").expect("responder");
        server.read_message1(&client.write_message1().expect("msg1")).expect("read msg1");
        client.read_message2(&server.write_message2(Some(&v2::psk("tok").expect("psk"))).expect("msg2")).expect("read msg2");
        let (msg3, _) = client.write_message3().expect("msg3");
        let (_, mut v2_session) = server.read_message3(&msg3).expect("read msg3").accept().expect("accept");

        let mut v1_client = eventdbx_proto::noise::v1::Initiator::new("tok").expect("v1 initiator");
        let mut v1_server = eventdbx_proto::noise::v1::Responder::new("tok").expect("v1 responder");
        v1_server.read_message1(&v1_client.write_message1().expect("v1 msg1")).expect("v1 read msg1");
        let (_, mut v1_session) = v1_server.write_message2().expect("v1 msg2");

        for frame in &frames {
            prop_assert!(matches!(v2_session.opener.open_frame(frame), Err(ProtoError::Decrypt)));
            prop_assert!(matches!(v1_session.opener.open(frame), Err(ProtoError::Decrypt)));
        }
    }
}
