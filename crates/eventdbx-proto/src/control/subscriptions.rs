//! Subscriptions (ours, v2 sessions only): `subscribe`, `unsubscribe`, `subscriptionAck`, and
//! the `subscriptionBatch` the server pushes with the subscribe request's id
//! (`docs/subscriptions.md`).

use super::{fill_texts, list_len, optional_text, text, texts};
use crate::message::refuse_textless_elements;
use crate::schema::control_capnp::{
    subscribe_request, subscribe_response, subscription_ack_request, subscription_ack_response,
    subscription_batch, unsubscribe_request, unsubscribe_response,
};
use crate::Result;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionStart {
    /// The tenant's first event.
    #[default]
    Beginning,
    /// The head when the subscription begins: only events committed afterwards.
    End,
    /// The events after this position (a position the subscriber was given).
    After(u64),
}

/// `subscribe`: follow the tenant's events from a start, filtered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeRequest {
    pub token: String,
    pub start: SubscriptionStart,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// Empty: every event type.
    pub event_types: Vec<String>,
    /// Most events per batch; 0 = the server's default.
    pub batch_size: u32,
    /// Batches sent before the server waits for an ack; 0 = the server's default.
    pub credit_window: u32,
}

impl SubscribeRequest {
    pub fn encode(&self, mut r: subscribe_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        match self.start {
            SubscriptionStart::Beginning => {}
            SubscriptionStart::End => r.set_from_end(true),
            SubscriptionStart::After(position) => r.set_after_position(position),
        }
        if let Some(t) = &self.aggregate_type {
            r.set_aggregate_type(t.as_str());
            r.set_has_aggregate_type(true);
        }
        if let Some(i) = &self.aggregate_id {
            r.set_aggregate_id(i.as_str());
            r.set_has_aggregate_id(true);
        }
        let len = list_len(self.event_types.len(), "event types")?;
        fill_texts(r.reborrow().init_event_types(len), &self.event_types);
        r.set_batch_size(self.batch_size);
        r.set_credit_window(self.credit_window);
        Ok(())
    }

    pub fn decode(r: subscribe_request::Reader<'_>) -> Result<Self> {
        let start = match (r.get_from_end(), r.get_after_position()) {
            (true, _) => SubscriptionStart::End,
            (false, 0) => SubscriptionStart::Beginning,
            (false, position) => SubscriptionStart::After(position),
        };
        Ok(SubscribeRequest {
            token: text(r.get_token())?,
            start,
            aggregate_type: optional_text(r.get_has_aggregate_type(), r.get_aggregate_type())?,
            aggregate_id: optional_text(r.get_has_aggregate_id(), r.get_aggregate_id())?,
            event_types: texts(r.get_event_types())?,
            batch_size: r.get_batch_size(),
            credit_window: r.get_credit_window(),
        })
    }
}

/// The `subscribe` reply: the subscription's id and the position delivery starts after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscribeResponse {
    pub subscription_id: u64,
    pub start_position: u64,
}

impl SubscribeResponse {
    pub fn encode(&self, mut r: subscribe_response::Builder<'_>) {
        r.set_subscription_id(self.subscription_id);
        r.set_start_position(self.start_position);
    }

    pub fn decode(r: subscribe_response::Reader<'_>) -> Result<Self> {
        Ok(SubscribeResponse {
            subscription_id: r.get_subscription_id(),
            start_position: r.get_start_position(),
        })
    }
}

/// `unsubscribe`: ends a subscription of this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsubscribeRequest {
    pub subscription_id: u64,
}

impl UnsubscribeRequest {
    pub fn encode(&self, mut r: unsubscribe_request::Builder<'_>) -> Result<()> {
        r.set_subscription_id(self.subscription_id);
        Ok(())
    }

    pub fn decode(r: unsubscribe_request::Reader<'_>) -> Result<Self> {
        Ok(UnsubscribeRequest {
            subscription_id: r.get_subscription_id(),
        })
    }
}

/// The `unsubscribe` reply: whether the session had that subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsubscribeResponse {
    pub found: bool,
}

impl UnsubscribeResponse {
    pub fn encode(&self, mut r: unsubscribe_response::Builder<'_>) {
        r.set_found(self.found);
    }

    pub fn decode(r: unsubscribe_response::Reader<'_>) -> Result<Self> {
        Ok(UnsubscribeResponse {
            found: r.get_found(),
        })
    }
}

/// `subscriptionAck`: the client consumed `batches` batches; the server may send as many more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionAckRequest {
    pub subscription_id: u64,
    pub batches: u32,
}

impl SubscriptionAckRequest {
    pub fn encode(&self, mut r: subscription_ack_request::Builder<'_>) -> Result<()> {
        r.set_subscription_id(self.subscription_id);
        r.set_batches(self.batches);
        Ok(())
    }

    pub fn decode(r: subscription_ack_request::Reader<'_>) -> Result<Self> {
        Ok(SubscriptionAckRequest {
            subscription_id: r.get_subscription_id(),
            batches: r.get_batches(),
        })
    }
}

/// The `subscriptionAck` reply: whether the session had that subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionAckResponse {
    pub found: bool,
}

impl SubscriptionAckResponse {
    pub fn encode(&self, mut r: subscription_ack_response::Builder<'_>) {
        r.set_found(self.found);
    }

    pub fn decode(r: subscription_ack_response::Reader<'_>) -> Result<Self> {
        Ok(SubscriptionAckResponse {
            found: r.get_found(),
        })
    }
}

/// One event of a batch: its position and its JSON (the event shape of `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribedEvent {
    pub position: u64,
    pub event_json: String,
}

/// A batch the server pushes (with the subscribe request's id); empty = a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionBatch {
    pub subscription_id: u64,
    /// Ascending positions.
    pub events: Vec<SubscribedEvent>,
    /// The tenant's head when the batch was read.
    pub head: u64,
    /// The subscription's position after this batch: a resume point (it advances past events
    /// the filters skip).
    pub last_position: u64,
}

impl SubscriptionBatch {
    pub fn encode(&self, mut r: subscription_batch::Builder<'_>) {
        r.set_subscription_id(self.subscription_id);
        r.set_head(self.head);
        r.set_last_position(self.last_position);
        // The server caps a batch far below the list limit; anything past it is not sent.
        let len = u32::try_from(self.events.len()).unwrap_or(u32::MAX);
        let mut list = r.init_events(len);
        for (index, event) in (0..len).zip(&self.events) {
            let mut item = list.reborrow().get(index);
            item.set_position(event.position);
            item.set_event_json(event.event_json.as_str());
        }
    }

    pub fn decode(r: subscription_batch::Reader<'_>) -> Result<Self> {
        let list = r.get_events()?;
        let first = list.iter().next().map(|event| event.has_event_json());
        refuse_textless_elements(list.len(), first, "subscribed events")?;
        let events = list
            .iter()
            .map(|item| {
                Ok(SubscribedEvent {
                    position: item.get_position(),
                    event_json: text(item.get_event_json())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SubscriptionBatch {
            subscription_id: r.get_subscription_id(),
            events,
            head: r.get_head(),
            last_position: r.get_last_position(),
        })
    }
}
