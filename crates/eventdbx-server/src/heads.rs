//! Each tenant's head position as the store's commit listener reports it, for the
//! subscriptions that wait for new events (`docs/subscriptions.md`, "Commit notifications").
//!
//! A tenant has a channel only once someone subscribed to it; the listener, which runs on the
//! writer's thread after every commit, does one map lookup and, when there is a channel, raises
//! its value. Subscriptions read the events themselves from the store, so nothing here grows
//! with the number of events or with a slow subscriber.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use eventdbx_store::CommitListener;
use tokio::sync::watch;

/// Per-tenant head channels.
#[derive(Debug, Default)]
pub(crate) struct CommitHeads {
    tenants: RwLock<HashMap<String, watch::Sender<u64>>>,
}

impl CommitHeads {
    /// The listener to register with the store.
    pub(crate) fn listener(self: &Arc<Self>) -> CommitListener {
        let heads = Arc::clone(self);
        Arc::new(move |tenant, head| heads.committed(tenant, head))
    }

    fn committed(&self, tenant: &str, head: u64) {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = tenants.get(tenant) {
            // Concurrent writers report out of order: keep the highest.
            sender.send_if_modified(|current| {
                let higher = head > *current;
                if higher {
                    *current = head;
                }
                higher
            });
        }
    }

    /// A receiver of `tenant`'s head. Take it before reading the store: a commit after this
    /// call raises it, and one before is in what the read sees.
    pub(crate) fn watch(&self, tenant: &str) -> watch::Receiver<u64> {
        if let Some(sender) = self
            .tenants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(tenant)
        {
            return sender.subscribe();
        }
        let mut tenants = self
            .tenants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_sees_the_highest_head_of_its_tenant_only() {
        let heads = Arc::new(CommitHeads::default());
        let listener = heads.listener();
        listener("a", 3);
        let mut a = heads.watch("a");
        let b = heads.watch("b");
        assert_eq!(
            *a.borrow(),
            0,
            "a head reported before anyone watched is not kept"
        );
        listener("a", 5);
        listener("a", 4);
        listener("c", 9);
        assert!(a.has_changed().expect("open"));
        assert_eq!(*a.borrow_and_update(), 5);
        assert_eq!(*b.borrow(), 0);
    }
}
