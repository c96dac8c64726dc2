//! The tokio side of the wire, shared by the server and the client: frames, the hello, the
//! limits of a session and the busy-poll turns (enabled by the `tokio` feature).
//!
//! Everything here is generic over [`tokio::io::AsyncRead`] and [`tokio::io::AsyncWrite`]: this
//! crate still opens no socket. The one socket-specific operation, the non-blocking read a
//! busy-polling session makes behind its runtime's back, is a closure the caller hands to
//! [`FrameReader::poll_for_frame`].
//!
//! # Layout
//! - [`FrameReader`], [`read_frame`], [`read_handshake_frame`], [`write_frame`] and
//!   [`read_hello`]: reading and writing what [`crate::frame`] and [`crate::hello`] encode.
//! - [`SessionLimits`]: the frame cap and largest message of each v1 session kind.
//! - [`PollSlot`] and [`poll_cap`]: the process-wide cap on sessions busy-polling at once.
//! - [`PollBudget`]: how long one waiter polls, adapted to how its recent waits ended.

mod io;
mod poll;
mod poll_budget;

use crate::frame::{NOISE_MAX_PLAINTEXT, V1_MAX_NOISE_FRAME, V1_MAX_PLAINTEXT_FRAME};
use crate::ProtoError;

pub use io::{read_frame, read_handshake_frame, read_hello, write_frame, FrameReader};
pub use poll::{available_cpus, poll_cap, PollSlot};
pub use poll_budget::{PollBudget, Waited, WARM_GAP};

/// What can end a read or a write of the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The stream failed, or ended inside a frame or a hello.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes can never form a valid frame or hello (a length over the limit, say); the
    /// stream is out of step.
    #[error(transparent)]
    Protocol(#[from] ProtoError),
}

impl From<TransportError> for std::io::Error {
    fn from(err: TransportError) -> Self {
        match err {
            TransportError::Io(err) => err,
            TransportError::Protocol(err) => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, err)
            }
        }
    }
}

/// The frame cap and the largest message of a protocol v1 session, the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The largest frame payload either side reads or writes.
    pub frame: usize,
    /// The largest request or response one frame can carry once sealed.
    pub message: usize,
}

impl SessionLimits {
    /// A v1 session under `Noise_NNpsk0`: frames carry a Noise message, whose tag takes 16 bytes
    /// of the plaintext's room.
    pub const V1_NOISE: SessionLimits = SessionLimits {
        frame: V1_MAX_NOISE_FRAME,
        message: NOISE_MAX_PLAINTEXT,
    };
    /// A v1 session without encryption: a frame is the message.
    pub const V1_PLAINTEXT: SessionLimits = SessionLimits {
        frame: V1_MAX_PLAINTEXT_FRAME,
        message: V1_MAX_PLAINTEXT_FRAME,
    };

    /// The limits of a v1 session, with or without Noise.
    pub const fn v1(noise: bool) -> SessionLimits {
        if noise {
            SessionLimits::V1_NOISE
        } else {
            SessionLimits::V1_PLAINTEXT
        }
    }
}
