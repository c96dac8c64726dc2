//! A blocking client: the async [`Client`](crate::Client) plus a runtime, with no logic of its
//! own (after `postgres` over `tokio-postgres`): each method runs the async one with [`run`].
//!
//! Do not use it from inside an async runtime (blocking there panics); use the async client.
//!
//! ```no_run
//! use eventdbx_client::blocking::Client;
//! use eventdbx_client::{ClientConfig, ListQuery};
//!
//! let client = Client::connect(ClientConfig::from_env()?)?;
//! for aggregate in client.iter_list(ListQuery::new().take(100)) {
//!     println!("{}", aggregate?);
//! }
//! # Ok::<(), eventdbx_client::Error>(())
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde_json::Value;
use tokio::runtime::Runtime;

use crate::config::ClientConfig;
use crate::connection::Protocol;
use crate::error::{Error, Result};
use crate::types::{
    AggregatesPage, EventsPage, EventsQuery, Found, JsonList, ListQuery, OutboxPage,
    SchemaActivateResult, SchemaPublish, SchemaPublishResult, SnapshotQuery, TenantAssignResult,
    TenantQuotaResult, Write, Written,
};
use crate::{AggregatePages, EventPages, Fingerprint, SubscribeOptions, SubscribedEvent};

/// A synchronous EventDBX client. Thread-safe: share it by reference (or in an `Arc`).
#[derive(Debug)]
pub struct Client {
    client: crate::Client,
    runtime: Arc<Runtime>,
}

impl Client {
    /// Connects and performs the handshake (see [`crate::Client::connect`]).
    pub fn connect(config: ClientConfig) -> Result<Client> {
        // A current-thread runtime: each call runs on the calling thread, which also reads its
        // answer itself (in a blocking read, see `Client::connect_blocking_caller`), so a round
        // trip costs no wake-up of another thread (a worker thread would add two per call: the
        // worker woken by the response, then the caller) and no trip through the runtime.
        // The connection's reader task runs while a call waits; a connection the server closed
        // between calls is noticed before the next request (see `Connection::is_alive`).
        // Threads sharing the client take turns driving the runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Error::connection(format!("cannot start the runtime: {err}")))?;
        let client = runtime.block_on(crate::Client::connect_blocking_caller(config))?;
        Ok(Client {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// A handle on the same connection whose calls use another request timeout.
    pub fn with_request_timeout(&self, timeout: std::time::Duration) -> Client {
        Client {
            client: self.client.with_request_timeout(timeout),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// The async client inside.
    pub fn get_async(&self) -> &crate::Client {
        &self.client
    }

    /// See [`crate::Client::close`].
    pub fn close(&self) {
        run(&self.runtime, self.client.close());
    }

    /// See [`crate::Client::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// See [`crate::Client::is_connected`].
    pub fn is_connected(&self) -> bool {
        run(&self.runtime, self.client.is_connected())
    }

    /// See [`crate::Client::protocol`].
    pub fn protocol(&self) -> Option<Protocol> {
        run(&self.runtime, self.client.protocol())
    }

    /// See [`crate::Client::server_capabilities`].
    pub fn server_capabilities(&self) -> Vec<String> {
        run(&self.runtime, self.client.server_capabilities())
    }

    /// See [`crate::Client::server_fingerprint`].
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        run(&self.runtime, self.client.server_fingerprint())
    }

    /// See [`crate::Client::write`].
    pub fn write(&self, write: Write) -> Result<Written> {
        run(&self.runtime, self.client.write(write))
    }

    /// See [`crate::Client::create`].
    pub fn create(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .create(aggregate_type, aggregate_id, event_type, payload_json),
        )
    }

    /// See [`crate::Client::apply`].
    pub fn apply(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .apply(aggregate_type, aggregate_id, event_type, payload_json),
        )
    }

    /// See [`crate::Client::patch`].
    pub fn patch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        patch_json: &str,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .patch(aggregate_type, aggregate_id, event_type, patch_json),
        )
    }

    /// See [`crate::Client::archive`].
    pub fn archive(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client.archive(aggregate_type, aggregate_id, note),
        )
    }

    /// See [`crate::Client::restore`].
    /// See [`crate::Client::archive_with`].
    pub fn archive_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[crate::PublishTarget],
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .archive_with(aggregate_type, aggregate_id, note, publish_targets),
        )
    }

    /// See [`crate::Client::restore_with`].
    pub fn restore_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[crate::PublishTarget],
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .restore_with(aggregate_type, aggregate_id, note, publish_targets),
        )
    }

    pub fn restore(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client.restore(aggregate_type, aggregate_id, note),
        )
    }

    /// See [`crate::Client::create_snapshot`].
    pub fn create_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Written> {
        run(
            &self.runtime,
            self.client
                .create_snapshot(aggregate_type, aggregate_id, comment),
        )
    }

    /// See [`crate::Client::get`].
    pub fn get(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Found> {
        run(&self.runtime, self.client.get(aggregate_type, aggregate_id))
    }

    /// See [`crate::Client::select`].
    pub fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        fields: &[&str],
    ) -> Result<Found> {
        run(
            &self.runtime,
            self.client.select(aggregate_type, aggregate_id, fields),
        )
    }

    /// See [`crate::Client::list`].
    pub fn list(&self, query: &ListQuery) -> Result<AggregatesPage> {
        run(&self.runtime, self.client.list(query))
    }

    /// Every aggregate matching `query`, following cursors page by page (`take` is the page
    /// size). Stops after the first error.
    pub fn iter_list(&self, query: ListQuery) -> ItemIter<'_, AggregatePages> {
        ItemIter::new(&self.runtime, self.client.list_pages(query))
    }

    /// See [`crate::Client::events`].
    pub fn events(&self, query: &EventsQuery) -> Result<EventsPage> {
        run(&self.runtime, self.client.events(query))
    }

    /// Every event matching `query`, following cursors. Stops after the first error.
    pub fn iter_events(&self, query: EventsQuery) -> ItemIter<'_, EventPages> {
        ItemIter::new(&self.runtime, self.client.event_pages(query))
    }

    /// See [`crate::Client::subscribe`]: the events as an iterator, which blocks until the
    /// next one commits. Ends after an error.
    pub fn subscribe(&self, options: SubscribeOptions) -> SubscriptionIter<'_> {
        let _entered = self.runtime.enter();
        SubscriptionIter {
            runtime: &self.runtime,
            subscription: self.client.subscribe(options),
        }
    }

    /// See [`crate::Client::verify`].
    pub fn verify(&self, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        run(
            &self.runtime,
            self.client.verify(aggregate_type, aggregate_id),
        )
    }

    /// See [`crate::Client::list_referrers`].
    pub fn list_referrers(&self, aggregate_type: &str, aggregate_id: &str) -> Result<JsonList> {
        run(
            &self.runtime,
            self.client.list_referrers(aggregate_type, aggregate_id),
        )
    }

    /// See [`crate::Client::read_outbox`].
    pub fn read_outbox(
        &self,
        after_event_id: Option<u64>,
        take: Option<u64>,
    ) -> Result<OutboxPage> {
        run(&self.runtime, self.client.read_outbox(after_event_id, take))
    }

    /// See [`crate::Client::admin`].
    pub fn admin(&self, action: &str, args: &serde_json::Value) -> Result<serde_json::Value> {
        run(&self.runtime, self.client.admin(action, args))
    }

    /// See [`crate::Client::list_snapshots`].
    pub fn list_snapshots(&self, query: &SnapshotQuery) -> Result<JsonList> {
        run(&self.runtime, self.client.list_snapshots(query))
    }

    /// See [`crate::Client::get_snapshot`].
    pub fn get_snapshot(&self, snapshot_id: u64) -> Result<Found> {
        run(&self.runtime, self.client.get_snapshot(snapshot_id))
    }

    /// See [`crate::Client::list_schemas`].
    pub fn list_schemas(&self) -> Result<String> {
        run(&self.runtime, self.client.list_schemas())
    }

    /// See [`crate::Client::replace_schemas`].
    pub fn replace_schemas(&self, schemas_json: &str) -> Result<u32> {
        run(&self.runtime, self.client.replace_schemas(schemas_json))
    }

    /// See [`crate::Client::tenant_assign`].
    pub fn tenant_assign(&self, tenant_id: &str, shard_id: &str) -> Result<TenantAssignResult> {
        run(
            &self.runtime,
            self.client.tenant_assign(tenant_id, shard_id),
        )
    }

    /// See [`crate::Client::tenant_unassign`].
    pub fn tenant_unassign(&self, tenant_id: &str) -> Result<bool> {
        run(&self.runtime, self.client.tenant_unassign(tenant_id))
    }

    /// See [`crate::Client::tenant_quota_set`].
    pub fn tenant_quota_set(
        &self,
        tenant_id: &str,
        max_storage_mb: u64,
    ) -> Result<TenantQuotaResult> {
        run(
            &self.runtime,
            self.client.tenant_quota_set(tenant_id, max_storage_mb),
        )
    }

    /// See [`crate::Client::tenant_quota_clear`].
    pub fn tenant_quota_clear(&self, tenant_id: &str) -> Result<bool> {
        run(&self.runtime, self.client.tenant_quota_clear(tenant_id))
    }

    /// See [`crate::Client::tenant_quota_recalc`].
    pub fn tenant_quota_recalc(&self, tenant_id: &str) -> Result<u64> {
        run(&self.runtime, self.client.tenant_quota_recalc(tenant_id))
    }

    /// See [`crate::Client::tenant_reload`].
    pub fn tenant_reload(&self, tenant_id: &str) -> Result<bool> {
        run(&self.runtime, self.client.tenant_reload(tenant_id))
    }

    /// See [`crate::Client::tenant_schema_publish`].
    pub fn tenant_schema_publish(&self, publish: &SchemaPublish) -> Result<SchemaPublishResult> {
        run(&self.runtime, self.client.tenant_schema_publish(publish))
    }

    /// See [`crate::Client::tenant_list`].
    pub fn tenant_list(&self) -> Result<Vec<serde_json::Value>> {
        run(&self.runtime, self.client.tenant_list())
    }

    /// See [`crate::Client::tenant_schema_history`].
    pub fn tenant_schema_history(&self, tenant_id: &str) -> Result<serde_json::Value> {
        run(&self.runtime, self.client.tenant_schema_history(tenant_id))
    }

    /// See [`crate::Client::tenant_schema_activate`].
    pub fn tenant_schema_activate(
        &self,
        tenant_id: &str,
        version_id: &str,
        reason: Option<&str>,
        actor: Option<&str>,
    ) -> Result<SchemaActivateResult> {
        run(
            &self.runtime,
            self.client
                .tenant_schema_activate(tenant_id, version_id, reason, actor),
        )
    }
}

/// Runs `future` (a call of a client connected with
/// [`connect_blocking_caller`](crate::Client::connect_blocking_caller)) to completion on the
/// calling thread, on `runtime`, the client's own current-thread runtime, as
/// [`Runtime::block_on`] does but cheaper for most calls: the future is polled once first with
/// the runtime merely entered, and a call whose caller read its answer itself is then complete,
/// without `block_on`'s taking of the scheduler and setting up of its context (about a
/// microsecond per call). Otherwise `block_on` drives it (the reader task, the timers, a turn
/// on the connection); it polls the future again first, so nothing that woke the inert waker
/// of the first poll is lost. The Python SDK's synchronous client runs its calls with it.
pub fn run<F: Future>(runtime: &Runtime, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let entered = runtime.enter();
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    drop(entered);
    runtime.block_on(future)
}

/// Page sources the blocking iterators drive.
pub trait PageSource {
    /// Fetches the next page's parsed items, or `None` after the last page.
    #[doc(hidden)]
    fn next_items(&mut self, runtime: &Runtime) -> Result<Option<Vec<Value>>>;
}

impl PageSource for AggregatePages {
    fn next_items(&mut self, runtime: &Runtime) -> Result<Option<Vec<Value>>> {
        run(runtime, self.next_page())?
            .map(|page| page.aggregates())
            .transpose()
    }
}

impl PageSource for EventPages {
    fn next_items(&mut self, runtime: &Runtime) -> Result<Option<Vec<Value>>> {
        run(runtime, self.next_page())?
            .map(|page| page.events())
            .transpose()
    }
}

/// An iterator over parsed items that fetches pages as it goes.
#[derive(Debug)]
pub struct ItemIter<'a, P> {
    runtime: &'a Runtime,
    pages: P,
    buffered: VecDeque<Value>,
    finished: bool,
}

impl<'a, P: PageSource> ItemIter<'a, P> {
    fn new(runtime: &'a Runtime, pages: P) -> Self {
        ItemIter {
            runtime,
            pages,
            buffered: VecDeque::new(),
            finished: false,
        }
    }
}

impl<P: PageSource> Iterator for ItemIter<'_, P> {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buffered.pop_front() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            match self.pages.next_items(self.runtime) {
                Ok(Some(items)) => self.buffered.extend(items),
                Ok(None) => self.finished = true,
                Err(err) => {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
        }
    }
}

/// The iterator of [`Client::subscribe`]; dropping it ends the subscription.
#[derive(Debug)]
pub struct SubscriptionIter<'a> {
    runtime: &'a Runtime,
    subscription: crate::Subscription,
}

impl Iterator for SubscriptionIter<'_> {
    type Item = Result<SubscribedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        run(self.runtime, self.subscription.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_thread() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_call_complete_at_its_first_poll_never_enters_the_scheduler() {
        let runtime = current_thread();
        // `block_on` refuses to run inside another runtime's `block_on` (it panics): a call that
        // went through it would fail here. `run` returns the answer its first poll got.
        let outer = current_thread();
        let answered = outer.block_on(async { run(&runtime, async { 42 }) });
        assert_eq!(answered, 42);
    }

    #[test]
    fn a_call_that_must_wait_is_driven_to_its_end_and_loses_no_wake_up() {
        let runtime = current_thread();
        // Its first poll wakes the inert waker and returns pending; a timer needs the driver.
        let output = run(&runtime, async {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            7
        });
        assert_eq!(output, 7);
    }
}
