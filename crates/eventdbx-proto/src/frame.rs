//! Session frames: `length (u32, big-endian) || payload`.
//!
//! Frames carry the Noise handshake messages and every request and response after the hello.
//! The decoder is sans-IO: hand it the bytes read so far and it says whether a whole frame is
//! there, how long it is, or why the input can never become a valid frame.

use crate::error::{ProtoError, Result};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;
/// Largest Noise message, authentication tag included (Noise specification, §3).
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
}
