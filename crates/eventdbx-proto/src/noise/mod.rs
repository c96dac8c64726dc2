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
use crate::frame::{self, NOISE_MAX_MESSAGE, NOISE_MAX_PLAINTEXT, NOISE_TAG_LEN};

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
        self.next_nonce()?;
        Ok(out)
    }

    /// Encrypts one transport message as a whole frame (its length header, then the
    /// ciphertext): what `frame::encode(&self.seal(plaintext)?, limit)` makes, in one buffer
    /// instead of two and without copying the ciphertext, for a sender's every request. A frame
    /// over `limit` is refused before anything is encrypted, so the session stays in step.
    pub fn seal_frame(&mut self, plaintext: &[u8], limit: usize) -> Result<Vec<u8>> {
        if plaintext.len() > NOISE_MAX_PLAINTEXT {
            return Err(ProtoError::RequestTooLarge {
                len: plaintext.len(),
                limit: NOISE_MAX_PLAINTEXT,
            });
        }
        let sealed = plaintext.len() + NOISE_TAG_LEN;
        let header = match u32::try_from(sealed) {
            Ok(len) if sealed <= limit => len.to_be_bytes(),
            _ => return Err(ProtoError::FrameTooLarge { len: sealed, limit }),
        };
        let mut out = vec![0u8; frame::HEADER_LEN + sealed];
        out[..frame::HEADER_LEN].copy_from_slice(&header);
        let written = self
            .state
            .write_message(self.nonce, plaintext, &mut out[frame::HEADER_LEN..])
            .map_err(|err| ProtoError::InvalidUse(format!("noise encryption failed: {err}")))?;
        debug_assert_eq!(written, sealed, "ChaChaPoly adds exactly its tag");
        self.next_nonce()?;
        Ok(out)
    }

    fn next_nonce(&mut self) -> Result<()> {
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or_else(|| ProtoError::InvalidUse("noise send nonce exhausted".into()))?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> (Session, Session) {
        let mut initiator = v1::Initiator::new("token").expect("initiator");
        let mut responder = v1::Responder::new("token").expect("responder");
        let first = initiator.write_message1().expect("message 1");
        responder.read_message1(&first).expect("read message 1");
        let (second, server) = responder.write_message2().expect("message 2");
        let client = initiator.read_message2(&second).expect("read message 2");
        (client, server)
    }

    #[test]
    fn a_frame_sealed_in_one_buffer_is_the_sealed_message_framed() {
        let (mut client, mut server) = sessions();
        // The same keys and nonce: sealing then framing, as senders did before.
        let mut twin = Sealer {
            state: Arc::clone(&client.sealer.state),
            nonce: client.sealer.nonce,
        };
        let limit = frame::NOISE_MAX_MESSAGE;
        for message in [&b"first"[..], &[7u8; 600][..], b""] {
            let framed = client
                .sealer
                .seal_frame(message, limit)
                .expect("seal a frame");
            let sealed = twin.seal(message).expect("seal");
            assert_eq!(framed, frame::encode(&sealed, limit).expect("frame"));
            let mut buffer = frame::FrameBuffer::new(limit);
            buffer.read_space()[..framed.len()].copy_from_slice(&framed);
            buffer.filled(framed.len());
            let payload = buffer.next_frame().expect("a frame").expect("whole");
            assert_eq!(server.opener.open(payload).expect("opens"), message);
        }
        // Over the frame limit: refused before encrypting, so the next message still opens.
        let refused = client.sealer.seal_frame(&[1u8; 100], 64);
        assert!(
            matches!(refused, Err(ProtoError::FrameTooLarge { .. })),
            "{refused:?}"
        );
        let framed = client.sealer.seal_frame(b"after", limit).expect("seal");
        assert_eq!(
            server
                .opener
                .open(&framed[frame::HEADER_LEN..])
                .expect("in step"),
            b"after"
        );
    }
}
