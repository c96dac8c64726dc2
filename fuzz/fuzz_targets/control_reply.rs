//! A `ControlResponse` as the client reads it, decoded into a typed reply: a hostile or broken
//! server must not crash the client (or the Python process that embeds it).
//!
//! Asserts: no panic; a reply that decodes re-encodes to one that decodes to the same id and an
//! equal reply.
#![no_main]

use eventdbx_proto::control;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok((id, reply)) = control::decode_reply(bytes) else {
        return;
    };
    let again = reply.encode(id).expect("a decoded reply re-encodes");
    let (id_again, decoded) = control::decode_reply(&again).expect("a re-encoded reply decodes");
    assert_eq!(id_again, id);
    assert_eq!(decoded, reply);
});
