//! What subscriptions read from an engine: the global position of every committed event
//! (`docs/subscriptions.md`, "Positions"), the page of events after a position, and the commit
//! listener that wakes a subscription when the tenant's head moves.
//!
//! Engines that have no positions yet keep the [`crate::EventStore`] defaults, which refuse with
//! [`unsupported`].

use std::sync::Arc;

use eventdbx_core::merkle::Event;

use crate::StoreError;

/// One committed event and its position in the tenant's commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionedEvent {
    /// 1-based, strictly increasing in commit order within the tenant, never reused.
    pub position: u64,
    /// The event as `events` returns it.
    pub event: Event,
}

/// Which events a subscription wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelector {
    /// Only this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only this aggregate id.
    pub aggregate_id: Option<String>,
    /// Only these (normalised) event types; empty means every type.
    pub event_types: Vec<String>,
}

impl EventSelector {
    /// Whether the selector takes an event of `aggregate_type#aggregate_id` (the cheap test,
    /// before the event is read).
    pub fn takes_aggregate(&self, aggregate_type: &str, aggregate_id: &str) -> bool {
        self.aggregate_type
            .as_deref()
            .is_none_or(|t| t == aggregate_type)
            && self
                .aggregate_id
                .as_deref()
                .is_none_or(|i| i == aggregate_id)
    }

    /// Whether the selector takes `event`.
    pub fn takes(&self, event: &Event) -> bool {
        self.takes_aggregate(&event.aggregate_type, &event.aggregate_id)
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// A page of [`crate::EventStore::events_after`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PositionPage {
    /// The selected events, in ascending position.
    pub events: Vec<PositionedEvent>,
    /// The position of the last event examined, selected or not (the `after` asked for when
    /// none was), so a reader whose selector skips most events still advances.
    pub last_examined: u64,
    /// The tenant's head position in the snapshot the page was read from.
    pub head: u64,
}

/// Called after each commit with the tenant and its head position then (at least). Called on
/// the writer's thread once the commit is visible to readers, so it must be quick and must not
/// call back into the store. Heads may be reported out of order by concurrent writers: keep the
/// maximum.
pub type CommitListener = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// The error of an engine that does not provide `what` (the trait's default methods).
pub fn unsupported(what: &str) -> StoreError {
    StoreError::engine(format!(
        "{what} is not supported by this storage engine (subscriptions need event positions)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selector_takes_everything_and_each_field_narrows_it() {
        let any = EventSelector::default();
        assert!(any.takes_aggregate("order", "o-1"));
        let typed = EventSelector {
            aggregate_type: Some("order".into()),
            ..EventSelector::default()
        };
        assert!(typed.takes_aggregate("order", "o-1"));
        assert!(!typed.takes_aggregate("person", "o-1"));
        let one = EventSelector {
            aggregate_id: Some("o-1".into()),
            ..typed
        };
        assert!(!one.takes_aggregate("order", "o-10"));
    }
}
