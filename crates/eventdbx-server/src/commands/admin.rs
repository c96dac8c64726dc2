//! `admin` (ours, request @27): plugin and queue administration for `dbx plugin …` and
//! `dbx queue …`. Authorised before anything else: the token must allow the action
//! `plugin.manage` (root tokens with `*.*` do) and every tenant (an empty `tenants` claim).

use eventdbx_core::plugin::{JobStatus, PayloadMode};
use eventdbx_core::CoreError;
use eventdbx_proto::control::{AdminRequest, AdminResponse};
use eventdbx_store::JobFilter;
use serde_json::{json, Map, Value};

use super::{Apply, Context, Reply};
use crate::error::RequestError;
use crate::plugins::registry::{KindConfig, PluginDef};
use crate::plugins::{now_ms, Plugins};

/// The action an admin token must allow.
pub(crate) const ADMIN_ACTION: &str = "plugin.manage";

fn config_error(detail: impl Into<String>) -> RequestError {
    CoreError::Config(detail.into()).into()
}

fn arg_str(args: &Map<String, Value>, key: &str) -> Option<String> {
    args.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn name_arg(args: &Map<String, Value>) -> Result<String, RequestError> {
    arg_str(args, "name")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RequestError::invalid("plugin name is required"))
}

/// A definition for display: header values are never shown (they may carry credentials).
fn describe(def: &PluginDef) -> Value {
    let mut config = serde_json::to_value(&def.config).unwrap_or(Value::Null);
    if let Some(headers) = config.get_mut("headers").and_then(Value::as_object_mut) {
        for value in headers.values_mut() {
            *value = Value::from("<redacted>");
        }
    }
    json!({
        "name": def.id(),
        "label": def.label(),
        "kind": def.config.kind(),
        "enabled": def.enabled,
        "emit_events": def.emit_events,
        "payload_mode": def.payload_mode.as_str(),
        "config": config,
    })
}

fn find(defs: &[PluginDef], name: &str) -> Result<usize, RequestError> {
    defs.iter()
        .position(|d| d.id().eq_ignore_ascii_case(name))
        .ok_or_else(|| config_error(format!("plugin '{name}' is not configured")))
}

fn job_filter(args: &Map<String, Value>) -> Result<JobFilter, RequestError> {
    let event_id = match args.get("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| RequestError::invalid(format!("invalid event id '{s}'")))?,
        ),
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| RequestError::invalid(format!("invalid event id {v}")))?,
        ),
    };
    let statuses = match arg_str(args, "status") {
        Some(s) => vec![JobStatus::parse(&s)
            .ok_or_else(|| RequestError::invalid(format!("invalid job status '{s}'")))?],
        None => Vec::new(),
    };
    Ok(JobFilter {
        plugin: arg_str(args, "plugin"),
        statuses,
        event_id,
        limit: args
            .get("limit")
            .and_then(Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
    })
}

/// `admin` (ours): one plugin or queue operation, named by `action`.
impl Apply for AdminRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        // 1. Authorisation, before anything is parsed or looked up.
        let claims = ctx.state.auth.verify(&self.token)?;
        claims.authorize(ADMIN_ACTION, None)?;
        if !claims.tenants.is_empty() {
            return Err(RequestError::unauthorized());
        }
        let args: Map<String, Value> = if self.args_json.trim().is_empty() {
            Map::new()
        } else {
            serde_json::from_str(&self.args_json)
                .map_err(|err| RequestError::invalid(format!("invalid admin arguments: {err}")))?
        };
        let plugins = &ctx.state.plugins;
        let queue = &ctx.state.jobs;
        // Pick up edits of the plugins file made since the last check.
        plugins.reload_if_changed()?;
        let result = match self.action.as_str() {
            "plugin.list" => Value::Array(plugins.defs().iter().map(describe).collect()),
            "plugin.add" => {
                let definition = args
                    .get("definition")
                    .cloned()
                    .ok_or_else(|| RequestError::invalid("plugin definition is required"))?;
                let def: PluginDef = serde_json::from_value(definition)
                    .map_err(|err| config_error(format!("invalid plugin definition: {err}")))?;
                def.validate()?;
                let mut defs = plugins.defs().as_ref().clone();
                let id = def.id();
                let replaced = match find(&defs, &id) {
                    Ok(at) => {
                        defs[at] = def.clone();
                        true
                    }
                    Err(_) => {
                        defs.push(def.clone());
                        false
                    }
                };
                plugins.replace(defs)?;
                json!({"name": id, "replaced": replaced, "plugin": describe(&def)})
            }
            "plugin.enable" | "plugin.disable" => {
                let name = name_arg(&args)?;
                let mut defs = plugins.defs().as_ref().clone();
                let at = find(&defs, &name)?;
                let enabled = self.action == "plugin.enable";
                let changed = defs[at].enabled != enabled;
                defs[at].enabled = enabled;
                plugins.replace(defs)?;
                json!({"name": name, "enabled": enabled, "changed": changed})
            }
            "plugin.config" => {
                let name = name_arg(&args)?;
                let mut defs = plugins.defs().as_ref().clone();
                let at = find(&defs, &name)?;
                if let Some(mode) = arg_str(&args, "payload_mode") {
                    defs[at].payload_mode = PayloadMode::parse(&mode).ok_or_else(|| {
                        RequestError::invalid(format!("invalid publish mode '{mode}'"))
                    })?;
                }
                if let Some(emit) = args.get("emit_events").and_then(Value::as_bool) {
                    defs[at].emit_events = emit;
                }
                if let Some(config) = args.get("config") {
                    defs[at].config = serde_json::from_value::<KindConfig>(config.clone())
                        .map_err(|err| config_error(format!("invalid plugin config: {err}")))?;
                }
                let def = defs[at].clone();
                plugins.replace(defs)?;
                describe(&def)
            }
            "plugin.remove" => {
                let name = name_arg(&args)?;
                let mut defs = plugins.defs().as_ref().clone();
                let at = find(&defs, &name)?;
                defs.remove(at);
                plugins.replace(defs)?;
                json!({"name": name, "removed": true})
            }
            "plugin.test" => {
                let name = name_arg(&args)?;
                let defs = plugins.defs();
                let def = defs[find(&defs, &name)?].clone();
                let outcome = run_async(plugins, def);
                json!({"name": name, "ok": outcome.is_ok(), "error": outcome.err()})
            }
            "plugin.replay" => {
                // Delivered (and dead) jobs of the plugin delivered again.
                let name = name_arg(&args)?;
                let defs = plugins.defs();
                let id = defs[find(&defs, &name)?].id();
                let mut filter = job_filter(&args)?;
                filter.plugin = Some(id);
                filter.statuses = vec![JobStatus::Done, JobStatus::Dead];
                let replayed = queue.retry_jobs(&filter, now_ms())?;
                plugins.wake(replayed.iter().map(String::as_str));
                json!({"name": name, "replayed": replayed.len()})
            }
            "queue.list" => {
                let filter = job_filter(&args)?;
                let counts = queue.job_counts()?;
                let jobs: Vec<Value> = queue
                    .list_jobs(&filter)?
                    .iter()
                    .map(|job| {
                        json!({
                            "id": job.id,
                            "plugin": job.plugin,
                            "tenant": job.tenant,
                            "status": job.status.as_str(),
                            "priority": job.priority.as_str(),
                            "mode": job.mode.as_str(),
                            "action": job.action.as_str(),
                            "event_id": job.event_id.to_string(),
                            "aggregate_type": job.aggregate_type,
                            "aggregate_id": job.aggregate_id,
                            "attempts": job.attempts,
                            "next_retry_at_ms": job.next_retry_at_ms,
                            "last_error": job.last_error,
                            "created_at_ms": job.created_at_ms,
                        })
                    })
                    .collect();
                json!({
                    "counts": {"pending": counts.pending, "processing": counts.processing,
                               "done": counts.done, "dead": counts.dead},
                    "jobs": jobs,
                })
            }
            "queue.retry" => {
                let filter = job_filter(&args)?;
                let retried = queue.retry_jobs(&filter, now_ms())?;
                plugins.wake(retried.iter().map(String::as_str));
                json!({"retried": retried.len()})
            }
            "queue.clear" | "queue.clear-done" => {
                let mut filter = job_filter(&args)?;
                filter.statuses = vec![if self.action == "queue.clear" {
                    JobStatus::Dead
                } else {
                    JobStatus::Done
                }];
                json!({"removed": queue.clear_jobs(&filter)?})
            }
            other => {
                return Err(RequestError::invalid(format!(
                    "unknown admin action '{other}'"
                )))
            }
        };
        Ok(Reply::Admin(AdminResponse {
            result_json: result.to_string(),
        }))
    }
}

/// Runs a test delivery on a thread of its own (commands run on blocking threads, which may
/// not enter the server's runtime).
fn run_async(plugins: &Plugins, def: PluginDef) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| err.to_string())?;
                runtime.block_on(plugins.test(&def))
            })
            .join()
            .unwrap_or_else(|_| Err("plugin test panicked".into()))
    })
}
