//! A `ControlRequest` as the server reads it after the handshake, decoded into a typed request
//! (`eventdbx_proto::control`).
//!
//! Asserts: no panic; a request that decodes re-encodes, and the re-encoding decodes to the same
//! id and an equal request.
#![no_main]

use eventdbx_proto::control;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok((id, payload)) = control::decode_request(bytes) else {
        return;
    };
    let Ok(request) = payload else { return };
    let again = request.encode(id).expect("a decoded request re-encodes");
    let (id_again, decoded) =
        control::decode_request(&again).expect("a re-encoded request decodes");
    assert_eq!(id_again, id);
    assert_eq!(decoded.ok(), Some(request));
});
