//! Handshakes: v2 (default), v1, plaintext, negotiation, pinning, token rejection.

use eventdbx_client::{Client, ErrorKind, Fingerprint, Protocol, RetryOptions, Transport};

use crate::harness::{Options, Proxy, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_transport_is_v2_with_capabilities() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config()).await.expect("connect");
    assert_eq!(client.protocol().await, Some(Protocol::V2));
    assert_eq!(client.server_fingerprint().await, Some(server.fingerprint));
    let capabilities = client.server_capabilities().await;
    assert!(
        capabilities.iter().any(|c| c == "idempotency_key"),
        "{capabilities:?}"
    );
    assert_eq!(client.max_request_bytes().await, Some(16 * 1024 * 1024));
    assert!(!client.get("order", "nope").await.expect("get").found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_connects_and_answers() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect("connect v1");
    assert_eq!(client.protocol().await, Some(Protocol::V1));
    assert_eq!(client.max_request_bytes().await, Some(65_519));
    assert!(!client.get("order", "nope").await.expect("get").found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_when_the_server_allows_it() {
    let server = TestServer::start_with(Options {
        allow_plaintext: true,
        ..Options::default()
    })
    .await;
    let client = Client::connect(server.config().transport(Transport::Plaintext))
        .await
        .expect("connect plaintext");
    assert_eq!(client.protocol().await, Some(Protocol::Plaintext));
    assert_eq!(client.max_request_bytes().await, Some(65_535));
    client
        .create("order", "o-1", "order_created", r#"{"a":1}"#)
        .await
        .expect("create");
    assert!(client.get("order", "o-1").await.expect("get").found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_plaintext_is_a_clear_handshake_error() {
    let server = TestServer::start().await;
    let err = Client::connect(
        server
            .config()
            .transport(Transport::Plaintext)
            .retry(RetryOptions::attempts(3)),
    )
    .await
    .expect_err("plaintext must be refused");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(!err.is_retriable());
    assert!(
        err.message()
            .contains("refused the plaintext control channel"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_key_right_and_wrong() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().server_key(server.fingerprint))
        .await
        .expect("pinned right key");
    assert_eq!(client.protocol().await, Some(Protocol::V2));

    let wrong = Fingerprint([7u8; 32]);
    let err = Client::connect(server.config().server_key(wrong))
        .await
        .expect_err("wrong pin");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(err.message().contains("server key mismatch"), "{err}");
    assert!(!err.is_token_rejected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_told_so_on_v2() {
    let mut server = TestServer::start().await;
    // Revoked as `dbx token revoke` would (another authority on the same files); the restarted
    // server reads the revocation, and the revoked token's PSK kept apart for its verdict.
    let config =
        eventdbx_server::config::Config::from_toml_str("", server.dir.path()).expect("config text");
    let authority = eventdbx_server::auth::Authority::open_with(
        eventdbx_server::authority_config(&config),
        eventdbx_server::auth::KeyOverrides::default(),
    )
    .expect("authority");
    authority.revoke(&server.token, None).expect("revoke");
    server.restart().await;
    let err = Client::connect(server.config().transport(Transport::V2))
        .await
        .expect_err("revoked");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(err.is_token_rejected(), "{err}");
    assert!(err.message().contains("token has been revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_fails_the_handshake_on_both_versions() {
    let server = TestServer::start().await;
    for transport in [Transport::V2, Transport::V1] {
        let mut config = server.config().transport(transport);
        config.token = "not-a-token".into();
        let err = Client::connect(config).await.expect_err("wrong token");
        assert_eq!(err.kind(), ErrorKind::Handshake, "{transport:?}: {err}");
        assert!(err.is_token_rejected(), "{transport:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_v1_on_a_v1_only_server_unless_forbidden() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, true).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("fallback to v1");
    assert_eq!(client.protocol().await, Some(Protocol::V1));
    assert_eq!(
        proxy.connection_count(),
        2,
        "the fallback uses a new connection"
    );
    client
        .create("order", "o-1", "order_created", "{}")
        .await
        .expect("create over v1");

    for config in [
        server.config().port(proxy.port).transport(Transport::V2),
        server
            .config()
            .port(proxy.port)
            .server_key(server.fingerprint),
    ] {
        let err = Client::connect(config).await.expect_err("no fallback");
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert!(
            err.message().contains("does not support protocol v2"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_errors_come_before_any_io() {
    let mut config = eventdbx_client::ClientConfig::new("  ", "default").port(1);
    let err = Client::connect(config.clone())
        .await
        .expect_err("empty token");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    config.token = "tok".into();
    let err = Client::connect(
        config
            .transport(Transport::V1)
            .server_key(Fingerprint([0; 32])),
    )
    .await
    .expect_err("pin with v1");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retriable() {
    // Bound but not listening: connections are refused, and the port cannot go to anyone else
    // meanwhile (a probed and released port could).
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let err = Client::connect(eventdbx_client::ClientConfig::new("tok", "default").port(port))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retriable());
}

#[test]
fn config_from_env_lookup() {
    let vars = [
        ("EVENTDBX_HOST", "db.local"),
        ("EVENTDBX_PORT", "7000"),
        ("EVENTDBX_TOKEN", " tok "),
        ("EVENTDBX_TENANT_ID", "acme"),
        ("EVENTDBX_NO_NOISE", "TRUE"),
    ];
    let lookup = |name: &str| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let config = eventdbx_client::ClientConfig::from_lookup(lookup).expect("config");
    assert_eq!(config.host, "db.local");
    assert_eq!(config.port, 7000);
    assert_eq!(config.token, " tok ");
    assert_eq!(config.tenant_id, "acme");
    assert_eq!(config.transport, Transport::Plaintext);

    let defaults = eventdbx_client::ClientConfig::from_lookup(|name| {
        (name == "EVENTDBX_NO_NOISE").then(|| "yes".to_owned())
    })
    .expect("defaults");
    assert_eq!((defaults.host.as_str(), defaults.port), ("127.0.0.1", 6363));
    assert_eq!(defaults.transport, Transport::Auto);
    assert!(eventdbx_client::ClientConfig::from_lookup(|name| {
        (name == "EVENTDBX_PORT").then(|| "x".to_owned())
    })
    .is_err());
}

#[test]
fn retry_delays_double_up_to_the_maximum() {
    use std::time::Duration;
    let retry = RetryOptions {
        attempts: 5,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(350),
        jitter: false,
    };
    let delays: Vec<_> = (1..=4).map(|k| retry.delay(k).as_millis()).collect();
    assert_eq!(delays, [100, 200, 350, 350]);
    let jittered = RetryOptions {
        jitter: true,
        ..retry
    };
    for k in 1..=4 {
        let delay = jittered.delay(k);
        assert!(
            delay <= retry.delay(k) && delay >= retry.delay(k) / 2,
            "{delay:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_trimmed_on_both_versions() {
    let server = TestServer::start().await;
    for transport in [Transport::V2, Transport::V1] {
        let mut config = server.config().transport(transport);
        config.token = format!("  {}\n", server.token);
        let client = Client::connect(config).await.expect("trimmed token");
        client
            .create("order", &format!("{transport:?}"), "e", "{}")
            .await
            .expect("per-request token trimmed too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_token_never_crosses_the_wire() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("connect");
    client
        .create("order", "o-1", "e", r#"{"a":1}"#)
        .await
        .expect("create");
    assert!(client.get("order", "o-1").await.expect("get").found());
    client.close().await;
    let captured = proxy.captured.lock().expect("capture").clone();
    assert!(captured.len() > 500, "{} bytes captured", captured.len());
    let contains = |needle: &[u8]| captured.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(server.token.as_bytes()), "token in clear");
    for segment in server.token.split('.') {
        assert!(!contains(segment.as_bytes()), "token segment in clear");
    }
    let digest = eventdbx_proto::noise::v1::psk(&server.token).expect("sha-256 of the token");
    assert!(!contains(&digest), "SHA-256 of the token in clear");
    // The v2 hello carries an explicitly empty token (a one-byte text: just the NUL).
    let hello = eventdbx_proto::hello::Hello::decode(&captured).expect("hello first");
    assert_eq!((hello.protocol_version, hello.token.as_str()), (2, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_disabled_on_the_server_still_serves_the_default_client() {
    let server = TestServer::start_with(Options {
        accept_v1: false,
        ..Options::default()
    })
    .await;
    let err = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect_err("v1 disabled");
    assert_eq!(err.kind(), ErrorKind::Handshake);
    assert!(
        err.message()
            .contains("protocol version 1 is disabled on this server"),
        "{err}"
    );
    let client = Client::connect(server.config()).await.expect("v2");
    assert_eq!(client.protocol().await, Some(Protocol::V2));
}
