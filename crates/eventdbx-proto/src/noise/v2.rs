//! Protocol v2: `Noise_XXpsk3_25519_ChaChaPoly_SHA256` with a token-derived PSK.
//!
//! The construction, its threat model and test vectors are in `docs/protocol.md`. In short:
//!
//! ```text
//! prologue = "eventdbx control v2" 0x00 || u32be(len hello) || hello || u32be(len resp) || resp
//! msg1  C->S  -> e                 payload: 0x01 || token_id (16 bytes)         (no secret)
//! msg2  S->C  <- e, ee, s, es      payload: 0x01 || u32be(server max message)
//! msg3  C->S  -> s, se, psk        payload: 0x01 || u32be(client max message)
//!                                           || u16be(len token) || token || zero padding
//! verdict S->C (first transport message): 0x00 = accepted | 0x01 || reason (UTF-8)
//! ```
//!
//! The client checks the server's static key against its pin after msg2 and before msg3, so a
//! pinned client never sends the token (even encrypted) to an impostor. The token is only ever
//! sent inside msg3, whose key depends on the PSK, the ephemeral-ephemeral and both
//! static-ephemeral Diffie-Hellman results.
//!
//! After the verdict, logical messages are split into chunks that each fit one Noise transport
//! message; see [`ChunkSealer`] and [`ChunkOpener`].

use curve25519_dalek::montgomery::MontgomeryPoint;
use sha2::{Digest, Sha256};
use snow::{Builder, HandshakeState};

use super::{snow_handshake_error, trimmed_token, Opener, Sealer, Session};
use crate::error::{ProtoError, Result};
use crate::frame::{self, NOISE_MAX_MESSAGE, NOISE_MAX_PLAINTEXT};

/// The Noise protocol name of v2.
pub const PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";
/// `ControlHello.protocolVersion` of v2.
pub const PROTOCOL_VERSION: u16 = 2;
/// Default largest logical message (request or response), 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Length of a token id.
pub const TOKEN_ID_LEN: usize = 16;
/// Frame limit for every v2 frame: one Noise message.
pub const FRAME_LIMIT: usize = NOISE_MAX_MESSAGE;

const PAYLOAD_VERSION: u8 = 1;
const PROLOGUE_LABEL: &[u8] = b"eventdbx control v2\0";
const TOKEN_ID_LABEL: &[u8] = b"eventdbx v2 token id\0";
const PSK_LABEL: &[u8] = b"eventdbx v2 psk\0";
/// The token field of msg3 is zero-padded to a multiple of this, so its length leaks little.
const TOKEN_PADDING: usize = 256;
/// Largest token msg3 can carry.
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

const VERDICT_ACCEPTED: u8 = 0x00;
const VERDICT_REJECTED: u8 = 0x01;

const CHUNK_FIRST: u8 = 0b01;
const CHUNK_LAST: u8 = 0b10;
const CHUNK_FLAGS: u8 = CHUNK_FIRST | CHUNK_LAST;

/// Identifies a token without revealing it: the first 16 bytes of
/// SHA-256("eventdbx v2 token id" 0x00 || trimmed token).
///
/// The server records the id and the [`psk`] of every token it issues, so that it can pick the
/// PSK for a handshake before the token itself has arrived.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; TOKEN_ID_LEN]);

impl TokenId {
    /// The token id of `token` (trimmed).
    pub fn of(token: &str) -> Result<Self> {
        let digest = labelled_sha256(TOKEN_ID_LABEL, trimmed_token(token)?.as_bytes());
        let mut id = [0u8; TOKEN_ID_LEN];
        id.copy_from_slice(&digest[..TOKEN_ID_LEN]);
        Ok(TokenId(id))
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// The v2 pre-shared key: SHA-256("eventdbx v2 psk" 0x00 || trimmed token).
///
/// Domain-separated from the v1 PSK, so a v1 transcript gives nothing towards a v2 session.
pub fn psk(token: &str) -> Result<[u8; 32]> {
    Ok(labelled_sha256(PSK_LABEL, trimmed_token(token)?.as_bytes()))
}

fn labelled_sha256(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(label);
    hasher.update(data);
    hasher.finalize().into()
}

/// The prologue both sides mix into the handshake: it binds the hello and the hello response,
/// so a man in the middle cannot alter the tenant, the version or the capabilities.
pub fn prologue(hello: &[u8], hello_response: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROLOGUE_LABEL.len() + 8 + hello.len() + hello_response.len());
    out.extend_from_slice(PROLOGUE_LABEL);
    for part in [hello, hello_response] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The SHA-256 fingerprint of a server's static public key; what a client pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of an X25519 public key.
    pub fn of(public_key: &[u8; 32]) -> Self {
        Fingerprint(Sha256::digest(public_key).into())
    }
}

impl std::fmt::Display for Fingerprint {
    /// `sha256:` followed by 64 lowercase hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = ProtoError;

    /// Accepts 64 hex digits, optionally prefixed by `sha256:`, in either case.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let hex = text
            .get(..7)
            .filter(|prefix| prefix.eq_ignore_ascii_case("sha256:"))
            .map_or(text, |_| &text[7..]);
        let invalid = || ProtoError::InvalidUse(format!("invalid server key fingerprint '{text}'"));
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A server's persistent X25519 static key.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl StaticKeypair {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_private(random_32()?))
    }

    /// The key pair of a stored private key (the public half is recomputed, never trusted).
    pub fn from_private(private: [u8; 32]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        StaticKeypair { private, public }
    }

    /// The private key, for storing in a 0600 file.
    pub fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.public)
    }
}

fn random_32() -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    getrandom::fill(&mut out)
        .map_err(|err| ProtoError::InvalidUse(format!("no system randomness: {err}")))?;
    Ok(out)
}

fn handshake_buffer() -> Vec<u8> {
    vec![0u8; NOISE_MAX_MESSAGE]
}

fn write_handshake(state: &mut HandshakeState, payload: &[u8], which: &str) -> Result<Vec<u8>> {
    let mut out = handshake_buffer();
    let len = state
        .write_message(payload, &mut out)
        .map_err(|err| snow_handshake_error(which, err))?;
    out.truncate(len);
    Ok(out)
}

fn read_handshake(state: &mut HandshakeState, message: &[u8], which: &str) -> Result<Vec<u8>> {
    if message.len() > NOISE_MAX_MESSAGE {
        return Err(ProtoError::Handshake(format!(
            "{which} is longer than a Noise message"
        )));
    }
    let mut payload = handshake_buffer();
    let len = state.read_message(message, &mut payload).map_err(|_| {
        ProtoError::Handshake(format!(
            "{which} did not authenticate (wrong token or tampering)"
        ))
    })?;
    payload.truncate(len);
    Ok(payload)
}

/// Splits a handshake payload into its version byte and body.
fn payload_body<'a>(payload: &'a [u8], which: &str) -> Result<&'a [u8]> {
    match payload.split_first() {
        Some((&PAYLOAD_VERSION, body)) => Ok(body),
        Some((version, _)) => Err(ProtoError::Handshake(format!(
            "{which} payload version {version} is not supported"
        ))),
        None => Err(ProtoError::Handshake(format!("{which} payload is empty"))),
    }
}

fn read_u32<'a>(bytes: &'a [u8], which: &str) -> Result<(usize, &'a [u8])> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| ProtoError::Handshake(format!("{which} payload is truncated")))?;
    Ok((u32::from_be_bytes(*head) as usize, rest))
}

fn max_message_field(max_message: usize) -> Result<[u8; 4]> {
    u32::try_from(max_message)
        .map(u32::to_be_bytes)
        .map_err(|_| ProtoError::InvalidUse("max message size must fit in 32 bits".into()))
}

fn params() -> Result<snow::params::NoiseParams> {
    PATTERN
        .parse()
        .map_err(|err| snow_handshake_error("noise parameters", err))
}

/// Keys fixed in advance, used only to reproduce the test vectors of `docs/protocol.md`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct FixedKeys {
    pub static_private: [u8; 32],
    pub ephemeral_private: [u8; 32],
}

/// The client side of the v2 handshake.
pub struct Initiator {
    state: HandshakeState,
    token: String,
    token_id: TokenId,
    pinned: Option<Fingerprint>,
    max_message: usize,
    server: Option<(Fingerprint, usize)>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v2::Initiator")
            .field("token_id", &self.token_id)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Prepares a handshake. `prologue` is [`prologue`] of the hello sent and the response
    /// received; `max_message` is the largest logical message this client accepts.
    pub fn new(
        token: &str,
        pinned: Option<Fingerprint>,
        max_message: usize,
        prologue: &[u8],
    ) -> Result<Self> {
        Self::build(token, pinned, max_message, prologue, None)
    }

    #[doc(hidden)]
    pub fn with_fixed_keys(
        token: &str,
        pinned: Option<Fingerprint>,
        max_message: usize,
        prologue: &[u8],
        keys: FixedKeys,
    ) -> Result<Self> {
        Self::build(token, pinned, max_message, prologue, Some(keys))
    }

    fn build(
        token: &str,
        pinned: Option<Fingerprint>,
        max_message: usize,
        prologue: &[u8],
        keys: Option<FixedKeys>,
    ) -> Result<Self> {
        let token = trimmed_token(token)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(ProtoError::InvalidUse(format!(
                "token is {} bytes; at most {MAX_TOKEN_LEN} are supported",
                token.len()
            )));
        }
        max_message_field(max_message)?;
        let key = psk(token)?;
        let static_private = match keys {
            Some(keys) => keys.static_private,
            None => random_32()?,
        };
        let mut builder = Builder::new(params()?)
            .local_private_key(&static_private)
            .and_then(|b| b.psk(3, &key))
            .and_then(|b| b.prologue(prologue))
            .map_err(|err| snow_handshake_error("noise setup", err))?;
        if let Some(keys) = &keys {
            builder = builder.fixed_ephemeral_key_for_testing_only(&keys.ephemeral_private);
        }
        let state = builder
            .build_initiator()
            .map_err(|err| snow_handshake_error("noise setup", err))?;
        Ok(Initiator {
            state,
            token: token.to_owned(),
            token_id: TokenId::of(token)?,
            pinned,
            max_message,
            server: None,
        })
    }

    /// Produces msg1 (`-> e`), carrying the token id.
    pub fn write_message1(&mut self) -> Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(1 + TOKEN_ID_LEN);
        payload.push(PAYLOAD_VERSION);
        payload.extend_from_slice(&self.token_id.0);
        write_handshake(&mut self.state, &payload, "msg1")
    }

    /// Consumes msg2 (`<- e, ee, s, es`) and checks the server's static key against the pin.
    /// Returns the server's fingerprint. On a pin mismatch nothing more may be sent.
    pub fn read_message2(&mut self, message: &[u8]) -> Result<Fingerprint> {
        let payload = read_handshake(&mut self.state, message, "msg2")?;
        let server_key: [u8; 32] = self
            .state
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or_else(|| ProtoError::Handshake("msg2 carried no server static key".into()))?;
        let presented = Fingerprint::of(&server_key);
        if let Some(pinned) = self.pinned {
            if pinned != presented {
                return Err(ProtoError::ServerKeyMismatch {
                    pinned: pinned.to_string(),
                    presented: presented.to_string(),
                });
            }
        }
        let (server_max, rest) = read_u32(payload_body(&payload, "msg2")?, "msg2")?;
        if !rest.is_empty() {
            return Err(ProtoError::Handshake(
                "msg2 payload has trailing bytes".into(),
            ));
        }
        self.server = Some((presented, server_max));
        Ok(presented)
    }

    /// Produces msg3 (`-> s, se, psk`), carrying the token under the PSK.
    pub fn write_message3(mut self) -> Result<(Vec<u8>, AwaitingVerdict)> {
        let (fingerprint, server_max) = self
            .server
            .ok_or_else(|| ProtoError::InvalidUse("msg3 before a verified msg2".into()))?;
        let token = self.token.as_bytes();
        let padded = token.len().div_ceil(TOKEN_PADDING).max(1) * TOKEN_PADDING;
        let mut payload = Vec::with_capacity(1 + 4 + 2 + padded);
        payload.push(PAYLOAD_VERSION);
        payload.extend_from_slice(&max_message_field(self.max_message)?);
        let token_len = u16::try_from(token.len())
            .map_err(|_| ProtoError::InvalidUse("token too long".into()))?;
        payload.extend_from_slice(&token_len.to_be_bytes());
        payload.extend_from_slice(token);
        payload.resize(1 + 4 + 2 + padded, 0);
        let message = write_handshake(&mut self.state, &payload, "msg3")?;
        let session = into_session(self.state)?;
        Ok((
            message,
            AwaitingVerdict {
                session,
                fingerprint,
                server_max,
                max_message: self.max_message,
            },
        ))
    }
}

/// A client whose handshake is complete, waiting for the server's verdict on its token.
#[derive(Debug)]
pub struct AwaitingVerdict {
    session: Session,
    fingerprint: Fingerprint,
    server_max: usize,
    max_message: usize,
}

impl AwaitingVerdict {
    /// Reads the verdict (the first transport message from the server). A rejection becomes
    /// [`ProtoError::Rejected`] with the server's reason.
    pub fn read_verdict(mut self, ciphertext: &[u8]) -> Result<ChunkedSession> {
        let verdict = self.session.opener.open(ciphertext)?;
        match verdict.split_first() {
            Some((&VERDICT_ACCEPTED, [])) => Ok(ChunkedSession::new(
                self.session,
                self.server_max,
                self.max_message,
                Some(self.fingerprint),
            )),
            Some((&VERDICT_REJECTED, reason)) => Err(ProtoError::Rejected(
                String::from_utf8_lossy(reason).into_owned(),
            )),
            _ => Err(ProtoError::Handshake("malformed session verdict".into())),
        }
    }
}

/// The server side of the v2 handshake.
pub struct Responder {
    state: HandshakeState,
    max_message: usize,
    token_id: Option<TokenId>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("v2::Responder")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Prepares a handshake with the server's persistent key.
    pub fn new(server_key: &StaticKeypair, max_message: usize, prologue: &[u8]) -> Result<Self> {
        Self::build(server_key, max_message, prologue, None)
    }

    #[doc(hidden)]
    pub fn with_fixed_ephemeral(
        server_key: &StaticKeypair,
        max_message: usize,
        prologue: &[u8],
        ephemeral_private: [u8; 32],
    ) -> Result<Self> {
        Self::build(server_key, max_message, prologue, Some(ephemeral_private))
    }

    fn build(
        server_key: &StaticKeypair,
        max_message: usize,
        prologue: &[u8],
        ephemeral: Option<[u8; 32]>,
    ) -> Result<Self> {
        max_message_field(max_message)?;
        let mut builder = Builder::new(params()?)
            .local_private_key(server_key.private_bytes())
            .and_then(|b| b.prologue(prologue))
            .map_err(|err| snow_handshake_error("noise setup", err))?;
        if let Some(key) = &ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(key);
        }
        let state = builder
            .build_responder()
            .map_err(|err| snow_handshake_error("noise setup", err))?;
        Ok(Responder {
            state,
            max_message,
            token_id: None,
        })
    }

    /// Consumes msg1 and returns the token id the client announced.
    pub fn read_message1(&mut self, message: &[u8]) -> Result<TokenId> {
        let payload = read_handshake(&mut self.state, message, "msg1")?;
        let body = payload_body(&payload, "msg1")?;
        let id: [u8; TOKEN_ID_LEN] = body
            .try_into()
            .map_err(|_| ProtoError::Handshake("msg1 token id has the wrong length".into()))?;
        self.token_id = Some(TokenId(id));
        Ok(TokenId(id))
    }

    /// Produces msg2. `psk` is the PSK recorded for the announced token id; pass `None` for an
    /// unknown id: the handshake then goes on with a random PSK and fails at msg3, so a client
    /// cannot tell an unknown id from a wrong token.
    pub fn write_message2(&mut self, psk: Option<&[u8; 32]>) -> Result<Vec<u8>> {
        let key = match psk {
            Some(key) => *key,
            None => random_32()?,
        };
        self.state
            .set_psk(3, &key)
            .map_err(|err| snow_handshake_error("setting the psk", err))?;
        let mut payload = vec![PAYLOAD_VERSION];
        payload.extend_from_slice(&max_message_field(self.max_message)?);
        write_handshake(&mut self.state, &payload, "msg2")
    }

    /// Consumes msg3: authenticates the PSK and extracts the token, which must match the id of
    /// msg1. The caller then verifies the token and calls [`PendingSession::accept`] or
    /// [`PendingSession::reject`].
    pub fn read_message3(mut self, message: &[u8]) -> Result<PendingSession> {
        let announced = self
            .token_id
            .ok_or_else(|| ProtoError::InvalidUse("msg3 before msg1".into()))?;
        let payload = read_handshake(&mut self.state, message, "msg3")?;
        let (client_max, rest) = read_u32(payload_body(&payload, "msg3")?, "msg3")?;
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| ProtoError::Handshake("msg3 payload is truncated".into()))?;
        let token = rest
            .get(..u16::from_be_bytes(*len) as usize)
            .ok_or_else(|| ProtoError::Handshake("msg3 token is truncated".into()))?;
        let token = std::str::from_utf8(token)
            .map_err(|_| ProtoError::Handshake("msg3 token is not UTF-8".into()))?;
        if TokenId::of(token).ok() != Some(announced) {
            return Err(ProtoError::Handshake(
                "msg3 token does not match the token id".into(),
            ));
        }
        let token = token.to_owned();
        Ok(PendingSession {
            session: into_session(self.state)?,
            token,
            client_max,
            max_message: self.max_message,
        })
    }
}

/// A server-side session whose handshake is complete but whose token is not yet accepted.
pub struct PendingSession {
    session: Session,
    token: String,
    client_max: usize,
    max_message: usize,
}

impl std::fmt::Debug for PendingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSession")
            .field("client_max", &self.client_max)
            .finish_non_exhaustive()
    }
}

impl PendingSession {
    /// The bearer token the client proved; the caller verifies it (signature, expiry, tenant).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Accepts the session: returns the framed verdict to send and the chunked session.
    pub fn accept(mut self) -> Result<(Vec<u8>, ChunkedSession)> {
        let verdict = self.session.sealer.seal(&[VERDICT_ACCEPTED])?;
        let framed = frame::encode(&verdict, FRAME_LIMIT)?;
        Ok((
            framed,
            ChunkedSession::new(self.session, self.client_max, self.max_message, None),
        ))
    }

    /// Rejects the session with a reason the client will see; returns the framed verdict.
    pub fn reject(mut self, reason: &str) -> Result<Vec<u8>> {
        let mut verdict = vec![VERDICT_REJECTED];
        let limit = NOISE_MAX_PLAINTEXT - 1;
        let reason = reason.get(..limit).unwrap_or(reason);
        verdict.extend_from_slice(reason.as_bytes());
        frame::encode(&self.session.sealer.seal(&verdict)?, FRAME_LIMIT)
    }
}

fn into_session(state: HandshakeState) -> Result<Session> {
    state
        .into_stateless_transport_mode()
        .map(Session::new)
        .map_err(|err| snow_handshake_error("entering transport mode", err))
}

/// An established v2 session: chunked logical messages in both directions.
#[derive(Debug)]
pub struct ChunkedSession {
    /// Sends logical messages.
    pub sealer: ChunkSealer,
    /// Receives logical messages.
    pub opener: ChunkOpener,
    /// The server's fingerprint (client side only).
    pub server_fingerprint: Option<Fingerprint>,
}

impl ChunkedSession {
    fn new(
        session: Session,
        peer_max: usize,
        max_message: usize,
        server_fingerprint: Option<Fingerprint>,
    ) -> Self {
        ChunkedSession {
            sealer: ChunkSealer {
                inner: session.sealer,
                peer_max,
            },
            opener: ChunkOpener {
                inner: session.opener,
                max_message,
                partial: None,
            },
            server_fingerprint,
        }
    }
}

/// Splits logical messages into chunks, each one Noise transport message in one frame.
///
/// Chunk plaintext: one flags byte (bit 0 = first, bit 1 = last); a first chunk then carries
/// the message's total length as u32 big-endian; then data. The chunks of one message are
/// contiguous on the wire: a sender never interleaves two messages, so the receiver needs one
/// reassembly buffer, and the request id inside the message pairs responses with requests.
#[derive(Debug)]
pub struct ChunkSealer {
    inner: Sealer,
    peer_max: usize,
}

impl ChunkSealer {
    /// The largest logical message the peer accepts.
    pub fn peer_max(&self) -> usize {
        self.peer_max
    }

    /// Encrypts `message` as framed chunks, concatenated, ready to go out in one write.
    ///
    /// Refuses a message over the peer's maximum with [`ProtoError::MessageTooLarge`] before
    /// encrypting anything, so the session stays in step.
    pub fn seal_message(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > self.peer_max {
            return Err(ProtoError::MessageTooLarge {
                len: message.len(),
                limit: self.peer_max,
            });
        }
        let total = u32::try_from(message.len()).map_err(|_| ProtoError::MessageTooLarge {
            len: message.len(),
            limit: self.peer_max,
        })?;
        let chunks = message.len() / (NOISE_MAX_PLAINTEXT - 5) + 1;
        let mut out = Vec::with_capacity(message.len() + chunks * (frame::HEADER_LEN + 21));
        let mut rest = message;
        let mut first = true;
        let mut plaintext = Vec::with_capacity(NOISE_MAX_PLAINTEXT.min(message.len() + 5));
        loop {
            plaintext.clear();
            let mut flags = if first { CHUNK_FIRST } else { 0 };
            let header = if first { 5 } else { 1 };
            let take = rest.len().min(NOISE_MAX_PLAINTEXT - header);
            if take == rest.len() {
                flags |= CHUNK_LAST;
            }
            plaintext.push(flags);
            if first {
                plaintext.extend_from_slice(&total.to_be_bytes());
            }
            plaintext.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            frame::encode_into(&self.inner.seal(&plaintext)?, FRAME_LIMIT, &mut out)?;
            if flags & CHUNK_LAST != 0 {
                return Ok(out);
            }
            first = false;
        }
    }
}

/// Reassembles logical messages from chunks, enforcing this side's maximum.
#[derive(Debug)]
pub struct ChunkOpener {
    inner: Opener,
    max_message: usize,
    partial: Option<(usize, Vec<u8>)>,
}

impl ChunkOpener {
    /// The announced length of the message whose chunks are arriving, if one has begun and
    /// not ended: what a receiver budgeting its memory reserves.
    pub fn pending_len(&self) -> Option<usize> {
        self.partial.as_ref().map(|(total, _)| *total)
    }

    /// Decrypts one frame's payload; returns a logical message when its last chunk arrives.
    ///
    /// Any error leaves the session out of step: drop the connection.
    pub fn open_frame(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>> {
        let plaintext = self.inner.open(payload)?;
        let (&flags, body) = plaintext
            .split_first()
            .ok_or_else(|| ProtoError::Malformed("empty chunk".into()))?;
        if flags & !CHUNK_FLAGS != 0 {
            return Err(ProtoError::Malformed(format!(
                "unknown chunk flags {flags:#04x}"
            )));
        }
        let (total, mut buffer, body) = if flags & CHUNK_FIRST != 0 {
            if self.partial.is_some() {
                return Err(ProtoError::Malformed(
                    "new message before the last one ended".into(),
                ));
            }
            let (len, body) = body
                .split_first_chunk::<4>()
                .ok_or_else(|| ProtoError::Malformed("first chunk lacks the length".into()))?;
            let total = u32::from_be_bytes(*len) as usize;
            if total > self.max_message {
                return Err(ProtoError::MessageTooLarge {
                    len: total,
                    limit: self.max_message,
                });
            }
            // Grow as data arrives rather than trusting the announced length up front.
            (
                total,
                Vec::with_capacity(total.min(NOISE_MAX_PLAINTEXT)),
                body,
            )
        } else {
            let (total, buffer) = self.partial.take().ok_or_else(|| {
                ProtoError::Malformed("continuation chunk without a start".into())
            })?;
            (total, buffer, body)
        };
        if buffer.len() + body.len() > total {
            return Err(ProtoError::Malformed(
                "chunks exceed the announced length".into(),
            ));
        }
        buffer.extend_from_slice(body);
        if flags & CHUNK_LAST == 0 {
            self.partial = Some((total, buffer));
            return Ok(None);
        }
        if buffer.len() != total {
            return Err(ProtoError::Malformed(format!(
                "message ended after {} of {total} bytes",
                buffer.len()
            )));
        }
        Ok(Some(buffer))
    }
}
