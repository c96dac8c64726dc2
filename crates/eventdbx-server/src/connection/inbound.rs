//! What a session reads: frames under two clocks, and the budget large messages reserve
//! (`docs/server.md`, "Connection limits").
//!
//! Between messages a session may stay silent for [`IDLE_TIMEOUT`]. Once a message has begun
//! (the first byte of its first frame header is in), the whole message must arrive within
//! `[socket] message_timeout_ms`: a peer that announces a large message and stalls holds its
//! buffer and its reservation only that long.
//!
//! A v2 message of several chunks reserves its announced length from a budget shared by every
//! connection (`[socket] message_budget_bytes`) as soon as its first chunk is open, and holds the
//! reservation until its answer is written. When the budget is spent the session waits: it
//! reads nothing more (TCP holds the sender back), so nothing is allocated for the message
//! beyond its first chunk. It waits rather than being refused because the protocol cannot
//! answer a message that has not arrived whole (its request id is inside it), so a refusal could
//! only close the session; a burst of legitimate large requests then merely queues. The wait is
//! bounded by the message deadline too, so peers that stall while holding the budget cannot park
//! the waiting ones for longer than that, and they give their reservations back when their own
//! deadline closes them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::transport::{FrameReader, TransportError};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

use super::session_ended;
use crate::state::{Metrics, ServerState, IDLE_TIMEOUT};

/// Bytes of messages being received and answered, across all connections.
#[derive(Debug)]
pub(crate) struct MessageBudget {
    bytes: Arc<Semaphore>,
    capacity: u32,
}

impl MessageBudget {
    /// A budget of `capacity` bytes (at most 4 GiB: one reservation is a `u32` of permits).
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
        MessageBudget {
            bytes: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Reserves `len` bytes (the whole budget for a larger message), waiting for room; the
    /// reservation lasts until the returned value is dropped.
    pub(super) async fn reserve(&self, state: &Arc<ServerState>, len: usize) -> Reservation {
        let want = u32::try_from(len).unwrap_or(u32::MAX).min(self.capacity);
        let permit = match Arc::clone(&self.bytes).try_acquire_many_owned(want) {
            Ok(permit) => permit,
            Err(_) => {
                Metrics::add(&state.metrics.message_budget_waits, 1);
                match Arc::clone(&self.bytes).acquire_many_owned(want).await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let metrics = &state.metrics;
        let bytes = u64::from(want);
        let now = metrics
            .message_bytes_reserved
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        metrics
            .message_bytes_reserved_peak
            .fetch_max(now, Ordering::Relaxed);
        Reservation {
            _permit: permit,
            bytes,
            state: Arc::clone(state),
        }
    }
}

/// Bytes of the message budget held for one message, given back when dropped.
#[derive(Debug)]
pub(super) struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    state: Arc<ServerState>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.state
            .metrics
            .message_bytes_reserved
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// When the message under way must have arrived whole.
#[derive(Debug)]
pub(super) struct MessageClock {
    limit: Duration,
    deadline: Option<Instant>,
}

impl MessageClock {
    pub(super) fn new(state: &ServerState) -> Self {
        MessageClock {
            limit: Duration::from_millis(state.config.socket.message_timeout_ms),
            deadline: None,
        }
    }

    /// The deadline of the message under way, starting now if none is.
    pub(super) fn deadline(&mut self) -> Instant {
        *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.limit)
    }

    /// A new message has begun, or the one under way was held up by the server (its wait for
    /// the budget): its time starts now.
    pub(super) fn restart(&mut self) {
        self.deadline = Some(Instant::now() + self.limit);
    }

    /// The message under way arrived whole.
    pub(super) fn message_done(&mut self) {
        self.deadline = None;
    }
}

/// What waiting for the next frame gave.
pub(super) enum Inbound<'a> {
    Frame(&'a [u8]),
    /// The peer left (even mid-frame), the connection failed, or it stayed idle too long:
    /// close quietly.
    Ended,
    /// A frame that can never be valid (over the limit).
    Unreadable(TransportError),
    /// A message begun did not arrive whole in time.
    TimedOut,
}

/// The next frame. `between_messages`: no chunk of a message under way has been received. While
/// nothing of the next frame has arrived either, the session is idle and waits up to
/// [`IDLE_TIMEOUT`]; from the first byte on, the frame must come by the clock's deadline.
/// Cancel-safe: bytes read stay in the reader.
pub(super) async fn next_frame<'r>(
    reader: &'r mut FrameReader<OwnedReadHalf>,
    clock: &mut MessageClock,
    between_messages: bool,
) -> Inbound<'r> {
    if between_messages && reader.buffered() == 0 {
        // Idle: a large message before this one leaves no large buffer behind.
        reader.shrink_when_empty();
        match timeout(IDLE_TIMEOUT, reader.fill()).await {
            Ok(Ok(0) | Err(TransportError::Io(_))) | Err(_) => return Inbound::Ended,
            Ok(Err(err)) => return Inbound::Unreadable(err),
            Ok(Ok(_)) => clock.restart(),
        }
    }
    match timeout_at(clock.deadline(), reader.next()).await {
        Err(_) => Inbound::TimedOut,
        Ok(Ok(Some(frame))) => Inbound::Frame(frame),
        Ok(Ok(None) | Err(TransportError::Io(_))) => Inbound::Ended,
        Ok(Err(err)) => Inbound::Unreadable(err),
    }
}

/// Closes a session whose message did not arrive whole in time: counted apart, and as a
/// protocol error (logged once per burst).
pub(super) fn message_timed_out(state: &ServerState) {
    Metrics::add(&state.metrics.message_timeouts, 1);
    let limit = state.config.socket.message_timeout_ms;
    session_ended(
        state,
        "a message did not arrive whole in time",
        &format_args!("no complete message within {limit} ms of its first byte"),
    );
}
