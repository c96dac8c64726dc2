//! Downgrade attempts through a forging proxy: a forged refusal of v2 for a server known to
//! speak it, and plaintext asked of a server that refuses it. In both the token must never
//! cross the wire in clear.

use eventdbx_client::{Client, ErrorKind, KnownV2Hosts, Protocol, Transport};

use crate::harness::{Options, Proxy, TestServer};

/// Whether `captured` holds the token, any of its dot-separated segments, or its SHA-256.
fn leaks_token(captured: &[u8], token: &str) -> bool {
    let contains = |needle: &[u8]| captured.windows(needle.len()).any(|w| w == needle);
    let digest = eventdbx_proto::noise::v1::psk(token).expect("sha-256 of the token");
    contains(token.as_bytes())
        || token.split('.').any(|segment| contains(segment.as_bytes()))
        || contains(&digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_seen_speaking_v2_is_never_downgraded_by_a_forged_refusal() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("v2 through the proxy");
    assert_eq!(client.protocol().await, Some(Protocol::V2));
    let debug = format!("{client:?}");
    assert!(
        !debug.contains(&server.token),
        "the token in a client's Debug: {debug}"
    );
    client.close().await;
    let known = std::fs::read_to_string(server.known_v2_hosts()).expect("known hosts written");
    let line = format!("127.0.0.1:{} {}", proxy.port, server.fingerprint);
    assert!(known.lines().any(|l| l == line), "{known}");

    // From now on the proxy answers every v2 hello as a v1-only server would.
    proxy.reject_v2(true);
    let err = Client::connect(server.config().port(proxy.port))
        .await
        .expect_err("a known v2 server must not be downgraded");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(!err.is_retriable(), "{err}");
    assert!(
        err.message()
            .contains("refusing to fall back to protocol v1"),
        "{err}"
    );
    let file = server.known_v2_hosts();
    assert!(err.message().contains(&*file.to_string_lossy()), "{err}");
    assert_eq!(proxy.connection_count(), 2, "no v1 connection was opened");
    let captured = proxy.captured.lock().expect("capture").clone();
    assert!(!leaks_token(&captured, &server.token), "token in clear");

    // A client with the memory disabled is back to first contact: it falls back.
    let client = Client::connect(
        server
            .config()
            .port(proxy.port)
            .known_v2_hosts(KnownV2Hosts::Disabled),
    )
    .await
    .expect("first contact falls back");
    assert_eq!(client.protocol().await, Some(Protocol::V1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_falls_back_only_when_v1_is_allowed() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, true).await;
    let refused = Client::connect(server.config().port(proxy.port).allow_v1_fallback(false))
        .await
        .expect_err("v1 not allowed");
    assert_eq!(refused.kind(), ErrorKind::Handshake, "{refused}");
    assert!(
        refused.message().contains("fallback to v1 is disabled"),
        "{refused}"
    );
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("first contact falls back by default");
    assert_eq!(client.protocol().await, Some(Protocol::V1));
    // A v1 session proves nothing about v2: the server is not recorded.
    assert!(!server.known_v2_hosts().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plaintext_attempt_never_sends_the_token() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let err = Client::connect(
        server
            .config()
            .port(proxy.port)
            .transport(Transport::Plaintext),
    )
    .await
    .expect_err("the server refuses plaintext");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(
        err.message()
            .contains("refused the plaintext control channel"),
        "{err}"
    );
    let captured = proxy.captured.lock().expect("capture").clone();
    let hello = eventdbx_proto::hello::Hello::decode(&captured).expect("a hello first");
    assert_eq!((hello.protocol_version, hello.no_noise), (1, true));
    assert!(!leaks_token(&captured, &server.token), "token in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_plaintext_sends_the_token_after_the_grant() {
    let server = TestServer::start_with(Options {
        allow_plaintext: true,
        ..Options::default()
    })
    .await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(
        server
            .config()
            .port(proxy.port)
            .transport(Transport::Plaintext),
    )
    .await
    .expect("plaintext granted");
    assert_eq!(client.protocol().await, Some(Protocol::Plaintext));
    client
        .create("order", "o-1", "order_created", "{}")
        .await
        .expect("create over plaintext");
    assert_eq!(proxy.connection_count(), 2, "a probe, then the session");
}
