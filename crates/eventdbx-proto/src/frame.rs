//! Session frames: `length (u32, big-endian) || payload`.
//!
//! Frames carry the Noise handshake messages and every request and response after the hello.
//! The decoder is sans-IO: hand it the bytes read so far and it says whether a whole frame is
//! there, how long it is, or why the input can never become a valid frame.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::error::{ProtoError, Result};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;
/// Largest Noise message, authentication tag included (Noise specification, section 3).
pub const NOISE_MAX_MESSAGE: usize = 65_535;
/// Length of the ChaCha20-Poly1305 authentication tag.
pub const NOISE_TAG_LEN: usize = 16;
/// Largest plaintext one Noise transport message can carry.
pub const NOISE_MAX_PLAINTEXT: usize = NOISE_MAX_MESSAGE - NOISE_TAG_LEN;
/// Largest frame a v1 server accepts under Noise (the reference reads 65,535 + 16).
pub const V1_MAX_NOISE_FRAME: usize = NOISE_MAX_MESSAGE + NOISE_TAG_LEN;
/// Largest frame in a v1 plaintext session.
pub const V1_MAX_PLAINTEXT_FRAME: usize = 65_535;

/// Encodes one frame into a single buffer, so that it can go out in one write.
///
/// Fails with [`ProtoError::FrameTooLarge`] when `payload` is longer than `limit`.
pub fn encode(payload: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(payload, limit, &mut out)?;
    Ok(out)
}

/// Appends one frame to `out` (used to batch several frames into one write).
pub fn encode_into(payload: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<()> {
    let len = checked_len(payload.len(), limit)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn checked_len(len: usize, limit: usize) -> Result<u32> {
    if len > limit {
        return Err(ProtoError::FrameTooLarge { len, limit });
    }
    u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge { len, limit })
}

/// Reads the payload length from a frame header and checks it against `limit`.
///
/// A receiver calls this as soon as four bytes are in, before buffering the payload, so an
/// oversized announcement is refused without allocating for it.
pub fn payload_len(header: [u8; HEADER_LEN], limit: usize) -> Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(ProtoError::FrameTooLarge { len, limit });
    }
    Ok(len)
}

/// Splits the first complete frame off `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, and `Ok(Some((payload, consumed)))` when a
/// whole frame is present (`consumed` counts the header too).
pub fn split(buf: &[u8], limit: usize) -> Result<Option<(&[u8], usize)>> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut raw = [0u8; HEADER_LEN];
    raw.copy_from_slice(header);
    let len = payload_len(raw, limit)?;
    let end = HEADER_LEN + len;
    Ok(buf.get(HEADER_LEN..end).map(|payload| (payload, end)))
}

/// Decodes a buffer that must hold exactly one frame (no more, no less).
pub fn decode_exact(buf: &[u8], limit: usize) -> Result<&[u8]> {
    match split(buf, limit)? {
        None if buf.len() < HEADER_LEN => Err(ProtoError::Truncated("frame header")),
        None => Err(ProtoError::Truncated("frame payload")),
        Some((payload, consumed)) if consumed == buf.len() => Ok(payload),
        Some((_, consumed)) => Err(ProtoError::Malformed(format!(
            "{} trailing bytes after a {consumed}-byte frame",
            buf.len() - consumed
        ))),
    }
}

/// A receive buffer that reads frames in as few reads as the peer's writes allow.
///
/// Reading a frame with two exact reads (header, then payload) costs two `recv` calls per
/// frame; reading into this buffer costs one for a frame that arrived whole, and a frame that
/// came together with the next one costs none. Sans-IO: the caller reads into
/// [`FrameBuffer::read_space`], reports the count with [`FrameBuffer::filled`], and takes whole
/// frames with [`FrameBuffer::next_frame`].
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

/// The initial capacity of a [`FrameBuffer`]; it grows up to one whole frame when needed, and
/// goes back to this size once the large frame has been taken, so that a session which once
/// received a full-size frame does not keep 64 KiB for the rest of its life.
pub const FRAME_BUFFER_INITIAL: usize = 8 * 1024;

impl FrameBuffer {
    /// An empty buffer for frames whose payload is at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameBuffer {
            buf: vec![0; Self::initial_len(limit)],
            start: 0,
            end: 0,
            limit,
        }
    }

    fn initial_len(limit: usize) -> usize {
        FRAME_BUFFER_INITIAL.min(HEADER_LEN + limit)
    }

    /// Bytes received but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The bytes the buffer holds allocated (what a session keeps between frames).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Goes back to the initial size when nothing is buffered: for a session about to wait for
    /// its next message, so that one large message does not cost it 64 KiB for the rest of its
    /// life. Not done after every frame: a message of many frames would reallocate the buffer
    /// for each, interleaving small allocations with the message's large ones (and the allocator
    /// then cannot give the large ones' memory back).
    pub fn shrink_when_empty(&mut self) {
        let initial = Self::initial_len(self.limit);
        if self.start == self.end && self.buf.len() > initial {
            self.start = 0;
            self.end = 0;
            self.buf.truncate(initial);
            self.buf.shrink_to_fit();
        }
    }

    /// Whether a complete frame is buffered (an announced length over the limit is an error).
    pub fn has_frame(&self) -> Result<bool> {
        Ok(split(&self.buf[self.start..self.end], self.limit)?.is_some())
    }

    /// Takes the next complete frame and returns its payload, or `Ok(None)` when more bytes
    /// are needed. An announced length over the limit is refused at once.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>> {
        match split(&self.buf[self.start..self.end], self.limit)? {
            None => Ok(None),
            Some((_, consumed)) => {
                let payload = self.start + HEADER_LEN..self.start + consumed;
                // The payload stays in place until the next `read_space`.
                self.start += consumed;
                Ok(Some(&self.buf[payload]))
            }
        }
    }

    /// Room to read into, large enough for the rest of the frame that has begun (or for a
    /// header). Invalidates any payload returned before.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = &self.buf[self.start..self.end];
        let needed = match pending.get(..HEADER_LEN) {
            Some(header) => {
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(header);
                // An oversized length is reported by `next_frame`; ask for no more than a frame.
                HEADER_LEN + (u32::from_be_bytes(raw) as usize).min(self.limit)
            }
            None => HEADER_LEN,
        };
        if self.buf.len() - self.start < needed {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < needed {
                self.buf.resize(needed, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameBuffer::read_space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Busy-polls a non-blocking `source` (a socket read behind its async runtime's back) for
    /// up to `budget`, until a whole frame is buffered: reads that would block are retried at
    /// once, whatever arrives goes into this buffer as with [`FrameBuffer::read_space`]. Reads
    /// once even with a zero budget.
    pub fn poll_from<R: Read>(&mut self, mut source: R, budget: Duration) -> Polled {
        let deadline = Instant::now() + budget;
        loop {
            if !matches!(self.has_frame(), Ok(false)) {
                return Polled::Frame;
            }
            match source.read(self.read_space()) {
                Ok(0) => return Polled::Ended,
                Ok(read) => {
                    self.filled(read);
                    continue;
                }
                Err(err)
                    if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Polled::Ended,
            }
            if Instant::now() >= deadline {
                return Polled::TimedOut;
            }
        }
    }
}

/// How [`FrameBuffer::poll_from`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// A whole frame is buffered (or a header announcing one over the limit, which
    /// [`FrameBuffer::next_frame`] refuses).
    Frame,
    /// The source ended or failed; the caller's own next read sees the end or the error.
    Ended,
    /// The budget ran out first; what arrived stays buffered.
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian() {
        let framed = encode(&[0xaa; 48], V1_MAX_NOISE_FRAME).expect("fits");
        assert_eq!(&framed[..4], &[0, 0, 0, 0x30]);
        assert_eq!(framed.len(), 52);
    }

    #[test]
    fn split_waits_for_the_whole_payload() {
        let framed = encode(b"hello", 100).expect("fits");
        for cut in 0..framed.len() {
            assert_eq!(split(&framed[..cut], 100).expect("no error"), None);
        }
        let (payload, consumed) = split(&framed, 100).expect("ok").expect("complete");
        assert_eq!((payload, consumed), (&b"hello"[..], 9));
    }

    fn feed(buffer: &mut FrameBuffer, mut bytes: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        loop {
            while let Some(payload) = buffer.next_frame().expect("valid frames") {
                frames.push(payload.to_vec());
            }
            if bytes.is_empty() {
                return frames;
            }
            let space = buffer.read_space();
            assert!(!space.is_empty(), "always room for the frame under way");
            let n = space.len().min(step).min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            buffer.filled(n);
            bytes = &bytes[n..];
        }
    }

    #[test]
    fn frame_buffer_reassembles_frames_whatever_the_read_sizes() {
        let payloads: Vec<Vec<u8>> = [0usize, 1, 5, 300, 9_000, 20_000, 3]
            .iter()
            .enumerate()
            .map(|(i, len)| (0..*len).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for payload in &payloads {
            encode_into(payload, 65_535, &mut wire).expect("fits");
        }
        for step in [1, 3, 4, 7, 100, 4_096, 65_536, usize::MAX] {
            let mut buffer = FrameBuffer::new(65_535);
            assert_eq!(feed(&mut buffer, &wire, step), payloads, "read size {step}");
            assert_eq!(buffer.buffered(), 0);
        }
    }

    /// A non-blocking source: each step is bytes, "would block" (`None`) or the end (empty).
    struct Steps(std::collections::VecDeque<Option<Vec<u8>>>, usize);

    impl Read for Steps {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 += 1;
            match self.0.pop_front() {
                None => Err(ErrorKind::WouldBlock.into()),
                Some(None) => Err(ErrorKind::WouldBlock.into()),
                Some(Some(bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.0.push_front(Some(bytes[n..].to_vec()));
                    }
                    Ok(n)
                }
            }
        }
    }

    #[test]
    fn poll_from_reassembles_a_frame_across_would_block_reads() {
        let wire = encode(b"request", 100).expect("fits");
        let mut source = Steps(
            [
                None,
                Some(wire[..3].to_vec()),
                None,
                None,
                Some(wire[3..9].to_vec()),
                None,
                Some(wire[9..].to_vec()),
                Some(b"next".to_vec()),
            ]
            .into_iter()
            .collect(),
            0,
        );
        let mut buffer = FrameBuffer::new(100);
        let polled = buffer.poll_from(&mut source, Duration::from_secs(5));
        assert_eq!(polled, Polled::Frame);
        // Stopped as soon as the frame was whole: the next one's bytes are still at the source.
        assert_eq!(source.0.len(), 1, "read no further than the frame");
        assert_eq!(buffer.next_frame().expect("valid"), Some(&b"request"[..]));
        assert_eq!(buffer.buffered(), 0);
    }

    #[test]
    fn poll_from_keeps_a_partial_frame_when_the_budget_runs_out() {
        let wire = encode(b"request", 100).expect("fits");
        let mut source = Steps([Some(wire[..5].to_vec())].into_iter().collect(), 0);
        let mut buffer = FrameBuffer::new(100);
        let started = Instant::now();
        let polled = buffer.poll_from(&mut source, Duration::from_millis(2));
        assert_eq!(polled, Polled::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(2));
        // How many reads fit in the budget depends on the scheduler; that it read again after
        // the partial frame (a would-block, not the end) before giving up does not.
        assert!(source.1 >= 2, "read again after the partial frame");
        assert_eq!(buffer.buffered(), 5);
        // The rest, read later by the ordinary path, completes the same frame.
        let space = buffer.read_space();
        space[..wire.len() - 5].copy_from_slice(&wire[5..]);
        buffer.filled(wire.len() - 5);
        assert_eq!(buffer.next_frame().expect("valid"), Some(&b"request"[..]));
    }

    #[test]
    fn poll_from_reports_the_end_and_a_zero_budget_reads_once() {
        let mut ended = Steps([Some(Vec::new())].into_iter().collect(), 0);
        // An empty step is a read of 0 bytes: the end of the stream.
        let mut buffer = FrameBuffer::new(100);
        assert_eq!(
            buffer.poll_from(&mut ended, Duration::from_secs(5)),
            Polled::Ended
        );
        let mut idle = Steps(std::collections::VecDeque::new(), 0);
        assert_eq!(
            buffer.poll_from(&mut idle, Duration::ZERO),
            Polled::TimedOut
        );
        assert_eq!(idle.1, 1);
    }

    #[test]
    fn frame_buffer_shrinks_back_after_a_large_frame() {
        let mut buffer = FrameBuffer::new(65_535);
        let initial = buffer.capacity();
        assert_eq!(initial, FRAME_BUFFER_INITIAL);
        let large = vec![9u8; 60_000];
        let wire = encode(&large, 65_535).expect("fits");
        assert_eq!(feed(&mut buffer, &wire, usize::MAX), vec![large]);
        assert!(buffer.capacity() >= 60_000, "grew to hold the frame");
        buffer.shrink_when_empty();
        assert_eq!(
            buffer.capacity(),
            initial,
            "shrank once the frame was taken"
        );
        assert_eq!(buffer.read_space().len(), initial);
        // A partial frame keeps its room: nothing is shrunk under bytes still needed.
        let mut buffer = FrameBuffer::new(65_535);
        let partial = &wire[..30_000];
        assert!(feed(&mut buffer, partial, usize::MAX).is_empty());
        buffer.shrink_when_empty();
        assert!(buffer.capacity() >= 60_004);
        assert_eq!(feed(&mut buffer, &wire[30_000..], usize::MAX).len(), 1);
    }

    #[test]
    fn frame_buffer_keeps_a_partial_frame_and_refuses_an_oversized_one() {
        let mut buffer = FrameBuffer::new(100);
        let wire = encode(b"abcdef", 100).expect("fits");
        assert!(feed(&mut buffer, &wire[..7], 64).is_empty());
        assert_eq!(buffer.buffered(), 7);
        assert_eq!(feed(&mut buffer, &wire[7..], 64), vec![b"abcdef".to_vec()]);
        let mut buffer = FrameBuffer::new(100);
        let space = buffer.read_space();
        space[..4].copy_from_slice(&101u32.to_be_bytes());
        buffer.filled(4);
        assert!(matches!(
            buffer.next_frame(),
            Err(ProtoError::FrameTooLarge {
                len: 101,
                limit: 100
            })
        ));
    }
}
