//! A small HTTP/1.1 listener for `/health` and `/metrics` (Prometheus text format).
//!
//! Deliberately minimal: one request per connection, `GET` only, 8 KiB of headers at most.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::state::{ServerState, ACCEPT_RETRY_DELAY};

/// Largest request head read; a longer one is dropped unanswered.
const MAX_REQUEST: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(
    state: Arc<ServerState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(&state, socket)).await;
        });
    }
}

async fn respond(state: &ServerState, mut socket: TcpStream) -> io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/health") => ("200 OK", "application/json", health(state)),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics(state)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

fn health(state: &ServerState) -> String {
    serde_json::json!({
        "status": "ok",
        "durability": state.store.durability().as_str(),
        "protocol_v1": state.config.accept_v1,
        "server_key_fingerprint": state.server_key.fingerprint().to_string(),
    })
    .to_string()
}

fn metrics(state: &ServerState) -> String {
    let m = &state.metrics;
    let gauge = |name: &str, help: &str, kind: &str, value: u64| {
        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
    };
    [
        gauge(
            "eventdbx_connections_accepted_total",
            "Control connections accepted.",
            "counter",
            m.connections_accepted.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_connections_open",
            "Control connections open.",
            "gauge",
            m.connections_open.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_handshake_failures_total",
            "Rejected hellos and failed handshakes.",
            "counter",
            m.handshake_failures.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_requests_total",
            "Control requests answered.",
            "counter",
            m.requests.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_request_errors_total",
            "Control requests answered with an error.",
            "counter",
            m.request_errors.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_busy_polls_total",
            "Busy-polls of an idle session's socket after an answer (socket.busy_poll_us).",
            "counter",
            m.busy_polls.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_busy_poll_hits_total",
            "Busy-polls during which the next request arrived.",
            "counter",
            m.busy_poll_hits.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_busy_polling_sessions",
            "Sessions busy-polling their socket now.",
            "gauge",
            m.busy_polling.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_busy_polling_sessions_peak",
            "The most sessions busy-polling at once since the server started.",
            "gauge",
            m.busy_polling_peak.load(Ordering::Relaxed),
        ),
        plugin_metrics(state, &gauge),
    ]
    .concat()
}

/// The plugin queue: jobs per status (from the store) and this process's delivery counters.
fn plugin_metrics(state: &ServerState, gauge: &dyn Fn(&str, &str, &str, u64) -> String) -> String {
    let counts = state.jobs.job_counts().unwrap_or_default();
    let p = &state.plugins.metrics;
    [
        gauge(
            "eventdbx_plugin_jobs_pending",
            "Plugin jobs waiting for delivery (including retries).",
            "gauge",
            counts.pending + counts.processing,
        ),
        gauge(
            "eventdbx_plugin_jobs_dead",
            "Plugin jobs dead-lettered.",
            "gauge",
            counts.dead,
        ),
        gauge(
            "eventdbx_plugin_jobs_delivered_total",
            "Plugin jobs delivered by this process.",
            "counter",
            p.delivered.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_plugin_jobs_retried_total",
            "Failed plugin deliveries scheduled for a retry by this process.",
            "counter",
            p.retried.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_plugin_jobs_dead_lettered_total",
            "Plugin jobs dead-lettered by this process.",
            "counter",
            p.dead.load(Ordering::Relaxed),
        ),
    ]
    .concat()
}
