//! `PluginEnvelope` on the wire (`docs/plugins.md`, "Process plugins"): golden bytes both ways, and
//! every `PluginEvent` field at the data bits and pointer slots its ordinal gives, read without the
//! schema.

use eventdbx_proto::plugin::{
    decode_envelope, encode_envelope, EnvelopeDecoder, PluginEnvelope, PluginEvent, PluginInit,
    MAX_ACK_BYTES, MAX_EVENT_BYTES, NULL_JSON,
};

fn bytes(spec: &str) -> Vec<u8> {
    let digits: String = spec.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(digits).expect("valid hex in the test vector")
}

fn word(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Follows the struct pointer at byte `at`: (data section, byte offset of the pointers, count).
fn struct_at(bytes: &[u8], at: usize) -> (&[u8], usize, usize) {
    let pointer = word(bytes, at);
    assert_eq!(pointer & 3, 0, "struct pointer at byte {at}");
    let offset = i64::from((pointer as u32 as i32) >> 2);
    let start = (at as i64 + 8 + offset * 8) as usize;
    let data_bytes = ((pointer >> 32) & 0xffff) as usize * 8;
    let pointers = (pointer >> 48) as usize;
    (
        &bytes[start..start + data_bytes],
        start + data_bytes,
        pointers,
    )
}

/// The text the list pointer at byte `at` points to.
fn text_at(bytes: &[u8], at: usize) -> &str {
    let pointer = word(bytes, at);
    assert_eq!(pointer & 3, 1, "list pointer at byte {at}");
    assert_eq!((pointer >> 32) & 7, 2, "byte elements at {at}");
    let offset = i64::from((pointer as u32 as i32) >> 2);
    let start = (at as i64 + 8 + offset * 8) as usize;
    let len = (pointer >> 35) as usize;
    assert_eq!(bytes[start + len - 1], 0, "NUL terminator");
    std::str::from_utf8(&bytes[start..start + len - 1]).expect("utf-8")
}

/// The union tag of the envelope and the byte offset of its pointer 0 (the member struct).
fn envelope_member(bytes: &[u8]) -> (u16, usize) {
    assert_eq!(&bytes[..4], &[0, 0, 0, 0], "single segment");
    let (data, pointers_at, pointers) = struct_at(bytes, 8);
    assert_eq!(
        (data.len(), pointers),
        (8, 1),
        "envelope: 1 data word, 1 pointer"
    );
    (u16::from_le_bytes([data[0], data[1]]), pointers_at)
}

// Ack { sequence: 7 }: root -> envelope (tag 2) -> ack struct (1 data word).
const ACK_7: &str = "
    00 00 00 00 04 00 00 00
    00 00 00 00 01 00 01 00
    02 00 00 00 00 00 00 00
    00 00 00 00 01 00 00 00
    07 00 00 00 00 00 00 00";

#[test]
fn ack_is_the_hand_assembled_message() {
    let expected = bytes(ACK_7);
    let envelope = PluginEnvelope::Ack { sequence: 7 };
    assert_eq!(
        hex::encode(encode_envelope(&envelope)),
        hex::encode(&expected)
    );
    assert_eq!(decode_envelope(&expected).expect("decode"), envelope);
}

// Init: tag 0 -> PluginInit (0 data words, 3 text pointers), texts in ordinal order.
const INIT: &str = "
    00 00 00 00 0a 00 00 00
    00 00 00 00 01 00 01 00
    00 00 00 00 00 00 00 00
    00 00 00 00 00 00 03 00
    09 00 00 00 12 00 00 00
    09 00 00 00 12 00 00 00
    09 00 00 00 6a 00 00 00
    70 00 00 00 00 00 00 00
    31 00 00 00 00 00 00 00
    6c 69 6e 75 78 2d 78 38 36 5f 36 34 00 00 00 00";

#[test]
fn init_is_the_hand_assembled_message() {
    let expected = bytes(INIT);
    let envelope = PluginEnvelope::Init(PluginInit {
        plugin_name: "p".into(),
        version: "1".into(),
        target: "linux-x86_64".into(),
    });
    assert_eq!(
        hex::encode(encode_envelope(&envelope)),
        hex::encode(&expected)
    );
    assert_eq!(decode_envelope(&expected).expect("decode"), envelope);
}

#[test]
fn error_carries_sequence_in_data_and_message_in_pointer_0() {
    let envelope = PluginEnvelope::Error {
        sequence: 0x0102_0304_0506_0708,
        message: "index unavailable".into(),
    };
    let encoded = encode_envelope(&envelope);
    let (tag, member_at) = envelope_member(&encoded);
    assert_eq!(tag, 3);
    let (data, pointers_at, pointers) = struct_at(&encoded, member_at);
    assert_eq!((data.len(), pointers), (8, 1));
    assert_eq!(word(data, 0), 0x0102_0304_0506_0708);
    assert_eq!(text_at(&encoded, pointers_at), "index unavailable");
    assert_eq!(decode_envelope(&encoded).expect("decode"), envelope);
}

fn full_event() -> PluginEvent {
    PluginEvent {
        sequence: 0x1111_0000_0000_0001,
        aggregate_type: "order".into(),
        aggregate_id: "o-42".into(),
        event_type: "order_placed".into(),
        event_version: 0x2222_0000_0000_0002,
        event_id: "7215112345678901234".into(),
        created_at_epoch_micros: -0x3333_0000_0000_0003,
        payload_json: r#"{"total":12.5}"#.into(),
        metadata_json: r#"{"@actor":"svc"}"#.into(),
        hash: "hash-9".into(),
        merkle_root: "root-10".into(),
        state_version: 0x4444_0000_0000_0004,
        state_archived: true,
        state_merkle_root: "state-root-13".into(),
        state_entries: vec![
            ("total".into(), "12.5".into()),
            ("status".into(), r#""placed""#.into()),
        ],
        schema_json: r#"{"aggregate":"order"}"#.into(),
        extensions_json: r#"{"trace":"t-1"}"#.into(),
    }
}

#[test]
fn every_event_field_sits_where_its_ordinal_puts_it() {
    let event = full_event();
    let encoded = encode_envelope(&PluginEnvelope::Event(event.clone()));
    let (tag, member_at) = envelope_member(&encoded);
    assert_eq!(tag, 1);
    let (data, pointers_at, pointers) = struct_at(&encoded, member_at);
    assert_eq!(
        (data.len(), pointers),
        (5 * 8, 12),
        "PluginEvent: 5 data words, 12 pointers"
    );

    // Data: the UInt64/Int64 fields take words 0..3 in ordinal order, the Bool is bit 256.
    assert_eq!(word(data, 0), event.sequence);
    assert_eq!(word(data, 8), event.event_version);
    assert_eq!(word(data, 16) as i64, event.created_at_epoch_micros);
    assert_eq!(word(data, 24), event.state_version);
    assert_eq!(
        word(data, 32),
        1,
        "stateArchived is bit 0 of word 4, nothing else set"
    );

    // Pointers: the Text and List fields in ordinal order.
    let text_slots = [
        (0, event.aggregate_type.as_str()),
        (1, &event.aggregate_id),
        (2, &event.event_type),
        (3, &event.event_id),
        (4, &event.payload_json),
        (5, &event.metadata_json),
        (6, &event.hash),
        (7, &event.merkle_root),
        (8, &event.state_merkle_root),
        (10, &event.schema_json),
        (11, &event.extensions_json),
    ];
    for (slot, expected) in text_slots {
        assert_eq!(
            text_at(&encoded, pointers_at + slot * 8),
            expected,
            "pointer {slot}"
        );
    }

    // Pointer 9: List(StateEntry), an inline-composite list of (0 data, 2 pointers) structs.
    let list_at = pointers_at + 9 * 8;
    let pointer = word(&encoded, list_at);
    assert_eq!(pointer & 3, 1, "list pointer");
    assert_eq!((pointer >> 32) & 7, 7, "inline composite");
    let tag_at = (list_at as i64 + 8 + i64::from((pointer as u32 as i32) >> 2) * 8) as usize;
    let tag = word(&encoded, tag_at);
    assert_eq!((tag >> 2) & 0x3fff_ffff, 2, "element count");
    assert_eq!(
        ((tag >> 32) & 0xffff, tag >> 48),
        (0, 2),
        "StateEntry: 0 data, 2 pointers"
    );
    for (index, (key, value)) in event.state_entries.iter().enumerate() {
        let element = tag_at + 8 + index * 16;
        assert_eq!(text_at(&encoded, element), key, "entry {index} key @0");
        assert_eq!(
            text_at(&encoded, element + 8),
            value,
            "entry {index} value @1"
        );
    }

    assert_eq!(
        decode_envelope(&encoded).expect("decode"),
        PluginEnvelope::Event(event)
    );
}

#[test]
fn an_event_without_its_excluded_parts_round_trips() {
    // The shape of an `event-only` job: no state entries, schema "null".
    let event = PluginEvent {
        payload_json: NULL_JSON.into(),
        state_entries: Vec::new(),
        schema_json: NULL_JSON.into(),
        state_archived: false,
        ..full_event()
    };
    let encoded = encode_envelope(&PluginEnvelope::Event(event.clone()));
    let (_, member_at) = envelope_member(&encoded);
    let (data, pointers_at, _) = struct_at(&encoded, member_at);
    assert_eq!(word(data, 32), 0, "stateArchived false");
    assert_eq!(text_at(&encoded, pointers_at + 4 * 8), "null");
    assert_eq!(text_at(&encoded, pointers_at + 10 * 8), "null");
    assert_eq!(
        decode_envelope(&encoded).expect("decode"),
        PluginEnvelope::Event(event)
    );
}

#[test]
fn null_pointers_read_as_empty_texts_and_lists() {
    // An event envelope whose PluginEvent has every field at its default and null pointers, as a
    // peer that sets nothing would send it: root -> envelope (tag 1) -> 5 zero words, 12 nulls.
    let mut message = bytes(
        "00 00 00 00 14 00 00 00
         00 00 00 00 01 00 01 00
         01 00 00 00 00 00 00 00
         00 00 00 00 05 00 0c 00",
    );
    message.resize(8 + 20 * 8, 0);
    assert_eq!(
        decode_envelope(&message).expect("decode"),
        PluginEnvelope::Event(PluginEvent::default())
    );
}

#[test]
fn a_stream_of_envelopes_decodes_across_any_cut() {
    let envelopes = vec![
        PluginEnvelope::Init(PluginInit {
            plugin_name: "search".into(),
            version: "0.3.1".into(),
            target: "linux-x86_64".into(),
        }),
        PluginEnvelope::Event(full_event()),
        PluginEnvelope::Ack { sequence: 5 },
        PluginEnvelope::Error {
            sequence: 6,
            message: "boom".into(),
        },
    ];
    let stream: Vec<u8> = envelopes.iter().flat_map(encode_envelope).collect();
    for chunk in [1, 3, 7, 8, 64, stream.len()] {
        let mut decoder = EnvelopeDecoder::new(MAX_EVENT_BYTES);
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk) {
            seen.extend(decoder.feed(piece).expect("feed"));
        }
        assert_eq!(seen, envelopes, "chunks of {chunk}");
        assert!(decoder.is_at_boundary());
    }
}

#[test]
fn garbage_on_the_ack_stream_is_an_error_not_a_panic() {
    // A child printing text on stdout: "hello\n..." reads as a huge segment count.
    let mut decoder = EnvelopeDecoder::new(MAX_ACK_BYTES);
    let err = decoder
        .feed(b"hello world, this is not capnp\n")
        .expect_err("garbage");
    assert!(err.to_string().contains("too many segments"), "{err}");

    // A plausible table announcing a body over the limit is refused before the body arrives.
    let mut decoder = EnvelopeDecoder::new(MAX_ACK_BYTES);
    let err = decoder
        .feed(&[0, 0, 0, 0, 0, 0, 0x10, 0])
        .expect_err("over the limit");
    assert!(err.to_string().contains("too large"), "{err}");
}
