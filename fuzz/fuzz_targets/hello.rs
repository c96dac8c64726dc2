//! The first message of a connection, as the server reads it (an unauthenticated peer controls
//! every byte), and the hello response, as the client reads it.
//!
//! Asserts: no panic; the stream reader fed the bytes in pieces finds the same message end as
//! `message_length`; a decoded hello or response re-encodes to bytes that decode to itself.
#![no_main]

use eventdbx_proto::hello::{
    classify_first_message, FirstMessage, Hello, HelloResponse, StreamMessageReader,
    MAX_HELLO_BYTES,
};
use eventdbx_proto::message::{message_length, MessageLength};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The server reads the hello off the socket with the stream reader, in whatever pieces the
    // socket gives; the piece size comes from the input so every cut gets tried.
    let piece = usize::from(bytes.first().copied().unwrap_or(1)).max(1);
    let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
    let mut rest = bytes;
    let mut failed = false;
    while !rest.is_empty() && reader.bytes_needed() > 0 {
        let (chunk, _) = rest.split_at(piece.min(rest.len()));
        match reader.feed(chunk) {
            Ok(taken) => {
                assert!(taken <= chunk.len());
                rest = &rest[taken..];
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if let (false, Some(message)) = (failed, reader.message()) {
        assert_eq!(
            message_length(bytes, MAX_HELLO_BYTES).ok(),
            Some(MessageLength::Complete(message.len()))
        );
    }

    if let Ok(FirstMessage::Hello(hello)) = classify_first_message(bytes) {
        if let (Ok(token), Ok(tenant_id)) = (&hello.token, &hello.tenant_id) {
            let again = Hello {
                protocol_version: hello.protocol_version,
                token: token.clone(),
                tenant_id: tenant_id.clone(),
                no_noise: hello.no_noise,
            };
            assert_eq!(Hello::decode(&again.encode()).ok(), Some(again));
        }
    }
    if let Ok(hello) = Hello::decode(bytes) {
        assert_eq!(Hello::decode(&hello.encode()).ok(), Some(hello));
    }
    if let Ok(response) = HelloResponse::decode(bytes) {
        assert_eq!(
            HelloResponse::decode(&response.encode()).ok(),
            Some(response)
        );
    }
});
