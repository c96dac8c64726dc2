//! Faults with a real server: dropped connections, lost replies, restarts, timeouts, close.

use std::time::{Duration, Instant};

use eventdbx_client::{Client, ErrorKind, EventsQuery, RetryOptions, Transport};

use crate::harness::{Fault, Proxy, TestServer};

fn quick_retries(attempts: u32) -> RetryOptions {
    RetryOptions {
        attempts,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        jitter: false,
    }
}

async fn event_count(client: &Client, aggregate_type: &str, aggregate_id: &str) -> usize {
    client
        .events(&EventsQuery::new(aggregate_type, aggregate_id))
        .await
        .expect("events")
        .events()
        .expect("json")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_every_call_fails_immediately() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    // A retry would wait a minute first: the calls below must not come near it.
    let patient = RetryOptions {
        attempts: 5,
        initial_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        jitter: false,
    };
    for transport in [Transport::V2, Transport::V1] {
        let client = Client::connect(
            server
                .config()
                .port(proxy.port)
                .transport(transport)
                .retry(patient),
        )
        .await
        .expect("connect");
        client.close().await;
        client.close().await;
        assert!(client.is_closed());
        assert!(!client.is_connected().await);
        let connections = proxy.connection_count();
        let started = Instant::now();
        let err = client.get("order", "o-1").await.expect_err("closed");
        assert!(err.is_closed(), "{err}");
        assert!(!err.is_retriable());
        assert_eq!(err.kind(), ErrorKind::Closed);
        let err = client
            .create("order", "o-1", "e", "{}")
            .await
            .expect_err("closed");
        assert!(err.is_closed(), "{err}");
        // Neither reconnected nor waited to retry (the bound only tells a retry's minute
        // from no wait at all, whatever the load).
        assert_eq!(proxy.connection_count(), connections, "{transport:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_keep_the_connection() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    for transport in [Transport::V2, Transport::V1] {
        let before = proxy.connection_count();
        let client = Client::connect(server.config().port(proxy.port).transport(transport))
            .await
            .expect("connect");
        let id = format!("{transport:?}");
        let err = client
            .patch("order", &id, "e", r#"[{"op":"add","path":"/a","value":1}]"#)
            .await
            .expect_err("unknown aggregate");
        assert_eq!(err.code(), "aggregate_not_found", "{err}");
        assert!(!err.is_retriable());
        client
            .create("order", &id, "e", "{}")
            .await
            .expect("create");
        let err = client
            .create("order", &id, "e", "{}")
            .await
            .expect_err("exists");
        assert_eq!(err.code(), "aggregate_exists");
        client.archive("order", &id, None).await.expect("archive");
        client.restore("order", &id, None).await.expect("restore");
        client.get("order", &id).await.expect("get");
        client.list(&Default::default()).await.expect("list");
        client
            .archive("order", &id, None)
            .await
            .expect("archive again");
        let err = client
            .apply("order", &id, "e", "{}")
            .await
            .expect_err("archived");
        assert_eq!(err.code(), "aggregate_archived");
        client
            .restore("order", &id, None)
            .await
            .expect("restore again");
        assert!(client.is_connected().await);
        assert_eq!(event_count(&client, "order", &id).await, 1);
        assert_eq!(
            proxy.connection_count(),
            before + 1,
            "{transport:?}: one connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_retried_after_the_connection_drops() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    for transport in [Transport::V2, Transport::V1] {
        let before = proxy.connection_count();
        let client = Client::connect(
            server
                .config()
                .port(proxy.port)
                .transport(transport)
                .retry(quick_retries(3)),
        )
        .await
        .expect("connect");
        client
            .create("order", &format!("{transport:?}"), "e", "{}")
            .await
            .expect("create");
        proxy.arm(Fault::DropNextRequest);
        let got = client
            .get("order", &format!("{transport:?}"))
            .await
            .expect("read retried on a new connection");
        assert!(got.found());
        assert_eq!(proxy.connection_count(), before + 2, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_the_failure_surfaces_and_the_next_call_reconnects() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("connect");
    proxy.arm(Fault::DropNextRequest);
    let err = client
        .get("order", "o-1")
        .await
        .expect_err("connection dropped");
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retriable());
    assert!(!client
        .get("order", "o-1")
        .await
        .expect("reconnected")
        .found());
    assert_eq!(proxy.connection_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_whose_reply_was_lost_is_applied_once() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    for transport in [Transport::V2, Transport::V1] {
        let id = format!("{transport:?}");
        let client = Client::connect(
            server
                .config()
                .port(proxy.port)
                .transport(transport)
                .retry(quick_retries(3)),
        )
        .await
        .expect("connect");
        proxy.arm(Fault::DropNextResponse);
        client
            .create("order", &id, "order_created", r#"{"n":1}"#)
            .await
            .expect("create retried with its idempotency key");
        proxy.arm(Fault::DropNextResponse);
        let event = client
            .apply("order", &id, "order_paid", r#"{"paid":true}"#)
            .await
            .expect("apply retried with its idempotency key")
            .value()
            .expect("json")
            .expect("verbose");
        assert_eq!(event["version"], 2);
        assert_eq!(event_count(&client, "order", &id).await, 2, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_without_retries_is_not_repeated() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("connect");
    client
        .create("order", "o-1", "e", "{}")
        .await
        .expect("create");
    proxy.arm(Fault::DropNextResponse);
    let err = client
        .apply("order", "o-1", "e", "{}")
        .await
        .expect_err("reply lost");
    assert!(err.is_retriable(), "{err}");
    assert_eq!(proxy.connection_count(), 1, "no retry happened");
    // The server did apply it; the client did not apply it twice.
    assert_eq!(event_count(&client, "order", "o-1").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_a_server_restart() {
    let mut server = TestServer::start().await;
    // The proxy's port stays put while the server is down, and counts the attempts made then.
    let proxy = Proxy::start(server.port, false).await;
    // Retries enough to outlast a restart on a loaded machine (about a minute and a half).
    let client = Client::connect(server.config().port(proxy.port).retry(RetryOptions {
        attempts: 1000,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        jitter: true,
    }))
    .await
    .expect("connect");
    client
        .create("order", "o-1", "e", r#"{"n":1}"#)
        .await
        .expect("create");

    // Restarted between two calls: the next read finds the connection gone and reconnects.
    server.restart().await;
    assert!(client
        .get("order", "o-1")
        .await
        .expect("read after restart")
        .found());

    // Down while calls are made: connecting is retried until the server is back.
    server.stop().await;
    let attempts_before = proxy.connection_count();
    let reader = tokio::spawn({
        let client = client.clone();
        async move { client.get("order", "o-1").await }
    });
    let writer = tokio::spawn({
        let client = client.clone();
        async move { client.apply("order", "o-1", "e", r#"{"n":2}"#).await }
    });
    // Restart only once a call has tried to connect and found the server gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.connection_count() < attempts_before + 2 {
        assert!(Instant::now() < deadline, "no call tried to connect");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart().await;
    assert!(reader.await.expect("task").expect("read retried").found());
    writer.await.expect("task").expect("write retried");
    assert_eq!(
        event_count(&client, "order", "o-1").await,
        2,
        "applied exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_timeout_answers_stay_in_step() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    for transport in [Transport::V2, Transport::V1] {
        let before = proxy.connection_count();
        let client = Client::connect(
            server
                .config()
                .port(proxy.port)
                .transport(transport)
                .request_timeout(Duration::from_millis(300)),
        )
        .await
        .expect("connect");
        let (a, b) = (format!("{transport:?}-a"), format!("{transport:?}-b"));
        client
            .create("order", &a, "e", r#"{"who":"a"}"#)
            .await
            .expect("create a");
        client
            .create("order", &b, "e", r#"{"who":"b"}"#)
            .await
            .expect("create b");
        // The answer is held until the call has timed out, then arrives late.
        proxy.arm(Fault::HoldNextResponse);
        let err = client.get("order", &a).await.expect_err("times out");
        assert!(err.is_timeout(), "{err}");
        assert!(err.is_retriable());
        proxy.release();
        proxy.forwarded().await;
        for _ in 0..3 {
            let got = client
                .get("order", &b)
                .await
                .expect("get b")
                .value()
                .expect("json")
                .expect("found");
            assert_eq!(got["state"]["who"], "b", "{transport:?}");
            let got = client
                .get("order", &a)
                .await
                .expect("get a")
                .value()
                .expect("json")
                .expect("found");
            assert_eq!(got["state"]["who"], "a", "{transport:?}");
        }
        let expected = match transport {
            // v2 drops the late answer and keeps the connection.
            Transport::V2 => before + 1,
            // v1 discards a connection whose answer is late.
            _ => before + 2,
        };
        assert_eq!(proxy.connection_count(), expected, "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_call_timeout_overrides_the_default() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let default = Duration::from_secs(120);
    let client = Client::connect(server.config().port(proxy.port).request_timeout(default))
        .await
        .expect("connect");
    client
        .create("order", "o-1", "e", "{}")
        .await
        .expect("create");
    // The answer is held until released: only a timeout ends the call.
    proxy.arm(Fault::HoldNextResponse);
    let started = Instant::now();
    let err = client
        .with_request_timeout(Duration::from_millis(100))
        .get("order", "o-1")
        .await
        .expect_err("short timeout");
    assert!(err.is_timeout(), "{err}");
    // Long before the default could have fired, however loaded the machine.
    assert!(started.elapsed() < default / 2, "{:?}", started.elapsed());
    proxy.release();
    assert!(client
        .get("order", "o-1")
        .await
        .expect("default timeout")
        .found());
}

/// A plaintext mock server that answers every request with the id plus one, and counts the
/// sessions (hellos that carry a token; the client's plaintext probe carries none).
async fn off_by_one_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use eventdbx_proto::frame::{self, V1_MAX_PLAINTEXT_FRAME};
    use eventdbx_proto::hello::{Hello, HelloResponse, MAX_HELLO_BYTES};
    use eventdbx_proto::message::{self, StreamMessageReader};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = std::sync::Arc::clone(&counter);
            tokio::spawn(async move {
                let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
                while reader.bytes_needed() > 0 {
                    let mut buf = vec![0u8; reader.bytes_needed()];
                    socket.read_exact(&mut buf).await.expect("hello");
                    reader.feed(&buf).expect("feed");
                }
                let hello = Hello::decode(&reader.into_message().expect("hello")).expect("hello");
                if !hello.token.is_empty() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                socket
                    .write_all(&HelloResponse::ok(true).encode())
                    .await
                    .expect("hello response");
                loop {
                    let mut header = [0u8; 4];
                    if socket.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = frame::payload_len(header, V1_MAX_PLAINTEXT_FRAME).expect("len");
                    let mut request = vec![0u8; len];
                    socket.read_exact(&mut request).await.expect("request");
                    let id = message::decode_request(&request)
                        .expect("request")
                        .get()
                        .expect("root")
                        .get_id();
                    let reply = message::encode_response(|mut response| {
                        response.set_id(id + 1);
                        response
                            .init_payload()
                            .init_get_aggregate()
                            .set_found(false);
                        Ok(())
                    })
                    .expect("encode");
                    let framed = frame::encode(&reply, V1_MAX_PLAINTEXT_FRAME).expect("frame");
                    if socket.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_response_id_discards_the_connection() {
    let (port, accepted) = off_by_one_server().await;
    let client = Client::connect(
        eventdbx_client::ClientConfig::new("tok", "default")
            .port(port)
            .transport(Transport::Plaintext),
    )
    .await
    .expect("connect");
    for round in 1..=2 {
        let err = client.get("order", "o-1").await.expect_err("mismatched id");
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.is_retriable());
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            round,
            "each call after a protocol error uses a new connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_never_downgrades_v2_to_v1() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port).retry(quick_retries(3)))
        .await
        .expect("connect");
    assert_eq!(client.protocol().await, Some(eventdbx_client::Protocol::V2));
    // An attacker now claims the server no longer speaks v2, and cuts the connection.
    proxy.reject_v2(true);
    proxy.arm(Fault::DropNextRequest);
    let err = client.get("order", "o-1").await.expect_err("no downgrade");
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert!(
        err.message().contains("does not support protocol v2"),
        "{err}"
    );
    // One connection, plus one v2 attempt that was refused; never a v1 hello.
    assert_eq!(proxy.connection_count(), 2);
    let captured = proxy.captured.lock().expect("capture").clone();
    assert!(
        !captured
            .windows(server.token.len())
            .any(|w| w == server.token.as_bytes()),
        "the token never went out in a v1 hello"
    );
}
