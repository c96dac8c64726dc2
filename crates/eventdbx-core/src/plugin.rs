//! Plugins and publish targets without I/O (`docs/plugins.md`): payload modes, priorities,
//! routing a write's publish targets, the job record of the durable plugin queue, the retry
//! schedule, and the JSON body a job delivers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::merkle::Event;
use crate::CoreError;

/// What a job delivers (`docs/plugins.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadMode {
    /// Event, state and schema (when the aggregate has one).
    #[default]
    All,
    /// The event record only.
    EventOnly,
    /// The aggregate state only.
    StateOnly,
    /// The schema only.
    SchemaOnly,
    /// Event and schema.
    EventAndSchema,
    /// The event with `payload` set to `null` (its extensions kept).
    ExtensionsOnly,
}

impl PayloadMode {
    /// Every mode, in the spec's order.
    pub const ALL: [PayloadMode; 6] = [
        PayloadMode::All,
        PayloadMode::EventOnly,
        PayloadMode::StateOnly,
        PayloadMode::SchemaOnly,
        PayloadMode::EventAndSchema,
        PayloadMode::ExtensionsOnly,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadMode::All => "all",
            PayloadMode::EventOnly => "event-only",
            PayloadMode::StateOnly => "state-only",
            PayloadMode::SchemaOnly => "schema-only",
            PayloadMode::EventAndSchema => "event-and-schema",
            PayloadMode::ExtensionsOnly => "extensions-only",
        }
    }

    /// Parses a mode, case-insensitively and trimmed; `None` for an unknown name (`async` is
    /// not a mode of its own: see [`TargetMode`]).
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|m| m.as_str() == lower)
    }

    /// Whether the job carries the event record.
    pub fn has_event(self) -> bool {
        matches!(
            self,
            PayloadMode::All
                | PayloadMode::EventOnly
                | PayloadMode::EventAndSchema
                | PayloadMode::ExtensionsOnly
        )
    }

    /// Whether the job carries the aggregate state.
    pub fn has_state(self) -> bool {
        matches!(self, PayloadMode::All | PayloadMode::StateOnly)
    }

    /// Whether the job carries the schema (when the aggregate has one).
    pub fn has_schema(self) -> bool {
        matches!(
            self,
            PayloadMode::All | PayloadMode::SchemaOnly | PayloadMode::EventAndSchema
        )
    }
}

/// Job priority among one plugin's pending jobs: high before normal before low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Delivered last.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Delivered first.
    High,
}

impl Priority {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Parses a priority, case-insensitively and trimmed.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    /// Sort rank in the queue: 0 for high, 1 normal, 2 low.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// A target's mode as sent: a payload mode, or `async` / absent for the plugin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetMode {
    /// The plugin's configured mode (`async`, or no mode).
    Configured,
    /// This mode.
    Mode(PayloadMode),
}

/// A publish target as the request carries it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishTarget {
    /// Plugin name (trimmed and matched case-insensitively).
    pub plugin: String,
    /// Mode text, when given.
    pub mode: Option<String>,
    /// Priority text, when given.
    pub priority: Option<String>,
}

/// A plugin as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutablePlugin {
    /// Its identifier (the name, or the kind when unnamed).
    pub id: String,
    /// Loaded; a disabled plugin counts as not configured.
    pub enabled: bool,
    /// Receives broadcasts and may be named as a target.
    pub emit_events: bool,
    /// Its configured payload mode.
    pub mode: PayloadMode,
}

/// One job a write produces: which plugin, in what mode, at what priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The plugin's identifier as configured.
    pub plugin: String,
    /// The resolved payload mode.
    pub mode: PayloadMode,
    /// The priority.
    pub priority: Priority,
}

/// Decodes targets without looking at plugins: blank names, unknown modes and priorities are
/// refused with EventDBX's messages.
pub fn parse_target(target: &PublishTarget) -> Result<(String, TargetMode, Priority), CoreError> {
    let plugin = target.plugin.trim();
    if plugin.is_empty() {
        return Err(CoreError::invalid("publish target plugin cannot be empty"));
    }
    let mode =
        match &target.mode {
            None => TargetMode::Configured,
            Some(text) => {
                let lower = text.trim().to_ascii_lowercase();
                if lower == "async" {
                    TargetMode::Configured
                } else {
                    TargetMode::Mode(PayloadMode::parse(&lower).ok_or_else(|| {
                        CoreError::invalid(format!("invalid publish mode '{lower}'"))
                    })?)
                }
            }
        };
    let priority = match &target.priority {
        None => Priority::Normal,
        Some(text) => Priority::parse(text)
            .ok_or_else(|| CoreError::invalid(format!("invalid publish priority '{text}'")))?,
    };
    Ok((plugin.to_owned(), mode, priority))
}

/// Routes a write (`docs/plugins.md`, "Routing"): `None` or an empty list broadcasts to every
/// enabled plugin with `emit_events` in its own mode at `normal`; a list is matched
/// case-insensitively, first match wins, duplicates skipped. An unknown or disabled plugin and a
/// plugin with `emit_events = false` are errors, so the write is refused before anything is stored.
pub fn resolve_targets(
    targets: Option<&[PublishTarget]>,
    plugins: &[RoutablePlugin],
) -> Result<Vec<Route>, CoreError> {
    let targets = targets.unwrap_or_default();
    if targets.is_empty() {
        return Ok(plugins
            .iter()
            .filter(|p| p.enabled && p.emit_events)
            .map(|p| Route {
                plugin: p.id.clone(),
                mode: p.mode,
                priority: Priority::Normal,
            })
            .collect());
    }
    let mut routes: Vec<Route> = Vec::new();
    for target in targets {
        let (name, mode, priority) = parse_target(target)?;
        let plugin = plugins
            .iter()
            .find(|p| p.enabled && p.id.eq_ignore_ascii_case(&name))
            .ok_or_else(|| CoreError::invalid(format!("plugin '{name}' is not configured")))?;
        if !plugin.emit_events {
            return Err(CoreError::invalid(format!("plugin '{name}' is disabled")));
        }
        if routes.iter().any(|r| r.plugin == plugin.id) {
            continue;
        }
        routes.push(Route {
            plugin: plugin.id.clone(),
            mode: match mode {
                TargetMode::Configured => plugin.mode,
                TargetMode::Mode(mode) => mode,
            },
            priority,
        });
    }
    Ok(routes)
}

/// Where a job is in its life (`docs/plugins.md`, "Delivery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be delivered (possibly after `next_retry_at`).
    Pending,
    /// Handed to the plugin; recovered as a failure after its deadline.
    Processing,
    /// Delivered.
    Done,
    /// Dead-lettered after the last attempt.
    Dead,
}

impl JobStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }

    /// Parses a status name.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "pending" => Some(JobStatus::Pending),
            "processing" => Some(JobStatus::Processing),
            "done" => Some(JobStatus::Done),
            "dead" => Some(JobStatus::Dead),
            _ => None,
        }
    }
}

/// What produced a job: an event, or an archive or restore (which record no event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobAction {
    /// A create, append or patch: the job carries the event.
    #[default]
    Event,
    /// The aggregate was archived: the job carries the state after the archive.
    Archive,
    /// The aggregate was restored: the job carries the state after the restore.
    Restore,
}

impl JobAction {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Event => "event",
            JobAction::Archive => "archive",
            JobAction::Restore => "restore",
        }
    }
}

/// One job of the durable plugin queue, with everything its delivery needs (the state and
/// schema as they were when the write committed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginJob {
    /// Queue-wide id, increasing in commit order.
    pub id: u64,
    /// The plugin identifier.
    pub plugin: String,
    /// The tenant of the write.
    pub tenant: String,
    /// Payload mode.
    pub mode: PayloadMode,
    /// Priority.
    pub priority: Priority,
    /// Status.
    pub status: JobStatus,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Not delivered before this time (Unix ms).
    pub next_retry_at_ms: u64,
    /// While processing: when the attempt is considered failed (Unix ms).
    pub deadline_ms: Option<u64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the job was written (Unix ms).
    pub created_at_ms: u64,
    /// When the status last changed (Unix ms).
    pub updated_at_ms: u64,
    /// The event id (the de-duplication key); for archive and restore jobs, the id the store
    /// issued for the change (no event is recorded).
    #[serde(with = "crate::merkle::decimal_u64")]
    pub event_id: u64,
    /// What produced the job.
    #[serde(default)]
    pub action: JobAction,
    /// The event (event jobs).
    pub event: Option<Event>,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate after the write, in its JSON shape (`docs/protocol.md`, "JSON shapes").
    pub aggregate: Value,
    /// The aggregate's schema JSON when the write committed, if it had one.
    pub schema: Option<Value>,
}

impl PluginJob {
    /// The delivered JSON body (`docs/plugins.md`): `{"event"?, "state"?, "schema"?, "tenant"}`,
    /// each part as the mode says; `extensions-only` sets the event's `payload` to `null`. Archive
    /// and restore jobs carry `"action"` and the aggregate's type and id instead of an event.
    pub fn body(&self) -> Value {
        let mut out = Map::new();
        match (self.action, &self.event) {
            (JobAction::Event, Some(event)) if self.mode.has_event() => {
                let mut event = serde_json::to_value(event).unwrap_or(Value::Null);
                if self.mode == PayloadMode::ExtensionsOnly {
                    if let Some(map) = event.as_object_mut() {
                        map.insert("payload".into(), Value::Null);
                    }
                }
                out.insert("event".into(), event);
            }
            (JobAction::Event, _) => {}
            (action, _) => {
                out.insert("action".into(), Value::from(action.as_str()));
                out.insert(
                    "aggregate_type".into(),
                    Value::from(self.aggregate_type.as_str()),
                );
                out.insert(
                    "aggregate_id".into(),
                    Value::from(self.aggregate_id.as_str()),
                );
                out.insert("event_id".into(), Value::from(self.event_id.to_string()));
            }
        }
        if self.mode.has_state() {
            out.insert("state".into(), self.aggregate.clone());
        }
        if self.mode.has_schema() {
            if let Some(schema) = &self.schema {
                out.insert("schema".into(), schema.clone());
            }
        }
        out.insert("tenant".into(), Value::from(self.tenant.as_str()));
        Value::Object(out)
    }
}

/// Retry rules of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A failure with `attempts >= max_attempts` dead-letters the job (0 dead-letters at once).
    pub max_attempts: u32,
    /// The backoff unit: 1,000 ms gives the spec's 1 s, 2 s, 4 s, 10 s.
    pub backoff_unit_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            backoff_unit_ms: 1000,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempts` (1-based): 1, 2, 4, then 10 units, plus a
    /// jitter of up to a tenth derived from `seed` (e.g. the job id), so jobs that failed
    /// together do not retry in lock-step.
    pub fn backoff_ms(&self, attempts: u32, seed: u64) -> u64 {
        let units = match attempts {
            0 | 1 => 1,
            2 => 2,
            3 => 4,
            _ => 10,
        };
        let base = self.backoff_unit_ms.saturating_mul(units);
        // splitmix64 of the seed and attempt: a cheap, deterministic spread.
        let mut x = seed ^ (u64::from(attempts) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let spread = base / 10;
        base + if spread == 0 { 0 } else { x % (spread + 1) }
    }

    /// Whether a failure of attempt `attempts` dead-letters the job.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

/// How long a job may stay `processing` before it is recovered as a failure.
pub const PROCESSING_DEADLINE_MS: u64 = 60_000;
