//! A subscription across SIGKILLs of the real `dbx serve` (`docs/subscriptions.md`, "Rust
//! client"): four writers append while a subscriber started at `start` follows; the server is
//! killed three times and restarted on the same port and data directory. The subscriber resumes
//! by itself after the last position it yielded, so in the end it has received the store's
//! whole history (read back through the event pages, with their positions) exactly once, in
//! position order, each aggregate's versions in order.
//!
//! Kill points are progress (events the subscriber has received), never time; durability is
//! `fsync`, so nothing a subscriber was shown can vanish with a kill.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use eventdbx_client::{
    Client, ClientConfig, ErrorKind, EventsQuery, KnownV2Hosts, ListQuery, RetryOptions,
    SubscribeOptions, Transport, Write,
};

use crate::workspace::Workspace;

const WRITERS: usize = 4;
const PER_WRITER: usize = 300;
const AGGREGATES_PER_WRITER: usize = 3;
/// The subscriber's progress (events received) at which each kill happens.
const KILL_AT: [usize; 3] = [150, 450, 750];
/// A guard against a hang, not a performance bound.
const STALL: Duration = Duration::from_secs(60);

/// Retries enough to outlast a restart on a loaded machine.
fn patient() -> RetryOptions {
    RetryOptions {
        attempts: 1000,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        jitter: true,
    }
}

fn client_config(token: &str, port: u16) -> ClientConfig {
    ClientConfig::new(token, "default")
        .port(port)
        .transport(Transport::V2)
        .known_v2_hosts(KnownV2Hosts::Disabled)
        .request_timeout(Duration::from_secs(30))
        .retry(patient())
}

/// Rewrites the workspace's control address from `:0` to the port it got, and restarts it
/// there, so every restart binds the same port and the clients find it again by themselves.
fn pin_control_port(ws: &mut Workspace) {
    let path = ws.dir.path().join(".dbx/config.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let socket = text.find("[socket]").expect("a [socket] section");
    let (head, tail) = text.split_at(socket);
    let pinned = tail.replacen(
        "bind_addr = \"127.0.0.1:0\"",
        &format!("bind_addr = \"127.0.0.1:{}\"", ws.port),
        1,
    );
    assert_ne!(pinned, tail, "the control address is :0: {text}");
    std::fs::write(&path, format!("{head}{pinned}")).expect("write config");
    let port = ws.port;
    ws.kill_and_restart();
    assert_eq!(ws.port, port, "the server came back on its port");
}

/// A write whose answer a kill may have cut off: it may or may not be stored, and the history
/// read at the end says which.
fn cut_off_by_a_kill(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Protocol | ErrorKind::Handshake
    )
}

async fn writer(index: usize, client: Client) {
    for n in 0..PER_WRITER {
        let id = format!("w{index}-{}", n % AGGREGATES_PER_WRITER);
        let payload = format!("{{\"writer\":{index},\"n\":{n}}}");
        // `apply` creates a missing aggregate, so a cut-off first write leaves nothing to redo.
        match client
            .write(Write::apply("order", &id, "order_changed", payload))
            .await
        {
            Ok(_) => {}
            Err(err) if cut_off_by_a_kill(err.kind()) => {}
            Err(err) => panic!("writer {index}: {err}"),
        }
    }
}

/// The store's history, `position → (aggregate id, version, event id)`, from the event pages of
/// every aggregate.
async fn history(client: &Client) -> BTreeMap<u64, (String, u64, String)> {
    let mut pages = client.list_pages(ListQuery::new().take(1_000));
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.expect("list") {
        for aggregate in page.aggregates().expect("aggregates json") {
            ids.push(aggregate["aggregate_id"].as_str().expect("id").to_owned());
        }
    }
    let mut history = BTreeMap::new();
    for id in ids {
        let mut pages = client.event_pages(EventsQuery::new("order", &id).take(1_000));
        while let Some(page) = pages.next_page().await.expect("events") {
            for (index, event) in page.events().expect("events json").iter().enumerate() {
                let position = page.position(index).expect("every event has a position");
                let entry = (
                    id.clone(),
                    event["version"].as_u64().expect("version"),
                    event["metadata"]["event_id"].to_string(),
                );
                assert!(
                    history.insert(position, entry).is_none(),
                    "position {position} twice"
                );
            }
        }
    }
    history
}

#[test]
fn a_subscriber_resumes_by_itself_across_sigkills_with_nothing_missing_or_out_of_order() {
    let mut ws = Workspace::start();
    pin_control_port(&mut ws);
    let token = std::fs::read_to_string(ws.dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = client_config(&token, ws.port);

    let (progress, received) = mpsc::channel::<usize>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<usize>();
    let subscriber = runtime.spawn({
        let config = config.clone();
        async move {
            let client = Client::connect(config).await.expect("subscriber connects");
            let mut events = client.subscribe(SubscribeOptions::new());
            let mut got = Vec::new();
            let mut stopped = stopped;
            // Until the test knows how many events the store holds, then up to that many.
            let want = loop {
                tokio::select! {
                    next = events.next() => {
                        got.push(next.expect("the stream stays open").expect("an event"));
                        let _ = progress.send(got.len());
                    }
                    total = &mut stopped => break total.expect("the total is sent"),
                }
            };
            while got.len() < want {
                got.push(
                    events
                        .next()
                        .await
                        .expect("the stream stays open")
                        .expect("an event"),
                );
            }
            got
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| {
            let config = config.clone();
            runtime.spawn(async move {
                let client = Client::connect(config).await.expect("writer connects");
                writer(index, client).await;
            })
        })
        .collect();

    for (kill, at) in KILL_AT.iter().enumerate() {
        loop {
            let count = received
                .recv_timeout(STALL)
                .unwrap_or_else(|err| panic!("no event for {STALL:?} before kill {kill}: {err}"));
            if count >= *at {
                break;
            }
        }
        ws.kill_and_restart();
    }
    let history = runtime.block_on(async {
        for writer in writers {
            writer.await.expect("writer");
        }
        let client = Client::connect(config.clone()).await.expect("connect");
        history(&client).await
    });
    let total = history.len();
    assert!(total >= WRITERS * PER_WRITER - KILL_AT.len() * WRITERS);
    assert_eq!(
        history.keys().copied().collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>(),
        "the store's positions have no gap"
    );
    stop.send(total).expect("the subscriber runs");
    let got = runtime.block_on(subscriber).expect("subscriber");
    let delivered: Vec<(u64, (String, u64, String))> = got
        .iter()
        .map(|e| {
            (
                e.position,
                (
                    e.aggregate_id.clone(),
                    e.version,
                    e.metadata["event_id"].to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        history.into_iter().collect::<Vec<_>>(),
        "everything stored, once, in position order"
    );
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for event in &got {
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
