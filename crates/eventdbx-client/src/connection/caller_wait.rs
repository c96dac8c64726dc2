//! The blocking clients' wait for an answer: the caller reads it in a blocking `recv` on its own
//! thread instead of parking in the runtime's `epoll_wait` until the reader task reads it.
//!
//! A blocking client ([`crate::blocking::Client`], the Python SDK's synchronous client) runs
//! every call with `block_on` on a current-thread runtime of its own: the thread that waits for
//! an answer is the one that drives the runtime, so parking there costs an `epoll_wait`, the
//! reader task's `recv`, its second `recv` that finds the socket empty, and a second
//! `epoll_wait` before `block_on` returns. Reading the answer directly costs one `recv` that
//! sleeps until the answer is there, between two `ioctl`s that make the socket blocking for it
//! and non-blocking again.
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

impl Connection {
    /// Marks this connection as one whose callers block their thread for their answers (see
    /// the module docs). Sets the socket's receive timeout, which only blocking reads obey.
    pub(crate) fn let_callers_wait(&mut self) {
        let socket = socket2::SockRef::from(&self.watch);
        self.caller_waits = socket.set_read_timeout(Some(CALLER_WAIT)).is_ok();
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
        let socket = socket2::SockRef::from(&self.watch);
        // std's `set_nonblocking` is one `ioctl` (socket2's two `fcntl`s).
        if self.watch.set_nonblocking(false).is_err() {
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
                drop(side);
                self.kill(err);
                break Some(
                    answer
                        .try_recv()
                        .unwrap_or_else(|_| Err(Error::connection("connection closed"))),
                );
            }
        };
        if self.watch.set_nonblocking(true).is_err() {
            // Tokio must never read a blocking socket: the connection cannot be used again.
            self.kill(Error::connection(
                "cannot make the socket non-blocking again; connection discarded",
            ));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::Write;
    use std::task::{Context, Poll, Waker};

    use eventdbx_proto::control::{ErrorResponse, Reply, Request};
    use eventdbx_proto::frame;
    use eventdbx_proto::transport::SessionLimits;

    use super::super::read_side::Opening;
    use super::super::writer::Sealing;
    use super::super::Protocol;
    use super::*;

    /// A plaintext connection over loopback, and the server's end of it.
    fn plaintext_pair() -> (Connection, std::net::TcpStream) {
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
            Protocol::Plaintext,
            Vec::new(),
            limit,
            None,
            Duration::ZERO,
        );
        (connection, server)
    }

    #[test]
    fn a_blocking_caller_reads_its_answer_itself_without_the_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let (mut connection, mut server) = plaintext_pair();
        connection.let_callers_wait();
        // One turn of the runtime: its reactor learns that the socket is writable (as the
        // handshake teaches it on a real connection) and the reader task starts waiting.
        runtime.block_on(tokio::task::yield_now());
        // The answer to request 1 is on the wire before the request goes out, and the runtime
        // does not run again (so its reader task never reads): the call completes in its
        // first poll only if the caller reads the answer itself.
        let answer = Reply::Error(ErrorResponse {
            code: "not_found".into(),
            message: "no such aggregate".into(),
        })
        .encode(1)
        .expect("encode");
        let limit = SessionLimits::V1_PLAINTEXT.frame;
        server
            .write_all(&frame::encode(&answer, limit).expect("frame"))
            .expect("send the answer");
        let mut byte = [0u8; 1];
        connection.watch.set_nonblocking(false).expect("blocking");
        connection
            .watch
            .peek(&mut byte)
            .expect("the answer arrived");
        connection
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (connection, mut server) = runtime.block_on(async { plaintext_pair() });
        let answer = Reply::Error(ErrorResponse {
            code: "not_found".into(),
            message: "no such aggregate".into(),
        })
        .encode(1)
        .expect("encode");
        let limit = SessionLimits::V1_PLAINTEXT.frame;
        let request = Request::GetAggregate(Default::default())
            .encode(1)
            .expect("encode");
        let response = runtime.block_on(async {
            let call = connection.request(1, request, Duration::from_secs(5));
            let mut call = std::pin::pin!(call);
            // Without `let_callers_wait` the caller parks: the answer is not even sent yet.
            let first = std::future::poll_fn(|context| Poll::Ready(call.as_mut().poll(context)));
            assert!(first.await.is_pending());
            server
                .write_all(&frame::encode(&answer, limit).expect("frame"))
                .expect("send the answer");
            call.await
        });
        let response = response.expect("the answer");
        assert_eq!(response.get().expect("decode").get_id(), 1);
    }
}
