//! Many tasks sharing one v2 connection.

use std::sync::Arc;

use eventdbx_client::{Client, Protocol};
use serde_json::json;

use crate::harness::{Proxy, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tasks_share_one_v2_connection() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("connect");
    assert_eq!(client.protocol().await, Some(Protocol::V2));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for n in 0..50u64 {
        let (client, barrier) = (client.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let id = format!("c-{n}");
            for round in 0..5u64 {
                let payload = json!({ "n": n, "round": round }).to_string();
                let written = if round == 0 {
                    client.create("counter", &id, "counted", &payload).await
                } else {
                    client.apply("counter", &id, "counted", &payload).await
                }
                .expect("write");
                let written = written.value().expect("json").expect("verbose");
                assert_eq!(written["aggregate_id"], id.as_str());
                assert_eq!(written["version"], round + 1);
                let got = client
                    .get("counter", &id)
                    .await
                    .expect("get")
                    .value()
                    .expect("json")
                    .expect("found");
                assert_eq!(got["aggregate_id"], id.as_str());
                assert_eq!(got["state"], json!({ "n": n, "round": round }));
                assert_eq!(got["version"], round + 1);
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(proxy.connection_count(), 1, "all on one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_take_turns_on_v1() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().transport(eventdbx_client::Transport::V1))
        .await
        .expect("connect");
    let mut tasks = Vec::new();
    for n in 0..20u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("v-{n}");
            client
                .create("counter", &id, "counted", &json!({ "n": n }).to_string())
                .await
                .expect("create");
            let got = client
                .get("counter", &id)
                .await
                .expect("get")
                .value()
                .expect("json")
                .expect("found");
            assert_eq!(got["state"]["n"], n);
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

/// 64 tasks, 1,000 mixed calls each, on one v2 connection: every answer is its request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_a_thousand_mixed_calls_each() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.port, false).await;
    let client = Client::connect(server.config().port(proxy.port))
        .await
        .expect("connect");
    let calls: u64 = std::env::var("EVENTDBX_STRESS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut tasks = Vec::new();
    for n in 0..64u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("m-{n}");
            client
                .create(
                    "mixed",
                    &id,
                    "started",
                    &json!({ "n": n, "i": 0 }).to_string(),
                )
                .await
                .expect("create");
            let mut version = 1u64;
            for i in 1..calls {
                match i % 5 {
                    0 => {
                        let event = client
                            .apply("mixed", &id, "stepped", &json!({ "i": i }).to_string())
                            .await
                            .expect("apply")
                            .value()
                            .expect("json")
                            .expect("verbose");
                        version += 1;
                        assert_eq!(event["aggregate_id"], id.as_str());
                        assert_eq!(event["version"], version);
                    }
                    1 | 3 => {
                        let got = client
                            .get("mixed", &id)
                            .await
                            .expect("get")
                            .value()
                            .expect("json")
                            .expect("found");
                        assert_eq!(got["aggregate_id"], id.as_str());
                        assert_eq!(got["state"]["n"], n);
                        assert_eq!(got["version"], version);
                    }
                    2 => {
                        let selection = client
                            .select("mixed", &id, &["n"])
                            .await
                            .expect("select")
                            .value()
                            .expect("json")
                            .expect("found");
                        assert_eq!(selection, json!({ "n": n }));
                    }
                    _ => {
                        let missing = format!("missing-{n}-{i}");
                        let err = client
                            .verify("mixed", &missing)
                            .await
                            .expect_err("unknown aggregate");
                        assert_eq!(err.code(), "aggregate_not_found");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(proxy.connection_count(), 1, "all on one connection");
}
