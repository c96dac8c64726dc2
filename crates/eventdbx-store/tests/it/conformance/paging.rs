//! Keyset paging of `listAggregates`: every sort and scope pages every item exactly once while
//! inserts happen, paging without writes equals one sorted page, cursors and filters.

use std::collections::HashSet;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::cursor::{AggregateCursor, ListOrder, PagePlan};
use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::sort::SortSpec;
use eventdbx_core::query::{AggregateView, Scope};
use eventdbx_core::time::parse_unix_millis;
use eventdbx_core::write::WriteKind;
use eventdbx_store::{EventStore, ListQuery};
use serde_json::json;

use super::{append, relaxed, request, T};

const SORTS: &[&str] = &[
    "",
    "aggregate_type",
    "aggregate_id:desc",
    "created_at",
    "created_at:desc",
    "updated_at",
    "updated_at:desc",
    "version:desc",
    "created_at:desc,aggregate_id:asc",
    "updated_at:asc,aggregate_id:desc",
    "archived:desc,created_at:asc",
    "archived,aggregate_type:desc,aggregate_id:asc",
    "aggregate_type:asc,version:desc",
    "version:asc,aggregate_id:desc,aggregate_type:asc",
];

fn plan(
    sort: Option<&SortSpec>,
    cursor: Option<&str>,
    scope: Scope,
    store: &dyn EventStore,
) -> PagePlan {
    let cursor = cursor.map(|c| AggregateCursor::decode(c).expect("our cursor decodes"));
    let found: Option<Aggregate> = match &cursor {
        Some(AggregateCursor::Shorthand {
            aggregate_type,
            aggregate_id,
        }) => store.get(T, aggregate_type, aggregate_id).expect("get"),
        _ => None,
    };
    PagePlan::new(sort, cursor.as_ref(), scope, |_, _| {
        found.as_ref().map(view)
    })
    .expect("plan")
}

fn view(aggregate: &Aggregate) -> AggregateView<'_> {
    aggregate.view()
}

/// Pages through `sort` with varying page sizes, inserting new aggregates between pages;
/// returns the (type, id) sequence seen.
fn page_through(
    store: &dyn EventStore,
    sort: &str,
    scope: Scope,
    seed: &mut u64,
    insert_between: bool,
) -> Vec<(String, String)> {
    let spec = (!sort.is_empty()).then(|| SortSpec::parse(sort).expect("sort parses"));
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut inserted = 0;
    loop {
        let take = 1 + (next(seed) % 7) as usize;
        let query = ListQuery {
            plan: plan(spec.as_ref(), cursor.as_deref(), scope, store),
            scope,
            filter: None,
            known_types: vec![],
            take,
        };
        let page = store.list(T, &query, &Some).expect("list");
        // Each page is in order and strictly after the previous one.
        let order: &ListOrder = &page.order;
        let keys: Vec<_> = page.items.iter().map(|a| order.key_of(&view(a))).collect();
        assert!(
            keys.windows(2).all(|w| order.compare(&w[0], &w[1]).is_lt()),
            "page out of order for {sort:?}"
        );
        seen.extend(
            page.items
                .iter()
                .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone())),
        );
        if !page.full {
            break;
        }
        let last = page.items.last().expect("full page has items");
        cursor = Some(page.order.cursor_after(&view(last)).to_string());
        if insert_between && inserted < 5 {
            inserted += 1;
            let id = format!("late-{}-{}", sort.len(), next(seed) % 1_000_000);
            append(
                store,
                T,
                if next(seed).is_multiple_of(2) {
                    "alpha"
                } else {
                    "zeta"
                },
                &id,
                json!({"late": true}),
            );
        }
    }
    seen
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn every_sort_pages_every_item_exactly_once_while_inserts_happen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let types = ["alpha", "beta", "zeta"];
    for n in 0..60 {
        let t = types[n % 3];
        let id = format!("{}-{}", ["a", "B", "c-1", "c"][n % 4], n);
        for _ in 0..=(next(&mut seed) % 3) {
            append(&*store, T, t, &id, json!({"n": n}));
        }
        if n % 5 == 0 {
            store.set_archived(T, t, &id, true, None).expect("archive");
        }
    }
    let everything: Vec<Aggregate> = {
        let query = ListQuery {
            plan: plan(None, None, Scope::ActiveAndArchived, &*store),
            scope: Scope::ActiveAndArchived,
            filter: None,
            known_types: vec![],
            take: 10_000,
        };
        store.list(T, &query, &Some).expect("list all").items
    };
    assert_eq!(everything.len(), 60);
    for scope in [Scope::Active, Scope::ActiveAndArchived, Scope::ArchivedOnly] {
        let present: HashSet<(String, String)> = everything
            .iter()
            .filter(|a| scope.contains(a.archived))
            .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone()))
            .collect();
        for sort in SORTS {
            if scope == Scope::ActiveAndArchived || !sort.starts_with("archived") {
                let seen = page_through(&*store, sort, scope, &mut seed, true);
                let unique: HashSet<_> = seen.iter().cloned().collect();
                assert_eq!(
                    unique.len(),
                    seen.len(),
                    "{sort:?} {scope:?} repeated an item"
                );
                assert!(
                    present.is_subset(&unique),
                    "{sort:?} {scope:?} skipped an item present throughout"
                );
            }
        }
    }
    // Without writes, paging equals one big sorted page, for every sort.
    for sort in SORTS {
        let spec = (!sort.is_empty()).then(|| SortSpec::parse(sort).expect("sort"));
        let query = ListQuery {
            plan: plan(spec.as_ref(), None, Scope::ActiveAndArchived, &*store),
            scope: Scope::ActiveAndArchived,
            filter: None,
            known_types: vec![],
            take: 10_000,
        };
        let whole: Vec<(String, String)> = store
            .list(T, &query, &Some)
            .expect("list")
            .items
            .iter()
            .map(|a| (a.aggregate_type.clone(), a.aggregate_id.clone()))
            .collect();
        let paged = page_through(&*store, sort, Scope::ActiveAndArchived, &mut seed, false);
        assert_eq!(paged, whole, "{sort:?}");
    }
}

#[test]
fn the_readme_sort_pages_with_the_shorthand_cursor_and_filters_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = relaxed(&dir);
    for n in 0..12 {
        let t = if n % 2 == 0 { "person" } else { "order" };
        let payload = json!({"last_name": if n % 3 == 0 { "Smith" } else { "Jones" }});
        let created = store
            .write(
                T,
                request(WriteKind::Append, t, &format!("p-{n:02}"), payload),
            )
            .expect("append")
            .event
            .metadata
            .created_at;
        // Distinct creation milliseconds, so "newest first" is one answer: the next write
        // starts only once the clock has left this one's millisecond.
        let created_ms = parse_unix_millis(&created).expect("a stored timestamp");
        while now_ms() <= created_ms {
            std::hint::spin_loop();
        }
    }
    let spec = SortSpec::parse("created_at:desc,aggregate_id:asc").expect("sort");
    let filter =
        Filter::parse("person.archived = false AND person.last_name LIKE 'S%'").expect("filter");
    let query = ListQuery {
        plan: plan(Some(&spec), None, Scope::Active, &*store),
        scope: Scope::Active,
        filter: Some(filter.clone()),
        known_types: vec!["person".into(), "order".into()],
        take: 10,
    };
    let page = store.list(T, &query, &Some).expect("list");
    let ids: Vec<&str> = page.items.iter().map(|a| a.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["p-06", "p-00"], "newest first, only persons named S*");
    let query = ListQuery {
        filter: None,
        take: 3,
        ..query
    };
    let first = store.list(T, &query, &Some).expect("first page");
    let last = first.items.last().expect("item");
    let shorthand = format!("ts:{}:{}", last.aggregate_type, last.aggregate_id);
    let query = ListQuery {
        plan: plan(Some(&spec), Some(&shorthand), Scope::Active, &*store),
        ..query
    };
    let second = store.list(T, &query, &Some).expect("second page");
    let ids: Vec<&str> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|a| a.aggregate_id.as_str())
        .collect();
    assert_eq!(ids, ["p-11", "p-10", "p-09", "p-08", "p-07", "p-06"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// The same property with random stores, sorts, scopes and page sizes.
    #[test]
    fn paging_property(
        seed in 1u64..u64::MAX,
        sort in 0..SORTS.len(),
        scope in 0usize..3,
        count in 1usize..40,
    ) {
        let scope = [Scope::Active, Scope::ActiveAndArchived, Scope::ArchivedOnly][scope];
        let sort = SORTS[sort];
        proptest::prop_assume!(scope == Scope::ActiveAndArchived || !sort.starts_with("archived"));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = relaxed(&dir);
        let mut seed = seed;
        let mut present = HashSet::new();
        for n in 0..count {
            let t = ["alpha", "beta", "zeta"][(next(&mut seed) % 3) as usize];
            let id = format!("x{}-{n}", next(&mut seed) % 5);
            for _ in 0..=(next(&mut seed) % 3) {
                append(&*store, T, t, &id, json!({"n": n}));
            }
            let archived = next(&mut seed).is_multiple_of(4);
            if archived {
                store.set_archived(T, t, &id, true, None).expect("archive");
            }
            if scope.contains(archived) {
                present.insert((t.to_owned(), id));
            }
        }
        let seen = page_through(&*store, sort, scope, &mut seed, true);
        let unique: HashSet<_> = seen.iter().cloned().collect();
        proptest::prop_assert_eq!(unique.len(), seen.len(), "repeated an item");
        proptest::prop_assert!(present.is_subset(&unique), "skipped an item");
    }
}

fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("ms fit in u64")
}
