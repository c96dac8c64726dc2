//! The push side of a v2 session: its subscriptions (`docs/subscriptions.md`, "Server").
//!
//! Each subscription is one task. It reads a batch from the store after the last position it
//! delivered, sends it with the subscribe request's id, and repeats while it has credit; once it
//! has read up to the head it waits for the tenant's head channel to rise past it, sending a
//! heartbeat every [`HEARTBEAT_INTERVAL`] while nothing commits. Catch-up and live delivery are
//! the same loop, so the switch between them can neither skip nor repeat an event: the store is
//! always read after the last delivered position. A subscriber that does not ack holds only its
//! task: the task stops reading until credit returns, and nothing is queued for it, so writers
//! never wait for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::control::{
    SubscribeRequest, SubscribeResponse, SubscriptionAckRequest, SubscriptionAckResponse,
    UnsubscribeRequest, UnsubscribeResponse,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::SessionInfo;
use crate::commands::subscribe::{Batch, Subscription};
use crate::commands::{self, Command, Context, Reply};
use crate::error::RequestError;
use crate::state::ServerState;

/// How often an idle subscription says the head it has reached.
pub(super) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The most subscriptions one session may hold at once.
pub(super) const MAX_SUBSCRIPTIONS: usize = 64;

/// Where a session's messages go out: the session's answers and its subscriptions' batches
/// share it, each message written whole.
pub(super) trait Outlet: Send + Sync + 'static {
    /// Writes one message; after a failure the session's reader sees the connection end.
    fn send<'a>(&'a self, message: &'a [u8]) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// One running subscription.
struct Running {
    credit: Arc<Semaphore>,
    window: u32,
    task: JoinHandle<()>,
}

/// The subscriptions of one session; dropping it ends them all.
pub(super) struct Subscriptions {
    state: Arc<ServerState>,
    info: Arc<SessionInfo>,
    outbound: Arc<dyn Outlet>,
    response_limit: usize,
    next_id: u64,
    running: HashMap<u64, Running>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

impl Subscriptions {
    pub(super) fn new(
        state: Arc<ServerState>,
        info: Arc<SessionInfo>,
        outbound: Arc<dyn Outlet>,
        response_limit: usize,
    ) -> Self {
        Subscriptions {
            state,
            info,
            outbound,
            response_limit,
            next_id: 1,
            running: HashMap::new(),
        }
    }

    /// Takes the subscription commands of request `id` (answering them, at once or from the
    /// subscription's task); any other command is handed back.
    pub(super) async fn take(
        &mut self,
        id: u64,
        command: Result<Command, RequestError>,
    ) -> Option<Result<Command, RequestError>> {
        let reply = match command {
            Ok(Command::Subscribe(request)) => {
                self.subscribe(id, request);
                return None;
            }
            Ok(Command::Unsubscribe(request)) => self.unsubscribe(request),
            Ok(Command::SubscriptionAck(request)) => self.ack(request),
            other => return Some(other),
        };
        let answer = commands::encode(id, Ok(reply), self.response_limit);
        self.outbound.send(&answer).await;
        None
    }

    fn subscribe(&mut self, id: u64, request: SubscribeRequest) {
        self.running
            .retain(|_, running| !running.task.is_finished());
        let subscription_id = self.next_id;
        self.next_id += 1;
        let full = self.running.len() >= MAX_SUBSCRIPTIONS;
        let credit = Arc::new(Semaphore::new(0));
        let task = Task {
            state: Arc::clone(&self.state),
            info: Arc::clone(&self.info),
            outbound: Arc::clone(&self.outbound),
            response_limit: self.response_limit,
            request_id: id,
            subscription_id,
            credit: Arc::clone(&credit),
        };
        let window = match request.credit_window {
            0 => commands::subscribe::DEFAULT_CREDIT,
            n => n.min(commands::subscribe::MAX_CREDIT),
        };
        // Tracked: aborted, it still holds the state until the runtime drops it, and the server
        // waits for that.
        let task = tokio::spawn(self.state.tasks.track_future(async move {
            if full {
                let refused = RequestError::unsupported(format!(
                    "a session holds at most {MAX_SUBSCRIPTIONS} subscriptions"
                ));
                return task.send(Err(refused)).await;
            }
            task.run(request).await;
        }));
        self.running.insert(
            subscription_id,
            Running {
                credit,
                window,
                task,
            },
        );
    }

    fn unsubscribe(&mut self, request: UnsubscribeRequest) -> Reply {
        let found = match self.running.remove(&request.subscription_id) {
            Some(running) => {
                running.task.abort();
                true
            }
            None => false,
        };
        Reply::Unsubscribe(UnsubscribeResponse { found })
    }

    fn ack(&mut self, request: SubscriptionAckRequest) -> Reply {
        let found = match self.running.get(&request.subscription_id) {
            Some(running) if !running.task.is_finished() => {
                // Never more credit than the window: an ack for batches never sent is no
                // licence to flood.
                let room =
                    (running.window as usize).saturating_sub(running.credit.available_permits());
                running
                    .credit
                    .add_permits(room.min(request.batches as usize));
                true
            }
            _ => false,
        };
        Reply::SubscriptionAck(SubscriptionAckResponse { found })
    }
}

/// What one subscription's task holds.
struct Task {
    state: Arc<ServerState>,
    info: Arc<SessionInfo>,
    outbound: Arc<dyn Outlet>,
    response_limit: usize,
    request_id: u64,
    subscription_id: u64,
    credit: Arc<Semaphore>,
}

impl Task {
    /// Sends a reply (or the error that ends the subscription) with the subscribe request's id.
    /// The write runs as a task of its own and this one waits for it: `unsubscribe` and the
    /// session's end abort this task, and an abort in the middle of a write would leave half a
    /// message on the wire. So a batch already being sent may still follow the `unsubscribe`
    /// answer (clients ignore it).
    async fn send(&self, reply: Result<Reply, RequestError>) {
        let answer = commands::encode(self.request_id, reply, self.response_limit);
        let outbound = Arc::clone(&self.outbound);
        let _ = tokio::spawn(async move { outbound.send(&answer).await }).await;
    }

    /// Runs `f` with the session's context on a blocking thread (store reads block).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Context<'_>) -> Result<T, RequestError> + Send + 'static,
    ) -> Result<T, RequestError> {
        let (state, info, limit) = (
            Arc::clone(&self.state),
            Arc::clone(&self.info),
            self.response_limit,
        );
        #[cfg(feature = "test-hooks")]
        let gate = self.state.hooks.take_read_gate();
        // Tracked: a read outlives the abort of its subscription, and the server waits for it.
        let tasks = &self.state.tasks;
        tasks
            .spawn_blocking(move || {
                #[cfg(feature = "test-hooks")]
                if let Some(gate) = gate {
                    gate.wait();
                }
                f(&Context {
                    state: &state,
                    tenant: &info.tenant,
                    hello_token: &info.hello_token,
                    response_limit: limit,
                })
            })
            .await
            .map_err(|err| RequestError::new("storage", format!("storage error: {err}")))?
    }

    async fn run(self, request: SubscribeRequest) {
        // Taken before the first read: a commit from here on raises it.
        let mut heads = self.state.heads.watch(&self.info.tenant);
        let opened = self
            .blocking(move |ctx| Subscription::open(ctx, request))
            .await;
        let subscription = match opened {
            Ok(subscription) => Arc::new(subscription),
            Err(err) => return self.send(Err(err)).await,
        };
        self.credit.add_permits(subscription.credit_window as usize);
        let mut after = subscription.start;
        self.send(Ok(Reply::Subscribe(SubscribeResponse {
            subscription_id: self.subscription_id,
            start_position: after,
        })))
        .await;
        loop {
            // One credit per batch sent; without credit, nothing is read.
            let Ok(permit) = self.credit.acquire().await else {
                return;
            };
            let batch = loop {
                let (subscription, id) = (Arc::clone(&subscription), self.subscription_id);
                let read = self
                    .blocking(move |ctx| subscription.next_batch(ctx, id, after))
                    .await;
                let batch: Batch = match read {
                    Ok(batch) => batch,
                    Err(err) => return self.send(Err(err)).await,
                };
                after = after.max(batch.last_position);
                if batch.reply.is_some() {
                    break batch;
                }
                if after < batch.head {
                    // Rows skipped (filtered or not visible): read on.
                    continue;
                }
                // Caught up: wait for a commit above what was read, saying so while idle.
                let idle =
                    tokio::time::timeout(HEARTBEAT_INTERVAL, heads.wait_for(|head| *head > after))
                        .await
                        .map(|waited| waited.map(drop));
                match idle {
                    Ok(Ok(())) => {}
                    // The server is going away.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let beat = Subscription::heartbeat(id, batch.head, after);
                        self.send(Ok(beat)).await;
                    }
                }
            };
            permit.forget();
            if let Some(reply) = batch.reply {
                self.send(Ok(reply)).await;
            }
        }
    }
}
