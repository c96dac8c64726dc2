//! `write_then` on a real database: the caller's thread only starts a queued write, the
//! committer answers it, and every outcome (appends, a conflict, a lost race prepared again)
//! is the one `write` gives.

use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::ThreadId;

use eventdbx_core::write::WriteKind;
use eventdbx_store::{EventStore, Result, WriteOutcome, WriteRequest};

use crate::account_writes::{history, open, request, T};
use crate::{db, pool_error, PostgresStore};

type Answers = Receiver<(ThreadId, Result<WriteOutcome>)>;

/// Starts `requests` one after the other on this thread; each answer comes with the thread
/// that gave it.
fn start_all(store: &PostgresStore, requests: Vec<WriteRequest>) -> Vec<Answers> {
    requests
        .into_iter()
        .map(|request| {
            let (answer, answered) = channel();
            store.write_then(
                T,
                request,
                Box::new(move |outcome| {
                    let _ = answer.send((std::thread::current().id(), outcome));
                }),
            );
            answered
        })
        .collect()
}

#[test]
fn writes_started_together_from_one_thread_are_answered_by_the_engine_as_write_answers() {
    let store = open("writer_then_outcomes", 0);
    let ids: Vec<String> = (0..8).map(|k| format!("a-{k}")).collect();
    for id in &ids {
        store
            .write(T, request(WriteKind::Create, id, 0))
            .expect("create");
    }
    // Another server appends to a-0: this engine's memory of it is stale, so its append loses
    // its race and is prepared again from the stored record.
    let other = open("writer_then_outcomes", 1);
    other
        .write(T, request(WriteKind::Append, "a-0", 100))
        .expect("the other server's append");
    let mut requests: Vec<WriteRequest> = (0..8)
        .map(|k| request(WriteKind::Append, &ids[k], k as u64 + 1))
        .collect();
    let mut conflicting = request(WriteKind::Append, "a-1", 50);
    conflicting.expected_version = Some(7);
    requests.push(conflicting);
    let caller = std::thread::current().id();
    let answers: Vec<_> = start_all(&store, requests)
        .into_iter()
        .map(|answered| answered.recv().expect("every write is answered"))
        .collect();
    for (k, (thread, outcome)) in answers.iter().enumerate() {
        assert_ne!(
            *thread, caller,
            "write {k} was answered off the caller's thread"
        );
        if k < 8 {
            let event = &outcome.as_ref().expect("the append is stored").event;
            assert_eq!(event.version, if k == 0 { 3 } else { 2 });
        }
    }
    let conflict = answers[8].1.as_ref().expect_err("a stale expected version");
    let blocking = store
        .write(T, {
            let mut again = request(WriteKind::Append, "a-1", 50);
            again.expected_version = Some(7);
            again
        })
        .expect_err("write refuses it too");
    assert_eq!(conflict.code(), "version_conflict");
    assert_eq!(blocking.code(), conflict.code());
    assert_eq!(history(&store, "a-0"), vec![0, 100, 1]);
    for (k, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(history(&store, id), vec![0, k as u64 + 1]);
    }
    assert_eq!(store.usage(T).expect("usage").events, 17);
    assert_eq!(store.recalc_usage(T).expect("recount").events, 17);
}

#[test]
fn write_then_returns_before_its_commit_and_is_answered_once_it_commits() {
    let store = open("writer_then_returns", 0);
    store
        .write(T, request(WriteKind::Create, "a-1", 0))
        .expect("create");
    // Another session holds a-1's row: no commit of an append to it can finish until it ends.
    let pool = store.pool();
    let holder = store
        .run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .batch_execute(
                    "BEGIN; SELECT 1 FROM aggregates WHERE aggregate_id = 'a-1' FOR UPDATE",
                )
                .await
                .map_err(db)?;
            Ok(client)
        })
        .expect("hold the row");
    let answered = start_all(&store, vec![request(WriteKind::Append, "a-1", 1)]);
    assert!(
        matches!(answered[0].try_recv(), Err(TryRecvError::Empty)),
        "write_then returned while its commit waits for the row"
    );
    store
        .run(async move { holder.batch_execute("ROLLBACK").await.map_err(db) })
        .expect("release the row");
    let (_, outcome) = answered[0].recv().expect("answered after the commit");
    assert_eq!(outcome.expect("stored").event.version, 2);
    assert_eq!(history(&store, "a-1"), vec![0, 1]);
}

/// The server's payload check reads the store (a reference's target), and such a read waits for
/// a task of the engine's runtime: a write prepared off the caller's thread (after a read, or
/// after waiting for its stripe) must not prepare on the runtime's own thread.
#[test]
fn a_payload_check_that_reads_the_store_is_answered_on_every_path() {
    let store = Arc::new(open("writer_check_reads", 0));
    for id in ["target", "a-2"] {
        store
            .write(T, request(WriteKind::Create, id, 0))
            .expect("create");
    }
    let checked = |kind, id: &str| {
        let mut request = request(kind, id, 1);
        let reader = Arc::clone(&store);
        request.prepare = Some(Arc::new(move |_, _| {
            reader.get(T, "account", "target")?.expect("the target");
            Ok(())
        }));
        request
    };
    // a-1 is new (read first); a-2's stripe is held, so its write waits for it on the runtime.
    let stripe = store.lock(T, "account", "a-2").expect("hold a-2's stripe");
    let answered = start_all(
        &store,
        vec![
            checked(WriteKind::Create, "a-1"),
            checked(WriteKind::Append, "a-2"),
        ],
    );
    // A bound on a failure (an engine stalled for good), not a wait for the write.
    let wait = std::time::Duration::from_secs(120);
    let (_, created) = answered[0].recv_timeout(wait).expect("a-1 answered");
    assert_eq!(created.expect("created").event.version, 1);
    drop(stripe);
    let (_, appended) = answered[1].recv_timeout(wait).expect("a-2 answered");
    assert_eq!(appended.expect("appended").event.version, 2);
}

/// A write's answer runs on the engine's thread: a store call from it is refused with an error
/// instead of waiting forever for a task only that thread can run.
#[test]
fn a_store_call_from_a_write_answer_is_refused_not_stalled() {
    let store = Arc::new(open("writer_answer_calls", 0));
    store
        .write(T, request(WriteKind::Create, "a-1", 0))
        .expect("create");
    let (answer, answered) = channel();
    let reader = Arc::clone(&store);
    store.write_then(
        T,
        request(WriteKind::Append, "a-1", 1),
        Box::new(move |outcome| {
            let read = reader.get(T, "account", "a-1");
            let write = reader.write(T, request(WriteKind::Append, "a-1", 2));
            let _ = answer.send((outcome.map(|o| o.event.version), read.is_err(), write.err()));
        }),
    );
    // A bound on a failure (an engine stalled for good), not a wait for the write.
    let (version, read_refused, write_refused) = answered
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("answered");
    assert_eq!(version.expect("appended"), 2);
    assert!(read_refused, "a read from the answer is refused");
    assert!(
        write_refused.is_some_and(|err| err.to_string().contains("engine's own thread")),
        "a write from the answer is refused"
    );
    // The engine still serves everyone else.
    assert_eq!(history(&store, "a-1"), vec![0, 1]);
}
