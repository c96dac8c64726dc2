//! The domain error: every variant maps to one stable wire code (`docs/errors.md`).

/// A domain rule was broken. `code()` is the string that crosses the wire; `Display` is the
/// message, formatted exactly as the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Request validation: names, sizes, JSON, patch, filter, sort, publish targets, take.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A payload (given, or the result of a patch) over the size cap. The message is the one
    /// an oversized payload always had, so clients matching on text still match; the code says
    /// what went wrong, which `invalid_schema` did not (docs/errors.md).
    #[error("invalid schema: payload_json exceeds maximum size of {limit} bytes")]
    PayloadTooLarge {
        /// The cap in bytes of the compact JSON.
        limit: usize,
    },
    /// A schema rule failed.
    #[error("schema violation: {0}")]
    SchemaViolation(String),
    /// A malformed or mismatched cursor.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// Configuration problems such as an invalid tenant id.
    #[error("configuration error: {0}")]
    Config(String),
    /// A file-system failure (reference: schema publish without `schemas.json`).
    #[error("io error: {0}")]
    Io(String),
    /// Undecodable input such as a bad `schemasJson`.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Stored events whose hashes or root do not match.
    #[error("integrity violation: {0}")]
    IntegrityViolation(String),
    /// The aggregate does not exist (or is hidden).
    #[error("aggregate not found")]
    AggregateNotFound,
    /// The aggregate is archived and cannot accept new events.
    #[error("aggregate is archived and cannot accept new events")]
    AggregateArchived,
    /// A create named an aggregate that exists (active or archived).
    #[error("aggregate {aggregate_type}::{aggregate_id} already exists")]
    AggregateExists {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
    },
    /// The expected version did not match the current one.
    #[error("version conflict: expected version {expected}, current version {current}")]
    VersionConflict {
        /// What the writer expected.
        expected: u64,
        /// What the aggregate is at.
        current: u64,
    },
    /// An idempotency key was reused for a different request.
    #[error("idempotency key '{0}' was already used for a different request")]
    IdempotencyConflict(String),
    /// The tenant reached its storage quota.
    #[error("tenant quota exceeded: tenant '{tenant}' reached storage quota ({quota_mb} MB)")]
    TenantQuota {
        /// The tenant.
        tenant: String,
        /// Its quota in MB.
        quota_mb: u64,
    },
}

impl CoreError {
    /// The stable wire code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidSchema(_) => "invalid_schema",
            CoreError::PayloadTooLarge { .. } => "payload_too_large",
            CoreError::SchemaViolation(_) => "schema_violation",
            CoreError::InvalidCursor(_) => "invalid_cursor",
            CoreError::Config(_) => "config",
            CoreError::Serialization(_) => "serialization",
            CoreError::Io(_) => "io",
            CoreError::IntegrityViolation(_) => "integrity_violation",
            CoreError::AggregateNotFound => "aggregate_not_found",
            CoreError::AggregateArchived => "aggregate_archived",
            CoreError::AggregateExists { .. } => "aggregate_exists",
            CoreError::VersionConflict { .. } => "version_conflict",
            CoreError::IdempotencyConflict(_) => "idempotency_conflict",
            CoreError::TenantQuota { .. } => "tenant_quota",
        }
    }

    /// Shorthand for an [`CoreError::InvalidSchema`] with a detail message.
    pub fn invalid(detail: impl Into<String>) -> Self {
        CoreError::InvalidSchema(detail.into())
    }
}

/// Result alias of this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use crate::names::{parse_payload, MAX_PAYLOAD_BYTES};
    use crate::CoreError;

    #[test]
    fn an_oversized_payload_has_a_size_code_not_invalid_schema() {
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        let err = parse_payload(&big).expect_err("over the cap");
        assert_eq!(err.code(), "payload_too_large");
        assert_eq!(
            err,
            CoreError::PayloadTooLarge {
                limit: MAX_PAYLOAD_BYTES
            }
        );
    }
}
