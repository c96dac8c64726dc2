//! The PostgreSQL engine's write, statement by statement (`pg_stat_statements`): an append to an
//! aggregate this server wrote last is one statement, the reference index is cleared only where
//! entries may be, and a remembered record another server changed is decided again on the
//! stored one.

use eventdbx_core::write::WriteKind;
use eventdbx_core::CoreError;
use eventdbx_store::Storage;
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::json;

use crate::conformance::{domain, request, T};
use crate::postgres::server;

/// A server on database `name`, with `pg_stat_statements` (loaded by the test cluster) counting
/// its statements.
fn counted_server(cluster: &TestCluster, name: &str) -> Storage {
    let url = cluster.database(name);
    cluster.sql(name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    server(&url, 1)
}

/// How many top-level statements of database `name` matching `filter` (SQL on the statement's
/// text, `s.query`) PostgreSQL ran since the last reset.
fn statement_calls(cluster: &TestCluster, name: &str, filter: &str) -> u64 {
    let count = cluster.sql(
        name,
        &format!(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.toplevel AND {filter}"
        ),
    );
    count.trim().parse().expect("a count")
}

/// The statements of database `name` PostgreSQL ran since the last reset, but the position
/// rounds, the counting itself and the settings a group committer gives its session once, when
/// it opens it (`SET`).
fn statements_run(cluster: &TestCluster, name: &str) -> u64 {
    statement_calls(
        cluster,
        name,
        "s.query NOT LIKE '%assign_positions%' AND s.query NOT LIKE '%position_heads%' \
         AND s.query NOT LIKE '%pg_stat_statements%' AND s.query NOT LIKE 'SET %'",
    )
}

#[test]
fn an_append_to_an_aggregate_this_server_wrote_last_is_one_statement() {
    const APPENDS: u64 = 10;
    let cluster = TestCluster::shared();
    let storage = counted_server(cluster, "one_statement");
    let create = request(WriteKind::Create, "order", "o-1", json!({}));
    storage.events.write(T, create).expect("create");
    cluster.sql("one_statement", "SELECT pg_stat_statements_reset()");
    for n in 0..APPENDS {
        let append = request(WriteKind::Append, "order", "o-1", json!({ "n": n }));
        storage.events.write(T, append).expect("append");
    }
    // No read (the record is the one this server committed), no BEGIN or COMMIT: the commit
    // is one statement, its own transaction.
    assert_eq!(statements_run(cluster, "one_statement"), APPENDS);
    let aggregate = storage
        .events
        .get(T, "order", "o-1")
        .expect("get")
        .expect("exists");
    assert_eq!(aggregate.version, 1 + APPENDS);
    storage.events.verify(T, "order", "o-1").expect("verify");
}

/// How often the reference index was cleared by a top-level statement since the last reset.
fn reference_clears(cluster: &TestCluster, name: &str) -> u64 {
    statement_calls(
        cluster,
        name,
        "s.query LIKE '%DELETE FROM aggregate_references%'",
    )
}

/// A write that keeps no reference clears the aggregate's reference entries only when some may
/// be there: not after this server's last commit of it left none (a create, a write without
/// references), but after one that left an entry, which the write then removes.
#[test]
fn a_write_clears_reference_entries_only_when_its_aggregate_may_hold_some() {
    let cluster = TestCluster::shared();
    let storage = counted_server(cluster, "unreferenced");
    let write = |kind: WriteKind, payload: serde_json::Value| {
        let mut write = request(kind, "invoice", "i-1", payload);
        write.references = Some(crate::conformance::postgres::references::scan());
        storage.events.write(T, write).expect("write");
    };
    let referrers = || {
        storage
            .events
            .referrers(T, "person", "p-1")
            .expect("referrers")
            .len()
    };
    let reset = || cluster.sql("unreferenced", "SELECT pg_stat_statements_reset()");
    write(WriteKind::Create, json!({"total": 1}));
    reset();
    write(WriteKind::Append, json!({"total": 2}));
    assert_eq!(
        reference_clears(cluster, "unreferenced"),
        0,
        "none to clear"
    );
    write(WriteKind::Append, json!({"customer": "person#p-1"}));
    assert_eq!(referrers(), 1);
    reset();
    write(WriteKind::Append, json!({"customer": null}));
    assert_eq!(
        reference_clears(cluster, "unreferenced"),
        1,
        "one entry left"
    );
    assert_eq!(referrers(), 0, "the entry went with the reference");
    reset();
    write(WriteKind::Append, json!({"total": 3}));
    assert_eq!(
        reference_clears(cluster, "unreferenced"),
        0,
        "none left to clear"
    );
}

#[test]
fn a_remembered_record_another_server_changed_is_decided_again_on_the_stored_one() {
    let url = TestCluster::shared().database("remembered");
    let (a, b) = (server(&url, 1), server(&url, 2));
    let create = request(WriteKind::Create, "order", "o-1", json!({"n": 0}));
    a.events.write(T, create).expect("create");
    let append = |n: u64| request(WriteKind::Append, "order", "o-1", json!({ "n": n }));
    // `a` remembers version 1; `b` moves the aggregate to version 2 behind its back.
    b.events.write(T, append(1)).expect("append on b");
    let mut expecting_2 = append(2);
    expecting_2.expected_version = Some(2);
    let outcome = a
        .events
        .write(T, expecting_2)
        .expect("decided on version 2");
    assert_eq!(outcome.event.version, 3);
    assert_eq!(outcome.aggregate.state.get("n"), Some(&json!(2)));
    let mut stale = append(3);
    stale.expected_version = Some(2);
    let err = a.events.write(T, stale).expect_err("version 3 is stored");
    assert!(
        matches!(domain(err), CoreError::VersionConflict { .. }),
        "a stale expectation is a conflict"
    );
    // An archive by `b`: `a`'s remembered record says active, the stored one archived.
    b.events
        .set_archived(T, "order", "o-1", true, None)
        .expect("archive on b");
    let err = a.events.write(T, append(4)).expect_err("archived");
    assert!(
        matches!(domain(err), CoreError::AggregateArchived),
        "the archive is seen"
    );
    b.events
        .set_archived(T, "order", "o-1", false, None)
        .expect("restore on b");
    let outcome = a
        .events
        .write(T, append(5))
        .expect("append after the restore");
    assert_eq!(outcome.event.version, 4);
    a.events.verify(T, "order", "o-1").expect("verify");
}
