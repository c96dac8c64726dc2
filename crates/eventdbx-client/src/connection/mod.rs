//! One control connection: the handshake, then a reader task on the read half of the socket,
//! and the write half behind an async mutex.
//!
//! Callers hand a request (id and bytes) to [`Connection::request`], which registers the id in
//! the pending map, writes the sealed request itself (one write per request, under the mutex) and
//! waits for the reader to deliver the response carrying that id. Any transport failure (EOF,
//! reset, undecodable frame, a response whose id nobody waits for) kills the connection: every waiter gets the error and the client
//! opens a new connection on its next call. v1 connections let one request in flight at a time,
//! since the server answers in order; v2 connections any number.
//!
//! The received bytes and the opening cipher (`read_side::ReadSide`) are shared: after a request
//! goes out, its caller polls the socket for a moment for the answer itself
//! ([`crate::ClientConfig::busy_poll`], `read_side::AnswerPoll`, a
//! [`PollSlot`](eventdbx_proto::transport::PollSlot)), decoding whatever arrives and
//! handing each answer to its waiter; the reader task reads only what the caller did not wait
//! for. So a sequential caller whose answer comes within the poll gets it on its own thread,
//! with no task wake-up in between, on any runtime flavour. On the blocking clients'
//! connections a caller whose answer the poll did not catch then reads it in a blocking `recv`
//! on its own thread for a while (`caller_wait`), before it leaves it to the reader task.
//! An event loop that watches the socket for its calls (`loop_read`) reads every answer
//! itself, and the reader task leaves the socket alone meanwhile.
//!
//! # Layout
//! - `caller_wait`: the blocking clients' wait for an answer on the caller's thread.
//! - `loop_read`: answers read by the caller's event loop (the Python SDK's asyncio client),
//!   which then has the socket to itself.
//! - `open`: the hello, the v1 or v2 handshake and the fallback between them.
//! - `read_side`: what the reader task and polling callers share (the pending map, the buffer
//!   and the opening cipher), the answer poll and the reader task.
//! - `writer`: the sealing cipher and the write half, and [`Connection::send`].

mod caller_wait;
mod loop_read;
mod open;
mod read_side;
mod socket;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::message::Decoded;
use eventdbx_proto::noise::v2;
use eventdbx_proto::schema::control_capnp::control_response;
use eventdbx_proto::transport::SessionLimits;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};

/// The target of this module's log events, whichever file they come from: Python sees them as
/// the `eventdbx.client.connection` logger, a name applications configure.
const LOG_TARGET: &str = "eventdbx_client::connection";
pub use loop_read::{offered_socket, AnswerSocket, LoopReading, FEW_IN_FLIGHT};
use read_side::{read_loop, AnswerWait, Opening, Pending, Shared};
use writer::{Sealing, Writer};

/// A decoded `ControlResponse`.
pub(crate) type Response = Decoded<control_response::Owned>;

/// Which session a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protocol v2: Noise XXpsk3, chunked messages, requests pipelined.
    V2,
    /// Protocol v1 under `Noise_NNpsk0`.
    V1,
    /// Protocol v1 framing without encryption.
    Plaintext,
}

/// An established control connection.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Writer>,
    reader: JoinHandle<()>,
    /// One request at a time on v1.
    gate: Option<Semaphore>,
    protocol: Protocol,
    capabilities: Vec<String>,
    max_request: usize,
    fingerprint: Option<v2::Fingerprint>,
    /// Whether callers poll for their answers ([`Connection::poll_for_answer`]).
    polls: bool,
    /// Whether a caller may block its thread reading its answer
    /// ([`Connection::wait_for_answer`]): only the blocking clients' connections.
    caller_waits: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("protocol", &self.protocol)
            .field("capabilities", &self.capabilities)
            .field("max_request", &self.max_request)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        // An event loop watching the socket (`loop_read`) keeps a handle on it open: the end
        // of the stream, which it then reads, tells it to let go, and the server sees the
        // connection close now rather than when that handle closes.
        let _ = self.shared.watch.shutdown(std::net::Shutdown::Both);
    }
}

impl Connection {
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub(crate) fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    pub(crate) fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }

    pub(crate) fn fingerprint(&self) -> Option<v2::Fingerprint> {
        self.fingerprint
    }

    pub(crate) fn max_request(&self) -> usize {
        self.max_request
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.shared.lock().dead.is_none() && !self.closed_while_idle()
    }

    /// On a current-thread runtime (the blocking client's) the reader task only runs while a
    /// caller waits, so a connection the server closed between calls may not be known dead yet.
    /// A peek that does not wait tells, without consuming anything; the connection is then
    /// killed, so the next request goes out on a new one instead of into a dead socket.
    fn closed_while_idle(&self) -> bool {
        let current_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        });
        if !current_thread {
            return false;
        }
        let closed = match caller_wait::peek_without_waiting(&self.shared.watch) {
            Ok(0) => Error::connection("the server closed the connection"),
            Ok(_) => return false,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(err) => Error::io("reading from the server", &err),
        };
        self.kill(closed);
        true
    }

    /// Discards the connection: waiters fail with `reason`, the socket closes.
    pub(crate) fn kill(&self, reason: Error) {
        self.shared.kill(reason);
        self.reader.abort();
    }

    /// Sends one encoded request and waits up to `timeout` for its response.
    pub(crate) async fn request(
        &self,
        id: u64,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Response> {
        if bytes.len() > self.max_request {
            return Err(Error::too_large(bytes.len(), self.max_request));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = match &self.gate {
            Some(gate) => match tokio::time::timeout_at(deadline, gate.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_)) => return Err(Error::connection("connection closed").unsent(true)),
                Err(_) => return Err(timed_out(timeout).unsent(true)),
            },
            None => None,
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.dead {
                return Err(reason.clone().unsent(true));
            }
            state.pending.insert(
                id,
                Pending {
                    reply,
                    written: false,
                },
            );
        }
        // Whatever happens from here on, a late answer for this id must not kill the
        // connection as an unknown id.
        let mut guard = AbandonGuard {
            shared: &self.shared,
            id,
            armed: true,
        };
        let mut answer = answer;
        let exchange = async {
            self.send(id, &bytes).await?;
            let parked = match self.poll_for_answer(&mut answer) {
                AnswerWait::Answered(result) => return result,
                AnswerWait::Parked(parked) => parked,
            };
            let result = match self.wait_for_answer(&mut answer, deadline.into_std()) {
                Some(result) => result,
                None => {
                    loop_read::offer(&self.shared);
                    answer
                        .await
                        .unwrap_or_else(|_| Err(Error::connection("connection closed")))
                }
            };
            self.answer_came(parked);
            result
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => {
                guard.armed = false;
                result
            }
            Err(_) => {
                let unsent = {
                    let state = self.shared.lock();
                    state.pending.get(&id).is_some_and(|entry| !entry.written)
                };
                let error = timed_out(timeout).unsent(unsent);
                if self.protocol != Protocol::V2 {
                    // v1 answers in order: a late reply would be read by the next request.
                    guard.armed = false;
                    self.kill(error.clone());
                }
                Err(error)
            }
        }
    }
}

impl Connection {
    /// Sends a request answered many times (`subscribe`) and returns its answers as they come:
    /// the first answer, then every message the server pushes with the same id. v2 only. The
    /// channel is unbounded, but what fills it is bounded by the subscription's credit window.
    pub(crate) async fn open_stream(
        &self,
        id: u64,
        bytes: Vec<u8>,
    ) -> Result<mpsc::UnboundedReceiver<Result<Response>>> {
        if self.protocol != Protocol::V2 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "subscriptions need a protocol v2 connection",
            ));
        }
        if bytes.len() > self.max_request {
            return Err(Error::too_large(bytes.len(), self.max_request));
        }
        let (sender, answers) = mpsc::unbounded_channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.dead {
                return Err(reason.clone().unsent(true));
            }
            state.streams.insert(id, sender);
        }
        self.send(id, &bytes).await?;
        Ok(answers)
    }
}

/// Marks a request whose caller stopped waiting (timeout, cancellation) so that its late answer
/// is dropped quietly instead of being taken for an id out of step.
struct AbandonGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.lock();
            // A request that never went out gets no answer to drop.
            if state
                .pending
                .remove(&self.id)
                .is_some_and(|entry| entry.written)
            {
                state.abandoned.insert(self.id);
            }
        }
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no response within {timeout:?}"),
    )
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    fn start(
        read_half: OwnedReadHalf,
        write_half: OwnedWriteHalf,
        watch: std::net::TcpStream,
        sealing: Sealing,
        opening: Opening,
        protocol: Protocol,
        capabilities: Vec<String>,
        max_request: usize,
        fingerprint: Option<v2::Fingerprint>,
        busy_poll: Duration,
    ) -> Result<Connection> {
        let socket = read_half
            .reunite(write_half)
            .map_err(|_| Error::connection("the socket's two halves are not of one socket"))?;
        let watch = Arc::new(watch);
        let (read_socket, write_socket) = socket::split(socket, Arc::clone(&watch))
            .map_err(|err| Error::io("setting up the connection", &err))?;
        let frame_limit = match protocol {
            Protocol::V2 => v2::FRAME_LIMIT,
            Protocol::V1 => SessionLimits::V1_NOISE.frame,
            Protocol::Plaintext => SessionLimits::V1_PLAINTEXT.frame,
        };
        let shared = Arc::new(Shared::new(opening, frame_limit, busy_poll, watch));
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), read_socket));
        Ok(Connection {
            shared,
            writer: tokio::sync::Mutex::new(Writer::new(write_socket, sealing, frame_limit)),
            reader,
            gate: (protocol != Protocol::V2).then(|| Semaphore::new(1)),
            protocol,
            capabilities,
            max_request,
            fingerprint,
            polls: !busy_poll.is_zero(),
            caller_waits: false,
        })
    }
}
