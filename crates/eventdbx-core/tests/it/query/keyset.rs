//! Keyset paging: pages computed with cursors add up to the whole sorted, filtered list.

use super::cursor::none;
use super::sort::arb_sort;
use super::*;

// ----- keyset paging ----------------------------------------------------------------------

pub(super) fn arb_agg() -> impl Strategy<Value = Agg> {
    (
        "[ab]",
        "[a-c0-9-]{1,3}",
        0u64..4,
        any::<bool>(),
        proptest::option::of(0i64..4),
        proptest::option::of(0i64..4),
    )
        .prop_map(|(t, id, version, archived, created_at, updated_at)| Agg {
            t,
            id,
            version,
            archived,
            created_at,
            updated_at,
            state: Map::new(),
            ext: Map::new(),
        })
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Active),
        Just(Scope::ActiveAndArchived),
        Just(Scope::ArchivedOnly)
    ]
}

/// One page as a store would compute it.
fn page(
    store: &[Agg],
    sort: Option<&SortSpec>,
    cursor: Option<&str>,
    scope: Scope,
    take: usize,
) -> (Vec<Agg>, Option<String>) {
    let cursor = cursor.and_then(|c| AggregateCursor::parse(c).unwrap());
    let plan = PagePlan::new(sort, cursor.as_ref(), scope, |t, id| {
        store.iter().find(|a| a.t == t && a.id == id).map(Agg::view)
    })
    .unwrap();
    let mut items: Vec<(eventdbx_core::query::sort::SortKey, &Agg)> = store
        .iter()
        .filter(|a| scope.contains(a.archived))
        .map(|a| (plan.order.key_of(&a.view()), a))
        .filter(|(k, _)| plan.is_after(k))
        .collect();
    items.sort_by(|x, y| plan.order.compare(&x.0, &y.0));
    let items: Vec<Agg> = items
        .into_iter()
        .take(take)
        .map(|(_, a)| a.clone())
        .collect();
    let next = (items.len() == take && take > 0)
        .then(|| plan.order.cursor_after(&items[take - 1].view()).to_string());
    (items, next)
}

fn dedup(aggs: Vec<Agg>) -> Vec<Agg> {
    let mut seen = BTreeSet::new();
    aggs.into_iter()
        .filter(|a| seen.insert((a.t.clone(), a.id.clone())))
        .collect()
}

proptest! {
    #[test]
    fn keyset_paging_sees_every_item_once(
        initial in proptest::collection::vec(arb_agg(), 0..25),
        inserts in proptest::collection::vec(arb_agg(), 0..25),
        sort in proptest::option::of(arb_sort()),
        scope in arb_scope(),
        takes in proptest::collection::vec(1usize..5, 1..40),
        use_shorthand in any::<bool>(),
    ) {
        let mut store = dedup(initial);
        let original: BTreeSet<(String, String)> = store
            .iter()
            .filter(|a| scope.contains(a.archived))
            .map(|a| (a.t.clone(), a.id.clone()))
            .collect();
        let mut inserts = inserts.into_iter();
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        let shorthand_ok = sort.as_ref().is_some_and(|s| s.leading_timestamp().is_some());
        loop {
            let take = takes[pages % takes.len()];
            let (items, next) = page(&store, sort.as_ref(), cursor.as_deref(), scope, take);
            seen.extend(items.iter().map(|a| (a.t.clone(), a.id.clone())));
            pages += 1;
            prop_assert!(pages < 200, "paging does not end");
            let Some(next) = next else { break };
            // The shorthand resumes after the named aggregate; it needs that aggregate to
            // have the leading timestamp.
            let last = items.last().unwrap();
            let lead_known = sort.as_ref().and_then(|s| s.leading_timestamp()).is_some_and(|f| match f {
                SortField::CreatedAt => last.created_at.is_some(),
                _ => last.updated_at.is_some(),
            });
            cursor = Some(if use_shorthand && shorthand_ok && lead_known {
                format!("ts:{}:{}", last.t, last.id)
            } else {
                next
            });
            // Writes between pages: new aggregates only (keys present throughout never move).
            if let Some(new) = inserts.next() {
                if !store.iter().any(|a| a.t == new.t && a.id == new.id) {
                    store.push(new);
                }
            }
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        prop_assert_eq!(unique.len(), seen.len(), "an item was repeated");
        prop_assert!(original.is_subset(&unique), "an item present throughout was skipped");
    }
}

#[test]
fn readme_sort_pages_with_cursors() {
    let sort = SortSpec::parse("created_at:desc,aggregate_id:asc").unwrap();
    let mut store = Vec::new();
    for (i, id) in ["p-1", "p-2", "p-3", "p-4"].iter().enumerate() {
        let mut a = Agg::new("person", id, json!({}));
        a.created_at = Some(if i < 2 { 10 } else { 20 });
        store.push(a);
    }
    let (first, next) = page(&store, Some(&sort), None, Scope::Active, 2);
    let ids: Vec<&str> = first.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p-3", "p-4"]);
    let next = next.unwrap();
    assert!(next.starts_with("k:"), "{next}");
    let (second, _) = page(&store, Some(&sort), Some(&next), Scope::Active, 2);
    let ids: Vec<&str> = second.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["p-1", "p-2"]);
    // The shorthand names the last item of the first page and gives the same second page.
    let (shorthand, _) = page(&store, Some(&sort), Some("ts:person:p-4"), Scope::Active, 2);
    assert_eq!(shorthand.len(), 2);
    assert_eq!(shorthand[0].id, "p-1");
    // A single timestamp sort emits the 7-part form, and a `k:` cursor implies its own sort.
    let single = SortSpec::parse("created_at:desc").unwrap();
    let (_, next) = page(&store, Some(&single), None, Scope::Active, 1);
    assert_eq!(next.as_deref(), Some("ts:created_at:desc:a:20:person:p-4"));
    let k = AggregateCursor::decode(&page(&store, Some(&sort), None, Scope::Active, 2).1.unwrap())
        .unwrap();
    let plan = PagePlan::new(None, Some(&k), Scope::Active, none).unwrap();
    assert_eq!(plan.order, ListOrder::Sorted(sort));
}
