//! Whole Cap'n Proto stream messages: encoding, decoding with reader limits, and finding where a
//! message ends in a byte stream.
//!
//! Every message of the protocol (hello, hello response, each request and response) is one
//! standard, unpacked stream message (`docs/protocol.md`, "Message encoding"):
//!
//! ```text
//! u32 LE  segment count - 1
//! u32 LE  size of each segment, in 8-byte words
//! [4 zero bytes when the segment count is even, so the table ends on a word boundary]
//! the segments
//! ```
//!
//! We always send a single segment and accept several. Decoding never panics, whatever the bytes:
//! it returns [`ProtoError::Truncated`], [`ProtoError::MessageTooLarge`] or
//! [`ProtoError::Malformed`].
//!
//! ```
//! use eventdbx_proto::message;
//!
//! let bytes = message::encode_request(|mut request| {
//!     request.set_id(7);
//!     let mut verify = request.init_payload().init_verify_aggregate();
//!     verify.set_aggregate_type("order");
//!     verify.set_aggregate_id("o-1");
//!     Ok(())
//! })?;
//! assert_eq!(bytes.len(), 72);
//!
//! let decoded = message::decode_request(&bytes)?;
//! assert_eq!(decoded.get()?.get_id(), 7);
//! # Ok::<(), eventdbx_proto::ProtoError>(())
//! ```

use capnp::message::{Builder, HeapAllocator, ReaderOptions, TypedReader};
use capnp::serialize::OwnedSegments;
use capnp::traits::Owned;

use crate::schema::control_capnp::{control_request, control_response};
use crate::{ProtoError, Result};

/// Words a reader may traverse in one message: the reference's (capnp's default) 8 Mi words.
pub const TRAVERSAL_LIMIT_WORDS: usize = 8 * 1024 * 1024;

/// How deeply structs and lists may nest: the reference's (capnp's default) 64.
pub const NESTING_LIMIT: i32 = 64;

/// Segment counts at or above this are rejected, as the capnp reader does ("too many segments").
///
/// Checking it ourselves, before anything is allocated, turns a hostile segment table (or the
/// reference Python SDK's length prefix, read as a segment count) into a typed error at once.
pub const SEGMENT_LIMIT: usize = 512;

/// Largest message [`decode`] accepts, segment table included: the traversal limit in bytes.
///
/// A larger message could not be traversed anyway; refusing it early bounds the allocation.
pub const MAX_MESSAGE_BYTES: usize = TRAVERSAL_LIMIT_WORDS * 8;

/// A decoded message that owns its (8-byte aligned) segments.
pub type OwnedMessage = capnp::message::Reader<OwnedSegments>;

/// A decoded message whose root is read as `T`; call `.get()` for the root reader.
pub type Decoded<T> = TypedReader<OwnedSegments, T>;

/// The reader limits of this protocol: [`TRAVERSAL_LIMIT_WORDS`] and [`NESTING_LIMIT`].
pub fn reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(TRAVERSAL_LIMIT_WORDS))
        .nesting_limit(NESTING_LIMIT);
    options
}

/// What a byte prefix says about the stream message it starts with (see [`message_length`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageLength {
    /// At least this many more bytes are needed before anything more can be said. Reading exactly
    /// this many never reads past the end of the message.
    NeedMore(usize),
    /// The prefix holds a complete message of this many bytes (segment table included); any bytes
    /// after it belong to whatever follows on the stream.
    Complete(usize),
}

/// Finds the length of the stream message at the start of `prefix`, from its segment table.
///
/// This is what lets a hello be read from a socket without a length prefix and without reading a
/// byte past it. Errors: [`ProtoError::Malformed`] for a segment count of zero (a wrapped
/// `0xFFFFFFFF`) or at least [`SEGMENT_LIMIT`], [`ProtoError::MessageTooLarge`] when the table
/// announces more than `max_bytes` bytes. Both are reported as soon as the table shows them.
pub fn message_length(prefix: &[u8], max_bytes: usize) -> Result<MessageLength> {
    // The shortest possible segment table is one word (count and one size).
    const MIN_TABLE_BYTES: usize = 8;
    let Some(count_minus_one) = read_u32_le(prefix, 0) else {
        return Ok(MessageLength::NeedMore(MIN_TABLE_BYTES - prefix.len()));
    };
    // u64 arithmetic: `count_minus_one + 1` and the byte counts below cannot overflow it.
    let segment_count = u64::from(count_minus_one) + 1;
    if segment_count >= SEGMENT_LIMIT as u64 {
        return Err(ProtoError::Malformed(format!(
            "too many segments: {segment_count} (limit {})",
            SEGMENT_LIMIT - 1
        )));
    }
    // 4 bytes of count plus 4 per segment, padded to a whole word.
    let table_bytes = (4 + 4 * segment_count).div_ceil(8) * 8;
    let table_bytes = to_usize(table_bytes);
    if prefix.len() < table_bytes {
        return Ok(MessageLength::NeedMore(table_bytes - prefix.len()));
    }
    let mut body_words: u64 = 0;
    for index in 0..to_usize(segment_count) {
        let size = read_u32_le(prefix, 4 + 4 * index).map_or(0, u64::from);
        body_words += size;
    }
    let total = table_bytes as u64 + body_words * 8;
    if total > max_bytes as u64 {
        return Err(ProtoError::MessageTooLarge {
            len: to_usize(total),
            limit: max_bytes,
        });
    }
    let total = to_usize(total);
    Ok(if prefix.len() < total {
        MessageLength::NeedMore(total - prefix.len())
    } else {
        MessageLength::Complete(total)
    })
}

/// Collects one stream message from a byte stream, sans-IO: the caller reads, the reader counts.
///
/// The hello and the hello response have no length prefix, and the bytes after them on the
/// same stream belong to the next phase (the Noise handshake), so the reader never takes a byte
/// past the message. Reading exactly [`bytes_needed`](Self::bytes_needed) bytes at a time and
/// feeding them never over-reads:
///
/// ```
/// use eventdbx_proto::hello::{Hello, MAX_HELLO_BYTES};
/// use eventdbx_proto::message::StreamMessageReader;
///
/// let mut stream: &[u8] = &Hello { protocol_version: 1, token: "tok".into(), ..Hello::default() }.encode();
/// let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
/// while reader.bytes_needed() > 0 {
///     let n = reader.bytes_needed().min(stream.len()); // a socket's read_exact in real code
///     let (chunk, rest) = stream.split_at(n);
///     reader.feed(chunk)?;
///     stream = rest;
/// }
/// let hello = Hello::decode(reader.message().expect("complete"))?;
/// assert_eq!(hello.token, "tok");
/// # Ok::<(), eventdbx_proto::ProtoError>(())
/// ```
///
/// After an error the stream is out of step: drop the reader and the connection.
#[derive(Debug, Clone)]
pub struct StreamMessageReader {
    buffer: Vec<u8>,
    max_bytes: usize,
    /// Bytes still needed; 0 once the message is complete.
    needed: usize,
}

impl StreamMessageReader {
    /// A reader for one message of at most `max_bytes` bytes (segment table included).
    pub fn new(max_bytes: usize) -> Self {
        let needed = match message_length(&[], max_bytes) {
            Ok(MessageLength::NeedMore(n)) => n,
            // An empty prefix always needs more; keep the type total rather than trust that.
            Ok(MessageLength::Complete(_)) | Err(_) => 8,
        };
        StreamMessageReader {
            buffer: Vec::new(),
            max_bytes,
            needed,
        }
    }

    /// How many more bytes the reader needs before it can tell more (0 once complete). Feeding
    /// exactly this many never reads past the end of the message.
    pub fn bytes_needed(&self) -> usize {
        self.needed
    }

    /// Appends bytes from `input`, never more than the message still needs, and returns how many
    /// it took; the rest of `input` belongs to what follows the message on the stream.
    ///
    /// Errors as [`message_length`]: too many segments, or a message over the limit (reported as
    /// soon as the segment table shows it, before the body is buffered).
    pub fn feed(&mut self, mut input: &[u8]) -> Result<usize> {
        let mut taken = 0;
        while self.needed > 0 && !input.is_empty() {
            let n = self.needed.min(input.len());
            let (chunk, rest) = input.split_at(n);
            self.buffer.extend_from_slice(chunk);
            input = rest;
            taken += n;
            self.needed = match message_length(&self.buffer, self.max_bytes)? {
                MessageLength::NeedMore(n) => n,
                MessageLength::Complete(_) => 0,
            };
        }
        Ok(taken)
    }

    /// The complete message, once [`bytes_needed`](Self::bytes_needed) is 0.
    pub fn message(&self) -> Option<&[u8]> {
        (self.needed == 0).then_some(self.buffer.as_slice())
    }

    /// Takes the complete message out of the reader, or `None` while it is incomplete.
    pub fn into_message(self) -> Option<Vec<u8>> {
        (self.needed == 0).then_some(self.buffer)
    }
}

/// Refuses a list of structs whose first element lacks the text every element of it must hold.
///
/// Cap'n Proto lets a list of empty structs announce millions of elements in a few bytes, and
/// reads a list of bytes or numbers as structs of their width, while each element costs the
/// decoder a whole value: a 216-byte `appendEvent` decoded into 8 million publish targets (560
/// MB and 2 s) before its token was looked at. Such elements have no pointer section, so their
/// text is missing. The elements of one list share their layout: when the first has its text,
/// every element takes at least a word of the message, and the list costs what it weighs.
pub(crate) fn refuse_textless_elements(
    len: u32,
    first_has_text: Option<bool>,
    what: &str,
) -> Result<()> {
    match first_has_text {
        Some(false) => Err(ProtoError::Malformed(format!(
            "{len} {what} without their text (a list of data-only structs)"
        ))),
        _ => Ok(()),
    }
}

/// Decodes the stream message at the start of `bytes`, with [`reader_options`].
///
/// Bytes after the message are ignored, as the reference's reader does. The segments are copied
/// into aligned memory, so `bytes` may sit at any address. Errors: [`ProtoError::Truncated`] when
/// `bytes` ends inside the message; otherwise those of [`message_length`] with
/// [`MAX_MESSAGE_BYTES`]. Pointers are checked lazily: a bad pointer deep inside the message is
/// reported (as [`ProtoError::Malformed`], through `?`) by the accessor that follows it.
pub fn decode(bytes: &[u8]) -> Result<OwnedMessage> {
    let len = match message_length(bytes, MAX_MESSAGE_BYTES)? {
        MessageLength::Complete(len) => len,
        MessageLength::NeedMore(_) => return Err(ProtoError::Truncated("stream message")),
    };
    let mut body = bytes.get(..len).unwrap_or(bytes);
    Ok(capnp::serialize::read_message(&mut body, reader_options())?)
}

/// Decodes a message whose root is a `T` struct and checks that the root pointer reads as one.
pub fn decode_as<T: Owned>(bytes: &[u8]) -> Result<Decoded<T>> {
    let decoded = Decoded::<T>::new(decode(bytes)?);
    // Touch the root now so that a root pointer of the wrong kind or out of bounds is an error of
    // decoding, not a surprise at the caller's first `.get()`.
    decoded.get()?;
    Ok(decoded)
}

/// Builds a message whose root is a `T` struct and serializes it as one single-segment, unpacked
/// stream message.
///
/// `build` receives the freshly initialised root. Errors are those `build` returns (any
/// `capnp::Error` converts with `?`).
pub fn encode<T, F>(build: F) -> Result<Vec<u8>>
where
    T: Owned,
    F: for<'a> FnOnce(T::Builder<'a>) -> Result<()>,
{
    let mut message = Builder::new_default();
    build(message.init_root::<T::Builder<'_>>())?;
    single_segment_bytes(&message)
}

/// Builds and serializes a [`control_request`]; see [`encode`].
pub fn encode_request<F>(build: F) -> Result<Vec<u8>>
where
    F: for<'a> FnOnce(control_request::Builder<'a>) -> Result<()>,
{
    encode::<control_request::Owned, F>(build)
}

/// Builds and serializes a [`control_response`]; see [`encode`].
pub fn encode_response<F>(build: F) -> Result<Vec<u8>>
where
    F: for<'a> FnOnce(control_response::Builder<'a>) -> Result<()>,
{
    encode::<control_response::Owned, F>(build)
}

/// Decodes a [`control_request`]; see [`decode_as`].
///
/// An unknown union member is not an error here: `payload().which()` reports it, and the server
/// answers it with a `serialization` error response.
pub fn decode_request(bytes: &[u8]) -> Result<Decoded<control_request::Owned>> {
    decode_as(bytes)
}

/// Decodes a [`control_response`]; see [`decode_as`].
pub fn decode_response(bytes: &[u8]) -> Result<Decoded<control_response::Owned>> {
    decode_as(bytes)
}

/// Serializes `message` as a stream message with exactly one segment.
///
/// The builder starts with a 1024-word segment and adds segments as a message grows past it. The
/// protocol says senders emit one segment, so a grown message is deep-copied into a builder whose
/// first segment is large enough for all of it (the copy keeps every struct's size, so the layout
/// seen by readers is unchanged).
pub(crate) fn single_segment_bytes(message: &Builder<HeapAllocator>) -> Result<Vec<u8>> {
    if message.get_segments_for_output().len() <= 1 {
        return Ok(capnp::serialize::write_message_to_words(message));
    }
    // The serialized size (segment table included) bounds the words of the copy.
    let words = capnp::serialize::compute_serialized_size_in_words(message);
    let words = u32::try_from(words).map_err(|_| ProtoError::MessageTooLarge {
        len: words.saturating_mul(8),
        limit: u32::MAX as usize,
    })?;
    let mut copy = Builder::new(HeapAllocator::new().first_segment_words(words));
    copy.set_root(message.get_root_as_reader::<capnp::any_pointer::Reader<'_>>()?)?;
    if copy.get_segments_for_output().len() != 1 {
        return Err(ProtoError::InvalidUse(
            "message did not fit a single segment after copying".into(),
        ));
    }
    Ok(capnp::serialize::write_message_to_words(&copy))
}

/// The little-endian u32 at `offset`, or `None` when `bytes` ends before it.
fn read_u32_le(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// Converts a byte count computed in u64 to usize, saturating on 32-bit targets (where such a
/// count is over every limit anyway).
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::control_capnp::control_error;

    #[test]
    fn length_of_a_prefix_grows_to_complete() {
        // One segment of 2 words: 8-byte table + 16 bytes.
        let mut message = vec![0, 0, 0, 0, 2, 0, 0, 0];
        message.extend_from_slice(&[0; 16]);
        assert_eq!(
            message_length(&[], 100).ok(),
            Some(MessageLength::NeedMore(8))
        );
        assert_eq!(
            message_length(&message[..3], 100).ok(),
            Some(MessageLength::NeedMore(5))
        );
        assert_eq!(
            message_length(&message[..8], 100).ok(),
            Some(MessageLength::NeedMore(16))
        );
        assert_eq!(
            message_length(&message, 100).ok(),
            Some(MessageLength::Complete(24))
        );
        message.push(0xff);
        assert_eq!(
            message_length(&message, 100).ok(),
            Some(MessageLength::Complete(24))
        );
    }

    #[test]
    fn two_segments_have_a_padded_table() {
        // count-1 = 1, sizes 1 and 2, then 4 bytes of padding: a 16-byte table.
        let table = [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            message_length(&table[..12], 100).ok(),
            Some(MessageLength::NeedMore(4))
        );
        assert_eq!(
            message_length(&table, 100).ok(),
            Some(MessageLength::NeedMore(24))
        );
    }

    #[test]
    fn absurd_segment_counts_are_rejected_from_the_first_four_bytes() {
        for count_minus_one in [u32::MAX, 511, 0x3800_0000] {
            let prefix = count_minus_one.to_le_bytes();
            let err = message_length(&prefix, usize::MAX).expect_err("must be rejected");
            assert!(err.to_string().contains("too many segments"), "{err}");
        }
        // 511 segments is the most the capnp reader takes.
        let prefix = 510u32.to_le_bytes();
        assert!(message_length(&prefix, usize::MAX).is_ok());
    }

    #[test]
    fn oversized_messages_are_rejected_before_their_body_arrives() {
        let table = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let err = message_length(&table, MAX_MESSAGE_BYTES).expect_err("too large");
        assert!(
            matches!(err, ProtoError::MessageTooLarge { len, .. } if len == 8 + 0xffff_ffff * 8)
        );
    }

    #[test]
    fn large_messages_are_sent_as_one_segment() {
        let message = "m".repeat(100_000);
        let bytes = encode_response(|mut response| {
            response.set_id(1);
            let mut error = response.init_payload().init_error();
            error.set_code("storage");
            error.set_message(message.as_str());
            Ok(())
        })
        .expect("encode");
        assert_eq!(&bytes[..4], &[0, 0, 0, 0], "segment count - 1");
        assert_eq!(
            message_length(&bytes, MAX_MESSAGE_BYTES).ok(),
            Some(MessageLength::Complete(bytes.len()))
        );
        let decoded = decode_response(&bytes).expect("decode");
        let root = decoded.get().expect("root");
        let control_response::payload::Which::Error(Ok(error)) =
            root.get_payload().which().expect("known member")
        else {
            panic!("not an error response");
        };
        let error: control_error::Reader<'_> = error;
        assert_eq!(
            error.get_message().expect("text").to_str().expect("utf-8"),
            message
        );
    }

    #[test]
    fn unaligned_input_decodes() {
        let bytes = encode_request(|mut request| {
            request.set_id(42);
            Ok(())
        })
        .expect("encode");
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let decoded = decode_request(&shifted[1..]).expect("decode");
        assert_eq!(decoded.get().expect("root").get_id(), 42);
    }

    #[test]
    fn truncated_messages_are_typed_errors() {
        let bytes = encode_request(|mut request| {
            request.set_id(42);
            Ok(())
        })
        .expect("encode");
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).err().expect("truncated");
            assert!(matches!(err, ProtoError::Truncated(_)), "{len}: {err}");
        }
    }
}
