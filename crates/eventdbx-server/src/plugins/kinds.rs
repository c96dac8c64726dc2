//! How each kind delivers a job (see `docs/plugins.md`, "Kinds"): `http` (a `POST` through
//! [`super::webhook`]), `tcp` (one JSON line per job on a kept-alive connection), `log` (a tracing
//! line) and `process` (a child fed Cap'n Proto envelopes).

use std::time::Duration;

use eventdbx_core::plugin::{JobAction, PluginJob};
use eventdbx_core::CoreError;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use super::endpoint::HttpTarget;
use super::registry::{KindConfig, PluginDef};
use super::webhook::Webhook;

/// Timeout of a whole HTTP exchange and of a TCP connect.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker's delivery state for its plugin.
#[derive(Debug)]
pub enum Sink {
    /// HTTP endpoint.
    Http(Box<Webhook>),
    /// TCP receiver and the open connection, if any.
    Tcp {
        /// `host:port`.
        address: String,
        /// Kept alive between jobs.
        connection: Option<TcpStream>,
    },
    /// Tracing.
    Log {
        /// Level.
        level: tracing::Level,
        /// Template.
        template: Option<String>,
        /// `full` detail.
        full: bool,
    },
    /// A child process.
    Process(Box<super::process::ProcessSink>),
}

impl Sink {
    /// The sink of a definition.
    pub fn new(def: &PluginDef, plugins_dir: &std::path::Path) -> Result<Sink, CoreError> {
        Ok(match &def.config {
            KindConfig::Http {
                endpoint,
                headers,
                https,
                ca_file,
            } => Sink::Http(Box::new(Webhook::new(
                endpoint,
                *https,
                headers,
                ca_file.as_deref().map(std::path::Path::new),
                IO_TIMEOUT,
            )?)),
            KindConfig::Tcp { host, port } => Sink::Tcp {
                address: format!("{host}:{port}"),
                connection: None,
            },
            KindConfig::Log {
                level,
                template,
                detail,
            } => Sink::Log {
                level: match level.to_ascii_lowercase().as_str() {
                    "trace" => tracing::Level::TRACE,
                    "debug" => tracing::Level::DEBUG,
                    "warn" => tracing::Level::WARN,
                    "error" => tracing::Level::ERROR,
                    _ => tracing::Level::INFO,
                },
                template: template.clone(),
                full: detail.eq_ignore_ascii_case("full"),
            },
            KindConfig::Process { .. } => Sink::Process(Box::new(
                super::process::ProcessSink::new(def, plugins_dir)?,
            )),
        })
    }

    /// Delivers one job.
    pub async fn deliver(&mut self, job: &PluginJob) -> Result<(), String> {
        match self {
            Sink::Http(webhook) => {
                let body = serde_json::to_vec(&job.body()).map_err(|e| e.to_string())?;
                webhook.post(body).await
            }
            Sink::Tcp {
                address,
                connection,
            } => {
                let mut line = serde_json::to_vec(&job.body()).map_err(|e| e.to_string())?;
                line.push(b'\n');
                // A kept-alive connection may have died since the last job: one reconnect.
                for attempt in 0..2 {
                    if connection.is_none() {
                        let connect = TcpStream::connect(address.as_str());
                        match tokio::time::timeout(IO_TIMEOUT, connect).await {
                            Ok(Ok(stream)) => *connection = Some(stream),
                            Ok(Err(err)) => {
                                return Err(format!(
                                    "tcp plugin connect to {address} failed: {err}"
                                ))
                            }
                            Err(_) => {
                                return Err(format!(
                                    "tcp plugin connect to {address} timed out after 5 s"
                                ))
                            }
                        }
                    }
                    let Some(stream) = connection.as_mut() else {
                        continue;
                    };
                    let written = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&line)).await;
                    match written {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(err)) if attempt == 1 => {
                            *connection = None;
                            return Err(format!("tcp plugin write to {address} failed: {err}"));
                        }
                        Err(_) if attempt == 1 => {
                            *connection = None;
                            return Err(format!("tcp plugin write to {address} timed out"));
                        }
                        _ => *connection = None,
                    }
                }
                Err(format!("tcp plugin write to {address} failed"))
            }
            Sink::Log {
                level,
                template,
                full,
            } => {
                log_job(*level, template.as_deref(), *full, job);
                Ok(())
            }
            Sink::Process(sink) => sink.deliver(job).await,
        }
    }
}

fn log_job(level: tracing::Level, template: Option<&str>, full: bool, job: &PluginJob) {
    let body = job.body();
    let event_name = match (&job.action, &job.event) {
        (JobAction::Event, Some(event)) => event.event_type.clone(),
        (action, _) => action.as_str().to_owned(),
    };
    let mut lines = Vec::new();
    if body.get("event").is_some() || job.action != JobAction::Event {
        let mut line = match template {
            Some(template) => template
                .replace("{aggregate}", &job.aggregate_type)
                .replace("{id}", &job.aggregate_id)
                .replace("{event}", &event_name),
            None => format!(
                "aggregate={} id={} event={event_name}",
                job.aggregate_type, job.aggregate_id
            ),
        };
        if full {
            let payload = body
                .get("event")
                .and_then(|e| e.get("payload"))
                .cloned()
                .unwrap_or(Value::Null);
            line.push_str(&format!(" payload={payload}"));
        }
        lines.push(line);
    }
    if let Some(state) = body.get("state") {
        lines.push(if full {
            format!("state={state}")
        } else {
            "state=present".to_owned()
        });
    }
    if body.get("schema").is_some() {
        lines.push(format!("schema={}", job.aggregate_type));
    }
    for line in lines {
        let (plugin, tenant, event_id) = (&job.plugin, &job.tenant, job.event_id);
        match level {
            tracing::Level::TRACE => {
                tracing::trace!(target: "eventdbx.plugin.log", plugin, tenant, event_id, "{line}")
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "eventdbx.plugin.log", plugin, tenant, event_id, "{line}")
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "eventdbx.plugin.log", plugin, tenant, event_id, "{line}")
            }
            tracing::Level::ERROR => {
                tracing::error!(target: "eventdbx.plugin.log", plugin, tenant, event_id, "{line}")
            }
            _ => tracing::info!(target: "eventdbx.plugin.log", plugin, tenant, event_id, "{line}"),
        }
    }
}
