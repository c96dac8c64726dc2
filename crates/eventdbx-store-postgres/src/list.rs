//! `listAggregates`: one streaming pass over the tenant's aggregates in key order (fetched
//! [`BATCH`] rows at a time) that keeps the best `take` items after the cursor. Scope, the
//! caller's visibility rule, sort keys, the cursor and the filter are all `eventdbx-core`'s, as
//! in the embedded engine, so both engines return the same pages for every order. Memory is
//! O(take); time is O(n) per page, as the embedded engine's path for orders its index does not
//! serve.

use std::collections::BTreeSet;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::sort::SortKey;
use eventdbx_store::{ListPage, ListQuery, Result, Visibility};

use crate::read::BATCH;
use crate::records::{decode, AggregateRecord};
use crate::{col, db, pool_error, PostgresStore};

/// One page of aggregate rows after `(type, id)`, in key order.
fn rows_after(
    store: &PostgresStore,
    tenant: &str,
    after: Option<(String, String)>,
) -> Result<Vec<(String, String, String)>> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let (t, i) = after.unwrap_or_default();
        let first = t.is_empty() && i.is_empty();
        let rows = client
            .query(
                "SELECT aggregate_type, aggregate_id, record FROM aggregates \
                 WHERE tenant = $1 AND version > 0 \
                 AND ($2 OR (aggregate_type, aggregate_id) > ($3, $4)) \
                 ORDER BY aggregate_type, aggregate_id LIMIT $5",
                &[&tenant, &first, &t, &i, &BATCH],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| Ok((col(row, 0)?, col(row, 1)?, col(row, 2)?)))
            .collect()
    })
}

/// [`eventdbx_store::EventStore::list`].
pub(crate) fn list(
    store: &PostgresStore,
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
    let known: BTreeSet<String> = query.known_types.iter().cloned().collect();
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
    let mut best: Vec<(SortKey, Aggregate)> = Vec::with_capacity(query.take + 1);
    let mut after = None;
    loop {
        let rows = rows_after(store, tenant, after.take())?;
        let exhausted = (rows.len() as i64) < BATCH;
        for (t, i, text) in rows {
            let record: AggregateRecord = decode(&text)?;
            after = Some((t, i));
            if let Some((key, aggregate)) = accept(record) {
                let position = best
                    .partition_point(|(k, _)| order.compare(k, &key) == std::cmp::Ordering::Less);
                if position < query.take {
                    best.insert(position, (key, aggregate));
                    best.truncate(query.take);
                }
            }
        }
        if exhausted {
            break;
        }
    }
    page.items = best.into_iter().map(|(_, aggregate)| aggregate).collect();
    page.full = page.items.len() >= query.take;
    Ok(page)
}
