//! Event reads: `listEvents` and `readOutbox`.

use capnp::primitive_list;

use super::{optional_text, text};
use crate::schema::control_capnp::{
    list_events_request, list_events_response, read_outbox_request, read_outbox_response,
};
use crate::Result;

/// `listEvents`: one page of an aggregate's events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListEventsRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub cursor: Option<String>,
    pub take: Option<u64>,
    pub filter: Option<String>,
}

impl ListEventsRequest {
    pub fn encode(&self, mut r: list_events_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        if let Some(cursor) = &self.cursor {
            r.set_cursor(cursor.as_str());
            r.set_has_cursor(true);
        }
        if let Some(take) = self.take {
            r.set_take(take);
            r.set_has_take(true);
        }
        if let Some(filter) = &self.filter {
            r.set_filter(filter.as_str());
            r.set_has_filter(true);
        }
        Ok(())
    }

    pub fn decode(r: list_events_request::Reader<'_>) -> Result<Self> {
        Ok(ListEventsRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            cursor: optional_text(r.get_has_cursor(), r.get_cursor())?,
            take: r.get_has_take().then(|| r.get_take()),
            filter: optional_text(r.get_has_filter(), r.get_filter())?,
        })
    }
}

/// The `listEvents` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListEventsResponse {
    /// A JSON array of events.
    pub events_json: String,
    /// Sent as an empty text with the flag off when there is no next page.
    pub next_cursor: Option<String>,
    /// Ours: each event's position (`docs/subscriptions.md`), in the order of `events_json`, 0
    /// for an event without one. `None` from a server that sends none (EventDBX's own).
    pub positions: Option<Vec<u64>>,
}

impl ListEventsResponse {
    pub fn encode(&self, mut r: list_events_response::Builder<'_>) {
        r.set_events_json(self.events_json.as_str());
        r.set_next_cursor(self.next_cursor.as_deref().unwrap_or(""));
        r.set_has_next_cursor(self.next_cursor.is_some());
        if let Some(positions) = &self.positions {
            set_positions(r.reborrow().init_positions(list_size(positions)), positions);
            r.set_has_positions(true);
        }
    }

    pub fn decode(r: list_events_response::Reader<'_>) -> Result<Self> {
        Ok(ListEventsResponse {
            events_json: text(r.get_events_json())?,
            next_cursor: optional_text(r.get_has_next_cursor(), r.get_next_cursor())?,
            positions: positions(r.get_has_positions(), r.get_positions())?,
        })
    }
}

/// `readOutbox`: the tenant's events after an event id, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadOutboxRequest {
    pub token: String,
    /// `None` reads from the start.
    pub after_event_id: Option<u64>,
    pub take: Option<u64>,
}

impl ReadOutboxRequest {
    pub fn encode(&self, mut r: read_outbox_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        if let Some(after) = self.after_event_id {
            r.set_after_event_id(after);
            r.set_has_after_event_id(true);
        }
        if let Some(take) = self.take {
            r.set_take(take);
            r.set_has_take(true);
        }
        Ok(())
    }

    pub fn decode(r: read_outbox_request::Reader<'_>) -> Result<Self> {
        Ok(ReadOutboxRequest {
            token: text(r.get_token())?,
            after_event_id: r.get_has_after_event_id().then(|| r.get_after_event_id()),
            take: r.get_has_take().then(|| r.get_take()),
        })
    }
}

/// The `readOutbox` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadOutboxResponse {
    /// A JSON array of events.
    pub events_json: String,
    pub next_after_event_id: Option<u64>,
    /// Ours: each event's position, as in [`ListEventsResponse::positions`].
    pub positions: Option<Vec<u64>>,
}

impl ReadOutboxResponse {
    pub fn encode(&self, mut r: read_outbox_response::Builder<'_>) {
        r.set_events_json(self.events_json.as_str());
        if let Some(next) = self.next_after_event_id {
            r.set_next_after_event_id(next);
            r.set_has_next_after_event_id(true);
        }
        if let Some(positions) = &self.positions {
            set_positions(r.reborrow().init_positions(list_size(positions)), positions);
            r.set_has_positions(true);
        }
    }

    pub fn decode(r: read_outbox_response::Reader<'_>) -> Result<Self> {
        Ok(ReadOutboxResponse {
            events_json: text(r.get_events_json())?,
            next_after_event_id: r
                .get_has_next_after_event_id()
                .then(|| r.get_next_after_event_id()),
            positions: positions(r.get_has_positions(), r.get_positions())?,
        })
    }
}

/// The length of a positions list. A page holds far fewer events than the list limit (the
/// message size caps it first), so a longer one is cut rather than refused.
fn list_size(positions: &[u64]) -> u32 {
    u32::try_from(positions.len()).unwrap_or(u32::MAX)
}

fn set_positions(mut list: primitive_list::Builder<'_, u64>, positions: &[u64]) {
    for (index, position) in (0..list.len()).zip(positions) {
        list.set(index, *position);
    }
}

/// Reads a positions list whose `has…` flag is `has`; the list is not touched when it is off.
fn positions(
    has: bool,
    field: capnp::Result<primitive_list::Reader<'_, u64>>,
) -> Result<Option<Vec<u64>>> {
    if !has {
        return Ok(None);
    }
    Ok(Some(field?.iter().collect()))
}
