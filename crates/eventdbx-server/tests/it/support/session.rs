//! A connected control session: the v1 and v2 handshakes, sealing and opening messages, and
//! request/response framing with ids.

use std::net::SocketAddr;
use std::time::Duration;

use eventdbx_proto::frame;
use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message;
use eventdbx_proto::noise::v2::{self, Fingerprint};
use eventdbx_proto::noise::{v1, Session};
use eventdbx_proto::schema::control_capnp::control_request;

use super::reply::{decode, Reply};
use super::wire::{hello_exchange, raw_exchange, v1_hello, Wire};

/// The transport after the handshake.
enum Transport {
    Plain,
    V1(Session),
    V2(v2::ChunkedSession),
}

/// A connected control session.
pub struct Client {
    /// The socket, with everything sent and received so far.
    pub wire: Wire,
    /// The hello response.
    pub hello: HelloResponse,
    /// The per-request token the typed helpers send.
    pub token: String,
    transport: Transport,
    next_id: u64,
}

/// Connects with protocol v1: Noise unless `no_noise`; the error is the hello's rejection message
/// or why the handshake failed.
pub fn connect_v1(
    addr: SocketAddr,
    token: &str,
    tenant: &str,
    no_noise: bool,
) -> Result<Client, String> {
    let token = token.trim();
    let (mut wire, _, hello) = hello_exchange(addr, &v1_hello(token, tenant, no_noise));
    if !hello.accepted {
        return Err(hello.message);
    }
    if no_noise && !hello.no_noise {
        return Err("server refused the plaintext control channel".into());
    }
    let transport = if hello.no_noise {
        Transport::Plain
    } else {
        let mut initiator = v1::Initiator::new(token).map_err(|e| e.to_string())?;
        let msg1 = initiator.write_message1().map_err(|e| e.to_string())?;
        let framed = frame::encode(&msg1, frame::V1_MAX_NOISE_FRAME).map_err(|e| e.to_string())?;
        wire.write(&framed).map_err(|e| e.to_string())?;
        let msg2 = wire
            .read_frame(frame::V1_MAX_NOISE_FRAME)
            .map_err(|e| format!("handshake failed: {e}"))?;
        Transport::V1(
            initiator
                .read_message2(&msg2)
                .map_err(|e| format!("handshake failed: {e}"))?,
        )
    };
    Ok(Client {
        wire,
        hello,
        token: token.to_owned(),
        transport,
        next_id: 1,
    })
}

/// Connects with protocol v2, optionally pinning the server key.
pub fn connect_v2(
    addr: SocketAddr,
    token: &str,
    tenant: &str,
    pin: Option<Fingerprint>,
) -> Result<Client, String> {
    let hello_bytes = Hello {
        protocol_version: v2::PROTOCOL_VERSION,
        token: String::new(),
        tenant_id: tenant.into(),
        no_noise: false,
    }
    .encode();
    let (mut wire, response_bytes) = raw_exchange(addr, &hello_bytes)?;
    let hello = HelloResponse::decode(&response_bytes).map_err(|e| e.to_string())?;
    if !hello.accepted {
        return Err(hello.message);
    }
    let prologue = v2::prologue(&hello_bytes, &response_bytes);
    let step = |e: eventdbx_proto::ProtoError| format!("handshake failed: {e}");
    let mut initiator =
        v2::Initiator::new(token, pin, v2::DEFAULT_MAX_MESSAGE, &prologue).map_err(step)?;
    let msg1 = initiator.write_message1().map_err(step)?;
    wire.write(&frame::encode(&msg1, v2::FRAME_LIMIT).map_err(step)?)
        .map_err(|e| e.to_string())?;
    let msg2 = wire
        .read_frame(v2::FRAME_LIMIT)
        .map_err(|e| format!("handshake failed: {e}"))?;
    initiator.read_message2(&msg2).map_err(step)?;
    let (msg3, awaiting) = initiator.write_message3().map_err(step)?;
    wire.write(&frame::encode(&msg3, v2::FRAME_LIMIT).map_err(step)?)
        .map_err(|e| e.to_string())?;
    let verdict = wire
        .read_frame(v2::FRAME_LIMIT)
        .map_err(|e| format!("handshake failed: {e}"))?;
    let session = awaiting.read_verdict(&verdict).map_err(step)?;
    Ok(Client {
        wire,
        hello,
        token: token.trim().to_owned(),
        transport: Transport::V2(session),
        next_id: 1,
    })
}

impl Client {
    /// The protocol version of this session.
    pub fn is_v2(&self) -> bool {
        matches!(self.transport, Transport::V2(_))
    }

    /// Encrypts (or not) and writes one logical message.
    pub fn send_message(&mut self, message: &[u8]) -> Result<(), String> {
        let bytes = self.seal(message)?;
        self.wire.write(&bytes).map_err(|e| e.to_string())
    }

    /// One logical message as it goes on the wire: framed, and encrypted unless plaintext.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(match &mut self.transport {
            Transport::Plain => {
                frame::encode(message, frame::V1_MAX_PLAINTEXT_FRAME).map_err(|e| e.to_string())?
            }
            Transport::V1(session) => {
                let sealed = session.sealer.seal(message).map_err(|e| e.to_string())?;
                frame::encode(&sealed, frame::V1_MAX_NOISE_FRAME).map_err(|e| e.to_string())?
            }
            Transport::V2(session) => session
                .sealer
                .seal_message(message)
                .map_err(|e| e.to_string())?,
        })
    }

    /// Reads the closing notice (request id 0, `protocol_error`), checks the server then closes
    /// the connection, and returns the notice's message.
    pub fn closing_notice(&mut self) -> String {
        let notice = self.recv_message().expect("the closing notice");
        let (id, reply) = eventdbx_proto::control::decode_reply(&notice).expect("a control reply");
        assert_eq!(id, 0, "the notice carries request id 0");
        let eventdbx_proto::control::Reply::Error(error) = reply else {
            panic!("the notice is an error: {reply:?}");
        };
        assert_eq!(error.code, "protocol_error");
        assert!(self.wire.closed_by_peer(), "then the server closes");
        error.message
    }

    /// Reads and decrypts one logical message.
    pub fn recv_message(&mut self) -> Result<Vec<u8>, String> {
        match &mut self.transport {
            Transport::Plain => self.wire.read_frame(frame::V1_MAX_PLAINTEXT_FRAME),
            Transport::V1(session) => {
                let payload = self.wire.read_frame(frame::V1_MAX_NOISE_FRAME)?;
                session.opener.open(&payload).map_err(|e| e.to_string())
            }
            Transport::V2(session) => loop {
                let payload = self.wire.read_frame(v2::FRAME_LIMIT)?;
                if let Some(message) = session
                    .opener
                    .open_frame(&payload)
                    .map_err(|e| e.to_string())?
                {
                    return Ok(message);
                }
            },
        }
    }

    /// Sends a request built by `build` with a fresh id; returns the id.
    pub fn send(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<u64, String> {
        let (id, message) = self.encode(build)?;
        self.send_message(&message)?;
        Ok(id)
    }

    /// Sends a request like [`Client::send`], its wire bytes cut into `pieces` writes with
    /// `pause` between two; returns the id.
    pub fn send_in_pieces(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
        pieces: usize,
        pause: Duration,
    ) -> Result<u64, String> {
        let (id, message) = self.encode(build)?;
        let bytes = self.seal(&message)?;
        let size = bytes.len().div_ceil(pieces.max(1));
        for (n, piece) in bytes.chunks(size).enumerate() {
            if n > 0 {
                std::thread::sleep(pause);
            }
            self.wire.write(piece).map_err(|e| e.to_string())?;
        }
        Ok(id)
    }

    /// A request with a fresh id: `(id, unframed bytes)`.
    fn encode(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<(u64, Vec<u8>), String> {
        let id = self.next_id;
        self.next_id += 1;
        let message = message::encode_request(|mut request| {
            request.set_id(id);
            build(request.init_payload());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok((id, message))
    }

    /// Reads one response: `(id, raw bytes)`.
    pub fn recv(&mut self) -> Result<(u64, Vec<u8>), String> {
        let bytes = self.recv_message()?;
        let decoded = message::decode_response(&bytes).map_err(|e| e.to_string())?;
        let id = decoded.get().map_err(|e| e.to_string())?.get_id();
        Ok((id, bytes))
    }

    /// One request, one response; the response id must equal the request id.
    pub fn try_call(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<Vec<u8>, String> {
        let id = self.send(build)?;
        let (got, bytes) = self.recv()?;
        if got != id {
            return Err(format!("response id {got} does not match request id {id}"));
        }
        Ok(bytes)
    }

    /// [`Client::try_call`], panicking on transport failures.
    pub fn call(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Vec<u8> {
        self.try_call(build).expect("request answered")
    }

    /// [`Client::call`] decoded to its JSON view.
    pub fn request(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Reply {
        decode(&self.call(build))
    }
}
