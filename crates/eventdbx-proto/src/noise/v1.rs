//! Protocol v1: `Noise_NNpsk0_25519_ChaChaPoly_SHA256`, exactly as EventDBX speaks it.
//!
//! Empty prologue, PSK = SHA-256(trimmed token) at position 0, no static keys, empty handshake
//! payloads. The client is the initiator. Each handshake message is 48 bytes (a 32-byte
//! ephemeral key and the 16-byte tag of the empty payload).
//!
//! ```
//! use eventdbx_proto::noise::v1;
//!
//! let mut client = v1::Initiator::new("tok").unwrap();
//! let mut server = v1::Responder::new("tok").unwrap();
//! let msg1 = client.write_message1().unwrap();
//! server.read_message1(&msg1).unwrap();
//! let (msg2, mut server_session) = server.write_message2().unwrap();
//! let mut client_session = client.read_message2(&msg2).unwrap();
//! let sealed = client_session.sealer.seal(b"request").unwrap();
//! assert_eq!(server_session.opener.open(&sealed).unwrap(), b"request");
//! ```

use sha2::{Digest, Sha256};
use snow::{Builder, HandshakeState};

use super::{snow_handshake_error, trimmed_token, Session};
use crate::error::{ProtoError, Result};

/// The Noise protocol name of v1.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Length of each v1 handshake message.
pub const HANDSHAKE_MESSAGE_LEN: usize = 48;

/// The v1 pre-shared key: SHA-256 of the UTF-8 bytes of the trimmed token.
pub fn psk(token: &str) -> Result<[u8; 32]> {
    Ok(Sha256::digest(trimmed_token(token)?.as_bytes()).into())
}

fn build(token: &str, prologue: &[u8], initiator: bool) -> Result<HandshakeState> {
    let params = PATTERN
        .parse()
        .map_err(|err| snow_handshake_error("noise parameters", err))?;
    let key = psk(token)?;
    let builder = Builder::new(params)
        .psk(0, &key)
        .and_then(|b| b.prologue(prologue))
        .map_err(|err| snow_handshake_error("noise setup", err))?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(|err| snow_handshake_error("noise setup", err))
}

/// The client side of the v1 handshake.
pub struct Initiator {
    state: HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v1::Initiator").finish_non_exhaustive()
    }
}

impl Initiator {
    /// Prepares the handshake for `token` (trimmed; an empty token is refused).
    pub fn new(token: &str) -> Result<Self> {
        Self::with_prologue(token, &[])
    }

    /// Like [`Initiator::new`] with a non-standard prologue. Only useful to show that any
    /// prologue but the empty one fails against EventDBX.
    pub fn with_prologue(token: &str, prologue: &[u8]) -> Result<Self> {
        Ok(Initiator {
            state: build(token, prologue, true)?,
        })
    }

    /// Produces msg1 (`-> psk, e`), 48 bytes.
    pub fn write_message1(&mut self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; HANDSHAKE_MESSAGE_LEN];
        let len = self
            .state
            .write_message(&[], &mut out)
            .map_err(|err| snow_handshake_error("writing msg1", err))?;
        out.truncate(len);
        Ok(out)
    }

    /// Consumes msg2 (`<- e, ee`) and enters transport mode.
    pub fn read_message2(mut self, message: &[u8]) -> Result<Session> {
        read_handshake(&mut self.state, message, "msg2")?;
        transport(self.state)
    }
}

/// The server side of the v1 handshake.
pub struct Responder {
    state: HandshakeState,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v1::Responder").finish_non_exhaustive()
    }
}

impl Responder {
    /// Prepares the handshake for the token the hello carried (already verified by the caller).
    pub fn new(token: &str) -> Result<Self> {
        Self::with_prologue(token, &[])
    }

    /// Like [`Responder::new`] with a non-standard prologue (tests only).
    pub fn with_prologue(token: &str, prologue: &[u8]) -> Result<Self> {
        Ok(Responder {
            state: build(token, prologue, false)?,
        })
    }

    /// Consumes msg1. Fails when the client used another token or prologue; the reference server
    /// then closes the connection without a reply, and so should the caller.
    pub fn read_message1(&mut self, message: &[u8]) -> Result<()> {
        read_handshake(&mut self.state, message, "msg1")
    }

    /// Produces msg2 and enters transport mode.
    pub fn write_message2(mut self) -> Result<(Vec<u8>, Session)> {
        let mut out = vec![0u8; HANDSHAKE_MESSAGE_LEN];
        let len = self
            .state
            .write_message(&[], &mut out)
            .map_err(|err| snow_handshake_error("writing msg2", err))?;
        out.truncate(len);
        Ok((out, transport(self.state)?))
    }
}

fn read_handshake(state: &mut HandshakeState, message: &[u8], which: &str) -> Result<()> {
    if message.len() != HANDSHAKE_MESSAGE_LEN {
        return Err(ProtoError::Handshake(format!(
            "{which} must be {HANDSHAKE_MESSAGE_LEN} bytes, got {}",
            message.len()
        )));
    }
    let mut payload = [0u8; HANDSHAKE_MESSAGE_LEN];
    let len = state.read_message(message, &mut payload).map_err(|_| {
        ProtoError::Handshake(format!(
            "{which} did not authenticate (wrong token or incompatible peer)"
        ))
    })?;
    if len != 0 {
        return Err(ProtoError::Handshake(format!(
            "{which} carried an unexpected payload"
        )));
    }
    Ok(())
}

fn transport(state: HandshakeState) -> Result<Session> {
    state
        .into_stateless_transport_mode()
        .map(Session::new)
        .map_err(|err| snow_handshake_error("entering transport mode", err))
}
