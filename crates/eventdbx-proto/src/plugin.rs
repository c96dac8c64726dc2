//! The messages between the server and a `process` plugin's child (`docs/plugins.md`, "Process
//! plugins").
//!
//! The server writes `PluginEnvelope` messages on the child's stdin, back to back, each one
//! standard unpacked single-segment stream message (the encoding of `docs/protocol.md`, "Message
//! encoding", with no length prefix): one [`PluginEnvelope::Init`] first, then one
//! [`PluginEnvelope::Event`] per job. **Ours:** the child answers each event on its stdout with a
//! [`PluginEnvelope::Ack`] or a [`PluginEnvelope::Error`] carrying the event's sequence; the
//! reference defines both and never reads them.
//!
//! Both sides read with an [`EnvelopeDecoder`]: feed it whatever the pipe gave, get back every
//! envelope completed by those bytes.
//!
//! ```
//! use eventdbx_proto::plugin::{encode_envelope, EnvelopeDecoder, PluginEnvelope, MAX_ACK_BYTES};
//!
//! let mut stream = encode_envelope(&PluginEnvelope::Ack { sequence: 7 });
//! stream.extend(encode_envelope(&PluginEnvelope::Error { sequence: 8, message: "no".into() }));
//!
//! let mut decoder = EnvelopeDecoder::new(MAX_ACK_BYTES);
//! let (first, second) = stream.split_at(5); // pipes cut messages anywhere
//! assert!(decoder.feed(first)?.is_empty());
//! let envelopes = decoder.feed(second)?;
//! assert_eq!(envelopes[0], PluginEnvelope::Ack { sequence: 7 });
//! assert_eq!(envelopes[1], PluginEnvelope::Error { sequence: 8, message: "no".into() });
//! assert!(decoder.is_at_boundary());
//! # Ok::<(), eventdbx_proto::ProtoError>(())
//! ```

use capnp::message::{Builder, HeapAllocator};

use crate::message::{self, StreamMessageReader};
use crate::schema::plugin_capnp::{
    plugin_ack, plugin_envelope, plugin_error, plugin_event, plugin_init,
};
use crate::{ProtoError, Result};

/// The JSON text of an absent part: `payloadJson` of a job whose mode excludes the event record
/// (or sets its payload to `null`), `schemaJson` without a schema, `extensionsJson` without
/// extensions.
pub const NULL_JSON: &str = "null";

/// Largest envelope a plugin child accepts by default: the protocol's traversal limit
/// ([`message::MAX_MESSAGE_BYTES`], 64 MiB). Events carry whole payloads and states.
pub const MAX_EVENT_BYTES: usize = message::MAX_MESSAGE_BYTES;

/// Largest envelope the server reads from a child: an ack or an error with its message. Anything
/// larger is a child out of step (or one writing something else on stdout).
pub const MAX_ACK_BYTES: usize = 1024 * 1024;

/// `PluginInit`: sent once, first, to every new child.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginInit {
    /// The plugin's routing identifier (its `name`, or its kind when it has none).
    pub plugin_name: String,
    /// The version of the plugin binary (the `version` of its `process` config).
    pub version: String,
    /// The target the binary was built for, `<os>-<arch>` (e.g. `linux-x86_64`).
    pub target: String,
}

/// `PluginEvent`: one delivery job. Parts the job's payload mode excludes are empty:
/// `payload_json` is [`NULL_JSON`], `state_entries` is empty, `schema_json` is [`NULL_JSON`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginEvent {
    /// Identifies the delivery; the child's ack or error repeats it.
    pub sequence: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub event_version: u64,
    /// The event's snowflake id, in decimal.
    pub event_id: String,
    pub created_at_epoch_micros: i64,
    /// The event payload as JSON text; [`NULL_JSON`] when the mode excludes it.
    pub payload_json: String,
    pub metadata_json: String,
    pub hash: String,
    pub merkle_root: String,
    pub state_version: u64,
    pub state_archived: bool,
    pub state_merkle_root: String,
    /// `(field, JSON text of its typed value)` in the state's order; empty when the mode
    /// excludes the state.
    pub state_entries: Vec<(String, String)>,
    /// The aggregate's schema as JSON text; [`NULL_JSON`] when none or excluded.
    pub schema_json: String,
    /// The event's extensions as JSON text; [`NULL_JSON`] when none.
    pub extensions_json: String,
}

/// One `PluginEnvelope`, owned.
// An envelope lives for one write or one read, never in a collection that the size would bloat;
// boxing the event would only add an allocation per job.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginEnvelope {
    /// Server to child, once, first.
    Init(PluginInit),
    /// Server to child, one per job.
    Event(PluginEvent),
    /// Child to server: the event with this sequence was handled.
    Ack { sequence: u64 },
    /// Child to server: the event with this sequence failed; the job will be retried.
    Error { sequence: u64, message: String },
}

/// Encodes `envelope` as one single-segment unpacked stream message.
///
/// The first segment is sized for the whole message up front, so this never copies and never
/// fails. Text fields are written as (possibly empty) texts, never null pointers.
pub fn encode_envelope(envelope: &PluginEnvelope) -> Vec<u8> {
    // Root pointer + the envelope struct (one data word for the union tag, one pointer).
    let mut words = 1 + 2;
    words += match envelope {
        PluginEnvelope::Init(init) => {
            3 + text_words(&init.plugin_name) + text_words(&init.version) + text_words(&init.target)
        }
        PluginEnvelope::Event(event) => event_words(event),
        PluginEnvelope::Ack { .. } => 1,
        PluginEnvelope::Error { message, .. } => 2 + text_words(message),
    };
    let mut builder = Builder::new(
        HeapAllocator::new().first_segment_words(u32::try_from(words).unwrap_or(u32::MAX)),
    );
    let root = builder.init_root::<plugin_envelope::Builder<'_>>();
    let message = root.init_message();
    match envelope {
        PluginEnvelope::Init(init) => write_init(message.init_init(), init),
        PluginEnvelope::Event(event) => write_event(message.init_event(), event),
        PluginEnvelope::Ack { sequence } => message.init_ack().set_sequence(*sequence),
        PluginEnvelope::Error {
            sequence,
            message: text,
        } => {
            let mut error: plugin_error::Builder<'_> = message.init_error();
            error.set_sequence(*sequence);
            error.set_message(text.as_str());
        }
    }
    capnp::serialize::write_message_to_words(&builder)
}

/// Decodes one complete envelope message (bytes after it are ignored).
///
/// Errors: those of [`message::decode`], [`ProtoError::Malformed`] for an unknown union member
/// (a newer peer), a pointer of the wrong kind or non-UTF-8 text.
pub fn decode_envelope(bytes: &[u8]) -> Result<PluginEnvelope> {
    let decoded = message::decode_as::<plugin_envelope::Owned>(bytes)?;
    let root = decoded.get()?;
    let which = root.get_message().which().map_err(|not_in_schema| {
        ProtoError::Malformed(format!("unknown PluginEnvelope member {}", not_in_schema.0))
    })?;
    Ok(match which {
        plugin_envelope::message::Which::Init(init) => PluginEnvelope::Init(read_init(init?)?),
        plugin_envelope::message::Which::Event(event) => PluginEnvelope::Event(read_event(event?)?),
        plugin_envelope::message::Which::Ack(ack) => {
            let ack: plugin_ack::Reader<'_> = ack?;
            PluginEnvelope::Ack {
                sequence: ack.get_sequence(),
            }
        }
        plugin_envelope::message::Which::Error(error) => {
            let error: plugin_error::Reader<'_> = error?;
            PluginEnvelope::Error {
                sequence: error.get_sequence(),
                message: text(error.get_message())?,
            }
        }
    })
}

/// Reads envelopes from a byte stream (a child's stdout, a plugin's stdin), sans-IO.
///
/// Feed it bytes as they arrive, cut anywhere; it returns the envelopes they complete. Each
/// message may be at most `max_bytes` long, segment table included: a larger one is refused as
/// soon as its segment table shows it, before its body is buffered. After an error the stream is
/// out of step: drop the decoder and the stream.
#[derive(Debug, Clone)]
pub struct EnvelopeDecoder {
    current: StreamMessageReader,
    max_bytes: usize,
    /// Bytes of the message in progress; 0 at a message boundary.
    buffered: usize,
}

impl EnvelopeDecoder {
    /// A decoder of messages of at most `max_bytes` bytes (see [`MAX_EVENT_BYTES`] and
    /// [`MAX_ACK_BYTES`]).
    pub fn new(max_bytes: usize) -> Self {
        EnvelopeDecoder {
            current: StreamMessageReader::new(max_bytes),
            max_bytes,
            buffered: 0,
        }
    }

    /// Takes all of `input` and returns the envelopes it completes, in order.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<Vec<PluginEnvelope>> {
        let mut envelopes = Vec::new();
        while !input.is_empty() {
            let taken = self.current.feed(input)?;
            input = input.get(taken..).unwrap_or_default();
            self.buffered += taken;
            if self.current.bytes_needed() == 0 {
                let complete =
                    std::mem::replace(&mut self.current, StreamMessageReader::new(self.max_bytes));
                self.buffered = 0;
                let bytes = complete.into_message().unwrap_or_default();
                envelopes.push(decode_envelope(&bytes)?);
            } else if taken == 0 {
                // The reader needs more yet took nothing from non-empty input: cannot happen with
                // `StreamMessageReader`, but never spin on it.
                return Err(ProtoError::InvalidUse(
                    "stream reader made no progress".into(),
                ));
            }
        }
        Ok(envelopes)
    }

    /// True when no message is half-read: an end of stream here is a clean one.
    pub fn is_at_boundary(&self) -> bool {
        self.buffered == 0
    }
}

/// Words of a text with its NUL, rounded up to whole words.
fn text_words(text: &str) -> usize {
    (text.len() + 1).div_ceil(8)
}

/// Words of a `PluginEvent` struct and everything it points to.
fn event_words(event: &PluginEvent) -> usize {
    // 5 data words, 12 pointers.
    let texts = [
        &event.aggregate_type,
        &event.aggregate_id,
        &event.event_type,
        &event.event_id,
        &event.payload_json,
        &event.metadata_json,
        &event.hash,
        &event.merkle_root,
        &event.state_merkle_root,
        &event.schema_json,
        &event.extensions_json,
    ];
    let entries: usize = event
        .state_entries
        .iter()
        .map(|(key, value)| 2 + text_words(key) + text_words(value))
        .sum();
    // The struct list has a tag word before its elements.
    5 + 12 + texts.iter().map(|t| text_words(t)).sum::<usize>() + 1 + entries
}

fn write_init(mut builder: plugin_init::Builder<'_>, init: &PluginInit) {
    builder.set_plugin_name(init.plugin_name.as_str());
    builder.set_version(init.version.as_str());
    builder.set_target(init.target.as_str());
}

fn write_event(mut builder: plugin_event::Builder<'_>, event: &PluginEvent) {
    builder.set_sequence(event.sequence);
    builder.set_aggregate_type(event.aggregate_type.as_str());
    builder.set_aggregate_id(event.aggregate_id.as_str());
    builder.set_event_type(event.event_type.as_str());
    builder.set_event_version(event.event_version);
    builder.set_event_id(event.event_id.as_str());
    builder.set_created_at_epoch_micros(event.created_at_epoch_micros);
    builder.set_payload_json(event.payload_json.as_str());
    builder.set_metadata_json(event.metadata_json.as_str());
    builder.set_hash(event.hash.as_str());
    builder.set_merkle_root(event.merkle_root.as_str());
    builder.set_state_version(event.state_version);
    builder.set_state_archived(event.state_archived);
    builder.set_state_merkle_root(event.state_merkle_root.as_str());
    builder.set_schema_json(event.schema_json.as_str());
    builder.set_extensions_json(event.extensions_json.as_str());
    // More entries than a list can hold would not fit a message either; the encoder's size
    // estimate makes that case unreachable in practice, so saturate rather than fail.
    let count = u32::try_from(event.state_entries.len()).unwrap_or(u32::MAX);
    let mut list = builder.init_state_entries(count);
    for (index, (key, value)) in (0..count).zip(&event.state_entries) {
        let mut entry = list.reborrow().get(index);
        entry.set_key(key.as_str());
        entry.set_value(value.as_str());
    }
}

fn read_init(reader: plugin_init::Reader<'_>) -> Result<PluginInit> {
    Ok(PluginInit {
        plugin_name: text(reader.get_plugin_name())?,
        version: text(reader.get_version())?,
        target: text(reader.get_target())?,
    })
}

fn read_event(reader: plugin_event::Reader<'_>) -> Result<PluginEvent> {
    let entries = reader.get_state_entries()?;
    let first = entries.iter().next().map(|entry| entry.has_key());
    message::refuse_textless_elements(entries.len(), first, "state entries")?;
    let mut state_entries = Vec::new();
    for entry in entries {
        state_entries.push((text(entry.get_key())?, text(entry.get_value())?));
    }
    Ok(PluginEvent {
        sequence: reader.get_sequence(),
        aggregate_type: text(reader.get_aggregate_type())?,
        aggregate_id: text(reader.get_aggregate_id())?,
        event_type: text(reader.get_event_type())?,
        event_version: reader.get_event_version(),
        event_id: text(reader.get_event_id())?,
        created_at_epoch_micros: reader.get_created_at_epoch_micros(),
        payload_json: text(reader.get_payload_json())?,
        metadata_json: text(reader.get_metadata_json())?,
        hash: text(reader.get_hash())?,
        merkle_root: text(reader.get_merkle_root())?,
        state_version: reader.get_state_version(),
        state_archived: reader.get_state_archived(),
        state_merkle_root: text(reader.get_state_merkle_root())?,
        state_entries,
        schema_json: text(reader.get_schema_json())?,
        extensions_json: text(reader.get_extensions_json())?,
    })
}

/// A text field as a `String`; a null pointer reads as empty.
fn text(field: capnp::Result<capnp::text::Reader<'_>>) -> Result<String> {
    Ok(field?.to_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: u64) -> PluginEvent {
        PluginEvent {
            sequence,
            aggregate_type: "order".into(),
            aggregate_id: "o-1".into(),
            event_type: "placed".into(),
            event_version: 3,
            event_id: "7215112345678901234".into(),
            created_at_epoch_micros: -5,
            payload_json: r#"{"total":12}"#.into(),
            metadata_json: "{}".into(),
            hash: "ab".into(),
            merkle_root: "cd".into(),
            state_version: 3,
            state_archived: true,
            state_merkle_root: "ef".into(),
            state_entries: vec![
                ("total".into(), "12".into()),
                ("note".into(), "\"x\"".into()),
            ],
            schema_json: NULL_JSON.into(),
            extensions_json: NULL_JSON.into(),
        }
    }

    #[test]
    fn every_member_round_trips_as_one_segment_without_slack() {
        let envelopes = [
            PluginEnvelope::Init(PluginInit {
                plugin_name: "search".into(),
                version: "1.2.0".into(),
                target: "linux-x86_64".into(),
            }),
            PluginEnvelope::Event(event(9)),
            PluginEnvelope::Event(PluginEvent::default()),
            PluginEnvelope::Ack { sequence: u64::MAX },
            PluginEnvelope::Error {
                sequence: 1,
                message: "ü".repeat(3000),
            },
        ];
        for envelope in envelopes {
            let bytes = encode_envelope(&envelope);
            assert_eq!(&bytes[..4], &[0, 0, 0, 0], "one segment: {envelope:?}");
            let words = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
            assert_eq!(8 + words * 8, bytes.len(), "table matches body");
            assert_eq!(decode_envelope(&bytes).expect("decode"), envelope);
        }
    }

    #[test]
    fn the_size_estimate_is_exact_for_events() {
        // Exactness keeps the first segment from growing (and the message from being copied).
        let event = event(1);
        let bytes = encode_envelope(&PluginEnvelope::Event(event.clone()));
        assert_eq!(bytes.len(), 8 + (3 + event_words(&event)) * 8);
    }

    #[test]
    fn decoder_takes_bytes_one_at_a_time() {
        let mut stream = Vec::new();
        for sequence in 0..3 {
            stream.extend(encode_envelope(&PluginEnvelope::Event(event(sequence))));
        }
        let mut decoder = EnvelopeDecoder::new(MAX_EVENT_BYTES);
        let mut seen = Vec::new();
        for byte in &stream {
            let completed = decoder.feed(std::slice::from_ref(byte)).expect("feed");
            // At a boundary exactly when this byte completed a message.
            assert_eq!(decoder.is_at_boundary(), !completed.is_empty());
            seen.extend(completed);
        }
        assert!(decoder.is_at_boundary());
        let sequences: Vec<u64> = seen
            .iter()
            .map(|envelope| match envelope {
                PluginEnvelope::Event(event) => event.sequence,
                other => panic!("not an event: {other:?}"),
            })
            .collect();
        assert_eq!(sequences, [0, 1, 2]);
    }

    #[test]
    fn a_half_message_is_not_a_boundary() {
        let bytes = encode_envelope(&PluginEnvelope::Ack { sequence: 1 });
        let mut decoder = EnvelopeDecoder::new(MAX_ACK_BYTES);
        assert!(decoder.feed(&bytes[..9]).expect("feed").is_empty());
        assert!(!decoder.is_at_boundary());
        assert_eq!(decoder.feed(&bytes[9..]).expect("feed").len(), 1);
        assert!(decoder.is_at_boundary());
    }

    #[test]
    fn oversized_messages_are_refused_from_the_segment_table() {
        let bytes = encode_envelope(&PluginEnvelope::Error {
            sequence: 1,
            message: "x".repeat(4096),
        });
        let mut decoder = EnvelopeDecoder::new(1024);
        let err = decoder.feed(&bytes[..8]).expect_err("too large");
        assert!(
            matches!(err, ProtoError::MessageTooLarge { limit: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn state_entries_of_empty_structs_are_refused() {
        let mut bytes = encode_envelope(&PluginEnvelope::Event(event(1)));
        // The two entries' tag (two elements of no data word and two pointers), rewritten to a
        // million entries that take no space: each would still cost two strings.
        let tag = [8, 0, 0, 0, 0, 0, 2, 0];
        let at = bytes.windows(8).position(|w| w == tag).expect("tag");
        bytes[at..at + 4].copy_from_slice(&(1_000_000u32 << 2).to_le_bytes());
        bytes[at + 4..at + 8].fill(0);
        // Not `expect_err`: its message would print the million entries.
        let Err(err) = decode_envelope(&bytes) else {
            panic!("a million empty state entries decoded");
        };
        assert!(
            err.to_string()
                .contains("1000000 state entries without their text"),
            "{err}"
        );
    }

    #[test]
    fn unknown_members_are_malformed() {
        let mut bytes = encode_envelope(&PluginEnvelope::Ack { sequence: 1 });
        // Envelope data word starts after the table (8) and the root pointer (8): tag 4 is unknown.
        bytes[16] = 4;
        let err = decode_envelope(&bytes).expect_err("unknown member");
        assert!(
            err.to_string().contains("unknown PluginEnvelope member 4"),
            "{err}"
        );
    }
}
