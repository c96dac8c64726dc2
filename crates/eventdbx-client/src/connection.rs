//! One control connection: the handshake, then a reader task on the read half of the socket,
//! and the write half behind an async mutex.
//!
//! Callers hand a request (id and bytes) to [`Connection::request`], which registers the id in
//! the pending map, writes the sealed request itself (one write per request, under the mutex) and
//! waits for the reader to deliver the response carrying that id. Any transport failure (EOF, reset, undecodable frame, a response
//! whose id nobody waits for) kills the connection: every waiter gets the error and the client
//! opens a new connection on its next call. v1 connections let one request in flight at a time,
//! since the server answers in order; v2 connections any number.
//!
//! The received bytes and the opening cipher ([`ReadSide`]) are shared: after a request goes
//! out, its caller polls the socket for a moment for the answer itself
//! ([`ClientConfig::busy_poll`], [`AnswerPoll`], [`PollSlot`]), decoding whatever arrives and
//! handing each answer to its waiter; the reader task reads only what the caller did not wait
//! for. So a sequential caller whose answer comes within the poll gets it on its own thread,
//! with no task wake-up in between, on any runtime flavour.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use eventdbx_proto::frame::{self, FrameBuffer, Polled};
use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, Decoded};
use eventdbx_proto::negotiate::{self, Attempt, Next, Policy};
use eventdbx_proto::noise::{self, v1, v2};
use eventdbx_proto::schema::control_capnp::control_response;
use eventdbx_proto::transport::TransportError;
use eventdbx_proto::transport::{self, available_cpus, poll_cap, PollSlot, SessionLimits};
use eventdbx_proto::ProtoError;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{ClientConfig, Transport};
use crate::error::{Error, ErrorKind, Result};

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

enum Sealing {
    V2(v2::ChunkSealer),
    V1(noise::Sealer),
    Plain,
}

enum Opening {
    V2(v2::ChunkOpener),
    V1(noise::Opener),
    Plain,
}

struct Pending {
    reply: oneshot::Sender<Result<Response>>,
    /// Set by the writer just before the request's first byte goes out.
    written: bool,
}

struct Shared {
    state: Mutex<State>,
    /// What was received and not yet decoded, and the cipher that opens it. Locked only for a
    /// read and the decoding after it, never across an `.await`.
    read: Mutex<ReadSide>,
    /// When callers poll for their answers.
    poll: Mutex<AnswerPoll>,
}

struct ReadSide {
    buffer: FrameBuffer,
    opening: Opening,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Ids whose caller gave up (timeout, cancellation) on v2: their late answers are dropped.
    abandoned: HashSet<u64>,
    dead: Option<Error>,
}

impl Shared {
    fn read_side(&self) -> MutexGuard<'_, ReadSide> {
        // A panic while decoding leaves at worst a connection out of step, which the next
        // decoding error kills.
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer_poll(&self) -> MutexGuard<'_, AnswerPoll> {
        self.poll
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decodes every whole frame received and hands each answer to its waiter. An error means
    /// the connection is out of step and must die.
    fn deliver(&self, side: &mut ReadSide) -> std::result::Result<(), Error> {
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
            let entry = {
                let mut state = self.lock();
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map itself stays consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails every waiter and marks the connection dead (first reason wins).
    fn kill(&self, reason: Error) {
        let pending = {
            let mut state = self.lock();
            if state.dead.is_none() {
                state.dead = Some(reason.clone());
            }
            std::mem::take(&mut state.pending)
        };
        for (_, entry) in pending {
            let _ = entry.reply.send(Err(reason.clone().unsent(!entry.written)));
        }
    }
}

/// The sending side: the write half and the cipher, used by one request at a time.
struct Writer {
    half: OwnedWriteHalf,
    sealing: Sealing,
    frame_limit: usize,
}

impl Writer {
    fn seal(&mut self, bytes: &[u8]) -> std::result::Result<Vec<u8>, ProtoError> {
        match &mut self.sealing {
            Sealing::V2(sealer) => sealer.seal_message(bytes),
            Sealing::V1(sealer) => sealer
                .seal(bytes)
                .and_then(|sealed| frame::encode(&sealed, self.frame_limit)),
            Sealing::Plain => frame::encode(bytes, self.frame_limit),
        }
    }
}

/// Kills the connection when a write is abandoned half way (the caller's future was dropped):
/// the peer would read the rest of the stream out of step.
struct WriteInProgress<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for WriteInProgress<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.kill(Error::connection(
                "a request was abandoned while being written; connection discarded",
            ));
        }
    }
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
    /// A second handle on the socket, only ever peeked (see [`Connection::is_alive`]).
    watch: std::net::TcpStream,
    /// Whether callers poll for their answers ([`Connection::poll_for_answer`]).
    polls: bool,
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
    }
}

impl Connection {
    /// Opens a connection per the configuration's transport, or exactly `negotiated` when an
    /// earlier connection of the client settled it (a reconnect never changes the transport,
    /// so an attacker cannot push a v2 client down to v1).
    pub(crate) async fn open(
        config: &ClientConfig,
        negotiated: Option<Protocol>,
    ) -> Result<Connection> {
        let transport = match negotiated {
            Some(Protocol::V2) => Transport::V2,
            Some(Protocol::V1) => Transport::V1,
            Some(Protocol::Plaintext) => Transport::Plaintext,
            None => config.transport,
        };
        let policy = Policy {
            transport: transport.preference(),
            pinned: config.server_key.is_some(),
            forbid_fallback: false,
        };
        let mut attempt = negotiate::first_attempt(&policy);
        loop {
            match tokio::time::timeout(config.connect_timeout, open_attempt(config, attempt)).await
            {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "connecting to {}:{} took longer than {:?}",
                            config.host, config.port, config.connect_timeout
                        ),
                    ))
                }
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(Opened::Failed(err))) => return Err(err),
                Ok(Err(Opened::Rejected(message))) => {
                    match negotiate::after_rejection(&policy, attempt, &message) {
                        Next::Fallback(next) => {
                            tracing::warn!(
                                server = %format!("{}:{}", config.host, config.port),
                                "server does not speak protocol v2; falling back to protocol v1, \
                                 which sends the token in clear inside the hello"
                            );
                            attempt = next;
                        }
                        Next::Fail(message) => return Err(rejection(message)),
                    }
                }
            }
        }
    }

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
    /// A non-blocking peek tells, without consuming anything; the connection is then killed, so
    /// the next request goes out on a new one instead of into a dead socket.
    fn closed_while_idle(&self) -> bool {
        let current_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        });
        if !current_thread {
            return false;
        }
        let mut byte = [0u8; 1];
        let closed = match self.watch.peek(&mut byte) {
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
            if let Some(result) = self.poll_for_answer(&mut answer) {
                return result;
            }
            answer
                .await
                .unwrap_or_else(|_| Err(Error::connection("connection closed")))
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

    /// Seals and writes one request, in one write.
    async fn send(&self, id: u64, bytes: &[u8]) -> Result<()> {
        let mut writer = self.writer.lock().await;
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.dead {
                return Err(reason.clone().unsent(true));
            }
            match state.pending.get_mut(&id) {
                Some(entry) => entry.written = true,
                None => return Err(Error::connection("connection closed").unsent(true)),
            }
        }
        let sealed = match writer.seal(bytes) {
            Ok(sealed) => sealed,
            Err(err) => {
                // Refused before encrypting anything: the session is still in step.
                self.shared.lock().pending.remove(&id);
                return Err(Error::new(ErrorKind::RequestTooLarge, err.to_string()));
            }
        };
        let mut in_progress = WriteInProgress {
            shared: &self.shared,
            armed: true,
        };
        let written = writer.half.write_all(&sealed).await;
        in_progress.armed = false;
        written.map_err(|err| {
            let error = Error::io("writing to the server", &err);
            self.shared.kill(error.clone());
            error
        })
    }

    /// Reads the socket for the answer for up to the poll budget, on the caller's thread (see
    /// [`ClientConfig::busy_poll`]): `None` when it did not come in time (or polling is off, or
    /// not this request's turn), and the caller then waits for the reader task as usual.
    /// Bytes read here go through the same buffer and cipher as the reader's, under the same
    /// lock, so whoever reads next continues the stream in step; reading behind tokio's back
    /// is sound with its edge-triggered reactor (a stale readiness costs one empty read).
    fn poll_for_answer(
        &self,
        answer: &mut oneshot::Receiver<Result<Response>>,
    ) -> Option<Result<Response>> {
        if !self.polls {
            return None;
        }
        let budget = {
            let mut poll = self.shared.answer_poll();
            if !poll.due() {
                return None;
            }
            poll.budget
        };
        let _slot = poll_turn()?;
        let socket = socket2::SockRef::from(&self.watch);
        let started = std::time::Instant::now();
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
        self.shared.answer_poll().polled(if outcome.is_some() {
            Polled::Frame
        } else {
            Polled::TimedOut
        });
        outcome
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

const TOKEN_REJECTIONS: [&str; 3] = [
    "missing control token",
    "invalid control token",
    "token does not grant access to tenant",
];

fn rejection(message: String) -> Error {
    let token = TOKEN_REJECTIONS.iter().any(|t| message.starts_with(t));
    let error = Error::handshake(format!("hello rejected: {message}"));
    if token {
        error.with_token_rejected()
    } else {
        error
    }
}

enum Opened {
    /// The hello was rejected with this message (a fallback may apply).
    Rejected(String),
    Failed(Error),
}

impl From<Error> for Opened {
    fn from(err: Error) -> Self {
        Opened::Failed(err)
    }
}

fn proto_handshake(err: ProtoError) -> Error {
    match err {
        ProtoError::ServerKeyMismatch { pinned, presented } => Error::handshake(format!(
            "server key mismatch: pinned {pinned}, server presented {presented}"
        )),
        ProtoError::Rejected(reason) => {
            Error::handshake(format!("session rejected: {reason}")).with_token_rejected()
        }
        other => Error::handshake(other.to_string()),
    }
}

async fn open_attempt(
    config: &ClientConfig,
    attempt: Attempt,
) -> std::result::Result<Connection, Opened> {
    let token = config.token.trim();
    let address = format!("{}:{}", config.host, config.port);
    let mut socket = TcpStream::connect(&address)
        .await
        .map_err(|err| Error::io(&format!("cannot connect to {address}"), &err))?;
    let _ = socket.set_nodelay(true);
    let (protocol_version, hello_token, no_noise) = match attempt {
        Attempt::V2 => (v2::PROTOCOL_VERSION, "", false),
        Attempt::V1 { no_noise } => (negotiate::V1, token, no_noise),
    };
    let hello = Hello {
        protocol_version,
        token: hello_token.to_owned(),
        tenant_id: config.tenant_id.trim().to_owned(),
        no_noise,
    }
    .encode();
    socket
        .write_all(&hello)
        .await
        .map_err(|err| Error::io("sending the hello", &err))?;
    let response_bytes = read_hello_response(&mut socket).await?;
    let response = HelloResponse::decode(&response_bytes)
        .map_err(|err| Error::handshake(format!("undecodable hello response: {err}")))?;
    if !response.accepted {
        return Err(Opened::Rejected(response.message));
    }
    let (socket, watch) = watch_handle(socket)?;
    let (read_half, mut write_half) = socket.into_split();
    let mut read_half = read_half;
    match attempt {
        Attempt::V2 => {
            let prologue = v2::prologue(&hello, &response_bytes);
            let mut initiator = v2::Initiator::new(
                token,
                config.server_key,
                config.max_message_bytes,
                &prologue,
            )
            .map_err(proto_handshake)?;
            let msg1 = initiator.write_message1().map_err(proto_handshake)?;
            write_frame(&mut write_half, &msg1, v2::FRAME_LIMIT).await?;
            let msg2 = read_handshake_frame(&mut read_half, v2::FRAME_LIMIT).await?;
            let fingerprint = initiator.read_message2(&msg2).map_err(proto_handshake)?;
            let (msg3, awaiting) = initiator.write_message3().map_err(proto_handshake)?;
            write_frame(&mut write_half, &msg3, v2::FRAME_LIMIT).await?;
            let verdict = transport::read_handshake_frame(&mut read_half, v2::FRAME_LIMIT)
                .await
                .map_err(|_| {
                    Error::handshake(
                        "the server closed the connection during the handshake (wrong token or \
                         incompatible server)",
                    )
                    .with_token_rejected()
                })?;
            let session = awaiting.read_verdict(&verdict).map_err(proto_handshake)?;
            let max_request = session.sealer.peer_max().min(config.max_message_bytes);
            Ok(Connection::start(
                read_half,
                write_half,
                watch,
                Sealing::V2(session.sealer),
                Opening::V2(session.opener),
                Protocol::V2,
                response.capabilities,
                max_request,
                Some(fingerprint),
                config.busy_poll,
            ))
        }
        Attempt::V1 { no_noise } => {
            negotiate::check_plaintext_grant(no_noise, response.no_noise)
                .map_err(Error::handshake)?;
            if no_noise {
                tracing::warn!("plaintext transport requested; intended for testing only");
                return Ok(Connection::start(
                    read_half,
                    write_half,
                    watch,
                    Sealing::Plain,
                    Opening::Plain,
                    Protocol::Plaintext,
                    response.capabilities,
                    SessionLimits::V1_PLAINTEXT.message,
                    None,
                    config.busy_poll,
                ));
            }
            let mut initiator = v1::Initiator::new(token).map_err(proto_handshake)?;
            let msg1 = initiator.write_message1().map_err(proto_handshake)?;
            write_frame(&mut write_half, &msg1, SessionLimits::V1_NOISE.frame).await?;
            let msg2 = read_handshake_frame(&mut read_half, SessionLimits::V1_NOISE.frame).await?;
            let session = initiator.read_message2(&msg2).map_err(proto_handshake)?;
            Ok(Connection::start(
                read_half,
                write_half,
                watch,
                Sealing::V1(session.sealer),
                Opening::V1(session.opener),
                Protocol::V1,
                response.capabilities,
                SessionLimits::V1_NOISE.message,
                None,
                config.busy_poll,
            ))
        }
    }
}

/// The socket and a duplicate of its descriptor, for [`Connection::is_alive`] to peek at.
fn watch_handle(socket: TcpStream) -> Result<(TcpStream, std::net::TcpStream)> {
    let failed = |err: std::io::Error| Error::io("setting up the connection", &err);
    // `into_std` keeps the descriptor non-blocking, and so is the duplicate.
    let socket = socket.into_std().map_err(failed)?;
    let watch = socket.try_clone().map_err(failed)?;
    Ok((TcpStream::from_std(socket).map_err(failed)?, watch))
}

async fn read_hello_response(socket: &mut TcpStream) -> Result<Vec<u8>> {
    transport::read_hello(socket)
        .await
        .map_err(|err| match err {
            TransportError::Io(err) => Error::io("reading the hello response", &err),
            other => Error::handshake(format!("undecodable hello response: {other}")),
        })
}

/// A transport failure while `context` (reading from the server, …) as the client's error: the
/// stream's failures are connection errors, bytes that can never be a frame protocol errors.
fn transport_error(context: &str) -> impl Fn(TransportError) -> Error + '_ {
    move |err| match err {
        TransportError::Io(err) => Error::io(context, &err),
        other => Error::protocol(other.to_string()),
    }
}

async fn read_handshake_frame(reader: &mut OwnedReadHalf, limit: usize) -> Result<Vec<u8>> {
    transport::read_handshake_frame(reader, limit)
        .await
        .map_err(transport_error("reading from the server"))
        .map_err(|err| {
            if err.kind() == ErrorKind::Connection {
                Error::handshake(format!(
                    "the server closed the connection during the handshake (wrong token or \
                     incompatible server): {}",
                    err.message()
                ))
                .with_token_rejected()
            } else {
                err
            }
        })
}

async fn write_frame(writer: &mut OwnedWriteHalf, payload: &[u8], limit: usize) -> Result<()> {
    transport::write_frame(writer, payload, limit)
        .await
        .map_err(transport_error("writing a frame"))
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
    ) -> Connection {
        let frame_limit = match protocol {
            Protocol::V2 => v2::FRAME_LIMIT,
            Protocol::V1 => SessionLimits::V1_NOISE.frame,
            Protocol::Plaintext => SessionLimits::V1_PLAINTEXT.frame,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            read: Mutex::new(ReadSide {
                buffer: FrameBuffer::new(frame_limit),
                opening,
            }),
            poll: Mutex::new(AnswerPoll::new(busy_poll)),
        });
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), read_half));
        Connection {
            shared,
            writer: tokio::sync::Mutex::new(Writer {
                half: write_half,
                sealing,
                frame_limit,
            }),
            reader,
            gate: (protocol != Protocol::V2).then(|| Semaphore::new(1)),
            protocol,
            capabilities,
            max_request,
            fingerprint,
            watch,
            polls: !busy_poll.is_zero(),
        }
    }
}

/// When the reader polls for an answer (see [`ClientConfig::busy_poll`]): once per request
/// sent, unless recent polls ended with no answer; after `n` such polls in a row (up to 6) it
/// lets 2^n requests go by unpolled before it tries again.
#[derive(Debug)]
struct AnswerPoll {
    budget: Duration,
    /// Polls in a row that ended with no answer (at most 6).
    misses: u32,
    /// Requests still to let go by without polling.
    skip: u32,
}

impl AnswerPoll {
    fn new(budget: Duration) -> Self {
        AnswerPoll {
            budget,
            misses: 0,
            skip: 0,
        }
    }

    /// A request went out: whether to poll for its answer.
    fn due(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn polled(&mut self, outcome: Polled) {
        if outcome == Polled::TimedOut {
            self.misses = (self.misses + 1).min(6);
            self.skip = 1 << self.misses;
        } else {
            self.misses = 0;
        }
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

/// The reader task: reads what arrives when no caller is polling for it and delivers it.
async fn read_loop(shared: Arc<Shared>, reader: OwnedReadHalf) {
    let reason = loop {
        if let Err(err) = {
            let mut side = shared.read_side();
            shared.deliver(&mut side)
        } {
            break err;
        }
        if let Err(err) = reader.readable().await {
            break Error::io("reading from the server", &err);
        }
        let read = {
            let mut side = shared.read_side();
            // Each read takes whatever the socket holds: a response that arrived whole costs
            // one `recv`, not one for its header and one for its payload.
            match reader.try_read(side.buffer.read_space()) {
                Ok(read) => {
                    side.buffer.filled(read);
                    Ok(read)
                }
                Err(err) => Err(err),
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
