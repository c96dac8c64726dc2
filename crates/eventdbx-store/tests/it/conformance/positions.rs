//! Event positions (`docs/subscriptions.md`, "Positions"): strictly increasing in commit order
//! under concurrent writers, never shown below a head a reader already saw, kept across a
//! reopen, per tenant, and announced to commit listeners.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use eventdbx_core::write::WriteKind;
use eventdbx_store::{Durability, EventSelector, EventStore, PositionedEvent};
use serde_json::json;

use super::{append, engine, open, relaxed, request, LISTENERS_HEAR_BEFORE_THE_WRITE_RETURNS, T};

const WRITERS: usize = 8;
const PER_WRITER: usize = 60;

/// Every event of `tenant` after `after`, page by page.
fn read_all(store: &dyn EventStore, tenant: &str, after: u64) -> Vec<PositionedEvent> {
    let mut out = Vec::new();
    let mut last = after;
    loop {
        let page = store
            .events_after(tenant, last, &EventSelector::default(), 100)
            .expect("events after");
        if page.events.is_empty() && page.last_examined == last {
            return out;
        }
        last = page.last_examined;
        out.extend(page.events);
    }
}

/// Writers on their own threads, each appending to its own two aggregates in turn.
fn run_writers(store: &Arc<dyn EventStore>) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(store);
            std::thread::spawn(move || {
                for n in 0..PER_WRITER {
                    let id = format!("w{w}-{}", n % 2);
                    append(&*store, T, "order", &id, json!({ "n": n }));
                }
            })
        })
        .collect()
}

/// What a run must have produced: every event once, positions 1..=N with no gap, and each
/// aggregate's versions in ascending order.
fn assert_complete(events: &[PositionedEvent]) {
    let total = (WRITERS * PER_WRITER) as u64;
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    let ids: BTreeSet<u64> = events.iter().map(|e| e.event.metadata.event_id).collect();
    assert_eq!(ids.len() as u64, total, "every event exactly once");
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        let last = versions.entry(e.event.aggregate_id.as_str()).or_insert(0);
        assert_eq!(
            e.event.version,
            *last + 1,
            "versions of {}",
            e.event.aggregate_id
        );
        *last = e.event.version;
    }
}

fn concurrent_writers_get_gapless_increasing_positions(store: Arc<dyn EventStore>) {
    for handle in run_writers(&store) {
        handle.join().expect("writer");
    }
    assert_eq!(
        store.head_position(T).expect("head"),
        (WRITERS * PER_WRITER) as u64
    );
    assert_complete(&read_all(&*store, T, 0));
}

#[test]
fn concurrent_writers_get_gapless_increasing_positions_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_writers_get_gapless_increasing_positions(open(&dir));
}

#[test]
fn concurrent_writers_get_gapless_increasing_positions_relaxed() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_writers_get_gapless_increasing_positions(relaxed(&dir));
}

/// A reader following the head while writers run is never shown an event at or below a
/// position it already saw, and misses none: what it collected is the whole history.
#[test]
fn a_reader_following_writers_never_sees_a_position_below_what_it_saw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let writers = run_writers(&store);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut last = 0;
            loop {
                // Read the flag first: a read that begins after it was set sees every write.
                let finished = done.load(Ordering::Acquire);
                let page = store
                    .events_after(T, last, &EventSelector::default(), 7)
                    .expect("events after");
                assert!(page.head >= last, "the head went back below {last}");
                for event in &page.events {
                    assert!(
                        event.position > last,
                        "position {} after {last}",
                        event.position
                    );
                    last = event.position;
                }
                let empty = page.events.is_empty();
                seen.extend(page.events);
                if finished && empty {
                    return seen;
                }
            }
        })
    };
    for handle in writers {
        handle.join().expect("writer");
    }
    done.store(true, Ordering::Release);
    assert_complete(&reader.join().expect("reader"));
}

#[test]
fn positions_survive_a_reopen_and_continue_from_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        for n in 0..3 {
            append(&*store, T, "order", "o-1", json!({ "n": n }));
        }
        store.close();
    }
    let store = open(&dir);
    assert_eq!(store.head_position(T).expect("head"), 3);
    append(&*store, T, "order", "o-2", json!({}));
    let events = read_all(&*store, T, 2);
    let got: Vec<(u64, &str, u64)> = events
        .iter()
        .map(|e| (e.position, e.event.aggregate_id.as_str(), e.event.version))
        .collect();
    assert_eq!(got, vec![(3, "o-1", 3), (4, "o-2", 1)]);
}

#[test]
fn positions_are_per_tenant_and_selectors_narrow_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    append(&*store, "acme", "order", "o-1", json!({}));
    append(&*store, T, "order", "o-1", json!({}));
    append(&*store, T, "person", "p-1", json!({}));
    let mut renamed = request(WriteKind::Append, "order", "o-1", json!({}));
    renamed.event_type = "order_shipped".into();
    store.write(T, renamed).expect("append");
    assert_eq!(store.head_position("acme").expect("head"), 1);
    assert_eq!(store.head_position(T).expect("head"), 3);
    assert_eq!(store.head_position("nobody").expect("head"), 0);
    let acme = read_all(&*store, "acme", 0);
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].position, 1);

    let orders = EventSelector {
        aggregate_type: Some("order".into()),
        ..EventSelector::default()
    };
    let page = store.events_after(T, 0, &orders, 10).expect("page");
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!((page.last_examined, page.head), (3, 3));
    let shipped = EventSelector {
        event_types: vec!["order_shipped".into()],
        ..EventSelector::default()
    };
    let page = store.events_after(T, 0, &shipped, 10).expect("page");
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3]
    );
    let people = EventSelector {
        aggregate_id: Some("p-1".into()),
        ..EventSelector::default()
    };
    // A page that selects nothing after position 2 still says how far it looked.
    let page = store.events_after(T, 2, &people, 10).expect("page");
    assert!(page.events.is_empty());
    assert_eq!(page.last_examined, 3);
}

/// The highest head a listener reported, and a condition to wait for a higher one.
type Heard = Arc<(Mutex<u64>, Condvar)>;

fn heard_now(heard: &Heard) -> u64 {
    *heard.0.lock().expect("lock")
}

/// Waits until the listener heard `head` (an engine whose listeners hear a commit after the
/// write returns); fails after 30 s.
fn wait_until_heard(heard: &Heard, head: u64) -> u64 {
    let (lock, changed) = &**heard;
    let guard = lock.lock().expect("lock");
    let (guard, waited) = changed
        .wait_timeout_while(guard, Duration::from_secs(30), |h| *h < head)
        .expect("lock");
    assert!(!waited.timed_out(), "no listener heard head {head}");
    *guard
}

#[test]
fn commit_listeners_hear_the_head_once_it_is_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = engine(dir.path(), Durability::Relaxed);
    let store = storage.events;
    let heard: Heard = Arc::new((Mutex::new(0), Condvar::new()));
    {
        let heard = Arc::clone(&heard);
        store
            .listen_commits(Arc::new(move |tenant, head| {
                if tenant == T {
                    let (lock, changed) = &*heard;
                    let mut value = lock.lock().expect("lock");
                    *value = (*value).max(head);
                    changed.notify_all();
                }
            }))
            .expect("listen");
    }
    append(&*store, "acme", "order", "o-1", json!({}));
    assert_eq!(heard_now(&heard), 0, "another tenant's commit");
    for n in 1..=3 {
        append(&*store, T, "order", "o-1", json!({ "n": n }));
        let head = if LISTENERS_HEAR_BEFORE_THE_WRITE_RETURNS {
            heard_now(&heard)
        } else {
            wait_until_heard(&heard, n)
        };
        assert_eq!(head, n);
        let page = store
            .events_after(T, head - 1, &EventSelector::default(), 10)
            .expect("page");
        assert_eq!(
            page.events.first().map(|e| e.position),
            Some(head),
            "a heard head is readable at once"
        );
    }
}

/// Each event's position, keyed by (aggregate id, version), as `event_positions` gives it for
/// `events`; an event without one fails the test.
fn positions_of(
    store: &dyn EventStore,
    tenant: &str,
    events: &[eventdbx_core::merkle::Event],
) -> BTreeMap<(String, u64), u64> {
    let positions = store.event_positions(tenant, events).expect("positions");
    assert_eq!(positions.len(), events.len());
    events
        .iter()
        .zip(positions)
        .map(|(event, position)| {
            let key = (event.aggregate_id.clone(), event.version);
            let position = position.unwrap_or_else(|| panic!("no position for {key:?}"));
            (key, position)
        })
        .collect()
}

/// Event pages (an aggregate's events, the outbox) carry each event's position: the one a
/// subscription delivers it with (`docs/subscriptions.md`, "Positions of event pages").
#[test]
fn event_pages_carry_the_positions_a_subscription_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    append(&*store, "acme", "order", "w0-0", json!({}));
    for handle in run_writers(&store) {
        handle.join().expect("writer");
    }
    let delivered: BTreeMap<(String, u64), u64> = read_all(&*store, T, 0)
        .into_iter()
        .map(|e| ((e.event.aggregate_id, e.event.version), e.position))
        .collect();
    assert_eq!(delivered.len(), WRITERS * PER_WRITER);

    let mut paged = BTreeMap::new();
    for w in 0..WRITERS {
        for half in 0..2 {
            let id = format!("w{w}-{half}");
            let mut after = 0;
            loop {
                let page = store
                    .events(T, "order", &id, after, 25, None)
                    .expect("events");
                paged.extend(positions_of(&*store, T, &page.events));
                match page.events.last() {
                    Some(last) if page.full => after = last.version,
                    _ => break,
                }
            }
        }
    }
    assert_eq!(paged, delivered, "aggregate pages");

    let mut from_outbox = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.outbox(T, after, 100, &|_, _| true).expect("outbox");
        from_outbox.extend(positions_of(&*store, T, &page.events));
        match page.last_examined {
            Some(last) if page.full => after = last,
            _ => break,
        }
    }
    assert_eq!(from_outbox, delivered, "outbox pages");

    let acme = store
        .events("acme", "order", "w0-0", 0, 10, None)
        .expect("events");
    assert_eq!(
        positions_of(&*store, "acme", &acme.events),
        BTreeMap::from([(("w0-0".to_owned(), 1), 1)]),
        "positions are the tenant's own"
    );
    assert_eq!(
        store
            .event_positions("nobody", &acme.events)
            .expect("positions"),
        vec![None],
        "no position in a tenant that does not hold the event"
    );
}
