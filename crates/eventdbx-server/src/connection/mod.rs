//! One control connection: the hello (`docs/protocol.md`, "Hello"), the v1 or v2 handshake, then
//! the session loop.
//!
//! v1 sessions answer one request at a time, in order, as EventDBX does. v2 sessions read
//! requests as they come, run up to [`V2_IN_FLIGHT`] at once and write each answer when it is
//! ready (answers carry the request id).
//!
//! After answering, a session whose conversation is hot polls its socket for a moment before
//! it parks (`busy_poll::BusyPoll`, `[socket] busy_poll_us`).
//!
//! # Layout
//! - `v1`: the v1 hello checks, the optional `Noise_NNpsk0` handshake and the v1 session loop.
//! - `v2`: the `Noise_XXpsk3` handshake and the pipelined v2 session loop.
//! - `busy_poll`: when a session polls its socket before it parks.
//! - `admission`: the pending (pre-auth) budget, its deadline and the session slots.
//! - `inbound`: reading a session's frames under the idle and message deadlines, and the
//!   budget of message bytes in flight.
//! - `outbound`: writing answers to a peer that may stop reading (the answer deadline).
//! - here: the hello, and running one request (on the session's task or apart).

pub(crate) mod admission;
mod busy_poll;
mod inbound;
mod outbound;
mod push;
mod v1;
mod v2;

use std::net::SocketAddr;
use std::sync::Arc;

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_proto::hello::{
    classify_first_message, cli_rejection, FirstMessage, HelloResponse, ReceivedHello,
};
use eventdbx_proto::negotiate::{self, ServerPath};
use eventdbx_proto::transport::read_hello;
use eventdbx_store::Durability;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout_at;

use self::admission::{Closing, Eviction, SessionsFull, Ticket};
use crate::commands::{self, Command, Context};
use crate::error::RequestError;
use crate::state::{Metrics, ServerState};

/// Requests of one v2 session running at once.
pub const V2_IN_FLIGHT: usize = 64;
/// What our server honours beyond the reference (`docs/protocol.md`, "Our extensions").
const CAPABILITIES: [&str; 5] = [
    "expected_version",
    "idempotency_key",
    "events_filter",
    "sorted_cursors",
    "verify_recompute",
];

/// The session's identity, fixed at the hello.
struct SessionInfo {
    tenant: String,
    hello_token: String,
}

/// Serves one accepted connection: the hello, the handshake and the session, unless the
/// connection is evicted from the pending budget first.
pub(crate) async fn serve(
    state: Arc<ServerState>,
    socket: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    eviction: Eviction,
    shutdown: broadcast::Receiver<()>,
) {
    let closing = tokio::select! {
        closing = eviction.wait() => Some(closing),
        _ = converse(&state, socket, &mut ticket, shutdown) => None,
    };
    let evicted = closing == Some(Closing::Evicted);
    if ticket.is_established() {
        return;
    }
    // Every connection that never reached its session counts, whatever ended it: a refusal, a
    // bad or missing handshake message, the deadline, the peer leaving, an eviction (counted
    // apart by the listener, when it evicts) or the shutdown.
    Metrics::add(&state.metrics.handshake_failures, 1);
    if let Some(unsaid) = state.log_bursts.handshakes.admit() {
        tracing::info!(
            %peer,
            evicted,
            similar_since_last_line = unsaid,
            "connection closed before completing its handshake"
        );
    }
}

async fn converse(
    state: &Arc<ServerState>,
    mut socket: TcpStream,
    ticket: &mut Ticket,
    shutdown: broadcast::Receiver<()>,
) {
    // Each frame goes out in one write; without this a reply would wait for a delayed ACK.
    let _ = socket.set_nodelay(true);
    let Ok(Ok(hello_bytes)) = timeout_at(ticket.deadline(), read_hello(&mut socket)).await else {
        return;
    };
    let hello = match classify_first_message(&hello_bytes) {
        Ok(FirstMessage::Hello(hello)) => hello,
        Ok(FirstMessage::CliRequest) => {
            // Never run anything for a peer: answer the CLI-proxy request with a refusal.
            let _ = socket.write_all(&cli_rejection()).await;
            return;
        }
        Err(_) => return,
    };
    let state = Arc::clone(state);
    match negotiate::server_path(hello.protocol_version, state.config.accept_v1) {
        Err(message) => reject(&mut socket, &message, false).await,
        Ok(ServerPath::V1) => v1::serve_v1(state, socket, hello, ticket, shutdown).await,
        Ok(ServerPath::V2) => {
            v2::serve_v2(state, socket, hello_bytes, hello, ticket, shutdown).await
        }
    }
}

/// Takes a session slot for a connection whose token checked out, logging when none is left.
fn take_session(state: &ServerState, ticket: &mut Ticket) -> Result<(), SessionsFull> {
    ticket.authenticated().inspect_err(|_| {
        Metrics::add(&state.metrics.sessions_refused, 1);
        if let Some(unsaid) = state.log_bursts.limits.admit() {
            tracing::warn!(
                limit = admission::MAX_SESSIONS,
                similar_since_last_line = unsaid,
                "session refused: every session slot is taken"
            );
        }
    })
}

/// A session ends on a frame or message it cannot read; the protocol gives no way to tell the
/// client why (`docs/protocol.md`, "Session rules"), so the log and `/metrics` do.
/// The answer that tells the peer why its session ends on a protocol error: an `error` with
/// request id 0, which no request carries (`docs/protocol.md`, "Session rules"). Sent at most
/// [`NOTICE_TIMEOUT`] long, so a peer that reads nothing cannot hold the session open.
fn closing_notice(what: &str) -> Vec<u8> {
    commands::encode(
        0,
        Err(RequestError::protocol(format!(
            "the session is closed: {what}"
        ))),
        usize::MAX,
    )
}

/// How long the closing notice may take to write.
const NOTICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn session_ended(state: &ServerState, what: &str, err: &dyn std::fmt::Display) {
    Metrics::add(&state.metrics.protocol_errors, 1);
    if let Some(unsaid) = state.log_bursts.protocol.admit() {
        tracing::info!(
            error = %err,
            similar_since_last_line = unsaid,
            "session closed: {what}"
        );
    }
}

async fn reject(socket: &mut TcpStream, message: &str, no_noise: bool) {
    tracing::debug!(reason = message, "hello rejected");
    let _ = socket
        .write_all(&HelloResponse::rejected(message, no_noise).encode())
        .await;
    let _ = socket.shutdown().await;
}

fn accepted(no_noise: bool) -> HelloResponse {
    HelloResponse {
        capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        ..HelloResponse::ok(no_noise)
    }
}

/// Steps 3 and 5 of the hello decision order (`docs/protocol.md`): the tenant the hello names (or
/// the default), normalised.
fn hello_tenant(state: &ServerState, hello: &ReceivedHello) -> Result<(String, String), String> {
    let raw = match &hello.tenant_id {
        Ok(raw) => raw.trim().to_owned(),
        Err(err) => return Err(err.to_string()),
    };
    let raw = if raw.is_empty() {
        if state.config.tenants.multi_tenant {
            return Err("tenantId is required when multi-tenant mode is enabled".into());
        }
        state.config.domain.clone()
    } else {
        raw
    };
    Ok((
        raw.clone(),
        normalize_tenant_id(&raw)
            .map_err(|err| format!("failed to initialise tenant '{raw}': {err}"))?,
    ))
}

/// Whether a request runs on the session's own task, without leaving the runtime's thread:
/// the reads of one aggregate, one snapshot, the schemas or one outbox page, and writes to one
/// aggregate when the store does not flush before acknowledging. These take tens of
/// microseconds, less than handing them to another thread and back. Durable writes await their
/// round ([`answer_write`]). The rest run apart
/// ([`answer_apart`]), so that they never hold up the other tasks of this runtime thread:
/// durable snapshots wait for a flush (and share it with concurrent writes), lists may scan many
/// entries to fill a filtered page, verify reads a whole aggregate, an archive may cascade to
/// its referrers, and the schema, tenant and plugin administration commands touch files.
fn runs_inline(state: &ServerState, command: &Result<Command, RequestError>) -> bool {
    let relaxed = state.store.durability() == Durability::Relaxed;
    match command {
        // An unknown member or unreadable field: the answer is an error, at once.
        Err(_) => true,
        Ok(
            Command::GetAggregate(_)
            | Command::SelectAggregate(_)
            | Command::ReadOutbox(_)
            | Command::ListSchemas(_)
            | Command::GetSnapshot(_)
            // Reaches here only on v1, which refuses it at once.
            | Command::Subscribe(_)
            | Command::Unsubscribe(_)
            | Command::SubscriptionAck(_),
        ) => true,
        Ok(Command::Write(_) | Command::CreateSnapshot(_)) => relaxed,
        Ok(
            Command::ListAggregates(_)
            | Command::ListEvents(_)
            | Command::ListReferrers(_)
            | Command::ListSnapshots(_)
            | Command::VerifyAggregate(_)
            | Command::SetArchive(_)
            | Command::ReplaceSchemas(_)
            | Command::Tenant(_)
            | Command::TenantList(_)
            | Command::Admin(_),
        ) => false,
    }
}

/// Answers one request: a durable write awaits its round without a thread waiting for it
/// ([`answer_write`]); any other runs `here`, on the session's task, or apart
/// ([`answer_apart`]).
async fn answer(
    state: &Arc<ServerState>,
    session: &Arc<SessionInfo>,
    id: u64,
    command: Result<Command, RequestError>,
    response_limit: usize,
    here: bool,
) -> Option<Vec<u8>> {
    match command {
        Ok(Command::Write(write)) if state.store.durability() == Durability::Fsync => {
            Some(answer_write(state, session, id, write, response_limit).await)
        }
        command if here => execute(state, session, id, command, response_limit),
        command => {
            let (state, session) = (Arc::clone(state), Arc::clone(session));
            answer_apart(state, session, id, command, response_limit).await
        }
    }
}

/// A durable write: its checks and the store's prepare half run on this task, and its answer
/// is awaited (`EventStore::write_then`): a write queued behind a running round returns the
/// thread to the runtime at once, and the round's leader answers it after the round's sync. A
/// write that finds no round running leads its own, sync included, on this thread: a hand-off
/// to another thread and back would cost more than the write.
async fn answer_write(
    state: &ServerState,
    session: &SessionInfo,
    id: u64,
    write: commands::Write,
    response_limit: usize,
) -> Vec<u8> {
    let ctx = Context {
        state,
        tenant: &session.tenant,
        hello_token: &session.hello_token,
        response_limit,
    };
    let name = write.name();
    let result = write.apply_awaiting(&ctx).await;
    answered(state, session, id, name, result, response_limit)
}

/// Whether a request is a write that waits for the store's sync before it is answered (a
/// durable store's writes and snapshots).
fn waits_for_sync(state: &ServerState, command: &Result<Command, RequestError>) -> bool {
    state.store.durability() == Durability::Fsync
        && matches!(command, Ok(Command::Write(_) | Command::CreateSnapshot(_)))
}

/// Whether a lone durable snapshot runs on the runtime's thread itself, blocking it for the
/// sync: when no commit is running it leads its own round at once, and handing this thread's
/// other tasks to a new thread and back ([`answer_apart`]) costs more CPU than the snapshot (the
/// other workers steal those tasks meanwhile). When a commit is running it would wait for it,
/// and goes apart. Only on the multi-thread runtime. (Durable writes never block a thread to
/// wait: [`answer_write`].)
fn leads_alone(state: &ServerState) -> bool {
    tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        && !state.store.commit_running()
}

/// Runs one request off the runtime's scheduling: `block_in_place` on the multi-thread runtime
/// (the runtime moves this worker's other tasks elsewhere meanwhile, cheaper than a hop to a
/// blocking thread and back), a blocking thread on a current-thread runtime (a library user's
/// choice), where `block_in_place` is not available.
async fn answer_apart(
    state: Arc<ServerState>,
    session: Arc<SessionInfo>,
    id: u64,
    command: Result<Command, RequestError>,
    response_limit: usize,
) -> Option<Vec<u8>> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(|| execute(&state, &session, id, command, response_limit))
    } else {
        // Tracked: an aborted session leaves it running, and the server waits for it.
        let tasks = state.tasks.clone();
        tasks
            .spawn_blocking(move || execute(&state, &session, id, command, response_limit))
            .await
            .ok()
            .flatten()
    }
}

/// Runs a parsed request and encodes its answer.
fn execute(
    state: &ServerState,
    session: &SessionInfo,
    id: u64,
    command: Result<Command, RequestError>,
    response_limit: usize,
) -> Option<Vec<u8>> {
    let ctx = Context {
        state,
        tenant: &session.tenant,
        hello_token: &session.hello_token,
        response_limit,
    };
    let name = command.as_ref().map_or("unknown", |c| c.name());
    let result = command.and_then(|c| c.apply(&ctx));
    Some(answered(state, session, id, name, result, response_limit))
}

/// Counts and logs a request's outcome and encodes its answer.
fn answered(
    state: &ServerState,
    session: &SessionInfo,
    id: u64,
    name: &str,
    result: Result<commands::Reply, RequestError>,
    response_limit: usize,
) -> Vec<u8> {
    Metrics::add(&state.metrics.requests, 1);
    if let Err(err) = &result {
        Metrics::add(&state.metrics.request_errors, 1);
        tracing::debug!(request = name, id, tenant = %session.tenant, code = %err.code, "request failed");
    } else {
        tracing::trace!(request = name, id, tenant = %session.tenant, "request answered");
    }
    commands::encode(id, result, response_limit)
}
