//! The server also runs on a current-thread runtime (commands then go to blocking threads).

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::schema::control_capnp::control_response;
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
