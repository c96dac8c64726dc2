//! Reads (aggregates, events of one aggregate, the tenant's outbox, snapshots, usage and
//! tenants) and the two small writes that belong with them (manual snapshots, the usage
//! recount). Long results are fetched in pages of [`BATCH`] rows, and the filters and the
//! caller's visibility rule run on the caller's thread (`eventdbx-core`), never in SQL.

use eventdbx_core::aggregate::{Aggregate, Snapshot};
use eventdbx_core::merkle::Event;
use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::EventView;
use eventdbx_core::time::{format_unix_nanos, parse_unix_millis};
use eventdbx_core::CoreError;
use eventdbx_store::{EventPage, OutboxPage, Result, Usage};
use serde_json::Value;

use crate::records::{decode, SnapshotRecord};
use crate::write::{add_usage, insert_snapshot, read_record};
use crate::{col, db, json_error, now_nanos, pool_error, signed, unsigned, Cached, PostgresStore};

/// Rows fetched per round trip by the paged reads.
pub(crate) const BATCH: i64 = 512;

/// [`eventdbx_store::EventStore::get`].
pub(crate) fn get(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Aggregate>> {
    let (pool, tenant, t, i) = (
        store.pool(),
        tenant.to_owned(),
        aggregate_type.to_owned(),
        aggregate_id.to_owned(),
    );
    let stored = store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        read_record(&client, &tenant, &t, &i).await
    })?;
    Ok(stored
        .map(|(_, record)| record)
        .filter(|r| r.version > 0)
        .map(|r| r.aggregate()))
}

/// [`eventdbx_store::EventStore::aggregate_types`].
pub(crate) fn aggregate_types(store: &PostgresStore, tenant: &str) -> Result<Vec<String>> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let rows = client
            .query_cached(
                "SELECT DISTINCT aggregate_type FROM aggregates WHERE tenant = $1 ORDER BY 1",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|row| col(row, 0)).collect()
    })
}

/// The filter language's view of a stored event.
fn event_view(event: &Event) -> EventView<'_> {
    EventView {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        event_type: &event.event_type,
        version: event.version,
        event_id: event.metadata.event_id,
        created_at: parse_unix_millis(&event.metadata.created_at)
            .map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        merkle_root: &event.merkle_root,
        hash: &event.hash,
        note: event.metadata.note.as_deref(),
        issued_by: event
            .metadata
            .issued_by
            .as_ref()
            .map(|i| (i.group.as_str(), i.user.as_str())),
        extensions: None,
        payload: &event.payload,
    }
}

/// [`eventdbx_store::EventStore::events`].
pub(crate) fn events(
    store: &PostgresStore,
    tenant: &str,
    (aggregate_type, aggregate_id): (&str, &str),
    after_version: u64,
    take: usize,
    filter: Option<&Filter>,
) -> Result<EventPage> {
    let mut page = EventPage {
        events: Vec::new(),
        full: false,
    };
    if take == 0 {
        return Ok(page);
    }
    let mut after = signed(after_version);
    let mut first = true;
    loop {
        let (pool, tenant, t, i) = (
            store.pool(),
            tenant.to_owned(),
            aggregate_type.to_owned(),
            aggregate_id.to_owned(),
        );
        let check_record = first;
        let bodies = store.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            if check_record {
                let record = read_record(&client, &tenant, &t, &i).await?;
                if record.is_none_or(|(_, r)| r.archived) {
                    return Ok(None);
                }
            }
            let rows = client
                .query_cached(
                    "SELECT version, body FROM events WHERE tenant = $1 AND aggregate_type = $2 \
                     AND aggregate_id = $3 AND version > $4 ORDER BY version LIMIT $5",
                    &[&tenant, &t, &i, &after, &BATCH],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| Ok((col::<i64>(row, 0)?, col::<String>(row, 1)?)))
                .collect::<Result<Vec<_>>>()
                .map(Some)
        })?;
        first = false;
        let Some(bodies) = bodies else {
            return Ok(page);
        };
        let exhausted = (bodies.len() as i64) < BATCH;
        for (version, body) in bodies {
            after = version;
            let event: Event = decode(&body)?;
            let extensions = event.extensions.clone().map(Value::Object);
            let mut view = event_view(&event);
            view.extensions = extensions.as_ref();
            if filter.is_none_or(|f| f.matches_event(&view)) {
                page.events.push(event);
                if page.events.len() >= take {
                    page.full = true;
                    return Ok(page);
                }
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

/// [`eventdbx_store::EventStore::outbox`]: the events of the tenant's active aggregates in
/// event id order (an archived aggregate's events leave the outbox and come back on restore).
pub(crate) fn outbox(
    store: &PostgresStore,
    tenant: &str,
    after_event_id: u64,
    take: usize,
    visible: &dyn Fn(&str, &str) -> bool,
) -> Result<OutboxPage> {
    let mut page = OutboxPage {
        events: Vec::new(),
        last_examined: None,
        full: false,
    };
    if take == 0 {
        return Ok(page);
    }
    let mut after = signed(after_event_id);
    loop {
        let (pool, tenant) = (store.pool(), tenant.to_owned());
        let rows = store.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query_cached(
                    "SELECT e.event_id, e.aggregate_type, e.aggregate_id, e.body FROM events e \
                     JOIN aggregates a ON a.tenant = e.tenant \
                     AND a.aggregate_type = e.aggregate_type AND a.aggregate_id = e.aggregate_id \
                     WHERE e.tenant = $1 AND e.event_id > $2 AND NOT a.archived \
                     ORDER BY e.event_id LIMIT $3",
                    &[&tenant, &after, &BATCH],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        col::<i64>(row, 0)?,
                        col::<String>(row, 1)?,
                        col::<String>(row, 2)?,
                        col::<String>(row, 3)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let exhausted = (rows.len() as i64) < BATCH;
        for (event_id, t, i, body) in rows {
            after = event_id;
            page.last_examined = Some(unsigned(event_id));
            if !visible(&t, &i) {
                continue;
            }
            page.events.push(decode(&body)?);
            if page.events.len() >= take {
                page.full = true;
                return Ok(page);
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

/// [`eventdbx_store::EventStore::create_snapshot`].
pub(crate) fn create_snapshot(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    comment: Option<&str>,
) -> Result<Snapshot> {
    store.writable()?;
    let aggregate =
        get(store, tenant, aggregate_type, aggregate_id)?.ok_or(CoreError::AggregateNotFound)?;
    let snapshot = Snapshot::of(
        &aggregate,
        store.next_id(),
        format_unix_nanos(now_nanos()),
        comment,
    );
    let body = serde_json::to_string(&SnapshotRecord::from(&snapshot)).map_err(json_error)?;
    let (pool, tenant, stored) = (store.pool(), tenant.to_owned(), snapshot.clone());
    store.run(async move {
        let mut client = pool.get().await.map_err(pool_error)?;
        let txn = client.transaction().await.map_err(db)?;
        insert_snapshot(&txn, &tenant, &stored, &body).await?;
        let key = (stored.aggregate_type.as_str(), stored.aggregate_id.as_str());
        add_usage(&txn, &tenant, key, 0, body.len() as u64).await?;
        txn.commit().await.map_err(crate::commit_error)
    })?;
    Ok(snapshot)
}

/// [`eventdbx_store::EventStore::list_snapshots`].
pub(crate) fn list_snapshots(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: Option<&str>,
    aggregate_id: Option<&str>,
    version: Option<u64>,
) -> Result<Vec<Snapshot>> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    // An id without a type matches nothing in particular: like the embedded engine, it is
    // ignored (snapshots are keyed by type first).
    let t = aggregate_type.map(str::to_owned);
    let i = aggregate_type.and(aggregate_id).map(str::to_owned);
    let v = version.map(signed);
    let bodies = store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let rows = client
            .query_cached(
                "SELECT body FROM snapshots WHERE tenant = $1 \
                 AND ($2::text IS NULL OR aggregate_type = $2) \
                 AND ($3::text IS NULL OR aggregate_id = $3) \
                 AND ($4::bigint IS NULL OR version = $4) \
                 ORDER BY aggregate_type, aggregate_id, snapshot_id",
                &[&tenant, &t, &i, &v],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| col::<String>(row, 0))
            .collect::<Result<Vec<_>>>()
    })?;
    bodies
        .iter()
        .map(|body| decode::<SnapshotRecord>(body).map(Snapshot::from))
        .collect()
}

/// [`eventdbx_store::EventStore::get_snapshot`].
pub(crate) fn get_snapshot(
    store: &PostgresStore,
    tenant: &str,
    snapshot_id: u64,
) -> Result<Option<Snapshot>> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    let body = store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let row = client
            .query_opt_cached(
                "SELECT body FROM snapshots WHERE tenant = $1 AND snapshot_id = $2",
                &[&tenant, &signed(snapshot_id)],
            )
            .await
            .map_err(db)?;
        row.map(|row| col::<String>(&row, 0)).transpose()
    })?;
    body.map(|body| decode::<SnapshotRecord>(&body).map(Snapshot::from))
        .transpose()
}

/// [`eventdbx_store::EventStore::usage`].
pub(crate) fn usage(store: &PostgresStore, tenant: &str) -> Result<Usage> {
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one_cached(
                "SELECT coalesce(sum(events), 0)::bigint, coalesce(sum(bytes), 0)::bigint \
                 FROM usage WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        Ok(Usage {
            events: unsigned(col(&row, 0)?),
            bytes: unsigned(col(&row, 1)?),
        })
    })
}

/// [`eventdbx_store::EventStore::tenants`].
pub(crate) fn tenants(store: &PostgresStore) -> Result<Vec<String>> {
    let pool = store.pool();
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        let rows = client
            .query_cached(
                "SELECT tenant FROM usage GROUP BY tenant \
                 HAVING sum(events) <> 0 OR sum(bytes) <> 0 ORDER BY tenant",
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|row| col(row, 0)).collect()
    })
}

/// [`eventdbx_store::EventStore::recalc_usage`]: the tenant's usage rows are locked first, so a
/// write committing meanwhile either is counted or adds its own delta after the recount.
pub(crate) fn recalc_usage(store: &PostgresStore, tenant: &str) -> Result<Usage> {
    store.writable()?;
    let (pool, tenant) = (store.pool(), tenant.to_owned());
    store.run(async move {
        let mut client = pool.get().await.map_err(pool_error)?;
        let txn = client.transaction().await.map_err(db)?;
        txn.execute_cached(
            "INSERT INTO usage (tenant, shard, events, bytes) VALUES ($1, 0, 0, 0) \
             ON CONFLICT DO NOTHING",
            &[&tenant],
        )
        .await
        .map_err(db)?;
        txn.execute_cached(
            "SELECT 1 FROM usage WHERE tenant = $1 FOR UPDATE",
            &[&tenant],
        )
        .await
        .map_err(db)?;
        let row = txn
            .query_one_cached(
                "SELECT (SELECT count(*) FROM events WHERE tenant = $1), \
                 (SELECT coalesce(sum(octet_length(body)), 0)::bigint FROM events WHERE tenant = $1) \
                 + (SELECT coalesce(sum(octet_length(body)), 0)::bigint FROM snapshots WHERE tenant = $1)",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        let usage = Usage {
            events: unsigned(col(&row, 0)?),
            bytes: unsigned(col(&row, 1)?),
        };
        txn.execute_cached(
            "UPDATE usage SET events = CASE WHEN shard = 0 THEN $2::bigint ELSE 0 END, \
             bytes = CASE WHEN shard = 0 THEN $3::bigint ELSE 0 END WHERE tenant = $1",
            &[&tenant, &signed(usage.events), &signed(usage.bytes)],
        )
        .await
        .map_err(db)?;
        txn.commit().await.map_err(crate::commit_error)?;
        Ok(usage)
    })
}

/// An aggregate's record, for the modules that need the record rather than the aggregate.
pub(crate) fn record(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<crate::write::Stored> {
    let (pool, tenant, t, i) = (
        store.pool(),
        tenant.to_owned(),
        aggregate_type.to_owned(),
        aggregate_id.to_owned(),
    );
    store.run(async move {
        let client = pool.get().await.map_err(pool_error)?;
        read_record(&client, &tenant, &t, &i).await
    })
}
