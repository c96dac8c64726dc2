//! `listAggregates`. Scope, the caller's visibility rule, sort keys, the cursor and the filter
//! are all `eventdbx-core`'s, as in the embedded engine, so both engines return the same pages.
//!
//! An order whose directives all go one way (the natural order among them) is read in that
//! order from SQL, [`BATCH`] rows at a time from a keyset position (the cursor's, then the last
//! row's), and stops once the page is full: every column it sorts by compares in SQL as the core
//! compares it (`COLLATE "C"` strings, `false` before `true`, absent timestamps as 0 before
//! every `ms + 1`). Any other order is one streaming pass over the tenant in key order keeping
//! the best `take` items (memory O(take), time O(n)), like the embedded engine's path for
//! orders its index does not serve.

use std::collections::BTreeSet;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::query::cursor::ListOrder;
use eventdbx_core::query::sort::{SortField, SortKey, SortOrder, SortValue};
use eventdbx_store::{ListPage, ListQuery, Result, Visibility};
use tokio_postgres::types::ToSql;

use crate::read::BATCH;
use crate::records::{decode, AggregateRecord};
use crate::{col, db, pool_error, Cached, PostgresStore};

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
            .query_cached(
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
    if let Some(columns) = sql_order(&order) {
        let mut position = query.plan.after.as_ref().and_then(keyset);
        loop {
            let rows = rows_in_order(store, tenant, &columns, position.take())?;
            let exhausted = (rows.len() as i64) < BATCH;
            for text in rows {
                let record: AggregateRecord = decode(&text)?;
                position = keyset(&order.key_of(&record.aggregate().view()));
                if let Some((_, aggregate)) = accept(record) {
                    page.items.push(aggregate);
                    if page.items.len() >= query.take {
                        page.full = true;
                        return Ok(page);
                    }
                }
            }
            if exhausted || position.is_none() {
                return Ok(page);
            }
        }
    }
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

/// The SQL columns of an order and its one direction, when every directive goes the same way.
struct SqlOrder {
    columns: Vec<&'static str>,
    descending: bool,
}

fn sql_order(order: &ListOrder) -> Option<SqlOrder> {
    let directives = order.directives();
    let first = directives.first()?.order;
    if directives.iter().any(|d| d.order != first) {
        return None;
    }
    let columns = directives
        .iter()
        .map(|d| match d.field {
            SortField::AggregateType => "aggregate_type",
            SortField::AggregateId => "aggregate_id",
            SortField::Archived => "archived",
            SortField::CreatedAt => "created_ms",
            SortField::UpdatedAt => "updated_ms",
            SortField::Version => "version",
        })
        .collect();
    Some(SqlOrder {
        columns,
        descending: first == SortOrder::Desc,
    })
}

/// A keyset position: one SQL value per sort column, as the columns store them.
#[derive(Debug, Clone)]
enum KeyValue {
    Text(String),
    Flag(bool),
    Number(i64),
}

fn keyset(key: &SortKey) -> Option<Vec<KeyValue>> {
    key.0
        .iter()
        .map(|value| match value {
            SortValue::Str(text) => Some(KeyValue::Text(text.clone())),
            SortValue::Bool(flag) => Some(KeyValue::Flag(*flag)),
            SortValue::Timestamp(None) => Some(KeyValue::Number(0)),
            SortValue::Timestamp(Some(ms)) => ms.checked_add(1).map(KeyValue::Number),
            SortValue::Version(v) => i64::try_from(*v).ok().map(KeyValue::Number),
        })
        .collect()
}

/// One batch of records in `order`, strictly after `position`.
fn rows_in_order(
    store: &PostgresStore,
    tenant: &str,
    order: &SqlOrder,
    position: Option<Vec<KeyValue>>,
) -> Result<Vec<String>> {
    let direction = if order.descending { " DESC" } else { "" };
    let sorted: Vec<String> = order
        .columns
        .iter()
        .map(|c| format!("{c}{direction}"))
        .collect();
    let mut sql = String::from("SELECT record FROM aggregates WHERE tenant = $1 AND version > 0");
    let mut values = Vec::new();
    if let Some(position) = position.filter(|p| p.len() == order.columns.len()) {
        let placeholders: Vec<String> =
            (0..position.len()).map(|n| format!("${}", n + 3)).collect();
        let comparison = if order.descending { "<" } else { ">" };
        sql.push_str(&format!(
            " AND ({}) {comparison} ({})",
            order.columns.join(", "),
            placeholders.join(", ")
        ));
        values = position;
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT $2", sorted.join(", ")));
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &BATCH];
        for value in &values {
            params.push(match value {
                KeyValue::Text(text) => text,
                KeyValue::Flag(flag) => flag,
                KeyValue::Number(n) => n,
            });
        }
        let rows = client
            .query_cached(sql.as_str(), &params)
            .await
            .map_err(db)?;
        rows.iter().map(|row| col(row, 0)).collect()
    })
}
