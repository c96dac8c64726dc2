//! Position rounds on a real database: what a round reads once the queue has been emptied many
//! times (its dead rows stay in the table until a vacuum), and the follower's vacuum of it.

use std::sync::Arc;

use eventdbx_store::Durability;

use crate::cluster::TestCluster;
use crate::positions::{vacuum_if_due, Positions, VACUUM_EVERY};
use crate::{PostgresConfig, PostgresStore};

/// 20,000 events queued and numbered leave 20,000 dead rows in `position_queue` (autovacuum off
/// for the table, as between two of its runs under load). The next round, of five events, finds
/// them through the primary key (an index scan, or a bitmap of it): it never reads the whole
/// queue, whose pages all hold dead rows.
#[test]
fn a_round_takes_its_queue_rows_by_key_when_the_queue_holds_dead_rows() {
    let cluster = TestCluster::shared();
    let url = cluster.database("round_plan");
    drop(PostgresStore::open(&PostgresConfig::new(url, Durability::Fsync)).expect("open"));
    let events = |prefix: &str, n: u32| {
        format!(
            "INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body)
             SELECT 'default', 'account', '{prefix}-' || n, 1, n, '{{}}'
             FROM generate_series(1, {n}) AS n;"
        )
    };
    let script = format!(
        "ALTER TABLE position_queue SET (autovacuum_enabled = off);
         {}
         SELECT sum(assigned) FROM eventdbx_assign_positions(10000);
         SELECT sum(assigned) FROM eventdbx_assign_positions(10000);
         {}
         LOAD 'auto_explain';
         SET auto_explain.log_nested_statements = on;
         SET auto_explain.log_level = notice;
         SET auto_explain.log_min_duration = 0;
         SELECT sum(assigned) FROM eventdbx_assign_positions(10000);",
        events("bulk", 20_000),
        events("late", 5)
    );
    let (assigned, plans) = cluster.session("round_plan", &script);
    assert_eq!(
        assigned.split_whitespace().collect::<Vec<_>>(),
        ["10000", "10000", "5"],
        "every queued event numbered once: {assigned}"
    );
    assert!(plans.contains("Delete on position_queue"), "{plans}");
    assert!(!plans.contains("Seq Scan on position_queue"), "{plans}");
    // Nothing in a round is worth compiling: a plan costed past `jit_above_cost` (a read
    // switched off costs 10^10) took 20 ms to compile, each round.
    assert!(!plans.contains("JIT:"), "{plans}");
    assert!(
        plans.contains("on position_queue_pkey") && plans.contains("Index Cond: (id = ANY"),
        "{plans}"
    );
}

/// Once rounds have numbered `VACUUM_EVERY` events, the follower's next turn vacuums the queue
/// (here called directly, with autovacuum off for the table, so no other vacuum counts), and
/// the count starts over: the next turn does not vacuum again.
#[test]
fn the_queue_is_vacuumed_after_its_rounds_numbered_enough_events() {
    let cluster = TestCluster::shared();
    let url = cluster.database("queue_vacuum");
    let store = PostgresStore::open(&PostgresConfig::new(url, Durability::Fsync)).expect("open");
    let vacuums = || {
        cluster
            .sql(
                "queue_vacuum",
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'position_queue'",
            )
            .trim()
            .to_owned()
    };
    // Dead rows as numbered events leave them, in one transaction so no round ever sees them.
    cluster.script(
        "queue_vacuum",
        "ALTER TABLE position_queue SET (autovacuum_enabled = off);
         BEGIN;
         INSERT INTO position_queue (tenant, aggregate_type, aggregate_id, version)
         SELECT 'gone', 'account', 'a-' || n, 1 FROM generate_series(1, 20000) AS n;
         DELETE FROM position_queue WHERE tenant = 'gone';
         COMMIT;",
    );
    assert_eq!(vacuums(), "0");
    let positions = Arc::new(Positions::having_numbered(VACUUM_EVERY));
    let turn = || {
        let (pool, positions) = (store.pool(), Arc::clone(&positions));
        store
            .run(async move { vacuum_if_due(&pool, &positions).await })
            .expect("vacuum")
    };
    assert!(turn(), "due after VACUUM_EVERY numbered events");
    assert_eq!(vacuums(), "1");
    assert!(!turn(), "not due again before as many events more");
    assert_eq!(vacuums(), "1");
}
