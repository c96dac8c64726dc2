//! The one error type of the protocol crate.

/// Everything that can go wrong while encoding, decoding or securing protocol messages.
///
/// Every decoder in this crate returns one of these instead of panicking, whatever bytes it is fed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A frame announced (or a caller tried to send) more bytes than the limit allows.
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge { len: usize, limit: usize },
    /// A request is larger than the transport can carry; detected before anything is sent.
    #[error("request too large ({len} > {limit} bytes)")]
    RequestTooLarge { len: usize, limit: usize },
    /// A logical message is larger than the configured maximum (protocol v2).
    #[error("message too large ({len} > {limit} bytes)")]
    MessageTooLarge { len: usize, limit: usize },
    /// The input ended before a complete frame or message.
    #[error("truncated input: {0}")]
    Truncated(&'static str),
    /// The bytes do not form a valid Cap'n Proto message, or a field holds an impossible value.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A Noise handshake failed: wrong token, wrong prologue, wrong protocol or a tampered message.
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    /// A Noise transport message did not authenticate (wrong key, tampering, replay, garbage).
    #[error("noise decryption failed")]
    Decrypt,
    /// The server proved a static key other than the one the client pinned.
    #[error("server key mismatch: pinned {pinned}, server presented {presented}")]
    ServerKeyMismatch { pinned: String, presented: String },
    /// The server rejected the session during the v2 handshake (e.g. revoked or expired token).
    #[error("session rejected by server: {0}")]
    Rejected(String),
    /// The caller used a state machine out of order or with invalid arguments (e.g. empty token).
    #[error("invalid use: {0}")]
    InvalidUse(String),
}

impl From<capnp::Error> for ProtoError {
    fn from(err: capnp::Error) -> Self {
        ProtoError::Malformed(err.to_string())
    }
}

impl From<std::str::Utf8Error> for ProtoError {
    fn from(err: std::str::Utf8Error) -> Self {
        ProtoError::Malformed(format!("invalid UTF-8: {err}"))
    }
}

/// Result alias of this crate.
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;
