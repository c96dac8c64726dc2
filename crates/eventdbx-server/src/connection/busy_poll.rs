//! When a session polls its socket before it parks (`[socket] busy_poll_us`), and the poll.

use std::time::{Duration, Instant};

use eventdbx_proto::frame::Polled;
use eventdbx_proto::transport::{poll_cap, FrameReader, PollSlot};
use tokio::net::tcp::OwnedReadHalf;

use crate::state::{Metrics, ServerState};

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
pub(super) struct BusyPoll {
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
    pub(super) fn new(micros: u64) -> Self {
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
    pub(super) fn arrived(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.hot = since.elapsed() <= HOT_GAP;
        }
    }
}

/// Polls the socket before the session parks, when [`BusyPoll`] says so and a slot is free (a
/// session without one just waits). `idle`: no request of the session in flight.
pub(super) fn poll_before_waiting(
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
