//! Writing to a peer that may stop reading (`[socket] answer_timeout_ms`, `docs/server.md`,
//! "Connection limits").
//!
//! An answer, a subscription's batch, goes out in as many writes as the socket takes. A peer
//! that reads nothing fills its receive window and then the server's send buffer; without a
//! bound the session would wait on that write for as long as the peer keeps the connection
//! open, holding its slot, its buffers and every answer queued behind it, past the idle
//! timeout (which only bounds waiting for a request). So a write during which the peer takes
//! no byte for `answer_timeout_ms` ends the session: a peer that reads slowly, however
//! large the answer, keeps it going as long as it takes some of it.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::session_ended;
use crate::state::{Metrics, ServerState};

/// Writes `bytes` whole, or gives up when the peer took none of them for
/// `[socket] answer_timeout_ms`: then the session is over (counted, logged once per burst) and
/// the socket is shut both ways, so the session's reader meets the end of the stream at once.
pub(super) async fn write_answer(
    state: &ServerState,
    writer: &mut OwnedWriteHalf,
    bytes: &[u8],
) -> io::Result<()> {
    let stall = Duration::from_millis(state.config.socket.answer_timeout_ms);
    let mut rest = bytes;
    while !rest.is_empty() {
        // The timer only starts when the write has to wait: a write the socket takes at once
        // never registers it.
        match tokio::time::timeout(stall, writer.write(rest)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(written)) => rest = &rest[written..],
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                answer_timed_out(state, writer);
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }
    Ok(())
}

fn answer_timed_out(state: &ServerState, writer: &OwnedWriteHalf) {
    Metrics::add(&state.metrics.answer_timeouts, 1);
    let limit = state.config.socket.answer_timeout_ms;
    session_ended(
        state,
        "the peer stopped reading",
        &format_args!("it took no byte of an answer for {limit} ms"),
    );
    // Both ways: the reader half sees the end of the stream, so this session's loop stops. No
    // linger: when the session drops the socket, what the peer never took is discarded (the
    // peer gets a reset) instead of being kept by the kernel for a peer that reads nothing.
    let socket = socket2::SockRef::from(writer.as_ref());
    let _ = socket.set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(std::net::Shutdown::Both);
}
