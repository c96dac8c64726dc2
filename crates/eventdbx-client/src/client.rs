//! The async client: one connection, reopened lazily, every operation of the control protocol.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::message;
use eventdbx_proto::noise::v2::Fingerprint;
use eventdbx_proto::schema::control_capnp::{control_request, control_response};
use eventdbx_proto::ProtoError;

use crate::config::ClientConfig;
use crate::connection::{Connection, Protocol, Response};
use crate::error::{Error, Result};
use crate::types::{
    AggregatesPage, EventsPage, EventsQuery, Found, JsonList, ListQuery, OutboxPage, PublishTarget,
    SchemaActivateResult, SchemaPublish, SchemaPublishResult, SnapshotQuery, TenantAssignResult,
    TenantQuotaResult, Write, WriteKind, Written,
};

type RequestPayload<'a> = control_request::payload::Builder<'a>;
type ResponsePayload<'a> = control_response::payload::WhichReader<'a>;

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

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    token: String,
    next_id: AtomicU64,
    closed: AtomicBool,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The transport the first connection settled on; reconnects use exactly this one.
    negotiated: std::sync::OnceLock<Protocol>,
}

impl Client {
    /// Connects and performs the handshake, retrying per the configuration's [`RetryOptions`].
    ///
    /// [`RetryOptions`]: crate::RetryOptions
    pub async fn connect(config: ClientConfig) -> Result<Client> {
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
        let connection = Arc::new(Connection::open(&self.inner.config, negotiated).await?);
        let _ = self.inner.negotiated.set(connection.protocol());
        if self.is_closed() {
            connection.kill(Error::closed());
            return Err(Error::closed());
        }
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Sends one request (a fresh id per attempt) and decodes its reply, retrying per `safety`.
    async fn call<T>(
        &self,
        safety: Safety,
        build: impl for<'a> Fn(RequestPayload<'a>, &str) -> std::result::Result<(), ProtoError>,
        decode: impl for<'a> Fn(ResponsePayload<'a>) -> Result<T>,
    ) -> Result<T> {
        let retry_options = self.inner.config.retry;
        let mut retry = 0;
        loop {
            let result = self.attempt(&build, &decode).await;
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let allowed = error.is_retriable()
                && match safety {
                    Safety::Repeatable => true,
                    Safety::Mutation { keyed } => keyed || error.was_unsent(),
                };
            if !allowed || retry + 1 >= retry_options.attempts || self.is_closed() {
                return Err(error);
            }
            retry += 1;
            tracing::debug!(error = %error, retry, "request failed; retrying on a new connection");
            tokio::time::sleep(retry_options.delay(retry)).await;
        }
    }

    async fn attempt<T>(
        &self,
        build: &impl for<'a> Fn(RequestPayload<'a>, &str) -> std::result::Result<(), ProtoError>,
        decode: &impl for<'a> Fn(ResponsePayload<'a>) -> Result<T>,
    ) -> Result<T> {
        let connection = self.connection().await.map_err(|e| e.unsent(true))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let token = self.inner.token.as_str();
        let bytes = message::encode_request(|mut request| {
            request.set_id(id);
            build(request.init_payload(), token)
        })
        .map_err(|err| Error::argument(format!("cannot encode the request: {err}")))?;
        let response = connection.request(id, bytes, self.request_timeout).await?;
        match read_reply(&response, id, decode) {
            Err(error) if error.is_retriable() => {
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

    // ---- mutations ------------------------------------------------------------------------

    /// Writes one event: [`Write::create`], [`Write::apply`] or [`Write::patch`].
    ///
    /// Returns the aggregate (create) or the event (apply, patch) the server stored.
    pub async fn write(&self, write: Write) -> Result<Written> {
        let write = self.prepare_write(write).await?;
        let safety = Safety::Mutation {
            keyed: write.idempotency_key.is_some(),
        };
        let json = self
            .call(
                safety,
                |payload, token| build_write(payload, token, &write),
                |which| match (write.kind, which) {
                    (WriteKind::Create, control_response::payload::CreateAggregate(r)) => {
                        text(r?.get_aggregate_json())
                    }
                    (
                        WriteKind::Append | WriteKind::Patch,
                        control_response::payload::AppendEvent(r),
                    ) => text(r?.get_event_json()),
                    (_, other) => unexpected(&other),
                },
            )
            .await?;
        Ok(self.written(json))
    }

    /// Creates an aggregate with its first event (shorthand for [`Write::create`]).
    pub async fn create(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        self.write(Write::create(
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        ))
        .await
    }

    /// Appends an event (shorthand for [`Write::apply`]).
    pub async fn apply(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Written> {
        self.write(Write::apply(
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        ))
        .await
    }

    /// Applies RFC 6902 operations (shorthand for [`Write::patch`]).
    pub async fn patch(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        patch_json: &str,
    ) -> Result<Written> {
        self.write(Write::patch(
            aggregate_type,
            aggregate_id,
            event_type,
            patch_json,
        ))
        .await
    }

    /// Archives an aggregate (read-only, history kept). Returns the aggregate.
    pub async fn archive(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        self.set_archived(aggregate_type, aggregate_id, true, note, None)
            .await
    }

    /// [`Client::archive`] with publish targets (ours; EventDBX ignores them): the plugins get
    /// the aggregate after the archive and `"action": "archive"`. An empty list broadcasts, as
    /// for writes.
    pub async fn archive_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[PublishTarget],
    ) -> Result<Written> {
        self.set_archived(
            aggregate_type,
            aggregate_id,
            true,
            note,
            Some(publish_targets),
        )
        .await
    }

    /// [`Client::restore`] with publish targets (ours); see [`Client::archive_with`].
    pub async fn restore_with(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
        publish_targets: &[PublishTarget],
    ) -> Result<Written> {
        self.set_archived(
            aggregate_type,
            aggregate_id,
            false,
            note,
            Some(publish_targets),
        )
        .await
    }

    /// Restores an archived aggregate. Returns the aggregate.
    pub async fn restore(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        note: Option<&str>,
    ) -> Result<Written> {
        self.set_archived(aggregate_type, aggregate_id, false, note, None)
            .await
    }

    async fn set_archived(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        archived: bool,
        note: Option<&str>,
        publish_targets: Option<&[PublishTarget]>,
    ) -> Result<Written> {
        require_aggregate(aggregate_type, aggregate_id)?;
        for target in publish_targets.unwrap_or_default() {
            if target.plugin.trim().is_empty() {
                return Err(Error::argument("publish target plugin cannot be empty"));
            }
        }
        let json = self
            .call(
                Safety::Repeatable,
                |payload, token| {
                    let mut r = payload.init_set_aggregate_archive();
                    r.set_token(token);
                    r.set_aggregate_type(aggregate_type);
                    r.set_aggregate_id(aggregate_id);
                    r.set_archived(archived);
                    if let Some(note) = note {
                        r.set_note(note);
                        r.set_has_note(true);
                    }
                    if let Some(targets) = publish_targets {
                        r.set_has_publish_targets(true);
                        let count = u32::try_from(targets.len()).map_err(|_| {
                            ProtoError::InvalidUse("too many publish targets".into())
                        })?;
                        let mut list = r.reborrow().init_publish_targets(count);
                        for (index, target) in (0..count).zip(targets) {
                            let mut entry = list.reborrow().get(index);
                            entry.set_plugin(target.plugin.as_str());
                            if let Some(mode) = &target.mode {
                                entry.set_mode(mode.as_str());
                                entry.set_has_mode(true);
                            }
                            if let Some(priority) = &target.priority {
                                entry.set_priority(priority.as_str());
                                entry.set_has_priority(true);
                            }
                        }
                    }
                    Ok(())
                },
                |which| match which {
                    control_response::payload::SetAggregateArchive(r) => {
                        text(r?.get_aggregate_json())
                    }
                    other => unexpected(&other),
                },
            )
            .await?;
        Ok(self.written(json))
    }

    /// Takes a snapshot of an aggregate's current state. The snapshot JSON is always returned.
    pub async fn create_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        comment: Option<&str>,
    ) -> Result<Written> {
        require_aggregate(aggregate_type, aggregate_id)?;
        let json = self
            .call(
                Safety::Mutation { keyed: false },
                |payload, token| {
                    let mut r = payload.init_create_snapshot();
                    r.set_token(token);
                    r.set_aggregate_type(aggregate_type);
                    r.set_aggregate_id(aggregate_id);
                    if let Some(comment) = comment {
                        r.set_comment(comment);
                        r.set_has_comment(true);
                    }
                    Ok(())
                },
                |which| match which {
                    control_response::payload::CreateSnapshot(r) => text(r?.get_snapshot_json()),
                    other => unexpected(&other),
                },
            )
            .await?;
        Ok(self.written(json))
    }

    // ---- reads ----------------------------------------------------------------------------

    /// One aggregate's current state.
    pub async fn get(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Found> {
        require_aggregate(aggregate_type, aggregate_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_get_aggregate();
                r.set_token(token);
                r.set_aggregate_type(aggregate_type);
                r.set_aggregate_id(aggregate_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::GetAggregate(r) => {
                    let r = r?;
                    found(r.get_found(), r.get_aggregate_json())
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Selected fields of one aggregate (`payload.<path>`, `metadata.<key>` or a state path).
    pub async fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        fields: &[&str],
    ) -> Result<Found> {
        require_aggregate(aggregate_type, aggregate_id)?;
        if fields.is_empty() {
            return Err(Error::argument("fields must contain at least one entry"));
        }
        let count = u32::try_from(fields.len()).map_err(|_| Error::argument("too many fields"))?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_select_aggregate();
                r.set_token(token);
                r.set_aggregate_type(aggregate_type);
                r.set_aggregate_id(aggregate_id);
                let mut list = r.init_fields(count);
                for (index, field) in (0..count).zip(fields) {
                    list.set(index, *field);
                }
                Ok(())
            },
            |which| match which {
                control_response::payload::SelectAggregate(r) => {
                    let r = r?;
                    found(r.get_found(), r.get_selection_json())
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// One page of aggregates.
    pub async fn list(&self, query: &ListQuery) -> Result<AggregatesPage> {
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_list_aggregates();
                r.set_token(token);
                if let Some(cursor) = &query.cursor {
                    r.set_cursor(cursor.as_str());
                    r.set_has_cursor(true);
                }
                if let Some(take) = query.take {
                    r.set_take(take);
                    r.set_has_take(true);
                }
                if let Some(filter) = &query.filter {
                    r.set_filter(filter.as_str());
                    r.set_has_filter(true);
                }
                if let Some(sort) = query.sort.as_deref().map(str::trim) {
                    if !sort.is_empty() {
                        r.set_sort(sort);
                        r.set_has_sort(true);
                    }
                }
                if let Some(include) = query.include_archived {
                    r.set_include_archived(include);
                }
                if let Some(only) = query.archived_only {
                    r.set_archived_only(only);
                }
                Ok(())
            },
            |which| match which {
                control_response::payload::ListAggregates(r) => {
                    let r = r?;
                    Ok(AggregatesPage {
                        aggregates_json: text(r.get_aggregates_json())?,
                        next_cursor: cursor(r.get_has_next_cursor(), r.get_next_cursor())?,
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Pages of aggregates that follow the cursors; the filter, sort and archive flags are
    /// repeated on every page.
    pub fn list_pages(&self, query: ListQuery) -> AggregatePages {
        AggregatePages {
            client: self.clone(),
            query,
            done: false,
        }
    }

    /// One page of an aggregate's events, in version order.
    pub async fn events(&self, query: &EventsQuery) -> Result<EventsPage> {
        require_aggregate(&query.aggregate_type, &query.aggregate_id)?;
        if query.filter.is_some() {
            if let Some(connection) = self.live().await {
                if !connection.has_capability(EVENTS_FILTER) {
                    tracing::warn!("the server ignores filter expressions for events");
                }
            }
        }
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_list_events();
                r.set_token(token);
                r.set_aggregate_type(query.aggregate_type.as_str());
                r.set_aggregate_id(query.aggregate_id.as_str());
                if let Some(cursor) = &query.cursor {
                    r.set_cursor(cursor.as_str());
                    r.set_has_cursor(true);
                }
                if let Some(take) = query.take {
                    r.set_take(take);
                    r.set_has_take(true);
                }
                if let Some(filter) = &query.filter {
                    r.set_filter(filter.as_str());
                    r.set_has_filter(true);
                }
                Ok(())
            },
            |which| match which {
                control_response::payload::ListEvents(r) => {
                    let r = r?;
                    Ok(EventsPage {
                        events_json: text(r.get_events_json())?,
                        next_cursor: cursor(r.get_has_next_cursor(), r.get_next_cursor())?,
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Pages of events that follow the cursors.
    pub fn event_pages(&self, query: EventsQuery) -> EventPages {
        EventPages {
            client: self.clone(),
            query,
            done: false,
        }
    }

    /// Recomputes an aggregate's Merkle root from its stored events (64 hex characters).
    pub async fn verify(&self, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        require_aggregate(aggregate_type, aggregate_id)?;
        self.call(
            Safety::Repeatable,
            |payload, _| {
                let mut r = payload.init_verify_aggregate();
                r.set_aggregate_type(aggregate_type);
                r.set_aggregate_id(aggregate_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::VerifyAggregate(r) => text(r?.get_merkle_root()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// The aggregates that reference this one: `[{aggregate_type, aggregate_id, path}]`.
    pub async fn list_referrers(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<JsonList> {
        require_aggregate(aggregate_type, aggregate_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_list_referrers();
                r.set_token(token);
                r.set_aggregate_type(aggregate_type);
                r.set_aggregate_id(aggregate_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::ListReferrers(r) => Ok(JsonList {
                    json: text(r?.get_referrers_json())?,
                }),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Plugin and queue administration (ours, request `admin` @24): `action` such as
    /// `plugin.list`, `plugin.add`, `queue.list`, `queue.retry`; `args` a JSON object. Needs a
    /// root/admin token. Returns the action's JSON result.
    pub async fn admin(&self, action: &str, args: &serde_json::Value) -> Result<serde_json::Value> {
        let args = args.to_string();
        let safety = if action.ends_with(".list") {
            Safety::Repeatable
        } else {
            Safety::Mutation { keyed: false }
        };
        let result = self
            .call(
                safety,
                |payload, token| {
                    let mut r = payload.init_admin();
                    r.set_token(token);
                    r.set_action(action);
                    r.set_args_json(args.as_str());
                    Ok(())
                },
                |which| match which {
                    control_response::payload::Admin(r) => text(r?.get_result_json()),
                    other => unexpected(&other),
                },
            )
            .await;
        match result {
            Ok(json) => serde_json::from_str(&json)
                .map_err(|err| Error::protocol(format!("admin reply is not JSON: {err}"))),
            Err(err) if err.code() == "serialization" => Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("server does not support admin ({})", err.message()),
            )),
            Err(err) => Err(err),
        }
    }

    /// Events of the tenant's outbox after `after_event_id`, in event id order.
    pub async fn read_outbox(
        &self,
        after_event_id: Option<u64>,
        take: Option<u64>,
    ) -> Result<OutboxPage> {
        let page = self
            .call(
                Safety::Repeatable,
                |payload, token| {
                    let mut r = payload.init_read_outbox();
                    r.set_token(token);
                    if let Some(after) = after_event_id {
                        r.set_after_event_id(after);
                        r.set_has_after_event_id(true);
                    }
                    if let Some(take) = take {
                        r.set_take(take);
                        r.set_has_take(true);
                    }
                    Ok(())
                },
                |which| match which {
                    control_response::payload::ReadOutbox(r) => {
                        let r = r?;
                        Ok(OutboxPage {
                            events_json: text(r.get_events_json())?,
                            next_after_event_id: r
                                .get_has_next_after_event_id()
                                .then(|| r.get_next_after_event_id()),
                        })
                    }
                    other => unexpected(&other),
                },
            )
            .await;
        match page {
            // EventDBX 3.19 does not know the request and answers `serialization`.
            Err(err) if err.code() == "serialization" => Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("server does not support readOutbox ({})", err.message()),
            )),
            other => other,
        }
    }

    /// Snapshots, optionally filtered (not paged).
    pub async fn list_snapshots(&self, query: &SnapshotQuery) -> Result<JsonList> {
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_list_snapshots();
                r.set_token(token);
                if let Some(t) = query.aggregate_type.as_deref().filter(|t| !t.is_empty()) {
                    r.set_aggregate_type(t);
                    r.set_has_aggregate_type(true);
                }
                if let Some(id) = query.aggregate_id.as_deref().filter(|id| !id.is_empty()) {
                    r.set_aggregate_id(id);
                    r.set_has_aggregate_id(true);
                }
                if let Some(version) = query.version {
                    r.set_version(version);
                    r.set_has_version(true);
                }
                Ok(())
            },
            |which| match which {
                control_response::payload::ListSnapshots(r) => Ok(JsonList {
                    json: text(r?.get_snapshots_json())?,
                }),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// One snapshot by id (the decimal `snapshot_id` of its JSON).
    pub async fn get_snapshot(&self, snapshot_id: u64) -> Result<Found> {
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_get_snapshot();
                r.set_token(token);
                r.set_snapshot_id(snapshot_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::GetSnapshot(r) => {
                    let r = r?;
                    found(r.get_found(), r.get_snapshot_json())
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    // ---- schemas and tenants --------------------------------------------------------------

    /// The tenant's schema map (JSON object keyed by aggregate type).
    pub async fn list_schemas(&self) -> Result<String> {
        self.call(
            Safety::Repeatable,
            |payload, token| {
                payload.init_list_schemas().set_token(token);
                Ok(())
            },
            |which| match which {
                control_response::payload::ListSchemas(r) => text(r?.get_schemas_json()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Replaces the tenant's whole schema map; returns the number of schemas in the new set.
    pub async fn replace_schemas(&self, schemas_json: &str) -> Result<u32> {
        if schemas_json.trim().is_empty() {
            return Err(Error::argument("schemas_json must be provided"));
        }
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_replace_schemas();
                r.set_token(token);
                r.set_schemas_json(schemas_json);
                Ok(())
            },
            |which| match which {
                control_response::payload::ReplaceSchemas(r) => Ok(r?.get_replaced()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Places a tenant on a shard.
    pub async fn tenant_assign(
        &self,
        tenant_id: &str,
        shard_id: &str,
    ) -> Result<TenantAssignResult> {
        if tenant_id.trim().is_empty() || shard_id.trim().is_empty() {
            return Err(Error::argument("tenant_id and shard_id must be provided"));
        }
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_assign();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                r.set_shard_id(shard_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantAssign(r) => {
                    let r = r?;
                    Ok(TenantAssignResult {
                        changed: r.get_changed(),
                        shard_id: text(r.get_shard_id())?,
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Removes a tenant's explicit shard placement; true when one existed.
    pub async fn tenant_unassign(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_unassign();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantUnassign(r) => Ok(r?.get_changed()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Sets a tenant's storage quota in MB.
    pub async fn tenant_quota_set(
        &self,
        tenant_id: &str,
        max_storage_mb: u64,
    ) -> Result<TenantQuotaResult> {
        require_tenant(tenant_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_quota_set();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                r.set_max_storage_mb(max_storage_mb);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantQuotaSet(r) => {
                    let r = r?;
                    Ok(TenantQuotaResult {
                        changed: r.get_changed(),
                        quota_mb: r.get_has_quota().then(|| r.get_quota_mb()),
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Clears a tenant's quota; true when one existed.
    pub async fn tenant_quota_clear(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_quota_clear();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantQuotaClear(r) => Ok(r?.get_changed()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Recomputes a tenant's storage use; returns bytes.
    pub async fn tenant_quota_recalc(&self, tenant_id: &str) -> Result<u64> {
        require_tenant(tenant_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_quota_recalc();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantQuotaRecalc(r) => Ok(r?.get_storage_bytes()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Reloads a tenant's cached metadata; true when it was reloaded.
    pub async fn tenant_reload(&self, tenant_id: &str) -> Result<bool> {
        require_tenant(tenant_id)?;
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_reload();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantReload(r) => Ok(r?.get_reloaded()),
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Publishes a tenant's schemas as a new version.
    pub async fn tenant_schema_publish(
        &self,
        publish: &SchemaPublish,
    ) -> Result<SchemaPublishResult> {
        require_tenant(&publish.tenant_id)?;
        let labels =
            u32::try_from(publish.labels.len()).map_err(|_| Error::argument("too many labels"))?;
        self.call(
            Safety::Mutation { keyed: false },
            |payload, token| {
                let mut r = payload.init_tenant_schema_publish();
                r.set_token(token);
                r.set_tenant_id(publish.tenant_id.as_str());
                if let Some(reason) = &publish.reason {
                    r.set_reason(reason.as_str());
                    r.set_has_reason(true);
                }
                if let Some(actor) = &publish.actor {
                    r.set_actor(actor.as_str());
                    r.set_has_actor(true);
                }
                if labels > 0 {
                    let mut list = r.reborrow().init_labels(labels);
                    for (index, label) in (0..labels).zip(&publish.labels) {
                        list.set(index, label.as_str());
                    }
                }
                r.set_activate(publish.activate);
                r.set_force(publish.force);
                r.set_reload(publish.reload);
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantSchemaPublish(r) => {
                    let r = r?;
                    Ok(SchemaPublishResult {
                        version_id: text(r.get_version_id())?,
                        activated: r.get_activated(),
                        skipped: r.get_skipped(),
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }

    /// Every tenant known to the server that the token may administer, as JSON objects
    /// `{tenant_id, shard_id, assigned, quota_mb, events, storage_bytes, active_version,
    /// versions}` (ours; needs `tenant.manage`).
    pub async fn tenant_list(&self) -> Result<Vec<serde_json::Value>> {
        let json = self
            .call(
                Safety::Repeatable,
                |payload, token| {
                    payload.init_tenant_list().set_token(token);
                    Ok(())
                },
                |which| match which {
                    control_response::payload::TenantList(r) => text(r?.get_tenants_json()),
                    other => unexpected(&other),
                },
            )
            .await?;
        serde_json::from_str(&json)
            .map_err(|err| Error::protocol(format!("tenantList returned invalid JSON: {err}")))
    }

    /// The tenant's schema-version manifest: `{manifest_version, active_version, versions,
    /// audit_log}` (ours; needs `tenant.manage`).
    pub async fn tenant_schema_history(&self, tenant_id: &str) -> Result<serde_json::Value> {
        require_tenant(tenant_id)?;
        let json = self
            .call(
                Safety::Repeatable,
                |payload, token| {
                    let mut r = payload.init_tenant_schema_history();
                    r.set_token(token);
                    r.set_tenant_id(tenant_id);
                    Ok(())
                },
                |which| match which {
                    control_response::payload::TenantSchemaHistory(r) => {
                        text(r?.get_manifest_json())
                    }
                    other => unexpected(&other),
                },
            )
            .await?;
        serde_json::from_str(&json).map_err(|err| {
            Error::protocol(format!("tenantSchemaHistory returned invalid JSON: {err}"))
        })
    }

    /// Makes a published schema version the tenant's active schema set again (ours).
    /// Activating the active version again changes nothing, so the call is safe to retry.
    pub async fn tenant_schema_activate(
        &self,
        tenant_id: &str,
        version_id: &str,
        reason: Option<&str>,
        actor: Option<&str>,
    ) -> Result<SchemaActivateResult> {
        require_tenant(tenant_id)?;
        if version_id.trim().is_empty() {
            return Err(Error::argument("version_id must be provided"));
        }
        self.call(
            Safety::Repeatable,
            |payload, token| {
                let mut r = payload.init_tenant_schema_activate();
                r.set_token(token);
                r.set_tenant_id(tenant_id);
                r.set_version_id(version_id);
                if let Some(reason) = reason {
                    r.set_reason(reason);
                    r.set_has_reason(true);
                }
                if let Some(actor) = actor {
                    r.set_actor(actor);
                    r.set_has_actor(true);
                }
                Ok(())
            },
            |which| match which {
                control_response::payload::TenantSchemaActivate(r) => {
                    let r = r?;
                    Ok(SchemaActivateResult {
                        version_id: text(r.get_version_id())?,
                        activated: r.get_activated(),
                        action: text(r.get_action())?,
                    })
                }
                other => unexpected(&other),
            },
        )
        .await
    }
}

/// Pages of aggregates (see [`Client::list_pages`]).
#[derive(Debug)]
pub struct AggregatePages {
    client: Client,
    query: ListQuery,
    done: bool,
}

impl AggregatePages {
    /// The next page, or `None` after the last one. After an error the same page can be asked
    /// for again.
    pub async fn next_page(&mut self) -> Result<Option<AggregatesPage>> {
        if self.done {
            return Ok(None);
        }
        let page = self.client.list(&self.query).await?;
        match &page.next_cursor {
            Some(cursor) => self.query.cursor = Some(cursor.clone()),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

/// Pages of events (see [`Client::event_pages`]).
#[derive(Debug)]
pub struct EventPages {
    client: Client,
    query: EventsQuery,
    done: bool,
}

impl EventPages {
    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<EventsPage>> {
        if self.done {
            return Ok(None);
        }
        let page = self.client.events(&self.query).await?;
        match &page.next_cursor {
            Some(cursor) => self.query.cursor = Some(cursor.clone()),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

// ---- encoding and decoding helpers -------------------------------------------------------

macro_rules! fill_write {
    ($r:ident, $token:expr, $write:expr, $set_body:ident) => {{
        let write: &Write = $write;
        $r.set_token($token);
        $r.set_aggregate_type(write.aggregate_type.as_str());
        $r.set_aggregate_id(write.aggregate_id.as_str());
        $r.set_event_type(write.event_type.as_str());
        $r.$set_body(write.body_json.as_str());
        if let Some(note) = &write.note {
            $r.set_note(note.as_str());
            $r.set_has_note(true);
        }
        if let Some(metadata) = &write.metadata_json {
            $r.set_metadata_json(metadata.as_str());
            $r.set_has_metadata(true);
        }
        if let Some(version) = write.expected_version {
            $r.set_expected_version(version);
            $r.set_has_expected_version(true);
        }
        if let Some(key) = &write.idempotency_key {
            $r.set_idempotency_key(key.as_str());
        }
        if let Some(targets) = &write.publish_targets {
            $r.set_has_publish_targets(true);
            let count = u32::try_from(targets.len())
                .map_err(|_| ProtoError::InvalidUse("too many publish targets".into()))?;
            let mut list = $r.reborrow().init_publish_targets(count);
            for (index, target) in (0..count).zip(targets) {
                let mut entry = list.reborrow().get(index);
                entry.set_plugin(target.plugin.as_str());
                if let Some(mode) = &target.mode {
                    entry.set_mode(mode.as_str());
                    entry.set_has_mode(true);
                }
                if let Some(priority) = &target.priority {
                    entry.set_priority(priority.as_str());
                    entry.set_has_priority(true);
                }
            }
        }
    }};
}

fn build_write(
    payload: RequestPayload<'_>,
    token: &str,
    write: &Write,
) -> std::result::Result<(), ProtoError> {
    match write.kind {
        WriteKind::Create => {
            let mut r = payload.init_create_aggregate();
            fill_write!(r, token, write, set_payload_json);
        }
        WriteKind::Append => {
            let mut r = payload.init_append_event();
            fill_write!(r, token, write, set_payload_json);
        }
        WriteKind::Patch => {
            let mut r = payload.init_patch_event();
            fill_write!(r, token, write, set_patch_json);
        }
    }
    Ok(())
}

/// Checks the reply's id and turns an `error` member into a server error.
fn read_reply<T>(
    response: &Response,
    id: u64,
    decode: &impl for<'a> Fn(ResponsePayload<'a>) -> Result<T>,
) -> Result<T> {
    let root = response.get()?;
    if root.get_id() != id {
        return Err(Error::protocol(format!(
            "response id {} does not match request id {id}",
            root.get_id()
        )));
    }
    match root.get_payload().which()? {
        control_response::payload::Error(error) => {
            let error = error?;
            Err(Error::server(
                error.get_code()?.to_str()?,
                error.get_message()?.to_str()?,
            ))
        }
        which => decode(which),
    }
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String> {
    Ok(reader?.to_str()?.to_owned())
}

fn found(is_found: bool, json: capnp::Result<capnp::text::Reader<'_>>) -> Result<Found> {
    Ok(Found {
        json: if is_found { Some(text(json)?) } else { None },
    })
}

fn cursor(has: bool, reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<Option<String>> {
    if !has {
        return Ok(None);
    }
    Ok(Some(text(reader)?).filter(|c| !c.is_empty()))
}

fn unexpected<T>(which: &ResponsePayload<'_>) -> Result<T> {
    let member = match which {
        control_response::payload::ListAggregates(_) => "listAggregates",
        control_response::payload::GetAggregate(_) => "getAggregate",
        control_response::payload::ListEvents(_) => "listEvents",
        control_response::payload::AppendEvent(_) => "appendEvent",
        control_response::payload::VerifyAggregate(_) => "verifyAggregate",
        control_response::payload::SelectAggregate(_) => "selectAggregate",
        control_response::payload::Error(_) => "error",
        control_response::payload::CreateAggregate(_) => "createAggregate",
        control_response::payload::SetAggregateArchive(_) => "setAggregateArchive",
        control_response::payload::ListSchemas(_) => "listSchemas",
        control_response::payload::ReplaceSchemas(_) => "replaceSchemas",
        control_response::payload::TenantAssign(_) => "tenantAssign",
        control_response::payload::TenantUnassign(_) => "tenantUnassign",
        control_response::payload::TenantQuotaSet(_) => "tenantQuotaSet",
        control_response::payload::TenantQuotaClear(_) => "tenantQuotaClear",
        control_response::payload::TenantQuotaRecalc(_) => "tenantQuotaRecalc",
        control_response::payload::TenantReload(_) => "tenantReload",
        control_response::payload::TenantSchemaPublish(_) => "tenantSchemaPublish",
        control_response::payload::CreateSnapshot(_) => "createSnapshot",
        control_response::payload::ListSnapshots(_) => "listSnapshots",
        control_response::payload::GetSnapshot(_) => "getSnapshot",
        control_response::payload::ListReferrers(_) => "listReferrers",
        control_response::payload::ReadOutbox(_) => "readOutbox",
        control_response::payload::TenantList(_) => "tenantList",
        control_response::payload::TenantSchemaHistory(_) => "tenantSchemaHistory",
        control_response::payload::TenantSchemaActivate(_) => "tenantSchemaActivate",
        control_response::payload::Admin(_) => "admin",
    };
    Err(Error::protocol(format!(
        "unexpected reply member '{member}'"
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
