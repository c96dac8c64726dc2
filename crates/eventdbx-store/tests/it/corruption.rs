//! The corruption sweep (`docs/storage.md`, "Damaged files and recovery"): a store with
//! aggregates, events, snapshots and an archived aggregate in two tenants, closed cleanly; then,
//! each in a fresh copy of its file, the page-type byte of every page flipped, and seeded random
//! bit flips anywhere in the file. Each copy is opened and, if it opens, everything it serves is
//! read (tenants, types, lists, every aggregate, its events, verify, snapshots, outbox) and
//! compared with what the untouched file serves. A panic escaping the store fails the sweep; so
//! does a copy that serves something different with no error. Refused at open, an error from a
//! read or verify, or no difference at all (a flip in free space) pass, and are counted.
//!
//! Size: every page, and `EVENTDBX_SWEEP_FLIPS` random flips (default 200) from seed
//! `EVENTDBX_SWEEP_SEED` (default fixed), so a failure is reproducible and a longer sweep is
//! one variable away.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::Event;
use eventdbx_core::query::cursor::PagePlan;
use eventdbx_core::query::Scope;
use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{
    Durability, EventStore, ListQuery, OutboxPage, RedbStore, StoreError, WriteRequest,
};
use serde_json::json;

/// redb's page size (the default, which the store keeps).
const PAGE: usize = 4096;

const TENANTS: [&str; 2] = ["default", "acme"];

/// Everything the store serves, in a comparable form.
#[derive(Debug, PartialEq)]
struct Served {
    tenants: Vec<String>,
    per_tenant: Vec<TenantView>,
}

#[derive(Debug, PartialEq)]
struct TenantView {
    types: Vec<String>,
    listed: Vec<Aggregate>,
    aggregates: Vec<(Option<Aggregate>, Vec<Event>, String)>,
    snapshots: Vec<Snapshot>,
    snapshot_reads: Vec<Option<Snapshot>>,
    outbox: OutboxPage,
}

fn write(store: &RedbStore, tenant: &str, kind: WriteKind, t: &str, id: &str, n: u64) {
    let payload = json!({
        "n": n,
        "status": if n.is_multiple_of(2) { "open" } else { "closed" },
        // Enough text that the events span many pages.
        "note": format!("{tenant}/{t}/{id} event {n} {}", "x".repeat(120 + (n as usize * 37) % 200)),
    });
    let request = WriteRequest::new(kind, t, id, "thing.changed", WriteBody::Payload(payload));
    store.write(tenant, request).expect("write");
}

/// Fills a store at `path` and closes it cleanly.
fn build(path: &Path) {
    let store = RedbStore::open(path, Durability::Fsync).expect("open");
    for tenant in TENANTS {
        for (t, count) in [("order", 12), ("customer", 6), ("invoice", 4)] {
            for i in 0..count {
                let id = format!("{t}-{i}");
                write(&store, tenant, WriteKind::Create, t, &id, 0);
                for n in 1..(1 + (i % 5) as u64) {
                    write(&store, tenant, WriteKind::Append, t, &id, n);
                }
            }
        }
        store
            .create_snapshot(tenant, "order", "order-3", Some("before the archive"))
            .expect("snapshot");
        store
            .create_snapshot(tenant, "customer", "customer-1", None)
            .expect("snapshot");
        store
            .set_archived(tenant, "invoice", "invoice-2", true, Some("paid"))
            .expect("archive");
    }
    store.close();
}

/// Reads everything the store serves; the first error ends the read.
fn read_all(store: &RedbStore) -> Result<Served, StoreError> {
    let tenants = store.tenants()?;
    let mut per_tenant = Vec::new();
    for tenant in TENANTS {
        let types = store.aggregate_types(tenant)?;
        let scope = Scope::ActiveAndArchived;
        let plan = PagePlan::new(None, None, scope, |_, _| None).expect("plan");
        let query = ListQuery {
            plan,
            scope,
            filter: None,
            known_types: types.clone(),
            take: 10_000,
        };
        let listed = store.list(tenant, &query, &Some)?.items;
        let mut aggregates = Vec::new();
        for aggregate in &listed {
            let (t, id) = (&aggregate.aggregate_type, &aggregate.aggregate_id);
            let got = store.get(tenant, t, id)?;
            let events = store.events(tenant, t, id, 0, 10_000, None)?.events;
            let root = store.verify(tenant, t, id)?;
            aggregates.push((got, events, root));
        }
        let snapshots = store.list_snapshots(tenant, None, None, None)?;
        let mut snapshot_reads = Vec::new();
        for snapshot in &snapshots {
            snapshot_reads.push(store.get_snapshot(tenant, snapshot.snapshot_id)?);
        }
        let outbox = store.outbox(tenant, 0, 10_000, &|_, _| true)?;
        per_tenant.push(TenantView {
            types,
            listed,
            aggregates,
            snapshots,
            snapshot_reads,
            outbox,
        });
    }
    Ok(Served {
        tenants,
        per_tenant,
    })
}

#[derive(Debug, Default)]
struct Tally {
    refused_at_open: usize,
    reported_by_reads: usize,
    no_effect: usize,
    /// Each failure: what was flipped and what went wrong.
    failures: Vec<String>,
}

/// What one damaged copy did.
enum Outcome {
    Refused,
    Reported,
    Same,
    Silent,
}

fn try_copy(path: &Path, bytes: &[u8], expected: &Served) -> Result<Outcome, String> {
    std::fs::write(path, bytes).map_err(|err| format!("cannot write the copy: {err}"))?;
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        let store = match RedbStore::open(path, Durability::Fsync) {
            Ok(store) => store,
            Err(err) if err.is_damaged() => {
                let text = err.to_string();
                return if text.contains(&path.display().to_string())
                    && text.contains("dbx store recover")
                {
                    Ok(Outcome::Refused)
                } else {
                    Err(format!("refusal without the file or the way out: {text}"))
                };
            }
            Err(err) => return Err(format!("open failed without naming damage: {err}")),
        };
        let outcome = match read_all(&store) {
            Err(_) => Outcome::Reported,
            Ok(served) if served == *expected => Outcome::Same,
            Ok(_) => Outcome::Silent,
        };
        store.close();
        Ok(outcome)
    }));
    let _ = std::fs::remove_file(path);
    run.map_err(|_| "a panic escaped the store".to_owned())?
}

/// Builds the store, then runs each flip `flips(file length)` makes on a fresh copy.
fn sweep(flips: impl FnOnce(usize) -> Vec<(String, usize, u8)>) -> Tally {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine.redb");
    build(&pristine);
    let original = std::fs::read(&pristine).expect("read");
    let expected = {
        let store = RedbStore::open(&pristine, Durability::Fsync).expect("reopen");
        let served = read_all(&store).expect("the untouched file reads");
        store.close();
        served
    };
    assert_eq!(expected.per_tenant[0].listed.len(), 22);
    // Reopening may rewrite the header; the sweep damages the bytes as `build` left them.
    let copy = dir.path().join("copy.redb");
    let mut tally = Tally::default();
    for (what, offset, mask) in flips(original.len()) {
        let mut bytes = original.clone();
        bytes[offset] ^= mask;
        match try_copy(&copy, &bytes, &expected) {
            Ok(Outcome::Refused) => tally.refused_at_open += 1,
            Ok(Outcome::Reported) => tally.reported_by_reads += 1,
            Ok(Outcome::Same) => tally.no_effect += 1,
            Ok(Outcome::Silent) => tally
                .failures
                .push(format!("{what}: served different data with no error")),
            Err(err) => tally.failures.push(format!("{what}: {err}")),
        }
    }
    tally
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(kind: &str, tally: &Tally) {
    eprintln!(
        "{kind}: {} refused at open, {} reported by reads or verify, {} no effect, {} failures",
        tally.refused_at_open,
        tally.reported_by_reads,
        tally.no_effect,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{kind}: {} failures:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
}

/// Every page's first byte (a B-tree page's type: leaf or branch; the magic number on the
/// header page) flipped to an invalid value, and swapped between leaf and branch.
#[test]
fn every_page_type_byte_flipped_is_refused_or_reported() {
    let mut pages = 0;
    let tally = sweep(|len| {
        pages = len / PAGE;
        (0..pages)
            .flat_map(|page| {
                [0xFF, 0x03].into_iter().map(move |mask| {
                    (
                        format!("page {page} type byte ^ {mask:#04x}"),
                        page * PAGE,
                        mask,
                    )
                })
            })
            .collect()
    });
    report(&format!("page-type sweep over {pages} pages"), &tally);
    assert_eq!(
        tally.refused_at_open + tally.reported_by_reads + tally.no_effect,
        pages * 2
    );
}

/// Seeded random single-bit flips anywhere in the file.
#[test]
fn random_bit_flips_are_refused_or_reported() {
    let count = env_number("EVENTDBX_SWEEP_FLIPS", 200);
    let mut state = env_number("EVENTDBX_SWEEP_SEED", 0x5eed_c0ff_ee15_d0d0) | 1;
    let tally = sweep(|len| {
        (0..count)
            .map(|_| {
                // xorshift64: reproducible from the seed, no dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let offset = (state >> 8) as usize % len;
                let mask = 1u8 << (state & 7);
                (format!("byte {offset} ^ {mask:#04x}"), offset, mask)
            })
            .collect()
    });
    report(&format!("{count} random bit flips"), &tally);
}

/// Every bit of the header's flag byte and of both commit slots' transaction ids: bytes no page
/// checksum covers. A flipped "latest slot" flag names the older commit, which redb opens
/// without a word; after a clean close that commit serves the same data (redb's close commits
/// only its allocator state), which this checks.
#[test]
fn every_header_flag_and_transaction_id_bit_flipped_is_refused_or_reported() {
    // The flag byte, then the transaction id of each commit slot (redb's header layout: slots
    // at 64 and 192, the id 104 bytes into a slot).
    let bytes: Vec<usize> = std::iter::once(9)
        .chain((64 + 104)..(64 + 112))
        .chain((192 + 104)..(192 + 112))
        .collect();
    let tally = sweep(|_| {
        bytes
            .iter()
            .flat_map(|&offset| {
                (0..8).map(move |bit| (format!("header byte {offset} bit {bit}"), offset, 1 << bit))
            })
            .collect()
    });
    report("header flags and transaction ids", &tally);
}
