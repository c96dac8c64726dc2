//! The sending side of a connection: the write half and the sealing cipher, used by one
//! request at a time.

use eventdbx_proto::frame;
use eventdbx_proto::noise::{self, v2};
use eventdbx_proto::ProtoError;

use super::read_side::Shared;
use super::socket::WriteSocket;
use super::Connection;
use crate::error::{Error, ErrorKind, Result};

pub(super) enum Sealing {
    V2(v2::ChunkSealer),
    V1(noise::Sealer),
    Plain,
}

/// The sending side: the write half and the cipher, used by one request at a time.
pub(super) struct Writer {
    half: WriteSocket,
    sealing: Sealing,
    frame_limit: usize,
}

impl Writer {
    pub(super) fn new(half: WriteSocket, sealing: Sealing, frame_limit: usize) -> Self {
        Writer {
            half,
            sealing,
            frame_limit,
        }
    }

    fn seal(&mut self, bytes: &[u8]) -> std::result::Result<Vec<u8>, ProtoError> {
        match &mut self.sealing {
            Sealing::V2(sealer) => sealer.seal_message(bytes),
            Sealing::V1(sealer) => sealer.seal_frame(bytes, self.frame_limit),
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

impl Connection {
    /// Seals and writes one request, in one write.
    pub(super) async fn send(&self, id: u64, bytes: &[u8]) -> Result<()> {
        let mut writer = self.writer.lock().await;
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.dead {
                return Err(reason.clone().unsent(true));
            }
            let streamed = state.streams.contains_key(&id);
            match state.pending.get_mut(&id) {
                Some(entry) => entry.written = true,
                None if streamed => {}
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
}
