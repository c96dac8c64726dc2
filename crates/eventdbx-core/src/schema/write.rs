//! Validation of one write against its aggregate's schema (`docs/server.md`, "Validation of a
//! write"), and the server's restrict modes.

use serde_json::{Map, Value};

use super::text;
use super::{AggregateSchema, ColumnSpec, ColumnType, Format};
use crate::error::{CoreError, Result};

/// When writes are validated: config `restrict`, `--restrict`, `EVENTDB_RESTRICT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestrictMode {
    /// Validate when a schema exists (behaves as [`RestrictMode::Default`]).
    Off,
    /// Validate when a schema exists.
    #[default]
    Default,
    /// Validate, and refuse writes to aggregate types without a schema.
    Strict,
}

impl RestrictMode {
    /// Parses a mode or one of its aliases (case-insensitive); an unknown string is
    /// [`RestrictMode::Default`].
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "0" | "no" | "none" | "unrestricted" | "dev" => RestrictMode::Off,
            "strict" | "all" | "enforced" => RestrictMode::Strict,
            _ => RestrictMode::Default,
        }
    }

    /// The mode a TOML bool means: false → off, true → default.
    pub fn from_bool(value: bool) -> Self {
        if value {
            RestrictMode::Default
        } else {
            RestrictMode::Off
        }
    }
}

fn violation(detail: impl Into<String>) -> CoreError {
    CoreError::SchemaViolation(detail.into())
}

/// Validates a write of `event_type` with `payload` to an aggregate of `aggregate_type`.
///
/// `schema` is the aggregate type's schema, if any. Without one the write passes unless `mode`
/// is [`RestrictMode::Strict`]. With one, the checks run in the documented order and the first
/// failure is returned as [`CoreError::SchemaViolation`]. Reference values are checked for
/// their syntax and `aggregate_type` only; their targets are the store's to check.
pub fn validate_write(
    mode: RestrictMode,
    aggregate_type: &str,
    schema: Option<&AggregateSchema>,
    event_type: &str,
    payload: &Value,
) -> Result<()> {
    let Some(schema) = schema else {
        return match mode {
            RestrictMode::Strict => Err(violation(format!(
                "aggregate {aggregate_type} requires a schema before events can be appended when restrict=strict"
            ))),
            RestrictMode::Off | RestrictMode::Default => Ok(()),
        };
    };
    let a = &schema.aggregate;
    if schema.locked {
        return Err(violation(format!("aggregate {a} is locked for updates")));
    }
    if let Value::Object(object) = payload {
        if let Some(key) = object.keys().find(|k| schema.field_locks.contains(k)) {
            return Err(violation(format!(
                "field {key} is locked for aggregate {a}"
            )));
        }
    }
    let event = schema.events.get(event_type).ok_or_else(|| {
        violation(format!(
            "event {event_type} is not defined for aggregate {a}"
        ))
    })?;
    if !event.fields.is_empty() {
        let object = payload.as_object();
        let has = |f: &String| object.is_some_and(|o| o.contains_key(f));
        if let Some(missing) = event.fields.iter().find(|f| !has(f)) {
            return Err(violation(format!(
                "missing required field {missing} for event {event_type}"
            )));
        }
        if let Some(extra) = object.and_then(|o| o.keys().find(|k| !event.fields.contains(k))) {
            return Err(violation(format!(
                "field {extra} is not permitted for event {event_type}"
            )));
        }
    }
    if schema.column_types.is_empty() {
        return Ok(());
    }
    let object = payload.as_object().ok_or_else(|| {
        violation(format!(
            "aggregate {a} expects object payload for validation"
        ))
    })?;
    check_columns(aggregate_type, &schema.column_types, object, "")
}

fn check_columns(
    aggregate_type: &str,
    columns: &std::collections::BTreeMap<String, ColumnSpec>,
    object: &Map<String, Value>,
    prefix: &str,
) -> Result<()> {
    for (name, column) in columns {
        let path = format!("{prefix}{name}");
        let column_type = column.check(&path).map_err(violation)?;
        match object.get(name) {
            None if column.rules.required => {
                return Err(violation(format!("field {path} is required")))
            }
            None => {}
            Some(value) => check_value(aggregate_type, column, column_type, &path, value)?,
        }
    }
    Ok(())
}

/// The comparable key of a value of a ranged type, or `None` when the value does not have the
/// type. Numbers compare as `f64`, timestamps as nanoseconds, dates as days.
pub(crate) fn range_key(column_type: ColumnType, value: &Value) -> Option<f64> {
    match column_type {
        ColumnType::Integer | ColumnType::Float | ColumnType::Decimal { .. } => number(value),
        ColumnType::Timestamp => value
            .as_str()
            .and_then(text::parse_rfc3339)
            .map(|(secs, nanos)| secs as f64 * 1e9 + f64::from(nanos)),
        ColumnType::Date => value.as_str().and_then(text::parse_date).map(|d| d as f64),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let numeric = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
            numeric.then(|| s.parse::<f64>().ok()).flatten()
        }
        _ => None,
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.trim().parse::<i128>().is_ok(),
        _ => false,
    }
}

/// Digits before and after the point of a plain decimal literal.
fn decimal_digits(value: &Value) -> Option<(u32, u32)> {
    let literal = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    let unsigned = literal.strip_prefix(['-', '+']).unwrap_or(&literal);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let int = int.trim_start_matches('0');
    Some((int.len() as u32, frac.len() as u32))
}

fn check_type(column_type: ColumnType, path: &str, value: &Value) -> Result<()> {
    let ok = match column_type {
        ColumnType::Integer => is_integer(value),
        ColumnType::Float => number(value).is_some(),
        ColumnType::Decimal { precision, scale } => match decimal_digits(value) {
            Some((int, frac)) => {
                if frac > scale || int + scale > precision {
                    return Err(violation(format!(
                            "field {path} must be a decimal with precision {precision} and scale {scale}"
                        )));
                }
                true
            }
            None => false,
        },
        ColumnType::Boolean => match value {
            Value::Bool(_) => true,
            Value::Number(n) => n.as_u64().is_some_and(|n| n <= 1),
            Value::String(s) => matches!(s.as_str(), "true" | "false" | "1" | "0"),
            _ => false,
        },
        ColumnType::Text => value.is_string(),
        ColumnType::Timestamp => value.as_str().and_then(text::parse_rfc3339).is_some(),
        ColumnType::Date => value.as_str().and_then(text::parse_date).is_some(),
        ColumnType::Json => true,
        ColumnType::Binary => value.as_str().and_then(text::decode_base64).is_some(),
        ColumnType::Object => value.is_object(),
    };
    if ok {
        return Ok(());
    }
    let expected = match column_type {
        ColumnType::Integer => "an integer".to_owned(),
        ColumnType::Float => "a number".to_owned(),
        ColumnType::Decimal { precision, scale } => {
            format!("a decimal with precision {precision} and scale {scale}")
        }
        ColumnType::Boolean => "a boolean".to_owned(),
        ColumnType::Text => "a string".to_owned(),
        ColumnType::Timestamp => "a valid ISO 8601 timestamp".to_owned(),
        ColumnType::Date => "a date (YYYY-MM-DD)".to_owned(),
        ColumnType::Binary => "base64-encoded binary".to_owned(),
        ColumnType::Object | ColumnType::Json => "a JSON object".to_owned(),
    };
    Err(violation(format!("field {path} must be {expected}")))
}

fn check_value(
    aggregate_type: &str,
    column: &ColumnSpec,
    column_type: ColumnType,
    path: &str,
    value: &Value,
) -> Result<()> {
    check_type(column_type, path, value)?;
    let rules = &column.rules;
    if let Some(range) = &rules.range {
        let key = range_key(column_type, value);
        let bound = |b: &String| range_key(column_type, &Value::String(b.clone()));
        if let (Some(key), Some(min)) = (key, range.min.as_ref()) {
            if bound(min).is_some_and(|m| key < m) {
                return Err(violation(format!("field {path} must be >= {min}")));
            }
        }
        if let (Some(key), Some(max)) = (key, range.max.as_ref()) {
            if bound(max).is_some_and(|m| key > m) {
                return Err(violation(format!("field {path} must be <= {max}")));
            }
        }
    }
    if let Some(length) = &rules.length {
        // Kept from the reference: any text rule disables the length rule.
        let text_rules = rules.contains.is_some()
            || rules.does_not_contain.is_some()
            || rules.regex.is_some()
            || rules.format.is_some();
        let measured = match (column_type, value.as_str()) {
            _ if text_rules => None,
            (ColumnType::Text, Some(s)) => Some(s.chars().count() as u64),
            (ColumnType::Binary, Some(s)) => text::decode_base64(s).map(|b| b.len() as u64),
            _ => None,
        };
        if let Some(n) = measured {
            if let Some(min) = length.min.filter(|&min| n < min) {
                return Err(violation(format!("field {path} must have length >= {min}")));
            }
            if let Some(max) = length.max.filter(|&max| n > max) {
                return Err(violation(format!("field {path} must have length <= {max}")));
            }
        }
    }
    if let Some(s) = value.as_str().filter(|_| column_type == ColumnType::Text) {
        check_text(aggregate_type, column, path, s)?;
    }
    if let (Some(properties), Value::Object(object)) = (&rules.properties, value) {
        check_columns(aggregate_type, properties, object, &format!("{path}."))?;
    }
    Ok(())
}

fn check_text(aggregate_type: &str, column: &ColumnSpec, path: &str, s: &str) -> Result<()> {
    let rules = &column.rules;
    for needle in rules.contains.iter().flatten() {
        if !s.contains(needle.as_str()) {
            return Err(violation(format!("field {path} must contain '{needle}'")));
        }
    }
    for needle in rules.does_not_contain.iter().flatten() {
        if s.contains(needle.as_str()) {
            return Err(violation(format!(
                "field {path} must not contain '{needle}'"
            )));
        }
    }
    let patterns = rules.patterns(path).map_err(violation)?;
    if let Some(pattern) = patterns.iter().find(|p| !p.is_match(s)) {
        return Err(violation(format!(
            "field {path} must match pattern {}",
            pattern.as_str()
        )));
    }
    let Some(format) = rules.format else {
        return Ok(());
    };
    let (ok, expected) = match format {
        Format::Email => (text::is_email(s), "a valid email address"),
        Format::Url => (text::is_url(s), "a valid URL"),
        Format::CreditCard => (text::is_credit_card(s), "a valid credit card number"),
        Format::CountryCode => (
            text::is_country_code(s),
            "an ISO 3166-1 alpha-2 country code",
        ),
        Format::Iso8601 => (
            text::parse_rfc3339(s).is_some(),
            "a valid ISO 8601 timestamp",
        ),
        Format::Wgs84 => (text::is_wgs84(s), "a valid WGS 84 coordinate (lat,lon)"),
        Format::CamelCase => (text::is_camel_case(s), "camelCase"),
        Format::SnakeCase => (text::is_snake_case(s), "snake_case"),
        Format::KebabCase => (text::is_kebab_case(s), "kebab-case"),
        Format::PascalCase => (text::is_pascal_case(s), "PascalCase"),
        Format::UpperCaseSnakeCase => (text::is_upper_snake_case(s), "UPPER_CASE_SNAKE_CASE"),
        Format::Reference => return check_reference(aggregate_type, column, path, s),
    };
    if ok {
        Ok(())
    } else {
        Err(violation(format!("field {path} must be {expected}")))
    }
}

fn check_reference(aggregate_type: &str, column: &ColumnSpec, path: &str, s: &str) -> Result<()> {
    let reference = Reference::parse(s, aggregate_type)?;
    let wanted = column
        .rules
        .reference
        .as_ref()
        .and_then(|r| r.aggregate_type.as_deref());
    if let Some(wanted) = wanted.filter(|w| *w != reference.aggregate_type) {
        return Err(violation(format!(
            "reference {path} must target aggregate type {wanted}"
        )));
    }
    Ok(())
}

/// A parsed reference value (`docs/server.md`, "References").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The first segment of a legacy `tenant#type#id` value.
    pub tenant: Option<String>,
    /// The target's aggregate type.
    pub aggregate_type: String,
    /// The target's aggregate id.
    pub aggregate_id: String,
}

impl Reference {
    /// Parses `type#id`, `#id` (same type as `writer_type`) or legacy `tenant#type#id`.
    pub fn parse(value: &str, writer_type: &str) -> Result<Self> {
        if value.is_empty() {
            return Err(violation("reference value cannot be empty"));
        }
        let segments: Vec<&str> = value.split('#').collect();
        let (tenant, aggregate_type, aggregate_id) = match segments.as_slice() {
            ["", id] => (None, writer_type, *id),
            [t, id] => (None, *t, *id),
            [tenant, t, id] => (Some(*tenant), *t, *id),
            _ => return Err(violation("reference must be aggregate#id or #id")),
        };
        if aggregate_id.is_empty() || aggregate_type.is_empty() || tenant.is_some_and(str::is_empty)
        {
            return Err(violation("reference segments cannot be empty"));
        }
        Ok(Reference {
            tenant: tenant.map(str::to_owned),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
        })
    }

    /// The canonical stored form `type#id`.
    pub fn canonical(&self) -> String {
        format!("{}#{}", self.aggregate_type, self.aggregate_id)
    }
}
