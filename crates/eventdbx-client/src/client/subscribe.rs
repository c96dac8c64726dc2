//! [`Client::subscribe`]: a tenant's events in position order, from a start the caller chooses,
//! resubscribing after a lost connection from the last position it delivered
//! (`docs/subscriptions.md`).
//!
//! A task drives the subscription: it subscribes, acks every batch once its events are handed
//! to the stream, and after a retriable failure reconnects (per the client's retry options) and
//! subscribes again after the last delivered position, so the stream neither skips nor repeats
//! an event. The stream holds at most one batch: while the caller does not read, the task does
//! not ack, and the server stops sending.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use eventdbx_proto::control::SubscriptionStart;
use eventdbx_proto::control::{self, Reply, Request, SubscriptionAckRequest};
use futures_core::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{read_reply, unexpected, Client, LOG_TARGET};
use crate::error::{Error, ErrorKind, Result};

/// How long a subscription waits for any message before it takes the connection for dead: the
/// server sends a heartbeat every 5 s while it has nothing else to send.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);

/// What [`Client::subscribe`] follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Where delivery starts: the first event, the head, or after a position (an event with
    /// position P resumes with `After(P)`).
    pub start: SubscriptionStart,
    /// Only this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only this aggregate id.
    pub aggregate_id: Option<String>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// Events per batch (0: the server's default).
    pub batch_size: u32,
    /// Batches in flight before the server waits for an ack (0: the server's default).
    pub credit_window: u32,
}

impl SubscribeOptions {
    /// From the first event, unfiltered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets where delivery starts.
    pub fn start(mut self, start: SubscriptionStart) -> Self {
        self.start = start;
        self
    }

    /// Only events of this aggregate type.
    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = Some(aggregate_type.into());
        self
    }

    /// Only events of this aggregate id.
    pub fn aggregate_id(mut self, aggregate_id: impl Into<String>) -> Self {
        self.aggregate_id = Some(aggregate_id.into());
        self
    }

    /// Only events of these types.
    pub fn event_types(mut self, event_types: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.event_types = event_types.into_iter().map(Into::into).collect();
        self
    }
}

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribedEvent {
    /// Its position in the tenant's commit order: resume with `SubscriptionStart::After(position)`.
    pub position: u64,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate's version after this event.
    pub version: u64,
    /// Event type.
    pub event_type: String,
    /// The payload.
    pub payload: Value,
    /// Event id, time, writer, note.
    pub metadata: Value,
    /// The whole event JSON (the event shape of `docs/protocol.md`).
    pub event: Value,
}

impl SubscribedEvent {
    fn parse(event: control::SubscribedEvent) -> Result<Self> {
        let json: Value = serde_json::from_str(&event.event_json)
            .map_err(|err| Error::protocol(format!("undecodable event: {err}")))?;
        let text = |field: &str| {
            json.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::protocol(format!("event without {field}")))
        };
        Ok(SubscribedEvent {
            position: event.position,
            aggregate_type: text("aggregate_type")?,
            aggregate_id: text("aggregate_id")?,
            version: json.get("version").and_then(Value::as_u64).unwrap_or(0),
            event_type: text("event_type")?,
            payload: json.get("payload").cloned().unwrap_or(Value::Null),
            metadata: json.get("metadata").cloned().unwrap_or(Value::Null),
            event: json,
        })
    }
}

/// The stream of [`Client::subscribe`]. Dropping it ends the subscription.
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<Result<SubscribedEvent>>,
}

impl Stream for Subscription {
    type Item = Result<SubscribedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl Subscription {
    /// The next event; `None` once the subscription ended (after its error was yielded).
    pub async fn next(&mut self) -> Option<Result<SubscribedEvent>> {
        self.events.recv().await
    }
}

/// How one subscribe attempt ended.
enum Ended {
    /// The stream was dropped.
    Dropped,
}

impl Client {
    /// Follows the tenant's events from `options.start`, filtered, in position order.
    ///
    /// The stream yields every event once; after a connection failure it reconnects and
    /// subscribes again after the last position it yielded (retrying per the client's
    /// [`RetryOptions`](crate::RetryOptions)), and yields an error only when that fails or the
    /// server refuses (a missing `aggregate.read` right, an older server: `unsupported`). Must
    /// be called inside a tokio runtime (it spawns the task that drives the subscription).
    ///
    /// ```no_run
    /// # async fn demo(client: eventdbx_client::Client) -> eventdbx_client::Result<()> {
    /// use eventdbx_client::{SubscribeOptions, SubscriptionStart};
    ///
    /// let mut events = client.subscribe(SubscribeOptions::new().start(SubscriptionStart::After(41)));
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} {}#{} v{}", event.position, event.aggregate_type, event.aggregate_id, event.version);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        let capacity = match options.batch_size {
            0 => 256,
            n => n.min(1000) as usize,
        };
        let (sender, events) = mpsc::channel(capacity);
        let client = self.clone();
        tokio::spawn(async move { client.drive(options, sender).await });
        Subscription { events }
    }

    /// Runs a subscription until its stream is dropped or it fails for good.
    async fn drive(
        self,
        mut options: SubscribeOptions,
        events: mpsc::Sender<Result<SubscribedEvent>>,
    ) {
        let retry_options = self.inner.config.retry;
        let mut retry = 0;
        loop {
            let attempt = self.subscribe_once(&mut options, &events, &mut retry).await;
            let error = match attempt {
                Ok(Ended::Dropped) => return,
                Err(error) => error,
            };
            if !error.is_retriable() || retry + 1 >= retry_options.attempts || self.is_closed() {
                let _ = events.send(Err(error)).await;
                return;
            }
            retry += 1;
            tracing::debug!(target: LOG_TARGET, error = %error, retry, "subscription lost; resubscribing");
            tokio::time::sleep(retry_options.delay(retry)).await;
        }
    }

    /// One subscription on one connection; `options.start` follows the events delivered, so the
    /// next attempt resumes after them. `retry` is reset once a batch arrives.
    async fn subscribe_once(
        &self,
        options: &mut SubscribeOptions,
        events: &mpsc::Sender<Result<SubscribedEvent>>,
        retry: &mut u32,
    ) -> Result<Ended> {
        let connection = self.connection().await?;
        let id = self.next_request_id();
        let request = Request::Subscribe(control::SubscribeRequest {
            token: self.token(),
            start: options.start,
            aggregate_type: options.aggregate_type.clone(),
            aggregate_id: options.aggregate_id.clone(),
            event_types: options.event_types.clone(),
            batch_size: options.batch_size,
            credit_window: options.credit_window,
        });
        let bytes = request
            .encode(id)
            .map_err(|err| Error::argument(format!("cannot encode the request: {err}")))?;
        let mut answers = connection.open_stream(id, bytes).await?;
        let mut subscription_id = None;
        loop {
            let received = tokio::select! {
                // Dropped while nothing arrives: end it now, not at the next event.
                () = events.closed() => {
                    if let Some(subscription) = subscription_id {
                        self.unsubscribe(subscription).await;
                    }
                    return Ok(Ended::Dropped);
                }
                received = tokio::time::timeout(SILENCE_LIMIT, answers.recv()) => received,
            };
            let response = match received {
                Ok(Some(response)) => response?,
                Ok(None) => return Err(Error::connection("connection closed")),
                Err(_) => {
                    let silent = Error::new(
                        ErrorKind::Timeout,
                        format!("no subscription message within {SILENCE_LIMIT:?}"),
                    );
                    connection.kill(silent.clone());
                    return Err(silent);
                }
            };
            let reply = read_reply(&response, id).map_err(older_server)?;
            match reply {
                Reply::Subscribe(answer) => {
                    subscription_id = Some(answer.subscription_id);
                    // `End` resolved to a position: a resubscription starts from there.
                    options.start = SubscriptionStart::After(answer.start_position);
                }
                Reply::SubscriptionBatch(batch) => {
                    let Some(subscription) = subscription_id else {
                        return Err(Error::protocol(
                            "a batch before the subscription was answered",
                        ));
                    };
                    let sent = !batch.events.is_empty();
                    for event in batch.events {
                        let position = event.position;
                        let event = SubscribedEvent::parse(event)?;
                        if events.send(Ok(event)).await.is_err() {
                            self.unsubscribe(subscription).await;
                            return Ok(Ended::Dropped);
                        }
                        options.start = SubscriptionStart::After(position);
                    }
                    // Filters may have skipped rows past the last event: resume after them.
                    if let SubscriptionStart::After(position) = options.start {
                        if batch.last_position > position {
                            options.start = SubscriptionStart::After(batch.last_position);
                        }
                    }
                    if sent {
                        *retry = 0;
                        self.ack(subscription).await?;
                    }
                }
                other => return unexpected(&other),
            }
        }
    }

    /// Gives the server the credit of one consumed batch.
    async fn ack(&self, subscription_id: u64) -> Result<()> {
        let request = Request::SubscriptionAck(SubscriptionAckRequest {
            subscription_id,
            batches: 1,
        });
        self.attempt(&request, &|reply| match reply {
            Reply::SubscriptionAck(_) => Ok(()),
            other => unexpected(&other),
        })
        .await
    }

    /// Ends a subscription whose stream was dropped; a failure only means the connection (and
    /// with it the subscription) is gone already.
    async fn unsubscribe(&self, subscription_id: u64) {
        let request = Request::Unsubscribe(control::UnsubscribeRequest { subscription_id });
        let _ = self
            .attempt(&request, &|reply| match reply {
                Reply::Unsubscribe(_) => Ok(()),
                other => unexpected(&other),
            })
            .await;
    }
}

/// An older server answers an unknown request member with `serialization`: say what is missing.
fn older_server(error: Error) -> Error {
    if error.kind() == ErrorKind::Server
        && (error.code() == "serialization" && error.message().contains("unknown request")
            || error.code() == "unsupported")
    {
        return Error::new(
            ErrorKind::Unsupported,
            format!(
                "the server does not support subscriptions ({})",
                error.message()
            ),
        );
    }
    error
}
