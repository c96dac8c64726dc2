//! `listAggregates`: keyset paging over the sort index (`docs/storage.md`, "Paging"). An order
//! the index serves is read in place ([`IndexPlan`]); any other is one streaming pass keeping the
//! best `take` items.

use std::collections::BTreeSet;
use std::ops::Bound;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::sort::{SortField, SortKey, SortOrder, SortValue};
use redb::ReadOnlyTable;

use super::tables::{
    json_error, read_record, storage, AggregateRecord, IndexKey, AGGREGATES, HIGH, IX_CREATED,
    IX_CREATED_ID, IX_ID, IX_NATURAL, IX_UPDATED, IX_UPDATED_ID, IX_VERSION, SORT_INDEX,
};
use super::RedbStore;
use crate::{ListPage, ListQuery, Result, Visibility};

/// [`crate::EventStore::aggregate_types`].
pub(super) fn aggregate_types(store: &RedbStore, tenant: &str) -> Result<Vec<String>> {
    let read = store.read()?;
    let index = read.open_table(SORT_INDEX).map_err(storage)?;
    let mut types = Vec::new();
    // One seek per distinct type in the natural layout (0, type, id).
    let mut low = String::new();
    loop {
        let start = (tenant, IX_NATURAL, 0u64, low.as_str(), HIGH);
        let bound = if types.is_empty() {
            Bound::Included((tenant, IX_NATURAL, 0u64, "", ""))
        } else {
            Bound::Excluded(start)
        };
        let high = (tenant, IX_NATURAL, 0u64, HIGH, HIGH);
        let next = index
            .range((bound, Bound::Included(high)))
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?;
        match next {
            Some((key, _)) => {
                low = key.value().3.to_owned();
                types.push(low.clone());
            }
            None => return Ok(types),
        }
    }
}

/// [`crate::EventStore::list`].
pub(super) fn list(
    store: &RedbStore,
    tenant: &str,
    query: &ListQuery,
    visible: Visibility<'_>,
) -> Result<ListPage> {
    let order = query.plan.order.clone();
    let mut page = ListPage {
        items: Vec::new(),
        full: false,
        order: order.clone(),
    };
    if query.take == 0 {
        return Ok(page);
    }
    let read = store.read()?;
    let aggregates = read.open_table(AGGREGATES).map_err(storage)?;
    let index = read.open_table(SORT_INDEX).map_err(storage)?;
    let known: BTreeSet<String> = query.known_types.iter().cloned().collect();
    let directives = order.directives();
    // An item is listed when it is in scope, after the cursor, visible and matches.
    let accept = |record: AggregateRecord| -> Option<(SortKey, Aggregate)> {
        if !query.scope.contains(record.archived) {
            return None;
        }
        let aggregate = visible(record.aggregate())?;
        let key = order.key_of(&aggregate.view());
        if !query.plan.is_after(&key) {
            return None;
        }
        if let Some(filter) = &query.filter {
            if !filter.matches_aggregate(&aggregate.view(), &known) {
                return None;
            }
        }
        Some((key, aggregate))
    };
    match IndexPlan::for_directives(&directives) {
        Some(plan) => {
            let start = query.plan.after.as_ref();
            for (pass_flag, start_key) in plan.passes(start) {
                let mut stop = false;
                scan_index(
                    &index,
                    tenant,
                    plan.kind,
                    plan.dirs,
                    start_key,
                    &mut |_, a, b, flag| {
                        if pass_flag.is_some_and(|f| f != flag) || !query.scope.contains(flag) {
                            return Ok(true);
                        }
                        let (t, i) = if plan.swapped { (b, a) } else { (a, b) };
                        let Some(record) = read_record(&aggregates, tenant, t, i)? else {
                            return Ok(true);
                        };
                        if let Some((_, aggregate)) = accept(record) {
                            page.items.push(aggregate);
                        }
                        stop = page.items.len() >= query.take;
                        Ok(!stop)
                    },
                )?;
                if stop {
                    break;
                }
            }
        }
        None => {
            // No index serves this order: one streaming pass keeping only the best `take`
            // items (memory O(take), time O(n)).
            let mut best: Vec<(SortKey, Aggregate)> = Vec::with_capacity(query.take + 1);
            let range = (tenant, "", "")..=(tenant, HIGH, HIGH);
            for item in aggregates.range(range).map_err(storage)? {
                let (_, bytes) = item.map_err(storage)?;
                let record: AggregateRecord =
                    serde_json::from_slice(bytes.value()).map_err(json_error)?;
                if record.version == 0 {
                    continue;
                }
                if let Some((key, aggregate)) = accept(record) {
                    let position = best.partition_point(|(k, _)| {
                        order.compare(k, &key) == std::cmp::Ordering::Less
                    });
                    if position < query.take {
                        best.insert(position, (key, aggregate));
                        best.truncate(query.take);
                    }
                }
            }
            page.items = best.into_iter().map(|(_, aggregate)| aggregate).collect();
        }
    }
    page.full = page.items.len() >= query.take;
    Ok(page)
}

/// A position inside one index layout: (value, a, b).
type IndexStart = (u64, String, String);

/// One pass over an index: the archived flag it reads (if split) and where it starts.
type Pass = (Option<bool>, Option<IndexStart>);

/// How an order is read from [`SORT_INDEX`].
#[derive(Debug, Clone, Copy)]
struct IndexPlan {
    kind: u8,
    /// Directions of (value, a, b).
    dirs: [SortOrder; 3],
    /// `a` is the id and `b` the type.
    swapped: bool,
    /// The order starts with `archived`: read each archived value as its own pass.
    archived_lead: Option<SortOrder>,
    /// Whether the layout has a value component (timestamps, version).
    valued: bool,
}

impl IndexPlan {
    fn for_directives(
        directives: &[eventdbx_core::query::sort::SortDirective],
    ) -> Option<IndexPlan> {
        let (archived_lead, rest) = match directives.split_first() {
            Some((first, rest)) if first.field == SortField::Archived => (Some(first.order), rest),
            _ => (None, directives),
        };
        use SortField::{
            AggregateId as I, AggregateType as T, CreatedAt as C, UpdatedAt as U, Version as V,
        };
        let fields: Vec<SortField> = rest.iter().map(|d| d.field).collect();
        let dirs: Vec<SortOrder> = rest.iter().map(|d| d.order).collect();
        let (kind, swapped, valued) = match fields.as_slice() {
            [T, I] => (IX_NATURAL, false, false),
            [I, T] => (IX_ID, true, false),
            [C, T, I] => (IX_CREATED, false, true),
            [C, I, T] => (IX_CREATED_ID, true, true),
            [U, T, I] => (IX_UPDATED, false, true),
            [U, I, T] => (IX_UPDATED_ID, true, true),
            [V, T, I] => (IX_VERSION, false, true),
            _ => return None,
        };
        let dirs = if valued {
            [dirs[0], dirs[1], dirs[2]]
        } else {
            [dirs[0], dirs[0], dirs[1]]
        };
        Some(IndexPlan {
            kind,
            dirs,
            swapped,
            archived_lead,
            valued,
        })
    }

    /// The passes to read: (archived flag of the pass, exclusive start key within the layout).
    fn passes(&self, after: Option<&SortKey>) -> Vec<Pass> {
        let to_start = |values: &[SortValue]| -> Option<(u64, String, String)> {
            let (value, strings) = if self.valued {
                let value = match values.first()? {
                    SortValue::Timestamp(None) => 0,
                    SortValue::Timestamp(Some(ms)) => u64::try_from(*ms).ok()? + 1,
                    SortValue::Version(v) => *v,
                    _ => return None,
                };
                (value, values.get(1..)?)
            } else {
                (0, values)
            };
            match strings {
                [SortValue::Str(a), SortValue::Str(b), ..] => Some((value, a.clone(), b.clone())),
                _ => None,
            }
        };
        match self.archived_lead {
            None => vec![(None, after.and_then(|key| to_start(&key.0)))],
            Some(order) => {
                let flags = match order {
                    SortOrder::Asc => [false, true],
                    SortOrder::Desc => [true, false],
                };
                let cursor = after.and_then(|key| match key.0.split_first() {
                    Some((SortValue::Bool(flag), rest)) => Some((*flag, to_start(rest))),
                    _ => None,
                });
                let mut passes = Vec::new();
                let mut reached = cursor.is_none();
                for flag in flags {
                    match &cursor {
                        Some((cursor_flag, start)) if !reached && *cursor_flag == flag => {
                            reached = true;
                            passes.push((Some(flag), start.clone()));
                        }
                        _ if reached => passes.push((Some(flag), None)),
                        _ => {}
                    }
                }
                passes
            }
        }
    }
}

type IndexTable = ReadOnlyTable<IndexKey, u8>;

type IndexItem<'a> = std::result::Result<
    (redb::AccessGuard<'a, IndexKey>, redb::AccessGuard<'a, u8>),
    redb::StorageError,
>;

/// Feeds index entries to `visit`; `Ok(false)` when `visit` asked to stop.
fn visit_entries<'a>(
    items: impl Iterator<Item = IndexItem<'a>>,
    visit: &mut Visit<'_>,
) -> Result<bool> {
    for item in items {
        let (key, flag) = item.map_err(storage)?;
        let (_, _, v, a, b) = key.value();
        if !visit(v, a, b, flag.value() != 0)? {
            return Ok(false);
        }
    }
    Ok(true)
}

type Visit<'v> = dyn FnMut(u64, &str, &str, bool) -> Result<bool> + 'v;

/// Visits index entries of `kind` in the order given by `dirs`, strictly after `start`, until
/// `visit` returns `false`. Mixed directions are read by seeking group by group, so no group is
/// ever loaded whole.
fn scan_index(
    table: &IndexTable,
    tenant: &str,
    kind: u8,
    dirs: [SortOrder; 3],
    start: Option<(u64, String, String)>,
    visit: &mut Visit<'_>,
) -> Result<()> {
    if dirs[0] == dirs[1] && dirs[1] == dirs[2] {
        let low = (tenant, kind, 0u64, "", "");
        let high = (tenant, kind, u64::MAX, HIGH, HIGH);
        let range = match (dirs[0], &start) {
            (_, None) => table.range(low..=high),
            (SortOrder::Asc, Some((v, a, b))) => table.range((
                Bound::Excluded((tenant, kind, *v, a.as_str(), b.as_str())),
                Bound::Included(high),
            )),
            (SortOrder::Desc, Some((v, a, b))) => table.range((
                Bound::Included(low),
                Bound::Excluded((tenant, kind, *v, a.as_str(), b.as_str())),
            )),
        }
        .map_err(storage)?;
        match dirs[0] {
            SortOrder::Asc => visit_entries(range, visit)?,
            SortOrder::Desc => visit_entries(range.rev(), visit)?,
        };
        return Ok(());
    }
    // Nested: distinct values in dirs[0]; within each, distinct `a` in dirs[1]; within each
    // (value, a), `b` in dirs[2].
    let first_key = |low: (u64, &str, &str),
                     high: (u64, &str, &str),
                     order: SortOrder|
     -> Result<Option<(u64, String)>> {
        let range = table
            .range((tenant, kind, low.0, low.1, low.2)..=(tenant, kind, high.0, high.1, high.2))
            .map_err(storage)?;
        let item = match order {
            SortOrder::Asc => range.into_iter().next(),
            SortOrder::Desc => range.into_iter().next_back(),
        };
        match item {
            Some(item) => {
                let (key, _) = item.map_err(storage)?;
                let (_, _, v, a, _) = key.value();
                Ok(Some((v, a.to_owned())))
            }
            None => Ok(None),
        }
    };
    // The first value group at or after the start (inclusive: the start group still has items
    // after the start key).
    let mut value = match (&start, dirs[0]) {
        (Some((v, _, _)), _) => Some(*v),
        (None, order) => first_key((0, "", ""), (u64::MAX, HIGH, HIGH), order)?.map(|(v, _)| v),
    };
    let mut first_group = start.is_some();
    while let Some(v) = value {
        // Within value v: the first `a`.
        let mut a_current: Option<String> = match (&start, first_group) {
            (Some((_, a, _)), true) => Some(a.clone()),
            _ => first_key((v, "", ""), (v, HIGH, HIGH), dirs[1])?.map(|(_, a)| a),
        };
        let mut first_a = first_group;
        while let Some(a) = a_current.take() {
            let b_start = match (&start, first_a) {
                (Some((_, _, b)), true) => Some(b.clone()),
                _ => None,
            };
            let low = (tenant, kind, v, a.as_str(), "");
            let high = (tenant, kind, v, a.as_str(), HIGH);
            let range = match (&b_start, dirs[2]) {
                (Some(b), SortOrder::Asc) => table.range((
                    Bound::Excluded((tenant, kind, v, a.as_str(), b.as_str())),
                    Bound::Included(high),
                )),
                (Some(b), SortOrder::Desc) => table.range((
                    Bound::Included(low),
                    Bound::Excluded((tenant, kind, v, a.as_str(), b.as_str())),
                )),
                (None, _) => table.range(low..=high),
            }
            .map_err(storage)?;
            let finished = match dirs[2] {
                SortOrder::Asc => visit_entries(range, visit)?,
                SortOrder::Desc => visit_entries(range.rev(), visit)?,
            };
            if !finished {
                return Ok(());
            }
            first_a = false;
            // The next distinct `a` within v.
            a_current = match dirs[1] {
                SortOrder::Asc => {
                    first_key((v, a.as_str(), HIGH), (v, HIGH, HIGH), SortOrder::Asc)?
                        .filter(|(_, next)| *next != a)
                        .map(|(_, next)| next)
                }
                SortOrder::Desc => first_key((v, "", ""), (v, a.as_str(), ""), SortOrder::Desc)?
                    .filter(|(_, next)| *next != a)
                    .map(|(_, next)| next),
            };
        }
        first_group = false;
        // The next distinct value.
        value = match dirs[0] {
            SortOrder::Asc => match v.checked_add(1) {
                Some(next) => first_key((next, "", ""), (u64::MAX, HIGH, HIGH), SortOrder::Asc)?
                    .map(|(v, _)| v),
                None => None,
            },
            SortOrder::Desc => match v.checked_sub(1) {
                Some(prev) => {
                    first_key((0, "", ""), (prev, HIGH, HIGH), SortOrder::Desc)?.map(|(v, _)| v)
                }
                None => None,
            },
        };
    }
    Ok(())
}
