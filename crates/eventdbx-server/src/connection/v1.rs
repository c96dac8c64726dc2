//! Protocol v1: the token and tenant checks of the hello, the optional `Noise_NNpsk0`
//! handshake, then one request at a time, answered in order.

use std::sync::Arc;

use eventdbx_proto::frame::{self, V1_MAX_NOISE_FRAME};
use eventdbx_proto::hello::ReceivedHello;
use eventdbx_proto::noise::{v1, Session};
use eventdbx_proto::transport::{read_frame, write_frame, FrameReader, SessionLimits};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::timeout_at;

use super::admission::{SessionsFull, Ticket};
use super::busy_poll::{poll_before_waiting, BusyPoll};
use super::inbound::{message_timed_out, next_frame, Inbound, MessageClock};
use super::outbound::write_answer;
use super::{
    accepted, answer, closing_notice, hello_tenant, leads_alone, reject, runs_inline,
    session_ended, take_session, waits_for_sync, SessionInfo, NOTICE_TIMEOUT,
};
use crate::commands;
use crate::state::ServerState;

pub(super) async fn serve_v1(
    state: Arc<ServerState>,
    mut socket: TcpStream,
    hello: ReceivedHello,
    ticket: &mut Ticket,
    shutdown: broadcast::Receiver<()>,
) {
    let plaintext = hello.no_noise && state.config.allow_plaintext;
    // Step 2: the token.
    let token = match &hello.token {
        Ok(token) => token.trim().to_owned(),
        Err(err) => return reject(&mut socket, &err.to_string(), plaintext).await,
    };
    if token.is_empty() {
        return reject(&mut socket, "missing control token", plaintext).await;
    }
    let claims = match state.auth.verify(&token) {
        Ok(claims) => claims,
        Err(err) => {
            tracing::info!(error = %err, "control token refused");
            return reject(&mut socket, "invalid control token", plaintext).await;
        }
    };
    // Steps 3–5: the tenant.
    let raw_tenant = match &hello.tenant_id {
        Ok(raw) if !raw.trim().is_empty() => raw.trim().to_owned(),
        _ => String::new(),
    };
    if hello.tenant_id.is_ok() && !raw_tenant.is_empty() && !claims.allows_tenant(&raw_tenant) {
        let message = format!("token does not grant access to tenant '{raw_tenant}'");
        return reject(&mut socket, &message, plaintext).await;
    }
    let tenant = match hello_tenant(&state, &hello) {
        Ok((_, tenant)) => tenant,
        Err(message) => return reject(&mut socket, &message, plaintext).await,
    };
    if !claims.allows_tenant(&tenant) {
        let message = format!("token does not grant access to tenant '{tenant}'");
        return reject(&mut socket, &message, plaintext).await;
    }
    // The token checked out: this peer is authenticated and needs a session slot.
    if take_session(&state, ticket).is_err() {
        return reject(&mut socket, SessionsFull::REASON, plaintext).await;
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
        let Ok(Ok(Some(msg1))) = timeout_at(
            ticket.deadline(),
            read_frame(&mut socket, V1_MAX_NOISE_FRAME),
        )
        .await
        else {
            return;
        };
        if responder.read_message1(&msg1).is_err() {
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
    ticket.established();
    v1_loop(state, socket, session, transport.as_mut(), shutdown).await;
}

/// Tells the peer why the session ends (the closing notice), sealed like any answer and bounded
/// in time.
async fn notify_closing(
    writer: &mut OwnedWriteHalf,
    noise: Option<&mut Session>,
    frame_limit: usize,
    what: &str,
) {
    let notice = closing_notice(what);
    let bytes = match noise {
        Some(session) => match session.sealer.seal(&notice) {
            Ok(sealed) => sealed,
            Err(_) => return,
        },
        None => notice,
    };
    let _ = tokio::time::timeout(NOTICE_TIMEOUT, write_frame(writer, &bytes, frame_limit)).await;
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
    // A v1 message is one frame: the clock runs from a frame's first byte to its last.
    let mut clock = MessageClock::new(&state);
    loop {
        // One request at a time: between two, nothing is in flight.
        poll_before_waiting(&state, &mut busy, &mut reader, true);
        let payload = tokio::select! {
            _ = shutdown.recv() => return,
            read = next_frame(&mut reader, &mut clock, true) => match read {
                Inbound::Frame(payload) => payload,
                Inbound::Ended => return,
                // A frame that can never be valid (over the limit): close, and say so.
                Inbound::Unreadable(err) => {
                    session_ended(&state, "unreadable frame", &err);
                    return notify_closing(&mut writer, noise.as_deref_mut(), frame_limit, "unreadable frame").await;
                }
                Inbound::TimedOut => return message_timed_out(&state),
            },
        };
        clock.message_done();
        busy.arrived();
        let request = match noise.as_deref_mut() {
            Some(session) => match session.opener.open(payload) {
                Ok(plain) => plain,
                Err(err) => {
                    session_ended(&state, "frame does not decrypt", &err);
                    return notify_closing(
                        &mut writer,
                        Some(session),
                        frame_limit,
                        "frame does not decrypt",
                    )
                    .await;
                }
            },
            None => payload.to_vec(),
        };
        // One request at a time: nothing else of this session can be waiting for its turn.
        let (id, command) = match commands::parse(&request) {
            Ok(parsed) => parsed,
            Err(err) => {
                session_ended(&state, "message does not decode", &err);
                return notify_closing(
                    &mut writer,
                    noise.as_deref_mut(),
                    frame_limit,
                    "message does not decode",
                )
                .await;
            }
        };
        // One request at a time: a durable write awaits its round on this task (`answer_write`),
        // and a durable snapshot that leads its own round runs right here too (`leads_alone`).
        let here = runs_inline(&state, &command)
            || (waits_for_sync(&state, &command) && leads_alone(&state));
        let response = answer(&state, &session, id, command, response_limit, here).await;
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
        let Ok(framed) = frame::encode(&bytes, frame_limit) else {
            return;
        };
        if write_answer(&state, &mut writer, &framed).await.is_err() {
            return;
        }
    }
}
