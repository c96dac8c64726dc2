//! The domain error: every variant maps to one stable wire code (`01-wire-protocol.md` §13).

/// A domain rule was broken. `code()` is the string that crosses the wire; `Display` is the
/// message, formatted exactly as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Request validation: names, sizes, JSON, patch, filter, sort, publish targets, take.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A schema rule failed.
    #[error("schema violation: {0}")]
    SchemaViolation(String),
    /// A malformed or mismatched cursor.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// Configuration problems such as an invalid tenant id.
    #[error("configuration error: {0}")]
    Config(String),
    /// Undecodable input such as a bad `schemasJson`.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Stored events whose hashes or root do not match.
    #[error("integrity violation: {0}")]
    IntegrityViolation(String),
}

impl CoreError {
    /// The stable wire code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidSchema(_) => "invalid_schema",
            CoreError::SchemaViolation(_) => "schema_violation",
            CoreError::InvalidCursor(_) => "invalid_cursor",
            CoreError::Config(_) => "config",
            CoreError::Serialization(_) => "serialization",
            CoreError::IntegrityViolation(_) => "integrity_violation",
        }
    }

    /// Shorthand for an [`CoreError::InvalidSchema`] with a detail message.
    pub fn invalid(detail: impl Into<String>) -> Self {
        CoreError::InvalidSchema(detail.into())
    }
}

/// Result alias of this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
