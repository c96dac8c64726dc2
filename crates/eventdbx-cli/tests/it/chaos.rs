//! Chaos: `dbx serve` is SIGKILLed 20 times while 16 writers append through the real client over
//! protocol v2 with fsync durability; after each kill it restarts on the same data directory and
//! the writers reconnect. Afterwards every acknowledged write is stored exactly once, at the
//! version it was acknowledged with; every aggregate holds versions 1..n and passes `verify`; and
//! nothing else is stored but writes whose answer a kill cut off (docs/reliability.md).
//!
//! Kill points are decided by progress, never by time: a seeded random number of
//! acknowledgements since the last restart (the seed is printed; `EVENTDBX_CHAOS_SEED` replays
//! the kill points, though not the writers' interleaving). Most writes go to one of many
//! aggregates without an expected version; a quarter go to a few hot aggregates carrying the
//! version the writer last saw, so version conflicts happen: they are counted, and a conflicting
//! write must never be stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventdbx_client::{
    Client, ClientConfig, ErrorKind, EventsQuery, KnownV2Hosts, ListQuery, Transport, Write,
};
use tokio::sync::watch;

use crate::workspace::Workspace;

const WRITERS: usize = 16;
const KILLS: usize = 20;
const AGGREGATE_TYPE: &str = "account";
const UNIFORM_AGGREGATES: u64 = 64;
const HOT_AGGREGATES: u64 = 3;
/// One write in this many goes to a hot aggregate, with an expected version.
const HOT_ONE_IN: u64 = 4;
/// The range of acknowledgements between a restart and the next kill.
const ACKS_BEFORE_KILL: (u64, u64) = (100, 900);
/// A guard against a hang, not a performance bound: no acknowledgement for this long means the
/// writers are stuck.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct WriteId {
    writer: usize,
    seq: u64,
}

/// The running server the writers should talk to.
#[derive(Debug, Clone, Copy)]
struct Incarnation {
    generation: u64,
    port: u16,
}

/// What one writer saw.
#[derive(Default)]
struct Ledger {
    /// Acknowledged writes: the aggregate and the version the server answered with.
    acked: Vec<(WriteId, String, u64)>,
    /// Writes whose answer never came (the connection died): stored or not, either is correct.
    /// With the generation of the server they were sent to.
    cut_off: Vec<(WriteId, u64)>,
    /// Writes refused with `version_conflict`: never stored.
    conflicts: Vec<WriteId>,
}

/// A seeded xorshift64: the kill points and each writer's choices derive from one seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds (writer indexes) give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn seed() -> u64 {
    match std::env::var("EVENTDBX_CHAOS_SEED") {
        Ok(text) => text.parse().expect("EVENTDBX_CHAOS_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn client_config(token: &str, port: u16) -> ClientConfig {
    ClientConfig::new(token, "default")
        .port(port)
        .transport(Transport::V2)
        .known_v2_hosts(KnownV2Hosts::Disabled)
        .request_timeout(Duration::from_secs(30))
}

/// A write whose answer the kill may cut off: the socket failed, or the reply was cut short.
fn cut_off_by_a_kill(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Protocol | ErrorKind::Handshake
    )
}

/// The version in a `get` reply (0 when the aggregate does not exist).
fn found_version(found: &eventdbx_client::Found) -> u64 {
    found
        .value()
        .expect("aggregate json")
        .map_or(0, |aggregate| {
            aggregate["version"].as_u64().expect("aggregate version")
        })
}

/// One writer: appends until the run ends, reconnecting to each new incarnation of the server
/// after its connection dies. At most one write of it is in flight at any time, so a kill cuts
/// off at most one of its writes.
async fn writer(
    index: usize,
    seed: u64,
    token: String,
    mut incarnations: watch::Receiver<Option<Incarnation>>,
    acks: mpsc::Sender<u64>,
) -> Ledger {
    let mut rng = XorShift::new(seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut ledger = Ledger::default();
    // The version each hot aggregate had when this writer last saw it.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut seq = 0;
    let mut generation = 0;
    loop {
        let next = incarnations
            .wait_for(|current| current.is_none_or(|i| i.generation > generation))
            .await
            .map(|current| *current);
        let Ok(Some(incarnation)) = next else {
            return ledger;
        };
        generation = incarnation.generation;
        let client = match Client::connect(client_config(&token, incarnation.port)).await {
            Ok(client) => client,
            // Killed again before this writer got in: wait for the next one.
            Err(err) if cut_off_by_a_kill(err.kind()) => continue,
            Err(err) => panic!("writer {index}: connect: {err}"),
        };
        while incarnations.borrow().is_some() {
            seq += 1;
            let id = WriteId { writer: index, seq };
            let hot = rng.between(0, HOT_ONE_IN) == 0;
            let aggregate = if hot {
                format!("hot-{}", rng.between(0, HOT_AGGREGATES))
            } else {
                format!("acct-{}", rng.between(0, UNIFORM_AGGREGATES))
            };
            let payload = format!("{{\"writer\":{index},\"seq\":{seq}}}");
            let mut write = Write::apply(AGGREGATE_TYPE, &aggregate, "deposited", payload);
            let expected = hot.then(|| seen.get(&aggregate).copied().unwrap_or(0));
            if let Some(expected) = expected {
                write = write.expected_version(expected);
            }
            match client.write(write).await {
                Ok(written) => {
                    let event = written.value().expect("event json").expect("verbose event");
                    let version = event["version"].as_u64().expect("event version");
                    if let Some(expected) = expected {
                        assert_eq!(version, expected + 1, "{aggregate}: {event}");
                    }
                    seen.insert(aggregate.clone(), version);
                    ledger.acked.push((id, aggregate, version));
                    let _ = acks.send(generation);
                }
                Err(err) if err.kind() == ErrorKind::Server => {
                    assert_eq!(err.code(), "version_conflict", "writer {index}: {err}");
                    ledger.conflicts.push(id);
                    match client.get(AGGREGATE_TYPE, &aggregate).await {
                        Ok(found) => {
                            seen.insert(aggregate, found_version(&found));
                        }
                        Err(err) if cut_off_by_a_kill(err.kind()) => break,
                        Err(err) => panic!("writer {index}: get {aggregate}: {err}"),
                    }
                }
                Err(err) if cut_off_by_a_kill(err.kind()) => {
                    ledger.cut_off.push((id, generation));
                    break;
                }
                Err(err) => panic!("writer {index}: write {aggregate}: {err}"),
            }
        }
    }
}

/// Where each write id is stored: `(aggregate, version)` for every occurrence.
type Stored = BTreeMap<WriteId, Vec<(String, u64)>>;

/// Reads every aggregate and its events, checks versions 1..n, the aggregate's version and root
/// and `verify`; returns where each write is stored.
async fn read_back(client: &Client) -> Stored {
    let mut stored = Stored::new();
    let mut pages = client.list_pages(ListQuery::new().take(1_000));
    let mut aggregates = Vec::new();
    while let Some(page) = pages.next_page().await.expect("list") {
        aggregates.extend(page.aggregates().expect("aggregates json"));
    }
    assert!(!aggregates.is_empty(), "nothing was stored");
    for aggregate in aggregates {
        assert_eq!(aggregate["aggregate_type"], AGGREGATE_TYPE, "{aggregate}");
        let id = aggregate["aggregate_id"].as_str().expect("aggregate id");
        let is_known = id
            .strip_prefix("acct-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < UNIFORM_AGGREGATES)
            || id
                .strip_prefix("hot-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < HOT_AGGREGATES);
        assert!(is_known, "an aggregate nobody wrote: {aggregate}");
        let version = aggregate["version"].as_u64().expect("version");
        let mut events = Vec::new();
        let mut event_pages = client.event_pages(EventsQuery::new(AGGREGATE_TYPE, id).take(1_000));
        while let Some(page) = event_pages.next_page().await.expect("events") {
            events.extend(page.events().expect("events json"));
        }
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().expect("version"))
            .collect();
        assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{id}: gaps");
        let root = client
            .verify(AGGREGATE_TYPE, id)
            .await
            .unwrap_or_else(|err| panic!("verify {id}: {err}"));
        assert_eq!(
            Some(root.as_str()),
            aggregate["merkle_root"].as_str(),
            "{id}"
        );
        for event in &events {
            let write = WriteId {
                writer: event["payload"]["writer"]
                    .as_u64()
                    .and_then(|w| usize::try_from(w).ok())
                    .expect("payload writer"),
                seq: event["payload"]["seq"].as_u64().expect("payload seq"),
            };
            let at = event["version"].as_u64().expect("version");
            stored.entry(write).or_default().push((id.to_owned(), at));
        }
    }
    stored
}

/// The acceptance test of docs/reliability.md's chaos section.
#[test]
fn acknowledged_writes_survive_twenty_sigkills_under_sixteen_writers() {
    let seed = seed();
    eprintln!("chaos seed {seed} (EVENTDBX_CHAOS_SEED={seed} replays the kill points)");
    let mut rng = XorShift::new(seed);
    let mut ws = Workspace::start();
    let config = std::fs::read_to_string(ws.dir.path().join(".dbx/config.toml")).expect("config");
    assert!(config.contains("durability = \"fsync\""), "{config}");
    let token = std::fs::read_to_string(ws.dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // Incarnation `k` is the server that kill `k` ends.
    let (incarnation, incarnations) = watch::channel(Some(Incarnation {
        generation: 1,
        port: ws.port,
    }));
    let (ack, acks) = mpsc::channel::<u64>();
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| {
            runtime.spawn(writer(
                index,
                seed,
                token.clone(),
                incarnations.clone(),
                ack.clone(),
            ))
        })
        .collect();
    drop(ack);

    let mut acks_before_kill = Vec::new();
    for kill in 1..=KILLS {
        let generation = kill as u64;
        let target = rng.between(ACKS_BEFORE_KILL.0, ACKS_BEFORE_KILL.1);
        let mut since_restart = 0;
        while since_restart < target {
            match acks.recv_timeout(STALL) {
                Ok(of) if of == generation => since_restart += 1,
                // A late answer of the previous incarnation: acknowledged, but not progress.
                Ok(_) => {}
                Err(err) => panic!(
                    "seed {seed}: no acknowledgement for {STALL:?} before kill {kill} \
                     ({since_restart} of {target}): {err}"
                ),
            }
        }
        acks_before_kill.push(target);
        ws.kill_and_restart();
        let next = (kill < KILLS).then_some(Incarnation {
            generation: generation + 1,
            port: ws.port,
        });
        incarnation.send(next).expect("writers are listening");
    }
    let ledgers: Vec<Ledger> = runtime.block_on(async {
        let mut ledgers = Vec::new();
        for writer in writers {
            ledgers.push(writer.await.expect("writer task"));
        }
        ledgers
    });

    let stored = runtime.block_on(async {
        let client = Client::connect(client_config(&token, ws.port))
            .await
            .expect("connect after the last restart");
        let stored = read_back(&client).await;
        let tenants = client.tenant_list().await.expect("tenant list");
        let counted = tenants
            .iter()
            .find(|t| t["tenant_id"] == "default")
            .and_then(|t| t["events"].as_u64())
            .unwrap_or_else(|| panic!("default tenant's event count: {tenants:?}"));
        let read: usize = stored.values().map(Vec::len).sum();
        assert_eq!(
            counted, read as u64,
            "seed {seed}: the store counts {counted} events, {read} are stored"
        );
        stored
    });
    check(seed, &ledgers, &stored, &acks_before_kill);
}

/// The run's verdict: acknowledged writes exactly once where they were acknowledged, conflicts
/// never, and nothing but cut-off writes beyond them.
fn check(seed: u64, ledgers: &[Ledger], stored: &Stored, acks_before_kill: &[u64]) {
    let mut cut_off_per_generation: BTreeMap<u64, usize> = BTreeMap::new();
    let mut cut_off = HashMap::new();
    let mut conflicts = 0;
    let mut acked = 0;
    for ledger in ledgers {
        for (id, aggregate, version) in &ledger.acked {
            acked += 1;
            assert_eq!(
                stored.get(id).map(Vec::as_slice),
                Some(&[(aggregate.clone(), *version)][..]),
                "seed {seed}: acknowledged write {id:?} ({aggregate} v{version}) is not stored \
                 exactly once at that version"
            );
        }
        for &(id, generation) in &ledger.cut_off {
            *cut_off_per_generation.entry(generation).or_default() += 1;
            cut_off.insert(id, generation);
        }
        for id in &ledger.conflicts {
            conflicts += 1;
            assert!(
                !stored.contains_key(id),
                "seed {seed}: write {id:?} was refused with a conflict but is stored"
            );
        }
    }
    let acked_ids: std::collections::HashSet<WriteId> = ledgers
        .iter()
        .flat_map(|l| l.acked.iter().map(|(id, _, _)| *id))
        .collect();
    let mut unacknowledged_stored = 0;
    for (id, places) in stored {
        assert_eq!(
            places.len(),
            1,
            "seed {seed}: {id:?} is stored twice: {places:?}"
        );
        if !acked_ids.contains(id) {
            assert!(
                cut_off.contains_key(id),
                "seed {seed}: {id:?} is stored at {places:?} but was never sent or was refused"
            );
            unacknowledged_stored += 1;
        }
    }
    for (generation, count) in &cut_off_per_generation {
        assert!(
            *count <= WRITERS,
            "seed {seed}: {count} writes in flight at the death of incarnation {generation}"
        );
    }
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(total, acked + unacknowledged_stored);
    assert!(unacknowledged_stored <= cut_off.len());
    // Every writer's first write to a hot aggregate expects version 0, and only one such write
    // per aggregate can be stored: the others conflict (or were cut off, at most one per writer
    // per kill), so a run without a conflict did not exercise expected versions.
    assert!(conflicts > 0, "seed {seed}: no version conflict happened");
    eprintln!(
        "chaos seed {seed}: {KILLS} kills after {acks_before_kill:?} acknowledgements; \
         {acked} acknowledged writes all stored once; {} cut off by kills, {unacknowledged_stored} \
         of them stored; {conflicts} version conflicts; {total} events in {} aggregates",
        cut_off.len(),
        stored
            .values()
            .flat_map(|p| p.iter().map(|(a, _)| a))
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
}
