//! `Client::subscribe` against the real server: every event once, in position order, across a
//! server restart in the middle of the stream; the blocking iterator from a remembered position;
//! a v1 connection refused clearly.

use std::collections::BTreeMap;
use std::time::Duration;

use eventdbx_client::{
    Client, ErrorKind, EventsQuery, RetryOptions, SubscribeOptions, SubscribedEvent,
    SubscriptionStart, Transport,
};
use tokio::sync::oneshot;

use crate::harness::TestServer;

const BEFORE_RESTART: usize = 300;
const AFTER_RESTART: usize = 300;

/// Retries enough to outlast a restart on a loaded machine.
fn patient() -> RetryOptions {
    RetryOptions {
        attempts: 1000,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        jitter: true,
    }
}

/// Positions 1..=N with no gap or repeat, and each aggregate's versions consecutive from 1.
fn assert_complete(events: &[SubscribedEvent], total: usize) {
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let last = versions.entry(event.aggregate_id.as_str()).or_insert(0);
        assert_eq!(
            event.version,
            *last + 1,
            "versions of {}",
            event.aggregate_id
        );
        *last = event.version;
    }
}

async fn write(client: &Client, n: usize) {
    let id = format!("o-{}", n % 3);
    let payload = format!(r#"{{"n":{n}}}"#);
    if n < 3 {
        client.create("order", &id, "order_created", &payload).await
    } else {
        client.apply("order", &id, "order_changed", &payload).await
    }
    .map(drop)
    .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_after_a_server_restart_with_nothing_missing_or_repeated() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.config().retry(patient()))
        .await
        .expect("connect");
    let total = BEFORE_RESTART + AFTER_RESTART;
    let (halfway, reached) = oneshot::channel::<()>();
    let subscriber = tokio::spawn({
        let mut events = client.subscribe(SubscribeOptions::new());
        async move {
            let mut got = Vec::new();
            let mut halfway = Some(halfway);
            while got.len() < total {
                got.push(events.next().await.expect("open").expect("event"));
                if got.len() == BEFORE_RESTART {
                    if let Some(halfway) = halfway.take() {
                        let _ = halfway.send(());
                    }
                }
            }
            got
        }
    });
    for n in 0..BEFORE_RESTART {
        write(&client, n).await;
    }
    // Every event so far delivered, then the server goes down under the live subscription.
    reached.await.expect("the subscriber got the first half");
    server.restart().await;
    for n in BEFORE_RESTART..total {
        write(&client, n).await;
    }
    let got = subscriber.await.expect("subscriber");
    assert_complete(&got, total);
    assert_eq!(got[0].event_type, "order_created");
    assert_eq!(got[total - 1].payload["n"], total as u64 - 1);
}

#[test]
fn the_blocking_iterator_starts_after_a_remembered_position() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let server = runtime.block_on(TestServer::start());
    let client = eventdbx_client::blocking::Client::connect(server.config()).expect("connect");
    for n in 0..6 {
        client
            .create("item", &format!("i-{n}"), "item_added", "{}")
            .expect("create");
    }
    let got: Vec<(u64, String)> = client
        .subscribe(
            SubscribeOptions::new()
                .start(SubscriptionStart::After(4))
                .aggregate_type("item"),
        )
        .take(2)
        .map(|event| {
            let event = event.expect("event");
            (event.position, event.aggregate_id)
        })
        .collect();
    assert_eq!(got, vec![(5, "i-4".to_owned()), (6, "i-5".to_owned())]);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_connection_says_subscriptions_need_v2() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect("connect");
    let err = client
        .subscribe(SubscribeOptions::new())
        .next()
        .await
        .expect("an item")
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("protocol v2"), "{err}");
}

/// `(aggregate id, version) → position` of a page's events.
fn positioned(
    events: &[serde_json::Value],
    position: impl Fn(usize) -> Option<u64>,
) -> BTreeMap<(String, u64), u64> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let id = event["aggregate_id"].as_str().expect("id").to_owned();
            let version = event["version"].as_u64().expect("version");
            (
                (id, version),
                position(index).expect("every event has a position"),
            )
        })
        .collect()
}

/// `events` and `read_outbox` pages carry each event's position: the one its subscription
/// delivers it with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_pages_and_the_outbox_carry_the_positions_subscriptions_deliver() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config()).await.expect("connect");
    for n in 0..7 {
        write(&client, n).await;
    }
    let mut subscription = client.subscribe(SubscribeOptions::new());
    let mut delivered = BTreeMap::new();
    for _ in 0..7 {
        let event = subscription.next().await.expect("open").expect("event");
        delivered.insert((event.aggregate_id, event.version), event.position);
    }
    let mut paged = BTreeMap::new();
    for id in ["o-0", "o-1", "o-2"] {
        let page = client
            .events(&EventsQuery::new("order", id))
            .await
            .expect("events");
        paged.extend(positioned(&page.events().expect("events json"), |i| {
            page.position(i)
        }));
    }
    assert_eq!(paged, delivered);
    let outbox = client.read_outbox(None, None).await.expect("outbox");
    let from_outbox = positioned(&outbox.events().expect("events json"), |i| {
        outbox.position(i)
    });
    assert_eq!(from_outbox, delivered);
}
