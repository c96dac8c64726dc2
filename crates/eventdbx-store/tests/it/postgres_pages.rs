//! Positions of event pages on the PostgreSQL engine when a page holds an event no round has
//! numbered yet (`docs/subscriptions.md`, "Positions of event pages"): another server committed
//! it and the rounds are held off, here by a session holding the `position_sequencer` row as a
//! slow round would. The page is answered once a round has numbered it, never with the event's
//! position missing.

use std::thread;
use std::time::{Duration, Instant};

use eventdbx_core::write::WriteKind;
use eventdbx_store::EventSelector;
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::json;

use crate::conformance::{request, T};
use crate::postgres::server;

const DATABASE: &str = "page_pending_round";

/// A guard against a hang, not a performance bound.
const STALL: Duration = Duration::from_secs(60);

/// Polls `sql` (a boolean) until it is true.
fn wait_for(cluster: &TestCluster, what: &str, sql: &str) {
    let start = Instant::now();
    while cluster.sql(DATABASE, sql).trim() != "t" {
        assert!(start.elapsed() < STALL, "never: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_event_page_holding_an_event_not_yet_numbered_gets_its_position_from_a_round() {
    let cluster = TestCluster::shared();
    let url = cluster.database(DATABASE);
    let (reader, writer) = (server(&url, 1), server(&url, 2));
    let create = request(WriteKind::Create, "order", "o-1", json!({}));
    writer.events.write(T, create).expect("create");
    assert_eq!(writer.events.head_position(T).expect("head"), 1);
    cluster.sql(DATABASE, "CREATE TABLE test_release (at integer)");
    // Holds the sequencer row until three rounds wait for it (both followers', and the one the
    // page's lookup runs) or the test releases it (a lookup that did not wait for a round); a
    // minute at most, so a change in who runs rounds makes this test slow, never hung.
    let holder = thread::spawn(move || {
        cluster.script(
            DATABASE,
            "SET application_name = 'holder';\n\
             BEGIN;\n\
             SELECT 1 FROM position_sequencer FOR UPDATE;\n\
             DO $$ DECLARE started timestamptz := clock_timestamp(); BEGIN\n\
               LOOP\n\
                 PERFORM pg_stat_clear_snapshot();\n\
                 EXIT WHEN EXISTS (SELECT 1 FROM test_release)\n\
                   OR clock_timestamp() > started + interval '60 seconds' OR (\n\
                   SELECT count(*) FROM pg_stat_activity\n\
                   WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock'\n\
                     AND query LIKE '%eventdbx_assign_positions%') >= 3;\n\
                 PERFORM pg_sleep(0.01);\n\
               END LOOP;\n\
             END $$;\n\
             COMMIT;\n",
        )
    });
    wait_for(
        cluster,
        "the holder locks the sequencer",
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE application_name = 'holder' AND query LIKE 'DO%')",
    );
    let append = request(WriteKind::Append, "order", "o-1", json!({"n": 2}));
    writer.events.write(T, append).expect("append");
    let page = reader
        .events
        .events(T, "order", "o-1", 0, 10, None)
        .expect("events");
    assert_eq!(page.events.len(), 2, "the page holds the committed append");
    let positions = reader
        .events
        .event_positions(T, &page.events)
        .expect("positions");
    cluster.sql(DATABASE, "INSERT INTO test_release VALUES (1)");
    holder.join().expect("holder");
    assert_eq!(positions, vec![Some(1), Some(2)]);
    let delivered = reader
        .events
        .events_after(T, 0, &EventSelector::default(), 10)
        .expect("page");
    assert_eq!(
        delivered
            .events
            .iter()
            .map(|e| (e.event.version, e.position))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)],
        "the positions a subscription delivers"
    );
}
