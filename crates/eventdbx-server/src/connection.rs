//! One control connection: the hello (§3–§5), the v1 or v2 handshake, then the session loop.
//!
//! v1 sessions answer one request at a time, in order, as EventDBX does. v2 sessions read
//! requests as they come, run up to [`V2_IN_FLIGHT`] at once and write each answer when it is
//! ready (answers carry the request id).
//!
//! After answering, a session whose conversation is hot polls its socket for a moment before
//! it parks ([`BusyPoll`], `[socket] busy_poll_us`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventdbx_core::names::normalize_tenant_id;
use eventdbx_proto::frame::{Polled, V1_MAX_NOISE_FRAME};
use eventdbx_proto::hello::{
    classify_first_message, cli_rejection, FirstMessage, HelloResponse, ReceivedHello,
};
use eventdbx_proto::negotiate::{self, ServerPath};
use eventdbx_proto::noise::{v1, v2, Session};
use eventdbx_proto::transport::{
    poll_cap, read_frame, read_hello, write_frame, FrameReader, PollSlot, SessionLimits,
};
use eventdbx_store::{Durability, EventStore};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Semaphore};
use tokio::time::timeout;

use crate::commands::{self, Command, Context};
use crate::error::RequestError;
use crate::server::{Metrics, ServerState, IDLE_TIMEOUT};

/// Time allowed for the hello and each handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests of one v2 session running at once.
pub const V2_IN_FLIGHT: usize = 64;
/// What our server honours beyond the reference (§12.2).
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

pub(crate) async fn serve(
    state: Arc<ServerState>,
    mut socket: TcpStream,
    shutdown: broadcast::Receiver<()>,
) {
    // Each frame goes out in one write; without this a reply would wait for a delayed ACK.
    let _ = socket.set_nodelay(true);
    let Ok(Ok(hello_bytes)) = timeout(HANDSHAKE_TIMEOUT, read_hello(&mut socket)).await else {
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
    match negotiate::server_path(hello.protocol_version, state.config.accept_v1) {
        Err(message) => reject(&state, &mut socket, &message, false).await,
        Ok(ServerPath::V1) => serve_v1(state, socket, hello, shutdown).await,
        Ok(ServerPath::V2) => serve_v2(state, socket, hello_bytes, hello, shutdown).await,
    }
}

async fn reject(state: &ServerState, socket: &mut TcpStream, message: &str, no_noise: bool) {
    Metrics::add(&state.metrics.handshake_failures, 1);
    tracing::info!(reason = message, "hello rejected");
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

/// §5 steps 3 and 5: the tenant the hello names (or the default), normalised.
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

async fn serve_v1(
    state: Arc<ServerState>,
    mut socket: TcpStream,
    hello: ReceivedHello,
    shutdown: broadcast::Receiver<()>,
) {
    let plaintext = hello.no_noise && state.config.allow_plaintext;
    // Step 2: the token.
    let token = match &hello.token {
        Ok(token) => token.trim().to_owned(),
        Err(err) => return reject(&state, &mut socket, &err.to_string(), plaintext).await,
    };
    if token.is_empty() {
        return reject(&state, &mut socket, "missing control token", plaintext).await;
    }
    let claims = match state.auth.verify(&token) {
        Ok(claims) => claims,
        Err(err) => {
            tracing::info!(error = %err, "control token refused");
            return reject(&state, &mut socket, "invalid control token", plaintext).await;
        }
    };
    // Steps 3–5: the tenant.
    let raw_tenant = match &hello.tenant_id {
        Ok(raw) if !raw.trim().is_empty() => raw.trim().to_owned(),
        _ => String::new(),
    };
    if hello.tenant_id.is_ok() && !raw_tenant.is_empty() && !claims.allows_tenant(&raw_tenant) {
        let message = format!("token does not grant access to tenant '{raw_tenant}'");
        return reject(&state, &mut socket, &message, plaintext).await;
    }
    let tenant = match hello_tenant(&state, &hello) {
        Ok((_, tenant)) => tenant,
        Err(message) => return reject(&state, &mut socket, &message, plaintext).await,
    };
    if !claims.allows_tenant(&tenant) {
        let message = format!("token does not grant access to tenant '{tenant}'");
        return reject(&state, &mut socket, &message, plaintext).await;
    }
    if socket
        .write_all(&accepted(plaintext).encode())
        .await
        .is_err()
    {
        return;
    }
    let mut transport = if plaintext {
        None
    } else {
        // A wrong PSK or prologue fails here; EventDBX closes without a reply, and so do we.
        let Ok(mut responder) = v1::Responder::new(&token) else {
            return;
        };
        let Ok(Ok(Some(msg1))) = timeout(
            HANDSHAKE_TIMEOUT,
            read_frame(&mut socket, V1_MAX_NOISE_FRAME),
        )
        .await
        else {
            return;
        };
        if responder.read_message1(&msg1).is_err() {
            Metrics::add(&state.metrics.handshake_failures, 1);
            return;
        }
        let Ok((msg2, session)) = responder.write_message2() else {
            return;
        };
        if write_frame(&mut socket, &msg2, V1_MAX_NOISE_FRAME)
            .await
            .is_err()
        {
            return;
        }
        Some(session)
    };
    let session = Arc::new(SessionInfo {
        tenant,
        hello_token: token,
    });
    v1_loop(state, socket, session, transport.as_mut(), shutdown).await;
}

async fn v1_loop(
    state: Arc<ServerState>,
    socket: TcpStream,
    session: Arc<SessionInfo>,
    mut noise: Option<&mut Session>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let SessionLimits {
        frame: frame_limit,
        message: response_limit,
    } = SessionLimits::v1(noise.is_some());
    let (reader, mut writer) = socket.into_split();
    let mut reader = FrameReader::new(reader, frame_limit);
    let mut busy = BusyPoll::new(state.config.socket.busy_poll_us);
    loop {
        // One request at a time: between two, nothing is in flight.
        poll_before_waiting(&state, &mut busy, &mut reader, true);
        let payload = tokio::select! {
            _ = shutdown.recv() => return,
            read = timeout(IDLE_TIMEOUT, reader.next()) => match read {
                Ok(Ok(Some(payload))) => payload,
                // EOF, a reset, an oversize or truncated frame, or idleness: close quietly.
                _ => return,
            },
        };
        busy.arrived();
        let request = match noise.as_deref_mut() {
            Some(session) => match session.opener.open(payload) {
                Ok(plain) => plain,
                Err(_) => return,
            },
            None => payload.to_vec(),
        };
        // One request at a time: nothing else of this session can be waiting for its turn.
        let Ok((id, command)) = commands::parse(&request) else {
            return;
        };
        let response = if runs_inline(&state, &command) {
            execute(&state, &session, id, command, response_limit)
        } else {
            answer_apart(
                Arc::clone(&state),
                Arc::clone(&session),
                id,
                command,
                response_limit,
            )
            .await
        };
        let Some(response) = response else {
            return;
        };
        let bytes = match noise.as_deref_mut() {
            Some(session) => match session.sealer.seal(&response) {
                Ok(sealed) => sealed,
                Err(_) => return,
            },
            None => response,
        };
        if write_frame(&mut writer, &bytes, frame_limit).await.is_err() {
            return;
        }
    }
}

async fn serve_v2(
    state: Arc<ServerState>,
    mut socket: TcpStream,
    hello_bytes: Vec<u8>,
    hello: ReceivedHello,
    shutdown: broadcast::Receiver<()>,
) {
    // The v2 hello carries no token; the tenant grant is checked once the token arrives.
    let (_, tenant) = match hello_tenant(&state, &hello) {
        Ok(tenant) => tenant,
        Err(message) => return reject(&state, &mut socket, &message, false).await,
    };
    let response = accepted(false).encode();
    if socket.write_all(&response).await.is_err() {
        return;
    }
    let max_message = usize::try_from(state.config.max_message_bytes).unwrap_or(usize::MAX);
    let prologue = v2::prologue(&hello_bytes, &response);
    let Ok(mut responder) = v2::Responder::new(&state.server_key, max_message, &prologue) else {
        return;
    };
    let Ok(Ok(Some(msg1))) =
        timeout(HANDSHAKE_TIMEOUT, read_frame(&mut socket, v2::FRAME_LIMIT)).await
    else {
        return;
    };
    let Ok(token_id) = responder.read_message1(&msg1) else {
        return;
    };
    let mut psk = state.auth.psk_for(&token_id);
    if psk.is_none() && state.registry_changed() {
        // A token the CLI issued a moment ago is not known here until the token files are read
        // again; read them now (only when the registry file changed) rather than refuse it for
        // up to a refresh period.
        let auth = Arc::clone(&state.auth);
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || auth.reload()).await {
            tracing::warn!(error = %err, "could not refresh tokens");
        }
        psk = state.auth.psk_for(&token_id);
    }
    let Ok(msg2) = responder.write_message2(psk.as_ref()) else {
        return;
    };
    if write_frame(&mut socket, &msg2, v2::FRAME_LIMIT)
        .await
        .is_err()
    {
        return;
    }
    let Ok(Ok(Some(msg3))) =
        timeout(HANDSHAKE_TIMEOUT, read_frame(&mut socket, v2::FRAME_LIMIT)).await
    else {
        return;
    };
    let pending = match responder.read_message3(&msg3) {
        Ok(pending) => pending,
        Err(_) => {
            // Wrong or unknown token: the PSK did not match. Close without a word.
            Metrics::add(&state.metrics.handshake_failures, 1);
            return;
        }
    };
    let token = pending.token().to_owned();
    let verdict = match state.auth.verify(&token) {
        Err(err) => {
            tracing::info!(error = %err, "control token refused");
            Err("invalid control token".to_owned())
        }
        Ok(claims) if !claims.allows_tenant(&tenant) => {
            Err(format!("token does not grant access to tenant '{tenant}'"))
        }
        Ok(_) => Ok(()),
    };
    if let Err(message) = verdict {
        Metrics::add(&state.metrics.handshake_failures, 1);
        if let Ok(rejection) = pending.reject(&message) {
            let _ = socket.write_all(&rejection).await;
        }
        return;
    }
    let Ok((verdict, session)) = pending.accept() else {
        return;
    };
    if socket.write_all(&verdict).await.is_err() {
        return;
    }
    let info = Arc::new(SessionInfo {
        tenant,
        hello_token: token,
    });
    v2_loop(state, socket, info, session, shutdown).await;
}

async fn v2_loop(
    state: Arc<ServerState>,
    socket: TcpStream,
    info: Arc<SessionInfo>,
    session: v2::ChunkedSession,
    mut shutdown: broadcast::Receiver<()>,
) {
    let v2::ChunkedSession {
        sealer, mut opener, ..
    } = session;
    let response_limit = sealer
        .peer_max()
        .min(usize::try_from(state.config.max_message_bytes).unwrap_or(usize::MAX));
    let (reader, writer) = socket.into_split();
    let mut reader = FrameReader::new(reader, v2::FRAME_LIMIT);
    // Whoever finishes a request seals and writes its answer, whole, under this lock: no hop
    // through a writer task.
    let outbound = Arc::new(tokio::sync::Mutex::new(Outbound {
        sealer,
        writer,
        broken: false,
    }));
    let slots = Arc::new(Semaphore::new(V2_IN_FLIGHT));
    let mut busy = BusyPoll::new(state.config.socket.busy_poll_us);
    loop {
        let idle = slots.available_permits() == V2_IN_FLIGHT;
        poll_before_waiting(&state, &mut busy, &mut reader, idle);
        let payload = tokio::select! {
            _ = shutdown.recv() => break,
            read = timeout(IDLE_TIMEOUT, reader.next()) => match read {
                Ok(Ok(Some(payload))) => payload,
                _ => break,
            },
        };
        busy.arrived();
        let message = match opener.open_frame(payload) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(_) => break,
        };
        // Not a Cap'n Proto message at all: no id to answer; the session ends without a reply
        // (01-wire-protocol.md §9), as v1 sessions do.
        let Ok((id, command)) = commands::parse(&message) else {
            break;
        };
        // A lone request (none in flight, no other one already received) runs right here and
        // its answer goes out at once: a sequential client then costs no task hand-off per
        // request. A pipelining client, and every request that may block or take long (a
        // durable write, a list, a verify, file I/O), gets its own task, so they run side by
        // side and durable writes share a commit.
        let lone = slots.available_permits() == V2_IN_FLIGHT && reader.buffered() == 0;
        if lone && runs_inline(&state, &command) {
            if let Some(answer) = execute(&state, &info, id, command, response_limit) {
                outbound.lock().await.send(&answer).await;
            }
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (state, info, outbound) =
            (Arc::clone(&state), Arc::clone(&info), Arc::clone(&outbound));
        tokio::spawn(async move {
            if let Some(answer) = answer_apart(state, info, id, command, response_limit).await {
                outbound.lock().await.send(&answer).await;
            }
            drop(permit);
        });
    }
    // Let the requests in flight finish and their answers go out before closing.
    let _ = slots.acquire_many(V2_IN_FLIGHT as u32).await;
    let _ = outbound.lock().await.writer.shutdown().await;
}

/// The sending side of a v2 session.
struct Outbound {
    sealer: v2::ChunkSealer,
    writer: tokio::net::tcp::OwnedWriteHalf,
    broken: bool,
}

impl Outbound {
    /// Seals and writes one answer; after a failure nothing more is sent (the reader side then
    /// sees the connection end).
    async fn send(&mut self, answer: &[u8]) {
        if self.broken {
            return;
        }
        let written = match self.sealer.seal_message(answer) {
            Ok(sealed) => self.writer.write_all(&sealed).await.is_ok(),
            Err(_) => false,
        };
        if !written {
            self.broken = true;
            let _ = self.writer.shutdown().await;
        }
    }
}

/// Whether a request runs on the session's own task, without leaving the runtime's thread:
/// the reads of one aggregate, one snapshot, the schemas or one outbox page, and writes to one
/// aggregate when the store does not flush before acknowledging. These take tens of
/// microseconds, less than handing them to another thread and back. The rest run apart
/// ([`answer_apart`]), so that they never hold up the other tasks of this runtime thread:
/// durable writes wait for a flush (and share it with concurrent ones), lists may scan many
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
            | Command::GetSnapshot(_),
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
        tokio::task::spawn_blocking(move || execute(&state, &session, id, command, response_limit))
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
    Metrics::add(&state.metrics.requests, 1);
    if let Err(err) = &result {
        Metrics::add(&state.metrics.request_errors, 1);
        tracing::debug!(request = name, id, tenant = %session.tenant, code = %err.code, "request failed");
    } else {
        tracing::trace!(request = name, id, tenant = %session.tenant, "request answered");
    }
    Some(commands::encode(id, result, response_limit))
}

/// A session whose next request comes later than this after its answer (wake-ups included) is
/// idle: it does not poll before the request after.
const HOT_GAP: Duration = Duration::from_millis(1);
/// Exponent of the longest back-off: after polls that end with no request, the session lets up
/// to 2^6 = 64 waits pass without polling before it tries again.
const MAX_BACKOFF_SHIFT: u32 = 6;

/// When a session polls its socket before parking (`[socket] busy_poll_us`).
///
/// A sequential client sends its next request a few microseconds after reading an answer. If
/// the session has parked by then, the runtime thread sleeps in `epoll_wait`; on a VM whose
/// idle vCPUs halt, waking it costs tens of microseconds per request. Reading the socket with
/// non-blocking `recv`s for a moment first catches the request on a running CPU. Polling is
/// adaptive: only when the previous request came within [`HOT_GAP`] of the answer before it
/// (an idle connection never polls), and after polls that end with no request the session
/// backs off (polls once every 2, 4, … 64 waits) until one catches a request again.
#[derive(Debug)]
struct BusyPoll {
    budget: Duration,
    /// When the session last began to wait with nothing in flight.
    waiting_since: Option<Instant>,
    /// The previous request came within [`HOT_GAP`] of the answer before it.
    hot: bool,
    /// Polls in a row that ended with no request (at most [`MAX_BACKOFF_SHIFT`]).
    misses: u32,
    /// Waits still to let pass without polling.
    skip: u32,
}

impl BusyPoll {
    fn new(micros: u64) -> Self {
        BusyPoll {
            budget: Duration::from_micros(micros),
            waiting_since: None,
            hot: false,
            misses: 0,
            skip: 0,
        }
    }

    /// The session is about to wait for a request; `idle`: nothing in flight, nothing buffered.
    /// Whether it should poll first.
    fn before_wait(&mut self, idle: bool) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if !idle {
            // Requests are running: the gap to the next one says nothing about the client.
            self.waiting_since = None;
            return false;
        }
        self.waiting_since = Some(Instant::now());
        if !self.hot {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// A poll ended: `hit` when a request (or the end of the stream) came within the budget.
    fn polled(&mut self, hit: bool) {
        if hit {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(MAX_BACKOFF_SHIFT);
            self.skip = 1 << self.misses;
        }
    }

    /// A frame arrived.
    fn arrived(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.hot = since.elapsed() <= HOT_GAP;
        }
    }
}

/// Polls the socket before the session parks, when [`BusyPoll`] says so and a slot is free (a
/// session without one just waits). `idle`: no request of the session in flight.
fn poll_before_waiting(
    state: &ServerState,
    busy: &mut BusyPoll,
    reader: &mut FrameReader<OwnedReadHalf>,
    idle: bool,
) {
    if !busy.before_wait(idle && reader.buffered() == 0) {
        return;
    }
    // One per runtime worker but one may poll, so that polling sessions never hold them all.
    let workers = tokio::runtime::Handle::try_current()
        .map(|handle| handle.metrics().num_workers())
        .unwrap_or(1);
    let Some(slot) = PollSlot::take(&state.metrics.busy_polling, poll_cap(workers)) else {
        return;
    };
    state
        .metrics
        .busy_polling_peak
        .fetch_max(slot.rank(), std::sync::atomic::Ordering::Relaxed);
    Metrics::add(&state.metrics.busy_polls, 1);
    // tokio's sockets are non-blocking: a `recv` behind its back returns at once. That is sound
    // with its edge-triggered reactor: a stale readiness costs one `recv` that finds nothing,
    // and every later arrival raises a new event.
    let hit = reader.poll_for_frame(busy.budget, |half, buf| {
        std::io::Read::read(&mut &*socket2::SockRef::from(half.as_ref()), buf)
    }) != Polled::TimedOut;
    if hit {
        Metrics::add(&state.metrics.busy_poll_hits, 1);
    }
    busy.polled(hit);
}
