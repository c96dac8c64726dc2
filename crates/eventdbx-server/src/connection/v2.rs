//! Protocol v2: the `Noise_XXpsk3` handshake (the token arrives inside it), then requests read
//! as they come, up to [`V2_IN_FLIGHT`] running at once, each answer written when it is ready.

use std::sync::Arc;

use eventdbx_proto::hello::ReceivedHello;
use eventdbx_proto::noise::v2;
use eventdbx_proto::transport::{read_frame, write_frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout_at;

use super::admission::{SessionsFull, Ticket};
use super::busy_poll::{poll_before_waiting, BusyPoll};
use super::inbound::{message_timed_out, next_frame, Inbound, MessageBudget, MessageClock};
use super::outbound::write_answer;
use super::push::{Outlet, Subscriptions};
use super::{
    accepted, answer, closing_notice, hello_tenant, leads_alone, reject, runs_inline,
    session_ended, take_session, waits_for_sync, SessionInfo, NOTICE_TIMEOUT, V2_IN_FLIGHT,
};
use crate::commands;
use crate::state::ServerState;

/// The verdict for a revoked token (`docs/protocol.md`, "Handshake").
const REVOKED: &str = "token has been revoked";

pub(super) async fn serve_v2(
    state: Arc<ServerState>,
    mut socket: TcpStream,
    hello_bytes: Vec<u8>,
    hello: ReceivedHello,
    ticket: &mut Ticket,
    shutdown: broadcast::Receiver<()>,
) {
    // The v2 hello carries no token; the tenant grant is checked once the token arrives.
    let (_, tenant) = match hello_tenant(&state, &hello) {
        Ok(tenant) => tenant,
        Err(message) => return reject(&mut socket, &message, false).await,
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
        timeout_at(ticket.deadline(), read_frame(&mut socket, v2::FRAME_LIMIT)).await
    else {
        return;
    };
    let Ok(token_id) = responder.read_message1(&msg1) else {
        return;
    };
    let mut psk = state.auth.handshake_psk(&token_id);
    if psk.is_none() && state.registry_changed() {
        // A token the CLI issued a moment ago is not known here until the token files are read
        // again; read them now (only when the registry file changed) rather than refuse it for
        // up to a refresh period.
        let auth = Arc::clone(&state.auth);
        if let Ok(Err(err)) = state.tasks.spawn_blocking(move || auth.reload()).await {
            tracing::warn!(error = %err, "could not refresh tokens");
        }
        psk = state.auth.handshake_psk(&token_id);
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
        timeout_at(ticket.deadline(), read_frame(&mut socket, v2::FRAME_LIMIT)).await
    else {
        return;
    };
    let pending = match responder.read_message3(&msg3) {
        Ok(pending) => pending,
        Err(_) => {
            // Wrong or unknown token: the PSK did not match. Close without a word.
            return;
        }
    };
    let token = pending.token().to_owned();
    let verdict = match state.auth.verify(&token) {
        // Only the holder of the token reads this verdict (it is sealed under keys that depend
        // on the token's PSK), so naming the revocation tells nobody else anything.
        Err(_) if state.auth.is_revoked(&token) => {
            tracing::info!("control token refused: revoked");
            Err(REVOKED.to_owned())
        }
        Err(err) => {
            tracing::info!(error = %err, "control token refused");
            Err("invalid control token".to_owned())
        }
        Ok(claims) if !claims.allows_tenant(&tenant) => {
            Err(format!("token does not grant access to tenant '{tenant}'"))
        }
        // The token checked out: this peer is authenticated and needs a session slot.
        Ok(_) => take_session(&state, ticket).map_err(|_| SessionsFull::REASON.to_owned()),
    };
    if let Err(message) = verdict {
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
    ticket.established();
    let budget = ticket.message_budget();
    v2_loop(state, socket, info, session, budget, shutdown).await;
}

async fn v2_loop(
    state: Arc<ServerState>,
    socket: TcpStream,
    info: Arc<SessionInfo>,
    session: v2::ChunkedSession,
    budget: Arc<MessageBudget>,
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
        state: Arc::clone(&state),
        sealer,
        writer,
        broken: false,
    }));
    let mut subscriptions = Subscriptions::new(
        Arc::clone(&state),
        Arc::clone(&info),
        Arc::clone(&outbound) as Arc<dyn Outlet>,
        response_limit,
    );
    let slots = Arc::new(Semaphore::new(V2_IN_FLIGHT));
    // The requests running apart: aborted if this session is (the server's drain deadline), and
    // tracked, so the server waits until they are dropped.
    let mut apart = JoinSet::new();
    let mut busy = BusyPoll::new(state.config.socket.busy_poll_us);
    let mut clock = MessageClock::new(&state);
    // The budget held by the message being reassembled; it goes with the message to its answer.
    let mut reservation = None;
    loop {
        let idle = slots.available_permits() == V2_IN_FLIGHT;
        let between_messages = opener.pending_len().is_none();
        poll_before_waiting(&state, &mut busy, &mut reader, idle && between_messages);
        let payload = tokio::select! {
            _ = shutdown.recv() => break,
            read = next_frame(&mut reader, &mut clock, between_messages) => match read {
                Inbound::Frame(payload) => payload,
                Inbound::Ended => break,
                // A frame that can never be valid (over the limit): close, and say so.
                Inbound::Unreadable(err) => {
                    session_ended(&state, "unreadable frame", &err);
                    notify_closing(&outbound, "unreadable frame").await;
                    break;
                }
                Inbound::TimedOut => {
                    message_timed_out(&state);
                    break;
                }
            },
        };
        busy.arrived();
        let message = match opener.open_frame(payload) {
            Ok(Some(message)) => message,
            Ok(None) => {
                let Some(len) = opener.pending_len().filter(|_| reservation.is_none()) else {
                    continue;
                };
                // The first chunk of a large message: reserve its length before reading the
                // rest, or wait for room (reading nothing meanwhile).
                let reserved = tokio::select! {
                    _ = shutdown.recv() => break,
                    reserved = timeout_at(clock.deadline(), budget.reserve(&state, len)) => reserved,
                };
                let Ok(reserved) = reserved else {
                    message_timed_out(&state);
                    break;
                };
                reservation = Some(reserved);
                clock.restart();
                continue;
            }
            Err(err) => {
                session_ended(&state, "bad chunk", &err);
                notify_closing(&outbound, "bad chunk").await;
                break;
            }
        };
        clock.message_done();
        let held = reservation.take();
        // Not a Cap'n Proto message at all: no id to answer; the session ends with the closing
        // notice (id 0: `docs/protocol.md`, "Session rules"), as v1 sessions do.
        let (id, command) = match commands::parse(&message) {
            Ok(parsed) => parsed,
            Err(err) => {
                session_ended(&state, "message does not decode", &err);
                notify_closing(&outbound, "message does not decode").await;
                break;
            }
        };
        let Some(command) = subscriptions.take(id, command).await else {
            continue;
        };
        // A lone request (none in flight, no other one already received) runs from this task
        // and its answer goes out at once: a sequential client then costs no task hand-off per
        // request. Quick ones run right here; a lone durable write awaits its round here
        // ([`answer`]: it leads the round itself when none is running, and otherwise its task
        // waits without its thread), and so does a lone durable snapshot that leads its own
        // round ([`leads_alone`]); one that would wait for a running commit goes off the
        // runtime's scheduling ([`answer_apart`]) but still from this task, since spawning it
        // costs a wake-up and a hand-off per request. Requests that come in meanwhile wait in
        // the socket and are read (no longer lone) once it is answered. A pipelining client, and every
        // other request that may take long (a list, a verify, file I/O), gets its own task, so
        // they run side by side and durable writes share a commit.
        let lone = slots.available_permits() == V2_IN_FLIGHT && reader.buffered() == 0;
        if lone && (runs_inline(&state, &command) || waits_for_sync(&state, &command)) {
            let here = runs_inline(&state, &command) || leads_alone(&state);
            let answer = answer(&state, &info, id, command, response_limit, here).await;
            if let Some(answer) = answer {
                outbound.lock().await.send(&answer).await;
            }
            drop(held);
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while apart.try_join_next().is_some() {}
        let tasks = state.tasks.clone();
        let (state, info, outbound) =
            (Arc::clone(&state), Arc::clone(&info), Arc::clone(&outbound));
        apart.spawn(tasks.track_future(async move {
            if let Some(answer) = answer(&state, &info, id, command, response_limit, false).await {
                outbound.lock().await.send(&answer).await;
            }
            drop(held);
            drop(permit);
        }));
    }
    // A message cut short gives its budget back before the peer sees the connection close.
    drop(reservation);
    // Subscriptions end with the session; requests in flight finish and their answers go out
    // before closing.
    drop(subscriptions);
    let _ = slots.acquire_many(V2_IN_FLIGHT as u32).await;
    let _ = outbound.lock().await.writer.shutdown().await;
}

/// The sending side of a v2 session.
struct Outbound {
    state: Arc<ServerState>,
    sealer: v2::ChunkSealer,
    writer: tokio::net::tcp::OwnedWriteHalf,
    broken: bool,
}

/// Tells the peer why the session ends (the closing notice), bounded in time.
async fn notify_closing(outbound: &tokio::sync::Mutex<Outbound>, what: &str) {
    let notice = closing_notice(what);
    let _ = tokio::time::timeout(NOTICE_TIMEOUT, async {
        outbound.lock().await.send(&notice).await;
    })
    .await;
}

impl Outbound {
    /// Seals and writes one answer; after a failure nothing more is sent (the reader side then
    /// sees the connection end: a peer that stopped reading gets its socket shut both ways,
    /// `outbound::write_answer`).
    async fn send(&mut self, answer: &[u8]) {
        if self.broken {
            return;
        }
        let written = match self.sealer.seal_message(answer) {
            Ok(sealed) => write_answer(&self.state, &mut self.writer, &sealed)
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !written {
            self.broken = true;
            let _ = self.writer.shutdown().await;
        }
    }
}

/// Subscriptions' batches go out through the same lock as the answers.
impl Outlet for tokio::sync::Mutex<Outbound> {
    fn send<'a>(
        &'a self,
        message: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { self.lock().await.send(message).await })
    }
}
