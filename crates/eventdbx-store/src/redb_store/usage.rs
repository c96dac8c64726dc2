//! Per-tenant usage (events and bytes) for quotas, kept in the commit of every write, and the
//! recount that repairs it.

use std::sync::{Arc, Mutex};

use eventdbx_core::CoreError;
use redb::ReadableTable;

use super::tables::{storage, Tables, HIGH, USAGE};
use super::RedbStore;
use crate::{Result, Usage};

/// Adds to the tenant's recorded usage inside a commit.
pub(super) fn add_usage(
    tables: &mut Tables<'_>,
    tenant: &str,
    events: u64,
    bytes: u64,
) -> Result<()> {
    let (e, b) = tables
        .usage()?
        .get(tenant)
        .map_err(storage)?
        .map_or((0, 0), |v| v.value());
    tables
        .usage()?
        .insert(tenant, (e + events, b + bytes))
        .map_err(storage)?;
    Ok(())
}

/// Refuses the write when the tenant already uses its quota (inside the commit, so
/// concurrent writers cannot both pass on the same reading).
pub(super) fn check_quota(
    tables: &mut Tables<'_>,
    tenant: &str,
    quota_bytes: Option<u64>,
) -> Result<()> {
    let Some(quota) = quota_bytes else {
        return Ok(());
    };
    let used = tables
        .usage()?
        .get(tenant)
        .map_err(storage)?
        .map_or(0, |v| v.value().1);
    if used >= quota {
        return Err(CoreError::TenantQuota {
            tenant: tenant.to_owned(),
            quota_mb: quota / (1024 * 1024),
        }
        .into());
    }
    Ok(())
}

/// [`crate::EventStore::usage`].
pub(super) fn usage(store: &RedbStore, tenant: &str) -> Result<Usage> {
    let read = store.read()?;
    let usage = read.open_table(USAGE).map_err(storage)?;
    let (events, bytes) = usage
        .get(tenant)
        .map_err(storage)?
        .map_or((0, 0), |v| v.value());
    Ok(Usage { events, bytes })
}

/// [`crate::EventStore::tenants`].
pub(super) fn tenants(store: &RedbStore) -> Result<Vec<String>> {
    let read = store.read()?;
    let usage = read.open_table(USAGE).map_err(storage)?;
    let mut tenants = Vec::new();
    for row in usage.iter().map_err(storage)? {
        let (tenant, counts) = row.map_err(storage)?;
        if counts.value() != (0, 0) {
            tenants.push(tenant.value().to_owned());
        }
    }
    Ok(tenants)
}

/// [`crate::EventStore::recalc_usage`].
pub(super) fn recount(store: &RedbStore, tenant: &str) -> Result<Usage> {
    let tenant_owned = tenant.to_owned();
    let counted = Arc::new(Mutex::new(Usage::default()));
    let result = Arc::clone(&counted);
    // Counted inside the writer's transaction, so no write slips between count and record.
    store.commit(
        0,
        Box::new(move |tables| {
            let tenant = tenant_owned.as_str();
            let mut usage = Usage::default();
            let events = (tenant, "", "", 0)..=(tenant, HIGH, HIGH, u64::MAX);
            for item in tables.events()?.range(events).map_err(storage)? {
                let (_, bytes) = item.map_err(storage)?;
                usage.events += 1;
                usage.bytes += bytes.value().len() as u64;
            }
            let snapshots = (tenant, 0)..=(tenant, u64::MAX);
            for item in tables.snapshots()?.range(snapshots).map_err(storage)? {
                let (_, bytes) = item.map_err(storage)?;
                usage.bytes += bytes.value().len() as u64;
            }
            let totals = (usage.events, usage.bytes);
            tables.usage()?.insert(tenant, totals).map_err(storage)?;
            *result.lock().unwrap_or_else(|p| p.into_inner()) = usage;
            Ok(())
        }),
    )?;
    let usage = *counted.lock().unwrap_or_else(|p| p.into_inner());
    Ok(usage)
}
