//! Polling for answers (`ClientConfig::busy_poll`): a caller reads the socket for a moment
//! after its request goes out, decoding whatever arrives (its answer or others'). Answers stay their requests' whatever their timing: shared by
//! threads, pipelined on a current-thread or a multi-thread runtime, slower than the poll, or
//! with polling off.

use std::time::Duration;

use eventdbx_client::{blocking, Client, Transport};
use serde_json::json;

use crate::harness::{Fault, Options, Proxy, TestServer};

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime")
}

#[test]
fn the_default_budget_is_a_tenth_of_a_millisecond() {
    let config = eventdbx_client::ClientConfig::new("t", "default");
    assert_eq!(config.busy_poll, Duration::from_micros(100));
    assert_eq!(
        config.busy_poll(Duration::ZERO).busy_poll,
        Duration::ZERO,
        "zero turns polling off"
    );
}

/// Four threads share one polling blocking client, each writing and reading its own aggregate:
/// every answer is the thread's own, in order, on each transport.
#[test]
fn threads_sharing_a_polling_blocking_client_get_their_own_answers() {
    let runtime = server_runtime();
    let mut server = runtime.block_on(TestServer::start_with(Options {
        allow_plaintext: true,
        ..Options::default()
    }));
    for transport in [Transport::V2, Transport::V1, Transport::Plaintext] {
        let client = blocking::Client::connect(
            server
                .config()
                .transport(transport)
                .busy_poll(Duration::from_millis(1)),
        )
        .expect("connect");
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let client = &client;
                scope.spawn(move || {
                    let id = format!("{transport:?}-{t}");
                    client
                        .create("polled", &id, "started", &json!({ "t": t }).to_string())
                        .expect("create");
                    for version in 2..=100u64 {
                        let event = client
                            .apply(
                                "polled",
                                &id,
                                "stepped",
                                &json!({ "v": version }).to_string(),
                            )
                            .expect("apply")
                            .value()
                            .expect("json")
                            .expect("verbose");
                        assert_eq!(event["aggregate_id"], id.as_str());
                        assert_eq!(event["version"], version);
                        let got = client
                            .get("polled", &id)
                            .expect("get")
                            .value()
                            .expect("json")
                            .expect("found");
                        assert_eq!(got["aggregate_id"], id.as_str());
                        assert_eq!(got["state"]["t"], t);
                        assert_eq!(got["state"]["v"], version);
                    }
                });
            }
        });
        client.close();
    }
    runtime.block_on(server.stop());
}

/// 32 tasks pipeline their calls on one v2 connection whose callers poll (and so decode each
/// other's answers), on a current-thread and on a multi-thread runtime: each answer is its own
/// request's.
#[test]
fn pipelined_calls_with_polling_get_their_own_answers() {
    let server_runtime = server_runtime();
    let mut server = server_runtime.block_on(TestServer::start());
    let config = server.config().busy_poll(Duration::from_millis(1));
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    for runtime in [current_thread, multi_thread] {
        pipelined(&runtime, config.clone());
    }
    server_runtime.block_on(server.stop());
}

fn pipelined(runtime: &tokio::runtime::Runtime, config: eventdbx_client::ClientConfig) {
    let flavor = format!("{:?}", runtime.handle().runtime_flavor());
    runtime.block_on(async {
        let client = Client::connect(config).await.expect("connect");
        let mut tasks = Vec::new();
        for n in 0..32u64 {
            let client = client.clone();
            let flavor = flavor.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("p-{flavor}-{n}");
                client
                    .create("piped", &id, "started", &json!({ "n": n }).to_string())
                    .await
                    .expect("create");
                for version in 2..=30u64 {
                    let event = client
                        .apply(
                            "piped",
                            &id,
                            "stepped",
                            &json!({ "v": version }).to_string(),
                        )
                        .await
                        .expect("apply")
                        .value()
                        .expect("json")
                        .expect("verbose");
                    assert_eq!(event["aggregate_id"], id.as_str());
                    assert_eq!(event["version"], version);
                    let got = client
                        .get("piped", &id)
                        .await
                        .expect("get")
                        .value()
                        .expect("json")
                        .expect("found");
                    assert_eq!(got["state"]["n"], n);
                    assert_eq!(got["state"]["v"], version);
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        client.close().await;
    });
}

/// Answers held back far longer than the poll lasts still arrive (after the poll gives up, the
/// reader waits as before), and so do answers with polling off.
#[test]
fn answers_slower_than_the_poll_and_answers_with_polling_off_arrive() {
    let runtime = server_runtime();
    let mut server = runtime.block_on(TestServer::start());
    let proxy = runtime.block_on(Proxy::start(server.port, false));
    for budget in [Duration::from_micros(100), Duration::ZERO] {
        let client = blocking::Client::connect(server.config().port(proxy.port).busy_poll(budget))
            .expect("connect");
        let id = format!("slow-{}", budget.as_micros());
        client
            .create("slow", &id, "started", r#"{"v":1}"#)
            .expect("create");
        for version in 2..=6u64 {
            proxy.arm(Fault::DelayNextResponse(Duration::from_millis(20)));
            let event = client
                .apply("slow", &id, "stepped", &json!({ "v": version }).to_string())
                .expect("delayed apply")
                .value()
                .expect("json")
                .expect("verbose");
            assert_eq!(event["version"], version);
            for _ in 0..20 {
                let got = client
                    .get("slow", &id)
                    .expect("get")
                    .value()
                    .expect("json")
                    .expect("found");
                assert_eq!(got["state"]["v"], version, "{budget:?}");
            }
        }
        client.close();
    }
    drop(proxy);
    runtime.block_on(server.stop());
}
