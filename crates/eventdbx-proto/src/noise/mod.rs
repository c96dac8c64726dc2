//! Noise handshakes and transport ciphers, as sans-IO state machines.
//!
//! - [`v1`]: `Noise_NNpsk0_25519_ChaChaPoly_SHA256`, EventDBX's control channel, byte for byte.
//! - [`v2`]: `Noise_XXpsk3_25519_ChaChaPoly_SHA256` with a token-derived PSK, a pinnable server
//!   static key, and chunking of logical messages larger than one Noise message.
//!
//! The state machines take and return handshake *messages*; the caller frames them
//! ([`crate::frame`]) and moves them over whatever socket it has. After the handshake both
//! versions hand out a [`Session`]: a [`Sealer`] and an [`Opener`] that can live in different
//! tasks, because each direction keeps its own nonce counter.

pub mod v1;
pub mod v2;

use std::sync::Arc;

use snow::StatelessTransportState;

use crate::error::{ProtoError, Result};
use crate::frame::{NOISE_MAX_MESSAGE, NOISE_MAX_PLAINTEXT, NOISE_TAG_LEN};

/// Trims a bearer token the way the reference server does and refuses an empty one.
pub fn trimmed_token(token: &str) -> Result<&str> {
    let trimmed = token.trim();
    if trimmed.is_empty() {
        return Err(ProtoError::InvalidUse("token must not be empty".into()));
    }
    Ok(trimmed)
}

fn snow_handshake_error(context: &str, err: snow::Error) -> ProtoError {
    ProtoError::Handshake(format!("{context}: {err}"))
}

/// Both directions of an established Noise session.
#[derive(Debug)]
pub struct Session {
    /// Encrypts what this side sends.
    pub sealer: Sealer,
    /// Decrypts what this side receives.
    pub opener: Opener,
}

impl Session {
    fn new(state: StatelessTransportState) -> Self {
        let state = Arc::new(state);
        Session {
            sealer: Sealer {
                state: Arc::clone(&state),
                nonce: 0,
            },
            opener: Opener { state, nonce: 0 },
        }
    }
}

/// The sending half of a Noise session: one transport message per call, nonces counted from 0.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Encrypts one transport message (at most [`NOISE_MAX_PLAINTEXT`] bytes of plaintext).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > NOISE_MAX_PLAINTEXT {
            return Err(ProtoError::RequestTooLarge {
                len: plaintext.len(),
                limit: NOISE_MAX_PLAINTEXT,
            });
        }
        let mut out = vec![0u8; plaintext.len() + NOISE_TAG_LEN];
        let written = self
            .state
            .write_message(self.nonce, plaintext, &mut out)
            .map_err(|err| ProtoError::InvalidUse(format!("noise encryption failed: {err}")))?;
        out.truncate(written);
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or_else(|| ProtoError::InvalidUse("noise send nonce exhausted".into()))?;
        Ok(out)
    }
}

/// The receiving half of a Noise session.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Decrypts one transport message. Any failure is [`ProtoError::Decrypt`]; the session is
    /// then out of step and must be dropped.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        if ciphertext.len() < NOISE_TAG_LEN || ciphertext.len() > NOISE_MAX_MESSAGE {
            return Err(ProtoError::Decrypt);
        }
        let mut out = vec![0u8; ciphertext.len()];
        let read = self
            .state
            .read_message(self.nonce, ciphertext, &mut out)
            .map_err(|_| ProtoError::Decrypt)?;
        out.truncate(read);
        self.nonce = self.nonce.checked_add(1).ok_or(ProtoError::Decrypt)?;
        Ok(out)
    }
}
