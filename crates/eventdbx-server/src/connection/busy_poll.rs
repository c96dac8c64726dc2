//! When a session polls its socket before it parks (`[socket] busy_poll_us`), and the poll.

use std::time::{Duration, Instant};

use eventdbx_proto::frame::Polled;
use eventdbx_proto::transport::{poll_cap, FrameReader, PollBudget, PollSlot, Waited};
use tokio::net::tcp::OwnedReadHalf;

use crate::state::{Metrics, ServerState};

/// When a session polls its socket before parking (`[socket] busy_poll_us`).
///
/// A sequential client sends its next request a few microseconds after reading an answer. If
/// the session has parked by then, the runtime thread sleeps in `epoll_wait`; on a VM whose
/// idle vCPUs halt, waking it costs tens of microseconds per request. Reading the socket with
/// non-blocking `recv`s for a moment first catches the request on a running CPU. Polling is
/// adaptive ([`PollBudget`]): a session polls only after requests that came within a
/// millisecond of the answer before them, and backs off to no polling at all when its polls
/// end with nothing, so an idle or slow connection costs (next to) nothing.
#[derive(Debug)]
pub(super) struct BusyPoll {
    budget: PollBudget,
    /// `busy_poll_us` is zero: never poll, never read the clock.
    off: bool,
    /// When the session last began to wait with nothing in flight.
    waiting_since: Option<Instant>,
    /// That wait began with a poll that ended with nothing.
    missed: bool,
}

impl BusyPoll {
    pub(super) fn new(micros: u64) -> Self {
        BusyPoll {
            budget: PollBudget::new(Duration::from_micros(micros)),
            off: micros == 0,
            waiting_since: None,
            missed: false,
        }
    }

    /// The session is about to wait for a request; `idle`: nothing in flight, nothing buffered.
    /// How long it should poll first (zero: not at all).
    fn before_wait(&mut self, idle: bool) -> Duration {
        if self.off || !idle {
            // Requests are running: the gap to the next one says nothing about the client.
            self.waiting_since = None;
            return Duration::ZERO;
        }
        self.waiting_since = Some(Instant::now());
        self.missed = false;
        self.budget.budget()
    }

    /// A poll ended: `hit` when a request (or the end of the stream) came within the budget.
    fn polled(&mut self, hit: bool) {
        if hit {
            self.waiting_since = None;
            self.budget.waited(Waited::Caught);
        } else {
            self.missed = true;
        }
    }

    /// A frame arrived.
    pub(super) fn arrived(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.budget.waited(Waited::Parked {
                polled: self.missed,
                after: since.elapsed(),
            });
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
    let budget = busy.before_wait(idle && reader.buffered() == 0);
    if budget.is_zero() {
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
    let hit = reader.poll_for_frame(budget, |half, buf| {
        std::io::Read::read(&mut &*socket2::SockRef::from(half.as_ref()), buf)
    }) != Polled::TimedOut;
    drop(slot);
    if hit {
        Metrics::add(&state.metrics.busy_poll_hits, 1);
    }
    busy.polled(hit);
}
