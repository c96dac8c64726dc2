//! Crash consistency of the archive cascade: a child process repeatedly builds a target with
//! many referrers and archives it with `nullify`; the parent kills it with SIGKILL at random
//! moments. After each reopen every cascade is all-or-nothing: either the target is archived and
//! every referrer was nullified (one `_ref_nullify` event each, reference index empty), or the
//! target is active and every referrer still points at it, untouched and indexed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EventStore, RedbStore, Referrer, WriteRequest};
use serde_json::{json, Value};

use crate::conformance::references::scan;
use crate::crash::XorShift;

const DATA_ENV: &str = "EVENTDBX_CASCADE_CRASH_DATA";
const TENANT: &str = "default";
/// Referrers per target: enough that the archive commit is a large write a kill can interrupt.
const REFERRERS: usize = 150;
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn target_id(round: u64) -> String {
    format!("p-{round}")
}

fn referrer_id(round: u64, n: usize) -> String {
    format!("inv-{round}-{n}")
}

fn create(store: &RedbStore, t: &str, id: &str, payload: Value) {
    let mut request = WriteRequest::new(
        WriteKind::Create,
        t,
        id,
        "thing.created",
        WriteBody::Payload(payload),
    );
    request.references = Some(scan());
    store.write(TENANT, request).expect("child write");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("child prints");
    out.flush().expect("child flushes");
}

/// The child: round after round, a person with `REFERRERS` invoices pointing at it, then the
/// archive with the nullify cascade. Prints `archived <round>` after each acknowledged archive.
#[test]
#[ignore = "run by the cascade crash test as a child process"]
fn child_cascader() {
    let Some(path) = std::env::var_os(DATA_ENV) else {
        return;
    };
    let store = RedbStore::open(&path, Durability::Fsync).expect("child opens the store");
    // Continue after the rounds of earlier children.
    let first = (0u64..)
        .find(|round| {
            store
                .get(TENANT, "person", &target_id(*round))
                .expect("child reads")
                .is_none()
        })
        .unwrap_or(0);
    for round in first.. {
        let target = target_id(round);
        create(&store, "person", &target, json!({"name": "Ada"}));
        for n in 0..REFERRERS {
            create(
                &store,
                "invoice",
                &referrer_id(round, n),
                json!({"customer": format!("person#{target}"), "n": n}),
            );
        }
        say(&format!("ready {round}"));
        store
            .archive(TENANT, "person", &target, Some("cascade"), &|_| true)
            .expect("child archives");
        say(&format!("archived {round}"));
    }
}

/// Runs a child until a random moment after its first `ready`, kills it; returns the rounds it
/// acknowledged as archived and whether its last complete line was a `ready` (killed inside an
/// archive call, or before the next round's first write).
fn run_and_kill(path: &Path, rng: &mut XorShift, aim_at_archive: bool) -> (Vec<u64>, bool) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--ignored",
            "--exact",
            "crash_cascade::child_cascader",
            "--nocapture",
        ])
        .env(DATA_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // A line cut short by the kill is no acknowledgement.
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0 && line.ends_with('\n')) {
            if lines.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let started = Instant::now();
    let mut archived = Vec::new();
    // Whether the last complete line was a `ready`.
    let mut last_ready = false;
    let mut record = |line: &str, archived: &mut Vec<u64>| -> bool {
        match line.split_once(' ') {
            Some(("archived", round)) => {
                archived.push(round.parse().expect("a round number"));
                last_ready = false;
            }
            Some(("ready", _)) => last_ready = true,
            _ => return false,
        }
        last_ready
    };
    loop {
        let line = received
            .recv_timeout(FIRST_ACK_TIMEOUT.saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the child built nothing within {FIRST_ACK_TIMEOUT:?}")
            });
        if record(&line, &mut archived) {
            break;
        }
    }
    if aim_at_archive {
        // Wait for a later round's `ready` (its archive starts right after), then kill within
        // the archive call.
        for _ in 0..rng.between(0, 3) {
            loop {
                let line = received
                    .recv_timeout(FIRST_ACK_TIMEOUT)
                    .expect("the child keeps going");
                if record(&line, &mut archived) {
                    break;
                }
            }
        }
        thread::sleep(Duration::from_micros(rng.between(0, 20_000)));
    } else {
        // Anywhere: inside a cascade commit, between commits, or while referrers are written.
        let deadline = Instant::now() + Duration::from_millis(rng.between(0, 400));
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(line) = received.recv_timeout(left) {
                record(&line, &mut archived);
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("the reader does not panic");
    for line in received.try_iter() {
        record(&line, &mut archived);
    }
    (archived, last_ready)
}

/// Checks every round's cascade after a reopen; returns (archived rounds, active rounds).
fn check(path: &Path, acked: &[u64], kill: usize) -> (usize, usize) {
    let store = RedbStore::open(path, Durability::Fsync).expect("reopen after the kill");
    let (mut archived_rounds, mut active_rounds) = (0, 0);
    for round in 0u64.. {
        let target = target_id(round);
        let Some(person) = store.get(TENANT, "person", &target).expect("read target") else {
            break;
        };
        let referrers: Vec<_> = (0..REFERRERS)
            .filter_map(|n| {
                store
                    .get(TENANT, "invoice", &referrer_id(round, n))
                    .expect("read referrer")
            })
            .collect();
        let index = store
            .referrers(TENANT, "person", &target)
            .expect("read the index");
        if person.archived {
            archived_rounds += 1;
            assert_eq!(
                referrers.len(),
                REFERRERS,
                "kill {kill}: {target} was archived before all its referrers existed"
            );
            assert!(
                index.is_empty(),
                "kill {kill}: archived {target} still has referrers {index:?}"
            );
            for invoice in &referrers {
                assert_eq!(
                    (invoice.version, invoice.state.get("customer")),
                    (2, Some(&Value::Null)),
                    "kill {kill}: {} was not nullified with its target {target}",
                    invoice.aggregate_id
                );
                let events = store
                    .events(TENANT, "invoice", &invoice.aggregate_id, 1, 10, None)
                    .expect("events")
                    .events;
                assert_eq!(
                    events
                        .iter()
                        .map(|e| e.event_type.as_str())
                        .collect::<Vec<_>>(),
                    ["_ref_nullify"],
                    "kill {kill}: {} has the wrong cascade events",
                    invoice.aggregate_id
                );
            }
        } else {
            active_rounds += 1;
            assert!(
                !acked.contains(&round),
                "kill {kill}: the archive of {target} was acknowledged but is not stored"
            );
            let expected: Vec<Referrer> = referrers
                .iter()
                .map(|invoice| Referrer {
                    aggregate_type: "invoice".into(),
                    aggregate_id: invoice.aggregate_id.clone(),
                    path: "customer".into(),
                })
                .collect();
            let mut index = index;
            index.sort_by(|a, b| a.aggregate_id.cmp(&b.aggregate_id));
            let mut expected = expected;
            expected.sort_by(|a, b| a.aggregate_id.cmp(&b.aggregate_id));
            assert_eq!(index, expected, "kill {kill}: {target}'s index is off");
            for invoice in &referrers {
                assert_eq!(
                    (invoice.version, invoice.state.get("customer")),
                    (1, Some(&json!(format!("person#{target}")))),
                    "kill {kill}: {} changed without its target's archive",
                    invoice.aggregate_id
                );
            }
        }
        for aggregate in std::iter::once(&person).chain(referrers.iter()) {
            let root = store
                .verify(TENANT, &aggregate.aggregate_type, &aggregate.aggregate_id)
                .unwrap_or_else(|err| {
                    panic!(
                        "kill {kill}: verify {} failed: {err}",
                        aggregate.aggregate_id
                    )
                });
            assert_eq!(root, aggregate.merkle_root);
        }
    }
    for round in acked {
        let person = store
            .get(TENANT, "person", &target_id(*round))
            .expect("read target");
        assert!(
            person.is_some_and(|p| p.archived),
            "kill {kill}: acknowledged archive of round {round} is missing"
        );
    }
    let usage = store.usage(TENANT).expect("usage");
    assert_eq!(
        usage,
        store.recalc_usage(TENANT).expect("recount"),
        "kill {kill}: usage drifted"
    );
    (archived_rounds, active_rounds)
}

/// Ten SIGKILLs at random moments of a durable child archiving with a nullify cascade.
#[test]
fn archive_cascade_is_atomic_across_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.redb");
    let mut rng = XorShift::from_clock();
    let mut totals = (0, 0);
    let mut inside_archive = 0;
    for kill in 0..10 {
        let (acked, last_ready) = run_and_kill(&path, &mut rng, kill % 2 == 0);
        inside_archive += usize::from(last_ready);
        totals = check(&path, &acked, kill);
    }
    assert!(totals.0 > 0, "no cascade ever completed");
    eprintln!(
        "10 kills ({inside_archive} after a `ready` with no `archived`, i.e. inside an archive \
         call): {} cascades complete, {} targets left active, every one all-or-nothing",
        totals.0, totals.1
    );
}
