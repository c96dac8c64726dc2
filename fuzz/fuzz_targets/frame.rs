//! Length-prefixed frames (`length (u32, big-endian) || payload`), as both sides read them.
//!
//! The first input byte picks the read size and the limit; the rest is the stream. Asserts: no
//! panic; `FrameBuffer` fed the stream in reads of that size yields exactly the frames that
//! repeated `split` finds, and the same refusal; each frame re-encodes to the bytes it came from.
#![no_main]

use eventdbx_proto::frame::{self, FrameBuffer, HEADER_LEN, V1_MAX_NOISE_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&knob, stream)) = input.split_first() else {
        return;
    };
    let read_size = usize::from(knob & 0x3f) + 1;
    // A small limit makes the oversize refusal reachable with small inputs.
    let limit = if knob & 0x40 == 0 {
        64
    } else {
        V1_MAX_NOISE_FRAME
    };

    // What `split` says, frame by frame.
    let mut expected = Vec::new();
    let mut rest = stream;
    let split_refused = loop {
        match frame::split(rest, limit) {
            Ok(Some((payload, consumed))) => {
                assert_eq!(consumed, HEADER_LEN + payload.len());
                let again = frame::encode(payload, limit).expect("a split frame re-encodes");
                assert_eq!(again.as_slice(), &rest[..consumed]);
                assert_eq!(
                    frame::decode_exact(&rest[..consumed], limit).ok(),
                    Some(payload)
                );
                expected.push(payload.to_vec());
                rest = &rest[consumed..];
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };

    // What the receive buffer says, fed in reads of `read_size`.
    let mut buffer = FrameBuffer::new(limit);
    let mut got = Vec::new();
    let mut fed = stream;
    let mut refused = false;
    'outer: loop {
        loop {
            match buffer.next_frame() {
                Ok(Some(payload)) => got.push(payload.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    refused = true;
                    break 'outer;
                }
            }
        }
        if fed.is_empty() {
            break;
        }
        let space = buffer.read_space();
        let n = space.len().min(read_size).min(fed.len());
        assert!(n > 0, "the buffer offers no room for the next read");
        space[..n].copy_from_slice(&fed[..n]);
        buffer.filled(n);
        fed = &fed[n..];
    }
    assert_eq!(got, expected);
    assert_eq!(refused, split_refused);
});
