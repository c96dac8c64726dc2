//! The error a request gets back: a stable code string and the spec's message.

use eventdbx_core::CoreError;
use eventdbx_store::StoreError;

use crate::auth::AuthError;

/// An error response (`ControlError { code, message }`); the session stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// Stable code (`docs/errors.md`).
    pub code: String,
    /// Display text, e.g. `invalid schema: ...`.
    pub message: String,
}

impl RequestError {
    /// An error with an explicit code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        RequestError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// `invalid_schema` with `invalid schema: <detail>`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        CoreError::invalid(detail).into()
    }

    /// `serialization` with `serialization error: <detail>`.
    pub fn serialization(detail: impl std::fmt::Display) -> Self {
        CoreError::Serialization(detail.to_string()).into()
    }

    /// `unauthorized`.
    pub fn unauthorized() -> Self {
        AuthError::Unauthorized.into()
    }

    /// `unsupported` with `unsupported: <detail>`: a request this session or server cannot
    /// serve (a subscription on protocol v1).
    pub fn unsupported(detail: impl std::fmt::Display) -> Self {
        RequestError::new("unsupported", format!("unsupported: {detail}"))
    }

    /// `protocol_error` with `protocol error: <detail>`: why a session is being closed (an
    /// unreadable frame or message), sent with request id 0 just before the close.
    pub fn protocol(detail: impl std::fmt::Display) -> Self {
        RequestError::new("protocol_error", format!("protocol error: {detail}"))
    }

    /// `response_too_large` for a response of `len` bytes over `limit`.
    pub fn too_large(len: usize, limit: usize) -> Self {
        RequestError::new(
            "response_too_large",
            format!("response too large: {len} bytes exceeds the {limit}-byte limit"),
        )
    }
}

impl From<CoreError> for RequestError {
    fn from(err: CoreError) -> Self {
        RequestError::new(err.code(), err.to_string())
    }
}

impl From<StoreError> for RequestError {
    fn from(err: StoreError) -> Self {
        RequestError::new(err.code(), err.to_string())
    }
}

impl From<AuthError> for RequestError {
    fn from(err: AuthError) -> Self {
        match &err {
            AuthError::Invalid(detail) => RequestError::invalid(detail.clone()),
            _ => RequestError::new(err.code(), err.to_string()),
        }
    }
}

impl From<capnp::Error> for RequestError {
    fn from(err: capnp::Error) -> Self {
        RequestError::serialization(err)
    }
}

impl From<std::str::Utf8Error> for RequestError {
    fn from(err: std::str::Utf8Error) -> Self {
        RequestError::serialization(err)
    }
}
