//! `docs/errors.md` lists every stable code a request can fail with, with the message each one
//! starts with, so clients can match on what the document promises.

use eventdbx_core::CoreError;
use eventdbx_server::auth::AuthError;
use eventdbx_server::error::RequestError;
use eventdbx_store::StoreError;

/// One error of every code, built the way the server builds them.
fn one_of_each_code() -> Vec<RequestError> {
    let domain = [
        CoreError::InvalidSchema("detail".into()),
        CoreError::PayloadTooLarge { limit: 262_144 },
        CoreError::SchemaViolation("detail".into()),
        CoreError::InvalidCursor("detail".into()),
        CoreError::Config("detail".into()),
        CoreError::Io("detail".into()),
        CoreError::Serialization("detail".into()),
        CoreError::IntegrityViolation("detail".into()),
        CoreError::AggregateNotFound,
        CoreError::AggregateArchived,
        CoreError::AggregateExists {
            aggregate_type: "order".into(),
            aggregate_id: "o-1".into(),
        },
        CoreError::VersionConflict {
            expected: 1,
            current: 2,
        },
        CoreError::IdempotencyConflict("k".into()),
        CoreError::TenantQuota {
            tenant: "acme".into(),
            quota_mb: 1,
        },
    ];
    let mut errors: Vec<RequestError> = domain.into_iter().map(RequestError::from).collect();
    errors.push(StoreError::engine("the store is closed").into());
    errors.push(
        StoreError::unavailable(
            "cannot reach the database",
            std::io::Error::other("refused"),
        )
        .into(),
    );
    errors.extend(
        [
            AuthError::InvalidToken,
            AuthError::TokenExpired,
            AuthError::Unauthorized,
        ]
        .map(RequestError::from),
    );
    errors.push(RequestError::too_large(70_000, 65_519));
    errors.push(RequestError::unsupported("detail"));
    errors
}

/// The documented message of `code`: the second column of its row in the table.
fn documented_message<'a>(docs: &'a str, code: &str) -> Option<&'a str> {
    let row_start = format!("| `{code}` | `");
    let line = docs.lines().find(|line| line.starts_with(&row_start))?;
    let rest = &line[row_start.len()..];
    rest.split_once("` |").map(|(message, _)| message)
}

#[test]
fn docs_errors_lists_every_code_with_the_start_of_its_message() {
    let docs = std::fs::read_to_string(crate::manifest_dir().join("../../docs/errors.md"))
        .expect("docs/errors.md");
    let mut wrong = Vec::new();
    for err in one_of_each_code() {
        match documented_message(&docs, &err.code) {
            None => wrong.push(format!("`{}` has no row", err.code)),
            Some(message) => {
                // The fixed text before the first `<placeholder>`.
                let fixed = message.split('<').next().unwrap_or_default();
                if !err.message.starts_with(fixed) {
                    wrong.push(format!(
                        "`{}`: documented `{message}`, sent `{}`",
                        err.code, err.message
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/errors.md is out of date:\n{}",
        wrong.join("\n")
    );
}
