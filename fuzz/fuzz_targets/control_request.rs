//! A `ControlRequest` as the server reads it after the handshake, decoded into a typed request
//! (`eventdbx_proto::control`).
//!
//! Asserts: no panic; a request that decodes re-encodes, and the re-encoding decodes to the same
//! id and an equal request; every publish target took at least a word of the input (a list of
//! empty structs once decoded 216 bytes into 8 million targets).
#![no_main]

use eventdbx_proto::control::{self, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok((id, payload)) = control::decode_request(bytes) else {
        return;
    };
    let Ok(request) = payload else { return };
    let targets = match &request {
        Request::AppendEvent(write)
        | Request::PatchEvent(write)
        | Request::CreateAggregate(write) => write.publish_targets.as_ref(),
        Request::SetAggregateArchive(archive) => archive.publish_targets.as_ref(),
        _ => None,
    };
    let targets = targets.map_or(0, Vec::len);
    assert!(
        targets * 8 <= bytes.len(),
        "{targets} publish targets from {} bytes",
        bytes.len()
    );
    let again = request.encode(id).expect("a decoded request re-encodes");
    let (id_again, decoded) =
        control::decode_request(&again).expect("a re-encoded request decodes");
    assert_eq!(id_again, id);
    assert_eq!(decoded.ok(), Some(request));
});
