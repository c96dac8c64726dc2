//! Subscriptions (`docs/subscriptions.md`): what a `subscribe` may follow and each batch it is
//! sent. The session's push side (`connection::push`) runs one task per subscription and calls
//! [`Subscription::open`] once, then [`Subscription::next_batch`] for every batch; the commands
//! themselves are answered here only on sessions that cannot push (protocol v1).

use eventdbx_core::names::{normalize_event_type, validate_aggregate_id, validate_aggregate_type};
use eventdbx_proto::control::{
    SubscribeRequest, SubscribedEvent, SubscriptionAckRequest, SubscriptionBatch,
    SubscriptionStart, UnsubscribeRequest,
};
use eventdbx_store::EventSelector;

use super::{fit_prefix, resource, Apply, Context, Reply};
use crate::error::RequestError;

/// The action a subscription needs: it reads events, as `listEvents` and `readOutbox` do.
const READ: &str = "aggregate.read";

/// Events per batch when the subscriber does not say, and the most it may ask for.
pub(crate) const DEFAULT_BATCH: u32 = 256;
pub(crate) const MAX_BATCH: u32 = 1000;

/// Batches in flight without an ack when the subscriber does not say, and the most it may ask
/// for: what bounds a subscription's share of the session's send buffer.
pub(crate) const DEFAULT_CREDIT: u32 = 4;
pub(crate) const MAX_CREDIT: u32 = 64;

/// The refusal of a subscription command on a session that cannot push.
fn needs_v2() -> RequestError {
    RequestError::unsupported("subscriptions need a protocol v2 session")
}

/// `subscribe` on a v1 session.
impl Apply for SubscribeRequest {
    fn apply(self, _ctx: &Context<'_>) -> Result<Reply, RequestError> {
        Err(needs_v2())
    }
}

/// `unsubscribe` on a v1 session.
impl Apply for UnsubscribeRequest {
    fn apply(self, _ctx: &Context<'_>) -> Result<Reply, RequestError> {
        Err(needs_v2())
    }
}

/// `subscriptionAck` on a v1 session.
impl Apply for SubscriptionAckRequest {
    fn apply(self, _ctx: &Context<'_>) -> Result<Reply, RequestError> {
        Err(needs_v2())
    }
}

/// An authorised subscription: what it selects and how it is paced.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    token: String,
    selector: EventSelector,
    /// The resource the token was authorised for (one aggregate), if any.
    resource: Option<String>,
    /// Delivery starts after this position.
    pub start: u64,
    /// Events per batch.
    pub batch_size: usize,
    /// Batches sent before an ack is needed.
    pub credit_window: u32,
}

/// One batch read for a subscription.
pub(crate) struct Batch {
    /// The reply to push; `None` when the page held nothing this subscriber may see.
    pub reply: Option<Reply>,
    /// The subscription's position after this batch.
    pub last_position: u64,
    /// The tenant's head in the snapshot the batch was read from.
    pub head: u64,
}

impl Subscription {
    /// Authorises (first), validates and resolves the start of a `subscribe`.
    pub(crate) fn open(ctx: &Context<'_>, request: SubscribeRequest) -> Result<Self, RequestError> {
        let resource = match (&request.aggregate_type, &request.aggregate_id) {
            (Some(t), Some(i)) => Some(resource(t, i)),
            _ => None,
        };
        ctx.authorize(&request.token, READ, resource.as_deref())?;
        if let Some(t) = &request.aggregate_type {
            validate_aggregate_type(t)?;
            if ctx.hidden_type(&ctx.schemas(), t) {
                return Err(eventdbx_core::CoreError::AggregateNotFound.into());
            }
        }
        if let Some(i) = &request.aggregate_id {
            validate_aggregate_id(i)?;
        }
        let event_types = request
            .event_types
            .iter()
            .map(|t| normalize_event_type(t))
            .collect::<Result<Vec<_>, _>>()?;
        let start = match request.start {
            SubscriptionStart::Beginning => 0,
            SubscriptionStart::After(position) => position,
            SubscriptionStart::End => ctx.state.store.head_position(ctx.tenant)?,
        };
        let batch_size = match request.batch_size {
            0 => DEFAULT_BATCH,
            n => n.min(MAX_BATCH),
        };
        let credit_window = match request.credit_window {
            0 => DEFAULT_CREDIT,
            n => n.min(MAX_CREDIT),
        };
        Ok(Subscription {
            token: request.token,
            selector: EventSelector {
                aggregate_type: request.aggregate_type,
                aggregate_id: request.aggregate_id,
                event_types,
            },
            resource,
            start,
            batch_size: batch_size as usize,
            credit_window,
        })
    }

    /// The batch after `after`. The token is checked again first, so a revoked or expired
    /// token ends the subscription at its next batch; events of hidden types and of
    /// aggregates the token may not read are skipped (the position still advances past them).
    pub(crate) fn next_batch(
        &self,
        ctx: &Context<'_>,
        subscription_id: u64,
        after: u64,
    ) -> Result<Batch, RequestError> {
        let claims = ctx.authorize(&self.token, READ, self.resource.as_deref())?;
        let page =
            ctx.state
                .store
                .events_after(ctx.tenant, after, &self.selector, self.batch_size)?;
        let schemas = ctx.schemas();
        let events = page
            .events
            .iter()
            .filter(|e| {
                let (t, i) = (&e.event.aggregate_type, &e.event.aggregate_id);
                !ctx.hidden_type(&schemas, t) && claims.allows_resource(&resource(t, i))
            })
            .map(|e| {
                Ok(SubscribedEvent {
                    position: e.position,
                    event_json: serde_json::to_string(&e.event)
                        .map_err(RequestError::serialization)?,
                })
            })
            .collect::<Result<Vec<_>, RequestError>>()?;
        let mut batch = Batch {
            reply: None,
            last_position: page.last_examined,
            head: page.head,
        };
        if events.is_empty() {
            return Ok(batch);
        }
        let build = |prefix: &[SubscribedEvent], last_position: u64| {
            Reply::SubscriptionBatch(SubscriptionBatch {
                subscription_id,
                events: prefix.to_vec(),
                head: page.head,
                last_position,
            })
        };
        // Cut to fit one message: the rest follows in the next batch.
        let sent = fit_prefix(&events, ctx.response_limit, |prefix| {
            build(prefix, prefix.last().map_or(after, |e| e.position))
        })?;
        if sent < events.len() {
            batch.last_position = events[sent - 1].position;
        }
        batch.reply = Some(build(&events[..sent], batch.last_position));
        Ok(batch)
    }

    /// A heartbeat: no events, the head, and the position the subscription has reached.
    pub(crate) fn heartbeat(subscription_id: u64, head: u64, last_position: u64) -> Reply {
        Reply::SubscriptionBatch(SubscriptionBatch {
            subscription_id,
            events: Vec::new(),
            head,
            last_position,
        })
    }
}
