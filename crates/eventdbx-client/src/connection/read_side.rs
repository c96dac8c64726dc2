//! What the reader task and the callers polling for their answers share: the requests in
//! flight, the bytes received and the cipher that opens them, and when to poll.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventdbx_proto::frame::FrameBuffer;
use eventdbx_proto::message;
use eventdbx_proto::noise::{self, v2};
use eventdbx_proto::transport::{available_cpus, poll_cap, PollBudget, PollSlot, Waited, WARM_GAP};
use tokio::sync::{mpsc, oneshot};

use super::socket::ReadSocket;
use super::{Connection, Response};
use crate::error::{Error, Result};

pub(super) enum Opening {
    V2(v2::ChunkOpener),
    V1(noise::Opener),
    Plain,
}

pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<Result<Response>>,
    /// Set by the writer just before the request's first byte goes out.
    pub(super) written: bool,
}

/// The state of a connection its reader task shares with its callers.
pub(super) struct Shared {
    /// A handle on the socket besides the writer's (`socket`): peeked (see
    /// [`Connection::is_alive`]), read by callers and event loops reading their answers
    /// themselves (the answer poll, `caller_wait`, `loop_read`), how the socket's mode is
    /// switched ([`ReadSide::make_blocking`]), and the descriptor the reader task registers
    /// while it reads.
    pub(super) watch: Arc<std::net::TcpStream>,
    state: Mutex<State>,
    /// What was received and not yet decoded, and the cipher that opens it. Locked only for a
    /// read and the decoding after it, never across an `.await`.
    read: Mutex<ReadSide>,
    /// When callers poll for their answers.
    poll: Mutex<AnswerPoll>,
    /// Event loops watching the socket that read what arrives (`loop_read`): while there is
    /// one, the reader task waits for [`Shared::resume`] instead of the socket.
    pub(super) loop_readers: AtomicUsize,
    /// Rung when the last loop stops reading the socket.
    pub(super) resume: tokio::sync::Notify,
    /// Set when a poller declined to read the socket: requests stop offering it.
    pub(super) loop_declined: AtomicBool,
}

pub(super) struct ReadSide {
    pub(super) buffer: FrameBuffer,
    opening: Opening,
    /// Whether the socket is in blocking mode now. A blocking caller leaves it so after
    /// reading its answer (`caller_wait`), and the next one reads without switching; whoever
    /// reads otherwise (the reader task, a polling caller) makes it non-blocking again first.
    /// Changed only under this lock, by whoever reads next.
    pub(super) blocking: bool,
    /// How many times the socket's mode changed, for the tests.
    pub(super) mode_changes: u64,
    /// Reads of the reader task's that found nothing, for the tests.
    pub(super) empty_reads: u64,
}

impl ReadSide {
    /// Puts `socket` in blocking mode or takes it out, unless it already is so (std's switch
    /// is one `ioctl`, socket2's two `fcntl`s).
    pub(super) fn make_blocking(
        &mut self,
        socket: &std::net::TcpStream,
        blocking: bool,
    ) -> std::io::Result<()> {
        if self.blocking != blocking {
            socket.set_nonblocking(!blocking)?;
            self.blocking = blocking;
            self.mode_changes += 1;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) pending: HashMap<u64, Pending>,
    /// Ids whose caller gave up (timeout, cancellation) on v2: their late answers are dropped.
    pub(super) abandoned: HashSet<u64>,
    /// Requests answered many times (a subscription's batches), by id. Kept until the
    /// connection dies: a batch may follow the end of its subscription, and is then dropped.
    pub(super) streams: HashMap<u64, mpsc::UnboundedSender<Result<Response>>>,
    pub(super) dead: Option<Error>,
}

impl Shared {
    pub(super) fn new(
        opening: Opening,
        frame_limit: usize,
        busy_poll: Duration,
        watch: Arc<std::net::TcpStream>,
    ) -> Self {
        Shared {
            watch,
            state: Mutex::new(State::default()),
            read: Mutex::new(ReadSide {
                buffer: FrameBuffer::new(frame_limit),
                opening,
                blocking: false,
                mode_changes: 0,
                empty_reads: 0,
            }),
            poll: Mutex::new(AnswerPoll::new(busy_poll)),
            loop_readers: AtomicUsize::new(0),
            resume: tokio::sync::Notify::new(),
            loop_declined: AtomicBool::new(false),
        }
    }

    /// Whether an event loop reads what arrives (`loop_read`).
    fn loop_reads(&self) -> bool {
        self.loop_readers.load(Ordering::Acquire) > 0
    }

    fn read_side(&self) -> MutexGuard<'_, ReadSide> {
        // A panic while decoding leaves at worst a connection out of step, which the next
        // decoding error kills.
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The read side, unless a reader holds it right now.
    pub(super) fn try_read_side(&self) -> Option<MutexGuard<'_, ReadSide>> {
        self.read.try_lock().ok()
    }

    fn answer_poll(&self) -> MutexGuard<'_, AnswerPoll> {
        self.poll
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decodes every whole frame received and hands each answer to its waiter. An error means
    /// the connection is out of step and must die.
    pub(super) fn deliver(&self, side: &mut ReadSide) -> std::result::Result<(), Error> {
        loop {
            let payload = match side.buffer.has_frame() {
                Ok(true) => match side.buffer.next_frame() {
                    Ok(Some(payload)) => payload,
                    Ok(None) => continue,
                    Err(err) => return Err(Error::protocol(err.to_string())),
                },
                Ok(false) => return Ok(()),
                Err(err) => return Err(Error::protocol(err.to_string())),
            };
            let message = match &mut side.opening {
                Opening::V2(opener) => match opener.open_frame(payload) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(err) => return Err(Error::protocol(format!("undecodable reply: {err}"))),
                },
                Opening::V1(opener) => match opener.open(payload) {
                    Ok(message) => message,
                    Err(err) => return Err(Error::protocol(format!("undecodable reply: {err}"))),
                },
                Opening::Plain => payload.to_vec(),
            };
            let response = message::decode_response(&message)
                .map_err(|err| Error::protocol(format!("undecodable reply: {err}")))?;
            let id = match response.get() {
                Ok(root) => root.get_id(),
                Err(err) => return Err(Error::protocol(format!("undecodable reply: {err}"))),
            };
            if id == SESSION_NOTICE_ID {
                return Err(closing_notice(&message));
            }
            let entry = {
                let mut state = self.lock();
                if let Some(stream) = state.streams.get(&id) {
                    // Its reader gone, the message is dropped.
                    let _ = stream.send(Ok(response));
                    continue;
                }
                match state.pending.remove(&id) {
                    Some(entry) => Some(entry),
                    None if state.abandoned.remove(&id) => None,
                    None => {
                        return Err(Error::protocol(format!(
                            "response id {id} matches no request in flight"
                        )))
                    }
                }
            };
            if let Some(entry) = entry {
                let _ = entry.reply.send(Ok(response));
            }
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails every waiter and marks the connection dead (first reason wins).
    pub(super) fn kill(&self, reason: Error) {
        let pending = {
            let mut state = self.lock();
            if state.dead.is_none() {
                state.dead = Some(reason.clone());
            }
            for (_, stream) in state.streams.drain() {
                let _ = stream.send(Err(reason.clone()));
            }
            std::mem::take(&mut state.pending)
        };
        for (_, entry) in pending {
            let _ = entry.reply.send(Err(reason.clone().unsent(!entry.written)));
        }
    }
}

/// The request id no request carries (clients number from 1): a server answers with it, as an
/// `error`, to say why it is closing the session (`docs/protocol.md`, "Session rules").
const SESSION_NOTICE_ID: u64 = 0;

/// The reason every request in flight fails with when the server closes the session.
fn closing_notice(message: &[u8]) -> Error {
    match eventdbx_proto::control::decode_reply(message) {
        Ok((_, eventdbx_proto::control::Reply::Error(error))) => Error::protocol(format!(
            "the server closed the session ({}: {})",
            error.code, error.message
        )),
        _ => Error::protocol("the server answered request id 0, which no request carries"),
    }
}

/// How a caller's poll for its answer ended.
pub(super) enum AnswerWait {
    /// The poll caught the answer (or the connection's end).
    Answered(Result<Response>),
    /// The caller waits for the reader task; once its answer came, it hands this to
    /// [`Connection::answer_came`].
    Parked(ParkedWait),
}

/// A caller waiting for the reader task to deliver its answer.
pub(super) struct ParkedWait {
    /// When the request went out (`None` when polling is off: nothing to learn).
    sent: Option<Instant>,
    /// The caller polled first and the poll ended with nothing.
    polled: bool,
}

impl Connection {
    /// Reads the socket for the answer for up to the poll budget, on the caller's thread (see
    /// [`crate::ClientConfig::busy_poll`]), when [`AnswerPoll`] says so: `Parked` when the
    /// answer did not come in time (or polling is off, or the conversation is not hot, or no
    /// turn is free), and the caller then waits for the reader task as usual.
    /// Bytes read here go through the same buffer and cipher as the reader's, under the same
    /// lock, so whoever reads next continues the stream in step; reading behind tokio's back
    /// is sound with its edge-triggered reactor (a stale readiness costs one empty read).
    pub(super) fn poll_for_answer(
        &self,
        answer: &mut oneshot::Receiver<Result<Response>>,
    ) -> AnswerWait {
        if !self.polls {
            return AnswerWait::Parked(ParkedWait {
                sent: None,
                polled: false,
            });
        }
        let started = Instant::now();
        let budget = self.shared.answer_poll().due(started);
        let parked = |polled| {
            AnswerWait::Parked(ParkedWait {
                sent: Some(started),
                polled,
            })
        };
        if budget.is_zero() {
            return parked(false);
        }
        let Some(_slot) = poll_turn() else {
            return parked(false);
        };
        let socket = socket2::SockRef::from(&self.shared.watch);
        let outcome = loop {
            match answer.try_recv() {
                Ok(result) => break Some(result),
                Err(oneshot::error::TryRecvError::Closed) => {
                    break Some(Err(Error::connection("connection closed")))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if started.elapsed() >= budget {
                break None;
            }
            // The reader task may be decoding right now; then just look again.
            let Ok(mut side) = self.shared.read.try_lock() else {
                continue;
            };
            if side.make_blocking(&self.shared.watch, false).is_err() {
                break None; // the reader task fails the same way and kills the connection
            }
            match std::io::Read::read(&mut &*socket, side.buffer.read_space()) {
                Ok(0) => break None, // the reader task sees the end and kills the connection
                Ok(read) => side.buffer.filled(read),
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => break None, // likewise
            }
            if let Err(err) = self.shared.deliver(&mut side) {
                drop(side);
                self.kill(err);
            }
        };
        match outcome {
            Some(result) => {
                self.shared
                    .answer_poll()
                    .answered(Waited::Caught, Instant::now());
                AnswerWait::Answered(result)
            }
            None => parked(true),
        }
    }

    /// The reader task delivered the answer of a caller that had parked.
    pub(super) fn answer_came(&self, wait: ParkedWait) {
        if let Some(sent) = wait.sent {
            let now = Instant::now();
            let waited = Waited::Parked {
                polled: wait.polled,
                after: now.saturating_duration_since(sent),
            };
            self.shared.answer_poll().answered(waited, now);
        }
    }
}

/// When callers poll for their answers (see [`crate::ClientConfig::busy_poll`]): only while the
/// conversation is hot, as a [`PollBudget`] learns it from how the answers came, and only for
/// a request that follows the connection's previous answer within [`WARM_GAP`] (a caller
/// that pauses between requests starts cold, so a mostly idle connection never polls).
#[derive(Debug)]
struct AnswerPoll {
    budget: PollBudget,
    /// When the latest answer came.
    last_answer: Option<Instant>,
}

impl AnswerPoll {
    fn new(budget: Duration) -> Self {
        AnswerPoll {
            budget: PollBudget::new(budget),
            last_answer: None,
        }
    }

    /// A request goes out `now`: how long to poll for its answer (zero: not at all).
    fn due(&mut self, now: Instant) -> Duration {
        let follows = self
            .last_answer
            .is_some_and(|at| now.saturating_duration_since(at) <= WARM_GAP);
        if !follows {
            self.budget.paused();
        }
        self.budget.budget()
    }

    /// An answer came `now`, this way.
    fn answered(&mut self, waited: Waited, now: Instant) {
        self.budget.waited(waited);
        self.last_answer = Some(now);
    }
}

/// Readers of this process polling right now (see [`poll_turn`]).
static POLLING_READERS: AtomicU64 = AtomicU64::new(0);

/// A reader's turn to poll. At most one reader per CPU but one (at least one) polls at a time
/// in the process, and on a multi-thread runtime at most one per worker but one, so that
/// polling readers never hold every worker or every CPU; none polls on a single CPU. A reader
/// without a turn just waits for readiness.
fn poll_turn() -> Option<PollSlot<'static>> {
    let handle = tokio::runtime::Handle::current();
    let threads = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => available_cpus(),
        _ => handle.metrics().num_workers().min(available_cpus()),
    };
    PollSlot::take(&POLLING_READERS, poll_cap(threads))
}

/// The reader task: reads what arrives when no caller is polling for it and no event loop
/// reads it (`loop_read`), and delivers it.
pub(super) async fn read_loop(shared: Arc<Shared>, mut reader: ReadSocket) {
    let reason = loop {
        if let Err(err) = {
            let mut side = shared.read_side();
            shared.deliver(&mut side)
        } {
            break err;
        }
        if shared.loop_reads() {
            // The loop reads the socket (the end of the stream included) until it lets go;
            // meanwhile arriving answers must not wake the runtime for this task.
            reader.park();
            shared.resume.notified().await;
            continue;
        }
        let mut ready = match reader.readable().await {
            Ok(ready) => ready,
            Err(err) => break Error::io("reading from the server", &err),
        };
        if shared.loop_reads() {
            // A loop began to read meanwhile: what came is its to read.
            continue;
        }
        let read = {
            let mut side = shared.read_side();
            // A blocking caller may have left the socket blocking (`caller_wait`): tokio must
            // never read it so.
            if let Err(err) = side.make_blocking(&shared.watch, false) {
                break Error::io("making the socket non-blocking again", &err);
            }
            // Each read takes whatever the socket holds: a response that arrived whole costs
            // one `recv`, not one for its header and one for its payload. A read that leaves
            // room in the buffer emptied the socket, so it tells tokio to forget the readiness
            // (as its own `poll_read` does); otherwise the next turn's `recv` would only find
            // the socket empty, one wasted system call per answer. Bytes that arrive after the
            // read bring a readiness of their own, which this does not clear.
            let mut read = 0;
            match ready.read(side.buffer.read_space(), &mut read) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock && read == 0 => {
                    side.empty_reads += 1;
                    Err(err)
                }
                Err(err) if err.kind() != std::io::ErrorKind::WouldBlock => Err(err),
                _ => {
                    side.buffer.filled(read);
                    Ok(read)
                }
            }
        };
        match read {
            Ok(0) => {
                break Error::io(
                    "reading from the server",
                    &std::io::ErrorKind::UnexpectedEof.into(),
                )
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => break Error::io("reading from the server", &err),
        }
    };
    shared.kill(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_notice_becomes_every_waiters_reason() {
        let notice =
            eventdbx_proto::control::Reply::Error(eventdbx_proto::control::ErrorResponse {
                code: "protocol_error".into(),
                message: "protocol error: the session is closed: message does not decode".into(),
            })
            .encode(SESSION_NOTICE_ID)
            .expect("encode");
        let reason = closing_notice(&notice).to_string();
        assert!(
            reason.contains("the server closed the session (protocol_error: protocol error: the session is closed: message does not decode)"),
            "{reason}"
        );
        let other = closing_notice(b"not a reply").to_string();
        assert!(other.contains("request id 0"), "{other}");
    }

    /// Answers that come 50 µs after their request, once the caller parked.
    const QUICK: Waited = Waited::Parked {
        polled: false,
        after: Duration::from_micros(50),
    };

    #[test]
    fn a_caller_in_a_quick_conversation_polls_and_one_that_pauses_does_not() {
        let budget = Duration::from_micros(100);
        let mut poll = AnswerPoll::new(budget);
        let start = Instant::now();
        let at = |micros: u64| start + Duration::from_micros(micros);
        // The first request of a connection is not polled for; its quick answer arms the poll.
        assert_eq!(poll.due(at(0)), Duration::ZERO);
        poll.answered(QUICK, at(50));
        // The next request follows the answer within a millisecond: polled for.
        assert_eq!(poll.due(at(80)), budget);
        poll.answered(Waited::Caught, at(120));
        assert_eq!(poll.due(at(150)), budget);
        poll.answered(Waited::Caught, at(190));
        // A request 100 ms after the previous answer: the caller paused, no poll. Its answer
        // (quick again) re-arms the poll for a request that follows it at once.
        assert_eq!(poll.due(at(100_190)), Duration::ZERO);
        poll.answered(QUICK, at(100_240));
        assert_eq!(poll.due(at(100_260)), budget);
    }

    #[test]
    fn a_connection_used_once_every_100_ms_never_polls() {
        let mut poll = AnswerPoll::new(Duration::from_micros(100));
        let start = Instant::now();
        for n in 0..1_000u64 {
            let sent = start + Duration::from_millis(100 * n);
            assert_eq!(poll.due(sent), Duration::ZERO, "request {n}");
            poll.answered(QUICK, sent + Duration::from_micros(50));
        }
    }

    #[test]
    fn answers_slower_than_the_poll_stop_the_polling() {
        let budget = Duration::from_micros(100);
        let mut poll = AnswerPoll::new(budget);
        let start = Instant::now();
        let mut now = start;
        let mut polled = 0;
        // Durable writes: each answer 400 µs after its request, the next request at once.
        for _ in 0..2_000 {
            let due = poll.due(now);
            now += Duration::from_micros(400);
            if !due.is_zero() {
                polled += 1;
            }
            let waited = Waited::Parked {
                polled: !due.is_zero(),
                after: Duration::from_micros(400),
            };
            poll.answered(waited, now);
        }
        // Every fruitless poll doubles the requests before the next one (1, 2, 4, … 1,024).
        assert!(polled <= 11, "{polled} polls for 2,000 slow answers");
        assert!(polled >= 1, "the conversation looked hot at first");
    }

    #[test]
    fn poll_turns_stop_at_the_cap_and_come_back_when_dropped() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let single_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) < 2;
        runtime.block_on(async {
            if single_cpu {
                assert!(poll_turn().is_none(), "no reader polls on one CPU");
                return;
            }
            // Two workers: one reader polls at a time.
            let first = poll_turn().expect("a free turn");
            assert!(poll_turn().is_none(), "a second turn is over the cap");
            drop(first);
            let again = poll_turn().expect("the turn came back");
            assert_eq!(POLLING_READERS.load(std::sync::atomic::Ordering::SeqCst), 1);
            drop(again);
        });
        assert_eq!(POLLING_READERS.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
