//! The process plugin's envelopes: what the server reads from a child's stdout (acks and
//! errors, up to `MAX_ACK_BYTES`) and what a plugin reads on its stdin.
//!
//! The first input byte picks the size of the reads; the rest is the stream. Asserts: no panic;
//! the stream decoder yields the envelopes that `decode_envelope` finds message by message; each
//! envelope re-encodes to bytes that decode to an equal envelope; each state entry took a word of
//! the input at least.
#![no_main]

use eventdbx_proto::message::{message_length, MessageLength};
use eventdbx_proto::plugin::{
    decode_envelope, encode_envelope, EnvelopeDecoder, PluginEnvelope, MAX_ACK_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&knob, stream)) = input.split_first() else {
        return;
    };
    let piece = usize::from(knob).max(1);

    let mut decoder = EnvelopeDecoder::new(MAX_ACK_BYTES);
    let mut streamed = Vec::new();
    let mut failed = false;
    for chunk in stream.chunks(piece) {
        match decoder.feed(chunk) {
            Ok(envelopes) => streamed.extend(envelopes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }

    // The same stream, one whole message at a time.
    let mut whole = Vec::new();
    let mut rest = stream;
    let mut whole_failed = false;
    while let Ok(MessageLength::Complete(len)) = message_length(rest, MAX_ACK_BYTES) {
        match decode_envelope(&rest[..len]) {
            Ok(envelope) => whole.push(envelope),
            Err(_) => {
                whole_failed = true;
                break;
            }
        }
        rest = &rest[len..];
    }
    if !failed && !whole_failed {
        assert_eq!(streamed, whole);
        assert_eq!(decoder.is_at_boundary(), rest.is_empty());
    }

    for envelope in whole {
        // Each state entry holds a key pointer: a word of the input at least.
        if let PluginEnvelope::Event(event) = &envelope {
            assert!(event.state_entries.len() * 8 <= stream.len());
        }
        let again = encode_envelope(&envelope);
        assert_eq!(decode_envelope(&again).ok(), Some(envelope));
    }
});
