//! Subscriptions over real v2 sessions (`docs/subscriptions.md`): every event exactly once in
//! position order while writers run, from the start and from a remembered position; tenant
//! isolation; read rights; v1 sessions refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::Arc;

use eventdbx_proto::control::{SubscribeRequest, SubscriptionAckRequest, SubscriptionStart};
use serde_json::Value;

use crate::support::{decode, err, Client, Reply, TestServer};

const WRITERS: usize = 16;
const PER_WRITER: usize = 1_250;
const AGGREGATES_PER_WRITER: usize = 5;

/// Sends `subscribe` and returns its request id; the reply comes through [`next_push`].
fn subscribe(client: &mut Client, request: SubscribeRequest) -> u64 {
    client
        .send(|payload| {
            request
                .encode(payload.init_subscribe())
                .expect("encode subscribe");
        })
        .expect("send subscribe")
}

fn ack(client: &mut Client, subscription_id: u64) {
    let request = SubscriptionAckRequest {
        subscription_id,
        batches: 1,
    };
    client
        .send(|payload| {
            request
                .encode(payload.init_subscription_ack())
                .expect("encode ack");
        })
        .expect("send ack");
}

/// The next message for request `id` (other answers, the acks', are checked and skipped).
fn next_push(client: &mut Client, id: u64) -> Reply {
    loop {
        let (got, bytes) = client.recv().expect("a pushed message");
        let reply = decode(&bytes);
        if got == id {
            return reply;
        }
        assert_eq!(reply.expect("ack answered")["found"], true);
    }
}

/// A subscriber on its own session: subscribes, then collects events until it has `want`,
/// acking every batch. Each event is `(position, event JSON)`.
struct Subscriber {
    client: Client,
    id: u64,
    subscription_id: u64,
}

impl Subscriber {
    fn start(client: Client, start: SubscriptionStart) -> Self {
        Self::paced(client, start, 100, 4)
    }

    fn paced(mut client: Client, start: SubscriptionStart, batch_size: u32, credit: u32) -> Self {
        let token = client.token.clone();
        let id = subscribe(
            &mut client,
            SubscribeRequest {
                token,
                start,
                credit_window: credit,
                batch_size,
                ..SubscribeRequest::default()
            },
        );
        let answer = next_push(&mut client, id).expect("subscribed");
        let subscription_id = answer["subscription_id"].as_u64().expect("id");
        Subscriber {
            client,
            id,
            subscription_id,
        }
    }

    /// The next batch's events (heartbeats skipped), acked.
    fn batch(&mut self) -> Vec<(u64, Value)> {
        loop {
            let batch = next_push(&mut self.client, self.id).expect("a batch");
            let events = batch["events"].as_array().expect("events").clone();
            if events.is_empty() {
                continue;
            }
            ack(&mut self.client, self.subscription_id);
            return events
                .into_iter()
                .map(|e| {
                    (
                        e["position"].as_u64().expect("position"),
                        e["event"].clone(),
                    )
                })
                .collect();
        }
    }

    fn collect(&mut self, want: usize, mut seen: impl FnMut(usize, u64)) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        while out.len() < want {
            out.extend(self.batch());
            seen(out.len(), out.last().map_or(0, |(p, _)| *p));
        }
        out
    }
}

/// Every event once, positions strictly increasing, each aggregate's versions consecutive
/// from its first one received.
fn assert_in_order(events: &[(u64, Value)]) {
    let mut last = 0;
    let mut ids = BTreeSet::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (position, event) in events {
        assert!(*position > last, "position {position} after {last}");
        last = *position;
        let event_id = event["metadata"]["event_id"].to_string();
        assert!(ids.insert(event_id), "event delivered twice");
        let key = format!("{}/{}", event["aggregate_type"], event["aggregate_id"]);
        let version = event["version"].as_u64().expect("version");
        if let Some(previous) = versions.insert(key.clone(), version) {
            assert_eq!(version, previous + 1, "versions of {key}");
        }
    }
}

/// 16 writers append 20,000 events over their own sessions while one subscriber follows from
/// the start and, once it has passed a quarter, a second one from the position it had then.
#[test]
fn subscribers_get_every_event_once_in_order_while_writers_run() {
    let server = Arc::new(TestServer::start(|_| {}));
    let total = WRITERS * PER_WRITER;
    let (passed, quarter) = mpsc::channel::<u64>();
    let from_start = {
        let client = server.v2("default");
        std::thread::spawn(move || {
            let mut subscriber = Subscriber::start(client, SubscriptionStart::Beginning);
            let mut told = false;
            subscriber.collect(total, |count, position| {
                if !told && count >= total / 4 {
                    told = true;
                    let _ = passed.send(position);
                }
            })
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut client = server.v2("default");
            std::thread::spawn(move || {
                for n in 0..PER_WRITER {
                    let id = format!("w{w}-{}", n % AGGREGATES_PER_WRITER);
                    let payload = format!("{{\"n\":{n}}}");
                    let reply = if n < AGGREGATES_PER_WRITER {
                        client.create("order", &id, "order_created", &payload)
                    } else {
                        client.apply("order", &id, "order_changed", &payload)
                    };
                    reply.expect("write");
                }
            })
        })
        .collect();
    let remembered = quarter
        .recv()
        .expect("the first subscriber passed a quarter");
    let mut resumed = Subscriber::start(server.v2("default"), SubscriptionStart::After(remembered));
    let rest = resumed.collect(
        total - usize::try_from(remembered).expect("fits"),
        |_, _| {},
    );
    for writer in writers {
        writer.join().expect("writer");
    }
    let all = from_start.join().expect("subscriber");
    assert_eq!(all.len(), total, "every event, and no more");
    assert_in_order(&all);
    let positions: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    assert_in_order(&rest);
    assert_eq!(
        rest.as_slice(),
        &all[usize::try_from(remembered).expect("fits")..]
    );
}

#[test]
fn a_subscriber_never_sees_another_tenants_events() {
    let server = TestServer::start(|_| {});
    let mut a = server.v2("alpha");
    let mut b = server.v2("beta");
    for n in 0..5 {
        a.create("order", &format!("a-{n}"), "order_created", "{}")
            .expect("write a");
    }
    b.create("order", "b-0", "order_created", "{}")
        .expect("write b");
    let mut subscriber = Subscriber::start(server.v2("beta"), SubscriptionStart::Beginning);
    let first = subscriber.collect(1, |_, _| {});
    a.create("order", "a-late", "order_created", "{}")
        .expect("write a");
    b.create("order", "b-1", "order_created", "{}")
        .expect("write b");
    let second = subscriber.collect(1, |_, _| {});
    let got: Vec<(u64, String)> = first
        .iter()
        .chain(&second)
        .map(|(p, e)| (*p, e["aggregate_id"].as_str().expect("id").to_owned()))
        .collect();
    assert_eq!(got, vec![(1, "b-0".to_owned()), (2, "b-1".to_owned())]);
}

#[test]
fn subscribing_needs_read_rights_and_sees_only_readable_aggregates() {
    let server = TestServer::start(|_| {});
    let mut writer = server.v2("default");
    writer
        .create("order", "o-1", "order_created", "{}")
        .expect("create");
    writer
        .create("order", "o-2", "order_created", "{}")
        .expect("create");
    writer
        .apply("order", "o-1", "order_changed", "{}")
        .expect("append");
    // No read action at all: refused.
    let mut client = server.v2("default");
    let id = subscribe(
        &mut client,
        SubscribeRequest {
            token: server.token(&["aggregate.append"], &[]),
            ..SubscribeRequest::default()
        },
    );
    assert_eq!(err(next_push(&mut client, id)).code, "unauthorized");
    // Another tenant's token: refused.
    let id = subscribe(
        &mut client,
        SubscribeRequest {
            token: server.token(&["aggregate.read"], &["other"]),
            ..SubscribeRequest::default()
        },
    );
    assert_eq!(err(next_push(&mut client, id)).code, "unauthorized");
    // Read rights on one aggregate: only its events arrive.
    client.token = server.token_for(&["aggregate.read"], &["aggregate:order:o-1"], &[]);
    let mut subscriber = Subscriber::start(client, SubscriptionStart::Beginning);
    writer
        .apply("order", "o-1", "order_changed", "{}")
        .expect("append");
    let got: Vec<(u64, String, u64)> = subscriber
        .collect(3, |_, _| {})
        .into_iter()
        .map(|(p, e)| {
            let id = e["aggregate_id"].as_str().expect("id").to_owned();
            (p, id, e["version"].as_u64().expect("version"))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "o-1".to_owned(), 1),
            (3, "o-1".to_owned(), 2),
            (4, "o-1".to_owned(), 3)
        ]
    );
}

#[test]
fn a_v1_session_is_told_subscriptions_need_v2() {
    let server = TestServer::start(|_| {});
    let mut client = server.v1("default");
    let token = client.token.clone();
    let id = subscribe(
        &mut client,
        SubscribeRequest {
            token,
            ..SubscribeRequest::default()
        },
    );
    let refused = err(next_push(&mut client, id));
    assert_eq!(
        refused.pair(),
        (
            "unsupported",
            "unsupported: subscriptions need a protocol v2 session"
        )
    );
}

/// A subscriber that stops reading holds up no writer: 4 writers append 4,000 events while it
/// reads nothing (it has credit for two batches of 10), and once it reads again it gets every
/// one of them, in order, from the store.
#[test]
fn a_subscriber_that_stops_reading_holds_up_no_writer_and_then_gets_everything() {
    let server = TestServer::start(|_| {});
    let mut idle = Subscriber::paced(server.v2("default"), SubscriptionStart::Beginning, 10, 2);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = server.v2("default");
            std::thread::spawn(move || {
                let id = format!("w{w}");
                client
                    .create("order", &id, "order_created", "{}")
                    .expect("create");
                for n in 1..1_000 {
                    let payload = format!("{{\"n\":{n}}}");
                    client
                        .apply("order", &id, "order_changed", &payload)
                        .expect("append");
                }
            })
        })
        .collect();
    // Joined while the subscriber has not read a byte: a writer waiting for it would hang here.
    for writer in writers {
        writer.join().expect("writer");
    }
    let all = idle.collect(4_000, |_, _| {});
    assert_eq!(all.len(), 4_000);
    assert_in_order(&all);
    assert_eq!(all.last().map(|(p, _)| *p), Some(4_000));
}

/// While nothing commits, a caught-up subscription says where it is: an empty batch carrying
/// the head (every 5 s, so this test waits that long once).
#[test]
fn an_idle_subscription_sends_heartbeats_with_the_head() {
    let server = TestServer::start(|_| {});
    let mut writer = server.v2("quiet");
    writer
        .create("order", "o-1", "order_created", "{}")
        .expect("create");
    let mut client = server.v2("quiet");
    let token = client.token.clone();
    let id = subscribe(
        &mut client,
        SubscribeRequest {
            token,
            start: SubscriptionStart::End,
            ..SubscribeRequest::default()
        },
    );
    let answer = next_push(&mut client, id).expect("subscribed");
    assert_eq!(answer["start_position"], 1, "`end` starts after the head");
    let beat = next_push(&mut client, id).expect("a heartbeat");
    assert_eq!(beat["events"], serde_json::json!([]));
    assert_eq!(
        (beat["head"].as_u64(), beat["last_position"].as_u64()),
        (Some(1), Some(1))
    );
}
