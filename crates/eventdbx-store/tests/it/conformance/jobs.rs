//! The durable plugin queue: jobs commit with their write (and not without it), delivery order
//! per plugin (priority, then age), claim leases and their recovery, retries, dead letters,
//! retry and clear by the admin, pruning of done jobs, and survival across a reopen.

use eventdbx_core::plugin::{JobAction, JobStatus, PayloadMode, Priority, RetryPolicy};
use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{
    Claim, Durability, EventStore, JobFilter, JobQueue, JobRoute, Storage, WriteRequest,
};
use serde_json::json;

use super::{engine, T};

/// Both views of a durable engine on `dir`.
fn open(dir: &tempfile::TempDir) -> Storage {
    engine(dir.path(), Durability::Fsync)
}

fn route(plugin: &str, priority: Priority) -> JobRoute {
    JobRoute {
        plugin: plugin.into(),
        mode: PayloadMode::All,
        priority,
        schema: None,
    }
}

fn write(store: &dyn EventStore, kind: WriteKind, id: &str, routes: Vec<JobRoute>) -> u64 {
    let mut request = WriteRequest::new(
        kind,
        "order",
        id,
        "order.changed",
        WriteBody::Payload(json!({"n": id})),
    );
    request.publish = routes;
    store
        .write(T, request)
        .expect("write")
        .event
        .metadata
        .event_id
}

/// A "now" after every job's creation time.
fn base() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    u64::try_from(now).expect("ms") + 10_000
}

const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff_unit_ms: 1000,
};

fn claim(queue: &dyn JobQueue, plugin: &str, now: u64) -> Claim {
    queue.claim_job(plugin, now, 60_000, POLICY).expect("claim")
}

fn claimed(queue: &dyn JobQueue, plugin: &str, now: u64) -> eventdbx_core::plugin::PluginJob {
    match claim(queue, plugin, now) {
        Claim::Job(job) => *job,
        other => panic!("expected a job, got {other:?}"),
    }
}

#[test]
fn jobs_commit_with_the_write_and_carry_event_and_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let event_id = write(
        &*store.events,
        WriteKind::Create,
        "o-1",
        vec![route("a", Priority::Normal), route("b", Priority::High)],
    );
    let jobs = store.jobs.list_jobs(&JobFilter::default()).expect("list");
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.event_id == event_id && j.tenant == T));
    assert!(jobs
        .iter()
        .all(|j| j.status == JobStatus::Pending && j.attempts == 0));
    let job = &jobs[0];
    assert_eq!(job.action, JobAction::Event);
    let event = job.event.as_ref().expect("event");
    assert_eq!(event.aggregate_id, "o-1");
    assert_eq!(job.aggregate["state"]["n"], json!("o-1"));
    assert_eq!(
        job.body()["event"]["metadata"]["event_id"],
        json!(event_id.to_string())
    );
    // A refused write queues nothing.
    let mut bad = WriteRequest::new(
        WriteKind::Create,
        "order",
        "o-1",
        "order.changed",
        WriteBody::Payload(json!({})),
    );
    bad.publish = vec![route("a", Priority::Normal)];
    store.events.write(T, bad).expect_err("exists");
    assert_eq!(store.jobs.job_counts().expect("counts").pending, 2);
}

#[test]
fn delivery_order_is_priority_then_age_per_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(
        &*store.events,
        WriteKind::Create,
        "o-1",
        vec![route("a", Priority::Low)],
    );
    write(
        &*store.events,
        WriteKind::Create,
        "o-2",
        vec![route("a", Priority::Normal)],
    );
    write(
        &*store.events,
        WriteKind::Create,
        "o-3",
        vec![route("a", Priority::High)],
    );
    write(
        &*store.events,
        WriteKind::Create,
        "o-4",
        vec![route("a", Priority::Normal)],
    );
    write(
        &*store.events,
        WriteKind::Create,
        "o-5",
        vec![route("b", Priority::Low)],
    );
    let mut order = Vec::new();
    loop {
        match claim(&*store.jobs, "a", u64::MAX / 2) {
            Claim::Job(job) => {
                order.push(job.aggregate_id.clone());
                store.jobs.complete_job(job.id, 1).expect("complete");
            }
            Claim::Empty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(order, ["o-3", "o-2", "o-4", "o-1"]);
    // Plugin b's queue is its own.
    assert_eq!(claimed(&*store.jobs, "b", u64::MAX / 2).aggregate_id, "o-5");
}

#[test]
fn failures_back_off_then_dead_letter_and_retry_redelivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let event_id = write(
        &*store.events,
        WriteKind::Create,
        "o-1",
        vec![route("a", Priority::Normal)],
    );
    let now = base();
    let job = claimed(&*store.jobs, "a", now);
    assert_eq!((job.attempts, job.status), (1, JobStatus::Processing));
    assert_eq!(job.deadline_ms, Some(now + 60_000));
    // While processing, the head is busy: nothing else is handed out.
    assert_eq!(claim(&*store.jobs, "a", now + 1), Claim::Busy(now + 60_000));
    let status = store
        .jobs
        .fail_job(job.id, "boom 1", now, POLICY)
        .expect("fail");
    assert_eq!(status, JobStatus::Pending);
    let Claim::WaitUntil(at) = claim(&*store.jobs, "a", now) else {
        panic!("expected a wait");
    };
    assert!(
        (now + 1000..=now + 1100).contains(&at),
        "1 s backoff, got {}",
        at - now
    );
    let job = claimed(&*store.jobs, "a", at);
    assert_eq!(job.attempts, 2);
    store
        .jobs
        .fail_job(job.id, "boom 2", at, POLICY)
        .expect("fail");
    let Claim::WaitUntil(at2) = claim(&*store.jobs, "a", at) else {
        panic!("expected a wait");
    };
    assert!((at + 2000..=at + 2200).contains(&at2), "2 s backoff");
    let job = claimed(&*store.jobs, "a", at2);
    assert_eq!(job.attempts, 3);
    let status = store
        .jobs
        .fail_job(job.id, "boom 3", at2, POLICY)
        .expect("fail");
    assert_eq!(status, JobStatus::Dead);
    assert_eq!(claim(&*store.jobs, "a", u64::MAX / 2), Claim::Empty);
    let dead = store
        .jobs
        .list_jobs(&JobFilter {
            statuses: vec![JobStatus::Dead],
            ..JobFilter::default()
        })
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 3"));
    assert_eq!(store.jobs.job_counts().expect("counts").dead, 1);
    // Retry by event id puts it back with no attempts.
    let other = JobFilter {
        event_id: Some(event_id + 1),
        ..JobFilter::default()
    };
    assert!(store
        .jobs
        .retry_jobs(&other, at2)
        .expect("retry")
        .is_empty());
    let by_event = JobFilter {
        event_id: Some(event_id),
        ..JobFilter::default()
    };
    assert_eq!(store.jobs.retry_jobs(&by_event, at2).expect("retry"), ["a"]);
    let job = claimed(&*store.jobs, "a", at2);
    assert_eq!(job.attempts, 1);
    store.jobs.complete_job(job.id, at2).expect("complete");
    let counts = store.jobs.job_counts().expect("counts");
    assert_eq!((counts.pending, counts.dead, counts.done), (0, 0, 1));
    // A replay puts done jobs back too.
    let replay = JobFilter {
        plugin: Some("A".into()),
        statuses: vec![JobStatus::Done],
        ..JobFilter::default()
    };
    assert_eq!(store.jobs.retry_jobs(&replay, at2).expect("replay"), ["a"]);
    let job = claimed(&*store.jobs, "a", at2);
    assert_eq!((job.attempts, job.event_id), (1, event_id));
}

#[test]
fn an_expired_lease_is_a_failure_and_recover_requeues_processing_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(
        &*store.events,
        WriteKind::Create,
        "o-1",
        vec![route("a", Priority::Normal)],
    );
    let b = base();
    let job = claimed(&*store.jobs, "a", b);
    // After the deadline the head counts as failed and waits for its backoff.
    match claim(&*store.jobs, "a", b + 60_001) {
        Claim::WaitUntil(at) => assert!(at > b + 61_000),
        other => panic!("expected a wait, got {other:?}"),
    }
    let listed = store.jobs.list_jobs(&JobFilter::default()).expect("list");
    assert_eq!(listed[0].id, job.id);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("delivery did not finish before its deadline")
    );
    // A job claimed before a restart is recovered as due now.
    let job = claimed(&*store.jobs, "a", b + 200_000);
    assert_eq!(store.jobs.job_counts().expect("counts").processing, 1);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.jobs.recover_jobs(b + 300_000).expect("recover"), 1);
    let again = claimed(&*store.jobs, "a", b + 300_000);
    assert_eq!((again.id, again.attempts), (job.id, 3));
}

#[test]
fn clear_and_prune_remove_only_dead_and_done_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let once = RetryPolicy {
        max_attempts: 1,
        backoff_unit_ms: 1,
    };
    for n in 0..5 {
        write(
            &*store.events,
            WriteKind::Create,
            &format!("o-{n}"),
            vec![route("a", Priority::Normal)],
        );
    }
    // Two done at times 10 and 20, one dead, two pending.
    let b = base();
    for at in [10, 20] {
        let job = claimed(&*store.jobs, "a", b);
        store.jobs.complete_job(job.id, at).expect("complete");
    }
    let job = claimed(&*store.jobs, "a", b);
    assert_eq!(
        store.jobs.fail_job(job.id, "x", b, once).expect("fail"),
        JobStatus::Dead
    );
    assert_eq!(store.jobs.prune_jobs(15, None).expect("prune"), 1);
    assert_eq!(store.jobs.prune_jobs(0, Some(0)).expect("prune"), 1);
    let counts = store.jobs.job_counts().expect("counts");
    assert_eq!((counts.pending, counts.done, counts.dead), (2, 0, 1));
    let cleared = store
        .jobs
        .clear_jobs(&JobFilter {
            statuses: vec![JobStatus::Dead, JobStatus::Pending],
            ..JobFilter::default()
        })
        .expect("clear");
    assert_eq!(cleared, 1, "pending jobs are never cleared");
    let counts = store.jobs.job_counts().expect("counts");
    assert_eq!((counts.pending, counts.dead), (2, 0));
}

#[test]
fn archive_and_restore_queue_jobs_with_the_state_and_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    write(&*store.events, WriteKind::Create, "o-1", vec![]);
    let routes = [route("a", Priority::Normal)];
    store
        .events
        .set_archived_publishing(T, "order", "o-1", true, None, &|_| false, &routes)
        .expect("archive");
    store
        .events
        .set_archived_publishing(T, "order", "o-1", false, None, &|_| false, &routes)
        .expect("restore");
    let jobs = store.jobs.list_jobs(&JobFilter::default()).expect("list");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].action, JobAction::Archive);
    assert_eq!(jobs[0].aggregate["archived"], json!(true));
    assert_eq!(jobs[1].action, JobAction::Restore);
    assert_ne!(jobs[1].aggregate["archived"], json!(true));
    assert!(jobs[0].event.is_none() && jobs[0].event_id != jobs[1].event_id);
    let body = jobs[0].body();
    assert_eq!(body["action"], json!("archive"));
    assert_eq!(body["aggregate_id"], json!("o-1"));
    assert_eq!(body["state"]["archived"], json!(true));
}
