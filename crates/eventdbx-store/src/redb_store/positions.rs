//! Event positions (`docs/subscriptions.md`, "Positions"): each event gets the tenant's next
//! position inside the commit that stores it, in the order the batch applies its jobs, so
//! positions follow commit order with no gap a reader could fall into. redb has one writer at a
//! time and readers see whole commits: a reader whose snapshot holds position P holds every
//! position below it, and any later commit can only add positions above the head it read.
//!
//! Stores written before positions existed get them once, at open, in event id order
//! ([`assign_missing`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use eventdbx_core::merkle::Event;
use redb::{ReadableTable, WriteTransaction};

use super::tables::{json_error, storage, Tables, EVENTS, EVENT_POSITIONS, META, POSITIONS};
use super::RedbStore;
use crate::{CommitListener, EventSelector, PositionPage, PositionedEvent, Result};

/// The [`META`] key set once every stored event has a position.
const POSITIONS_ASSIGNED: &str = "positions_assigned";

/// The [`META`] key set once [`EVENT_POSITIONS`] holds every position of [`POSITIONS`] (stores
/// that had positions before the reverse table existed get it at open).
const EVENT_POSITIONS_FILLED: &str = "event_positions_filled";

/// How many rows one [`events_after`] call examines at most, so a selector that matches
/// nothing does not read the whole history in one call (the page's `last_examined` advances).
const MAX_EXAMINED: usize = 10_000;

/// The highest position of `tenant` in `table` (0 for none).
fn head_in(
    table: &impl ReadableTable<(&'static str, u64), (&'static str, &'static str, u64)>,
    tenant: &str,
) -> Result<u64> {
    let last = table
        .range((tenant, 0)..=(tenant, u64::MAX))
        .map_err(storage)?
        .next_back()
        .transpose()
        .map_err(storage)?;
    Ok(last.map_or(0, |(key, _)| key.value().1))
}

/// Gives the event `(tenant, type, id, version)` the tenant's next position, inside the commit
/// that stores it, and records it in `assigned` (the caller's commit notification). A job that
/// is run again (its batch retried) assigns again: the last run is the committed one.
pub(super) fn assign(
    tables: &mut Tables<'_>,
    (tenant, aggregate_type, aggregate_id, version): (&str, &str, &str, u64),
    assigned: &AtomicU64,
) -> Result<u64> {
    let mut positions = tables.positions()?;
    let position = head_in(&*positions, tenant)? + 1;
    positions
        .insert((tenant, position), (aggregate_type, aggregate_id, version))
        .map_err(storage)?;
    tables
        .event_positions()?
        .insert((tenant, aggregate_type, aggregate_id, version), position)
        .map_err(storage)?;
    assigned.store(position, Ordering::Release);
    Ok(position)
}

/// Gives every stored event without a position one, per tenant in event id order (the order
/// writes were sealed in), once: a store written before positions existed. Run at open.
pub(super) fn assign_missing(txn: &WriteTransaction) -> Result<()> {
    assign_in_event_id_order(txn)?;
    fill_event_positions(txn)
}

fn assign_in_event_id_order(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    if meta.get(POSITIONS_ASSIGNED).map_err(storage)?.is_some() {
        return Ok(());
    }
    let mut order: BTreeMap<(String, u64), (String, String, u64)> = BTreeMap::new();
    {
        let events = txn.open_table(EVENTS).map_err(storage)?;
        for item in events.iter().map_err(storage)? {
            let (key, bytes) = item.map_err(storage)?;
            let (tenant, t, i, version) = key.value();
            let event: Event = serde_json::from_slice(bytes.value()).map_err(json_error)?;
            order.insert(
                (tenant.to_owned(), event.metadata.event_id),
                (t.to_owned(), i.to_owned(), version),
            );
        }
    }
    let mut positions = txn.open_table(POSITIONS).map_err(storage)?;
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for ((tenant, _), (t, i, version)) in &order {
        let position = next.entry(tenant.clone()).or_insert(0);
        *position += 1;
        positions
            .insert(
                (tenant.as_str(), *position),
                (t.as_str(), i.as_str(), *version),
            )
            .map_err(storage)?;
    }
    meta.insert(POSITIONS_ASSIGNED, 1).map_err(storage)?;
    Ok(())
}

/// Copies every position into [`EVENT_POSITIONS`], once: a store given positions before the
/// reverse table existed. Later commits write both tables.
fn fill_event_positions(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    if meta.get(EVENT_POSITIONS_FILLED).map_err(storage)?.is_some() {
        return Ok(());
    }
    let positions = txn.open_table(POSITIONS).map_err(storage)?;
    let mut reverse = txn.open_table(EVENT_POSITIONS).map_err(storage)?;
    for item in positions.iter().map_err(storage)? {
        let (key, location) = item.map_err(storage)?;
        let (tenant, position) = key.value();
        let (t, i, version) = location.value();
        reverse
            .insert((tenant, t, i, version), position)
            .map_err(storage)?;
    }
    meta.insert(EVENT_POSITIONS_FILLED, 1).map_err(storage)?;
    Ok(())
}

/// [`crate::EventStore::event_positions`]: read after the events were, from a later snapshot,
/// which holds them too (a position is written in the commit that stores its event and never
/// changes).
pub(super) fn of_events(
    store: &RedbStore,
    tenant: &str,
    events: &[Event],
) -> Result<Vec<Option<u64>>> {
    let read = store.read()?;
    let table = read.open_table(EVENT_POSITIONS).map_err(storage)?;
    events
        .iter()
        .map(|event| {
            let key = (
                tenant,
                event.aggregate_type.as_str(),
                event.aggregate_id.as_str(),
                event.version,
            );
            Ok(table.get(key).map_err(storage)?.map(|v| v.value()))
        })
        .collect()
}

/// [`crate::EventStore::head_position`].
pub(super) fn head(store: &RedbStore, tenant: &str) -> Result<u64> {
    let read = store.read()?;
    head_in(&read.open_table(POSITIONS).map_err(storage)?, tenant)
}

/// [`crate::EventStore::events_after`]: one snapshot, so the page and its head agree.
pub(super) fn events_after(
    store: &RedbStore,
    tenant: &str,
    after: u64,
    selector: &EventSelector,
    take: usize,
) -> Result<PositionPage> {
    let read = store.read()?;
    let positions = read.open_table(POSITIONS).map_err(storage)?;
    let events = read.open_table(EVENTS).map_err(storage)?;
    let mut page = PositionPage {
        events: Vec::new(),
        last_examined: after,
        head: head_in(&positions, tenant)?,
    };
    if take == 0 {
        return Ok(page);
    }
    let start = after.saturating_add(1);
    for (examined, item) in positions
        .range((tenant, start)..=(tenant, u64::MAX))
        .map_err(storage)?
        .enumerate()
    {
        if examined >= MAX_EXAMINED {
            break;
        }
        let (key, location) = item.map_err(storage)?;
        let position = key.value().1;
        page.last_examined = position;
        let (t, i, version) = location.value();
        if !selector.takes_aggregate(t, i) {
            continue;
        }
        let Some(bytes) = events.get((tenant, t, i, version)).map_err(storage)? else {
            continue;
        };
        let event: Event = serde_json::from_slice(bytes.value()).map_err(json_error)?;
        if selector.takes(&event) {
            page.events.push(PositionedEvent { position, event });
            if page.events.len() >= take {
                break;
            }
        }
    }
    Ok(page)
}

/// The listeners of [`crate::EventStore::listen_commits`].
#[derive(Default)]
pub(super) struct Listeners(RwLock<Vec<CommitListener>>);

impl Listeners {
    pub(super) fn add(&self, listener: CommitListener) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    /// Tells every listener that `tenant`'s head is at least `head` (0: nothing was assigned).
    pub(super) fn committed(&self, tenant: &str, head: u64) {
        if head == 0 {
            return;
        }
        let listeners = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for listener in listeners.iter() {
            listener(tenant, head);
        }
    }
}

#[cfg(test)]
mod tests {
    use eventdbx_core::write::{WriteBody, WriteKind};
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::{Durability, EventStore, WriteRequest};

    fn append(store: &RedbStore, tenant: &str, id: &str) {
        let request = WriteRequest::new(
            WriteKind::Append,
            "order",
            id,
            "order_changed",
            WriteBody::Payload(serde_json::json!({})),
        );
        store.write(tenant, request).expect("append");
    }

    /// A store written before positions existed: its events get positions at open, per tenant
    /// in event id order, and later writes continue from there.
    #[test]
    fn a_store_without_positions_gets_them_at_open_in_event_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.redb");
        {
            let store = RedbStore::open(&path, Durability::Fsync).expect("open");
            append(&store, "a", "o-2");
            append(&store, "b", "o-1");
            append(&store, "a", "o-1");
            append(&store, "a", "o-2");
        }
        {
            // Back to the layout before positions: no table rows, no flag.
            let db = Database::open(&path).expect("raw open");
            let txn = db.begin_write().expect("write");
            txn.delete_table(POSITIONS).expect("drop positions");
            txn.open_table(META)
                .expect("meta")
                .remove(POSITIONS_ASSIGNED)
                .expect("remove flag");
            txn.commit().expect("commit");
            let read = db.begin_read().expect("read");
            assert!(read.open_table(POSITIONS).is_err(), "no positions left");
        }
        let store = RedbStore::open(&path, Durability::Fsync).expect("reopen");
        assert_eq!(store.head_position("a").expect("head"), 3);
        assert_eq!(store.head_position("b").expect("head"), 1);
        append(&store, "a", "o-1");
        let page = store
            .events_after("a", 0, &EventSelector::default(), 10)
            .expect("page");
        let got: Vec<(u64, &str, u64)> = page
            .events
            .iter()
            .map(|e| (e.position, e.event.aggregate_id.as_str(), e.event.version))
            .collect();
        assert_eq!(
            got,
            vec![(1, "o-2", 1), (2, "o-1", 1), (3, "o-2", 2), (4, "o-1", 2)]
        );
    }

    /// Event pages carry positions: the reverse table answers for each event, also in a store
    /// whose positions were assigned before that table existed (it is filled at open).
    #[test]
    fn events_know_their_positions_also_in_a_store_from_before_the_reverse_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.redb");
        {
            let store = RedbStore::open(&path, Durability::Fsync).expect("open");
            append(&store, "a", "o-1");
            append(&store, "b", "o-1");
            append(&store, "a", "o-1");
        }
        {
            // Back to the layout before the reverse table: positions, but no table, no flag.
            let db = Database::open(&path).expect("raw open");
            let txn = db.begin_write().expect("write");
            txn.delete_table(EVENT_POSITIONS)
                .expect("drop the reverse table");
            txn.open_table(META)
                .expect("meta")
                .remove(EVENT_POSITIONS_FILLED)
                .expect("remove flag");
            txn.commit().expect("commit");
        }
        let store = RedbStore::open(&path, Durability::Fsync).expect("reopen");
        append(&store, "a", "o-2");
        let positions_of = |tenant: &str, id: &str| {
            let page = store
                .events(tenant, "order", id, 0, 10, None)
                .expect("events");
            store
                .event_positions(tenant, &page.events)
                .expect("positions")
        };
        assert_eq!(positions_of("a", "o-1"), vec![Some(1), Some(2)]);
        assert_eq!(positions_of("a", "o-2"), vec![Some(3)]);
        assert_eq!(positions_of("b", "o-1"), vec![Some(1)]);
        let elsewhere = store
            .events("a", "order", "o-2", 0, 10, None)
            .expect("events");
        assert_eq!(
            store
                .event_positions("c", &elsewhere.events)
                .expect("positions"),
            vec![None],
            "no position in a tenant that does not hold the event"
        );
    }
}
