//! Tenant schemas (`docs/server.md`, "Schemas"): the runtime JSON model, validation of a
//! schema set and validation of a write against a schema.
//!
//! ```
//! use eventdbx_core::schema::SchemaMap;
//!
//! let map = SchemaMap::from_json(r#"{"person": {"aggregate": "person",
//!     "snapshot_threshold": null, "locked": false, "field_locks": [],
//!     "column_types": {"age": "integer"}, "events": {"person_created": {"fields": []}},
//!     "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#)
//!     .expect("a valid schema map");
//! assert_eq!(map.len(), 1);
//! ```
//!
//! # Layout
//! - this module: the model, its (de)serialisation and validation of a set.
//! - [`dbx`]: the `schema.dbx` authoring format.
//! - [`reference`]: reference fields, canonical values, the archive cascade.
//! - [`text`]: the text checks shared by validation (formats, RFC 3339, dates, base64).
//! - [`write`](mod@write): validation of one write against its aggregate's schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{CoreError, Result};

pub mod dbx;
pub mod reference;
pub mod text;
pub mod write;

pub use write::{validate_write, RestrictMode};

/// A tenant's schemas keyed by aggregate type: the `schemasJson` map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaMap(BTreeMap<String, AggregateSchema>);

impl SchemaMap {
    /// Decodes, normalises and validates a `schemasJson` text.
    ///
    /// Text that is not JSON, or JSON that does not have the map's shape, is
    /// [`CoreError::Serialization`]; a map whose content breaks a rule (unknown column type, bad
    /// rule, key not equal to its schema's `aggregate`, …) is [`CoreError::InvalidSchema`].
    pub fn from_json(text: &str) -> Result<Self> {
        let mut map: SchemaMap =
            serde_json::from_str(text).map_err(|e| CoreError::Serialization(e.to_string()))?;
        map.normalize();
        map.validate()?;
        Ok(map)
    }

    /// The map as compact JSON.
    pub fn to_json(&self) -> String {
        // A map of plain structs and strings cannot fail to serialise.
        serde_json::to_string(self).expect("schema map serialises")
    }

    /// Sorts and de-duplicates the string lists of every schema, as stored.
    pub fn normalize(&mut self) {
        self.0.values_mut().for_each(AggregateSchema::normalize);
    }

    /// Checks every schema and that each key equals its schema's `aggregate`.
    pub fn validate(&self) -> Result<()> {
        for (key, schema) in &self.0 {
            if key != &schema.aggregate {
                return Err(CoreError::invalid(format!(
                    "schema key {key} does not match aggregate {}",
                    schema.aggregate
                )));
            }
            schema.validate()?;
        }
        Ok(())
    }

    /// The schema of an aggregate type, if it has one.
    pub fn get(&self, aggregate_type: &str) -> Option<&AggregateSchema> {
        self.0.get(aggregate_type)
    }

    /// Adds or replaces the schema of `schema.aggregate`, returning the previous one.
    pub fn insert(&mut self, schema: AggregateSchema) -> Option<AggregateSchema> {
        self.0.insert(schema.aggregate.clone(), schema)
    }

    /// How many aggregate schemas the map holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map holds no schema.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The schemas, in aggregate-type order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &AggregateSchema)> {
        self.0.iter()
    }
}

fn required_option<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// The schema of one aggregate type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSchema {
    /// The aggregate type.
    pub aggregate: String,
    /// Events between automatic snapshots; the key is required even when null.
    #[serde(deserialize_with = "required_option")]
    pub snapshot_threshold: Option<u64>,
    /// No write is accepted while set.
    pub locked: bool,
    /// Top-level payload keys no write may carry.
    pub field_locks: Vec<String>,
    /// Aggregates of this type are hidden from reads.
    #[serde(default)]
    pub hidden: bool,
    /// State fields hidden from reads.
    #[serde(default)]
    pub hidden_fields: Vec<String>,
    /// Declared columns by field name.
    #[serde(default)]
    pub column_types: BTreeMap<String, ColumnSpec>,
    /// Allowed event types.
    pub events: BTreeMap<String, EventSchema>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

impl AggregateSchema {
    /// Sorts and de-duplicates `field_locks`, `hidden_fields` and each event's `fields`.
    pub fn normalize(&mut self) {
        sort_dedup(&mut self.field_locks);
        sort_dedup(&mut self.hidden_fields);
        for event in self.events.values_mut() {
            sort_dedup(&mut event.fields);
        }
    }

    /// Checks the schema's names, timestamps, column types and rules
    /// ([`CoreError::InvalidSchema`]).
    pub fn validate(&self) -> Result<()> {
        crate::names::validate_aggregate_type(&self.aggregate)?;
        for (label, value) in [
            ("created_at", &self.created_at),
            ("updated_at", &self.updated_at),
        ] {
            if text::parse_rfc3339(value).is_none() {
                return Err(CoreError::invalid(format!(
                    "schema {} has an invalid {label} '{value}'",
                    self.aggregate
                )));
            }
        }
        for (label, list) in [
            ("field_locks", &self.field_locks),
            ("hidden_fields", &self.hidden_fields),
        ] {
            if list.iter().any(String::is_empty) {
                return Err(CoreError::invalid(format!(
                    "{label} entries cannot be empty"
                )));
            }
        }
        for (name, event) in &self.events {
            if name.is_empty() {
                return Err(CoreError::invalid(format!(
                    "aggregate {} defines an event with an empty name",
                    self.aggregate
                )));
            }
            if event.fields.iter().any(String::is_empty) {
                return Err(CoreError::invalid(format!(
                    "event {name} fields entries cannot be empty"
                )));
            }
            if let Some(notes) = &event.notes {
                if notes.chars().count() > crate::names::MAX_NOTE_CHARS {
                    return Err(CoreError::invalid(format!(
                        "default note for event {name} cannot exceed 128 characters"
                    )));
                }
            }
        }
        for (name, column) in &self.column_types {
            column.check(name).map_err(CoreError::InvalidSchema)?;
        }
        Ok(())
    }
}

fn sort_dedup(list: &mut Vec<String>) {
    list.sort();
    list.dedup();
}

/// One allowed event type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSchema {
    /// When non-empty, both the required set and the allow-list of payload keys.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The event's default note (never applied to events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A column type (case-insensitive in JSON, with aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `integer` | `int`.
    Integer,
    /// `float` | `double`.
    Float,
    /// `decimal(p,s)` | `numeric(p,s)`.
    Decimal {
        /// Total significant digits.
        precision: u32,
        /// Digits after the decimal point.
        scale: u32,
    },
    /// `boolean` | `bool`.
    Boolean,
    /// `text` | `string`.
    Text,
    /// An RFC 3339 timestamp.
    Timestamp,
    /// A `YYYY-MM-DD` date.
    Date,
    /// Any JSON value.
    Json,
    /// `binary` | `bytes`: base64 text.
    Binary,
    /// A JSON object, optionally with nested `properties`.
    Object,
}

impl ColumnType {
    /// Parses a type string: `invalid column type '<t>'` when unknown.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let simple = match lower.as_str() {
            "integer" | "int" => Some(ColumnType::Integer),
            "float" | "double" => Some(ColumnType::Float),
            "boolean" | "bool" => Some(ColumnType::Boolean),
            "text" | "string" => Some(ColumnType::Text),
            "timestamp" => Some(ColumnType::Timestamp),
            "date" => Some(ColumnType::Date),
            "json" => Some(ColumnType::Json),
            "binary" | "bytes" => Some(ColumnType::Binary),
            "object" => Some(ColumnType::Object),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        let invalid = || format!("invalid column type '{raw}'");
        let args = lower
            .strip_prefix("decimal")
            .or_else(|| lower.strip_prefix("numeric"))
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(invalid)?;
        let (p, s) = args.split_once(',').ok_or_else(invalid)?;
        let precision: u32 = p.trim().parse().map_err(|_| invalid())?;
        let scale: u32 = s.trim().parse().map_err(|_| invalid())?;
        if precision == 0 || scale > precision {
            return Err(invalid());
        }
        Ok(ColumnType::Decimal { precision, scale })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::Float => f.write_str("float"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Text => f.write_str("text"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Json => f.write_str("json"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::Object => f.write_str("object"),
        }
    }
}

/// A text format rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// An email address.
    Email,
    /// A URL with a scheme and a host.
    Url,
    /// A card number passing the Luhn check.
    CreditCard,
    /// ISO 3166-1 alpha-2, upper case.
    CountryCode,
    /// An RFC 3339 timestamp.
    Iso8601,
    /// `lat,lon`.
    #[serde(rename = "wgs_84")]
    Wgs84,
    /// `camelCase`.
    CamelCase,
    /// `snake_case`.
    SnakeCase,
    /// `kebab-case`.
    KebabCase,
    /// `PascalCase`.
    PascalCase,
    /// `UPPER_CASE_SNAKE_CASE`.
    UpperCaseSnakeCase,
    /// An aggregate reference (`docs/server.md`, "References").
    Reference,
}

/// `{min?, max?}` of the `length` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthRule {
    /// Smallest allowed length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Largest allowed length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// `{min?, max?}` of the `range` rule, bounds written as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    /// Smallest allowed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Largest allowed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// How strictly a reference's target must exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceIntegrity {
    /// The target must exist and be readable by the writer.
    #[default]
    Strong,
    /// Any well-formed reference.
    Weak,
}

/// What archiving a referenced target does to its referrers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceCascade {
    /// Nothing.
    #[default]
    None,
    /// Archiving the target is refused.
    Restrict,
    /// The referring field is set to null.
    Nullify,
}

/// The `reference` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRules {
    /// `strong` (default) or `weak`.
    #[serde(default)]
    pub integrity: ReferenceIntegrity,
    /// The type every reference must target, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_type: Option<String>,
    /// `none` (default), `restrict` or `nullify`.
    #[serde(default)]
    pub cascade: ReferenceCascade,
    /// Unsupported: a schema setting it is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The rules of a column, flattened beside `type` in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRules {
    /// The field must be present in the payload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Text must contain every entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Vec<String>>,
    /// Text must contain none of the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub does_not_contain: Option<Vec<String>>,
    /// Text must match every pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Vec<String>>,
    /// Character count (text) or byte count (binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<LengthRule>,
    /// Bounds of integer, float, decimal, timestamp and date values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeRule>,
    /// A text format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Reference rules (with `format: "reference"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceRules>,
    /// Nested columns of an `object` or `json` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, ColumnSpec>>,
    /// `regex`, compiled when the column is first checked (when its schema is loaded).
    #[serde(skip)]
    compiled_regex: text::PatternCache,
}

impl ColumnRules {
    /// Whether no rule is set (the column is then written as a bare type string).
    pub fn is_empty(&self) -> bool {
        self == &ColumnRules::default()
    }

    /// The compiled `regex` patterns (compiled on the first call, then shared), or the detail
    /// message of the first that does not compile, naming the column at `path`.
    pub(crate) fn patterns(
        &self,
        path: &str,
    ) -> std::result::Result<Cow<'_, [text::Pattern]>, String> {
        let Some(patterns) = &self.regex else {
            return Ok(Cow::Borrowed(&[]));
        };
        self.compiled_regex
            .compiled(patterns)
            .map_err(|(pattern, e)| format!("field {path} has an invalid pattern {pattern}: {e}"))
    }
}

/// One declared column: its type string as written and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// The type string; parsed by [`ColumnType::parse`] when the schema is validated.
    pub column_type: String,
    /// The column's rules.
    pub rules: ColumnRules,
}

impl ColumnSpec {
    /// A column of `column_type` with no rule.
    pub fn new(column_type: impl Into<String>) -> Self {
        ColumnSpec {
            column_type: column_type.into(),
            rules: ColumnRules::default(),
        }
    }

    /// Checks the type and the rules of the column at `path` (nested columns included),
    /// returning the detail message of the first problem.
    pub fn check(&self, path: &str) -> std::result::Result<ColumnType, String> {
        let column_type = ColumnType::parse(&self.column_type)?;
        let rules = &self.rules;
        let textual = column_type == ColumnType::Text;
        if rules.length.is_some() && !matches!(column_type, ColumnType::Text | ColumnType::Binary) {
            return Err(format!("field {path} does not support length validation"));
        }
        if let Some(range) = &rules.range {
            if !matches!(
                column_type,
                ColumnType::Integer
                    | ColumnType::Float
                    | ColumnType::Decimal { .. }
                    | ColumnType::Timestamp
                    | ColumnType::Date
            ) {
                return Err(format!("field {path} does not support range validation"));
            }
            for bound in [&range.min, &range.max].into_iter().flatten() {
                if write::range_key(column_type, &Value::String(bound.clone())).is_none() {
                    return Err(format!("field {path} has an invalid range bound '{bound}'"));
                }
            }
        }
        if rules.format == Some(Format::Reference) && !textual {
            return Err(format!(
                "field {path} uses reference format but must be a text column"
            ));
        }
        if let Some(reference) = &rules.reference {
            if rules.format != Some(Format::Reference) {
                return Err(format!(
                    "field {path} specifies reference rules without reference format"
                ));
            }
            if let Some(tenant) = &reference.tenant {
                return Err(format!(
                    "field {path} uses unsupported reference.tenant rule ({tenant}); \
                     domain-scoped references are no longer supported"
                ));
            }
        }
        rules.patterns(path)?;
        if let Some(properties) = &rules.properties {
            if !matches!(column_type, ColumnType::Object | ColumnType::Json) {
                return Err(format!(
                    "field {path} cannot define nested properties on non-object type"
                ));
            }
            for (name, nested) in properties {
                nested.check(&format!("{path}.{name}"))?;
            }
        }
        Ok(column_type)
    }
}

impl Serialize for ColumnSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if self.rules.is_empty() {
            return serializer.serialize_str(&self.column_type);
        }
        let mut object = Map::new();
        object.insert("type".into(), Value::String(self.column_type.clone()));
        match serde_json::to_value(&self.rules).map_err(serde::ser::Error::custom)? {
            Value::Object(rules) => object.extend(rules),
            _ => return Err(serde::ser::Error::custom("column rules must be an object")),
        }
        object.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(deserializer)? {
            Value::String(column_type) => Ok(ColumnSpec::new(column_type)),
            Value::Object(mut object) => {
                let column_type = match object.remove("type") {
                    Some(Value::String(t)) => t,
                    Some(_) => return Err(D::Error::custom("column type must be a string")),
                    None => return Err(D::Error::missing_field("type")),
                };
                let rules =
                    serde_json::from_value(Value::Object(object)).map_err(D::Error::custom)?;
                Ok(ColumnSpec { column_type, rules })
            }
            _ => Err(D::Error::custom(
                "a column must be a type string or an object with `type`",
            )),
        }
    }
}
