//! The async client: one connection, reopened lazily, every operation of the control protocol.
//!
//! Each operation builds one typed request of `eventdbx_proto::control` and matches its typed
//! reply; this file holds the connection, the retry loop and the reply checks, and the
//! operations live by family in [`writes`], [`reads`], [`admin`] and [`subscribe`].

mod admin;
mod reads;
mod subscribe;
mod writes;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::control::{Reply, Request};
use eventdbx_proto::noise::v2::Fingerprint;

use crate::config::ClientConfig;
use crate::connection::{Connection, Protocol, Response};
use crate::error::{Error, Result};
use crate::types::{Write, Written};

/// The target of the client's log events, whichever file they come from (the Python logger
/// `eventdbx.client.client`).
const LOG_TARGET: &str = "eventdbx_client::client";

pub use reads::{AggregatePages, EventPages};
pub use subscribe::{SubscribeOptions, SubscribedEvent, Subscription, SubscriptionStart};

/// Capability token: `idempotencyKey` is honoured.
const IDEMPOTENCY_KEY: &str = "idempotency_key";
/// Capability token: `ListEventsRequest.filter` is honoured.
const EVENTS_FILTER: &str = "events_filter";
/// Capability token: `expectedVersion` is honoured.
const EXPECTED_VERSION: &str = "expected_version";

/// Which failures of a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// Reads and idempotent administration: every retriable failure.
    Repeatable,
    /// A mutation: only when the request provably never left, or it carries an idempotency key.
    Mutation { keyed: bool },
}

impl Safety {
    /// Whether a failed attempt may be sent again: a retriable failure of a repeatable call,
    /// or of a mutation that carries an idempotency key or provably had no effect (never sent,
    /// or answered `unavailable`: the server's storage did nothing).
    fn may_retry(self, error: &Error) -> bool {
        error.is_retriable()
            && match self {
                Safety::Repeatable => true,
                Safety::Mutation { keyed } => keyed || error.had_no_effect(),
            }
    }
}

/// An EventDBX client.
///
/// Cheap to clone: clones share one connection. Any number of tasks may call it at once; on
/// protocol v2 their requests are in flight together on the one connection, on v1 they take
/// turns. After a transport failure the connection is dropped and the next call opens a new
/// one (with a full handshake, never a weaker transport).
///
/// ```no_run
/// # async fn demo() -> eventdbx_client::Result<()> {
/// use eventdbx_client::{Client, ClientConfig, ListQuery, Write};
///
/// let client = Client::connect(ClientConfig::from_env()?).await?;
/// client
///     .write(Write::create("order", "o-1", "order_created", r#"{"status":"new"}"#))
///     .await?;
/// let order = client.get("order", "o-1").await?;
/// println!("{:?}", order.value()?);
/// let mut pages = client.list_pages(ListQuery::new().take(100));
/// while let Some(page) = pages.next_page().await? {
///     for aggregate in page.aggregates()? {
///         println!("{aggregate}");
///     }
/// }
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    request_timeout: Duration,
}

struct Inner {
    config: ClientConfig,
    token: String,
    next_id: AtomicU64,
    closed: AtomicBool,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The transport the first connection settled on; reconnects use exactly this one.
    negotiated: std::sync::OnceLock<Protocol>,
    /// Callers block their thread for their answers ([`Client::connect_blocking_caller`]).
    caller_waits: bool,
}

impl std::fmt::Debug for Inner {
    // By hand: a derived one would print the token, and clients end up in panics and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("token", &"<redacted>")
            .field("next_id", &self.next_id)
            .field("closed", &self.closed)
            .field("connection", &self.connection)
            .field("negotiated", &self.negotiated)
            .field("caller_waits", &self.caller_waits)
            .finish()
    }
}

impl Client {
    /// Connects and performs the handshake, retrying per the configuration's [`RetryOptions`].
    ///
    /// [`RetryOptions`]: crate::RetryOptions
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Client::connect_with(config, false).await
    }

    /// Connects as [`connect`](Self::connect) does, for a caller that runs each call to
    /// completion with `block_on` on a current-thread runtime of its own (the
    /// [`blocking`](crate::blocking) client, the Python SDK's synchronous client): a call whose
    /// answer its poll did not catch ([`ClientConfig::busy_poll`]) then waits for it in a
    /// blocking read on the calling thread, for up to 20 ms, instead of in the runtime's
    /// `epoll_wait` (which also costs the reader task's two reads). The runtime runs nothing
    /// else meanwhile: do not use it on a runtime whose other tasks must not wait that long.
    pub async fn connect_blocking_caller(config: ClientConfig) -> Result<Client> {
        Client::connect_with(config, true).await
    }

    async fn connect_with(config: ClientConfig, caller_waits: bool) -> Result<Client> {
        config.validate()?;
        let client = Client {
            request_timeout: config.request_timeout,
            inner: Arc::new(Inner {
                token: config.token.trim().to_owned(),
                config,
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                connection: tokio::sync::Mutex::new(None),
                negotiated: std::sync::OnceLock::new(),
                caller_waits,
            }),
        };
        let mut retry = 0;
        loop {
            match client.connection().await {
                Ok(_) => return Ok(client),
                Err(err)
                    if err.is_retriable() && retry + 1 < client.inner.config.retry.attempts =>
                {
                    retry += 1;
                    tracing::debug!(error = %err, retry, "connect failed; retrying");
                    tokio::time::sleep(client.inner.config.retry.delay(retry)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A handle on the same connection whose calls use another request timeout.
    ///
    /// ```no_run
    /// # async fn demo(client: eventdbx_client::Client) -> eventdbx_client::Result<()> {
    /// use std::time::Duration;
    /// let patient = client.with_request_timeout(Duration::from_secs(60));
    /// let root = patient.verify("order", "o-1").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_request_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            request_timeout: timeout,
        }
    }

    /// Closes the connection. Every later call fails at once with
    /// [`is_closed`](Error::is_closed). Idempotent.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(connection) = self.inner.connection.lock().await.take() {
            connection.kill(Error::closed());
        }
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// True while a live connection is held.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .connection
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.is_alive())
    }

    /// The transport of the current connection (`None` when not connected).
    pub async fn protocol(&self) -> Option<Protocol> {
        self.live().await.map(|c| c.protocol())
    }

    /// The capability tokens the server announced in its hello response (empty for EventDBX).
    pub async fn server_capabilities(&self) -> Vec<String> {
        self.live()
            .await
            .map(|c| c.capabilities().to_vec())
            .unwrap_or_default()
    }

    /// The fingerprint of the server key (protocol v2 only).
    pub async fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.live().await.and_then(|c| c.fingerprint())
    }

    /// The largest request the current connection can carry (`None` when not connected):
    /// 65,519 bytes on v1 under Noise, 65,535 in plaintext, the negotiated maximum on v2.
    pub async fn max_request_bytes(&self) -> Option<usize> {
        self.live().await.map(|c| c.max_request())
    }

    async fn live(&self) -> Option<Arc<Connection>> {
        self.inner
            .connection
            .lock()
            .await
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }

    /// The live connection, opening one when there is none.
    async fn connection(&self) -> Result<Arc<Connection>> {
        if self.is_closed() {
            return Err(Error::closed());
        }
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(Arc::clone(connection));
        }
        *slot = None;
        let negotiated = self.inner.negotiated.get().copied();
        let mut connection = Connection::open(&self.inner.config, negotiated).await?;
        if self.inner.caller_waits {
            connection.let_callers_wait();
        }
        let connection = Arc::new(connection);
        let _ = self.inner.negotiated.set(connection.protocol());
        if self.is_closed() {
            connection.kill(Error::closed());
            return Err(Error::closed());
        }
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// A fresh request id.
    fn next_request_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The bearer token every request carries.
    fn token(&self) -> String {
        self.inner.token.clone()
    }

    /// Sends one request (a fresh id per attempt) and decodes its reply, retrying per `safety`.
    async fn call<T>(
        &self,
        safety: Safety,
        request: Request,
        decode: impl Fn(Reply) -> Result<T>,
    ) -> Result<T> {
        let retry_options = self.inner.config.retry;
        let mut retry = 0;
        loop {
            let result = self.attempt(&request, &decode).await;
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !safety.may_retry(&error) || retry + 1 >= retry_options.attempts || self.is_closed()
            {
                return Err(error);
            }
            retry += 1;
            tracing::debug!(error = %error, retry, "request failed; retrying");
            tokio::time::sleep(retry_options.delay(retry)).await;
        }
    }

    async fn attempt<T>(
        &self,
        request: &Request,
        decode: &impl Fn(Reply) -> Result<T>,
    ) -> Result<T> {
        let connection = self.connection().await.map_err(|e| e.unsent(true))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = request
            .encode(id)
            .map_err(|err| Error::argument(format!("cannot encode the request: {err}")))?;
        let response = connection.request(id, bytes, self.request_timeout).await?;
        match read_reply(&response, id).and_then(decode) {
            // Not a server's answer (`unavailable` is one: the session is sound).
            Err(error) if error.kind() == crate::ErrorKind::Protocol => {
                // An undecodable reply: the session can no longer be trusted.
                connection.kill(error.clone());
                Err(error)
            }
            other => other,
        }
    }

    /// Adds a random idempotency key to a write when retries are on and the server honours
    /// keys, and refuses extension fields the server would silently ignore.
    async fn prepare_write(&self, mut write: Write) -> Result<Write> {
        write.validate()?;
        let needs_capabilities = write.idempotency_key.is_some()
            || write.expected_version.is_some()
            || self.inner.config.retry.attempts > 1;
        if !needs_capabilities {
            return Ok(write);
        }
        let connection = match self.connection().await {
            Ok(connection) => connection,
            // Let the call's own retry loop deal with connecting.
            Err(err) if err.is_retriable() => return Ok(write),
            Err(err) => return Err(err),
        };
        if write.idempotency_key.is_some() && !connection.has_capability(IDEMPOTENCY_KEY) {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                "server does not support idempotency keys",
            ));
        }
        if write.expected_version.is_some() && !connection.has_capability(EXPECTED_VERSION) {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                "server does not support expected versions",
            ));
        }
        if write.idempotency_key.is_none()
            && self.inner.config.retry.attempts > 1
            && connection.has_capability(IDEMPOTENCY_KEY)
        {
            write.idempotency_key = Some(random_key()?);
        }
        Ok(write)
    }

    fn written(&self, json: String) -> Written {
        if self.inner.config.verbose {
            Written { json }
        } else {
            Written::default()
        }
    }
}

/// Checks the reply's id, decodes it and turns an `error` member into a server error.
fn read_reply(response: &Response, id: u64) -> Result<Reply> {
    let root = response.get()?;
    if root.get_id() != id {
        return Err(Error::protocol(format!(
            "response id {} does not match request id {id}",
            root.get_id()
        )));
    }
    match Reply::decode(root.get_payload())
        .map_err(|err| Error::protocol(format!("undecodable reply: {err}")))?
    {
        Reply::Error(error) => Err(Error::server(error.code, error.message)),
        reply => Ok(reply),
    }
}

/// A reply of another member than the request's.
fn unexpected<T>(reply: &Reply) -> Result<T> {
    Err(Error::protocol(format!(
        "unexpected reply member '{}'",
        reply.name()
    )))
}

fn require_aggregate(aggregate_type: &str, aggregate_id: &str) -> Result<()> {
    if aggregate_type.trim().is_empty() || aggregate_id.trim().is_empty() {
        return Err(Error::argument(
            "aggregate_type and aggregate_id must be provided",
        ));
    }
    Ok(())
}

fn require_tenant(tenant_id: &str) -> Result<()> {
    if tenant_id.trim().is_empty() {
        return Err(Error::argument("tenant_id must be provided"));
    }
    Ok(())
}

/// A random idempotency key: 32 hex characters.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|err| Error::argument(format!("no system randomness: {err}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_answer_is_retried_for_reads_and_for_writes_with_or_without_a_key() {
        let unavailable = Error::server("unavailable", "unavailable: cannot reach the database");
        assert!(Safety::Repeatable.may_retry(&unavailable));
        assert!(Safety::Mutation { keyed: true }.may_retry(&unavailable));
        assert!(Safety::Mutation { keyed: false }.may_retry(&unavailable));
    }

    #[test]
    fn an_unknown_outcome_or_a_sent_write_is_not_retried_without_a_key() {
        let unknown = Error::server("storage", "storage error: the outcome is unknown");
        for safety in [
            Safety::Repeatable,
            Safety::Mutation { keyed: true },
            Safety::Mutation { keyed: false },
        ] {
            assert!(!safety.may_retry(&unknown), "{safety:?}");
        }
        let lost = Error::connection("connection reset");
        assert!(Safety::Repeatable.may_retry(&lost));
        assert!(Safety::Mutation { keyed: true }.may_retry(&lost));
        assert!(!Safety::Mutation { keyed: false }.may_retry(&lost));
        assert!(Safety::Mutation { keyed: false }.may_retry(&lost.unsent(true)));
    }
}
