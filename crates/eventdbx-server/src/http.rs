//! The `/health` and `/metrics` (Prometheus text format) listener, on hyper's HTTP/1 server.
//!
//! One request per connection, `GET` only, 8 KiB of request buffer at most. `/health` answers
//! 503 with `"status":"degraded"` while the store's writes fail (`docs/server.md`, "Health and
//! metrics"). The plugin queue's metrics are described in `docs/plugins.md`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use eventdbx_store::StorageHealth;

use crate::state::{ServerState, ACCEPT_RETRY_DELAY};

/// Largest request buffer (hyper's minimum); a longer request head is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes; a connection already accepted finishes on its own,
/// bounded by [`REQUEST_TIMEOUT`].
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
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                // Asking the store for its health may touch the disk or the database (a probe,
                // a ping), so the answer is built off the async workers.
                let state = Arc::clone(&state);
                let (method, path) = (request.method().clone(), request.uri().path().to_owned());
                async move {
                    let response =
                        tokio::task::spawn_blocking(move || respond(&state, &method, &path))
                            .await
                            .unwrap_or_else(|_| {
                                plain(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "text/plain",
                                    "internal error\n".to_owned(),
                                )
                            });
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST)
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service);
            // The header timeout covers a slow request; this one covers a slow reader.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
}

fn respond(state: &ServerState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, path) {
        (&Method::GET, "/health") => {
            let (status, body) = health(state);
            (status, "application/json", body)
        }
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", metrics(state)),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    plain(status, content_type, body)
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 200 and `ok` while the store writes; 503 and `degraded`, with the cause, while its writes
/// fail (a full disk), so a load balancer or an orchestrator stops sending writes.
fn health(state: &ServerState) -> (StatusCode, String) {
    let storage = state.store.health();
    let mut body = serde_json::json!({
        "status": storage.as_str(),
        "durability": state.store.durability().as_str(),
        "protocol_v1": state.config.accept_v1,
        "server_key_fingerprint": state.server_key.fingerprint().to_string(),
    });
    let status = match &storage {
        StorageHealth::Degraded { cause } => {
            body["storage_error"] = cause.as_str().into();
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::OK,
    };
    (status, body.to_string())
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
            "Connections that ended before completing their hello and handshake.",
            "counter",
            m.handshake_failures.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_preauth_rejected_total",
            "Unauthenticated connections closed to make room in the pre-authentication budget.",
            "counter",
            m.preauth_rejected.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_sessions_refused_total",
            "Authenticated connections refused because every session slot was taken.",
            "counter",
            m.sessions_refused.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_protocol_errors_total",
            "Sessions ended by a bad frame, an oversize chunk or an unreadable message.",
            "counter",
            m.protocol_errors.load(Ordering::Relaxed),
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
        gauge(
            "eventdbx_storage_degraded",
            "1 while the store's writes fail (an I/O error such as a full disk), else 0.",
            "gauge",
            u64::from(!matches!(state.store.health(), StorageHealth::Ok)),
        ),
        gauge(
            "eventdbx_message_bytes_reserved",
            "Bytes of messages reserved from the message budget now (socket.message_budget_bytes).",
            "gauge",
            m.message_bytes_reserved.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_message_bytes_reserved_peak",
            "The most message bytes reserved at once since the server started.",
            "gauge",
            m.message_bytes_reserved_peak.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_message_budget_waits_total",
            "Messages that waited for room in the message budget.",
            "counter",
            m.message_budget_waits.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_message_timeouts_total",
            "Sessions closed because a message begun did not arrive whole in time.",
            "counter",
            m.message_timeouts.load(Ordering::Relaxed),
        ),
        gauge(
            "eventdbx_answer_timeouts_total",
            "Sessions closed because the peer took no byte of an answer in time.",
            "counter",
            m.answer_timeouts.load(Ordering::Relaxed),
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
