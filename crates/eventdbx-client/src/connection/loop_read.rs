//! Answers read by the caller's event loop: a call that waits for its answer can hand its
//! connection's socket to whoever polls it, so that an event loop that watches sockets itself
//! (Python's asyncio, through the SDK) reads the answers on its own thread when the socket
//! becomes readable, instead of waiting for the runtime worker that runs the reader task to
//! read them and wake the loop: one thread woken per answer instead of two, one after the
//! other.
//!
//! The poller asks for the socket around its poll ([`offered_socket`]); a request that parks
//! for its answer offers it ([`offer`]). The poller then watches [`AnswerSocket::fd`] and,
//! when it is readable, calls [`AnswerSocket::read_answers`], which reads what the socket
//! holds and hands each whole answer to its waiter: the same buffer and cipher as the reader
//! task's, under the same lock, so the stream stays in step whoever reads it. While a loop
//! says it reads the socket ([`AnswerSocket::reading`]), the reader task does not wait on the
//! socket at all (its worker would only race the loop for the bytes); when the last loop lets
//! go (the connection ended, or the loop closed), the reader task takes the socket back.
//! A dropped connection shuts its socket down, so a loop that watches it reads the end of the
//! stream and lets go of its handle.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::read_side::Shared;
use crate::error::Error;

/// A connection's socket, readable by an event loop for the answers of its requests.
#[derive(Clone)]
pub struct AnswerSocket {
    shared: Arc<Shared>,
    /// Whether the request that offered it had at most [`FEW_IN_FLIGHT`] in flight on its
    /// connection, itself included.
    few: bool,
}

impl std::fmt::Debug for AnswerSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSocket").finish_non_exhaustive()
    }
}

/// The most requests in flight together on a connection whose answers an event loop still
/// reads best itself ([`AnswerSocket::few_in_flight`]). Measured with one client shared by K
/// tasks (`docs/benchmarks.md`, "The event loop reads its answers itself"): with two to four the
/// loop's reading cost about a tenth less of the client's CPU per call at the same rate; with
/// sixteen it cost 12% of the calls per second, the loop's thread then the busiest, while the
/// runtime's worker reads beside it.
pub const FEW_IN_FLIGHT: usize = 4;

thread_local! {
    /// `Some` while a poller on this thread asks for the socket its future waits on.
    static OFFERED: RefCell<Option<Option<AnswerSocket>>> = const { RefCell::new(None) };
}

/// Runs `poll` (one poll of a future) and returns, with its result, the socket of the last
/// request in it that parked for its answer during that poll, if one did.
pub fn offered_socket<R>(poll: impl FnOnce() -> R) -> (R, Option<AnswerSocket>) {
    let outer = OFFERED.replace(Some(None));
    let result = poll();
    let offered = OFFERED.replace(outer).flatten();
    (result, offered)
}

/// A request on this connection parks for its answer: its poller may read the socket.
/// Not once a poller declined it ([`AnswerSocket::decline`]).
pub(super) fn offer(shared: &Arc<Shared>) {
    OFFERED.with_borrow_mut(|offered| {
        let Some(slot) = offered else {
            return;
        };
        if shared.loop_declined.load(Ordering::Relaxed) {
            return;
        }
        let few = shared.lock().pending.len() <= FEW_IN_FLIGHT;
        *slot = Some(AnswerSocket {
            shared: Arc::clone(shared),
            few,
        });
    });
}

impl AnswerSocket {
    /// The socket's descriptor, to watch for readability. It stays open while this value
    /// lives (it is the connection's second handle on the socket, which this keeps).
    #[cfg(unix)]
    pub fn fd(&self) -> i64 {
        i64::from(std::os::fd::AsRawFd::as_raw_fd(&self.shared.watch))
    }

    /// The socket's handle, to watch for readability (a Windows socket is an integer as
    /// Python's selectors take it). It stays open while this value lives.
    #[cfg(windows)]
    pub fn fd(&self) -> i64 {
        std::os::windows::io::AsRawSocket::as_raw_socket(&self.shared.watch) as i64
    }

    /// Says that an event loop watches the socket and reads what arrives on it with
    /// [`AnswerSocket::read_answers`], until the guard is dropped: meanwhile the reader task
    /// leaves the socket to the loop (the answers of every request on it, a subscription's
    /// batches, the end of the stream), and takes it back when the last loop lets go.
    pub fn reading(&self) -> LoopReading {
        self.shared.loop_readers.fetch_add(1, Ordering::AcqRel);
        LoopReading {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether the request that offered the socket had at most [`FEW_IN_FLIGHT`] requests in
    /// flight on its connection (itself included) when it parked.
    pub fn few_in_flight(&self) -> bool {
        self.few
    }

    /// The connection's requests stop offering its socket: a poller that reads it no more
    /// (the connection's answers are many at a time, which the reader task reads beside the
    /// poller better than the poller would itself) need not be asked again.
    pub fn decline(&self) {
        self.shared.loop_declined.store(true, Ordering::Relaxed);
    }

    /// Whether both are the same connection's socket.
    pub fn same_as(&self, other: &AnswerSocket) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Reads what the socket holds, without waiting, and hands each whole answer to its waiter
    /// (waking its task on this thread). Does nothing while the reader task is reading (it
    /// then delivers). The end of the stream or a read error kills the connection: its
    /// waiters fail with the reason, as when the reader task meets them. Returns whether the
    /// connection lives on; once it is dead, watching its socket only finds its end again.
    pub fn read_answers(&self) -> bool {
        let shared = &self.shared;
        let Some(mut side) = shared.try_read_side() else {
            return shared.lock().dead.is_none();
        };
        if let Err(err) = side.make_blocking(&shared.watch, false) {
            drop(side);
            shared.kill(Error::io("making the socket non-blocking again", &err));
            return false;
        }
        loop {
            let space = side.buffer.read_space();
            let room = space.len();
            let failure = match std::io::Read::read(&mut &*shared.watch, space) {
                Ok(0) => Error::io(
                    "reading from the server",
                    &std::io::ErrorKind::UnexpectedEof.into(),
                ),
                Ok(read) => {
                    side.buffer.filled(read);
                    match shared.deliver(&mut side) {
                        // A read that left room emptied the socket.
                        Ok(()) if read < room => return shared.lock().dead.is_none(),
                        Ok(()) => continue,
                        Err(err) => err,
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    return shared.lock().dead.is_none()
                }
                Err(err) => Error::io("reading from the server", &err),
            };
            drop(side);
            shared.kill(failure);
            return false;
        }
    }
}

/// An event loop reading a connection's socket ([`AnswerSocket::reading`]).
pub struct LoopReading {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopReading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopReading").finish_non_exhaustive()
    }
}

impl Drop for LoopReading {
    fn drop(&mut self) {
        if self.shared.loop_readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A permit if the reader task is not waiting yet: it cannot miss it.
            self.shared.resume.notify_one();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::future::Future;
    use std::io::{Read, Write};
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use eventdbx_proto::control::Request;

    use super::super::caller_wait::peek_without_waiting;
    use super::super::caller_wait::tests::{not_found_answer, pair, plaintext_pair, runtime};
    use super::super::{Connection, Protocol, Response};
    use super::*;
    use crate::error::Result;

    pub(in crate::connection) type Call<'a> = Pin<Box<dyn Future<Output = Result<Response>> + 'a>>;

    /// A get for request `id` on `connection`, not polled yet.
    pub(in crate::connection) fn call(connection: &Connection, id: u64) -> Call<'_> {
        let request = Request::GetAggregate(Default::default())
            .encode(id)
            .expect("encode");
        Box::pin(connection.request(id, request, Duration::from_secs(5)))
    }

    /// One poll of `call` as an event loop makes it: what it gave, and the socket it offered.
    pub(in crate::connection) fn poll(
        call: &mut Call<'_>,
    ) -> (Poll<Result<Response>>, Option<AnswerSocket>) {
        offered_socket(|| call.as_mut().poll(&mut Context::from_waker(Waker::noop())))
    }

    /// A get for request `id` polled once as an event loop polls it: parked, its socket
    /// offered.
    pub(in crate::connection) fn parked(
        connection: &Connection,
        id: u64,
    ) -> (Call<'_>, AnswerSocket) {
        let mut get = call(connection, id);
        let (polled, offered) = poll(&mut get);
        assert!(polled.is_pending());
        (
            get,
            offered.expect("a request that parks offers its socket"),
        )
    }

    /// Waits until the client's end of the socket holds what the server sent (a blocking peek
    /// on a second handle of it, which leaves the connection's own mode alone).
    fn arrived(connection: &Connection) {
        let handle = connection.shared.watch.try_clone().expect("duplicate");
        handle
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        // The same open socket: its mode is shared, so restore it after the peek.
        handle.set_nonblocking(false).expect("blocking");
        let peeked = handle.peek(&mut byte);
        handle.set_nonblocking(true).expect("non-blocking");
        assert_eq!(peeked.expect("the answer arrived"), 1);
    }

    #[test]
    fn an_event_loop_reads_the_answer_of_a_request_that_parked() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (connection, mut server) = plaintext_pair();
        runtime.block_on(tokio::task::yield_now());
        let (mut get, socket) = parked(&connection, 1);
        server.write_all(&not_found_answer(1)).expect("answer");
        arrived(&connection);
        // The runtime does not run: the answer is the loop's read, on this thread.
        assert!(socket.read_answers(), "the connection lives on");
        let (second, _) = poll(&mut get);
        let Poll::Ready(result) = second else {
            panic!("the answer the loop read did not complete the call");
        };
        assert_eq!(result.expect("answer").get().expect("decode").get_id(), 1);
        // A future polled outside `offered_socket` offers nothing to anyone.
        let mut other = call(&connection, 2);
        assert!(other
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
        assert!(OFFERED.with_borrow(Option::is_none));
    }

    #[test]
    fn a_socket_says_whether_few_requests_were_in_flight_and_a_declined_one_is_offered_no_more() {
        let runtime = runtime();
        let _entered = runtime.enter();
        // Pipelined, as v2 connections are: v1's one request at a time would hold the second.
        let (connection, _server) = pair(Protocol::V2);
        runtime.block_on(tokio::task::yield_now());
        let mut in_flight = Vec::new();
        for id in 1..=FEW_IN_FLIGHT as u64 {
            let (call, socket) = parked(&connection, id);
            assert!(socket.few_in_flight(), "{id} requests are in flight");
            in_flight.push(call);
        }
        let (_more, many) = parked(&connection, FEW_IN_FLIGHT as u64 + 1);
        assert!(
            !many.few_in_flight(),
            "one more than a few requests are in flight"
        );
        many.decline();
        let mut third = call(&connection, 100);
        let (polled, offered) = poll(&mut third);
        assert!(polled.is_pending());
        assert!(
            offered.is_none(),
            "a declined connection offers its socket no more"
        );
    }

    #[test]
    fn while_a_loop_reads_the_socket_the_reader_task_leaves_it_alone() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (connection, mut server) = plaintext_pair();
        runtime.block_on(tokio::task::yield_now());
        let (mut get, socket) = parked(&connection, 1);
        let reading = socket.reading();
        server.write_all(&not_found_answer(1)).expect("answer");
        arrived(&connection);
        // The runtime runs, and its reader task, woken by the socket's readiness, does not
        // read: the answer is still there for the loop.
        for _ in 0..20 {
            runtime.block_on(tokio::task::yield_now());
        }
        assert!(matches!(
            peek_without_waiting(&connection.shared.watch),
            Ok(1..)
        ));
        assert!(poll(&mut get).0.is_pending());
        assert!(socket.read_answers());
        assert!(poll(&mut get).0.is_ready());
        // The loop lets go: the reader task reads again.
        drop(reading);
        server.write_all(&not_found_answer(2)).expect("answer");
        let request = Request::GetAggregate(Default::default())
            .encode(2)
            .expect("encode");
        let answer = runtime
            .block_on(connection.request(2, request, Duration::from_secs(5)))
            .expect("the reader task delivered the answer");
        assert_eq!(answer.get().expect("decode").get_id(), 2);
    }

    #[test]
    fn a_connection_dropped_while_a_loop_watches_it_ends_its_stream() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (connection, mut server) = plaintext_pair();
        runtime.block_on(tokio::task::yield_now());
        let (get, socket) = parked(&connection, 1);
        let _reading = socket.reading();
        drop(get);
        drop(connection);
        // The loop's handle keeps the descriptor open; the connection's end still shows, to
        // the loop (which then lets go) and to the server.
        assert!(!socket.read_answers(), "the loop saw the end of the stream");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .expect("the server sees the end");
    }

    #[test]
    fn a_connection_whose_server_goes_away_fails_the_calls_the_loop_watched() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (connection, server) = plaintext_pair();
        runtime.block_on(tokio::task::yield_now());
        let (mut get, socket) = parked(&connection, 1);
        let _reading = socket.reading();
        drop(server);
        let handle = connection.shared.watch.try_clone().expect("duplicate");
        handle.set_nonblocking(false).expect("blocking");
        let _ = handle.peek(&mut [0u8; 1]);
        handle.set_nonblocking(true).expect("non-blocking");
        assert!(
            !socket.read_answers(),
            "the end of the stream kills the connection"
        );
        let Poll::Ready(Err(err)) = poll(&mut get).0 else {
            panic!("the call did not fail with the connection");
        };
        assert!(err.to_string().contains("reading from the server"), "{err}");
    }
}
