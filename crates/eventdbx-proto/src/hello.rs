//! The hello exchange: `ControlHello` (client to server) and `ControlHelloResponse` (server to
//! client), each one raw stream message with **no length prefix** (`docs/protocol.md`, "Hello").
//!
//! Read either side's message from a socket with [`StreamMessageReader`] (limit
//! [`MAX_HELLO_BYTES`]), which finds its end from the segment table.
//!
//! ```
//! use eventdbx_proto::hello::{Hello, HelloResponse};
//!
//! let hello = Hello { protocol_version: 1, token: "tok".into(), tenant_id: "default".into(), no_noise: false };
//! let bytes = hello.encode();
//! assert_eq!(bytes.len(), 56);
//! assert_eq!(Hello::decode(&bytes)?, hello);
//!
//! let response = HelloResponse::decode(&HelloResponse::ok(false).encode())?;
//! assert!(response.accepted && response.message == "ok");
//! # Ok::<(), eventdbx_proto::ProtoError>(())
//! ```

use std::fmt;

use capnp::message::{Builder, HeapAllocator};

use crate::message::{self, OwnedMessage};
use crate::schema::control_capnp::{
    cli_request, cli_response, control_hello, control_hello_response, control_hello_response_v1,
};
use crate::{ProtoError, Result};

pub use crate::message::StreamMessageReader;

/// Largest hello or hello response we read (segment table included).
///
/// A real hello holds a token of a few hundred bytes; refusing more keeps an unauthenticated peer
/// from making the server buffer megabytes before it has said who it is.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// The `stderr` of the [`cli_rejection`] response.
pub const CLI_REJECTION_MESSAGE: &str = "remote CLI execution is not supported by this server";

/// A `ControlHello`, as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// `1` for protocol v1, `2` for our protocol v2.
    pub protocol_version: u16,
    /// The bearer token (v1), sent as given: callers trim it first. Empty in a v2 hello.
    pub token: String,
    /// The tenant to open; empty means the server's default tenant.
    pub tenant_id: String,
    /// True asks for a plaintext session.
    pub no_noise: bool,
}

impl Hello {
    /// Encodes the hello as a single-segment stream message without a length prefix.
    ///
    /// The token pointer is never null, even for an empty token: the reference server would take a
    /// hello with a null token for a CLI-proxy request (`docs/protocol.md`, "Hello").
    pub fn encode(&self) -> Vec<u8> {
        // Root pointer, one data word, two pointers, then the two texts.
        let words = 1 + 1 + 2 + text_words(&self.token) + text_words(&self.tenant_id);
        let mut message = message_with_room(words);
        let mut hello = message.init_root::<control_hello::Builder<'_>>();
        hello.set_protocol_version(self.protocol_version);
        hello.set_token(self.token.as_str());
        hello.set_tenant_id(self.tenant_id.as_str());
        hello.set_no_noise(self.no_noise);
        capnp::serialize::write_message_to_words(&message)
    }

    /// Decodes a hello, failing on unreadable or non-UTF-8 text.
    ///
    /// A server classifies the first message with [`classify_first_message`] instead, which keeps
    /// the version when a text field is bad (the hello decision order needs it).
    pub fn decode(bytes: &[u8]) -> Result<Hello> {
        let received = ReceivedHello::read(&message::decode(bytes)?)?;
        Ok(Hello {
            protocol_version: received.protocol_version,
            token: received.token.map_err(ProtoError::from)?,
            tenant_id: received.tenant_id.map_err(ProtoError::from)?,
            no_noise: received.no_noise,
        })
    }
}

/// A `ControlHelloResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelloResponse {
    /// True when the session is open.
    pub accepted: bool,
    /// `"ok"` on success, otherwise the rejection message.
    pub message: String,
    /// The negotiated value: true means the session is plaintext. Set on rejections too.
    pub no_noise: bool,
    /// Our extension (`docs/protocol.md`, "Our extensions"): what the server honours. Empty from
    /// the reference.
    pub capabilities: Vec<String>,
}

impl HelloResponse {
    /// An acceptance (`"ok"`) with the negotiated `no_noise` and no capabilities.
    pub fn ok(no_noise: bool) -> Self {
        HelloResponse {
            accepted: true,
            message: "ok".into(),
            no_noise,
            capabilities: Vec::new(),
        }
    }

    /// A rejection carrying `message`.
    pub fn rejected(message: impl Into<String>, no_noise: bool) -> Self {
        HelloResponse {
            accepted: false,
            message: message.into(),
            no_noise,
            capabilities: Vec::new(),
        }
    }

    /// Encodes the response as a single-segment stream message without a length prefix.
    ///
    /// Without capabilities the struct has the reference's one pointer, so the bytes are exactly
    /// the reference's; with capabilities it has our second pointer.
    pub fn encode(&self) -> Vec<u8> {
        if self.capabilities.is_empty() {
            let words = 1 + 1 + 1 + text_words(&self.message);
            let mut message = message_with_room(words);
            let mut response = message.init_root::<control_hello_response_v1::Builder<'_>>();
            response.set_accepted(self.accepted);
            response.set_message(self.message.as_str());
            response.set_no_noise(self.no_noise);
            return capnp::serialize::write_message_to_words(&message);
        }
        let capability_words: usize = self.capabilities.iter().map(|c| 1 + text_words(c)).sum();
        let words = 1 + 1 + 2 + text_words(&self.message) + capability_words;
        let mut message = message_with_room(words);
        let mut response = message.init_root::<control_hello_response::Builder<'_>>();
        response.set_accepted(self.accepted);
        response.set_message(self.message.as_str());
        response.set_no_noise(self.no_noise);
        let count = u32::try_from(self.capabilities.len()).unwrap_or(u32::MAX);
        let mut list = response.init_capabilities(count);
        for (index, capability) in (0..count).zip(&self.capabilities) {
            list.set(index, capability.as_str());
        }
        capnp::serialize::write_message_to_words(&message)
    }

    /// Decodes a response; reads both the reference's one-pointer and our two-pointer layout.
    pub fn decode(bytes: &[u8]) -> Result<HelloResponse> {
        let message = message::decode(bytes)?;
        let response = message.get_root::<control_hello_response::Reader<'_>>()?;
        let capabilities = response
            .get_capabilities()?
            .iter()
            .map(|capability| Ok(capability?.to_str()?.to_owned()))
            .collect::<Result<Vec<_>>>()?;
        Ok(HelloResponse {
            accepted: response.get_accepted(),
            message: response.get_message()?.to_str()?.to_owned(),
            no_noise: response.get_no_noise(),
            capabilities,
        })
    }
}

/// What the first message on a control connection is, as the server sees it (`docs/protocol.md`,
/// "First message").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstMessage {
    /// A `ControlHello` (anything that is not a CLI-proxy request).
    Hello(ReceivedHello),
    /// A reference CLI-proxy request: pointer 0 is a non-empty `List(Text)`. Answer it with
    /// [`cli_rejection`] and close; never run anything.
    CliRequest,
}

/// A hello as received, with each text field's read kept apart.
///
/// The server checks the version before it looks at the token and the tenant (`docs/protocol.md`,
/// "Hello decision order"), so a bad token must not hide the version; the server then turns a
/// field's [`HelloTextError`] into its rejection message. Fields are not trimmed here: trimming is
/// the server's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedHello {
    /// The requested protocol version.
    pub protocol_version: u16,
    /// The token; a null pointer reads as `""`.
    pub token: std::result::Result<String, HelloTextError>,
    /// The tenant id; a null pointer reads as `""`.
    pub tenant_id: std::result::Result<String, HelloTextError>,
    /// True when the client asks for plaintext.
    pub no_noise: bool,
}

impl ReceivedHello {
    fn read(message: &OwnedMessage) -> Result<ReceivedHello> {
        let hello = message.get_root::<control_hello::Reader<'_>>()?;
        Ok(ReceivedHello {
            protocol_version: hello.get_protocol_version(),
            token: read_text(hello.get_token(), HelloField::Token),
            tenant_id: read_text(hello.get_tenant_id(), HelloField::TenantId),
            no_noise: hello.get_no_noise(),
        })
    }
}

/// A text field of the hello (named as in the rejection messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloField {
    /// `token`, "control token" in messages.
    Token,
    /// `tenantId`, "control tenant id" in messages.
    TenantId,
}

impl fmt::Display for HelloField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HelloField::Token => "control token",
            HelloField::TenantId => "control tenant id",
        })
    }
}

/// Why a text field of the hello could not be read. Its display text is the server's rejection
/// message of step 0 of the hello decision order, e.g. `invalid UTF-8 in control token: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloTextError {
    /// The pointer is not a valid text (wrong kind, out of bounds, no NUL terminator).
    #[error("failed to read {field}: {detail}")]
    Read {
        /// The field.
        field: HelloField,
        /// The decoder's description.
        detail: String,
    },
    /// The text is not UTF-8.
    #[error("invalid UTF-8 in {field}: {detail}")]
    Utf8 {
        /// The field.
        field: HelloField,
        /// The decoder's description.
        detail: String,
    },
}

impl From<HelloTextError> for ProtoError {
    fn from(err: HelloTextError) -> Self {
        ProtoError::Malformed(err.to_string())
    }
}

/// Classifies the first message of a connection, as our server does.
///
/// A non-empty pointer list at pointer 0 is a CLI-proxy request; anything else is a hello, so a
/// null token pointer gives a hello with an empty token. Errors are for bytes that are not a stream
/// message with a struct root.
pub fn classify_first_message(bytes: &[u8]) -> Result<FirstMessage> {
    let message = message::decode(bytes)?;
    let as_cli = message.get_root::<cli_request::Reader<'_>>()?;
    // A text (byte list) at pointer 0 fails to read as a list of pointers; only a real pointer
    // list with elements counts, so that odd or empty hellos still get a hello response.
    if as_cli.get_args().is_ok_and(|args| !args.is_empty()) {
        return Ok(FirstMessage::CliRequest);
    }
    Ok(FirstMessage::Hello(ReceivedHello::read(&message)?))
}

/// The `CliResponse` our server sends to a CLI-proxy request before closing: `exitCode = -1`,
/// empty `stdout`, `stderr` = [`CLI_REJECTION_MESSAGE`].
pub fn cli_rejection() -> Vec<u8> {
    let words = 1 + 1 + 2 + text_words("") + text_words(CLI_REJECTION_MESSAGE);
    let mut message = message_with_room(words);
    let mut response = message.init_root::<cli_response::Builder<'_>>();
    response.set_exit_code(-1);
    response.set_stdout("");
    response.set_stderr(CLI_REJECTION_MESSAGE);
    capnp::serialize::write_message_to_words(&message)
}

/// Reads a hello text field, telling a bad pointer from bad UTF-8.
fn read_text(
    text: capnp::Result<capnp::text::Reader<'_>>,
    field: HelloField,
) -> std::result::Result<String, HelloTextError> {
    let text = text.map_err(|err| HelloTextError::Read {
        field,
        detail: err.to_string(),
    })?;
    let text = text.to_str().map_err(|err| HelloTextError::Utf8 {
        field,
        detail: err.to_string(),
    })?;
    Ok(text.to_owned())
}

/// Words a `Text` of `text` takes: its bytes and the NUL, rounded up to whole words.
fn text_words(text: &str) -> usize {
    (text.len() + 1).div_ceil(8)
}

/// A builder whose first segment holds `words` words, so a message of at most that size is
/// encoded as one segment (the protocol's rule) without the copy a grown message needs.
fn message_with_room(words: usize) -> Builder<HeapAllocator> {
    let words = u32::try_from(words).unwrap_or(u32::MAX);
    Builder::new(HeapAllocator::new().first_segment_words(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_hellos_are_one_segment() {
        let hello = Hello {
            protocol_version: 1,
            token: "t".repeat(20_000),
            tenant_id: "tenant".into(),
            no_noise: true,
        };
        let bytes = hello.encode();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(Hello::decode(&bytes).expect("decode"), hello);
    }

    #[test]
    fn responses_with_capabilities_round_trip() {
        let response = HelloResponse {
            capabilities: vec!["expected_version".into(), "idempotency_key".into()],
            ..HelloResponse::ok(true)
        };
        let bytes = response.encode();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(HelloResponse::decode(&bytes).expect("decode"), response);
    }

    #[test]
    fn text_errors_name_the_field() {
        let err = HelloTextError::Utf8 {
            field: HelloField::TenantId,
            detail: "x".into(),
        };
        assert_eq!(err.to_string(), "invalid UTF-8 in control tenant id: x");
        let err = HelloTextError::Read {
            field: HelloField::Token,
            detail: "y".into(),
        };
        assert_eq!(err.to_string(), "failed to read control token: y");
    }

    #[test]
    fn the_cli_rejection_reads_back() {
        let bytes = cli_rejection();
        let message = message::decode(&bytes).expect("decode");
        let response = message
            .get_root::<cli_response::Reader<'_>>()
            .expect("root");
        assert_eq!(response.get_exit_code(), -1);
        assert_eq!(
            response.get_stdout().expect("stdout").to_str().ok(),
            Some("")
        );
        assert_eq!(
            response.get_stderr().expect("stderr").to_str().ok(),
            Some(CLI_REJECTION_MESSAGE)
        );
    }
}
