//! Arguments and results of the operations.
//!
//! Results keep the JSON text exactly as the server sent it (`*_json` fields) and offer parsed
//! views (`serde_json::Value`) through methods.

use serde_json::Value;

use crate::error::{Error, Result};

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|err| Error::protocol(format!("invalid JSON in reply: {err}")))
}

fn parse_list(text: &str) -> Result<Vec<Value>> {
    match parse(text)? {
        Value::Array(items) => Ok(items),
        other => Err(Error::protocol(format!(
            "expected a JSON array in reply, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A plugin a write should be published to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTarget {
    /// Plugin name (non-empty).
    pub plugin: String,
    /// Payload mode (`all`, `event-only`, `state-only`, `schema-only`, `event-and-schema`,
    /// `extensions-only`, `async`); `None` = the plugin's configured mode.
    pub mode: Option<String>,
    /// `low`, `normal` or `high`; `None` = `normal`.
    pub priority: Option<String>,
}

impl PublishTarget {
    /// A target for `plugin` with its configured mode and normal priority.
    pub fn new(plugin: impl Into<String>) -> Self {
        PublishTarget {
            plugin: plugin.into(),
            mode: None,
            priority: None,
        }
    }

    /// Sets the payload mode.
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = Some(mode.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: impl Into<String>) -> Self {
        self.priority = Some(priority.into());
        self
    }
}

/// The kind of a write request (`create`, `apply`, `patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Create,
    Append,
    Patch,
}

/// A `create`, `apply` or `patch`: one event written to one aggregate.
///
/// ```
/// use eventdbx_client::Write;
///
/// let write = Write::apply("order", "o-1", "order_paid", r#"{"status":"paid"}"#)
///     .expected_version(1)
///     .note("paid by card")
///     .metadata_json(r#"{"@trace_id":"abc"}"#);
/// # let _ = write;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub(crate) kind: WriteKind,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) event_type: String,
    /// Payload JSON, or the RFC 6902 patch array for a patch.
    pub(crate) body_json: String,
    pub(crate) note: Option<String>,
    pub(crate) metadata_json: Option<String>,
    pub(crate) publish_targets: Option<Vec<PublishTarget>>,
    pub(crate) expected_version: Option<u64>,
    pub(crate) idempotency_key: Option<String>,
}

impl Write {
    fn new(
        kind: WriteKind,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        body_json: impl Into<String>,
    ) -> Self {
        Write {
            kind,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            body_json: body_json.into(),
            note: None,
            metadata_json: None,
            publish_targets: None,
            expected_version: None,
            idempotency_key: None,
        }
    }

    /// Creates an aggregate with its first event, atomically (`createAggregate`).
    pub fn create(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        payload_json: impl Into<String>,
    ) -> Self {
        Self::new(
            WriteKind::Create,
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        )
    }

    /// Appends an event (`appendEvent`; the server creates a missing aggregate).
    pub fn apply(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        payload_json: impl Into<String>,
    ) -> Self {
        Self::new(
            WriteKind::Append,
            aggregate_type,
            aggregate_id,
            event_type,
            payload_json,
        )
    }

    /// Applies RFC 6902 operations (a JSON array) to the aggregate's state (`patchEvent`).
    pub fn patch(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        event_type: impl Into<String>,
        patch_json: impl Into<String>,
    ) -> Self {
        Self::new(
            WriteKind::Patch,
            aggregate_type,
            aggregate_id,
            event_type,
            patch_json,
        )
    }

    /// A note stored with the event (at most 128 characters).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// A JSON object of extension keys (e.g. `{"@actor": "jane"}`).
    pub fn metadata_json(mut self, metadata_json: impl Into<String>) -> Self {
        self.metadata_json = Some(metadata_json.into());
        self
    }

    /// The plugins to publish to; an empty list means every enabled plugin.
    pub fn publish_targets(mut self, targets: Vec<PublishTarget>) -> Self {
        self.publish_targets = Some(targets);
        self
    }

    /// The version the aggregate must be at (`0` = must not exist); not for `create`.
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// A key (1–128 printable ASCII characters) that makes a repeated write apply once.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.aggregate_type.trim().is_empty()
            || self.aggregate_id.trim().is_empty()
            || self.event_type.trim().is_empty()
        {
            return Err(Error::argument(
                "aggregate_type, aggregate_id and event_type must be provided",
            ));
        }
        if self.kind == WriteKind::Create && self.expected_version.is_some() {
            return Err(Error::argument(
                "expected_version cannot be used when creating an aggregate",
            ));
        }
        if self.kind == WriteKind::Patch && self.body_json.trim().is_empty() {
            return Err(Error::argument("patches must contain at least one entry"));
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(Error::argument(
                    "idempotency_key must be 1-128 printable ASCII characters",
                ));
            }
        }
        for target in self.publish_targets.iter().flatten() {
            if target.plugin.trim().is_empty() {
                return Err(Error::argument("publish target plugin must be provided"));
            }
        }
        Ok(())
    }
}

/// The result of a mutation: the JSON the server stored (aggregate, event or snapshot).
///
/// Empty when the client runs with `verbose = false` or the server with
/// `verbose_responses = false`; that is an acknowledgement, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    /// The JSON text as the server sent it (`""` when none).
    pub json: String,
}

impl Written {
    /// True when there is no JSON (a bare acknowledgement).
    pub fn is_ack(&self) -> bool {
        self.json.is_empty()
    }

    /// The parsed JSON, or `None` for a bare acknowledgement.
    pub fn value(&self) -> Result<Option<Value>> {
        if self.json.is_empty() {
            return Ok(None);
        }
        parse(&self.json).map(Some)
    }
}

/// Parameters of `list` (`listAggregates`). Unset parameters are not sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Resume after this cursor.
    pub cursor: Option<String>,
    /// Page size (server default 10, capped at 1000).
    pub take: Option<u64>,
    /// Filter expression, e.g. `status = "active" AND total > 10`.
    pub filter: Option<String>,
    /// Sort, e.g. `created_at:desc,aggregate_id:asc`.
    pub sort: Option<String>,
    /// Active and archived aggregates.
    pub include_archived: Option<bool>,
    /// Archived aggregates only (wins over `include_archived`).
    pub archived_only: Option<bool>,
}

impl ListQuery {
    /// No filter, no sort, default page size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the cursor.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Sets the page size.
    pub fn take(mut self, take: u64) -> Self {
        self.take = Some(take);
        self
    }

    /// Sets the filter expression.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Sets the sort.
    pub fn sort(mut self, sort: impl Into<String>) -> Self {
        self.sort = Some(sort.into());
        self
    }

    /// Includes archived aggregates.
    pub fn include_archived(mut self, include: bool) -> Self {
        self.include_archived = Some(include);
        self
    }

    /// Lists archived aggregates only.
    pub fn archived_only(mut self, only: bool) -> Self {
        self.archived_only = Some(only);
        self
    }
}

/// Parameters of `events` (`listEvents`). Unset parameters are not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Resume after this cursor (`a:<type>:<id>:<version>`).
    pub cursor: Option<String>,
    /// Page size (server default and cap 1000).
    pub take: Option<u64>,
    /// Filter on event fields.
    pub filter: Option<String>,
}

impl EventsQuery {
    /// Every event of one aggregate.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        EventsQuery {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            cursor: None,
            take: None,
            filter: None,
        }
    }

    /// Sets the cursor.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Sets the page size.
    pub fn take(mut self, take: u64) -> Self {
        self.take = Some(take);
        self
    }

    /// Sets the filter expression.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }
}

/// A page of aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AggregatesPage {
    /// JSON array of aggregates, as sent.
    pub aggregates_json: String,
    /// Cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl AggregatesPage {
    /// True when there is a next page.
    pub fn has_next_cursor(&self) -> bool {
        self.next_cursor.is_some()
    }

    /// The aggregates, parsed.
    pub fn aggregates(&self) -> Result<Vec<Value>> {
        parse_list(&self.aggregates_json)
    }
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventsPage {
    /// JSON array of event envelopes, as sent.
    pub events_json: String,
    /// Cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Each event's position (`docs/subscriptions.md`), in the order of `events_json`; empty
    /// when the server sends none (EventDBX's own server). See [`EventsPage::position`].
    pub positions: Vec<Option<u64>>,
}

impl EventsPage {
    /// True when there is a next page.
    pub fn has_next_cursor(&self) -> bool {
        self.next_cursor.is_some()
    }

    /// The position of the `index`th event; `None` when the server sent none for it.
    pub fn position(&self, index: usize) -> Option<u64> {
        self.positions.get(index).copied().flatten()
    }

    /// The events, parsed.
    pub fn events(&self) -> Result<Vec<Value>> {
        parse_list(&self.events_json)
    }
}

/// A JSON document that may be absent (`get`, `select`, `get_snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// The JSON as sent; `None` when not found.
    pub json: Option<String>,
}

impl Found {
    /// True when the server found it.
    pub fn found(&self) -> bool {
        self.json.is_some()
    }

    /// The parsed JSON, or `None` when not found.
    pub fn value(&self) -> Result<Option<Value>> {
        self.json.as_deref().map(parse).transpose()
    }
}

/// A JSON array (`list_snapshots`, `list_referrers`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonList {
    /// The JSON array as sent.
    pub json: String,
}

impl JsonList {
    /// The items, parsed.
    pub fn items(&self) -> Result<Vec<Value>> {
        parse_list(&self.json)
    }
}

/// A page of the outbox (`read_outbox`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxPage {
    /// JSON array of events in ascending event id order, as sent.
    pub events_json: String,
    /// Checkpoint for the next call.
    pub next_after_event_id: Option<u64>,
    /// Each event's position, as in [`EventsPage::positions`].
    pub positions: Vec<Option<u64>>,
}

impl OutboxPage {
    /// The position of the `index`th event; `None` when the server sent none for it.
    pub fn position(&self, index: usize) -> Option<u64> {
        self.positions.get(index).copied().flatten()
    }

    /// The events, parsed.
    pub fn events(&self) -> Result<Vec<Value>> {
        parse_list(&self.events_json)
    }
}

/// Parameters of `list_snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotQuery {
    /// Only snapshots of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only snapshots of this aggregate id (needs the type).
    pub aggregate_id: Option<String>,
    /// Only snapshots at this version.
    pub version: Option<u64>,
}

/// Result of `tenant_assign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantAssignResult {
    /// The stored shard differed.
    pub changed: bool,
    /// The shard as stored.
    pub shard_id: String,
}

/// Result of `tenant_quota_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantQuotaResult {
    /// The quota changed.
    pub changed: bool,
    /// The quota in MB, `None` when there is none.
    pub quota_mb: Option<u64>,
}

impl TenantQuotaResult {
    /// True when a quota is set.
    pub fn has_quota(&self) -> bool {
        self.quota_mb.is_some()
    }
}

/// Parameters of `tenant_schema_publish`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaPublish {
    /// Tenant whose schemas to publish.
    pub tenant_id: String,
    /// Why (sent when set).
    pub reason: Option<String>,
    /// Who (sent when set).
    pub actor: Option<String>,
    /// Labels (sent when non-empty).
    pub labels: Vec<String>,
    /// Make the new version active.
    pub activate: bool,
    /// Publish even when identical to the latest version.
    pub force: bool,
    /// Reload the tenant afterwards.
    pub reload: bool,
}

impl SchemaPublish {
    /// Publishes the schemas of `tenant_id` with no options.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        SchemaPublish {
            tenant_id: tenant_id.into(),
            ..SchemaPublish::default()
        }
    }
}

/// Result of `tenant_schema_publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaPublishResult {
    /// The version id (new, or the latest when skipped).
    pub version_id: String,
    /// The version is now active.
    pub activated: bool,
    /// Nothing was published (identical to the latest version).
    pub skipped: bool,
}

/// Result of `tenant_schema_activate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaActivateResult {
    /// The version asked for.
    pub version_id: String,
    /// False when it was already the active, installed schema set (nothing changed).
    pub activated: bool,
    /// The audit action recorded: `activate`, or `rollback` for a version older than the
    /// active one.
    pub action: String,
}

/// The positions of an event page as the client reports them: the wire's 0 (an event without
/// one) becomes `None`, and a server that sends none gives an empty list.
pub(crate) fn page_positions(wire: Option<Vec<u64>>) -> Vec<Option<u64>> {
    wire.unwrap_or_default()
        .into_iter()
        .map(|p| (p != 0).then_some(p))
        .collect()
}
