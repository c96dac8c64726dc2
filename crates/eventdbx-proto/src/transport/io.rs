//! Reading and writing frames and the hello on any async byte stream.

use std::io::{self, Read};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TransportError;
use crate::frame::{self, FrameBuffer, Polled};
use crate::hello::MAX_HELLO_BYTES;
use crate::message::StreamMessageReader;
use crate::ProtoError;

/// The read side of a session: frames come out of a buffer that each read fills with as much
/// as the stream holds, so a frame usually costs one `recv`, not one for its header and one for
/// its payload.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buffer: FrameBuffer,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames whose payload is at most `limit` bytes.
    pub fn new(io: R, limit: usize) -> Self {
        FrameReader {
            io,
            buffer: FrameBuffer::new(limit),
        }
    }

    /// Bytes received past the frames taken so far (the start of the next one, if any).
    pub fn buffered(&self) -> usize {
        self.buffer.buffered()
    }

    /// The next frame's payload; `Ok(None)` on a clean end of the stream between frames. An
    /// announced length over the limit is refused before anything is allocated for it.
    /// Cancel-safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, TransportError> {
        loop {
            if self.buffer.has_frame()? {
                return Ok(self.buffer.next_frame()?);
            }
            let read = self.io.read(self.buffer.read_space()).await?;
            if read == 0 {
                return if self.buffer.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
                };
            }
            self.buffer.filled(read);
        }
    }

    /// Lets the buffer go back to its initial size if nothing is buffered (see
    /// [`FrameBuffer::shrink_when_empty`]): call it before waiting for a new message.
    pub fn shrink_when_empty(&mut self) {
        self.buffer.shrink_when_empty();
    }

    /// Reads once from the stream into the buffer, whatever it holds, without waiting for a
    /// whole frame; returns the count, 0 at the end of the stream. A session waits with this
    /// while it is idle, so that it knows when the next message has begun (and its deadline
    /// starts), then takes the frame with [`FrameReader::next`]. Cancel-safe.
    pub async fn fill(&mut self) -> Result<usize, TransportError> {
        let read = self.io.read(self.buffer.read_space()).await?;
        self.buffer.filled(read);
        Ok(read)
    }

    /// Busy-polls the stream for up to `budget` until a whole frame is buffered, with
    /// `read_now`: a non-blocking read of the underlying socket that returns `WouldBlock` when
    /// nothing is there (tokio's own `try_read` will not do: it trusts the reactor's readiness,
    /// which nobody refreshes while the thread spins). The bytes go into the buffer
    /// [`FrameReader::next`] takes frames from, so a frame not whole in time is completed by
    /// `next`. [`Polled::Ended`] also covers a failed read, which `next` then reports.
    pub fn poll_for_frame<F>(&mut self, budget: Duration, read_now: F) -> Polled
    where
        F: FnMut(&R, &mut [u8]) -> io::Result<usize>,
    {
        let source = ReadNow {
            io: &self.io,
            read_now,
        };
        self.buffer.poll_from(source, budget)
    }
}

/// A stream and the caller's non-blocking read of it, seen as a blocking-style [`Read`].
struct ReadNow<'a, R, F> {
    io: &'a R,
    read_now: F,
}

impl<R, F> Read for ReadNow<'_, R, F>
where
    F: FnMut(&R, &mut [u8]) -> io::Result<usize>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.read_now)(self.io, buf)
    }
}

/// Reads one frame of at most `limit` bytes, reading nothing past it (the handshake's frames
/// are followed by whatever the next phase sends). `Ok(None)` when the stream ends before the
/// frame's first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, TransportError> {
    let mut header = [0u8; frame::HEADER_LEN];
    if reader.read(&mut header[..1]).await? == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut header[1..]).await?;
    let len = frame::payload_len(header, limit)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// Reads one handshake frame: as [`read_frame`], but the stream ending before it is an error,
/// since the peer owes this message.
pub async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, TransportError> {
    read_frame(reader, limit).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended before the handshake message",
        )
        .into()
    })
}

/// Frames `payload` and writes it in one write; a payload over `limit` is refused before any
/// byte goes out.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    limit: usize,
) -> Result<(), TransportError> {
    let framed = frame::encode(payload, limit)?;
    writer.write_all(&framed).await?;
    Ok(())
}

/// Reads the hello or the hello response: a raw stream message of at most
/// [`MAX_HELLO_BYTES`], segment table first, never past its end (the handshake follows).
pub async fn read_hello<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, TransportError> {
    let mut message = StreamMessageReader::new(MAX_HELLO_BYTES);
    while message.bytes_needed() > 0 {
        let mut buf = vec![0u8; message.bytes_needed()];
        reader.read_exact(&mut buf).await?;
        message.feed(&buf)?;
    }
    Ok(message
        .into_message()
        .ok_or(ProtoError::Truncated("stream message"))?)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;
    use crate::frame::encode_into;
    use crate::hello::Hello;

    /// A stream that hands out its bytes in the given pieces, one piece (at most) per read.
    struct Pieces(VecDeque<Vec<u8>>);

    impl Pieces {
        fn cut(wire: &[u8], cuts: &[usize]) -> Self {
            let mut pieces = VecDeque::new();
            let mut start = 0;
            for &cut in cuts.iter().chain([wire.len()].iter()) {
                pieces.push_back(wire[start..cut].to_vec());
                start = cut;
            }
            // Empty pieces would read as the end of the stream.
            pieces.retain(|piece| !piece.is_empty());
            Pieces(pieces)
        }
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    fn wire_of(payloads: &[&[u8]], limit: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for payload in payloads {
            encode_into(payload, limit, &mut wire).expect("fits");
        }
        wire
    }

    async fn all_frames<R: AsyncRead + Unpin>(
        reader: &mut FrameReader<R>,
    ) -> Result<Vec<Vec<u8>>, TransportError> {
        let mut frames = Vec::new();
        while let Some(frame) = reader.next().await? {
            frames.push(frame.to_vec());
        }
        Ok(frames)
    }

    #[test]
    fn frames_split_at_every_byte_boundary_come_out_whole() {
        let payloads: [&[u8]; 3] = [b"first", b"", b"the third frame"];
        let wire = wire_of(&payloads, 100);
        run(async {
            for cut in 0..=wire.len() {
                let mut reader = FrameReader::new(Pieces::cut(&wire, &[cut]), 100);
                let frames = all_frames(&mut reader).await.expect("valid stream");
                assert_eq!(frames, payloads, "cut at {cut}");
                let mut exact = Pieces::cut(&wire, &[cut]);
                for payload in payloads {
                    let frame = read_frame(&mut exact, 100).await.expect("valid");
                    assert_eq!(frame.as_deref(), Some(payload), "cut at {cut}");
                }
                assert_eq!(read_frame(&mut exact, 100).await.expect("clean end"), None);
            }
            // One byte per read: every boundary at once.
            let bytes = (1..wire.len()).collect::<Vec<_>>();
            let mut reader = FrameReader::new(Pieces::cut(&wire, &bytes), 100);
            assert_eq!(all_frames(&mut reader).await.expect("valid"), payloads);
        });
    }

    #[test]
    fn an_oversize_length_is_refused_before_its_payload_is_read() {
        run(async {
            // Only the header is on the stream: a reader that waited for the payload (or
            // allocated for it) would not return at once with the error.
            let header = (u32::MAX).to_be_bytes().to_vec();
            let mut reader = FrameReader::new(Pieces::cut(&header, &[]), 100);
            let refused = reader.next().await.expect_err("over the limit");
            assert!(matches!(
                refused,
                TransportError::Protocol(ProtoError::FrameTooLarge { limit: 100, .. })
            ));
            let mut exact = Pieces::cut(&header, &[]);
            let refused = read_frame(&mut exact, 100)
                .await
                .expect_err("over the limit");
            assert!(matches!(
                refused,
                TransportError::Protocol(ProtoError::FrameTooLarge { limit: 100, .. })
            ));
            let framed = wire_of(&[&[7u8; 101]], 101);
            let mut writer = Vec::new();
            let refused = write_frame(&mut writer, &framed[4..], 100).await;
            assert!(matches!(
                refused,
                Err(TransportError::Protocol(ProtoError::FrameTooLarge { .. }))
            ));
            assert!(writer.is_empty(), "nothing written for a refused frame");
        });
    }

    #[test]
    fn the_stream_ending_inside_a_frame_is_an_error() {
        let wire = wire_of(&[b"payload"], 100);
        run(async {
            for end in 1..wire.len() {
                let mut reader = FrameReader::new(Pieces::cut(&wire[..end], &[]), 100);
                let ended = reader.next().await.expect_err("ended mid frame");
                assert!(
                    matches!(&ended, TransportError::Io(err) if err.kind() == io::ErrorKind::UnexpectedEof),
                    "end at {end}: {ended:?}"
                );
                let mut exact = Pieces::cut(&wire[..end], &[]);
                let ended = read_frame(&mut exact, 100).await.expect_err("mid frame");
                assert!(matches!(ended, TransportError::Io(_)), "end at {end}");
            }
            let mut empty = Pieces::cut(&[], &[]);
            assert!(matches!(
                read_handshake_frame(&mut empty, 100).await,
                Err(TransportError::Io(err)) if err.kind() == io::ErrorKind::UnexpectedEof
            ));
        });
    }

    #[test]
    fn a_written_frame_reads_back() {
        run(async {
            let mut wire = Vec::new();
            write_frame(&mut wire, b"msg", 100).await.expect("fits");
            let mut stream = wire.as_slice();
            assert_eq!(
                read_handshake_frame(&mut stream, 100).await.expect("whole"),
                b"msg"
            );
        });
    }

    #[test]
    fn the_hello_is_read_to_its_end_and_no_further() {
        let hello = Hello {
            protocol_version: 2,
            tenant_id: "t".into(),
            ..Hello::default()
        }
        .encode();
        let mut wire = hello.clone();
        wire.extend_from_slice(b"next phase");
        run(async {
            for cut in 0..=wire.len() {
                let mut stream = Pieces::cut(&wire, &[cut]);
                assert_eq!(read_hello(&mut stream).await.expect("whole"), hello);
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.expect("rest");
                assert_eq!(rest, b"next phase", "cut at {cut}");
            }
            let mut short = Pieces::cut(&hello[..hello.len() - 1], &[]);
            assert!(matches!(
                read_hello(&mut short).await,
                Err(TransportError::Io(_))
            ));
        });
    }

    #[test]
    fn fill_takes_what_is_there_and_next_completes_the_frame() {
        let wire = wire_of(&[b"payload"], 100);
        run(async {
            let mut reader = FrameReader::new(Pieces::cut(&wire, &[2]), 100);
            assert_eq!(reader.fill().await.expect("read"), 2);
            assert_eq!(reader.buffered(), 2, "half a header: a frame has begun");
            assert_eq!(reader.next().await.expect("valid"), Some(&b"payload"[..]));
            assert_eq!(reader.fill().await.expect("end"), 0);
        });
    }

    #[test]
    fn polling_fills_the_buffer_next_reads_from() {
        let wire = wire_of(&[b"polled", b"after"], 100);
        run(async {
            // The stream itself holds only the second frame; the poll source holds the first.
            let mut reader = FrameReader::new(Pieces::cut(&wire[10..], &[]), 100);
            let mut source = &wire[..10];
            let polled =
                reader.poll_for_frame(Duration::ZERO, |_, buf| Read::read(&mut source, buf));
            assert_eq!(polled, Polled::Frame);
            assert_eq!(reader.buffered(), 10);
            assert_eq!(
                all_frames(&mut reader).await.expect("valid"),
                [&b"polled"[..], b"after"]
            );
        });
    }
}
