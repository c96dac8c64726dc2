//! The `process` kind: a job becomes a [`PluginEvent`] (`docs/plugins.md`, "Process plugins"; every
//! job is sent, parts the mode excludes are empty) delivered by the long-lived child [`runner`]
//! (spawn, init, ack, restart with backoff), which holds no plugin-registry knowledge of its own.

pub mod runner;

use std::path::Path;
use std::time::Duration;

use eventdbx_core::plugin::PluginJob;
use eventdbx_core::CoreError;
use eventdbx_proto::plugin::{PluginEvent, NULL_JSON};
use serde_json::Value;

use super::registry::{KindConfig, PluginDef};
pub use runner::{current_target, resolve_binary, ProcessPlugin, ProcessSpec, SHUTDOWN_GRACE};

/// How long a child may take to acknowledge one event.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A `process` plugin's delivery state: the runner owning its child.
#[derive(Debug)]
pub struct ProcessSink {
    runner: ProcessPlugin,
    sequence: u64,
}

impl ProcessSink {
    /// The sink of a `process` definition; the binary must be in the local plugin registry.
    pub fn new(def: &PluginDef, plugins_dir: &Path) -> Result<Self, CoreError> {
        let KindConfig::Process {
            name,
            version,
            args,
            env,
            working_dir,
        } = &def.config
        else {
            return Err(CoreError::Config("not a process plugin".into()));
        };
        let binary = resolve_binary(plugins_dir, name, version).map_err(CoreError::Config)?;
        let spec = ProcessSpec {
            name: name.clone(),
            version: version.clone(),
            args: args.clone(),
            env: env.clone(),
            working_dir: working_dir.as_ref().map(Into::into),
            binary,
        };
        Ok(ProcessSink {
            runner: ProcessPlugin::new(&def.id(), spec),
            sequence: 0,
        })
    }

    /// Delivers one job to the child and waits for its ack.
    pub async fn deliver(&mut self, job: &PluginJob) -> Result<(), String> {
        self.sequence += 1;
        let event = plugin_event(job, self.sequence);
        self.runner.deliver(&event, ACK_TIMEOUT).await
    }
}

/// The `PluginEvent` of a job.
pub fn plugin_event(job: &PluginJob, sequence: u64) -> PluginEvent {
    let body = job.body();
    let event = body.get("event");
    let text = |v: Option<&Value>| v.map_or_else(|| NULL_JSON.to_owned(), Value::to_string);
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let state = body.get("state");
    let created_at_epoch_micros = event
        .and_then(|e| e.pointer("/metadata/created_at"))
        .and_then(Value::as_str)
        .and_then(eventdbx_core::time::parse_unix_millis)
        .map_or(0, |ms| {
            i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX)
        });
    PluginEvent {
        sequence,
        aggregate_type: job.aggregate_type.clone(),
        aggregate_id: job.aggregate_id.clone(),
        event_type: event.map_or_else(
            || format!("_{}", job.action.as_str()),
            |e| str_of(e.get("event_type")),
        ),
        event_version: event
            .and_then(|e| e.get("version"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        event_id: job.event_id.to_string(),
        created_at_epoch_micros,
        payload_json: text(event.and_then(|e| e.get("payload"))),
        metadata_json: text(event.and_then(|e| e.get("metadata"))),
        hash: str_of(event.and_then(|e| e.get("hash"))),
        merkle_root: str_of(event.and_then(|e| e.get("merkle_root"))),
        state_version: job
            .aggregate
            .get("version")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        state_archived: job
            .aggregate
            .get("archived")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        state_merkle_root: str_of(job.aggregate.get("merkle_root")),
        state_entries: state
            .and_then(|s| s.get("state"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default(),
        schema_json: text(body.get("schema")),
        extensions_json: text(event.and_then(|e| e.get("extensions"))),
    }
}
