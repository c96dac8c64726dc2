//! Event reads: `listEvents` and `readOutbox`.

use eventdbx_core::query::cursor::EventCursor;
use eventdbx_core::query::filter::Filter;
use eventdbx_core::CoreError;
use eventdbx_proto::control::{
    ListEventsRequest, ListEventsResponse, ReadOutboxRequest, ReadOutboxResponse,
};

use super::aggregates::json_array;
use super::{fit_prefix, page_size, resource, Apply, Context, Reply};
use crate::error::RequestError;

const READ: &str = "aggregate.read";

fn event_json(event: &eventdbx_core::merkle::Event) -> Result<String, RequestError> {
    serde_json::to_string(event).map_err(RequestError::serialization)
}

/// The positions field of an event page (`docs/subscriptions.md`): sent when the engine knows
/// any, 0 standing for an event without one (positions start at 1); left out, as EventDBX's own
/// server does, by an engine without positions.
fn wire_positions(positions: &[Option<u64>]) -> Option<Vec<u64>> {
    positions
        .iter()
        .any(Option::is_some)
        .then(|| positions.iter().map(|p| p.unwrap_or(0)).collect())
}

/// `listEvents`.
impl Apply for ListEventsRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let (t, i) = (self.aggregate_type.as_str(), self.aggregate_id.as_str());
        ctx.authorize(&self.token, READ, Some(&resource(t, i)))?;
        if ctx.hidden_type(&ctx.schemas(), t) {
            return Err(CoreError::AggregateNotFound.into());
        }
        let config = &ctx.state.config;
        let take = page_size(self.take, config.page_limit, config.page_limit)?;
        let filter = match self.filter.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => Some(Filter::parse(text)?),
            _ => None,
        };
        let after = match self
            .cursor
            .as_deref()
            .map(EventCursor::parse)
            .transpose()?
            .flatten()
        {
            Some(cursor) => {
                cursor.check_scope(t, i)?;
                cursor.version
            }
            None => 0,
        };
        let page = ctx
            .state
            .store
            .events(ctx.tenant, t, i, after, take, filter.as_ref())?;
        let positions = ctx.state.store.event_positions(ctx.tenant, &page.events)?;
        let items = page
            .events
            .iter()
            .map(|event| Ok((event_json(event)?, event.version)))
            .collect::<Result<Vec<_>, RequestError>>()?;
        let build = |prefix: &[(String, u64)], cursor: bool| {
            Reply::ListEvents(ListEventsResponse {
                events_json: json_array(prefix.iter().map(|(json, _)| json.as_str())),
                next_cursor: cursor
                    .then(|| {
                        prefix
                            .last()
                            .map(|(_, v)| EventCursor::after(t, i, false, *v).to_string())
                    })
                    .flatten(),
                positions: positions.get(..prefix.len()).and_then(wire_positions),
            })
        };
        let sent = fit_prefix(&items, ctx.response_limit, |prefix| build(prefix, true))?;
        Ok(build(&items[..sent], page.full || sent < items.len()))
    }
}

/// `readOutbox`.
impl Apply for ReadOutboxRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.authorize(&self.token, READ, None)?;
        let config = &ctx.state.config;
        let take = page_size(self.take, config.list_page_size, config.page_limit)?;
        let schemas = ctx.schemas();
        let visible = |t: &str, i: &str| {
            !ctx.hidden_type(&schemas, t) && claims.allows_resource(&resource(t, i))
        };
        let page =
            ctx.state
                .store
                .outbox(ctx.tenant, self.after_event_id.unwrap_or(0), take, &visible)?;
        let positions = ctx.state.store.event_positions(ctx.tenant, &page.events)?;
        let items = page
            .events
            .iter()
            .map(|event| Ok((event_json(event)?, event.metadata.event_id)))
            .collect::<Result<Vec<_>, RequestError>>()?;
        let build = |prefix: &[(String, u64)], next: Option<u64>| {
            Reply::ReadOutbox(ReadOutboxResponse {
                events_json: json_array(prefix.iter().map(|(json, _)| json.as_str())),
                next_after_event_id: next,
                positions: positions.get(..prefix.len()).and_then(wire_positions),
            })
        };
        let sent = fit_prefix(&items, ctx.response_limit, |prefix| {
            build(prefix, prefix.last().map(|(_, id)| *id))
        })?;
        // Cut: resume after the last event sent. Whole: after the last row examined, so a
        // consumer advances past rows it may not see.
        let next = if sent < items.len() {
            items[..sent].last().map(|(_, id)| *id)
        } else {
            page.last_examined
        };
        Ok(build(&items[..sent], next))
    }
}
