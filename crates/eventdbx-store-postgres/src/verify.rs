//! `verify`: recomputes an aggregate's Merkle root from its stored events with
//! `eventdbx_core::merkle::Verifier`, folds them with `Aggregate::apply` (the write path's fold)
//! and compares the result with the stored record (`docs/storage.md`, "Verification"). The
//! record is read in the same snapshot as the events (one repeatable-read transaction).

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::merkle::{self, Event};
use eventdbx_core::time::parse_unix_millis;
use eventdbx_core::CoreError;
use eventdbx_store::Result;
use serde_json::{Map, Value};

use crate::records::{decode, AggregateRecord};
use crate::{col, db, pool_error, PostgresStore};

/// The first key whose value differs between `stored` and `rebuilt`, or that only one holds.
fn first_difference<'m>(
    stored: &'m Map<String, Value>,
    rebuilt: &'m Map<String, Value>,
) -> Option<&'m str> {
    stored
        .iter()
        .find(|(key, value)| rebuilt.get(*key) != Some(*value))
        .or_else(|| rebuilt.iter().find(|(key, _)| !stored.contains_key(*key)))
        .map(|(key, _)| key.as_str())
}

/// [`eventdbx_store::EventStore::verify`].
pub(crate) fn verify(
    store: &PostgresStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<String> {
    let (pool, tenant_owned, t, i) = (
        store.pool(),
        tenant.to_owned(),
        aggregate_type.to_owned(),
        aggregate_id.to_owned(),
    );
    let (record, bodies) = store.run(async move {
        let mut client = pool.get().await.map_err(pool_error)?;
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let record = txn
            .query_opt(
                "SELECT record FROM aggregates \
                 WHERE tenant = $1 AND aggregate_type = $2 AND aggregate_id = $3",
                &[&tenant_owned, &t, &i],
            )
            .await
            .map_err(db)?
            .map(|row| col::<String>(&row, 0))
            .transpose()?;
        let rows = txn
            .query(
                "SELECT body FROM events WHERE tenant = $1 AND aggregate_type = $2 \
                 AND aggregate_id = $3 ORDER BY version",
                &[&tenant_owned, &t, &i],
            )
            .await
            .map_err(db)?;
        let bodies = rows
            .iter()
            .map(|row| col::<String>(row, 0))
            .collect::<Result<Vec<_>>>()?;
        txn.commit().await.map_err(db)?;
        Ok((record, bodies))
    })?;
    let record: AggregateRecord = record
        .map(|text| decode::<AggregateRecord>(&text))
        .transpose()?
        .filter(|r| r.version > 0)
        .ok_or(CoreError::AggregateNotFound)?;
    let mut verifier = merkle::Verifier::new(aggregate_type, aggregate_id);
    let mut rebuilt = Aggregate::new(aggregate_type, aggregate_id);
    for body in &bodies {
        let event: Event = serde_json::from_str(body).map_err(|err| {
            CoreError::IntegrityViolation(format!(
                "a stored event of {aggregate_type}:{aggregate_id} is unreadable: {err}"
            ))
        })?;
        verifier.push(&event.hash_input(tenant), &event.hash, &event.merkle_root)?;
        rebuilt.apply(&event);
    }
    let subject = format!("{aggregate_type}:{aggregate_id}");
    if verifier.len() != record.version {
        return Err(CoreError::IntegrityViolation(format!(
            "{subject} has {} stored events but version {}",
            verifier.len(),
            record.version
        ))
        .into());
    }
    let root = verifier.finish(Some(&record.merkle_root))?;
    let violation = |what: String| Err(CoreError::IntegrityViolation(what).into());
    if let Some(key) = first_difference(&record.state, &rebuilt.state) {
        return violation(format!(
            "the stored state of {subject} differs from its events at key '{key}'"
        ));
    }
    if let Some(key) = first_difference(&record.extensions, &rebuilt.extensions) {
        return violation(format!(
            "the stored extensions of {subject} differ from its events at key '{key}'"
        ));
    }
    if record.created_at != rebuilt.created_at {
        return violation(format!(
            "the stored created_at of {subject} is not the time of its first event"
        ));
    }
    let updated = record.updated_at.as_deref().and_then(parse_unix_millis);
    let last_event = rebuilt.updated_at.as_deref().and_then(parse_unix_millis);
    if updated.is_none() || updated < last_event {
        return violation(format!(
            "the stored updated_at of {subject} is before its last event"
        ));
    }
    let frontier_ok = record.merkle().is_ok_and(|builder| {
        builder.len() == record.version && merkle::to_hex(&builder.root()) == record.merkle_root
    });
    if !frontier_ok {
        return violation(format!(
            "the stored merkle frontier of {subject} does not match its root"
        ));
    }
    Ok(root)
}
