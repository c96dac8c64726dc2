//! Names and write inputs, validated as `docs/server.md`, "Names", describes, with its exact
//! messages.
//!
//! Every check returns [`CoreError::InvalidSchema`] (tenant ids: [`CoreError::Config`]) whose
//! display text is what the server sends back.

use serde_json::{Map, Value};

use crate::error::{CoreError, Result};

/// Longest aggregate id, event type and raw event type, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest compact payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 262_144;
/// Longest serialised metadata object, in bytes.
pub const MAX_METADATA_BYTES: usize = 65_536;
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 128;
/// The tenant an empty tenant id means.
pub const DEFAULT_TENANT: &str = "default";

fn lower_snake_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks an aggregate type: `^[a-z][a-z0-9_]*$`.
pub fn validate_aggregate_type(aggregate_type: &str) -> Result<()> {
    if lower_snake_segment(aggregate_type) {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "aggregate_type must be lowercase snake_case",
        ))
    }
}

/// Checks an aggregate id, in the spec's order: whitespace, emptiness, length, characters.
pub fn validate_aggregate_id(aggregate_id: &str) -> Result<()> {
    if aggregate_id.trim() != aggregate_id {
        return Err(CoreError::invalid(
            "aggregate_id cannot include leading or trailing whitespace",
        ));
    }
    if aggregate_id.is_empty() {
        return Err(CoreError::invalid("aggregate_id must not be empty"));
    }
    if aggregate_id.len() > MAX_NAME_BYTES {
        return Err(CoreError::invalid(
            "aggregate_id cannot exceed 128 characters",
        ));
    }
    let mut chars = aggregate_id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "aggregate_id may only contain letters, numbers, underscores, or hyphens",
        ))
    }
}

/// Checks an event type and returns its stored form (dots replaced by `_`).
///
/// The client's string is kept as `event_type_raw`.
pub fn normalize_event_type(event_type: &str) -> Result<String> {
    if event_type.len() > MAX_NAME_BYTES {
        return Err(CoreError::invalid(
            "event_type cannot exceed 128 characters",
        ));
    }
    if !event_type.split('.').all(lower_snake_segment) {
        return Err(CoreError::invalid(
            "event_type must be lowercase snake_case; dots may be used as separators",
        ));
    }
    Ok(event_type.replace('.', "_"))
}

/// Parses a payload: valid JSON whose compact form is at most [`MAX_PAYLOAD_BYTES`].
pub fn parse_payload(payload_json: &str) -> Result<Value> {
    let value: Value = serde_json::from_str(payload_json)
        .map_err(|err| CoreError::invalid(format!("invalid payload_json: {err}")))?;
    if compact_len(&value) > MAX_PAYLOAD_BYTES {
        return Err(CoreError::PayloadTooLarge {
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(value)
}

/// Parses request metadata (extensions): a JSON object of at most [`MAX_METADATA_BYTES`] whose
/// keys match `^@?[A-Za-z0-9][A-Za-z0-9_-]*$`. A blank string counts as absent (`None`).
pub fn parse_metadata(metadata_json: &str) -> Result<Option<Map<String, Value>>> {
    if metadata_json.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(metadata_json)
        .map_err(|err| CoreError::invalid(format!("invalid metadata_json: {err}")))?;
    let Value::Object(map) = value else {
        return Err(CoreError::invalid("metadata must be a JSON object"));
    };
    if compact_len(&Value::Object(map.clone())) > MAX_METADATA_BYTES {
        return Err(CoreError::invalid(format!(
            "metadata exceeds maximum size of {MAX_METADATA_BYTES} bytes"
        )));
    }
    if let Some(bad) = map.keys().find(|key| !metadata_key_ok(key)) {
        return Err(CoreError::invalid(format!(
            "metadata key '{bad}' must start with '@' followed by letters, numbers, underscores, \
             or hyphens"
        )));
    }
    Ok(Some(map))
}

/// Ours accepts the leading `@` as optional (the product README sends `"note"` beside `"@actor"`).
fn metadata_key_ok(key: &str) -> bool {
    let body = key.strip_prefix('@').unwrap_or(key);
    let mut chars = body.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The key under which an aggregate keeps an extension: the first character lower-cased unless
/// it is `@`; every other upper-case ASCII letter lower-cased, with a `_` inserted before it
/// unless it follows `@` or `_` (`@createdBy` → `@created_by`).
pub fn normalize_extension_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut previous: Option<char> = None;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if previous.is_some_and(|p| p != '@' && p != '_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        previous = Some(c);
    }
    out
}

/// Checks a note: at most [`MAX_NOTE_CHARS`] characters. Notes are stored untrimmed.
pub fn validate_note(note: &str) -> Result<()> {
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(CoreError::invalid(
            "event note cannot exceed 128 characters",
        ));
    }
    Ok(())
}

/// Normalises a tenant id: trimmed; `default` in any case is `default`; other ids lower-cased;
/// then the first character must be an ASCII letter or digit and the rest letters, digits, `-`
/// or `_` (errors with code `config`).
pub fn normalize_tenant_id(tenant_id: &str) -> Result<String> {
    let trimmed = tenant_id.trim();
    if trimmed.eq_ignore_ascii_case(DEFAULT_TENANT) {
        return Ok(DEFAULT_TENANT.to_owned());
    }
    let normalized = trimmed.to_lowercase();
    let mut chars = normalized.chars();
    match chars.next() {
        None => return Err(CoreError::Config("tenant id cannot be empty".into())),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(CoreError::Config(
                "tenant id must begin with an ASCII letter or digit".into(),
            ))
        }
        Some(_) => {}
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(normalized)
    } else {
        Err(CoreError::Config(
            "tenant id may only contain letters, numbers, '-' or '_'".into(),
        ))
    }
}

fn compact_len(value: &Value) -> usize {
    // Serialising a Value cannot fail (keys are strings); an impossible failure counts as huge.
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.expect_err("must fail").to_string()
    }

    #[test]
    fn aggregate_types() {
        for ok in ["order", "person", "a", "line_item2"] {
            validate_aggregate_type(ok).expect(ok);
        }
        for bad in [
            "",
            "Order",
            "2order",
            "_x",
            "order-item",
            "order.item",
            "ordér",
        ] {
            assert_eq!(
                message(validate_aggregate_type(bad)),
                "invalid schema: aggregate_type must be lowercase snake_case"
            );
        }
    }

    #[test]
    fn aggregate_ids_are_checked_in_order() {
        for ok in ["o-1", "A", "order_1-x", &"a".repeat(128)] {
            validate_aggregate_id(ok).expect(ok);
        }
        let cases = [
            (
                " o-1",
                "aggregate_id cannot include leading or trailing whitespace",
            ),
            ("", "aggregate_id must not be empty"),
            (
                &"a".repeat(129),
                "aggregate_id cannot exceed 128 characters",
            ),
            (
                "-o",
                "aggregate_id may only contain letters, numbers, underscores, or hyphens",
            ),
            (
                "o 1",
                "aggregate_id may only contain letters, numbers, underscores, or hyphens",
            ),
            (
                "o.1",
                "aggregate_id may only contain letters, numbers, underscores, or hyphens",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                message(validate_aggregate_id(input)),
                format!("invalid schema: {expected}")
            );
        }
    }

    #[test]
    fn event_types_normalise_dots() {
        assert_eq!(
            normalize_event_type("order.created").expect("ok"),
            "order_created"
        );
        assert_eq!(
            normalize_event_type("order_created").expect("ok"),
            "order_created"
        );
        for bad in [
            "Order",
            "order..created",
            ".order",
            "order.",
            "order.2x",
            "",
        ] {
            assert!(
                message(normalize_event_type(bad)).contains("lowercase snake_case"),
                "{bad}"
            );
        }
        assert!(message(normalize_event_type(&"a".repeat(129))).contains("cannot exceed 128"));
    }

    #[test]
    fn payload_size_and_syntax() {
        assert_eq!(
            parse_payload("{\"a\": 1}").expect("ok"),
            serde_json::json!({"a": 1})
        );
        assert!(message(parse_payload("{")).starts_with("invalid schema: invalid payload_json: "));
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(
            message(parse_payload(&big)),
            "invalid schema: payload_json exceeds maximum size of 262144 bytes"
        );
        // Whitespace does not count: the compact form is measured.
        let spaced = format!(
            "{}\"{}\"",
            " ".repeat(10),
            "x".repeat(MAX_PAYLOAD_BYTES - 2)
        );
        parse_payload(&spaced).expect("exactly at the limit once compact");
    }

    #[test]
    fn metadata_rules() {
        assert_eq!(parse_metadata("  ").expect("blank"), None);
        let map = parse_metadata(r#"{"@actor": "jane", "note": "x"}"#)
            .expect("ok")
            .expect("some");
        assert_eq!(map.len(), 2);
        assert_eq!(
            message(parse_metadata("[1]")),
            "invalid schema: metadata must be a JSON object"
        );
        assert_eq!(
            message(parse_metadata(r#"{"@bad key": 1}"#)),
            "invalid schema: metadata key '@bad key' must start with '@' followed by letters, \
             numbers, underscores, or hyphens"
        );
    }

    #[test]
    fn extension_keys_normalise() {
        assert_eq!(normalize_extension_key("@createdBy"), "@created_by");
        assert_eq!(normalize_extension_key("TraceId"), "trace_id");
        assert_eq!(normalize_extension_key("@trace_id"), "@trace_id");
        assert_eq!(normalize_extension_key("@_X"), "@_x");
    }

    #[test]
    fn notes_count_characters() {
        validate_note(&"é".repeat(128)).expect("128 characters");
        assert_eq!(
            message(validate_note(&"a".repeat(129))),
            "invalid schema: event note cannot exceed 128 characters"
        );
    }

    #[test]
    fn tenant_ids() {
        assert_eq!(normalize_tenant_id(" DEFAULT ").expect("ok"), "default");
        assert_eq!(normalize_tenant_id("Acme-1").expect("ok"), "acme-1");
        let err = normalize_tenant_id("a b").expect_err("space");
        assert_eq!(err.code(), "config");
        assert_eq!(
            err.to_string(),
            "configuration error: tenant id may only contain letters, numbers, '-' or '_'"
        );
        assert_eq!(
            normalize_tenant_id("  ").expect_err("empty").to_string(),
            "configuration error: tenant id cannot be empty"
        );
        assert_eq!(
            normalize_tenant_id("_x")
                .expect_err("underscore first")
                .to_string(),
            "configuration error: tenant id must begin with an ASCII letter or digit"
        );
    }
}
