//! Opening a connection: the hello, the v1 or v2 handshake, and the fallback to v1 when the
//! configuration allows it and the server never spoke v2 to this client (`known_v2`).

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::negotiate::{self, Attempt, Next, Policy};
use eventdbx_proto::noise::{v1, v2};
use eventdbx_proto::transport::{self, SessionLimits, TransportError};
use eventdbx_proto::ProtoError;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::read_side::Opening;
use super::writer::Sealing;
use super::{Connection, Protocol};
use crate::config::{ClientConfig, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::known_v2;

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
            forbid_fallback: !config.allow_v1_fallback,
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
                Ok(Ok(connection)) => {
                    remember_v2(config, &connection);
                    return Ok(connection);
                }
                Ok(Err(Opened::Failed(err))) => return Err(err),
                Ok(Err(Opened::Rejected(message))) => {
                    match negotiate::after_rejection(&policy, attempt, &message) {
                        Next::Fallback(next) => {
                            refuse_known_v2(config, &message)?;
                            tracing::warn!(
                                target: super::LOG_TARGET,
                                server = %format!("{}:{}", config.host, config.port),
                                "server does not speak protocol v2; falling back to protocol v1, \
                                 which sends the token in clear inside the hello (anyone on the \
                                 path can read it; a man in the middle can cause this fallback); \
                                 set allow_v1_fallback = false to refuse"
                            );
                            attempt = next;
                        }
                        Next::Fail(message) => return Err(rejection(message)),
                    }
                }
            }
        }
    }
}

/// Fails when the server is known to speak v2: its refusal of v2 now is a forgery or a downgrade,
/// and v1 would send the token in clear. An unreadable file fails too, for the same reason.
fn refuse_known_v2(config: &ClientConfig, message: &str) -> Result<()> {
    let Some(path) = config.known_v2_hosts.path() else {
        return Ok(());
    };
    let address = known_v2::server_address(&config.host, config.port);
    match known_v2::recorded(&path, &address) {
        Ok(None) => Ok(()),
        Ok(Some(fingerprint)) => Err(Error::handshake(format!(
            "refusing to fall back to protocol v1: {address} spoke protocol v2 before (server \
             key {fingerprint}, recorded in {}) and now answers \"{message}\"; a man in the \
             middle may be trying to read the token. If the server really went back to v1 only, \
             remove its line from that file",
            path.display()
        ))),
        Err(err) => Err(Error::handshake(format!(
            "refusing to fall back to protocol v1: cannot read {} to check whether {address} \
             spoke protocol v2 before: {err}",
            path.display()
        ))),
    }
}

/// Records a v2 server in the known-hosts file; a failure only costs the protection, so it is
/// logged rather than failing a good connection.
fn remember_v2(config: &ClientConfig, connection: &Connection) {
    let (Some(fingerprint), Some(path)) = (connection.fingerprint(), config.known_v2_hosts.path())
    else {
        return;
    };
    let address = known_v2::server_address(&config.host, config.port);
    if let Err(err) = known_v2::remember(&path, &address, fingerprint) {
        tracing::warn!(
            target: super::LOG_TARGET,
            file = %path.display(),
            error = %err,
            "cannot record that {address} speaks protocol v2; a forged refusal of v2 could push \
             a later client down to v1"
        );
    }
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
    if attempt == (Attempt::V1 { no_noise: true }) {
        probe_plaintext(config).await?;
    }
    let mut socket = connect(config).await?;
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
            Connection::start(
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
            )
            .map_err(Opened::Failed)
        }
        Attempt::V1 { no_noise } => {
            negotiate::check_plaintext_grant(no_noise, response.no_noise)
                .map_err(Error::handshake)?;
            if no_noise {
                tracing::warn!(
                    target: super::LOG_TARGET,
                    "plaintext transport requested; intended for testing only"
                );
                return Connection::start(
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
                )
                .map_err(Opened::Failed);
            }
            let mut initiator = v1::Initiator::new(token).map_err(proto_handshake)?;
            let msg1 = initiator.write_message1().map_err(proto_handshake)?;
            write_frame(&mut write_half, &msg1, SessionLimits::V1_NOISE.frame).await?;
            let msg2 = read_handshake_frame(&mut read_half, SessionLimits::V1_NOISE.frame).await?;
            let session = initiator.read_message2(&msg2).map_err(proto_handshake)?;
            Connection::start(
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
            )
            .map_err(Opened::Failed)
        }
    }
}

async fn connect(config: &ClientConfig) -> Result<TcpStream> {
    let address = format!("{}:{}", config.host, config.port);
    let socket = TcpStream::connect(&address)
        .await
        .map_err(|err| Error::io(&format!("cannot connect to {address}"), &err))?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Asks for plaintext with an empty token on a connection of its own, so the token goes out in
/// clear only to a server that grants plaintext (`negotiate::plaintext_probe`).
async fn probe_plaintext(config: &ClientConfig) -> std::result::Result<(), Opened> {
    let mut socket = connect(config).await?;
    let hello = Hello {
        protocol_version: negotiate::V1,
        token: String::new(),
        tenant_id: config.tenant_id.trim().to_owned(),
        no_noise: true,
    }
    .encode();
    socket
        .write_all(&hello)
        .await
        .map_err(|err| Error::io("sending the plaintext probe", &err))?;
    let response_bytes = read_hello_response(&mut socket).await?;
    let response = HelloResponse::decode(&response_bytes)
        .map_err(|err| Error::handshake(format!("undecodable hello response: {err}")))?;
    drop(socket);
    negotiate::plaintext_probe(response.accepted, &response.message, response.no_noise)
        .map_err(|message| Opened::Failed(Error::handshake(message)))
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
