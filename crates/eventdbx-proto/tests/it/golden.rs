//! Golden wire tests: the examples of `docs/protocol.md`, byte for byte, both ways.

use eventdbx_proto::hello::{
    classify_first_message, FirstMessage, Hello, HelloResponse, ReceivedHello,
};
use eventdbx_proto::message;
use eventdbx_proto::schema::control_capnp::{control_request, control_response};

/// Hex with any whitespace and `|` separators, one row per word as `docs/protocol.md` lays them out.
fn bytes(spec: &str) -> Vec<u8> {
    let digits: String = spec.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(digits).expect("valid hex in the test vector")
}

/// `text` with its NUL, padded with zeros to whole words (a Cap'n Proto `Text` body).
fn text_words(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out
}

// The v1 hello with token `tok`, tenant `default`, noNoise = false, protocol v1.
const HELLO_TOK_DEFAULT: &str = "
    00 00 00 00 06 00 00 00
    00 00 00 00 01 00 02 00
    01 00 00 00 00 00 00 00
    05 00 00 00 22 00 00 00
    05 00 00 00 42 00 00 00
    74 6f 6b 00 00 00 00 00
    64 65 66 61 75 6c 74 00";

#[test]
fn hello_is_the_annotated_example() {
    let hello = Hello {
        protocol_version: 1,
        token: "tok".into(),
        tenant_id: "default".into(),
        no_noise: false,
    };
    let expected = bytes(HELLO_TOK_DEFAULT);
    assert_eq!(expected.len(), 56);
    assert_eq!(hex::encode(hello.encode()), hex::encode(&expected));
    assert_eq!(Hello::decode(&expected).expect("decode"), hello);
}

#[test]
fn hello_with_no_noise_sets_bit_16() {
    let hello = Hello {
        protocol_version: 1,
        token: "tok".into(),
        tenant_id: "default".into(),
        no_noise: true,
    };
    let mut expected = bytes(HELLO_TOK_DEFAULT);
    expected[16..24].copy_from_slice(&bytes("01 00 01 00 00 00 00 00"));
    assert_eq!(hex::encode(hello.encode()), hex::encode(&expected));
    assert_eq!(Hello::decode(&expected).expect("decode"), hello);
}

#[test]
fn v2_hello_has_a_non_null_empty_token() {
    let hello = Hello {
        protocol_version: 2,
        token: String::new(),
        tenant_id: "default".into(),
        no_noise: false,
    };
    let encoded = hello.encode();
    // Token pointer: offset 1 word, byte elements, 1 element (the NUL) - never a null pointer.
    assert_eq!(hex::encode(&encoded[24..32]), "050000000a000000");
    let mut expected = bytes(
        "00 00 00 00 06 00 00 00
         00 00 00 00 01 00 02 00
         02 00 00 00 00 00 00 00
         05 00 00 00 0a 00 00 00
         05 00 00 00 42 00 00 00
         00 00 00 00 00 00 00 00",
    );
    expected.extend_from_slice(&text_words("default"));
    assert_eq!(hex::encode(&encoded), hex::encode(&expected));
    // The server must see a hello (not a CLI request) with an empty token.
    let FirstMessage::Hello(received) = classify_first_message(&encoded).expect("classify") else {
        panic!("a v2 hello was classified as a CLI request");
    };
    assert_eq!(received.protocol_version, 2);
    assert_eq!(received.token, Ok(String::new()));
}

#[test]
fn a_null_token_pointer_is_a_hello_with_an_empty_token() {
    // The golden v1 hello with pointer 0 zeroed (null) and its text dropped.
    let message = bytes(
        "00 00 00 00 05 00 00 00
         00 00 00 00 01 00 02 00
         01 00 00 00 00 00 00 00
         00 00 00 00 00 00 00 00
         01 00 00 00 42 00 00 00
         64 65 66 61 75 6c 74 00",
    );
    assert_eq!(
        classify_first_message(&message).expect("classify"),
        FirstMessage::Hello(ReceivedHello {
            protocol_version: 1,
            token: Ok(String::new()),
            tenant_id: Ok("default".into()),
            no_noise: false,
        })
    );
}

#[test]
fn a_cli_request_is_recognised_and_rejected() {
    // CliRequest { args = ["aggregate", "list"] }: 0 data words, 1 pointer -> a pointer list.
    let mut message = bytes(
        "00 00 00 00 07 00 00 00
         00 00 00 00 00 00 01 00
         01 00 00 00 16 00 00 00
         05 00 00 00 52 00 00 00
         09 00 00 00 2a 00 00 00",
    );
    message.extend_from_slice(&text_words("aggregate"));
    message.extend_from_slice(&text_words("list"));
    assert_eq!(message.len(), 8 + 7 * 8);
    assert_eq!(
        classify_first_message(&message).expect("classify"),
        FirstMessage::CliRequest
    );

    // CliResponse: exitCode -1 (bits 0-31), stdout "" (ptr 0), stderr the rejection (ptr 1).
    let rejection = eventdbx_proto::hello::cli_rejection();
    let stderr = text_words(eventdbx_proto::hello::CLI_REJECTION_MESSAGE);
    let mut expected = bytes(&format!(
        "00 00 00 00 {words:02x} 00 00 00
         00 00 00 00 01 00 02 00
         ff ff ff ff 00 00 00 00
         05 00 00 00 0a 00 00 00
         05 00 00 00 {stderr_tag:02x} {stderr_hi:02x} 00 00
         00 00 00 00 00 00 00 00",
        words = 5 + stderr.len() / 8,
        stderr_tag = ((eventdbx_proto::hello::CLI_REJECTION_MESSAGE.len() + 1) << 3 | 2) & 0xff,
        stderr_hi = ((eventdbx_proto::hello::CLI_REJECTION_MESSAGE.len() + 1) << 3 | 2) >> 8,
    ));
    expected.extend_from_slice(&stderr);
    assert_eq!(hex::encode(rejection), hex::encode(expected));
}

// Hello response: accepted, "ok", Noise follows (40 bytes).
const RESPONSE_OK: &str = "
    00 00 00 00 04 00 00 00 | 00 00 00 00 01 00 01 00 | 01 00 00 00 00 00 00 00 |
    01 00 00 00 1a 00 00 00 | 6f 6b 00 00 00 00 00 00";

// Hello response: rejected, "invalid control token" (56 bytes).
const RESPONSE_REJECTED: &str = "
    00 00 00 00 06 00 00 00 | 00 00 00 00 01 00 01 00 | 00 00 00 00 00 00 00 00 |
    01 00 00 00 b2 00 00 00 | 69 6e 76 61 6c 69 64 20 63 6f 6e 74 72 6f 6c 20 74 6f 6b 65 6e 00 00 00";

#[test]
fn hello_response_ok_is_the_reference_bytes() {
    let expected = bytes(RESPONSE_OK);
    assert_eq!(expected.len(), 40);
    let decoded = HelloResponse::decode(&expected).expect("decode");
    assert_eq!(decoded, HelloResponse::ok(false));
    assert_eq!(hex::encode(decoded.encode()), hex::encode(&expected));
}

#[test]
fn hello_response_plaintext_sets_bit_1() {
    let mut expected = bytes(RESPONSE_OK);
    expected[16] = 0x03;
    let decoded = HelloResponse::decode(&expected).expect("decode");
    assert_eq!(decoded, HelloResponse::ok(true));
    assert_eq!(hex::encode(decoded.encode()), hex::encode(&expected));
}

#[test]
fn hello_response_rejection_is_the_reference_bytes() {
    let expected = bytes(RESPONSE_REJECTED);
    assert_eq!(expected.len(), 56);
    let decoded = HelloResponse::decode(&expected).expect("decode");
    assert_eq!(
        decoded,
        HelloResponse::rejected("invalid control token", false)
    );
    assert_eq!(hex::encode(decoded.encode()), hex::encode(&expected));
}

#[test]
fn hello_response_capabilities_use_a_second_pointer() {
    let response = HelloResponse {
        capabilities: vec!["expected_version".into()],
        ..HelloResponse::ok(false)
    };
    let encoded = response.encode();
    // Root: 1 data word, 2 pointers (our extension); ptr 0 is still "ok".
    assert_eq!(hex::encode(&encoded[8..16]), "0000000001000200");
    assert_eq!(encoded[16], 0x01);
    assert_eq!(HelloResponse::decode(&encoded).expect("decode"), response);
}

// Request id 7, verifyAggregate for order/o-1 (72 bytes).
const VERIFY_REQUEST: &str = "
    00 00 00 00 08 00 00 00
    00 00 00 00 02 00 01 00
    07 00 00 00 00 00 00 00
    04 00 00 00 00 00 00 00
    00 00 00 00 00 00 02 00
    05 00 00 00 32 00 00 00
    05 00 00 00 22 00 00 00
    6f 72 64 65 72 00 00 00
    6f 2d 31 00 00 00 00 00";

#[test]
fn verify_request_is_the_annotated_example() {
    let expected = bytes(VERIFY_REQUEST);
    assert_eq!(expected.len(), 72);
    let encoded = message::encode_request(|mut request| {
        request.set_id(7);
        let mut verify = request.init_payload().init_verify_aggregate();
        verify.set_aggregate_type("order");
        verify.set_aggregate_id("o-1");
        Ok(())
    })
    .expect("encode");
    assert_eq!(hex::encode(&encoded), hex::encode(&expected));

    let decoded = message::decode_request(&expected).expect("decode");
    let root = decoded.get().expect("root");
    assert_eq!(root.get_id(), 7);
    let control_request::payload::Which::VerifyAggregate(verify) =
        root.get_payload().which().expect("known member")
    else {
        panic!("not a verifyAggregate request");
    };
    let verify = verify.expect("struct");
    assert_eq!(
        verify.get_aggregate_type().expect("text").to_str(),
        Ok("order")
    );
    assert_eq!(verify.get_aggregate_id().expect("text").to_str(), Ok("o-1"));
}

#[test]
fn error_response_is_the_annotated_example() {
    let mut expected = bytes(
        "00 00 00 00 0c 00 00 00 | 00 00 00 00 02 00 01 00 | 07 00 00 00 00 00 00 00 |
         06 00 00 00 00 00 00 00 | 00 00 00 00 00 00 02 00 | 05 00 00 00 a2 00 00 00 |
         0d 00 00 00 a2 00 00 00",
    );
    expected.extend_from_slice(&text_words("aggregate_not_found"));
    expected.extend_from_slice(&text_words("aggregate not found"));
    assert_eq!(expected.len(), 8 + 12 * 8);

    let encoded = message::encode_response(|mut response| {
        response.set_id(7);
        let mut error = response.init_payload().init_error();
        error.set_code("aggregate_not_found");
        error.set_message("aggregate not found");
        Ok(())
    })
    .expect("encode");
    assert_eq!(hex::encode(&encoded), hex::encode(&expected));

    let decoded = message::decode_response(&expected).expect("decode");
    let root = decoded.get().expect("root");
    assert_eq!(root.get_id(), 7);
    let control_response::payload::Which::Error(error) =
        root.get_payload().which().expect("known member")
    else {
        panic!("not an error response");
    };
    let error = error.expect("struct");
    assert_eq!(
        error.get_code().expect("text").to_str(),
        Ok("aggregate_not_found")
    );
    assert_eq!(
        error.get_message().expect("text").to_str(),
        Ok("aggregate not found")
    );
}

#[test]
fn a_length_prefixed_hello_is_too_many_segments() {
    // The reference Python SDK 0.1.8 sends `00 00 00 38` before the hello: read as a segment count
    // that is 0x38000001 segments, which must be refused from those four bytes alone.
    let mut prefixed = vec![0, 0, 0, 0x38];
    prefixed.extend_from_slice(&bytes(HELLO_TOK_DEFAULT));
    let err = message::message_length(&prefixed, eventdbx_proto::hello::MAX_HELLO_BYTES)
        .expect_err("too many segments");
    assert!(err.to_string().contains("too many segments"), "{err}");
    let mut reader = message::StreamMessageReader::new(eventdbx_proto::hello::MAX_HELLO_BYTES);
    assert!(reader.feed(&prefixed).is_err());
}

#[test]
fn the_stream_reader_stops_at_the_end_of_the_hello() {
    let hello = bytes(HELLO_TOK_DEFAULT);
    let mut stream = hello.clone();
    stream.extend_from_slice(b"noise handshake bytes");
    let mut reader = message::StreamMessageReader::new(eventdbx_proto::hello::MAX_HELLO_BYTES);
    // Byte by byte: the worst a socket can do.
    let mut taken = 0;
    for byte in &stream {
        if reader.bytes_needed() == 0 {
            break;
        }
        taken += reader.feed(std::slice::from_ref(byte)).expect("feed");
    }
    assert_eq!(taken, hello.len());
    assert_eq!(reader.message(), Some(hello.as_slice()));

    // All at once: takes the hello and leaves the rest.
    let mut reader = message::StreamMessageReader::new(eventdbx_proto::hello::MAX_HELLO_BYTES);
    assert_eq!(reader.feed(&stream).expect("feed"), hello.len());
    assert_eq!(reader.into_message(), Some(hello));
}

#[test]
fn docs_hold_the_golden_bytes() {
    let docs = std::fs::read_to_string(crate::manifest_dir().join("../../docs/protocol.md"))
        .unwrap_or_default();
    let lines: Vec<String> = [
        ("hello_v1_tok_default", HELLO_TOK_DEFAULT),
        ("hello_response_ok", RESPONSE_OK),
        ("hello_response_rejected", RESPONSE_REJECTED),
        ("verify_request_id_7", VERIFY_REQUEST),
    ]
    .into_iter()
    .map(|(name, golden)| format!("{name:<23} = {}", hex::encode(bytes(golden))))
    .collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|line| !docs.contains(line.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md lacks or disagrees on {} golden lines; the tests use:\n{}",
        missing.len(),
        lines.join("\n")
    );
}
