//! Crash consistency: a child process appends and prints every acknowledged version; the parent
//! kills it with SIGKILL at random moments and checks the reopened store after each kill.
//!
//! The child is this same test binary, re-run with arguments that select the `#[ignore]`d
//! [`child_writer`] test and an environment variable naming the database file. Several writer
//! threads over several aggregates keep more than one write in each group commit, so a kill can
//! land between preparing a write, queueing it, committing the batch and answering the callers.
//! A durable writer may also checkpoint after every batch, so that kills land in checkpoints
//! (the durable redb commit after which the write-ahead log starts over) as often as in appends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EmbeddedOptions, EventStore, RedbStore, WriteRequest};
use serde_json::json;

/// Names the database file the child writes; its absence makes [`child_writer`] a no-op.
const DATA_ENV: &str = "EVENTDBX_CRASH_DATA";
/// `fsync` or `relaxed`: the durability the child opens the store with.
const DURABILITY_ENV: &str = "EVENTDBX_CRASH_DURABILITY";
/// Set: the child checkpoints its write-ahead log after every batch.
const CHECKPOINT_ENV: &str = "EVENTDBX_CRASH_CHECKPOINT_EVERY_BATCH";
/// Set: the child writes its log with `O_DIRECT | O_DSYNC` (`[storage] wal_direct_io`), unset:
/// buffered writes and `fdatasync` (the default). The kill loops alternate the two.
const DIRECT_ENV: &str = "EVENTDBX_CRASH_WAL_DIRECT_IO";
const TENANT: &str = "default";
const AGGREGATE_TYPE: &str = "account";
const WRITER_THREADS: usize = 16;
const AGGREGATES_PER_WRITER: usize = 3;
/// How long the parent waits for a child's first acknowledgement before giving up.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(20);

fn aggregate_id(writer: usize, slot: usize) -> String {
    format!("acct-{writer}-{slot}")
}

fn all_aggregate_ids() -> Vec<String> {
    (0..WRITER_THREADS)
        .flat_map(|w| (0..AGGREGATES_PER_WRITER).map(move |s| aggregate_id(w, s)))
        .collect()
}

/// The child: appends until killed, printing `ack <id> <version>` after each acknowledged write.
/// A relaxed child also flushes in a loop, printing `flushing` before each flush and `durable`
/// after it: every ack printed before a `flushing` whose `durable` followed is on disk.
#[test]
#[ignore = "run by the crash tests as a child process"]
fn child_writer() {
    let Some(path) = std::env::var_os(DATA_ENV) else {
        return;
    };
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("relaxed") => Durability::Relaxed,
        _ => Durability::Fsync,
    };
    let mut options = EmbeddedOptions {
        wal_direct_io: std::env::var_os(DIRECT_ENV).is_some(),
        ..EmbeddedOptions::default()
    };
    if std::env::var_os(CHECKPOINT_ENV).is_some() {
        options.checkpoint_bytes = 1;
    }
    let store =
        RedbStore::open_with_options(&path, durability, 0, options).expect("child opens the store");
    thread::scope(|scope| {
        if durability == Durability::Relaxed {
            let store = &store;
            scope.spawn(move || loop {
                say("flushing");
                store.flush().expect("child flushes the store");
                say("durable");
            });
        }
        for writer in 0..WRITER_THREADS {
            let store = &store;
            scope.spawn(move || {
                let ids: Vec<String> = (0..AGGREGATES_PER_WRITER)
                    .map(|slot| aggregate_id(writer, slot))
                    .collect();
                // Each aggregate has exactly one writer, so its version is known locally and
                // every append can carry it as the expected version.
                let mut versions: Vec<u64> = ids
                    .iter()
                    .map(|id| {
                        store
                            .get(TENANT, AGGREGATE_TYPE, id)
                            .expect("child reads the aggregate")
                            .map_or(0, |a| a.version)
                    })
                    .collect();
                for turn in 0usize.. {
                    let slot = turn % ids.len();
                    let kind = if versions[slot] == 0 {
                        WriteKind::Create
                    } else {
                        WriteKind::Append
                    };
                    let mut request = WriteRequest::new(
                        kind,
                        AGGREGATE_TYPE,
                        &ids[slot],
                        "deposited",
                        WriteBody::Payload(json!({"amount": turn, "writer": writer})),
                    );
                    if kind == WriteKind::Append {
                        request.expected_version = Some(versions[slot]);
                    }
                    let outcome = store.write(TENANT, request).expect("child write");
                    versions[slot] = outcome.event.version;
                    say(&format!("ack {} {}", ids[slot], outcome.event.version));
                }
            });
        }
    });
}

/// Prints one whole line to the parent (the stdout lock keeps lines of threads apart and in
/// the order they were printed).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("child prints a line");
    out.flush().expect("child flushes its output");
}

/// A tiny xorshift64 generator, seeded from the clock: kill moments differ between runs.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        XorShift(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `low..high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn spawn_child(
    path: &Path,
    durability: Durability,
    checkpoints: Checkpoints,
    direct: bool,
) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--ignored", "--exact", "crash::child_writer", "--nocapture"])
        .env(DATA_ENV, path)
        .env(DURABILITY_ENV, durability.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if checkpoints == Checkpoints::EveryBatch {
        command.env(CHECKPOINT_ENV, "1");
    }
    if direct {
        command.env(DIRECT_ENV, "1");
    }
    command.spawn().expect("spawn the child writer")
}

/// How often the child checkpoints its write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    /// At the default log size.
    Default,
    /// After every batch: most kills land in or next to a checkpoint.
    EveryBatch,
}

fn run_and_kill(
    path: &Path,
    durability: Durability,
    checkpoints: Checkpoints,
    direct: bool,
    rng: &mut XorShift,
) -> Transcript {
    let mut child = spawn_child(path, durability, checkpoints, direct);
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (lines, received) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // A line cut short by the kill was never fully printed, so it is no ack.
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => {
                    if lines.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let mut transcript = Transcript::default();
    // Kill only once some ack must survive: the first one (fsync), or the first one covered by
    // a finished flush (relaxed), so every round checks something.
    let started = Instant::now();
    while transcript.must_survive(durability).is_empty() {
        let line = received
            .recv_timeout(FIRST_ACK_TIMEOUT.saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the child made nothing durable within {FIRST_ACK_TIMEOUT:?}")
            });
        transcript.record(&line);
    }
    // The kill moment is random on purpose (it is the test's input, not a synchronisation).
    let deadline = Instant::now() + Duration::from_millis(rng.between(20, 300));
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(line) = received.recv_timeout(left) {
            transcript.record(&line);
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("the ack reader does not panic");
    for line in received.try_iter() {
        transcript.record(&line);
    }
    transcript
}

/// What the child printed, in order.
#[derive(Default)]
struct Transcript {
    /// `(aggregate id, version)` of every ack.
    acks: Vec<(String, u64)>,
    /// The number of acks printed before the last `flushing` line.
    flushing_after: usize,
    /// The number of acks printed before the last `flushing` line that a `durable` line
    /// followed: those are on disk.
    durable: usize,
}

impl Transcript {
    /// Records one line: `ack <id> <version>`, `flushing` or `durable`; other output (the test
    /// harness's) is ignored.
    fn record(&mut self, line: &str) {
        match line {
            "flushing" => self.flushing_after = self.acks.len(),
            "durable" => self.durable = self.flushing_after,
            _ => {
                let mut parts = line.split(' ');
                if let (Some("ack"), Some(id), Some(version), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                {
                    let version = version.parse().expect("an ack carries a version number");
                    self.acks.push((id.to_owned(), version));
                }
            }
        }
    }

    /// The latest version of each aggregate that must survive the kill: every ack of a durable
    /// writer; for a relaxed one, the acks a finished flush covered (a kill may lose the rest).
    fn must_survive(&self, durability: Durability) -> BTreeMap<String, u64> {
        let survivors = match durability {
            Durability::Fsync => &self.acks[..],
            Durability::Relaxed => &self.acks[..self.durable],
        };
        let mut out = BTreeMap::new();
        for (id, version) in survivors {
            let entry = out.entry(id.clone()).or_insert(0);
            *entry = (*entry).max(*version);
        }
        out
    }
}

/// Reopens the store and checks every acknowledged event and the consistency of the rest.
/// Returns the total number of stored events.
fn check_after_kill(path: &Path, acked: &BTreeMap<String, u64>, round: usize) -> u64 {
    let store = RedbStore::open(path, Durability::Fsync).expect("reopen after the kill");
    let mut total = 0;
    for id in all_aggregate_ids() {
        let Some(aggregate) = store
            .get(TENANT, AGGREGATE_TYPE, &id)
            .expect("read the aggregate")
        else {
            assert_eq!(
                acked.get(&id),
                None,
                "round {round}: acknowledged aggregate {id} is missing"
            );
            continue;
        };
        let acked_version = acked.get(&id).copied().unwrap_or(0);
        assert!(
            aggregate.version >= acked_version,
            "round {round}: {id} is at version {} but version {acked_version} was acknowledged",
            aggregate.version
        );
        let take = usize::try_from(aggregate.version).expect("version fits usize") + 10;
        let page = store
            .events(TENANT, AGGREGATE_TYPE, &id, 0, take, None)
            .expect("read the events");
        let versions: Vec<u64> = page.events.iter().map(|e| e.version).collect();
        let expected: Vec<u64> = (1..=aggregate.version).collect();
        assert_eq!(
            versions, expected,
            "round {round}: {id} events are not exactly versions 1..={}",
            aggregate.version
        );
        assert_eq!(
            page.events.last().map(|e| e.merkle_root.as_str()),
            Some(aggregate.merkle_root.as_str()),
            "round {round}: {id} last event's root differs from the aggregate's"
        );
        let root = store
            .verify(TENANT, AGGREGATE_TYPE, &id)
            .unwrap_or_else(|err| panic!("round {round}: verify {id} failed: {err}"));
        assert_eq!(root, aggregate.merkle_root, "round {round}: {id} root");
        total += aggregate.version;
    }
    for id in acked.keys() {
        assert!(
            all_aggregate_ids().contains(id),
            "round {round}: the child acknowledged an unknown aggregate {id}"
        );
    }
    let recorded = store.usage(TENANT).expect("read usage");
    assert_eq!(
        recorded.events, total,
        "round {round}: usage counts {} events, {total} are stored",
        recorded.events
    );
    let recounted = store.recalc_usage(TENANT).expect("recount usage");
    assert_eq!(recorded, recounted, "round {round}: usage drifted");
    total
}

fn kill_loop(durability: Durability, checkpoints: Checkpoints, rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.redb");
    let mut rng = XorShift::from_clock();
    let mut previous_total = 0;
    for round in 0..rounds {
        // Every other child writes its log directly: both write paths are killed and reopened
        // in turn, on the same file.
        let direct = round % 2 == 1;
        let acked =
            run_and_kill(&path, durability, checkpoints, direct, &mut rng).must_survive(durability);
        assert!(
            !acked.is_empty(),
            "round {round}: no acknowledgement old enough to check"
        );
        let total = check_after_kill(&path, &acked, round);
        assert!(
            total > previous_total,
            "round {round}: nothing new was stored ({total} events)"
        );
        previous_total = total;
    }
    eprintln!(
        "{rounds} kills of a {} writer ({checkpoints:?} checkpoints): {previous_total} events \
         stored, every ack that must survive did",
        durability.as_str()
    );
}

/// The acceptance test: 20 SIGKILLs of a durable writer; every ack survives each one.
#[test]
fn durable_writer_survives_sigkill() {
    kill_loop(Durability::Fsync, Checkpoints::Default, 20);
}

/// 20 SIGKILLs of a durable writer that checkpoints after every batch, so kills land during
/// checkpoints: every ack survives each one.
#[test]
fn durable_writer_survives_sigkill_during_checkpoints() {
    kill_loop(Durability::Fsync, Checkpoints::EveryBatch, 20);
}

/// Relaxed mode acknowledges before the flush; a kill may lose the writes after the last
/// finished flush, never one a flush covered, and never leaves a half-written aggregate.
#[test]
fn relaxed_writer_loses_at_most_the_last_flush_window() {
    kill_loop(Durability::Relaxed, Checkpoints::Default, 5);
}
