//! Pages of one aggregate's events and of the tenant's outbox (events in global id order).

use eventdbx_core::merkle::Event;
use eventdbx_core::query::EventView;
use eventdbx_core::time::parse_unix_millis;
use serde_json::Value;

use super::tables::{json_error, read_record, storage, AGGREGATES, EVENTS, OUTBOX};
use super::RedbStore;
use crate::{EventPage, OutboxPage, Result};

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

/// [`crate::EventStore::events`].
pub(super) fn events(
    store: &RedbStore,
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    after_version: u64,
    take: usize,
    filter: Option<&eventdbx_core::query::filter::Filter>,
) -> Result<EventPage> {
    let mut page = EventPage {
        events: Vec::new(),
        full: false,
    };
    if take == 0 {
        return Ok(page);
    }
    let read = store.read()?;
    let record = read_record(
        &read.open_table(AGGREGATES).map_err(storage)?,
        tenant,
        aggregate_type,
        aggregate_id,
    )?;
    if record.is_none_or(|r| r.archived) {
        return Ok(page);
    }
    let events = read.open_table(EVENTS).map_err(storage)?;
    let start = after_version.saturating_add(1);
    for item in events
        .range(
            (tenant, aggregate_type, aggregate_id, start)
                ..=(tenant, aggregate_type, aggregate_id, u64::MAX),
        )
        .map_err(storage)?
    {
        let (_, bytes) = item.map_err(storage)?;
        let event: Event = serde_json::from_slice(bytes.value()).map_err(json_error)?;
        let extensions = event.extensions.clone().map(Value::Object);
        let mut view = event_view(&event);
        view.extensions = extensions.as_ref();
        if filter.is_none_or(|f| f.matches_event(&view)) {
            page.events.push(event);
            if page.events.len() >= take {
                page.full = true;
                break;
            }
        }
    }
    Ok(page)
}

/// [`crate::EventStore::outbox`].
pub(super) fn outbox(
    store: &RedbStore,
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
    let read = store.read()?;
    let outbox = read.open_table(OUTBOX).map_err(storage)?;
    let events = read.open_table(EVENTS).map_err(storage)?;
    let start = after_event_id.saturating_add(1);
    for item in outbox
        .range((tenant, start)..=(tenant, u64::MAX))
        .map_err(storage)?
    {
        let (key, location) = item.map_err(storage)?;
        page.last_examined = Some(key.value().1);
        let (t, i, version) = location.value();
        if !visible(t, i) {
            continue;
        }
        let Some(bytes) = events.get((tenant, t, i, version)).map_err(storage)? else {
            continue;
        };
        page.events
            .push(serde_json::from_slice(bytes.value()).map_err(json_error)?);
        if page.events.len() >= take {
            page.full = true;
            break;
        }
    }
    Ok(page)
}
