//! Who may hold a connection (`docs/server.md`, "Connection limits").
//!
//! Every connection is accepted at once. Until it completes its hello and handshake it is
//! *pending* and holds a place in a small budget, global and per source address; when a new
//! connection finds the budget full, the oldest pending one (of the same address when that
//! address is over its share) is closed to make room. Holding idle sockets open therefore never
//! keeps a newcomer out: it only shortens the time a pending connection is given, and that time
//! is bounded anyway by [`PREAUTH_DEADLINE`]. Only an authenticated connection takes one of the
//! [`MAX_SESSIONS`] session slots, so pending connections can never starve sessions; when every
//! slot is taken the newcomer is told so and closed, not left waiting in the listen backlog.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::inbound::MessageBudget;

/// Most authenticated sessions at once.
pub const MAX_SESSIONS: usize = 1024;
/// Most connections still in their hello or handshake, from all addresses together.
pub const MAX_PREAUTH: usize = 256;
/// Most connections still in their hello or handshake from one source address.
pub const MAX_PREAUTH_PER_IP: usize = 64;
/// Time a connection has to send its hello and finish its handshake, all messages together.
pub const PREAUTH_DEADLINE: Duration = Duration::from_secs(5);

/// The connection budgets of one server.
#[derive(Debug)]
pub(crate) struct Gate {
    sessions: Arc<Semaphore>,
    /// Bytes of large messages in flight, shared by every session (`super::inbound`).
    messages: Arc<MessageBudget>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    /// Pending connections, oldest first, with the means to close each.
    by_age: BTreeMap<u64, (IpAddr, oneshot::Sender<Closing>)>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<oneshot::Sender<Closing>> {
        let (ip, evict) = self.by_age.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(evict)
    }
}

impl Gate {
    /// The budgets of one server, with `message_budget_bytes` for messages in flight.
    pub(crate) fn new(message_budget_bytes: u64) -> Self {
        Gate {
            sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
            messages: Arc::new(MessageBudget::new(message_budget_bytes)),
            pending: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Admits a new connection from `ip` as pending; returns its ticket, the signal that it was
    /// evicted to make room for a newer one, and how many older ones this admission evicted.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> (Ticket, Eviction, u64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut evictions = 0;
        if pending.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_PREAUTH_PER_IP {
            let oldest = pending
                .by_age
                .iter()
                .find(|(_, (from, _))| *from == ip)
                .map(|(id, _)| *id);
            evictions += oldest
                .and_then(|id| pending.remove(id))
                .map(close)
                .unwrap_or(0);
        }
        if pending.by_age.len() >= MAX_PREAUTH {
            let oldest = pending.by_age.keys().next().copied();
            evictions += oldest
                .and_then(|id| pending.remove(id))
                .map(close)
                .unwrap_or(0);
        }
        pending.by_age.insert(id, (ip, evict));
        *pending.per_ip.entry(ip).or_insert(0) += 1;
        let ticket = Ticket {
            gate: Arc::clone(self),
            id,
            deadline: tokio::time::Instant::now() + PREAUTH_DEADLINE,
            session: None,
            established: false,
        };
        (ticket, Eviction(evicted), evictions)
    }

    fn leave_pending(&self, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Dropping the sender (rather than sending) tells the connection it was not evicted.
        drop(pending.remove(id));
    }

    /// Closes every pending connection: the server is shutting down, and a connection that has
    /// not authenticated has no request in flight to finish.
    pub(crate) fn close_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.per_ip.clear();
        for (_, (_, evict)) in std::mem::take(&mut pending.by_age) {
            let _ = evict.send(Closing::ShuttingDown);
        }
    }
}

fn close(evict: oneshot::Sender<Closing>) -> u64 {
    // The connection may have ended already; it counts as evicted only if it was still there.
    u64::from(evict.send(Closing::Evicted).is_ok())
}

/// Why a pending connection is closed before its handshake ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// To make room in the pending budget for a newer connection.
    Evicted,
    /// The server is shutting down.
    ShuttingDown,
}

/// Resolves when the connection is closed while pending; never once it left the pending budget.
#[derive(Debug)]
pub(crate) struct Eviction(oneshot::Receiver<Closing>);

impl Eviction {
    pub(crate) async fn wait(self) -> Closing {
        match self.0.await {
            Ok(closing) => closing,
            Err(_) => std::future::pending().await,
        }
    }
}

/// One connection's place: pending until [`Ticket::authenticated`], then a session slot.
#[derive(Debug)]
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    deadline: tokio::time::Instant,
    session: Option<OwnedSemaphorePermit>,
    established: bool,
}

/// Every session slot is taken.
#[derive(Debug)]
pub(crate) struct SessionsFull;

impl SessionsFull {
    /// What the client is told.
    pub(crate) const REASON: &'static str = "server busy: every session slot is taken";
}

impl Ticket {
    /// When the hello and handshake must be done.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// The peer proved its token: it leaves the pending budget and takes a session slot.
    pub(crate) fn authenticated(&mut self) -> Result<(), SessionsFull> {
        self.gate.leave_pending(self.id);
        if self.session.is_none() {
            let permit = Arc::clone(&self.gate.sessions)
                .try_acquire_owned()
                .map_err(|_| SessionsFull)?;
            self.session = Some(permit);
        }
        Ok(())
    }

    /// The handshake is complete and the session loop starts.
    pub(crate) fn established(&mut self) {
        self.established = true;
    }

    /// The budget of message bytes in flight this connection's session reserves from.
    pub(crate) fn message_budget(&self) -> Arc<MessageBudget> {
        Arc::clone(&self.gate.messages)
    }

    /// Whether the connection reached its session loop.
    pub(crate) fn is_established(&self) -> bool {
        self.established
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.leave_pending(self.id);
    }
}
