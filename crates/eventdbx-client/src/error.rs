//! The client's one error type: opaque, with accessors (after `tokio-postgres`).

use std::fmt;

/// The code a server answers when its storage could not be reached and did nothing: the same
/// request may be sent again as it is, even a write (`docs/errors.md`, `unavailable`).
/// EventDBX's own server never sends it; our server does on the PostgreSQL engine.
const UNAVAILABLE: &str = "unavailable";

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The socket failed: refused, reset, EOF. Retriable.
    Connection,
    /// Connecting or a request took longer than its timeout. Retriable.
    Timeout,
    /// The hello was rejected, the Noise handshake failed, plaintext was refused or the pinned
    /// server key did not match. Not retriable.
    Handshake,
    /// The server's reply could not be decoded or did not match the request. Retriable (the
    /// connection is discarded first).
    Protocol,
    /// The request is larger than the transport can carry; nothing was sent.
    RequestTooLarge,
    /// The server lacks a request or capability the call needs.
    Unsupported,
    /// A client-side argument check failed before any I/O.
    InvalidArgument,
    /// The server answered with an `error` response; [`Error::code`] is its code.
    Server,
    /// The client was closed with [`Client::close`](crate::Client::close).
    Closed,
}

impl ErrorKind {
    /// The code string of a client-side kind (`Server` errors carry the server's own code).
    fn code(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Protocol => "protocol",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Server => "server",
            ErrorKind::Closed => "closed",
        }
    }
}

/// An error of the EventDBX client.
///
/// Opaque on purpose: match on [`kind`](Error::kind) or [`code`](Error::code) and ask the
/// predicates ([`is_retriable`](Error::is_retriable), [`is_timeout`](Error::is_timeout),
/// [`is_closed`](Error::is_closed)). `Display` shows the code and the message, e.g.
/// `aggregate_not_found: aggregate not found`.
#[derive(Clone)]
pub struct Error(Box<Inner>);

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    code: Option<String>,
    message: String,
    /// The request provably never left the client (no byte of it was written).
    unsent: bool,
    /// A handshake failure caused by the token (rejected or wrong).
    token_rejected: bool,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            code: None,
            message: message.into(),
            unsent: matches!(
                kind,
                ErrorKind::RequestTooLarge
                    | ErrorKind::InvalidArgument
                    | ErrorKind::Unsupported
                    | ErrorKind::Closed
            ),
            token_rejected: false,
        }))
    }

    pub(crate) fn server(code: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Error::new(ErrorKind::Server, message);
        error.0.code = Some(code.into());
        error
    }

    pub(crate) fn connection(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Connection, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn handshake(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Handshake, message)
    }

    pub(crate) fn argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn closed() -> Self {
        Error::new(ErrorKind::Closed, "client is closed")
    }

    pub(crate) fn too_large(len: usize, limit: usize) -> Self {
        Error::new(
            ErrorKind::RequestTooLarge,
            format!("request too large ({len} > {limit} bytes)"),
        )
    }

    pub(crate) fn io(context: &str, err: &std::io::Error) -> Self {
        Error::connection(format!("{context}: {err}"))
    }

    /// Marks the error as happening before any byte of the request was written.
    pub(crate) fn unsent(mut self, unsent: bool) -> Self {
        self.0.unsent = unsent;
        self
    }

    pub(crate) fn with_token_rejected(mut self) -> Self {
        self.0.token_rejected = true;
        self
    }

    /// True when the request provably had no effect: it never left the client, or the server
    /// answered `unavailable` (its storage did nothing). Sending it again cannot apply it twice.
    pub(crate) fn had_no_effect(&self) -> bool {
        self.0.unsent || self.is_unavailable()
    }

    /// The server answered `unavailable`.
    fn is_unavailable(&self) -> bool {
        self.0.kind == ErrorKind::Server && self.0.code.as_deref() == Some(UNAVAILABLE)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The code: the server's code string (`aggregate_not_found`, `version_conflict`, …) for
    /// [`ErrorKind::Server`], otherwise the kind's code (`connection`, `timeout`, `handshake`,
    /// `protocol`, `request_too_large`, `unsupported`, `invalid_argument`, `closed`).
    pub fn code(&self) -> &str {
        self.0.code.as_deref().unwrap_or_else(|| self.0.kind.code())
    }

    /// The message: the server's text for server errors, otherwise a description.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// True for failures that a retry may cure: transport-level ones (connection loss,
    /// timeouts, undecodable or mismatched replies; retried on a fresh connection), and the
    /// server's `unavailable` (its storage could not be reached and did nothing; retried on the
    /// same connection). Every other answer of the server is final.
    pub fn is_retriable(&self) -> bool {
        match self.0.kind {
            ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Protocol => true,
            ErrorKind::Server => self.is_unavailable(),
            _ => false,
        }
    }

    /// True when connecting or the request timed out.
    pub fn is_timeout(&self) -> bool {
        self.0.kind == ErrorKind::Timeout
    }

    /// True when the client was closed.
    pub fn is_closed(&self) -> bool {
        self.0.kind == ErrorKind::Closed
    }

    /// True when the handshake failed because of the token (rejected by the server, or a wrong
    /// token that failed the Noise handshake).
    pub fn is_token_rejected(&self) -> bool {
        self.0.token_rejected
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.0.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("code", &self.code())
            .field("message", &self.0.message)
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<capnp::Error> for Error {
    fn from(err: capnp::Error) -> Self {
        Error::protocol(format!("undecodable reply: {err}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(err: std::str::Utf8Error) -> Self {
        Error::protocol(format!("invalid UTF-8 in reply: {err}"))
    }
}

impl From<capnp::NotInSchema> for Error {
    fn from(err: capnp::NotInSchema) -> Self {
        Error::protocol(format!("unknown reply member: {err}"))
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_the_one_retriable_server_answer_and_had_no_effect() {
        let unavailable = Error::server("unavailable", "unavailable: cannot reach the database");
        assert!(unavailable.is_retriable());
        assert!(unavailable.had_no_effect());
        assert!(!unavailable.0.unsent);
        // An unknown outcome, and every other answer of the server, stays final.
        for code in [
            "storage",
            "version_conflict",
            "aggregate_not_found",
            "server",
        ] {
            let answer = Error::server(code, "storage error: the outcome is unknown");
            assert!(!answer.is_retriable(), "{code}");
            assert!(!answer.had_no_effect(), "{code}");
        }
        // A client-side kind whose code string happens to read `unavailable` is not the answer.
        let lost = Error::connection("unavailable");
        assert!(lost.is_retriable() && !lost.had_no_effect());
    }
}
