//! The blocking client: a smoke test from plain threads.

use std::time::{Duration, Instant};

use eventdbx_client::blocking::Client;
use eventdbx_client::{EventsQuery, ListQuery, Write};

use crate::harness::{Fault, Proxy, TestServer};

#[test]
fn blocking_client_smoke() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let mut server = runtime.block_on(TestServer::start());
    let client = Client::connect(server.config()).expect("connect");
    for n in 0..5 {
        client
            .create(
                "item",
                &format!("i-{n}"),
                "item_added",
                &format!(r#"{{"n":{n}}}"#),
            )
            .expect("create");
    }
    client
        .write(Write::apply("item", "i-0", "item_changed", r#"{"n":10}"#).expected_version(1))
        .expect("apply");
    let got = client
        .get("item", "i-0")
        .expect("get")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(got["state"]["n"], 10);
    let ids: Vec<String> = client
        .iter_list(ListQuery::new().take(2).sort("aggregate_id:asc"))
        .map(|item| {
            item.expect("item")["aggregate_id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["i-0", "i-1", "i-2", "i-3", "i-4"]);
    let versions: Vec<u64> = client
        .iter_events(EventsQuery::new("item", "i-0").take(1))
        .map(|event| event.expect("event")["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, [1, 2]);

    // Shared between threads.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let client = &client;
            scope.spawn(move || {
                let id = format!("t-{t}");
                client
                    .create("item", &id, "item_added", "{}")
                    .expect("create");
                assert!(client.get("item", &id).expect("get").found());
            });
        }
    });

    client.close();
    let err = client.get("item", "i-0").expect_err("closed");
    assert!(err.is_closed());
    drop(client);
    runtime.block_on(server.stop());
}

/// The blocking client runs its connection only while a call waits: a connection the server
/// closed between two calls must be noticed before the next request is written, so that even
/// a mutation without retries goes out on a new connection instead of failing.
#[test]
fn blocking_client_notices_a_connection_closed_between_calls() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let mut server = runtime.block_on(TestServer::start());
    // `attempts: 1` is the default: a failed mutation would surface.
    let client = Client::connect(server.config()).expect("connect");
    client
        .create("item", "i-1", "item_added", r#"{"n":1}"#)
        .expect("create");
    for n in 2..5 {
        runtime.block_on(server.restart());
        client
            .apply("item", "i-1", "item_changed", &format!(r#"{{"n":{n}}}"#))
            .expect("apply on a fresh connection after the server closed the old one");
    }
    let got = client
        .get("item", "i-1")
        .expect("get")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(got["version"], 4);
    assert_eq!(got["state"]["n"], 4);
    client.close();
    drop(client);
    runtime.block_on(server.stop());
}

/// A blocking caller reads its answer itself for a while, then leaves it to the connection's
/// reader task: a call whose answer never comes still ends with its timeout, long before the
/// default one, and the connection stays in step for the next call (whose late predecessor's
/// answer is dropped).
#[test]
fn a_blocking_call_whose_answer_is_held_times_out_and_the_next_one_is_answered() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let mut server = runtime.block_on(TestServer::start());
    let proxy = runtime.block_on(Proxy::start(server.port, false));
    let default = Duration::from_secs(120);
    let client = Client::connect(server.config().port(proxy.port).request_timeout(default))
        .expect("connect");
    client
        .create("item", "i-1", "item_added", r#"{"n":1}"#)
        .expect("create");
    // Timeouts above and below twice the caller's own wait (20 ms): the first waits on the
    // caller's thread then in the runtime, the second only in the runtime.
    for timeout in [Duration::from_millis(150), Duration::from_millis(30)] {
        proxy.arm(Fault::HoldNextResponse);
        let started = Instant::now();
        let err = client
            .with_request_timeout(timeout)
            .get("item", "i-1")
            .expect_err("the answer is held");
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() < default / 2, "{:?}", started.elapsed());
        proxy.release();
        runtime.block_on(proxy.forwarded());
        let got = client
            .get("item", "i-1")
            .expect("the next call")
            .value()
            .expect("json")
            .expect("found");
        assert_eq!(got["version"], 1);
    }
    client.close();
    drop(client);
    runtime.block_on(server.stop());
}
