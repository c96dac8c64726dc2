//! Throughput and latency of the embedded engine against the targets of issue 3.
//!
//! `cargo bench -p eventdbx-store` runs the full set (about a minute on two cores); set
//! `EVENTDBX_BENCH_QUICK=1` or pass `--quick` for a smaller, faster variant whose numbers are
//! only indicative (the targets are defined for the full sizes). `EVENTDBX_BENCH_ONLY=relaxed`
//! (or `durable`, `long`, `listing`; comma-separated) runs only those sections, e.g. under a
//! profiler. Every measurement runs a few
//! times and the median is reported, one line per measurement with its target. Databases live
//! in a temporary directory under the system temp dir (a real disk on the benchmark machine; the
//! fsync probe at the start says how fast that disk flushes). Results and machine notes are in
//! `docs/benchmarks.md`.

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::cursor::{AggregateCursor, ListOrder, PagePlan};
use eventdbx_core::query::sort::SortSpec;
use eventdbx_core::query::{AggregateView, Scope};
use eventdbx_core::time::parse_unix_millis;
use eventdbx_core::write::{WriteBody, WriteKind};
use eventdbx_store::{Durability, EventStore, ListQuery, RedbStore, WriteRequest};
use serde_json::json;

type BenchResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;
/// One group of measurements, run against a fresh database in the session's directory.
type Section = fn(&Path, Scale) -> BenchResult;

const TENANT: &str = "default";
const RUNS: usize = 3;

/// Sizes of one benchmark session.
#[derive(Debug, Clone, Copy)]
struct Scale {
    quick: bool,
    /// How long each throughput run appends.
    run_for: Duration,
    /// Events in the "long" aggregate (append and verify benchmarks).
    long_aggregate: u64,
    /// Appends timed per run in the long-versus-fresh comparison.
    appends_compared: u64,
    /// Aggregates the listing benchmark pages through.
    listed_aggregates: u64,
}

impl Scale {
    /// Whether `EVENTDBX_BENCH_ONLY` (if set) names this section.
    fn selected(self, section: &str) -> bool {
        std::env::var("EVENTDBX_BENCH_ONLY")
            .map_or(true, |only| only.split(',').any(|s| s.trim() == section))
    }

    fn from_env() -> Scale {
        let quick = std::env::var_os("EVENTDBX_BENCH_QUICK").is_some_and(|v| v != "0")
            || std::env::args().any(|a| a == "--quick");
        if quick {
            Scale {
                quick,
                run_for: Duration::from_millis(400),
                long_aggregate: 2_000,
                appends_compared: 500,
                listed_aggregates: 10_000,
            }
        } else {
            Scale {
                quick,
                run_for: Duration::from_millis(1_500),
                long_aggregate: 10_000,
                appends_compared: 2_000,
                listed_aggregates: 100_000,
            }
        }
    }
}

/// The median of a few samples (the upper one of an even count).
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Prints one result line: what, the measured median, the target and whether it is met.
fn report(name: &str, measured: f64, unit: &str, target: Option<(&str, f64, bool)>) {
    match target {
        Some((op, goal, met)) => println!(
            "{name:<58} {measured:>12.1} {unit:<6} target {op} {goal} {unit}  {}",
            if met { "PASS" } else { "MISS" }
        ),
        None => println!("{name:<58} {measured:>12.1} {unit:<6} (context)"),
    }
}

fn report_at_least(name: &str, measured: f64, unit: &str, goal: f64) {
    report(name, measured, unit, Some((">=", goal, measured >= goal)));
}

fn report_at_most(name: &str, measured: f64, unit: &str, goal: f64) {
    report(name, measured, unit, Some(("<=", goal, measured <= goal)));
}

fn request(kind: WriteKind, aggregate_type: &str, aggregate_id: &str, n: u64) -> WriteRequest {
    WriteRequest::new(
        kind,
        aggregate_type,
        aggregate_id,
        "item_added",
        WriteBody::Payload(json!({"sku": format!("sku-{n}"), "quantity": n % 7 + 1})),
    )
}

fn append(store: &RedbStore, aggregate_type: &str, aggregate_id: &str, n: u64) -> BenchResult {
    store.write(
        TENANT,
        request(WriteKind::Append, aggregate_type, aggregate_id, n),
    )?;
    Ok(())
}

fn create(store: &RedbStore, aggregate_type: &str, aggregate_id: &str) -> BenchResult {
    store.write(
        TENANT,
        request(WriteKind::Create, aggregate_type, aggregate_id, 0),
    )?;
    Ok(())
}

/// Writes and fsyncs 4 KiB repeatedly for about a second: the disk's flush rate, for scale.
fn fsync_rate(dir: &Path, run_for: Duration) -> BenchResult<f64> {
    let mut file = File::create(dir.join("fsync-probe"))?;
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut flushes = 0u32;
    while started.elapsed() < run_for {
        file.write_all(&block)?;
        file.sync_data()?;
        flushes += 1;
    }
    Ok(f64::from(flushes) / started.elapsed().as_secs_f64())
}

/// Appends from `writers` threads, each to its own aggregates, for `run_for`; events per second.
fn concurrent_appends(
    store: &Arc<RedbStore>,
    writers: usize,
    run: usize,
    run_for: Duration,
) -> BenchResult<f64> {
    const PER_WRITER: usize = 4;
    for w in 0..writers {
        for a in 0..PER_WRITER {
            create(store, "cart", &format!("w{writers}-r{run}-{w}-{a}"))?;
        }
    }
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(store);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> BenchResult<u64> {
                let ids: Vec<String> = (0..PER_WRITER)
                    .map(|a| format!("w{writers}-r{run}-{w}-{a}"))
                    .collect();
                barrier.wait();
                let deadline = Instant::now() + run_for;
                let mut done = 0u64;
                while Instant::now() < deadline {
                    append(&store, "cart", &ids[done as usize % PER_WRITER], done)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut total = 0;
    for handle in handles {
        total += handle.join().map_err(|_| "a writer thread panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn bench_durable(dir: &Path, scale: Scale) -> BenchResult {
    let store = Arc::new(RedbStore::open(
        dir.join("durable.redb"),
        Durability::Fsync,
    )?);
    for (writers, goal) in [(1, None), (16, Some(4_000.0)), (64, Some(8_000.0))] {
        let rates = (0..RUNS)
            .map(|run| concurrent_appends(&store, writers, run, scale.run_for))
            .collect::<BenchResult<Vec<f64>>>()?;
        let name = format!("durable appends, {writers} writer(s)");
        match goal {
            Some(goal) => report_at_least(&name, median(rates), "ev/s", goal),
            None => report(&name, median(rates), "ev/s", None),
        }
    }
    Ok(())
}

fn bench_relaxed(dir: &Path, scale: Scale) -> BenchResult {
    let path = dir.join("relaxed.redb");
    let store = Arc::new(RedbStore::open(&path, Durability::Relaxed)?);
    let rates = (0..RUNS)
        .map(|run| concurrent_appends(&store, 1, run, scale.run_for))
        .collect::<BenchResult<Vec<f64>>>()?;
    report_at_least("relaxed appends, 1 writer", median(rates), "ev/s", 30_000.0);
    let events = store.usage(TENANT)?.events;
    let file_mib = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
    report(
        &format!("relaxed database file after {events} events"),
        file_mib,
        "MiB",
        None,
    );
    Ok(())
}

/// Appends `count` events to one aggregate; events per second.
fn timed_appends(store: &RedbStore, aggregate_id: &str, count: u64) -> BenchResult<f64> {
    let started = Instant::now();
    for n in 0..count {
        append(store, "ledger", aggregate_id, n)?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Builds one aggregate of `events` events, quickly (relaxed, single writer).
fn build_long_aggregate(store: &RedbStore, aggregate_id: &str, events: u64) -> BenchResult {
    create(store, "ledger", aggregate_id)?;
    for n in 1..events {
        append(store, "ledger", aggregate_id, n)?;
    }
    Ok(())
}

fn bench_long_aggregate(dir: &Path, scale: Scale) -> BenchResult {
    // Relaxed, so the per-append CPU and B-tree cost is measured rather than the fsync (which
    // would hide any difference between the two under the same ~4 ms flush).
    let store = RedbStore::open(dir.join("long.redb"), Durability::Relaxed)?;
    let (mut long_rates, mut fresh_rates) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let long = format!("long-{run}");
        build_long_aggregate(&store, &long, scale.long_aggregate)?;
        let fresh = format!("fresh-{run}");
        create(&store, "ledger", &fresh)?;
        // Alternate which goes first so a drifting machine favours neither.
        if run % 2 == 0 {
            long_rates.push(timed_appends(&store, &long, scale.appends_compared)?);
            fresh_rates.push(timed_appends(&store, &fresh, scale.appends_compared)?);
        } else {
            fresh_rates.push(timed_appends(&store, &fresh, scale.appends_compared)?);
            long_rates.push(timed_appends(&store, &long, scale.appends_compared)?);
        }
    }
    let (long, fresh) = (median(long_rates), median(fresh_rates));
    report(
        "relaxed appends to a fresh aggregate (v1..)",
        fresh,
        "ev/s",
        None,
    );
    report(
        &format!(
            "relaxed appends to an aggregate at v{}",
            scale.long_aggregate
        ),
        long,
        "ev/s",
        None,
    );
    report_at_least(
        "long-aggregate append rate / fresh-aggregate rate",
        100.0 * long / fresh,
        "%",
        90.0,
    );

    // The compared aggregates grew past the size; verify one of exactly that size.
    build_long_aggregate(&store, "verified", scale.long_aggregate)?;
    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        store.verify(TENANT, "ledger", "verified")?;
        timings.push(started.elapsed().as_secs_f64() * 1_000.0);
    }
    let events = store
        .get(TENANT, "ledger", "verified")?
        .map_or(0, |a| a.version);
    report_at_most(
        &format!("verify of a {events}-event aggregate"),
        median(timings),
        "ms",
        20.0,
    );
    Ok(())
}

/// A view of an aggregate, as the server builds one to make a cursor.
fn view_of(aggregate: &Aggregate) -> AggregateView<'_> {
    let millis = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_unix_millis)
            .and_then(|ms| i64::try_from(ms).ok())
    };
    AggregateView {
        aggregate_type: &aggregate.aggregate_type,
        aggregate_id: &aggregate.aggregate_id,
        version: aggregate.version,
        archived: aggregate.archived,
        created_at: millis(&aggregate.created_at),
        updated_at: millis(&aggregate.updated_at),
        merkle_root: &aggregate.merkle_root,
        state: &aggregate.state,
        extensions: &aggregate.extensions,
    }
}

/// Creates `count` aggregates from two threads in relaxed mode (speed of setup only).
fn build_many_aggregates(store: &Arc<RedbStore>, count: u64) -> BenchResult {
    const THREADS: u64 = 4;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(store);
            thread::spawn(move || -> BenchResult {
                for n in (t..count).step_by(THREADS as usize) {
                    create(&store, "order", &format!("o-{n:06}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a builder thread panicked")??;
    }
    Ok(())
}

/// Times one page of 100 (median of many); checks the page is full.
fn time_page(store: &RedbStore, plan: &PagePlan) -> BenchResult<f64> {
    let query = ListQuery {
        plan: plan.clone(),
        scope: Scope::Active,
        filter: None,
        known_types: vec!["order".into()],
        take: 100,
    };
    let mut timings = Vec::new();
    for _ in 0..51 {
        let started = Instant::now();
        let page = store.list(TENANT, &query, &|a| Some(a))?;
        timings.push(started.elapsed().as_secs_f64() * 1_000.0);
        if page.items.len() != 100 || !page.full {
            return Err(format!("a page held {} items", page.items.len()).into());
        }
        if let Some(after) = &plan.after {
            let first = plan.order.key_of(&view_of(&page.items[0]));
            if plan.order.compare(&first, after) != std::cmp::Ordering::Greater {
                return Err("a page did not start after its cursor".into());
            }
        }
    }
    Ok(median(timings))
}

/// The plan of the page after `aggregate_id`, through the cursor text a client would send.
fn middle_plan(store: &RedbStore, sort: &SortSpec, aggregate_id: &str) -> BenchResult<PagePlan> {
    let aggregate = store
        .get(TENANT, "order", aggregate_id)?
        .ok_or("the middle aggregate is missing")?;
    let cursor = ListOrder::Sorted(sort.clone()).cursor_after(&view_of(&aggregate));
    let parsed: AggregateCursor =
        AggregateCursor::parse(&cursor.to_string())?.ok_or("the cursor did not parse")?;
    Ok(PagePlan::new(
        Some(sort),
        Some(&parsed),
        Scope::Active,
        |_, _| None,
    )?)
}

fn bench_listing(dir: &Path, scale: Scale) -> BenchResult {
    let store = Arc::new(RedbStore::open(
        dir.join("listing.redb"),
        Durability::Relaxed,
    )?);
    let started = Instant::now();
    build_many_aggregates(&store, scale.listed_aggregates)?;
    let n = scale.listed_aggregates;
    report(
        &format!("setup: relaxed creates of {n} aggregates, 4 threads"),
        n as f64 / started.elapsed().as_secs_f64(),
        "ev/s",
        None,
    );
    let middle = format!("o-{:06}", n / 2);
    for (text, goal) in [
        ("updated_at", Some(1.0)),
        ("created_at:desc,aggregate_id:asc", None),
    ] {
        let sort = SortSpec::parse(text)?;
        let first = PagePlan::new(Some(&sort), None, Scope::Active, |_, _| None)?;
        let name = format!("first page of 100 of {n}, sort {text}");
        match goal {
            Some(goal) => report_at_most(&name, time_page(&store, &first)?, "ms", goal),
            None => report(&name, time_page(&store, &first)?, "ms", None),
        }
        let plan = middle_plan(&store, &sort, &middle)?;
        report(
            &format!("middle page of 100 (cursor), sort {text}"),
            time_page(&store, &plan)?,
            "ms",
            None,
        );
    }
    Ok(())
}

fn main() -> BenchResult {
    let scale = Scale::from_env();
    let dir = tempfile::tempdir()?;
    println!(
        "eventdbx-store benchmarks ({} variant) in {}; medians of {RUNS} runs unless noted",
        if scale.quick { "quick" } else { "full" },
        dir.path().display()
    );
    report(
        "disk: fsync rate (4 KiB write + fdatasync)",
        fsync_rate(dir.path(), scale.run_for)?,
        "/s",
        None,
    );
    let sections: [(&str, Section); 4] = [
        ("durable", bench_durable),
        ("relaxed", bench_relaxed),
        ("long", bench_long_aggregate),
        ("listing", bench_listing),
    ];
    for (name, section) in sections {
        if scale.selected(name) {
            section(dir.path(), scale)?;
        }
    }
    Ok(())
}
