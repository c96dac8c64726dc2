//! The blocking clients' wait for an answer: the caller reads it in a blocking `recv` on its own
//! thread instead of parking in the runtime's `epoll_wait` until the reader task reads it.
//!
//! A blocking client ([`crate::blocking::Client`], the Python SDK's synchronous client) runs
//! every call with `block_on` on a current-thread runtime of its own: the thread that waits for
//! an answer is the one that drives the runtime, so parking there costs an `epoll_wait`, the
//! reader task's `recv` and a second `epoll_wait` before `block_on` returns. Reading the answer directly costs one `recv` that
//! sleeps until the answer is there. The socket is made blocking for it, and left so for the
//! next caller (on Linux): what else reads the socket (the reader task, a caller polling for
//! its answer) makes it non-blocking again first, under the read side's lock, and the idle
//! check's peek asks not to wait. So a sequential caller's request costs a peek, a `send` and
//! a `recv`, where switching the mode around each read added two `ioctl`s. The socket's send
//! and receive timeouts ([`CALLER_WAIT`]) bound what a blocking `send` or `recv` of tokio's
//! could wait if one ever met the socket blocking.
//!
//! The bytes go through the same buffer and cipher as the reader task's, under the same lock,
//! so whoever reads next continues the stream in step (as the answer poll's do, see
//! `read_side`). The wait is short ([`CALLER_WAIT`]): an answer that takes longer is left to the
//! reader task, so the runtime's timers (the request timeout) and the Python SDK's checks for
//! Ctrl-C run at most that late.

use std::io::Read;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Connection, Response};
use crate::error::{Error, Result};

/// How long a caller waits in a blocking read before it leaves its answer to the reader task:
/// longer than nearly every answer takes (a durable write's included), short enough that what
/// the runtime would run meanwhile is only that late.
pub(super) const CALLER_WAIT: Duration = Duration::from_millis(20);

/// Whether a caller leaves the socket blocking after its read: where a peek can be made
/// non-blocking by its flags ([`peek_without_waiting`]).
const LEFT_BLOCKING: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Looks at the socket's next byte without taking it and without waiting, whatever the
/// socket's mode: `Ok(0)` at the end of the stream, `WouldBlock` when nothing is there.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn peek_without_waiting(socket: &std::net::TcpStream) -> std::io::Result<usize> {
    // Linux's `MSG_PEEK` and `MSG_DONTWAIT` (the same on every architecture); socket2 does not
    // export them.
    const MSG_PEEK: i32 = 0x2;
    const MSG_DONTWAIT: i32 = 0x40;
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(socket).recv_with_flags(&mut byte, MSG_PEEK | MSG_DONTWAIT)
}

/// Looks at the socket's next byte without taking it; the socket is non-blocking here, as
/// callers never leave it blocking ([`LEFT_BLOCKING`]).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn peek_without_waiting(socket: &std::net::TcpStream) -> std::io::Result<usize> {
    socket.peek(&mut [0u8; 1])
}

impl Connection {
    /// Marks this connection as one whose callers block their thread for their answers (see
    /// the module docs). Sets the socket's receive and send timeouts, which only a blocking
    /// socket obeys: a write of tokio's that meets the socket blocking with its send buffer full
    /// then gives way after that long, as if it were non-blocking.
    pub(crate) fn let_callers_wait(&mut self) {
        let socket = socket2::SockRef::from(&self.shared.watch);
        self.caller_waits = socket.set_read_timeout(Some(CALLER_WAIT)).is_ok()
            && socket.set_write_timeout(Some(CALLER_WAIT)).is_ok();
    }

    /// Reads the answer on the caller's thread, blocking, for up to [`CALLER_WAIT`]: `None`
    /// when the answer did not come in that time, or the connection is not one whose callers
    /// wait, or another request or a subscription shares the connection right now (their
    /// callers may be on other threads), or the request's deadline is too close; the caller
    /// then waits for the reader task as usual.
    pub(super) fn wait_for_answer(
        &self,
        answer: &mut oneshot::Receiver<Result<Response>>,
        deadline: Instant,
    ) -> Option<Result<Response>> {
        if !self.caller_waits {
            return None;
        }
        let started = Instant::now();
        // A read may overrun the wait by one receive timeout: keep both before the deadline.
        if deadline.saturating_duration_since(started) < 2 * CALLER_WAIT {
            return None;
        }
        {
            let state = self.shared.lock();
            if state.pending.len() != 1 || !state.streams.is_empty() || state.dead.is_some() {
                return None;
            }
        }
        // The reader task may be decoding right now: then it delivers the answer.
        let mut side = self.shared.try_read_side()?;
        let socket = socket2::SockRef::from(&self.shared.watch);
        if side.make_blocking(&self.shared.watch, true).is_err() {
            return None;
        }
        let until = started + CALLER_WAIT;
        let outcome = loop {
            match answer.try_recv() {
                Ok(result) => break Some(result),
                Err(oneshot::error::TryRecvError::Closed) => {
                    break Some(Err(Error::connection("connection closed")))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= until {
                break None;
            }
            match (&*socket).read(side.buffer.read_space()) {
                // The reader task sees the end (or the error) and kills the connection.
                Ok(0) => break None,
                Ok(read) => side.buffer.filled(read),
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => break None,
            }
            if let Err(err) = self.shared.deliver(&mut side) {
                self.kill(err);
                break Some(
                    answer
                        .try_recv()
                        .unwrap_or_else(|_| Err(Error::connection("connection closed"))),
                );
            }
        };
        // Left blocking for the next caller (see the module docs) where the idle check's peek
        // can ask not to wait; elsewhere the peek needs a non-blocking socket.
        if !LEFT_BLOCKING && side.make_blocking(&self.shared.watch, false).is_err() {
            // Tokio must never read a blocking socket: the connection cannot be used again.
            self.kill(Error::connection(
                "cannot make the socket non-blocking again; connection discarded",
            ));
        }
        outcome
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::future::Future;
    use std::io::Write;
    use std::task::{Context, Poll, Waker};

    use eventdbx_proto::control::{ErrorResponse, Reply, Request};
    use eventdbx_proto::frame::{self, FrameBuffer};
    use eventdbx_proto::transport::SessionLimits;

    use super::super::read_side::Opening;
    use super::super::writer::Sealing;
    use super::super::Protocol;
    use super::*;

    /// The one-thread runtime each test drives by hand.
    pub(in crate::connection) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A plaintext connection over loopback, and the server's end of it.
    pub(in crate::connection) fn plaintext_pair() -> (Connection, std::net::TcpStream) {
        pair(Protocol::Plaintext)
    }

    /// A connection over loopback that runs `protocol`'s rules (v2: requests pipelined)
    /// without encryption, and the server's end of it.
    pub(in crate::connection) fn pair(protocol: Protocol) -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_nonblocking(true).expect("non-blocking");
        let watch = client.try_clone().expect("duplicate");
        let socket = tokio::net::TcpStream::from_std(client).expect("register");
        let (read_half, write_half) = socket.into_split();
        let limit = SessionLimits::V1_PLAINTEXT.frame;
        let connection = Connection::start(
            read_half,
            write_half,
            watch,
            Sealing::Plain,
            Opening::Plain,
            protocol,
            Vec::new(),
            limit,
            None,
            Duration::ZERO,
        )
        .expect("start");
        (connection, server)
    }

    /// The server's framed answer to request `id`: an error, as for a missing aggregate.
    pub(in crate::connection) fn not_found_answer(id: u64) -> Vec<u8> {
        let answer = Reply::Error(ErrorResponse {
            code: "not_found".into(),
            message: "no such aggregate".into(),
        })
        .encode(id)
        .expect("encode");
        frame::encode(&answer, SessionLimits::V1_PLAINTEXT.frame).expect("frame")
    }

    #[test]
    fn a_blocking_caller_reads_its_answer_itself_without_the_runtime() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (mut connection, mut server) = plaintext_pair();
        connection.let_callers_wait();
        // One turn of the runtime: its reactor learns that the socket is writable (as the
        // handshake teaches it on a real connection) and the reader task starts waiting.
        runtime.block_on(tokio::task::yield_now());
        // The answer to request 1 is on the wire before the request goes out, and the runtime
        // does not run again (so its reader task never reads): the call completes in its
        // first poll only if the caller reads the answer itself.
        let answer = not_found_answer(1);
        server.write_all(&answer).expect("send the answer");
        let mut byte = [0u8; 1];
        connection
            .shared
            .watch
            .set_nonblocking(false)
            .expect("blocking");
        connection
            .shared
            .watch
            .peek(&mut byte)
            .expect("the answer arrived");
        connection
            .shared
            .watch
            .set_nonblocking(true)
            .expect("non-blocking");

        let request = Request::GetAggregate(Default::default())
            .encode(1)
            .expect("encode");
        let call = connection.request(1, request, Duration::from_secs(5));
        let mut call = std::pin::pin!(call);
        let Poll::Ready(result) = call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("the call waited for the runtime instead of reading its answer");
        };
        let response = result.expect("the answer");
        assert_eq!(response.get().expect("decode").get_id(), 1);
        assert!(connection.is_alive(), "the connection stays usable");
    }

    #[test]
    fn a_connection_of_the_async_client_leaves_its_answers_to_the_reader_task() {
        let runtime = runtime();
        let (connection, mut server) = runtime.block_on(async { plaintext_pair() });
        let answer = not_found_answer(1);
        let request = Request::GetAggregate(Default::default())
            .encode(1)
            .expect("encode");
        let response = runtime.block_on(async {
            let call = connection.request(1, request, Duration::from_secs(5));
            let mut call = std::pin::pin!(call);
            // Without `let_callers_wait` the caller parks: the answer is not even sent yet.
            let first = std::future::poll_fn(|context| Poll::Ready(call.as_mut().poll(context)));
            assert!(first.await.is_pending());
            server.write_all(&answer).expect("send the answer");
            call.await
        });
        let response = response.expect("the answer");
        assert_eq!(response.get().expect("decode").get_id(), 1);
    }
    #[test]
    fn consecutive_blocking_callers_leave_the_socket_blocking_between_their_reads() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (mut connection, mut server) = plaintext_pair();
        connection.let_callers_wait();
        runtime.block_on(tokio::task::yield_now());
        for id in 1..=3 {
            // Sent before the request, so the caller's read finds it whatever the timing.
            let answer = not_found_answer(id);
            server.write_all(&answer).expect("send the answer");
            let request = Request::GetAggregate(Default::default())
                .encode(id)
                .expect("encode");
            let call = connection.request(id, request, Duration::from_secs(5));
            let mut call = std::pin::pin!(call);
            let Poll::Ready(result) = call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
            else {
                panic!("request {id} waited for the runtime instead of reading its answer");
            };
            assert_eq!(
                result.expect("the answer").get().expect("decode").get_id(),
                id
            );
        }
        // One switch to blocking for the first caller; none after it (each switch is a
        // system call, and two per request were a fifth of a get's system calls).
        let changes = connection
            .shared
            .try_read_side()
            .expect("nobody reads")
            .mode_changes;
        assert_eq!(
            changes, 1,
            "the socket's mode changed {changes} times for 3 requests"
        );
        // The reader task makes the socket non-blocking again before it reads: an answer that
        // only the reader task can deliver (the caller's first poll is skipped) still comes.
        assert!(connection.is_alive(), "the connection stays usable");
    }
    #[test]
    fn the_reader_task_makes_a_socket_left_blocking_non_blocking_before_it_reads() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let (mut connection, mut server) = plaintext_pair();
        connection.let_callers_wait();
        // As a blocking caller leaves it.
        {
            let mut side = connection.shared.try_read_side().expect("nobody reads");
            side.make_blocking(&connection.shared.watch, true)
                .expect("blocking");
        }
        // A caller that leaves its answer to the reader task (as one whose deadline is near).
        connection.caller_waits = false;
        let answer = not_found_answer(1);
        server.write_all(&answer).expect("send the answer");
        let request = Request::GetAggregate(Default::default())
            .encode(1)
            .expect("encode");
        let response = runtime
            .block_on(connection.request(1, request, Duration::from_secs(5)))
            .expect("the answer");
        assert_eq!(response.get().expect("decode").get_id(), 1);
        let side = connection.shared.try_read_side().expect("nobody reads");
        assert!(!side.blocking, "the reader task read a blocking socket");
    }
    #[test]
    fn the_reader_task_reads_each_answer_once_and_never_an_empty_socket() {
        let runtime = runtime();
        let (connection, mut server) = runtime.block_on(async { plaintext_pair() });
        let limit = SessionLimits::V1_PLAINTEXT.frame;
        // The server answers each request once it has read it whole, so the answer is never
        // on the wire before its request goes out.
        let answering = std::thread::spawn(move || {
            let mut frames = FrameBuffer::new(limit);
            for id in 1..=3u64 {
                loop {
                    if let Some(_request) = frames.next_frame().expect("a request frame") {
                        break;
                    }
                    let read = std::io::Read::read(&mut server, frames.read_space())
                        .expect("read a request");
                    assert!(read > 0, "the client closed the connection");
                    frames.filled(read);
                }
                let answer = not_found_answer(id);
                server.write_all(&answer).expect("send the answer");
            }
            server
        });
        for id in 1..=3u64 {
            let request = Request::GetAggregate(Default::default())
                .encode(id)
                .expect("encode");
            let response = runtime
                .block_on(connection.request(id, request, Duration::from_secs(5)))
                .expect("the answer");
            assert_eq!(response.get().expect("decode").get_id(), id);
        }
        let _server = answering.join().expect("the server's thread");
        // A read that did not fill the buffer emptied the socket: looking again before the
        // next readiness only costs a `recv` that finds nothing, once per answer.
        let empty = connection
            .shared
            .try_read_side()
            .expect("nobody reads")
            .empty_reads;
        assert_eq!(
            empty, 0,
            "the reader task read an empty socket {empty} times"
        );
    }
}
