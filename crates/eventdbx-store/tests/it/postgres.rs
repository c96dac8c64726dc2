//! The PostgreSQL engine's own tests, beside the conformance suite: several engines on one
//! database (as several `dbx` servers would be) racing on hot aggregates and sharing the plugin
//! queue, where the in-process lock stripes cannot help and only the database's constraints
//! keep versions gapless; calls from inside a tokio runtime; the schema version check; a
//! database that cannot be reached; and positions given after commit (a late commit, several
//! servers, the migration). The write's own statements are in `postgres_writes`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use eventdbx_core::plugin::{PayloadMode, Priority, RetryPolicy};
use eventdbx_core::write::WriteKind;
use eventdbx_core::CoreError;
use eventdbx_store::{Claim, Durability, JobRoute, Storage, StoreError};
use eventdbx_store_postgres::cluster::TestCluster;
use eventdbx_store_postgres::PostgresConfig;
use serde_json::json;

use crate::conformance::{domain, request, T};

/// An engine on `url` with its own Snowflake worker id, as a separate server would have.
pub(crate) fn server(url: &str, worker_id: u16) -> Storage {
    let mut config = PostgresConfig::new(url, Durability::Fsync);
    config.worker_id = worker_id;
    config.pool_size = 4;
    eventdbx_store_postgres::open_postgres(&config).expect("open the engine")
}

#[test]
fn servers_racing_on_hot_aggregates_keep_versions_gapless() {
    const SERVERS: u16 = 3;
    const WRITERS: usize = 12;
    const APPENDS: usize = 8;
    const HOT: usize = 4;
    let url = TestCluster::shared().database("race_hot");
    let servers: Vec<Storage> = (0..SERVERS).map(|w| server(&url, w)).collect();
    for n in 0..HOT {
        let create = request(WriteKind::Create, "account", &format!("a-{n}"), json!({}));
        servers[0].events.write(T, create).expect("create");
    }
    let start = Arc::new(Barrier::new(WRITERS));
    let acked = Arc::new(Mutex::new(BTreeMap::<String, Vec<u64>>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&servers[w % servers.len()].events);
            let (start, acked) = (Arc::clone(&start), Arc::clone(&acked));
            thread::spawn(move || {
                start.wait();
                for k in 0..APPENDS {
                    let id = format!("a-{}", (w + k) % HOT);
                    let append =
                        request(WriteKind::Append, "account", &id, json!({"w": w, "k": k}));
                    let version = store.write(T, append).expect("append").event.version;
                    let mut acked = acked.lock().expect("lock");
                    acked.entry(id).or_default().push(version);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    let reader = &servers[SERVERS as usize - 1].events;
    let mut total = 0;
    for (id, mut versions) in acked {
        versions.sort_unstable();
        let appended = versions.len() as u64;
        assert_eq!(
            versions,
            (2..=appended + 1).collect::<Vec<_>>(),
            "{id}: every acknowledged append has its own version, none skipped"
        );
        let page = reader
            .events(T, "account", &id, 0, 1_000, None)
            .expect("events");
        let stored: Vec<u64> = page.events.iter().map(|e| e.version).collect();
        assert_eq!(stored, (1..=appended + 1).collect::<Vec<_>>(), "{id}");
        let aggregate = reader.get(T, "account", &id).expect("get").expect("exists");
        assert_eq!(aggregate.version, appended + 1, "{id}");
        let root = reader.verify(T, "account", &id).expect("verify");
        assert_eq!(root, aggregate.merkle_root, "{id}");
        total += appended;
    }
    assert_eq!(total, (WRITERS * APPENDS) as u64);
}

#[test]
fn an_expected_version_race_between_servers_has_one_winner() {
    let url = TestCluster::shared().database("race_expected");
    let servers = [server(&url, 1), server(&url, 2)];
    let create = request(WriteKind::Create, "order", "o-1", json!({"n": 0}));
    servers[0].events.write(T, create).expect("create");
    for round in 1..=10u64 {
        let start = Arc::new(Barrier::new(2));
        let racers: Vec<_> = servers
            .iter()
            .map(|storage| {
                let (store, start) = (Arc::clone(&storage.events), Arc::clone(&start));
                thread::spawn(move || {
                    let mut write = request(WriteKind::Append, "order", "o-1", json!({"n": round}));
                    write.expected_version = Some(round);
                    start.wait();
                    store.write(T, write)
                })
            })
            .collect();
        let results: Vec<_> = racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            won, 1,
            "round {round}: exactly one writer wins: {results:?}"
        );
        for result in results {
            if let Err(err) = result {
                assert!(
                    matches!(
                        domain(err),
                        CoreError::VersionConflict { expected, current }
                            if expected == round && current == round + 1
                    ),
                    "round {round}: the loser gets version_conflict"
                );
            }
        }
    }
    let aggregate = servers[1]
        .events
        .get(T, "order", "o-1")
        .expect("get")
        .expect("exists");
    assert_eq!(aggregate.version, 11);
}

#[test]
fn each_job_is_claimed_by_one_server_and_delivered_once() {
    const JOBS: usize = 20;
    let url = TestCluster::shared().database("jobs_shared");
    let servers = [server(&url, 1), server(&url, 2)];
    for n in 0..JOBS {
        let mut write = request(
            WriteKind::Create,
            "order",
            &format!("o-{n}"),
            json!({"n": n}),
        );
        write.publish = vec![JobRoute {
            plugin: "search".into(),
            mode: PayloadMode::All,
            priority: Priority::Normal,
            schema: None,
        }];
        servers[n % 2].events.write(T, write).expect("write");
    }
    let policy = RetryPolicy {
        max_attempts: 3,
        backoff_unit_ms: 1000,
    };
    let now = u64::MAX / 4;
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = servers
        .iter()
        .map(|storage| {
            let queue = Arc::clone(&storage.jobs);
            let (delivered, start) = (Arc::clone(&delivered), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                loop {
                    match queue
                        .claim_job("search", now, 60_000, policy)
                        .expect("claim")
                    {
                        Claim::Job(job) => {
                            delivered.lock().expect("lock").push(job.id);
                            queue.complete_job(job.id, now).expect("complete");
                        }
                        // The other server holds the head: its completion comes next.
                        Claim::Busy(_) => continue,
                        Claim::Empty => return,
                        Claim::WaitUntil(at) => panic!("nothing waits for a retry: {at}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let delivered = delivered.lock().expect("lock").clone();
    let distinct: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), JOBS, "one delivery per job: {delivered:?}");
    assert_eq!(distinct.len(), JOBS);
    assert_eq!(
        servers[0].jobs.job_counts().expect("counts").done,
        JOBS as u64
    );
}

#[test]
fn the_store_answers_from_inside_a_tokio_runtime() {
    let url = TestCluster::shared().database("inside_runtime");
    let storage = server(&url, 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let version = runtime.block_on(async {
        let create = request(WriteKind::Create, "order", "o-1", json!({"n": 1}));
        storage
            .events
            .write(T, create)
            .expect("write inside a task");
        storage
            .events
            .get(T, "order", "o-1")
            .expect("read inside a task")
            .map(|aggregate| aggregate.version)
    });
    assert_eq!(version, Some(1));
    // Dropping the last handle inside a task must not panic either.
    runtime.block_on(async move { drop(storage) });
}

#[test]
fn a_database_with_a_newer_schema_is_refused() {
    let cluster = TestCluster::shared();
    let url = cluster.database("newer_schema");
    server(&url, 1).events.close();
    let newer = eventdbx_store_postgres::SCHEMA_VERSION + 1;
    cluster.sql(
        "newer_schema",
        &format!("INSERT INTO eventdbx_migrations (version) VALUES ({newer})"),
    );
    let config = PostgresConfig::new(url, Durability::Fsync);
    let err = eventdbx_store_postgres::open_postgres(&config).expect_err("newer schema");
    assert!(matches!(err, StoreError::Storage { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("version {newer}, newer than")),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_a_storage_error_that_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // Nothing listens there any more: the connection is refused at once.
    let config = PostgresConfig::new(
        format!("postgres://postgres@127.0.0.1:{port}/none"),
        Durability::Fsync,
    );
    let err = eventdbx_store_postgres::open_postgres(&config).expect_err("unreachable");
    assert_eq!(err.code(), "unavailable");
    assert!(
        err.to_string().contains("cannot reach the database"),
        "{err}"
    );
}

#[test]
fn a_database_restart_fails_requests_clearly_then_service_resumes_by_itself() {
    let cluster = TestCluster::private();
    let url = cluster.database("restart");
    let storage = server(&url, 1);
    let create = request(WriteKind::Create, "order", "o-1", json!({"n": 1}));
    storage.events.write(T, create).expect("create");
    let mut config = PostgresConfig::new(url.as_str(), Durability::Fsync);
    config.pool_size = 1;
    let probe = eventdbx_store_postgres::PostgresStore::open(&config).expect("open");
    let timeout = std::time::Duration::from_secs(10);
    probe.ping(timeout).expect("the database answers");

    cluster.stop();
    let err = probe.ping(timeout).expect_err("the database is down");
    assert!(err.to_string().contains("(retry later)"), "{err}");
    let append = request(WriteKind::Append, "order", "o-1", json!({"n": 2}));
    let err = storage
        .events
        .write(T, append.clone())
        .expect_err("the database is down");
    assert_eq!(err.code(), "unavailable", "{err}");
    assert!(err.to_string().contains("(retry later)"), "{err}");
    let err = storage
        .events
        .get(T, "order", "o-1")
        .expect_err("the database is down");
    assert_eq!(err.code(), "unavailable", "{err}");

    cluster.restart();
    // The pool drops the connections the restart closed and opens new ones: no reopen needed.
    // A pooled connection whose end the pool has not noticed yet fails one request and is
    // discarded, so at most one request per pooled connection (4) fails before one succeeds.
    let resumed = (0..=4).find_map(|_| storage.events.write(T, append.clone()).ok());
    let outcome = resumed.expect("writes resume once the database is back");
    assert_eq!(outcome.event.version, 2);
    let answered = (0..=1).any(|_| probe.ping(timeout).is_ok());
    assert!(answered, "the health check recovers with the database");
    let aggregate = storage
        .events
        .get(T, "order", "o-1")
        .expect("get")
        .expect("exists");
    assert_eq!(aggregate.version, 2, "the acknowledged create was not lost");
    storage.events.verify(T, "order", "o-1").expect("verify");
}

#[test]
fn a_page_longer_than_one_round_trip_reads_on_in_order() {
    use eventdbx_core::query::cursor::{ListOrder, PagePlan};
    use eventdbx_core::query::sort::SortSpec;
    use eventdbx_core::query::Scope;
    use eventdbx_store::ListQuery;

    // More aggregates than one round trip fetches (512), so a page continues from the keyset
    // of the last row fetched.
    const AGGREGATES: usize = 1_100;
    let url = TestCluster::shared().database("long_pages");
    let mut config = PostgresConfig::new(url, Durability::Relaxed);
    config.pool_size = 4;
    let storage = eventdbx_store_postgres::open_postgres(&config).expect("open");
    let store = &storage.events;
    for n in 0..AGGREGATES {
        let id = format!("o-{n:05}");
        store
            .write(T, request(WriteKind::Create, "order", &id, json!({})))
            .expect("create");
        if n % 3 == 0 {
            store
                .write(T, request(WriteKind::Append, "order", &id, json!({"n": n})))
                .expect("append");
        }
    }
    for sort in [
        None,
        Some("version:desc,aggregate_type:desc,aggregate_id:desc"),
    ] {
        let order = match sort {
            None => ListOrder::Natural,
            Some(text) => ListOrder::Sorted(SortSpec::parse(text).expect("sort")),
        };
        let query = ListQuery {
            plan: PagePlan {
                order: order.clone(),
                after: None,
            },
            scope: Scope::Active,
            filter: None,
            known_types: vec!["order".into()],
            take: AGGREGATES,
        };
        let page = store.list(T, &query, &Some).expect("list");
        assert_eq!(page.items.len(), AGGREGATES, "{sort:?}");
        let keys: Vec<_> = page.items.iter().map(|a| order.key_of(&a.view())).collect();
        assert!(
            keys.windows(2)
                .all(|w| order.compare(&w[0], &w[1]) == std::cmp::Ordering::Less),
            "{sort:?}: every item once, in order"
        );
    }
}

#[test]
fn a_restarting_server_leaves_jobs_under_another_servers_lease_alone() {
    let url = TestCluster::shared().database("recover_shared");
    let (delivering, restarting) = (server(&url, 1), server(&url, 2));
    let mut write = request(WriteKind::Create, "order", "o-1", json!({}));
    write.publish = vec![JobRoute {
        plugin: "search".into(),
        mode: PayloadMode::All,
        priority: Priority::Normal,
        schema: None,
    }];
    delivering.events.write(T, write).expect("write");
    let policy = RetryPolicy {
        max_attempts: 3,
        backoff_unit_ms: 1000,
    };
    let now = u64::MAX / 4;
    let Claim::Job(job) = delivering
        .jobs
        .claim_job("search", now, 60_000, policy)
        .expect("claim")
    else {
        panic!("the job is due");
    };
    // The other server starts while the job is in delivery: it must not take it back.
    assert_eq!(
        restarting.jobs.recover_jobs(now + 1_000).expect("recover"),
        0
    );
    assert!(matches!(
        restarting.jobs.claim_job("search", now + 1_000, 60_000, policy),
        Ok(Claim::Busy(deadline)) if deadline == now + 60_000
    ));
    // Once the lease has run out, the job is recovered (its server died with it).
    assert_eq!(
        restarting.jobs.recover_jobs(now + 60_000).expect("recover"),
        1
    );
    let Claim::Job(again) = restarting
        .jobs
        .claim_job("search", now + 60_000, 60_000, policy)
        .expect("claim")
    else {
        panic!("the recovered job is due");
    };
    assert_eq!(again.id, job.id);
}

#[test]
fn concurrent_writers_on_two_servers_never_pass_the_quota_together() {
    const WRITERS: usize = 8;
    const BLOB: usize = 2_000;
    const QUOTA: u64 = 20_000;
    let url = TestCluster::shared().database("quota_race");
    let servers = [server(&url, 1), server(&url, 2)];
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&servers[w % 2].events);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut largest = 0;
                for k in 0.. {
                    let id = format!("o-{w}-{k}");
                    let mut write = request(
                        WriteKind::Create,
                        "order",
                        &id,
                        json!({"blob": "x".repeat(BLOB)}),
                    );
                    write.quota_bytes = Some(QUOTA);
                    match store.write(T, write) {
                        Ok(outcome) => {
                            let bytes = serde_json::to_vec(&outcome.event).expect("json").len();
                            largest = largest.max(bytes as u64);
                        }
                        Err(err) => {
                            assert!(
                                matches!(domain(err), CoreError::TenantQuota { .. }),
                                "only the quota refuses"
                            );
                            return largest;
                        }
                    }
                }
                largest
            })
        })
        .collect();
    let largest = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .max()
        .unwrap_or(0);
    let usage = servers[0].events.usage(T).expect("usage");
    // Each accepted write saw the usage below the quota, after every write before it: the
    // total passes the quota by less than one write, however many writers raced.
    assert!(
        usage.bytes < QUOTA + largest,
        "usage {} passed the quota {QUOTA} by a write or more ({largest} bytes)",
        usage.bytes
    );
    assert_eq!(servers[1].events.recalc_usage(T).expect("recount"), usage);
}

#[test]
fn writers_with_and_without_a_quota_on_two_servers_never_fail_on_a_deadlock() {
    // A writer under a quota locks its tenant's usage rows first and the aggregate's row next;
    // one without a quota takes them the other way round. Between servers that can deadlock:
    // PostgreSQL aborts one transaction, which must be prepared again, not reported.
    const APPENDS: usize = 20;
    let url = TestCluster::shared().database("quota_deadlock");
    let servers = [server(&url, 1), server(&url, 2)];
    let create = request(WriteKind::Create, "order", "o-1", json!({}));
    servers[0].events.write(T, create).expect("create");
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(n, storage)| {
            let (store, start) = (Arc::clone(&storage.events), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for k in 0..APPENDS {
                    let mut write = request(WriteKind::Append, "order", "o-1", json!({"k": k}));
                    write.quota_bytes = (n == 0).then_some(u64::MAX / 2);
                    store.write(T, write).expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let aggregate = servers[1]
        .events
        .get(T, "order", "o-1")
        .expect("get")
        .expect("exists");
    assert_eq!(aggregate.version, 1 + 2 * APPENDS as u64);
}

/// The trap of positions taken before a commit: a transaction that queued its event first but
/// commits after another one, which a reader was already shown, gets a position above it.
#[test]
fn an_event_committed_late_is_numbered_above_the_head_a_reader_saw() {
    let cluster = TestCluster::shared();
    let url = cluster.database("late_commit");
    let storage = server(&url, 1);
    let create = request(WriteKind::Create, "order", "o-1", json!({}));
    storage.events.write(T, create).expect("create");
    assert_eq!(storage.events.head_position(T).expect("head"), 1);
    // A second session (dblink) inserts an event and holds its transaction open while this
    // one commits another event, numbers it and reads the head; then the second commits.
    let copy = |id: &str, extra: u64| {
        format!(
            "INSERT INTO events (tenant, aggregate_type, aggregate_id, version, event_id, body) \
             SELECT tenant, aggregate_type, '{id}', version, event_id + {extra}, \
             replace(body, '\"o-1\"', '\"{id}\"') FROM events WHERE aggregate_id = 'o-1'"
        )
    };
    let script = format!(
        "CREATE EXTENSION IF NOT EXISTS dblink;\n\
         SELECT dblink_connect('late', 'host=127.0.0.1 port={port} user=postgres \
         dbname=late_commit') IS NOT NULL;\n\
         SELECT dblink_exec('late', 'BEGIN');\n\
         SELECT dblink_exec('late', $late${late}$late$);\n\
         {early};\n\
         SELECT count(*) FROM eventdbx_assign_positions(100);\n\
         SELECT 'seen ' || head FROM position_heads WHERE tenant = '{T}';\n\
         SELECT dblink_exec('late', 'COMMIT');\n\
         SELECT count(*) FROM eventdbx_assign_positions(100);\n",
        port = cluster.port(),
        late = copy("o-2", 1),
        early = copy("o-3", 2),
    );
    let output = cluster.script("late_commit", &script);
    assert!(output.contains("seen 2"), "{output}");
    let page = storage
        .events
        .events_after(T, 0, &eventdbx_store::EventSelector::default(), 10)
        .expect("page");
    let got: Vec<(u64, &str)> = page
        .events
        .iter()
        .map(|e| (e.position, e.event.aggregate_id.as_str()))
        .collect();
    assert_eq!(got, vec![(1, "o-1"), (2, "o-3"), (3, "o-2")]);
    assert_eq!(page.head, 3);
}

/// Two servers writing at once: one gapless order of positions, each aggregate's versions in
/// it in order, readable from a third.
#[test]
fn two_servers_writes_get_one_gapless_order_of_positions() {
    const APPENDS: u64 = 40;
    let url = TestCluster::shared().database("positions_shared");
    let servers = [server(&url, 1), server(&url, 2)];
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = servers
        .iter()
        .map(|storage| {
            let (store, start) = (Arc::clone(&storage.events), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for n in 0..APPENDS {
                    let id = format!("o-{}", n % 3);
                    store
                        .write(
                            T,
                            request(WriteKind::Append, "order", &id, json!({ "n": n })),
                        )
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    // Each server numbers what it acknowledged before its reads answer.
    for storage in &servers {
        assert!(storage.events.head_position(T).expect("head") <= 2 * APPENDS);
    }
    let reader = server(&url, 3);
    assert_eq!(reader.events.head_position(T).expect("head"), 2 * APPENDS);
    let page = reader
        .events
        .events_after(T, 0, &eventdbx_store::EventSelector::default(), 1_000)
        .expect("page");
    let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=2 * APPENDS).collect::<Vec<_>>());
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &page.events {
        let last = versions.entry(e.event.aggregate_id.as_str()).or_insert(0);
        assert_eq!(e.event.version, *last + 1, "{}", e.event.aggregate_id);
        *last = e.event.version;
    }
}

/// A database written before positions (schema 3) gets them when the migration runs: per tenant
/// in the order the events were sealed, each aggregate's versions in order; later writes
/// continue from there.
#[test]
fn events_stored_before_positions_are_numbered_by_the_migration() {
    let cluster = TestCluster::shared();
    let url = cluster.database("before_positions");
    {
        let storage = server(&url, 1);
        for (tenant, id) in [("a", "o-2"), ("b", "o-1"), ("a", "o-1"), ("a", "o-2")] {
            let append = request(WriteKind::Append, "order", id, json!({}));
            storage.events.write(tenant, append).expect("append");
        }
        storage.events.close();
    }
    // Back to schema 3: what migration 4 added (and migration 5's index on it, migration 6's
    // group write), gone.
    cluster.sql(
        "before_positions",
        "DROP TRIGGER events_queue_position ON events; \
         DROP FUNCTION eventdbx_queue_position(), eventdbx_assign_positions(integer), \
         eventdbx_write(text, text, text, bigint, bigint, boolean, bigint, bigint, text, \
         bigint, bigint, text, bigint, bigint, text, text, text, boolean, text[], text[], \
         text[], text[], integer[], text[], integer, bigint); \
         DROP FUNCTION eventdbx_write_group; \
         DROP TABLE position_queue, event_positions, position_heads, position_sequencer; \
         DELETE FROM eventdbx_migrations WHERE version >= 4",
    );
    let storage = server(&url, 1);
    assert_eq!(storage.events.head_position("a").expect("head"), 3);
    assert_eq!(storage.events.head_position("b").expect("head"), 1);
    let append = request(WriteKind::Append, "order", "o-1", json!({}));
    storage.events.write("a", append).expect("append");
    let page = storage
        .events
        .events_after("a", 0, &eventdbx_store::EventSelector::default(), 10)
        .expect("page");
    let got: Vec<(u64, &str, u64)> = page
        .events
        .iter()
        .map(|e| (e.position, e.event.aggregate_id.as_str(), e.event.version))
        .collect();
    assert_eq!(
        got,
        vec![(1, "o-2", 1), (2, "o-1", 1), (3, "o-2", 2), (4, "o-1", 2)]
    );
}
