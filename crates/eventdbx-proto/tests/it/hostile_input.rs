//! Hostile input: every decoder of the crate's message layer, fed random bytes and mutated valid
//! messages, returns a value or a typed error and never panics.
//!
//! An unauthenticated peer controls the first message (the hello) completely, and a peer with a
//! session controls every request, so a panic here would be a remote crash.

use capnp::dynamic_value;
use eventdbx_proto::hello::{
    classify_first_message, cli_rejection, FirstMessage, Hello, HelloField, HelloResponse,
    HelloTextError, MAX_HELLO_BYTES,
};
use eventdbx_proto::message::{
    self, decode_request, decode_response, message_length, MessageLength, StreamMessageReader,
    MAX_MESSAGE_BYTES,
};
use eventdbx_proto::schema::control_capnp::{control_request, control_response};
use eventdbx_proto::ProtoError;
use proptest::prelude::*;

/// Reads every field reachable from `reader`, ignoring the errors: only panics matter here.
///
/// Recursion follows the schema's types, which are not recursive, so it is bounded whatever the
/// pointers in the message do (cycles included).
fn walk(reader: capnp::dynamic_struct::Reader<'_>) {
    let Ok(fields) = reader.get_schema().get_fields() else {
        return;
    };
    for field in fields {
        match reader.get(field) {
            Ok(dynamic_value::Reader::Struct(inner)) => walk(inner),
            Ok(dynamic_value::Reader::Text(text)) => {
                let _ = text.to_str();
            }
            Ok(dynamic_value::Reader::List(list)) => {
                for element in list.iter() {
                    match element {
                        Ok(dynamic_value::Reader::Struct(inner)) => walk(inner),
                        Ok(dynamic_value::Reader::Text(text)) => {
                            let _ = text.to_str();
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Runs every decoder on `bytes` and checks the invariants that hold whatever they are.
fn decode_everything(bytes: &[u8]) {
    // The length function never claims more bytes than it was given.
    match message_length(bytes, MAX_MESSAGE_BYTES) {
        Ok(MessageLength::Complete(len)) => {
            assert!(len <= bytes.len() && len % 8 == 0 && len >= 8, "{len}")
        }
        Ok(MessageLength::NeedMore(n)) => assert!(n > 0),
        Err(ProtoError::Malformed(_) | ProtoError::MessageTooLarge { .. }) => {}
        Err(other) => panic!("unexpected error kind from message_length: {other}"),
    }

    // A stream reader fed the bytes in uneven chunks agrees with the length function.
    let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
    let mut rest = bytes;
    let mut failed = false;
    for chunk_len in [1, 3, 7, 64, usize::MAX].iter().cycle() {
        if rest.is_empty() || reader.bytes_needed() == 0 {
            break;
        }
        let (chunk, _) = rest.split_at((*chunk_len).min(rest.len()));
        match reader.feed(chunk) {
            Ok(taken) => rest = &rest[taken..],
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

    let _ = Hello::decode(bytes);
    let _ = HelloResponse::decode(bytes);
    if let Ok(FirstMessage::Hello(hello)) = classify_first_message(bytes) {
        // Text errors are typed and name their field.
        if let Err(err) = &hello.token {
            assert!(err.to_string().contains("control token"), "{err}");
        }
        if let Err(err) = &hello.tenant_id {
            assert!(err.to_string().contains("control tenant id"), "{err}");
        }
    }
    if let Ok(decoded) = decode_request(bytes) {
        if let Ok(root) = decoded.get() {
            let _ = root.get_payload().which();
            if let dynamic_value::Reader::Struct(root) = root.into() {
                walk(root);
            }
        }
    }
    if let Ok(decoded) = decode_response(bytes) {
        if let Ok(root) = decoded.get() {
            let _ = root.get_payload().which();
            if let dynamic_value::Reader::Struct(root) = root.into() {
                walk(root);
            }
        }
    }
}

/// Valid messages of every kind to mutate: hellos, hello responses, the CLI rejection and each
/// request and response member with every field filled.
fn corpus() -> Vec<Vec<u8>> {
    let mut corpus = vec![
        Hello {
            protocol_version: 1,
            token: "tok".into(),
            tenant_id: "default".into(),
            no_noise: true,
        }
        .encode(),
        Hello {
            protocol_version: 2,
            ..Hello::default()
        }
        .encode(),
        HelloResponse::ok(false).encode(),
        HelloResponse {
            capabilities: vec!["expected_version".into(), "events_filter".into()],
            ..HelloResponse::rejected("invalid control token", true)
        }
        .encode(),
        cli_rejection(),
    ];
    for tag in 0..23 {
        corpus.push(super::roundtrip::encode_member::<control_request::Owned>(
            u64::from(tag),
            tag,
        ));
        corpus.push(super::roundtrip::encode_member::<control_response::Owned>(
            u64::from(tag),
            tag,
        ));
    }
    corpus
}

/// A valid message with some bytes overwritten and possibly cut short.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    let count = corpus.len();
    (
        0..count,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(move |(pick, edits, cut)| {
            let mut bytes = corpus[pick].clone();
            for (at, value) in edits {
                let index = at.index(bytes.len());
                bytes[index] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_plausible_table_never_panic(
        words in 0u32..40,
        body in prop::collection::vec(any::<u8>(), 0..320),
    ) {
        // A one-segment table makes the decoders reach the pointers instead of stopping early.
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&words.to_le_bytes());
        bytes.extend_from_slice(&body);
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(bytes in mutated()) {
        decode_everything(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Explicit cases.

fn assert_truncated<T: std::fmt::Debug>(result: eventdbx_proto::Result<T>) {
    match result {
        Err(ProtoError::Truncated(_)) => {}
        other => panic!("expected a truncation error, got {other:?}"),
    }
}

fn assert_malformed<T: std::fmt::Debug>(result: eventdbx_proto::Result<T>, needle: &str) {
    match result {
        Err(ProtoError::Malformed(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected a malformed-message error, got {other:?}"),
    }
}

#[test]
fn truncated_segment_table() {
    // Two segments announced: the table is 16 bytes, only 8 are here.
    let bytes = [1, 0, 0, 0, 5, 0, 0, 0];
    assert_eq!(
        message_length(&bytes, MAX_MESSAGE_BYTES).ok(),
        Some(MessageLength::NeedMore(8))
    );
    assert_truncated(message::decode(&bytes).map(|_| ()));
    assert_truncated(Hello::decode(&bytes));
    assert_truncated(HelloResponse::decode(&bytes));
    assert_truncated(classify_first_message(&bytes));
    assert_truncated(decode_request(&bytes).map(|_| ()));
    assert_truncated(decode_response(&bytes).map(|_| ()));
    assert_truncated(message::decode(&bytes[..3]).map(|_| ()));
}

#[test]
fn segment_count_0xffffffff_is_too_many_segments() {
    let mut bytes = vec![0xff, 0xff, 0xff, 0xff];
    bytes.extend_from_slice(&[0; 64]);
    let needle = "too many segments";
    assert_malformed(message_length(&bytes, MAX_MESSAGE_BYTES), needle);
    // Refused from the first four bytes, before any table or body.
    assert_malformed(message_length(&bytes[..4], MAX_MESSAGE_BYTES), needle);
    assert_malformed(message::decode(&bytes).map(|_| ()), needle);
    assert_malformed(Hello::decode(&bytes), needle);
    assert_malformed(HelloResponse::decode(&bytes), needle);
    assert_malformed(classify_first_message(&bytes), needle);
    assert_malformed(decode_request(&bytes).map(|_| ()), needle);
    assert_malformed(decode_response(&bytes).map(|_| ()), needle);
    let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
    assert_malformed(reader.feed(&bytes), needle);
}

#[test]
fn segment_larger_than_the_remaining_bytes() {
    // One segment of 100 words, 2 words present.
    let mut bytes = vec![0, 0, 0, 0, 100, 0, 0, 0];
    bytes.extend_from_slice(&[0, 0, 0, 0, 1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        message_length(&bytes, MAX_MESSAGE_BYTES).ok(),
        Some(MessageLength::NeedMore(98 * 8))
    );
    assert_truncated(message::decode(&bytes).map(|_| ()));
    assert_truncated(Hello::decode(&bytes));
    assert_truncated(classify_first_message(&bytes));
    assert_truncated(decode_request(&bytes).map(|_| ()));
    // And over the hello limit: refused before the body is buffered.
    let huge = [0, 0, 0, 0, 0, 0, 1, 0];
    let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
    assert!(matches!(
        reader.feed(&huge),
        Err(ProtoError::MessageTooLarge { .. })
    ));
}

#[test]
fn root_pointer_out_of_bounds() {
    // One 1-word segment whose root struct pointer points 100 words away.
    let bytes = [0, 0, 0, 0, 1, 0, 0, 0, 0x90, 0x01, 0, 0, 1, 0, 2, 0];
    assert!(
        message::decode(&bytes).is_ok(),
        "pointers are checked lazily"
    );
    assert_malformed(decode_request(&bytes).map(|_| ()), "");
    assert_malformed(decode_response(&bytes).map(|_| ()), "");
    assert_malformed(Hello::decode(&bytes), "");
    assert_malformed(HelloResponse::decode(&bytes), "");
    assert_malformed(classify_first_message(&bytes), "");
}

/// The golden v1 hello with the token pointer's word offset raised from 1 to 50.
fn hello_with_token_out_of_bounds() -> Vec<u8> {
    let mut bytes = Hello {
        protocol_version: 1,
        token: "tok".into(),
        tenant_id: "default".into(),
        no_noise: false,
    }
    .encode();
    bytes[24] = (50 << 2) | 1;
    bytes
}

#[test]
fn text_pointer_out_of_bounds_keeps_the_version() {
    let bytes = hello_with_token_out_of_bounds();
    let Ok(FirstMessage::Hello(hello)) = classify_first_message(&bytes) else {
        panic!("still a hello");
    };
    assert_eq!(hello.protocol_version, 1);
    assert!(matches!(
        hello.token,
        Err(HelloTextError::Read {
            field: HelloField::Token,
            ..
        })
    ));
    assert_eq!(hello.tenant_id, Ok("default".to_owned()));
    assert_malformed(Hello::decode(&bytes), "failed to read control token");
}

#[test]
fn invalid_utf8_in_the_tenant_id_is_typed() {
    let mut bytes = Hello {
        protocol_version: 1,
        token: "tok".into(),
        tenant_id: "default".into(),
        no_noise: false,
    }
    .encode();
    // "default" starts at byte 48; make its second byte a lone continuation byte.
    bytes[49] = 0x80;
    let Ok(FirstMessage::Hello(hello)) = classify_first_message(&bytes) else {
        panic!("still a hello");
    };
    assert_eq!(hello.token, Ok("tok".to_owned()));
    let Err(err) = hello.tenant_id else {
        panic!("invalid UTF-8 accepted");
    };
    assert!(matches!(
        err,
        HelloTextError::Utf8 {
            field: HelloField::TenantId,
            ..
        }
    ));
    assert!(err
        .to_string()
        .starts_with("invalid UTF-8 in control tenant id: "));
}

#[test]
fn a_pointer_list_cycle_is_harmless() {
    // Root struct (0 data, 1 ptr) whose ptr 0 is a one-element pointer list whose element points
    // back at the list itself.
    let bytes = [
        0, 0, 0, 0, 3, 0, 0, 0, // table: 3 words
        0, 0, 0, 0, 0, 0, 1, 0, // root: struct, 0 data, 1 pointer
        1, 0, 0, 0, 0x0e, 0, 0, 0, // ptr 0: list at offset 0, pointer elements, 1 element
        0xfd, 0xff, 0xff, 0xff, 0x0e, 0, 0, 0, // element: list at offset -1 (itself)
    ];
    assert_eq!(
        classify_first_message(&bytes).ok(),
        Some(FirstMessage::CliRequest)
    );
    decode_everything(&bytes);
}
