//! How each kind delivers a job (`02-server.md` §14.5): `http` (a small HTTP/1.1 `POST` over
//! tokio, no TLS), `tcp` (one JSON line per job on a kept-alive connection), `log` (a tracing
//! line) and `process` (a child fed Cap'n Proto envelopes).

use std::time::Duration;

use eventdbx_core::plugin::{JobAction, PluginJob};
use eventdbx_core::CoreError;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::endpoint::HttpTarget;
use super::registry::{KindConfig, PluginDef};

/// Timeout of an HTTP request and of a TCP connect.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// POSTs `body` and reads the answer; a non-2xx status is the spec's failure text.
pub async fn http_post(
    target: &HttpTarget,
    headers: &std::collections::BTreeMap<String, String>,
    body: &[u8],
) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(&target.authority)
            .await
            .map_err(|err| format!("http plugin request failed: {err}"))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: \
             {}\r\nConnection: close\r\n",
            target.path,
            target.host,
            body.len()
        );
        for (name, value) in headers {
            // Header names and values with line breaks would split the request.
            if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                continue;
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|err| format!("http plugin request failed: {err}"))?;
        stream
            .write_all(body)
            .await
            .map_err(|err| format!("http plugin request failed: {err}"))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|err| format!("http plugin request failed: {err}"))?;
            if n == 0 || response.len() > 64 * 1024 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if complete(&response) {
                break;
            }
        }
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "http plugin request failed: malformed response".to_owned())?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let first: String = body.chars().take(256).collect();
        Err(format!("http plugin request failed ({status}): {first}"))
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err("http plugin request failed: timed out after 5 s".into()),
    }
}

/// Whether a response with a `Content-Length` is complete (else read to EOF).
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| response.len() >= end + 4 + len)
}

/// A worker's delivery state for its plugin.
#[derive(Debug)]
pub enum Sink {
    /// HTTP endpoint.
    Http {
        /// Where.
        target: HttpTarget,
        /// Configured headers.
        headers: std::collections::BTreeMap<String, String>,
    },
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
            } => Sink::Http {
                target: HttpTarget::parse(endpoint, *https)?,
                headers: headers.clone(),
            },
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
            Sink::Http { target, headers } => {
                let body = serde_json::to_vec(&job.body()).map_err(|e| e.to_string())?;
                http_post(target, headers, &body).await
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
