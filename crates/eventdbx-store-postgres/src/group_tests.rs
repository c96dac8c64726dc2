//! Group commit on a real database: a group is one transaction, and each write in it is still
//! decided on its own (a lost race loses only that write; a group rolled back as a whole is
//! committed write by write).
//!
//! The groups here are built by hand and committed with [`commit_group`], so which writes share
//! a statement does not depend on timing.

use eventdbx_core::write::WriteKind;
use eventdbx_store::{EventStore, WriteRequest};

use crate::account_writes::{history, open, request, T};
use crate::cluster::TestCluster;
use crate::group::{commit_group, statement, Queued, Shape};
use crate::write::{prepare, read_record, Plan};
use crate::{pool_error, PostgresStore};

/// The plan of `request`, prepared on the stored record as a write prepares it.
fn plan(store: &PostgresStore, request: &WriteRequest) -> Plan {
    let (pool, id) = (store.pool(), request.aggregate_id.clone());
    let stored = store
        .run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            read_record(&client, T, "account", &id).await
        })
        .expect("read the record");
    prepare(&store.ids, T, request, stored).expect("prepare").0
}

/// Commits `plans` as one group: whether each was written.
fn commit_as_group(store: &PostgresStore, plans: Vec<Plan>) -> Vec<bool> {
    let (mut group, answers): (Vec<Queued>, Vec<_>) = plans.into_iter().map(Queued::new).unzip();
    let pool = store.pool();
    store
        .run(async move {
            commit_group(&pool, &mut None, 0, &mut group).await;
            Ok(())
        })
        .expect("commit the group");
    answers
        .into_iter()
        .map(|answered| {
            answered
                .recv()
                .expect("answered")
                .expect("no error")
                .is_some()
        })
        .collect()
}

fn create(store: &PostgresStore, id: &str) {
    store
        .write(T, request(WriteKind::Create, id, 0))
        .expect("create");
}

#[test]
fn a_group_of_plain_writes_is_one_transaction_with_each_write_stored() {
    let store = open("group_one_transaction", 0);
    for id in ["a-1", "a-2", "a-3"] {
        create(&store, id);
    }
    let plans = vec![
        plan(&store, &request(WriteKind::Append, "a-1", 1)),
        plan(&store, &request(WriteKind::Append, "a-2", 2)),
        plan(&store, &request(WriteKind::Create, "a-4", 4)),
        plan(&store, &request(WriteKind::Append, "a-3", 3)),
    ];
    assert_eq!(commit_as_group(&store, plans), vec![true; 4]);
    let transactions = TestCluster::shared().sql(
        "group_one_transaction",
        "SELECT count(DISTINCT xmin::text) FROM events \
         WHERE version = 2 OR aggregate_id = 'a-4'",
    );
    assert_eq!(
        transactions.trim(),
        "1",
        "the group's events share one transaction"
    );
    assert_eq!(history(&store, "a-1"), vec![0, 1]);
    assert_eq!(history(&store, "a-2"), vec![0, 2]);
    assert_eq!(history(&store, "a-3"), vec![0, 3]);
    assert_eq!(history(&store, "a-4"), vec![4]);
    // Usage counts every stored event once, with its bytes, as a recount finds it.
    let counted = store.usage(T).expect("usage");
    assert_eq!(counted.events, 7);
    assert_eq!(store.recalc_usage(T).expect("recount"), counted);
    for id in ["a-1", "a-2", "a-3", "a-4"] {
        store.verify(T, "account", id).expect("verify");
    }
    // The engine's memory of a-1 (its create) is stale now: the next append still lands after
    // the group's.
    let next = store
        .write(T, request(WriteKind::Append, "a-1", 5))
        .expect("append after the group");
    assert_eq!(next.event.version, 3);
    // Every event of the group gets its position.
    assert_eq!(store.head_position(T).expect("head"), 8);
}

#[test]
fn a_lost_race_in_a_group_loses_only_that_write() {
    let store = open("group_lost_race", 0);
    for id in ["a-1", "a-2"] {
        create(&store, id);
    }
    let stale = plan(&store, &request(WriteKind::Append, "a-1", 1));
    store
        .write(T, request(WriteKind::Append, "a-1", 9))
        .expect("another write takes version 2 first");
    let fresh = plan(&store, &request(WriteKind::Append, "a-2", 2));
    assert_eq!(
        commit_as_group(&store, vec![stale, fresh]),
        vec![false, true]
    );
    assert_eq!(
        history(&store, "a-1"),
        vec![0, 9],
        "nothing of the lost write"
    );
    assert_eq!(history(&store, "a-2"), vec![0, 2]);
    assert_eq!(store.usage(T).expect("usage").events, 4);
}

#[test]
fn a_group_rolled_back_as_a_whole_is_committed_write_by_write() {
    let store = open("group_rolled_back", 0);
    for id in ["a-1", "a-2"] {
        create(&store, id);
    }
    let plans = vec![
        plan(&store, &request(WriteKind::Append, "a-1", 1)),
        plan(&store, &request(WriteKind::Append, "a-2", 2)),
    ];
    // An event at a-2's next version that no revision check can foresee: the group's insert
    // fails on its key, and the whole statement with it.
    TestCluster::shared().sql(
        "group_rolled_back",
        "INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body) \
         SELECT tenant, aggregate_type, aggregate_id, 2, event_id + 1, body FROM events \
         WHERE aggregate_id = 'a-2'",
    );
    assert_eq!(commit_as_group(&store, plans), vec![true, false]);
    assert_eq!(history(&store, "a-1"), vec![0, 1], "a-1 committed alone");
    let record = store
        .get(T, "account", "a-2")
        .expect("get")
        .expect("exists");
    assert_eq!(
        record.version, 1,
        "a-2's record untouched by its lost write"
    );
}

#[test]
fn a_write_in_a_group_clears_the_references_it_no_longer_has() {
    let store = open("group_references", 0);
    create(&store, "a-1");
    TestCluster::shared().sql(
        "group_references",
        "INSERT INTO aggregate_references VALUES ('default', 'account', 'a-1', 'owner', \
         'person', 'p-1')",
    );
    let append = plan(&store, &request(WriteKind::Append, "a-1", 1));
    assert_eq!(commit_as_group(&store, vec![append]), vec![true]);
    assert!(store
        .referrers(T, "person", "p-1")
        .expect("referrers")
        .is_empty());
}

/// `plans` (`auto_explain`'s) update each write's record found by its key: a nested loop probing
/// the primary key with the write's own key, never a whole-table read (a sequential scan, or an
/// index read end to end into a hash or a merge).
fn assert_found_by_key(plans: &str) {
    assert!(plans.contains("Update on aggregates"), "{plans}");
    assert!(!plans.contains("Seq Scan on aggregates"), "{plans}");
    assert!(
        !plans.contains("Hash Join") && !plans.contains("Merge Join"),
        "{plans}"
    );
    assert!(
        plans.contains("Index Scan using aggregates_pkey on aggregates")
            && plans.contains("aggregate_id = (w"),
        "{plans}"
    );
}

/// One call of the group write for one aggregate of `account`: `revision` is the SQL for the
/// revision read (`NULL` for a create).
fn group_call(id: &str, revision: &str, version: &str, event_id: &str) -> String {
    format!(
        "eventdbx_write_group(ARRAY['{T}'], ARRAY['account'], ARRAY[{id}], \
         ARRAY[{revision}]::bigint[], ARRAY[{version}]::bigint[], ARRAY[false], \
         ARRAY[1]::bigint[], ARRAY[1]::bigint[], ARRAY['{{}}'], ARRAY[{event_id}]::bigint[], \
         ARRAY['{{}}'], ARRAY[2]::bigint[], ARRAY[false], 0)"
    )
}

/// The plan the group write caches in a session while `aggregates` holds a few rows is the plan
/// it keeps (no statistics change while autovacuum is off for the table): after the table grew
/// to 20,000 rows, an update still finds its record by key, never by reading the whole table.
#[test]
fn the_group_write_keeps_finding_records_by_key_after_the_table_grew() {
    drop(open("group_plan", 0));
    let creates = group_call("'w-' || n", "NULL", "1", "n");
    let appends = group_call("'w-' || n", "1", "2", "100 + n");
    let last = group_call("'w-1'", "2", "3", "1000");
    let script = format!(
        "ALTER TABLE aggregates SET (autovacuum_enabled = off);
         LOAD 'auto_explain';
         SET auto_explain.log_nested_statements = on;
         SET auto_explain.log_level = notice;
         SELECT count(*) FROM generate_series(1, 8) AS n, LATERAL {creates};
         SELECT count(*) FROM generate_series(1, 8) AS n, LATERAL {appends};
         INSERT INTO aggregates (tenant, aggregate_type, aggregate_id, revision, version,
                                 archived, created_ms, updated_ms, record)
         SELECT '{T}', 'account', 'bulk-' || n, 1, 1, false, 1, 1, '{{}}'
         FROM generate_series(1, 20000) AS n;
         SET auto_explain.log_min_duration = 0;
         SELECT count(*) FROM {last};"
    );
    let cluster = TestCluster::shared();
    let (stored, plans) = cluster.session("group_plan", &script);
    assert_eq!(
        stored.split_whitespace().collect::<Vec<_>>(),
        ["8", "8", "1"],
        "every write stored"
    );
    assert_found_by_key(&plans);
}

/// `EXECUTE` of the committers' prepared group statement (`g`), one write per id of `account`:
/// `revision` read (`None` for creates), the `version` written, event ids from `first_event_id`.
fn group_execute(
    ids: &[String],
    revision: Option<i64>,
    version: i64,
    first_event_id: i64,
) -> String {
    let each = |value: &str| vec![value.to_owned(); ids.len()].join(", ");
    let revision = revision.map_or("NULL".to_owned(), |r| r.to_string());
    let quoted: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    let event_ids: Vec<String> = (0..ids.len() as i64)
        .map(|n| (first_event_id + n).to_string())
        .collect();
    format!(
        "EXECUTE g(ARRAY[{tenants}], ARRAY[{types}], ARRAY[{ids}], ARRAY[{revisions}]::bigint[], \
         ARRAY[{versions}]::bigint[], ARRAY[{archived}], ARRAY[{ones}]::bigint[], \
         ARRAY[{ones}]::bigint[], ARRAY[{records}], ARRAY[{event_ids}]::bigint[], \
         ARRAY[{records}], ARRAY[{twos}]::bigint[], ARRAY[{archived}], 0);",
        tenants = each(&format!("'{T}'")),
        types = each("'account'"),
        ids = quoted.join(", "),
        revisions = each(&revision),
        versions = each(&version.to_string()),
        archived = each("false"),
        ones = each("1"),
        records = each("'{}'"),
        event_ids = event_ids.join(", "),
        twos = each("2"),
    )
}

/// `plans` (`auto_explain`'s) store each write's record through the primary key, the insert's
/// conflict arbiter, and never read a whole table (a sequential scan, or an index read end to end
/// into a hash or a merge).
fn assert_stored_by_key(plans: &str) {
    assert!(plans.contains("Insert on aggregates"), "{plans}");
    assert!(
        plans.contains("Conflict Arbiter Indexes: aggregates_pkey"),
        "{plans}"
    );
    assert!(!plans.contains("Seq Scan"), "{plans}");
    assert!(
        !plans.contains("Hash Join") && !plans.contains("Merge Join"),
        "{plans}"
    );
}

/// The committers' session: their group statement of `shape`, prepared while `aggregates` held
/// a few rows, keeps storing records by key after the table grew to 20,000 rows.
fn statement_keeps_storing_records_by_key(database: &str, shape: Shape) {
    drop(open(database, 0));
    let ids: Vec<String> = (1..=8).map(|n| format!("w-{n}")).collect();
    let script = format!(
        "ALTER TABLE aggregates SET (autovacuum_enabled = off);
         LOAD 'auto_explain';
         SET auto_explain.log_level = notice;
         {session};
         PREPARE g(text[], text[], text[], bigint[], bigint[], boolean[], bigint[], bigint[],
                   text[], bigint[], text[], bigint[], boolean[], integer) AS {group};
         {creates}
         {appends}
         INSERT INTO aggregates (tenant, aggregate_type, aggregate_id, revision, version,
                                 archived, created_ms, updated_ms, record)
         SELECT '{T}', 'account', 'bulk-' || n, 1, 1, false, 1, 1, '{{}}'
         FROM generate_series(1, 20000) AS n;
         SET auto_explain.log_min_duration = 0;
         {last}",
        session = crate::group::SESSION,
        group = statement(shape),
        creates = group_execute(&ids, None, 1, 1),
        appends = group_execute(&ids, Some(1), 2, 101),
        last = group_execute(&ids[..1], Some(2), 3, 1000),
    );
    let cluster = TestCluster::shared();
    let (stored, plans) = cluster.session(database, &script);
    let stored: Vec<&str> = stored.split_whitespace().collect();
    let each = ["1", "2", "3", "4", "5", "6", "7", "8"];
    assert_eq!(
        stored,
        [&each[..], &each[..], &["1"]].concat(),
        "every write stored"
    );
    assert_stored_by_key(&plans);
}

#[test]
fn the_committers_statement_keeps_storing_records_by_key_after_the_table_grew() {
    statement_keeps_storing_records_by_key("group_session_plan", Shape::Clearing);
}

#[test]
fn the_committers_plain_statement_keeps_storing_records_by_key_after_the_table_grew() {
    statement_keeps_storing_records_by_key("group_session_plain_plan", Shape::Plain);
}

/// A group is sent without the references' delete when none of its writes has reference entries
/// to clear, and with it otherwise.
#[test]
fn a_group_with_no_reference_entry_to_clear_is_sent_without_the_delete() {
    let store = open("group_shapes", 0);
    create(&store, "a-1");
    let append = || plan(&store, &request(WriteKind::Append, "a-1", 1));
    // Read from the database: whether reference entries exist is not known.
    let unknown = append();
    assert_eq!(Shape::of(&[&unknown]), Shape::Clearing);
    let mut unreferenced = append();
    unreferenced.unreferenced = true;
    assert_eq!(Shape::of(&[&unreferenced]), Shape::Plain);
    let mut unscanned = append();
    unscanned.links = None;
    assert_eq!(Shape::of(&[&unscanned, &unreferenced]), Shape::Plain);
    assert_eq!(Shape::of(&[&unreferenced, &unknown]), Shape::Clearing);
    assert!(!statement(Shape::Plain).contains("aggregate_references"));
    assert!(statement(Shape::Clearing).contains("DELETE FROM aggregate_references"));
}

/// An append whose record is no longer there (deleted behind the engine's back) is never stored
/// by the group's statement, which would insert the record anew: the statement fails, and the
/// write, committed alone, stores nothing.
#[test]
fn an_append_whose_record_vanished_is_not_stored_by_its_group() {
    let store = open("group_vanished", 0);
    for id in ["a-1", "a-2"] {
        create(&store, id);
    }
    let plans = vec![
        plan(&store, &request(WriteKind::Append, "a-1", 1)),
        plan(&store, &request(WriteKind::Append, "a-2", 1)),
    ];
    let cluster = TestCluster::shared();
    cluster.sql(
        "group_vanished",
        "DELETE FROM aggregates WHERE aggregate_id = 'a-2'",
    );
    assert_eq!(commit_as_group(&store, plans), vec![true, false]);
    let left = cluster.sql(
        "group_vanished",
        "SELECT string_agg(aggregate_id || ':' || revision, ',' ORDER BY aggregate_id) \
         FROM aggregates",
    );
    assert_eq!(left.trim(), "a-1:2", "a-2 not stored again");
    assert_eq!(history(&store, "a-1"), vec![0, 1]);
    let events = cluster.sql(
        "group_vanished",
        "SELECT count(*) FROM events WHERE aggregate_id = 'a-2'",
    );
    assert_eq!(events.trim(), "1", "only a-2's create");
}
