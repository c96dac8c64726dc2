//! The server also runs on a current-thread runtime (commands then go to blocking threads, and
//! durable writes await their group's commit on the runtime's one thread).

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::schema::control_capnp::control_response;
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{connect_v2, issue_token, ok, serve_on, ALL_ACTIONS};

#[tokio::test(flavor = "current_thread")]
async fn a_plaintext_session_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults(dir.path().to_path_buf());
    config.allow_plaintext = true;
    let server = Server::open(config).expect("server");
    let (token, _) = server
        .auth()
        .issue(TokenRequest {
            group: "ops".into(),
            user: "jane".into(),
            actions: vec!["*.*".into()],
            ..TokenRequest::default()
        })
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let hello = Hello {
        protocol_version: 1,
        token,
        tenant_id: "default".into(),
        no_noise: true,
    };
    stream.write_all(&hello.encode()).await.expect("hello");
    let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream.read_exact(&mut buf).await.expect("response");
        reader.feed(&buf).expect("stream message");
    }
    let response = HelloResponse::decode(reader.message().expect("whole")).expect("decodes");
    assert!(response.accepted && response.no_noise, "{response:?}");

    let request = message::encode_request(|mut request| {
        request.set_id(5);
        let mut verify = request.init_payload().init_verify_aggregate();
        verify.set_aggregate_type("order");
        verify.set_aggregate_id("o-1");
        Ok(())
    })
    .expect("request");
    let mut framed = (request.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    stream.write_all(&framed).await.expect("request");
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.expect("frame header");
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).await.expect("frame");
    let decoded = message::decode_response(&payload).expect("response");
    let reply = decoded.get().expect("root");
    assert_eq!(reply.get_id(), 5);
    match reply.get_payload().which().expect("member") {
        control_response::payload::Error(error) => {
            let error = error.expect("error");
            assert_eq!(
                error.get_code().expect("code").to_str().expect("utf8"),
                "aggregate_not_found"
            );
        }
        _ => panic!("expected aggregate_not_found"),
    }
    let _ = stop.send(());
    serving
        .await
        .expect("server task")
        .expect("server stops cleanly");
}

/// Many sessions writing durably at once to a server on a current-thread runtime: a write that
/// finds a round running is queued and its task awaits the answer while the runtime's one
/// thread serves the others; every write is answered, in order per aggregate, and readable.
#[test]
fn concurrent_durable_writes_on_a_current_thread_runtime_all_complete() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults(dir.path().join("data"));
    config.storage.durability = Durability::Fsync;
    let server = Server::open(config).expect("server");
    let token = issue_token(&server, &ALL_ACTIONS);
    let fingerprint = server.fingerprint();
    let (addr, stop, task) = serve_on(&runtime, server);
    let serving = std::thread::spawn(move || runtime.block_on(task).expect("server task"));
    const SESSIONS: usize = 8;
    const WRITES: u64 = 12;
    let mut setup = connect_v2(addr, &token, "default", Some(fingerprint)).expect("session");
    for n in 0..SESSIONS / 2 {
        ok(setup.create("order", &format!("shared-{n}"), "created", "{}"));
    }
    let writers: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut session =
                    connect_v2(addr, &token, "default", Some(fingerprint)).expect("session");
                // Two aggregates per session, one shared with the next session.
                let ids = [format!("own-{n}"), format!("shared-{}", n / 2)];
                for version in 1..=WRITES {
                    for id in &ids {
                        let payload = format!(r#"{{"n":{n},"v":{version}}}"#);
                        let reply = if version == 1 && id.starts_with("own") {
                            session.create("order", id, "created", &payload)
                        } else {
                            session.apply("order", id, "changed", &payload)
                        };
                        ok(reply);
                    }
                }
                session
            })
        })
        .collect();
    let sessions: Vec<_> = writers
        .into_iter()
        .map(|writer| writer.join().expect("writer"))
        .collect();
    // Read from another session than the writers'.
    for n in 0..SESSIONS {
        let own = ok(setup.get("order", &format!("own-{n}")));
        assert_eq!(own["aggregate"]["version"], WRITES, "own-{n}: {own}");
    }
    for n in 0..SESSIONS / 2 {
        let shared = ok(setup.get("order", &format!("shared-{n}")));
        assert_eq!(
            shared["aggregate"]["version"],
            1 + 2 * WRITES,
            "shared-{n}: {shared}"
        );
    }
    drop((setup, sessions));
    let _ = stop.send(());
    serving.join().expect("server thread");
}
